//! The SQL both backends run, and the one implementation of [`Store`] over it.
//!
//! The schemas differ only in column types (`migrations/sqlite` vs `migrations/postgres`),
//! and every statement here is valid in both dialects (`$n` placeholders, `RETURNING`,
//! `lower()`), so the trait is implemented once, by a macro, for each pool type.

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

pub(super) const SESSION_BY_ID: &str = "SELECT id, user_id, created_at, expires_at, last_seen_at, user_agent, ip, \
     revoked_at, revoke_kind, revoke_reason FROM sessions WHERE id = $1";

pub(super) const REVOKE_SESSION: &str = "UPDATE sessions \
     SET revoked_at = $2, revoke_kind = $3, revoke_reason = $4, revocation_seq = $5 \
     WHERE id = $1 AND revoked_at IS NULL \
     RETURNING id, user_id, created_at, expires_at, last_seen_at, user_agent, ip, \
     revoked_at, revoke_kind, revoke_reason";

pub(super) const REVOKE_USER_SESSIONS: &str = "UPDATE sessions \
     SET revoked_at = $2, revoke_kind = $3, revoke_reason = $4, revocation_seq = $5 \
     WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
     RETURNING id, user_id, created_at, expires_at, last_seen_at, user_agent, ip, \
     revoked_at, revoke_kind, revoke_reason";

pub(super) const REVOKE_USER_SESSIONS_EXCEPT: &str = "UPDATE sessions \
     SET revoked_at = $2, revoke_kind = $3, revoke_reason = $4, revocation_seq = $5 \
     WHERE user_id = $1 AND id <> $6 AND revoked_at IS NULL AND expires_at > $2 \
     RETURNING id, user_id, created_at, expires_at, last_seen_at, user_agent, ip, \
     revoked_at, revoke_kind, revoke_reason";

pub(super) const REVOKE_ALL_SESSIONS_EXCEPT: &str = "UPDATE sessions \
     SET revoked_at = $2, revoke_kind = $3, revoke_reason = $4, revocation_seq = $5 \
     WHERE id <> $1 AND revoked_at IS NULL AND expires_at > $2 \
     RETURNING id, user_id, created_at, expires_at, last_seen_at, user_agent, ip, \
     revoked_at, revoke_kind, revoke_reason";

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

pub(super) const INSERT_AUDIT: &str = "INSERT INTO audit_log (id, at, actor_id, actor_name, action, \
     target_type, target_id, reason, sessions_revoked, sockets_closed, until) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

pub(super) const AUDIT_NEWEST: &str = "SELECT id, at, actor_id, actor_name, action, target_type, target_id, \
     reason, sessions_revoked, sockets_closed, until FROM audit_log ORDER BY seq DESC LIMIT $1";

pub(super) const INSERT_REVOCATION_EVENT: &str =
    "INSERT INTO revocation_events (at, kind, reason, node_id) VALUES ($1, $2, $3, $4) RETURNING seq";

pub(super) const LATEST_REVOCATION_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM revocation_events";

// A node skips its own events: it applied them itself, before it answered.
pub(super) const SESSIONS_REVOKED_AFTER: &str = "SELECT s.id, s.user_id, s.created_at, s.expires_at, \
     s.last_seen_at, s.user_agent, s.ip, s.revoked_at, s.revoke_kind, s.revoke_reason, s.revocation_seq \
     FROM sessions s JOIN revocation_events e ON e.seq = s.revocation_seq \
     WHERE s.revocation_seq > $1 AND e.node_id <> $3 ORDER BY s.revocation_seq LIMIT $2";

pub(super) const SESSIONS_TO_REMEMBER: &str = "SELECT id, user_id, created_at, expires_at, last_seen_at, \
     user_agent, ip, revoked_at, revoke_kind, revoke_reason FROM sessions \
     WHERE expires_at > $1 AND (revoked_at IS NULL OR revoked_at > $2)";

