//! Durable state behind one trait, with an embedded SQLite and a PostgreSQL
//! implementation. The store records; the in-memory registry answers requests, so
//! nothing here is called on the per-request path.

mod postgres;
mod queries;
mod sqlite;

use async_trait::async_trait;
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

pub use postgres::{PgStore, REVOCATION_CHANNEL};
pub use sqlite::SqliteStore;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRecord {
    pub id: Uuid,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub revoked_at: Option<OffsetDateTime>,
    pub revoke_kind: Option<String>,
    pub revoke_reason: Option<String>,
}

impl SessionRecord {
    /// A new session of `user_id`, live from `now` for `lifetime`, with a fresh id.
    pub fn new_live(
        user_id: Uuid,
        now: OffsetDateTime,
        lifetime: std::time::Duration,
        user_agent: Option<String>,
        ip: Option<String>,
    ) -> SessionRecord {
        SessionRecord {
            id: Uuid::new_v4(),
            user_id,
            created_at: now,
            expires_at: now + lifetime,
            last_seen_at: now,
            user_agent,
            ip,
            revoked_at: None,
            revoke_kind: None,
            revoke_reason: None,
        }
    }
}

pub struct NewUser<'a> {
    pub id: Uuid,
    pub username: &'a str,
    pub password_hash: &'a str,
    pub role: &'a str,
    pub created_at: OffsetDateTime,
}

pub enum CreateUser {
    Created,
    UsernameTaken,
}

/// Which live sessions a revocation takes.
#[derive(Debug, Clone, Copy)]
pub enum RevokeScope {
    Session(Uuid),
    User(Uuid),
    /// The user's sessions but one (single-session policy: all but the new login).
    UserExcept {
        user: Uuid,
        keep: Uuid,
    },
    /// Every session but one (an admin's revoke-all spares the caller's own).
    AllExcept(Uuid),
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BanRecord {
    pub user_id: Uuid,
    pub reason: Option<String>,
    /// None: permanent.
    pub until: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub actor_id: Uuid,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRecord {
    pub id: Uuid,
    pub at: OffsetDateTime,
    pub actor_id: Uuid,
    pub actor_name: String,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub reason: Option<String>,
    pub sessions_revoked: i64,
    pub sockets_closed: i64,
    pub until: Option<OffsetDateTime>,
}

/// A live session with its user's name, for operators.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionWithUser {
    pub id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
}

/// What a revocation writes on each session it takes.
pub struct RevocationRecord<'a> {
    pub at: OffsetDateTime,
    pub kind: &'a str,
    pub reason: Option<&'a str>,
    /// The node that answered the revoking call.
    pub node_id: &'a str,
}

/// A revoked session as the revocation log gives it to a catching-up node.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoggedRevocation {
    #[sqlx(flatten)]
    pub session: SessionRecord,
    pub revocation_seq: i64,
}

/// The outcome of presenting a refresh token.
pub enum RefreshOutcome {
    /// The token was current and is now rotated to the new hash.
    Rotated(SessionRecord),
    /// No such token.
    Unknown,
    /// The token was already rotated, and its session is still live: theft.
    Reused(SessionRecord),
    /// The session is revoked or past its lifetime; the token was left as it was.
    SessionEnded(SessionRecord),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the database can be reached (`/readyz`).
    async fn ping(&self) -> anyhow::Result<()>;

