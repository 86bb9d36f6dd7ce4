//! Several nodes on one PostgreSQL: revocations answered by any node hold on all.
//!
//! Every revocation is an event in the store's revocation log, committed with the
//! sessions it took (see [`crate::revocation`]). Each node follows the log: on every
//! announcement from the [`ClusterBus`], on a short timer, and after every reconnect,
//! it reads the sessions revoked after its cursor, page by page in (seq, session) order
//! so that an event of any size crosses any number of pages, and closes its own sockets
//! of them. It applies every event, its own process's included: applying twice is
//! harmless (the first reason stays, and a second revoker waits for the first one's
//! close frames), and it is what repairs a revocation whose committing process lost
//! the commit's reply. Announcements sent while a listener is down are lost, which is
//! why the log, not the announcement, is the source.
//!
//! A node that has not read the log for `--max-staleness` cannot vouch for its
//! sessions: it answers Bearer routes 503 and closes upgrades 1013 (the contract's
//! "Cluster"), keeps its open sockets, and applies the backlog the moment a read works.
//!
//! Each node also publishes its socket counts per session every few seconds, so that
//! any node can answer the admin session list for the whole cluster.

pub mod bus;
pub mod postgres;

use crate::app::AppState;
use crate::revocation::CLOSE_CONFIRM_BOUND;
use crate::store::{self, LogCursor};
pub use bus::ClusterBus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bounds how late a revocation reaches this node even if every announcement is lost.
const CATCH_UP_EVERY: Duration = Duration::from_millis(500);
/// A read of the log that takes longer counts as failed (a cut connection may hang).
const LOG_READ_BOUND: Duration = Duration::from_secs(2);
/// How often a node publishes its socket counts; others trust a count this many times over.
const PRESENCE_EVERY: Duration = Duration::from_secs(2);
const PRESENCE_TRUSTED_FOR: Duration = Duration::from_secs(10);
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(1);

/// This node's view of the revocation log.
pub struct LogFollower {
    /// The newest seq whose sessions this node has all applied.
    applied: AtomicI64,
    /// Where the next read starts; held for the whole of a catch-up, so two of them
    /// never interleave.
    cursor: tokio::sync::Mutex<LogCursor>,
    /// Listening for announcements since the last (re)connect.
    listening: AtomicBool,
    /// Whether this node follows the log at all (it has a cluster bus).
    following: AtomicBool,
    /// When the log was last read, in ms since `epoch`.
    fresh_at_ms: AtomicU64,
    epoch: Instant,
    max_staleness: Option<Duration>,
    page_size: i64,
}

impl LogFollower {
    /// Starts after event `seq`; read before the registry is loaded, so nothing
    /// committed in between is skipped (applying a revocation twice is harmless).
    pub fn starting_at(seq: i64, max_staleness: Option<Duration>, page_size: usize) -> LogFollower {
        LogFollower {
            applied: AtomicI64::new(seq),
            cursor: tokio::sync::Mutex::new(LogCursor::after_event(seq)),
            listening: AtomicBool::new(false),
            following: AtomicBool::new(false),
            fresh_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            max_staleness,
            page_size: page_size.max(1) as i64,
        }
    }

    /// The newest seq whose sessions this node has all applied.
    pub fn applied(&self) -> i64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// True while this node follows the log and has not read it for `--max-staleness`.
    pub fn is_stale(&self) -> bool {
        let Some(max_staleness) = self.max_staleness else { return false };
        if !self.following.load(Ordering::Relaxed) {
            return false;
        }
        let fresh_at = Duration::from_millis(self.fresh_at_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(fresh_at) > max_staleness
    }

    /// When this node turns stale unless it reads the log first (None: never).
    pub fn stale_at(&self) -> Option<Instant> {
        let max_staleness = self.max_staleness?;
        if !self.following.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.epoch + Duration::from_millis(self.fresh_at_ms.load(Ordering::Relaxed)) + max_staleness)
    }

    /// False while this node follows the log but is stale or not listening.
    pub fn ready(&self) -> bool {
        !self.following.load(Ordering::SeqCst) || (self.listening.load(Ordering::SeqCst) && !self.is_stale())
    }

