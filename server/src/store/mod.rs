//! Durable state: an embedded SQLite file or a PostgreSQL database, behind one
//! [`Store`]. The store records; the in-memory registry answers requests, so nothing
//! here is called on the per-request path.
//!
//! Every statement is written once (see [`queries`]) and runs on either pool: the
//! [`on_pool!`] macro repeats a method's body for each arm of the pool enum, which sqlx
//! needs because its query types are generic over the database.

mod queries;

use queries::*;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

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
        lifetime: Duration,
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

/// Everything one revoking call writes, in one transaction: the log event, the
/// sessions it takes, and the ban and audit entry that go with it.
pub struct RevocationWrite<'a> {
    pub scope: RevokeScope,
    pub at: OffsetDateTime,
    pub kind: &'static str,
    pub reason: Option<&'a str>,
    /// The node that answered the revoking call (for operators; never used to skip).
    pub node_id: &'a str,
    /// A ban written with the revocation, so a ban never lands without its sessions.
    pub ban: Option<&'a BanRecord>,
    /// The admin's audit entry; its `sessions_revoked` is filled in here.
    pub audit: Option<&'a AuditRecord>,
}

/// A committed revocation: its place in the log and the sessions it took.
pub struct CommittedRevocation {
    pub seq: i64,
    pub sessions: Vec<SessionRecord>,
}

/// A revoked session as the revocation log gives it to a catching-up node.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoggedRevocation {
    #[sqlx(flatten)]
    pub session: SessionRecord,
    pub revocation_seq: i64,
}

/// A place in the revocation log: after session `session` of event `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCursor {
    pub seq: i64,
    pub session: Uuid,
}

impl LogCursor {
    /// Just after every session of event `seq`.
    pub fn after_event(seq: i64) -> LogCursor {
        LogCursor { seq, session: Uuid::max() }
    }
}

/// Another service's credential, as stored: the secret only as its SHA-256.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServiceRecord {
    pub name: String,
    pub client_id: String,
    pub secret_hash: Vec<u8>,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
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

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool this store has.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// The insert of an audit entry, ready to run on a pool or in a transaction.
macro_rules! insert_audit {
    ($entry:expr) => {
        sqlx::query(INSERT_AUDIT)
            .bind($entry.id)
            .bind(utc($entry.at))
            .bind($entry.actor_id)
            .bind(&$entry.actor_name)
            .bind(&$entry.action)
            .bind(&$entry.target_type)
            .bind($entry.target_id.as_deref())
            .bind($entry.reason.as_deref())
            .bind($entry.sessions_revoked)
            .bind($entry.sockets_closed)
            .bind($entry.until.map(utc))
    };
}

/// The database, SQLite or PostgreSQL; cheap to share behind an `Arc`.
pub struct Store {
    pool: Pool,
    /// SQLite has one writer at a time and makes the others retry with growing sleeps
    /// (its busy handler): a burst of revocations queues here instead, in order.
    sqlite_writer: tokio::sync::Mutex<()>,
}