    async fn create_user(&self, user: NewUser<'_>) -> anyhow::Result<CreateUser>;

    /// Creates many users in one transaction, skipping taken names; returns how many were created.
    async fn create_users(&self, users: &[NewUser<'_>]) -> anyhow::Result<u64>;

    /// Creates the user only while no admin exists; false when one does (or the name is taken).
    async fn create_first_admin(&self, user: NewUser<'_>) -> anyhow::Result<bool>;

    async fn find_user_by_name(&self, username: &str) -> anyhow::Result<Option<UserRecord>>;

    async fn find_user(&self, id: Uuid) -> anyhow::Result<Option<UserRecord>>;

    /// Records a new session and its first refresh token, atomically.
    async fn create_session(&self, session: &SessionRecord, refresh_hash: &[u8]) -> anyhow::Result<()>;

    /// Compare-and-swap of the session's refresh token: of several callers with the
    /// same token, exactly one gets `Rotated`.
    async fn rotate_refresh_token(
        &self,
        old_hash: &[u8],
        new_hash: &[u8],
        now: OffsetDateTime,
    ) -> anyhow::Result<RefreshOutcome>;

    /// Marks the live sessions in scope revoked, logs the revocation (seq) and, with
    /// PostgreSQL, announces it to the other nodes, in one transaction; returns the
    /// sessions as they now are. Sessions revoked before are left untouched.
    async fn revoke_sessions(
        &self,
        scope: RevokeScope,
        revocation: RevocationRecord<'_>,
    ) -> anyhow::Result<Vec<SessionRecord>>;

    async fn find_session(&self, id: Uuid) -> anyhow::Result<Option<SessionRecord>>;

    /// The seq of the newest revocation event (0: none yet).
    async fn latest_revocation_seq(&self) -> anyhow::Result<i64>;

    /// Sessions revoked by other nodes' events after `seq`, oldest first, at most `limit`.
    async fn sessions_revoked_after(
        &self,
        seq: i64,
        limit: i64,
        other_than_node: &str,
    ) -> anyhow::Result<Vec<LoggedRevocation>>;

    /// Replaces this node's socket counts per session (PostgreSQL; nothing for SQLite).
    async fn record_node_sockets(
        &self,
        node_id: &str,
        counts: &[(Uuid, i32)],
        now: OffsetDateTime,
    ) -> anyhow::Result<()>;

    /// Other nodes' socket counts seen after `since`: (session, node, sockets).
    async fn other_nodes_sockets(
        &self,
        node_id: &str,
        since: OffsetDateTime,
    ) -> anyhow::Result<Vec<(Uuid, String, i32)>>;

    /// Sessions whose tokens may still be presented: not past `expired_after`, and not
    /// revoked before `revoked_after`. The registry is loaded from these at start.
    async fn sessions_to_remember(
        &self,
        expired_after: OffsetDateTime,
        revoked_after: OffsetDateTime,
    ) -> anyhow::Result<Vec<SessionRecord>>;

    /// The user's sessions that are neither revoked nor past their lifetime.
    async fn live_sessions_of_user(
        &self,
        user_id: Uuid,
        now: OffsetDateTime,
    ) -> anyhow::Result<Vec<SessionRecord>>;

    /// Live sessions with their usernames, oldest first; of one user when given.
    async fn live_sessions_with_users(
        &self,
        user_id: Option<Uuid>,
        now: OffsetDateTime,
    ) -> anyhow::Result<Vec<SessionWithUser>>;

    /// Bans a user, replacing any earlier ban of theirs.
    async fn ban_user(&self, ban: &BanRecord) -> anyhow::Result<()>;

    /// Lifts a ban; false when there was none.
    async fn unban_user(&self, user_id: Uuid) -> anyhow::Result<bool>;

    /// The user's ban, unless there is none or it has lifted by `now`.
    async fn active_ban(&self, user_id: Uuid, now: OffsetDateTime) -> anyhow::Result<Option<BanRecord>>;

    async fn append_audit(&self, entry: &AuditRecord) -> anyhow::Result<()>;

    /// The newest `limit` audit entries, newest first.
    async fn audit_entries(&self, limit: i64) -> anyhow::Result<Vec<AuditRecord>>;

    /// Persists `last_seen_at`, which the registry keeps in memory between flushes.
    async fn record_last_seen(&self, seen: &[(Uuid, OffsetDateTime)]) -> anyhow::Result<()>;
}

/// Opens (creating when missing) and migrates the database the URL names.
pub async fn connect(database_url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if crate::config::is_postgres_url(database_url) {
        Ok(Arc::new(PgStore::connect(database_url).await?))
    } else {
        Ok(Arc::new(SqliteStore::connect(database_url).await?))
    }
}

/// Times are kept to whole seconds: the contract prints RFC 3339 seconds, and SQLite
/// compares stored times as text, which is only sound with one fixed format.
pub fn now() -> OffsetDateTime {
    truncate_to_seconds(OffsetDateTime::now_utc())
}

pub fn truncate_to_seconds(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(0).expect("zero nanoseconds is always valid")
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}
