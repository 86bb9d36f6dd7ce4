-- The revocation log: one event per revoking call, in commit order (SQLite has one
-- writer), and on each session the event that revoked it. Nodes catch up by reading
-- sessions whose revocation_seq is past the last one they applied.

CREATE TABLE revocation_events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    reason  TEXT,
    node_id TEXT NOT NULL
);

ALTER TABLE sessions ADD COLUMN revocation_seq BIGINT;
CREATE INDEX sessions_revocation_seq ON sessions (revocation_seq);

-- Which node holds how many sockets of which session (used with PostgreSQL, where
-- several nodes share the database; kept here so both schemas stay alike).
CREATE TABLE node_sockets (
    node_id    TEXT NOT NULL,
    session_id BLOB NOT NULL,
    sockets    INTEGER NOT NULL,
    seen_at    TEXT NOT NULL,
    PRIMARY KEY (node_id, session_id)
);
