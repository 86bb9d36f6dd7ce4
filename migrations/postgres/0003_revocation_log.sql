-- The revocation log: one event per revoking call, and on each session the event
-- that revoked it. Writers take a transaction-level advisory lock before drawing a
-- seq, so seqs commit in order and a node that has seen seq N has seen all below it.
-- Nodes catch up by reading sessions whose revocation_seq is past the last they applied.

CREATE TABLE revocation_events (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL,
    kind    TEXT NOT NULL,
    reason  TEXT,
    node_id TEXT NOT NULL
);

ALTER TABLE sessions ADD COLUMN revocation_seq BIGINT;
CREATE INDEX sessions_revocation_seq ON sessions (revocation_seq);

-- Which node holds how many sockets of which session, refreshed every few seconds
-- by each node, so that any node can answer the admin session list for the cluster.
CREATE TABLE node_sockets (
    node_id    TEXT NOT NULL,
    session_id UUID NOT NULL,
    sockets    INTEGER NOT NULL,
    seen_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (node_id, session_id)
);
