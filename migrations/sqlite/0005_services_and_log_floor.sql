-- Credentials of the game's other services (introspection, the revocation feed):
-- only a SHA-256 of each secret is stored. A revoked credential keeps its row, and
-- its name, so that the name always means one credential.
CREATE TABLE services (
    name        TEXT PRIMARY KEY NOT NULL,
    client_id   TEXT NOT NULL UNIQUE,
    secret_hash BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);

-- How far the revocation log has been pruned: events up to this seq are gone, so a
-- feed cursor before it cannot be resumed (the consumer gets `reset`).
CREATE TABLE revocation_log_floor (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through BIGINT NOT NULL
);
INSERT INTO revocation_log_floor (id, pruned_through) VALUES (1, 0);