pub(super) const LIVE_SESSIONS_OF_USER: &str = "SELECT id, user_id, created_at, expires_at, last_seen_at, \
     user_agent, ip, revoked_at, revoke_kind, revoke_reason FROM sessions \
     WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at DESC";

pub(super) const UPDATE_LAST_SEEN: &str =
    "UPDATE sessions SET last_seen_at = $2 WHERE id = $1 AND last_seen_at < $2";

/// Implements [`Store`](super::Store) for a struct with a `pool` field of a sqlx pool
/// type. The dialects differ only in what a revocation does around its statements:
/// `before_revocation` (statements run first in its transaction) and
/// `announce_revocation` (statements run last, bound to the event's seq); `extra`
/// holds the trait's backend-specific methods.
macro_rules! impl_store_over_pool {
    (
        $store:ty,
        before_revocation: $before_revocation:expr,
        announce_revocation: $announce_revocation:expr,
        extra: { $($extra:item)* }
    ) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn ping(&self) -> anyhow::Result<()> {
                sqlx::query($crate::store::queries::PING).execute(&self.pool).await?;
                Ok(())
            }

            async fn create_user(
                &self,
                user: $crate::store::NewUser<'_>,
            ) -> anyhow::Result<$crate::store::CreateUser> {
                let inserted = sqlx::query($crate::store::queries::INSERT_USER)
                    .bind(user.id)
                    .bind(user.username)
                    .bind(user.password_hash)
                    .bind(user.role)
                    .bind(user.created_at)
                    .execute(&self.pool)
                    .await;
                match inserted {
                    Ok(_) => Ok($crate::store::CreateUser::Created),
                    Err(e) if $crate::store::is_unique_violation(&e) => {
                        Ok($crate::store::CreateUser::UsernameTaken)
                    }
                    Err(e) => Err(e.into()),
                }
            }

            async fn create_users(&self, users: &[$crate::store::NewUser<'_>]) -> anyhow::Result<u64> {
                let mut tx = self.pool.begin().await?;
                let mut created = 0;
                for user in users {
                    created += sqlx::query($crate::store::queries::INSERT_USER_IF_FREE)
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
            }

            async fn create_first_admin(&self, user: $crate::store::NewUser<'_>) -> anyhow::Result<bool> {
                let inserted = sqlx::query($crate::store::queries::INSERT_FIRST_ADMIN)
                    .bind(user.id)
                    .bind(user.username)
                    .bind(user.password_hash)
                    .bind(user.role)
                    .bind(user.created_at)
                    .execute(&self.pool)
                    .await;
                match inserted {
                    Ok(done) => Ok(done.rows_affected() == 1),
                    // Another node created it first, or the name belongs to a player.
                    Err(e) if $crate::store::is_unique_violation(&e) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }

            async fn find_user_by_name(
                &self,
                username: &str,
            ) -> anyhow::Result<Option<$crate::store::UserRecord>> {
                Ok(sqlx::query_as($crate::store::queries::USER_BY_NAME)
                    .bind(username)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn find_user(&self, id: uuid::Uuid) -> anyhow::Result<Option<$crate::store::UserRecord>> {
                Ok(sqlx::query_as($crate::store::queries::USER_BY_ID)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn create_session(
                &self,
                session: &$crate::store::SessionRecord,
                refresh_hash: &[u8],
            ) -> anyhow::Result<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query($crate::store::queries::INSERT_SESSION)
                    .bind(session.id)
                    .bind(session.user_id)
                    .bind(session.created_at)
                    .bind(session.expires_at)
                    .bind(session.last_seen_at)
                    .bind(session.user_agent.as_deref())
                    .bind(session.ip.as_deref())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query($crate::store::queries::INSERT_REFRESH_TOKEN)
                    .bind(refresh_hash)
                    .bind(session.id)
                    .bind(session.created_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn rotate_refresh_token(
                &self,
                old_hash: &[u8],
                new_hash: &[u8],
                now: time::OffsetDateTime,
            ) -> anyhow::Result<$crate::store::RefreshOutcome> {
                use $crate::store::RefreshOutcome;
                let mut tx = self.pool.begin().await?;
                let claimed: Option<(uuid::Uuid,)> =
                    sqlx::query_as($crate::store::queries::MARK_REFRESH_USED)
                        .bind(old_hash)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await?;
                let session_id = match claimed {
                    Some((session_id,)) => session_id,
                    None => {
                        tx.rollback().await?;
                        let owner: Option<(uuid::Uuid,)> =
                            sqlx::query_as($crate::store::queries::REFRESH_TOKEN_SESSION)
                                .bind(old_hash)
                                .fetch_optional(&self.pool)
                                .await?;
                        let Some((session_id,)) = owner else {
                            return Ok(RefreshOutcome::Unknown);
                        };
                        let Some(session) = self.find_session(session_id).await? else {
                            return Ok(RefreshOutcome::Unknown);
                        };
                        return Ok(if session.revoked_at.is_some() || session.expires_at <= now {
                            RefreshOutcome::SessionEnded(session)
                        } else {
                            RefreshOutcome::Reused(session)
                        });
                    }
                };
                let session: $crate::store::SessionRecord =
                    sqlx::query_as($crate::store::queries::SESSION_BY_ID)
                        .bind(session_id)
                        .fetch_one(&mut *tx)
                        .await?;
                if session.revoked_at.is_some() || session.expires_at <= now {
                    tx.rollback().await?;
                    return Ok(RefreshOutcome::SessionEnded(session));
                }
                sqlx::query($crate::store::queries::INSERT_REFRESH_TOKEN)
                    .bind(new_hash)
                    .bind(session_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(RefreshOutcome::Rotated(session))
            }

            async fn revoke_sessions(
                &self,
                scope: $crate::store::RevokeScope,
                revocation: $crate::store::RevocationRecord<'_>,
            ) -> anyhow::Result<Vec<$crate::store::SessionRecord>> {
                use $crate::store::queries::*;
                use $crate::store::RevokeScope;
                let (sql, id, keep) = match scope {
                    RevokeScope::Session(id) => (REVOKE_SESSION, id, None),
                    RevokeScope::User(id) => (REVOKE_USER_SESSIONS, id, None),
                    RevokeScope::UserExcept { user, keep } => (REVOKE_USER_SESSIONS_EXCEPT, user, Some(keep)),
                    RevokeScope::AllExcept(keep) => (REVOKE_ALL_SESSIONS_EXCEPT, keep, None),
                };
                // The event, the sessions it revokes and the wake-up call commit together:
                // a node that hears of it finds it, and one that missed it finds it later.
                let mut tx = self.pool.begin().await?;
                for statement in $before_revocation {
                    sqlx::query(statement).execute(&mut *tx).await?;
                }
                let (seq,): (i64,) = sqlx::query_as(INSERT_REVOCATION_EVENT)
                    .bind(revocation.at)
                    .bind(revocation.kind)
                    .bind(revocation.reason)
                    .bind(revocation.node_id)
                    .fetch_one(&mut *tx)
                    .await?;
                let query =
                    sqlx::query_as(sql).bind(id).bind(revocation.at).bind(revocation.kind).bind(revocation.reason).bind(seq);
                let query = match keep {
                    Some(keep) => query.bind(keep),
                    None => query,
                };
                let revoked: Vec<$crate::store::SessionRecord> = query.fetch_all(&mut *tx).await?;
                if !revoked.is_empty() {
                    for statement in $announce_revocation {
                        sqlx::query(statement).bind(seq).execute(&mut *tx).await?;
                    }
                }
                tx.commit().await?;
                Ok(revoked)
            }

            async fn latest_revocation_seq(&self) -> anyhow::Result<i64> {
                let (seq,): (i64,) =
                    sqlx::query_as($crate::store::queries::LATEST_REVOCATION_SEQ).fetch_one(&self.pool).await?;
                Ok(seq)
            }

            async fn sessions_revoked_after(
                &self,
                seq: i64,
                limit: i64,
                other_than_node: &str,
            ) -> anyhow::Result<Vec<$crate::store::LoggedRevocation>> {
                Ok(sqlx::query_as($crate::store::queries::SESSIONS_REVOKED_AFTER)
                    .bind(seq)
                    .bind(limit)
                    .bind(other_than_node)
                    .fetch_all(&self.pool)
                    .await?)
            }

            $($extra)*

            async fn find_session(
                &self,
                id: uuid::Uuid,
            ) -> anyhow::Result<Option<$crate::store::SessionRecord>> {
                Ok(sqlx::query_as($crate::store::queries::SESSION_BY_ID)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn sessions_to_remember(
                &self,
                expired_after: time::OffsetDateTime,
                revoked_after: time::OffsetDateTime,
            ) -> anyhow::Result<Vec<$crate::store::SessionRecord>> {
                Ok(sqlx::query_as($crate::store::queries::SESSIONS_TO_REMEMBER)
                    .bind(expired_after)
                    .bind(revoked_after)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn live_sessions_of_user(
                &self,
                user_id: uuid::Uuid,
                now: time::OffsetDateTime,
            ) -> anyhow::Result<Vec<$crate::store::SessionRecord>> {
                Ok(sqlx::query_as($crate::store::queries::LIVE_SESSIONS_OF_USER)
                    .bind(user_id)
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn live_sessions_with_users(
                &self,
                user_id: Option<uuid::Uuid>,
                now: time::OffsetDateTime,
            ) -> anyhow::Result<Vec<$crate::store::SessionWithUser>> {
                use $crate::store::queries::*;
                let query = match user_id {
                    Some(user_id) => sqlx::query_as(LIVE_SESSIONS_OF_USER_WITH_NAME).bind(now).bind(user_id),
                    None => sqlx::query_as(LIVE_SESSIONS_WITH_USERS).bind(now),
                };
                Ok(query.fetch_all(&self.pool).await?)
            }

            async fn ban_user(&self, ban: &$crate::store::BanRecord) -> anyhow::Result<()> {
                sqlx::query($crate::store::queries::UPSERT_BAN)
                    .bind(ban.user_id)
                    .bind(ban.reason.as_deref())
                    .bind(ban.until)
                    .bind(ban.created_at)
                    .bind(ban.actor_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn unban_user(&self, user_id: uuid::Uuid) -> anyhow::Result<bool> {
                let done =
                    sqlx::query($crate::store::queries::DELETE_BAN).bind(user_id).execute(&self.pool).await?;
                Ok(done.rows_affected() > 0)
            }

            async fn active_ban(
                &self,
                user_id: uuid::Uuid,
                now: time::OffsetDateTime,
            ) -> anyhow::Result<Option<$crate::store::BanRecord>> {
                Ok(sqlx::query_as($crate::store::queries::ACTIVE_BAN)
                    .bind(user_id)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn append_audit(&self, entry: &$crate::store::AuditRecord) -> anyhow::Result<()> {
                sqlx::query($crate::store::queries::INSERT_AUDIT)
                    .bind(entry.id)
                    .bind(entry.at)
                    .bind(entry.actor_id)
                    .bind(&entry.actor_name)
                    .bind(&entry.action)
                    .bind(&entry.target_type)
                    .bind(entry.target_id.as_deref())
                    .bind(entry.reason.as_deref())
                    .bind(entry.sessions_revoked)
                    .bind(entry.sockets_closed)
                    .bind(entry.until)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn audit_entries(&self, limit: i64) -> anyhow::Result<Vec<$crate::store::AuditRecord>> {
                Ok(sqlx::query_as($crate::store::queries::AUDIT_NEWEST)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn record_last_seen(
                &self,
                seen: &[(uuid::Uuid, time::OffsetDateTime)],
            ) -> anyhow::Result<()> {
                if seen.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin().await?;
                for (id, at) in seen {
                    sqlx::query($crate::store::queries::UPDATE_LAST_SEEN)
                        .bind(id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }
        }
    };
}

pub(super) use impl_store_over_pool;
