//! The session registry: every session this node may be asked about, in memory.
//!
//! It is the only thing a request or an upgrade consults after the signature check.
//! Each entry also holds the close handles of the session's open sockets, so that a
//! revocation marks the session and collects its sockets under one short lock, and
//! then closes them without holding any lock (see [`ClosePlan`]).

use crate::bans::BanList;
use crate::revocation::Revocation;
use crate::store::{RevokeScope, SessionRecord};
use dashmap::DashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tether_shared::{SessionId, UserId, close};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Why a token's session cannot be used.
#[derive(Debug, Clone)]
pub enum SessionProblem {
    /// Not a session this node knows: treated like a forged token.
    Unknown,
    Revoked {
        revocation: Arc<Revocation>,
        /// Whether the user was banned when this was checked (decides 4003 or 4001).
        still_banned: bool,
    },
    Expired,
}

impl SessionProblem {
    pub fn close_code(&self) -> u16 {
        match self {
            SessionProblem::Unknown => close::INVALID_TOKEN,
            SessionProblem::Revoked { revocation, still_banned } => revocation.kind.close_code(*still_banned),
            SessionProblem::Expired => close::EXPIRED,
        }
    }

    pub fn close_reason(&self) -> String {
        match self {
            SessionProblem::Unknown => close::reason("invalid token", Some("unknown session")),
            SessionProblem::Revoked { revocation, .. } => revocation.close_reason().to_string(),
            SessionProblem::Expired => close::reason("expired", None),
        }
    }
}

/// Sent to a socket's task: write this close frame now, ahead of anything queued.
#[derive(Debug)]
pub struct CloseOrder {
    pub code: u16,
    pub reason: Arc<str>,
    /// Dropped by the socket task once the frame is written (or the socket aborted);
    /// the revoker waits until every ticket of its plan is gone.
    _ticket: mpsc::Sender<()>,
}

struct SocketLink {
    id: u64,
    close: oneshot::Sender<CloseOrder>,
}

struct EntryState {
    revoked: Option<Arc<Revocation>>,
    sockets: Vec<SocketLink>,
    /// Cancelled once the plan that took this session's sockets has seen each of them
    /// write its close frame: a second revoker of the same session (the log follower
    /// applying this node's own event, say) waits on it rather than answering early.
    closing: Option<CancellationToken>,
}

/// One session as the registry knows it.
pub struct SessionEntry {
    pub id: SessionId,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// Unix seconds of the last authenticated use; written to the store in batches.
    last_seen: AtomicI64,
    last_seen_flushed: AtomicI64,
    state: Mutex<EntryState>,
}

