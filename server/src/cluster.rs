//! Several nodes on one PostgreSQL: revocations answered by any node hold on all.
//!
//! Every revocation is written with a seq in the revocation log and announced with
//! `NOTIFY` in the same transaction (see `store::postgres`). The node that answered
//! has closed its own sockets before answering (close-before-ack), so followers skip
//! their own node's events: a second applier racing it could drain the sockets and
//! leave the answer to go out before their close frames. Each node listens, and
//! on each announcement, on a one-second timer, and after every reconnect it reads the
//! log from the last seq it applied and closes its own sockets of those sessions with
//! the same codes and reasons. Notifications sent while a listener is down are lost,
//! which is why the log, not the notification, is the source: the notification only
//! wakes the node early. While its listener is down a node keeps serving from its
//! registry (what it knew still holds, and the one-second catch-up through the pool
//! keeps it current when only the listener broke), but `/readyz` answers 503 so the
//! load balancer sends its new traffic elsewhere until it has reconnected and caught up.
//!
//! Each node also writes its socket counts per session every few seconds, so that any
//! node can answer the admin session list for the whole cluster.

use crate::app::AppState;
use crate::revocation::CLOSE_CONFIRM_BOUND;
use crate::store;
use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

/// Bounds how stale a node's registry can be even if every notification were lost.
const CATCH_UP_EVERY: Duration = Duration::from_secs(1);
/// How often a node publishes its socket counts; others trust a count this many times over.
const PRESENCE_EVERY: Duration = Duration::from_secs(2);
const PRESENCE_TRUSTED_FOR: Duration = Duration::from_secs(10);
/// Revoked sessions applied per read of the log.
const CATCH_UP_BATCH: i64 = 2000;
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(2);

/// This node's view of the revocation log.
#[derive(Default)]
pub struct LogFollower {
    /// The newest seq whose sessions this node has applied.
    applied: AtomicI64,
    /// Listening and caught up since the last (re)connect.
    in_sync: AtomicBool,
    /// Whether this node follows the log at all (PostgreSQL only).
    following: AtomicBool,
    /// Serializes catch-ups, so two of them never interleave their applies.
    catching_up: tokio::sync::Mutex<()>,
}

impl LogFollower {
    /// Starts from the newest seq; read before the registry is loaded, so nothing
    /// committed in between is skipped (applying a revocation twice is harmless).
    pub fn starting_at(seq: i64) -> LogFollower {
        let follower = LogFollower::default();
        follower.applied.store(seq, Ordering::SeqCst);
        follower
    }

    /// False while this node follows the log but is not listening and caught up.
    pub fn ready(&self) -> bool {
        !self.following.load(Ordering::SeqCst) || self.in_sync.load(Ordering::SeqCst)
    }
}

/// Follows the log until shutdown: listen, catch up, repeat after any break.
pub async fn follow_revocations(state: AppState) {
    let follower = state.log.clone();
    follower.following.store(true, Ordering::SeqCst);
    let url = listener_url(&state.config.database_url, &state.node_id);
    let mut delay = Duration::from_millis(100);
    loop {
        follower.in_sync.store(false, Ordering::SeqCst);
        let listener = async {
            let mut listener = PgListener::connect(&url).await?;
            listener.listen(store::REVOCATION_CHANNEL).await?;
            anyhow::Ok(listener)
        };
        let mut listener = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            connected = listener => match connected {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "cluster listener cannot connect; retrying");
                    // The pool may still work: keep the registry current meanwhile.
                    catch_up(&state).await;
                    tokio::select! {
                        _ = state.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(RECONNECT_DELAY_MAX);
                    continue;
                }
            },
        };
        delay = Duration::from_millis(100);
        // Listening first, then catching up: whatever commits after this read will
        // be announced to us.
        if catch_up(&state).await {
            follower.in_sync.store(true, Ordering::SeqCst);
            tracing::info!(applied = follower.applied.load(Ordering::SeqCst), "cluster listener in sync");
        }
        let mut poll = tokio::time::interval(CATCH_UP_EVERY);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                notification = listener.try_recv() => match notification {
                    Ok(Some(_)) => {
                        catch_up(&state).await;
                    }
                    Ok(None) | Err(_) => {
                        tracing::warn!("cluster listener lost its connection; reconnecting");
                        break;
                    }
                },
                _ = poll.tick() => {
                    let caught_up = catch_up(&state).await;
                    follower.in_sync.store(caught_up, Ordering::SeqCst);
                }
            }
        }
    }
}

/// Applies every revocation after the last applied seq; false if the store failed.
pub async fn catch_up(state: &AppState) -> bool {
    let follower = &state.log;
    let _one_at_a_time = follower.catching_up.lock().await;
    loop {
        let after = follower.applied.load(Ordering::SeqCst);
        let revoked = match state.store.sessions_revoked_after(after, CATCH_UP_BATCH, &state.node_id).await {
            Ok(revoked) => revoked,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "cannot read the revocation log");
                return false;
            }
        };
        let Some(newest) = revoked.iter().map(|logged| logged.revocation_seq).max() else { return true };
        let sessions: Vec<_> = revoked.into_iter().map(|logged| logged.session).collect();
        let closed = state.sessions.revoke(&sessions).execute(CLOSE_CONFIRM_BOUND).await;
        if closed > 0 {
            tracing::info!(
                sessions = sessions.len(),
                sockets_closed = closed,
                "applied revocations from the log"
            );
        }
        follower.applied.store(newest, Ordering::SeqCst);
    }
}

/// Publishes this node's socket counts until shutdown, then withdraws them.
pub async fn publish_presence(state: AppState) {
    let mut every = tokio::time::interval(PRESENCE_EVERY);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = every.tick() => {
                let counts = state.sessions.socket_counts();
                if let Err(error) = state.store.record_node_sockets(&state.node_id, &counts, store::now()).await {
                    tracing::warn!(error = format!("{error:#}"), "cannot publish socket counts");
                }
            }
        }
    }
    let _ = state.store.record_node_sockets(&state.node_id, &[], store::now()).await;
}

/// Other nodes' sockets per session, from counts published recently enough.
pub async fn sockets_elsewhere(state: &AppState) -> anyhow::Result<Vec<(uuid::Uuid, String, i32)>> {
    state.store.other_nodes_sockets(&state.node_id, store::now() - PRESENCE_TRUSTED_FOR).await
}

/// The database URL with an `application_name` naming this node's listener, so an
/// operator (or a test) can find its backend in `pg_stat_activity`.
fn listener_url(database_url: &str, node_id: &str) -> String {
    let separator = if database_url.contains('?') { '&' } else { '?' };
    let name: String =
        node_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    format!("{database_url}{separator}application_name=tether-listener-{name}")
}

pub type SharedLog = Arc<LogFollower>;

#[cfg(test)]
mod tests {
    #[test]
    fn the_listener_names_itself_after_the_node() {
        assert_eq!(
            super::listener_url("postgres://u@h/db", "node-a"),
            "postgres://u@h/db?application_name=tether-listener-node-a"
        );
        assert_eq!(
            super::listener_url("postgres://u@h/db?sslmode=disable", "b c"),
            "postgres://u@h/db?sslmode=disable&application_name=tether-listener-bc"
        );
    }
}
