-- Bans (one row per banned user; unban deletes it) and the admin audit trail.

CREATE TABLE bans (
    user_id    BLOB PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reason     TEXT,
    until      TEXT,
    created_at TEXT NOT NULL,
    actor_id   BLOB NOT NULL
);

-- seq orders entries written within the same second.
CREATE TABLE audit_log (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               BLOB NOT NULL UNIQUE,
    at               TEXT NOT NULL,
    actor_id         BLOB NOT NULL,
    actor_name       TEXT NOT NULL,
    action           TEXT NOT NULL,
    target_type      TEXT NOT NULL,
    target_id        TEXT,
    reason           TEXT,
    sessions_revoked BIGINT NOT NULL,
    sockets_closed   BIGINT NOT NULL,
    until            TEXT
);
