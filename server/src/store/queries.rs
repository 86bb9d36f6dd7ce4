//! The SQL both backends run. The schemas differ only in column types
//! (`migrations/sqlite` vs `migrations/postgres`), and every statement here is valid in
//! both dialects (`$n` placeholders, `RETURNING`, `lower()`), except the few marked
//! PostgreSQL-only, which [`Store`](super::Store) runs only there.

/// The columns of a [`SessionRecord`](super::SessionRecord), in one place.
macro_rules! session_columns {
    () => {
        "id, user_id, created_at, expires_at, last_seen_at, user_agent, ip, revoked_at, revoke_kind, revoke_reason"
    };
}

pub(super) const PING: &str = "SELECT 1";

pub(super) const INSERT_USER: &str =
    "INSERT INTO users (id, username, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5)";

pub(super) const INSERT_USER_IF_FREE: &str = "INSERT INTO users (id, username, password_hash, role, created_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";

pub(super) const INSERT_FIRST_ADMIN: &str = "INSERT INTO users (id, username, password_hash, role, created_at) \
     SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM users WHERE role = 'admin')";

pub(super) const USER_BY_NAME: &str = "SELECT id, username, password_hash, role, created_at FROM users \
     WHERE lower(username) = lower($1)";

pub(super) const USER_BY_ID: &str =
    "SELECT id, username, password_hash, role, created_at FROM users WHERE id = $1";

pub(super) const INSERT_SESSION: &str = "INSERT INTO sessions \
     (id, user_id, created_at, expires_at, last_seen_at, user_agent, ip) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

pub(super) const INSERT_REFRESH_TOKEN: &str =
    "INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES ($1, $2, $3)";

// The write comes first so that SQLite takes its write lock at once: a transaction
// that read first and wrote later could fail to upgrade its lock under contention.
pub(super) const MARK_REFRESH_USED: &str =
    "UPDATE refresh_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL RETURNING session_id";

pub(super) const REFRESH_TOKEN_SESSION: &str = "SELECT session_id FROM refresh_tokens WHERE hash = $1";

pub(super) const SESSION_BY_ID: &str = concat!("SELECT ", session_columns!(), " FROM sessions WHERE id = $1");

// Every revoking statement binds: $1 the scope's id, $2 at, $3 kind, $4 reason, $5 seq
// (and $6 the session a scope spares).

pub(super) const REVOKE_SESSION: &str = concat!(
    "UPDATE sessions SET revoked_at = $2, revoke_kind = $3, revoke_reason = $4, revocation_seq = $5 ",
    "WHERE id = $1 AND revoked_at IS NULL RETURNING ",
    session_columns!()
);

pub(super) const REVOKE_USER_SESSIONS: &str = concat!(
    "UPDATE sessions SET revoked_at = $2, revoke_kind = $3, revoke_reason = $4, revocation_seq = $5 ",
    "WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 RETURNING ",
    session_columns!()
);

pub(super) const REVOKE_USER_SESSIONS_EXCEPT: &str = concat!(
    "UPDATE sessions SET revoked_at = $2, revoke_kind = $3, revoke_reason = $4, revocation_seq = $5 ",
    "WHERE user_id = $1 AND id <> $6 AND revoked_at IS NULL AND expires_at > $2 RETURNING ",
    session_columns!()
);

pub(super) const REVOKE_ALL_SESSIONS_EXCEPT: &str = concat!(
    "UPDATE sessions SET revoked_at = $2, revoke_kind = $3, revoke_reason = $4, revocation_seq = $5 ",
    "WHERE id <> $1 AND revoked_at IS NULL AND expires_at > $2 RETURNING ",
    session_columns!()
);

pub(super) const LIVE_SESSIONS_WITH_USERS: &str = "SELECT s.id, s.user_id, u.username, s.created_at, \
     s.last_seen_at FROM sessions s JOIN users u ON u.id = s.user_id \
     WHERE s.revoked_at IS NULL AND s.expires_at > $1 ORDER BY s.created_at, s.id";

pub(super) const LIVE_SESSIONS_OF_USER_WITH_NAME: &str = "SELECT s.id, s.user_id, u.username, s.created_at, \
     s.last_seen_at FROM sessions s JOIN users u ON u.id = s.user_id \
     WHERE s.revoked_at IS NULL AND s.expires_at > $1 AND s.user_id = $2 ORDER BY s.created_at, s.id";

pub(super) const UPSERT_BAN: &str = "INSERT INTO bans (user_id, reason, until, created_at, actor_id) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE SET reason = excluded.reason, \
     until = excluded.until, created_at = excluded.created_at, actor_id = excluded.actor_id";

pub(super) const DELETE_BAN: &str = "DELETE FROM bans WHERE user_id = $1";