impl SessionEntry {
    fn from_record(record: &SessionRecord) -> SessionEntry {
        let last_seen = record.last_seen_at.unix_timestamp();
        SessionEntry {
            id: SessionId(record.id),
            user_id: UserId(record.user_id),
            created_at: record.created_at,
            expires_at: record.expires_at,
            last_seen: AtomicI64::new(last_seen),
            last_seen_flushed: AtomicI64::new(last_seen),
            state: Mutex::new(EntryState {
                revoked: Revocation::of_record(record).map(Arc::new),
                sockets: Vec::new(),
                closing: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, EntryState> {
        // Nothing panics while holding this lock; recover rather than poison the registry.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn problem_at(&self, state: &EntryState, now: OffsetDateTime, bans: &BanList) -> Option<SessionProblem> {
        if let Some(revocation) = &state.revoked {
            let still_banned = bans.is_banned(self.user_id.0, now);
            Some(SessionProblem::Revoked { revocation: revocation.clone(), still_banned })
        } else if self.expires_at <= now {
            Some(SessionProblem::Expired)
        } else {
            None
        }
    }

    pub fn last_seen_at(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.last_seen.load(Ordering::Relaxed)).unwrap_or(self.created_at)
    }

    pub fn open_sockets(&self) -> usize {
        self.lock().sockets.len()
    }

    fn touch(&self, now: OffsetDateTime) {
        let now = now.unix_timestamp();
        // Read first: a store on every request would bounce the cache line between cores.
        if self.last_seen.load(Ordering::Relaxed) < now {
            self.last_seen.store(now, Ordering::Relaxed);
        }
    }
}

/// A socket's place in its session. Dropping it unregisters the socket.
pub struct SocketGuard {
    entry: Arc<SessionEntry>,
    id: u64,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let mut state = self.entry.lock();
        if let Some(index) = state.sockets.iter().position(|link| link.id == self.id) {
            state.sockets.swap_remove(index);
        }
    }
}

/// Close orders collected under the entries' locks, to be sent after they are released.
#[must_use = "a close plan does nothing until it is executed"]
pub struct ClosePlan {
    orders: Vec<(oneshot::Sender<CloseOrder>, u16, Arc<str>)>,
    /// Cancelled when this plan's sockets have all written their close frames.
    done: Option<CancellationToken>,
    /// Other plans, already under way, that took sockets of sessions in this one.
    waits: Vec<CancellationToken>,
}

impl ClosePlan {
    fn empty() -> ClosePlan {
        ClosePlan { orders: Vec::new(), done: None, waits: Vec::new() }
    }

    fn take_sockets(&mut self, state: &mut EntryState, code: u16, reason: &Arc<str>) {
        if state.sockets.is_empty() {
            if let Some(closing) = &state.closing
                && !closing.is_cancelled()
            {
                self.waits.push(closing.clone());
            }
            return;
        }
        let done = self.done.get_or_insert_with(CancellationToken::new);
        state.closing = Some(done.clone());
        self.orders.extend(state.sockets.drain(..).map(|link| (link.close, code, reason.clone())));
    }

    pub fn is_empty(&self) -> bool {
        self.orders.is_empty() && self.waits.is_empty()
    }

    /// Hands every socket its close order and waits until each has written its close
    /// frame or been aborted, and until any other plan holding sockets of these
    /// sessions is done too. Socket tasks never wait on a slow peer to do either, so
    /// `bound` is only a guard against a bug; returns how many sockets this plan closed.
    pub async fn execute(self, bound: Duration) -> u64 {
        let ClosePlan { orders, done, waits } = self;
        let mut delivered = 0;
        if !orders.is_empty() {
            let (ticket, mut all_done) = mpsc::channel::<()>(1);
            for (close_tx, code, reason) in orders {
                let order = CloseOrder { code, reason, _ticket: ticket.clone() };
                // A socket whose task already ended returns the order, and its ticket, at once.
                if close_tx.send(order).is_ok() {
                    delivered += 1;
                }
            }
            drop(ticket);
            if tokio::time::timeout(bound, all_done.recv()).await.is_err() {
                tracing::error!(sockets = delivered, "socket tasks did not confirm their close in time");
            }
        }
        if let Some(done) = done {
            done.cancel();
        }
        for other in waits {
            if tokio::time::timeout(bound, other.cancelled()).await.is_err() {
                tracing::error!("another revoker's sockets did not confirm their close in time");
            }
        }
        delivered
    }
}

/// Loads of sessions this node does not know yet (created on another node), so that
/// many requests missing the same session together cost one database read.
#[derive(Clone, Default)]
pub struct SessionMisses {
    in_flight: Arc<DashMap<SessionId, Arc<tokio::sync::OnceCell<Option<SessionRecord>>>>>,
}

impl SessionMisses {
    pub async fn load<F, Fut>(&self, id: SessionId, load: F) -> anyhow::Result<Option<SessionRecord>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Option<SessionRecord>>>,
    {
        let cell = self.in_flight.entry(id).or_default().clone();
        let loaded = cell.get_or_try_init(load).await.cloned();
        self.in_flight.remove_if(&id, |_, current| Arc::ptr_eq(current, &cell));
        loaded
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Census {
    pub sockets_open: usize,
    pub sessions_active: usize,
    /// Revoked sessions that still have a socket registered: must always be 0.
    pub revoked_still_connected: usize,
}

/// The registry; cheap to clone, every clone is the same registry.
#[derive(Clone, Default)]
pub struct SessionRegistry {
    sessions: Arc<DashMap<SessionId, Arc<SessionEntry>>>,
    next_socket_id: Arc<AtomicU64>,
    bans: BanList,
}

impl SessionRegistry {
    /// A registry that reads `bans` to tell a ban-revoked session's close code.
    pub fn new(bans: BanList) -> SessionRegistry {
        SessionRegistry { bans, ..SessionRegistry::default() }
    }

    /// Remembers a session as the store has it (live, revoked or expired).
    pub fn remember(&self, record: &SessionRecord) -> Arc<SessionEntry> {
        self.sessions
            .entry(SessionId(record.id))
            .or_insert_with(|| Arc::new(SessionEntry::from_record(record)))
            .clone()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn get(&self, id: SessionId) -> Option<Arc<SessionEntry>> {
        self.sessions.get(&id).map(|entry| entry.clone())
    }

    /// The per-request check: is this session usable now?
    pub fn check(&self, id: SessionId, now: OffsetDateTime) -> Result<Arc<SessionEntry>, SessionProblem> {
        let entry = self.get(id).ok_or(SessionProblem::Unknown)?;
        if let Some(problem) = entry.problem_at(&entry.lock(), now, &self.bans) {
            return Err(problem);
        }
        entry.touch(now);
        Ok(entry)
    }

    /// Registers a socket, unless the session became unusable since it was checked.
    /// The check and the insert share the lock a revocation takes, so a socket can
    /// never slip in after its session's sockets were collected for closing.
    pub fn attach_socket(
        &self,
        entry: &Arc<SessionEntry>,
        now: OffsetDateTime,
    ) -> Result<(SocketGuard, oneshot::Receiver<CloseOrder>), SessionProblem> {
        self.attach_socket_within(entry, now, 0).map(|attached| attached.expect("without a cap it attaches"))
    }

    /// [`Self::attach_socket`] unless the session already has `max` sockets (0: no
    /// cap): then `Ok(None)`. The count is read under the same lock as the insert, so
    /// concurrent upgrades cannot together go past it.
    pub fn attach_socket_within(
        &self,
        entry: &Arc<SessionEntry>,
        now: OffsetDateTime,
        max: usize,
    ) -> Result<Option<(SocketGuard, oneshot::Receiver<CloseOrder>)>, SessionProblem> {
        let (close_tx, close_rx) = oneshot::channel();
        let id = self.next_socket_id.fetch_add(1, Ordering::Relaxed);
        let mut state = entry.lock();
        if let Some(problem) = entry.problem_at(&state, now, &self.bans) {
            return Err(problem);
        }
        if max > 0 && state.sockets.len() >= max {
            return Ok(None);
        }
        state.sockets.push(SocketLink { id, close: close_tx });
        drop(state);
        Ok(Some((SocketGuard { entry: entry.clone(), id }, close_rx)))
    }

    /// Marks every session this node knows in `scope` revoked (unless it already was,
    /// or has ended) and collects their sockets' close handles. Runs before the store
    /// commits, so a socket or request with these sessions is refused from here on.
    pub fn revoke_in_scope(
        &self,
        scope: RevokeScope,
        revocation: &Arc<Revocation>,
        now: OffsetDateTime,
    ) -> ClosePlan {
        let mut plan = ClosePlan::empty();
        let mut mark = |entry: &SessionEntry| {
            if entry.expires_at > now {
                Self::mark(&mut plan, entry, revocation);
            }
        };
        match scope {
            RevokeScope::Session(id) => {
                if let Some(entry) = self.get(SessionId(id)) {
                    mark(&entry);
                }
            }
            RevokeScope::User(user) => {
                self.sessions.iter().filter(|entry| entry.user_id.0 == user).for_each(|entry| mark(&entry));
            }
            RevokeScope::UserExcept { user, keep } => self
                .sessions
                .iter()
                .filter(|entry| entry.user_id.0 == user && entry.id.0 != keep)
                .for_each(|entry| mark(&entry)),
            RevokeScope::AllExcept(keep) => {
                self.sessions.iter().filter(|entry| entry.id.0 != keep).for_each(|entry| mark(&entry));
            }
        }
        plan
    }

    /// Marks sessions the store has recorded as revoked by `revocation`, remembering
    /// those this node had not heard of, and collects their sockets' close handles.
    /// A session revoked before keeps its first reason.
    /// The store has these committed, so whichever revocation memory holds for them is
    /// persisted now.
    pub fn revoke(&self, records: &[SessionRecord], revocation: &Arc<Revocation>) -> ClosePlan {
        let mut plan = ClosePlan::empty();
        for record in records {
            let held = Self::mark(&mut plan, &self.remember(record), revocation);
            held.mark_persisted();
        }
        plan
    }

    /// Applies sessions read from the revocation log, each with the revocation it
    /// carries (one shared `Revocation` per run of sessions from the same event).
    pub fn apply_logged<'a>(&self, logged: impl IntoIterator<Item = (i64, &'a SessionRecord)>) -> ClosePlan {
        let mut plan = ClosePlan::empty();
        let mut current: Option<(i64, Arc<Revocation>)> = None;
        for (seq, record) in logged {
            let revocation = match &current {
                Some((event, revocation)) if *event == seq => revocation.clone(),
                _ => {
                    let Some(revocation) = Revocation::of_record(record) else { continue };
                    let revocation = Arc::new(revocation);
                    current = Some((seq, revocation.clone()));
                    revocation
                }
            };
            Self::mark(&mut plan, &self.remember(record), &revocation).mark_persisted();
        }
        plan
    }

    /// Marks one session (unless it already was) and takes its sockets; returns the
    /// revocation it now holds.
    fn mark(plan: &mut ClosePlan, entry: &SessionEntry, revocation: &Arc<Revocation>) -> Arc<Revocation> {
        let mut state = entry.lock();
        let revocation = state.revoked.get_or_insert_with(|| revocation.clone()).clone();
        // Sockets are closed while the ban is fresh, so a ban's own close is 4003.
        plan.take_sockets(&mut state, revocation.kind.close_code(true), &revocation.close_reason());
        revocation
    }

    /// Collects the sockets of sessions past their lifetime (close 4002), and forgets
    /// sessions whose every token has expired: revoked or ended longer than `retention`
    /// ago (the access TTL plus the clock leeway).
    pub fn sweep(&self, now: OffsetDateTime, retention: Duration) -> ClosePlan {
        let mut plan = ClosePlan::empty();
        let expired_reason: Arc<str> = SessionProblem::Expired.close_reason().into();
        let forget_before = now - retention;
        self.sessions.retain(|_, entry| {
            let mut state = entry.lock();
            if state.revoked.is_none() && entry.expires_at <= now {
                plan.take_sockets(&mut state, close::EXPIRED, &expired_reason);
            }
            let ended_at = state.revoked.as_ref().map_or(entry.expires_at, |r| r.at.min(entry.expires_at));
            !(ended_at < forget_before && state.sockets.is_empty())
        });
        plan
    }

    /// Counts for the metrics, taken at scrape time.
    pub fn census(&self, now: OffsetDateTime) -> Census {
        let mut census = Census::default();
        for entry in self.sessions.iter() {
            let state = entry.lock();
            census.sockets_open += state.sockets.len();
            match entry.problem_at(&state, now, &self.bans) {
                None => census.sessions_active += 1,
                Some(SessionProblem::Revoked { .. }) if !state.sockets.is_empty() => {
                    census.revoked_still_connected += 1;
                }
                Some(_) => {}
            }
        }
        census
    }

    /// Sessions with open sockets on this node, and how many.
    pub fn socket_counts(&self) -> Vec<(uuid::Uuid, i32)> {
        self.sessions
            .iter()
            .filter_map(|entry| {
                let sockets = entry.open_sockets();
                (sockets > 0).then(|| (entry.id.0, sockets as i32))
            })
            .collect()
    }

    /// `last_seen_at` values that changed since the last call, for the store.
    pub fn take_last_seen_changes(&self) -> Vec<(uuid::Uuid, OffsetDateTime)> {
        let mut changed = Vec::new();
        for entry in self.sessions.iter() {
            let seen = entry.last_seen.load(Ordering::Relaxed);
            if entry.last_seen_flushed.swap(seen, Ordering::Relaxed) != seen {
                changed.push((entry.id.0, entry.last_seen_at()));
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::RevokeKind;

    fn record(expires_in: Duration) -> SessionRecord {
        SessionRecord::new_live(uuid::Uuid::new_v4(), crate::store::now(), expires_in, None, None)
    }

    fn revocation(kind: RevokeKind, reason: Option<&str>) -> Arc<Revocation> {
        Arc::new(Revocation::new(kind, reason.map(str::to_owned), crate::store::now()))
    }

    fn revoked(mut record: SessionRecord, kind: RevokeKind, reason: Option<&str>) -> SessionRecord {
        record.revoked_at = Some(crate::store::now());
        record.revoke_kind = Some(kind.as_str().into());
        record.revoke_reason = reason.map(str::to_owned);
        record
    }

    #[tokio::test]
    async fn revoking_sends_each_socket_its_close_and_refuses_new_ones() {
        let registry = SessionRegistry::default();
        let live = record(Duration::from_secs(60));
        let entry = registry.remember(&live);
        let now = crate::store::now();
        let (_guard_a, mut rx_a) = registry.attach_socket(&entry, now).unwrap();
        let (_guard_b, mut rx_b) = registry.attach_socket(&entry, now).unwrap();

        let plan = registry.revoke_in_scope(
            RevokeScope::User(live.user_id),
            &revocation(RevokeKind::Kick, Some("spamming")),
            now,
        );
        let closer = tokio::spawn(plan.execute(Duration::from_secs(5)));
        let a = rx_a.try_recv_wait().await;
        let b = rx_b.try_recv_wait().await;
        assert_eq!((a.code, &*a.reason), (4004, "kicked: spamming"));
        assert_eq!((b.code, &*b.reason), (4004, "kicked: spamming"));
        drop((a, b));
        assert_eq!(closer.await.unwrap(), 2);

        assert!(matches!(registry.check(entry.id, now), Err(SessionProblem::Revoked { .. })));
        assert!(registry.attach_socket(&entry, now).is_err());
    }

    #[tokio::test]
    async fn a_second_revoker_of_the_same_session_waits_for_the_first_ones_close_frames() {
        let registry = SessionRegistry::default();
        let live = record(Duration::from_secs(60));
        let entry = registry.remember(&live);
        let now = crate::store::now();
        let (_guard, mut rx) = registry.attach_socket(&entry, now).unwrap();
        let logout = revocation(RevokeKind::Logout, None);
        let first = registry.revoke_in_scope(RevokeScope::Session(live.id), &logout, now);
        let second = registry.apply_logged([(1, &revoked(live.clone(), RevokeKind::Logout, None))]);
        assert!(!second.is_empty(), "the second revoker must wait on the first one's sockets");
        let first = tokio::spawn(first.execute(Duration::from_secs(5)));
        let second = tokio::spawn(second.execute(Duration::from_secs(5)));
        let order = rx.try_recv_wait().await;
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "answered before the close frame was written");
        drop(order);
        assert_eq!(first.await.unwrap(), 1);
        assert_eq!(second.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_ban_revoked_session_closes_4003_while_banned_and_4001_after() {
        let bans = BanList::default();
        let registry = SessionRegistry::new(bans.clone());
        let live = record(Duration::from_secs(60));
        registry.remember(&live);
        bans.ban(live.user_id, None);
        let now = crate::store::now();
        let _ = registry.revoke_in_scope(
            RevokeScope::User(live.user_id),
            &revocation(RevokeKind::Ban, None),
            now,
        );
        let code = |registry: &SessionRegistry| match registry.check(SessionId(live.id), now) {
            Err(problem) => problem.close_code(),
            Ok(_) => panic!("still live"),
        };
        assert_eq!(code(&registry), 4003);
        bans.unban(live.user_id);
        assert_eq!(code(&registry), 4001);
    }

    #[tokio::test]
    async fn a_second_revocation_keeps_the_first_reason() {
        let registry = SessionRegistry::default();
        let live = record(Duration::from_secs(60));
        registry.remember(&live);
        let _ = registry.revoke(std::slice::from_ref(&live), &revocation(RevokeKind::Logout, None));
        let _ = registry.revoke(std::slice::from_ref(&live), &revocation(RevokeKind::Ban, Some("cheating")));
        let Err(problem) = registry.check(SessionId(live.id), crate::store::now()) else {
            panic!("still live")
        };
        assert_eq!((problem.close_code(), problem.close_reason().as_str()), (4001, "revoked: logout"));
    }

    #[tokio::test]
    async fn the_scope_spares_the_kept_session_and_other_users() {
        let registry = SessionRegistry::default();
        let now = crate::store::now();
        let mine = record(Duration::from_secs(60));
        let mut other_of_mine = record(Duration::from_secs(60));
        other_of_mine.user_id = mine.user_id;
        let someone_else = record(Duration::from_secs(60));
        for session in [&mine, &other_of_mine, &someone_else] {
            registry.remember(session);
        }
        let scope = RevokeScope::UserExcept { user: mine.user_id, keep: mine.id };
        let _ = registry.revoke_in_scope(scope, &revocation(RevokeKind::Replaced, None), now);
        assert!(registry.check(SessionId(mine.id), now).is_ok());
        assert!(registry.check(SessionId(other_of_mine.id), now).is_err());
        assert!(registry.check(SessionId(someone_else.id), now).is_ok());
        let _ = registry.revoke_in_scope(
            RevokeScope::AllExcept(mine.id),
            &revocation(RevokeKind::RevokeAll, None),
            now,
        );
        assert!(registry.check(SessionId(mine.id), now).is_ok());
        assert!(registry.check(SessionId(someone_else.id), now).is_err());
    }

    #[tokio::test]
    async fn sweeping_closes_expired_sessions_and_forgets_old_ones() {
        let registry = SessionRegistry::default();
        let now = crate::store::now();
        let mut ending = record(Duration::from_secs(1));
        ending.expires_at = now;
        let entry = registry.remember(&ending);
        assert!(registry.attach_socket(&entry, now).is_err(), "an expired session takes no socket");
        let live = registry.remember(&record(Duration::from_secs(60)));
        let (guard, mut rx) = registry.attach_socket(&live, now).unwrap();

        let plan = registry.sweep(now + Duration::from_secs(61), Duration::from_secs(930));
        let closer = tokio::spawn(plan.execute(Duration::from_secs(5)));
        assert_eq!(rx.try_recv_wait().await.code, 4002);
        assert_eq!(closer.await.unwrap(), 1);
        drop(guard);

        assert_eq!(registry.len(), 2, "tokens of both may still be presented");
        let _ = registry.sweep(now + Duration::from_secs(2000), Duration::from_secs(930));
        assert!(registry.is_empty());
    }

    trait RecvWait {
        async fn try_recv_wait(&mut self) -> CloseOrder;
    }

    impl RecvWait for oneshot::Receiver<CloseOrder> {
        async fn try_recv_wait(&mut self) -> CloseOrder {
            tokio::time::timeout(Duration::from_secs(5), self).await.unwrap().unwrap()
        }
    }
}
