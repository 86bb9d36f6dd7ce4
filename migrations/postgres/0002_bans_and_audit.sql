-- Bans (one row per banned user; unban deletes it) and the admin audit trail.

CREATE TABLE bans (
    user_id    UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    reason     TEXT,
    until      TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    actor_id   UUID NOT NULL
);

-- seq orders entries written within the same second.
CREATE TABLE audit_log (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               UUID NOT NULL UNIQUE,
    at               TIMESTAMPTZ NOT NULL,
    actor_id         UUID NOT NULL,
    actor_name       TEXT NOT NULL,
    action           TEXT NOT NULL,
    target_type      TEXT NOT NULL,
    target_id        TEXT,
    reason           TEXT,
    sessions_revoked BIGINT NOT NULL,
    sockets_closed   BIGINT NOT NULL,
    until            TIMESTAMPTZ
);