/// Opens (creating when missing) and migrates the database the URL names.
pub async fn connect(database_url: &str) -> anyhow::Result<Arc<Store>> {
    let pool = if crate::config::is_postgres_url(database_url) {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(database_url)
            .await?;
        // Several nodes may start at once: sqlx serializes their migrations with an
        // advisory lock.
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Pool::Postgres(pool)
    } else {
        let options = SqliteConnectOptions::from_str(database_url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A process killed with -9 loses nothing committed under NORMAL in WAL
            // mode; only a power cut may lose the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // SQLite takes one writer at a time; a few connections serve the readers.
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        Pool::Sqlite(pool)
    };
    Ok(Arc::new(Store { pool, sqlite_writer: tokio::sync::Mutex::new(()) }))
}

impl Store {
    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// The PostgreSQL pool, for the cluster bus; None with SQLite.
    pub fn postgres_pool(&self) -> Option<PgPool> {
        match &self.pool {
            Pool::Postgres(pool) => Some(pool.clone()),
            Pool::Sqlite(_) => None,
        }
    }

    async fn sqlite_writer_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.pool {
            Pool::Sqlite(_) => Some(self.sqlite_writer.lock().await),
            Pool::Postgres(_) => None,
        }
    }

    /// Answers when the database can be reached (`/readyz`).
    pub async fn ping(&self) -> anyhow::Result<()> {
        on_pool!(self, pool => {
            sqlx::query(PING).execute(pool).await?;
        });
        Ok(())
    }

    pub async fn create_user(&self, user: NewUser<'_>) -> anyhow::Result<CreateUser> {
        let inserted = on_pool!(self, pool => sqlx::query(INSERT_USER)
            .bind(user.id)
            .bind(user.username)
            .bind(user.password_hash)
            .bind(user.role)
            .bind(user.created_at)
            .execute(pool)
            .await
            .map(|_| ()));
        match inserted {
            Ok(()) => Ok(CreateUser::Created),
            Err(e) if is_unique_violation(&e) => Ok(CreateUser::UsernameTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates many users in one transaction, skipping taken names; returns how many were created.
    pub async fn create_users(&self, users: &[NewUser<'_>]) -> anyhow::Result<u64> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut created = 0;
            for user in users {
                created += sqlx::query(INSERT_USER_IF_FREE)
                    .bind(user.id)
                    .bind(user.username)
                    .bind(user.password_hash)
                    .bind(user.role)
                    .bind(user.created_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            Ok(created)
        })
    }

    /// Creates the user only while no admin exists; false when one does (or the name is taken).
    pub async fn create_first_admin(&self, user: NewUser<'_>) -> anyhow::Result<bool> {
        let inserted = on_pool!(self, pool => sqlx::query(INSERT_FIRST_ADMIN)
            .bind(user.id)
            .bind(user.username)
            .bind(user.password_hash)
            .bind(user.role)
            .bind(user.created_at)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()));
        match inserted {
            Ok(rows) => Ok(rows == 1),
            // Another node created it first, or the name belongs to a player.
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn find_user_by_name(&self, username: &str) -> anyhow::Result<Option<UserRecord>> {
        Ok(on_pool!(self, pool => sqlx::query_as(USER_BY_NAME).bind(username).fetch_optional(pool).await?))
    }

    pub async fn find_user(&self, id: Uuid) -> anyhow::Result<Option<UserRecord>> {
        Ok(on_pool!(self, pool => sqlx::query_as(USER_BY_ID).bind(id).fetch_optional(pool).await?))
    }

    /// Records a new session and its first refresh token, atomically.
    pub async fn create_session(&self, session: &SessionRecord, refresh_hash: &[u8]) -> anyhow::Result<()> {
        self.create_sessions([(session, refresh_hash)]).await
    }

    /// Records many sessions with their first refresh tokens in one transaction: the
    /// fixtures of mass-revocation tests and benchmarks, where one login per session
    /// would cost minutes of password hashing.
    pub async fn create_sessions<'a>(
        &self,
        sessions: impl IntoIterator<Item = (&'a SessionRecord, &'a [u8])>,
    ) -> anyhow::Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (session, refresh_hash) in sessions {
                sqlx::query(INSERT_SESSION)
                    .bind(session.id)
                    .bind(session.user_id)
                    .bind(session.created_at)
                    .bind(session.expires_at)
                    .bind(session.last_seen_at)
                    .bind(session.user_agent.as_deref())
                    .bind(session.ip.as_deref())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(INSERT_REFRESH_TOKEN)
                    .bind(refresh_hash)
                    .bind(session.id)
                    .bind(session.created_at)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Compare-and-swap of the session's refresh token: of several callers with the
    /// same token, exactly one gets `Rotated`.
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &[u8],
        new_hash: &[u8],
        now: OffsetDateTime,
    ) -> anyhow::Result<RefreshOutcome> {
        // A read first, outside any transaction: a token that names nothing (a flood
        // of random ones) never takes SQLite's write lock from the honest writers.
        let known: Option<(Uuid,)> = on_pool!(self, pool => sqlx::query_as(REFRESH_TOKEN_SESSION).bind(old_hash).fetch_optional(pool).await?);
        if known.is_none() {
            return Ok(RefreshOutcome::Unknown);
        }
        let rotated: Option<SessionRecord> = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let claimed: Option<(Uuid,)> =
                sqlx::query_as(MARK_REFRESH_USED).bind(old_hash).bind(now).fetch_optional(&mut *tx).await?;
            match claimed {
                None => {
                    tx.rollback().await?;
                    None
                }
                Some((session_id,)) => {
                    let session: SessionRecord =
                        sqlx::query_as(SESSION_BY_ID).bind(session_id).fetch_one(&mut *tx).await?;
                    if session.revoked_at.is_some() || session.expires_at <= now {
                        tx.rollback().await?;
                        return Ok(RefreshOutcome::SessionEnded(session));
                    }
                    sqlx::query(INSERT_REFRESH_TOKEN)
                        .bind(new_hash)
                        .bind(session_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Some(session)
                }
            }
        });
        if let Some(session) = rotated {
            return Ok(RefreshOutcome::Rotated(session));
        }
        let owner: Option<(Uuid,)> = on_pool!(self, pool => sqlx::query_as(REFRESH_TOKEN_SESSION).bind(old_hash).fetch_optional(pool).await?);
        let Some((session_id,)) = owner else { return Ok(RefreshOutcome::Unknown) };
        let Some(session) = self.find_session(session_id).await? else { return Ok(RefreshOutcome::Unknown) };
        Ok(if session.revoked_at.is_some() || session.expires_at <= now {
            RefreshOutcome::SessionEnded(session)
        } else {
            RefreshOutcome::Reused(session)
        })
    }

    /// Marks the live sessions in scope revoked and logs the event (with its ban and
    /// audit entry), in one transaction; returns the event's seq and the sessions as
    /// they now are. Sessions revoked before are left untouched, so a retry of a call
    /// whose commit failed takes exactly what the first try would have.
    pub async fn revoke(&self, write: RevocationWrite<'_>) -> anyhow::Result<CommittedRevocation> {
        let (sql, id, keep) = match write.scope {
            RevokeScope::Session(id) => (REVOKE_SESSION, id, None),
            RevokeScope::User(id) => (REVOKE_USER_SESSIONS, id, None),
            RevokeScope::UserExcept { user, keep } => (REVOKE_USER_SESSIONS_EXCEPT, user, Some(keep)),
            RevokeScope::AllExcept(keep) => (REVOKE_ALL_SESSIONS_EXCEPT, keep, None),
        };
        let is_postgres = self.is_postgres();
        let _one_writer = self.sqlite_writer_turn().await;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if is_postgres {
                sqlx::query(LOCK_REVOCATION_LOG).execute(&mut *tx).await?;
            }
            let (seq,): (i64,) = sqlx::query_as(INSERT_REVOCATION_EVENT)
                .bind(write.at)
                .bind(write.kind)
                .bind(write.reason)
                .bind(write.node_id)
                .fetch_one(&mut *tx)
                .await?;
            if let Some(ban) = write.ban {
                sqlx::query(UPSERT_BAN)
                    .bind(ban.user_id)
                    .bind(ban.reason.as_deref())
                    .bind(ban.until.map(utc))
                    .bind(ban.created_at)
                    .bind(ban.actor_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let query = sqlx::query_as(sql).bind(id).bind(write.at).bind(write.kind).bind(write.reason).bind(seq);
            let query = match keep {
                Some(keep) => query.bind(keep),
                None => query,
            };
            let sessions: Vec<SessionRecord> = query.fetch_all(&mut *tx).await?;
            if let Some(audit) = write.audit {
                let audit = AuditRecord { sessions_revoked: sessions.len() as i64, ..audit.clone() };
                insert_audit!(audit).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(CommittedRevocation { seq, sessions })
        })
    }

    /// Lifts a ban and logs it, so every node stops closing its sessions' sockets with
    /// 4003; None when there was no ban.
    pub async fn unban(
        &self,
        user_id: Uuid,
        at: OffsetDateTime,
        node_id: &str,
        audit: &AuditRecord,
    ) -> anyhow::Result<Option<i64>> {
        let is_postgres = self.is_postgres();
        let _one_writer = self.sqlite_writer_turn().await;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if is_postgres {
                sqlx::query(LOCK_REVOCATION_LOG).execute(&mut *tx).await?;
            }
            if sqlx::query(DELETE_BAN).bind(user_id).execute(&mut *tx).await?.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            let (seq,): (i64,) = sqlx::query_as(INSERT_REVOCATION_EVENT)
                .bind(at)
                .bind("unban")
                .bind(None::<&str>)
                .bind(node_id)
                .fetch_one(&mut *tx)
                .await?;
            insert_audit!(audit).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(seq))
        })
    }

    pub async fn find_session(&self, id: Uuid) -> anyhow::Result<Option<SessionRecord>> {
        Ok(on_pool!(self, pool => sqlx::query_as(SESSION_BY_ID).bind(id).fetch_optional(pool).await?))
    }

    /// The seq of the newest revocation event (0: none yet).
    pub async fn latest_revocation_seq(&self) -> anyhow::Result<i64> {
        let (seq,): (i64,) =
            on_pool!(self, pool => sqlx::query_as(LATEST_REVOCATION_SEQ).fetch_one(pool).await?);
        Ok(seq)
    }

    /// The newest seq after `seq` (or `seq` itself), and whether any event after it
    /// changed a ban.
    pub async fn log_head_after(&self, seq: i64) -> anyhow::Result<(i64, bool)> {
        let (head, ban_changes): (i64, i64) =
            on_pool!(self, pool => sqlx::query_as(LOG_HEAD_AFTER).bind(seq).fetch_one(pool).await?);
        Ok((head, ban_changes > 0))
    }

    /// Sessions revoked after `cursor` by events up to `up_to`, in log order, at most `limit`.
    pub async fn sessions_revoked_in_log(
        &self,
        cursor: LogCursor,
        up_to: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<LoggedRevocation>> {
        Ok(on_pool!(self, pool => sqlx::query_as(SESSIONS_REVOKED_IN_LOG)
            .bind(cursor.seq)
            .bind(cursor.session)
            .bind(up_to)
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// Sessions whose tokens may still be presented: not past `expired_after`, and not
    /// revoked before `revoked_after`. The registry is loaded from these at start.
    pub async fn sessions_to_remember(
        &self,
        expired_after: OffsetDateTime,
        revoked_after: OffsetDateTime,
    ) -> anyhow::Result<Vec<SessionRecord>> {
        Ok(on_pool!(self, pool => sqlx::query_as(SESSIONS_TO_REMEMBER)
            .bind(expired_after)
            .bind(revoked_after)
            .fetch_all(pool)
            .await?))
    }

    /// The user's sessions that are neither revoked nor past their lifetime.
    pub async fn live_sessions_of_user(
        &self,
        user_id: Uuid,
        now: OffsetDateTime,
    ) -> anyhow::Result<Vec<SessionRecord>> {
        Ok(on_pool!(self, pool => sqlx::query_as(LIVE_SESSIONS_OF_USER)
            .bind(user_id)
            .bind(now)
            .fetch_all(pool)
            .await?))
    }

    /// Live sessions with their usernames, oldest first; of one user when given.
    pub async fn live_sessions_with_users(
        &self,
        user_id: Option<Uuid>,
        now: OffsetDateTime,
    ) -> anyhow::Result<Vec<SessionWithUser>> {
        Ok(on_pool!(self, pool => match user_id {
            Some(user_id) => {
                sqlx::query_as(LIVE_SESSIONS_OF_USER_WITH_NAME).bind(now).bind(user_id).fetch_all(pool).await?
            }
            None => sqlx::query_as(LIVE_SESSIONS_WITH_USERS).bind(now).fetch_all(pool).await?,
        }))
    }

    /// The user's ban, unless there is none or it has lifted by `now`.
    pub async fn active_ban(&self, user_id: Uuid, now: OffsetDateTime) -> anyhow::Result<Option<BanRecord>> {
        Ok(on_pool!(self, pool => sqlx::query_as(ACTIVE_BAN)
            .bind(user_id)
            .bind(utc(now))
            .fetch_optional(pool)
            .await?))
    }

    /// Every ban still in force at `now`.
    pub async fn active_bans(&self, now: OffsetDateTime) -> anyhow::Result<Vec<BanRecord>> {
        Ok(on_pool!(self, pool => sqlx::query_as(ACTIVE_BANS).bind(utc(now)).fetch_all(pool).await?))
    }

    /// An admin action that revoked nothing.
    pub async fn append_audit(&self, entry: &AuditRecord) -> anyhow::Result<()> {
        on_pool!(self, pool => {
            insert_audit!(entry).execute(pool).await?;
        });
        Ok(())
    }

    /// Fills in how many sockets a revocation closed, once they are closed.
    pub async fn set_audit_sockets_closed(&self, id: Uuid, sockets_closed: u64) -> anyhow::Result<()> {
        on_pool!(self, pool => {
            sqlx::query(SET_AUDIT_SOCKETS_CLOSED).bind(id).bind(sockets_closed as i64).execute(pool).await?;
        });
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_entries(&self, limit: i64) -> anyhow::Result<Vec<AuditRecord>> {
        Ok(on_pool!(self, pool => sqlx::query_as(AUDIT_NEWEST).bind(limit).fetch_all(pool).await?))
    }

    /// False when the name is taken (by a live or a revoked credential).
    pub async fn create_service(&self, service: &ServiceRecord) -> anyhow::Result<bool> {
        let inserted = on_pool!(self, pool => sqlx::query(INSERT_SERVICE)
            .bind(&service.name)
            .bind(&service.client_id)
            .bind(&service.secret_hash)
            .bind(service.created_at)
            .execute(pool)
            .await
            .map(|_| ()));
        match inserted {
            Ok(()) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every credential, revoked ones included, by name.
    pub async fn services(&self) -> anyhow::Result<Vec<ServiceRecord>> {
        Ok(on_pool!(self, pool => sqlx::query_as(ALL_SERVICES).fetch_all(pool).await?))
    }

    /// False when no live credential has that name.
    pub async fn revoke_service(&self, name: &str, at: OffsetDateTime) -> anyhow::Result<bool> {
        let revoked = on_pool!(self, pool => sqlx::query(REVOKE_SERVICE)
            .bind(name)
            .bind(at)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(revoked == 1)
    }

    /// `(pruned_through, head)`: events up to the first are gone; the second is the newest.
    pub async fn revocation_log_bounds(&self) -> anyhow::Result<(i64, i64)> {
        Ok(on_pool!(self, pool => sqlx::query_as(REVOCATION_LOG_BOUNDS).fetch_one(pool).await?))
    }

    /// Revoked sessions whose lifetime has not ended at `now`, revoked by events up
    /// to `up_to`, in log order.
    pub async fn revoked_sessions_alive(
        &self,
        up_to: i64,
        now: OffsetDateTime,
    ) -> anyhow::Result<Vec<LoggedRevocation>> {
        Ok(on_pool!(self, pool => sqlx::query_as(REVOKED_SESSIONS_ALIVE)
            .bind(up_to)
            .bind(now)
            .fetch_all(pool)
            .await?))
    }

    /// Drops the events whose sessions have all passed their lifetime (never the
    /// newest event, which seqs continue from); returns the new floor.
    pub async fn prune_revocation_log(&self, now: OffsetDateTime) -> anyhow::Result<i64> {
        let is_postgres = self.is_postgres();
        let _one_writer = self.sqlite_writer_turn().await;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if is_postgres {
                sqlx::query(LOCK_REVOCATION_LOG).execute(&mut *tx).await?;
            }
            let (keep_from,): (i64,) = sqlx::query_as(OLDEST_EVENT_TO_KEEP).bind(now).fetch_one(&mut *tx).await?;
            let through = keep_from - 1;
            if through > 0 {
                sqlx::query(DELETE_EVENTS_THROUGH).bind(through).execute(&mut *tx).await?;
                sqlx::query(RAISE_LOG_FLOOR).bind(through).execute(&mut *tx).await?;
            }
            let (floor,): (i64,) =
                sqlx::query_as(LOG_FLOOR).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(floor)
        })
    }

    /// Persists `last_seen_at`, which the registry keeps in memory between flushes.
    pub async fn record_last_seen(&self, seen: &[(Uuid, OffsetDateTime)]) -> anyhow::Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (id, at) in seen {
                sqlx::query(UPDATE_LAST_SEEN).bind(id).bind(at).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}

/// Times are kept to whole seconds in UTC: the contract prints RFC 3339 seconds, and
/// SQLite compares stored times as text, which is only sound with one fixed format
/// and one offset (a ban `until` sent as `-10:00` would otherwise lift hours early).
pub fn now() -> OffsetDateTime {
    truncate_to_seconds(OffsetDateTime::now_utc())
}

pub fn truncate_to_seconds(at: OffsetDateTime) -> OffsetDateTime {
    utc(at).replace_nanosecond(0).expect("zero nanoseconds is always valid")
}

/// The same instant, written with offset +00:00.
pub fn utc(at: OffsetDateTime) -> OffsetDateTime {
    at.to_offset(UtcOffset::UTC)
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}