    fn mark_fresh(&self) {
        self.fresh_at_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

pub type SharedLog = Arc<LogFollower>;

/// Follows the log until shutdown: listen, catch up, repeat after any break; and
/// catch up on a timer whatever the listener does.
pub async fn follow_revocations(state: AppState, bus: Arc<dyn ClusterBus>) {
    let follower = state.log.clone();
    follower.mark_fresh();
    follower.following.store(true, Ordering::SeqCst);
    let mut announcements = None;
    let mut delay = Duration::from_millis(100);
    let mut retry_at = tokio::time::Instant::now();
    let mut poll = tokio::time::interval(CATCH_UP_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if announcements.is_none() && tokio::time::Instant::now() >= retry_at {
            match tokio::time::timeout(LOG_READ_BOUND, bus.subscribe()).await {
                Ok(Ok(subscribed)) => {
                    announcements = Some(subscribed);
                    delay = Duration::from_millis(100);
                    // Listening first, then catching up: whatever commits after this
                    // read will be announced to us.
                    if catch_up(&state).await {
                        tracing::info!(applied = follower.applied(), "cluster listener in sync");
                    }
                    follower.listening.store(true, Ordering::SeqCst);
                }
                failed => {
                    let error = match failed {
                        Ok(Err(error)) => format!("{error:#}"),
                        _ => "timed out".to_owned(),
                    };
                    tracing::warn!(error, "cluster listener cannot connect; retrying");
                    retry_at = tokio::time::Instant::now() + delay;
                    delay = (delay * 2).min(RECONNECT_DELAY_MAX);
                }
            }
        }
        let next_announcement = async {
            match announcements.as_mut() {
                Some(announcements) => announcements.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            announced = next_announcement => match announced {
                Ok(()) => {
                    catch_up(&state).await;
                }
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "cluster listener lost; reconnecting");
                    announcements = None;
                    follower.listening.store(false, Ordering::SeqCst);
                }
            },
            _ = poll.tick() => {
                catch_up(&state).await;
            }
        }
    }
}

/// Applies every revocation after the cursor, up to the log's head as read now; true
/// when it got there (the node is then fresh), false if the store failed.
pub async fn catch_up(state: &AppState) -> bool {
    let follower = &state.log;
    let mut cursor = follower.cursor.lock().await;
    match apply_backlog(state, &mut cursor).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(error = format!("{error:#}"), "cannot read the revocation log");
            false
        }
    }
}

async fn apply_backlog(state: &AppState, cursor: &mut LogCursor) -> anyhow::Result<()> {
    let follower = &state.log;
    let (head, bans_changed) = bounded(state.store.log_head_after(cursor.seq)).await?;
    // Reading is what staleness is about: a node working through a large backlog can
    // read the log, and refuses each page's sessions as soon as it has read them.
    follower.mark_fresh();
    if bans_changed {
        let bans = bounded(state.store.active_bans(store::now())).await?;
        state.bans.replace(bans.into_iter().map(|ban| (ban.user_id, ban.until)));
    }
    if *cursor == LogCursor::after_event(head) {
        return Ok(());
    }
    let mut sessions = 0;
    // Each page's sockets close while the next page is read; all before this returns.
    let mut closing = Vec::new();
    loop {
        let page = bounded(state.store.sessions_revoked_in_log(*cursor, head, follower.page_size)).await?;
        follower.mark_fresh();
        let Some(last) = page.last() else { break };
        let plan =
            state.sessions.apply_logged(page.iter().map(|logged| (logged.revocation_seq, &logged.session)));
        if !plan.is_empty() {
            closing.push(tokio::spawn(plan.execute(CLOSE_CONFIRM_BOUND)));
        }
        sessions += page.len();
        *cursor = LogCursor { seq: last.revocation_seq, session: last.session.id };
        if (page.len() as i64) < follower.page_size {
            break;
        }
    }
    *cursor = LogCursor::after_event(head);
    follower.applied.store(head, Ordering::SeqCst);
    state.feed.advance(head);
    let mut sockets = 0;
    for plan in closing {
        sockets += plan.await.unwrap_or(0);
    }
    if sockets > 0 {
        tracing::info!(
            sessions,
            sockets_closed = sockets,
            applied = head,
            "applied revocations from the log"
        );
    }
    Ok(())
}

async fn bounded<T>(read: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(LOG_READ_BOUND, read).await.map_err(|_| anyhow::anyhow!("the log read timed out"))?
}

/// Publishes this node's socket counts until shutdown, then withdraws them.
pub async fn publish_presence(state: AppState, bus: Arc<dyn ClusterBus>) {
    let mut every = tokio::time::interval(PRESENCE_EVERY);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = every.tick() => {
                let counts = state.sessions.socket_counts();
                if let Err(error) = bus.publish_presence(&state.node_id, &counts, store::now()).await {
                    tracing::warn!(error = format!("{error:#}"), "cannot publish socket counts");
                }
            }
        }
    }
    let _ = bus.publish_presence(&state.node_id, &[], store::now()).await;
}

/// Other nodes' sockets per session, from counts published recently enough; none
/// for a single node.
pub async fn sockets_elsewhere(state: &AppState) -> anyhow::Result<Vec<(uuid::Uuid, String, i32)>> {
    match &state.bus {
        Some(bus) => bus.presence_elsewhere(&state.node_id, store::now() - PRESENCE_TRUSTED_FOR).await,
        None => Ok(Vec::new()),
    }
}