pub(super) const ACTIVE_BAN: &str = "SELECT user_id, reason, until, created_at, actor_id FROM bans \
     WHERE user_id = $1 AND (until IS NULL OR until > $2)";

pub(super) const ACTIVE_BANS: &str =
    "SELECT user_id, reason, until, created_at, actor_id FROM bans WHERE until IS NULL OR until > $1";

pub(super) const INSERT_AUDIT: &str = "INSERT INTO audit_log (id, at, actor_id, actor_name, action, \
     target_type, target_id, reason, sessions_revoked, sockets_closed, until) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

pub(super) const SET_AUDIT_SOCKETS_CLOSED: &str = "UPDATE audit_log SET sockets_closed = $2 WHERE id = $1";

pub(super) const AUDIT_NEWEST: &str = "SELECT id, at, actor_id, actor_name, action, target_type, target_id, \
     reason, sessions_revoked, sockets_closed, until FROM audit_log ORDER BY seq DESC LIMIT $1";

pub(super) const INSERT_REVOCATION_EVENT: &str =
    "INSERT INTO revocation_events (at, kind, reason, node_id) VALUES ($1, $2, $3, $4) RETURNING seq";

pub(super) const LATEST_REVOCATION_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM revocation_events";

/// The newest seq after $1, and how many of the events after it changed a ban.
pub(super) const LOG_HEAD_AFTER: &str = "SELECT COALESCE(MAX(seq), $1), \
     COUNT(CASE WHEN kind IN ('ban', 'unban') THEN 1 END) FROM revocation_events WHERE seq > $1";

/// Revoked sessions after the cursor ($1 seq, $2 session id) up to seq $3, in
/// (seq, id) order, so that one event of any size is read across as many pages as it
/// takes and no page boundary skips a session.
pub(super) const SESSIONS_REVOKED_IN_LOG: &str = concat!(
    "SELECT ",
    session_columns!(),
    ", revocation_seq FROM sessions \
     WHERE revocation_seq <= $3 AND (revocation_seq > $1 OR (revocation_seq = $1 AND id > $2)) \
     ORDER BY revocation_seq, id LIMIT $4"
);

pub(super) const SESSIONS_TO_REMEMBER: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE expires_at > $1 AND (revoked_at IS NULL OR revoked_at > $2)"
);

pub(super) const LIVE_SESSIONS_OF_USER: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at DESC"
);

pub(super) const UPDATE_LAST_SEEN: &str =
    "UPDATE sessions SET last_seen_at = $2 WHERE id = $1 AND last_seen_at < $2";

/// PostgreSQL only: serializes revocation writers for the rest of their transaction, so
/// that seqs commit in the order they were drawn and the log has no gap a reader could
/// pass. SQLite's single writer gives the same order by itself.
pub(super) const LOCK_REVOCATION_LOG: &str = "SELECT pg_advisory_xact_lock(7460001)";

pub(super) const INSERT_SERVICE: &str =
    "INSERT INTO services (name, client_id, secret_hash, created_at) VALUES ($1, $2, $3, $4)";

pub(super) const ALL_SERVICES: &str =
    "SELECT name, client_id, secret_hash, created_at, revoked_at FROM services ORDER BY name";

pub(super) const REVOKE_SERVICE: &str =
    "UPDATE services SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL";

/// How far the log is pruned, and its newest seq.
pub(super) const REVOCATION_LOG_BOUNDS: &str = "SELECT \
     (SELECT pruned_through FROM revocation_log_floor WHERE id = 1), \
     (SELECT COALESCE(MAX(seq), 0) FROM revocation_events)";

/// Revoked sessions whose lifetime has not ended at $2, revoked by events up to $1.
pub(super) const REVOKED_SESSIONS_ALIVE: &str = concat!(
    "SELECT ",
    session_columns!(),
    ", revocation_seq FROM sessions \
     WHERE revocation_seq IS NOT NULL AND revocation_seq <= $1 AND expires_at > $2 \
     ORDER BY revocation_seq, id"
);

/// The oldest event that still revoked a session alive at $1 (else the newest event):
/// everything before it may go.
pub(super) const OLDEST_EVENT_TO_KEEP: &str = "SELECT COALESCE(\
     (SELECT MIN(revocation_seq) FROM sessions WHERE revocation_seq IS NOT NULL AND expires_at > $1), \
     (SELECT COALESCE(MAX(seq), 0) FROM revocation_events))";

pub(super) const DELETE_EVENTS_THROUGH: &str = "DELETE FROM revocation_events WHERE seq <= $1";

pub(super) const RAISE_LOG_FLOOR: &str =
    "UPDATE revocation_log_floor SET pruned_through = $1 WHERE id = 1 AND pruned_through < $1";

pub(super) const LOG_FLOOR: &str = "SELECT pruned_through FROM revocation_log_floor WHERE id = 1";
