-- Followers page through the revocation log by (seq, session id), so that one event
-- that revoked more sessions than a page holds is read across pages without a gap.
-- Events of kind 'unban' revoke no session: they tell the other nodes a ban lifted.
DROP INDEX sessions_revocation_seq;
CREATE INDEX sessions_revocation_cursor ON sessions (revocation_seq, id);
