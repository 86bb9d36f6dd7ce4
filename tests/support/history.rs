//! The record of a fault-injection run, and the rules it is judged by.
//!
//! Every client task writes what it did into one [`Recorder`]: each operation with
//! the node it went to, the session its token belongs to, the instant it was sent
//! and the instant its answer arrived; each socket with every frame it received and
//! its close; each fault with when it began and ended. [`check`] then judges the
//! run from that [`Log`] alone, knowing nothing of the schedule that produced it.
//!
//! Instants are taken on the client: "sent" just before the request leaves (so the
//! server saw it no earlier), "answered" just after the answer arrived (so the
//! server answered no later). Every comparison below is made in the direction in
//! which that error is safe, and where the client's own lag could matter (a socket
//! reader that is slow to notice a close) a stated slack is allowed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Microseconds since the run began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct At(pub u64);

impl At {
    pub const NEVER: At = At(u64::MAX);

    pub fn plus(self, by: Duration) -> At {
        At(self.0.saturating_add(by.as_micros() as u64))
    }

    pub fn millis(self) -> u64 {
        self.0 / 1000
    }

    pub fn from_millis(millis: u64) -> At {
        At(millis.saturating_mul(1000))
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == At::NEVER {
            return f.write_str("never");
        }
        write!(f, "+{}.{:03}s", self.0 / 1_000_000, (self.0 / 1000) % 1000)
    }
}

pub type OpId = usize;
pub type SocketId = usize;

/// How a socket carried its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Header,
    Subprotocol,
    Query,
}

/// A ban's `until` as sent, and the instant it names.
#[derive(Clone, Debug, PartialEq)]
pub struct Until {
    pub text: String,
    pub utc: OffsetDateTime,
    pub at: At,
}

#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    Register {
        username: String,
    },
    Login {
        username: String,
    },
    /// `token` is a fingerprint of the refresh token presented.
    Refresh {
        token: u64,
    },
    Me,
    ListSessions,
    Logout,
    LogoutAll,
    DeleteSession {
        target: String,
    },
    Upgrade {
        transport: Transport,
    },
    Kick {
        user: String,
    },
    Ban {
        user: String,
        until: Option<Until>,
    },
    Unban {
        user: String,
    },
    RevokeSession {
        target: String,
    },
    RevokeAll,
}

/// What a login or refresh handed out.
#[derive(Clone, Debug, PartialEq)]
pub struct Issued {
    pub session: String,
    pub user: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Never finished (the run ended first).
    Pending,
    Http {
        status: u16,
        error: Option<String>,
        issued: Option<Issued>,
        /// The `until` of a 403 `banned` (`Some(None)`: null).
        ban_until: Option<Option<String>>,
    },
    /// The upgrade got `welcome`; the socket's own record follows it.
    Welcome { socket: SocketId },
    /// The upgrade was completed and closed without `welcome`.
    Closed { code: u16, reason: String },
    /// The client reset its connection right after writing the request.
    HungUp,
    /// No answer: a transport error or a timeout.
    Failed(String),
}

#[derive(Clone, Debug)]
pub struct Op {
    pub id: OpId,
    pub actor: String,
    pub node: usize,
    pub kind: OpKind,
    /// The session whose token the call carried.
    pub session: Option<String>,
    pub sent: At,
    /// When the answer arrived, or when the client stopped waiting.
    pub ended: At,
    pub outcome: Outcome,
}

impl Op {
    /// When the answer arrived, if one did.
    pub fn answered(&self) -> Option<At> {
        match self.outcome {
            Outcome::Http { .. } | Outcome::Welcome { .. } | Outcome::Closed { .. } => Some(self.ended),
            _ => None,
        }
    }

    fn status(&self) -> Option<u16> {
        match self.outcome {
            Outcome::Http { status, .. } => Some(status),
            _ => None,
        }
    }

    fn error(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Http { error, .. } => error.as_deref(),
            _ => None,
        }
    }

    /// The token was accepted: a 2xx on a Bearer route (or a refresh), or `welcome`.
    fn accepted(&self) -> bool {
        self.session.is_some()
            && match self.outcome {
                Outcome::Http { status, .. } => (200..300).contains(&status),
                Outcome::Welcome { .. } => true,
                _ => false,
            }
    }

    fn might_have_happened(&self) -> bool {
        matches!(self.outcome, Outcome::Pending | Outcome::HungUp | Outcome::Failed(_))
            || self.status().is_some_and(|status| status >= 500)
    }
}

#[derive(Clone, Debug)]
pub struct Frame {
    pub at: At,
    pub kind: String,
    /// When the client sent the frame this one answers (a ping for a pong, an input
    /// for the snapshot that acknowledges it, a join for `joined`): the server could
    /// not have produced it before then.
    pub caused_by: Option<At>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum End {
    Closed {
        code: u16,
        reason: String,
    },
    /// The connection ended without a close frame (a killed node, a reset).
    Broken(String),
    /// The client closed it (the run ended, or the schedule said so).
    ByClient,
}

#[derive(Clone, Debug)]
pub struct SocketRecord {
    pub id: SocketId,
    pub op: OpId,
    pub node: usize,
    pub session: String,
    pub opened: At,
    pub frames: Vec<Frame>,
    pub end: Option<(At, End)>,
}

impl SocketRecord {
    fn ended_at(&self) -> At {
        self.end.as_ref().map_or(At::NEVER, |(at, _)| *at)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// The node's database connections were cut (`mode`: what new ones met).
    Cut { mode: String },
    /// `kill -9`; `spawned` is when its successor process was started, `end` when
    /// that one answered `/readyz`.
    Down { spawned: Option<At> },
    /// Its revocation listener's backend was terminated (a blip, not a blindness).
    ListenerTerminated { backends: usize },
}

#[derive(Clone, Debug)]
pub struct Fault {
    pub node: usize,
    pub kind: FaultKind,
    pub start: At,
    pub end: Option<At>,
}

/// Everything a run recorded.
#[derive(Clone, Debug, Default)]
pub struct Log {
    pub nodes: Vec<String>,
    pub ops: Vec<Op>,
    pub sockets: Vec<SocketRecord>,
    pub faults: Vec<Fault>,
}

/// Shared by every task of a run; each call takes one short lock.
pub struct Recorder {
    start: Instant,
    wall_start: OffsetDateTime,
    log: Mutex<Log>,
}

impl Recorder {
    pub fn new(nodes: Vec<String>) -> Arc<Recorder> {
        Arc::new(Recorder {
            start: Instant::now(),
            wall_start: OffsetDateTime::now_utc(),
            log: Mutex::new(Log { nodes, ..Log::default() }),
        })
    }

    pub fn now(&self) -> At {
        At(self.start.elapsed().as_micros() as u64)
    }

    /// The run's instant of a wall-clock time (this machine's clock is the servers').
    pub fn at_wall(&self, wall: OffsetDateTime) -> At {
        let since = wall - self.wall_start;
        if since.is_negative() { At(0) } else { At(since.whole_microseconds() as u64) }
    }

    pub fn wall_now(&self) -> OffsetDateTime {
        self.wall_start + self.start.elapsed()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records an operation as sent now.
    pub fn begin(&self, actor: &str, node: usize, kind: OpKind, session: Option<&str>) -> OpId {
        let sent = self.now();
        let mut log = self.lock();
        let id = log.ops.len();
        log.ops.push(Op {
            id,
            actor: actor.to_owned(),
            node,
            kind,
            session: session.map(str::to_owned),
            sent,
            ended: sent,
            outcome: Outcome::Pending,
        });
        id
    }

    pub fn finish(&self, op: OpId, outcome: Outcome) {
        let ended = self.now();
        let mut log = self.lock();
        let op = &mut log.ops[op];
        op.ended = ended;
        op.outcome = outcome;
    }

    /// A socket whose `welcome` just arrived for upgrade `op`; finishes `op`.
    pub fn socket_opened(&self, op: OpId, node: usize, session: &str) -> SocketId {
        let opened = self.now();
        let mut log = self.lock();
        let id = log.sockets.len();
        log.sockets.push(SocketRecord {
            id,
            op,
            node,
            session: session.to_owned(),
            opened,
            frames: Vec::new(),
            end: None,
        });
        let op = &mut log.ops[op];
        op.ended = opened;
        op.outcome = Outcome::Welcome { socket: id };
        id
    }

    pub fn frame(&self, socket: SocketId, kind: &str, caused_by: Option<At>) {
        let at = self.now();
        self.lock().sockets[socket].frames.push(Frame { at, kind: kind.to_owned(), caused_by });
    }

    pub fn socket_ended(&self, socket: SocketId, how: End) {
        let at = self.now();
        let mut log = self.lock();
        let record = &mut log.sockets[socket];
        if record.end.is_none() {
            record.end = Some((at, how));
        }
    }

    pub fn fault_started(&self, node: usize, kind: FaultKind) -> usize {
        let start = self.now();
        let mut log = self.lock();
        log.faults.push(Fault { node, kind, start, end: None });
        log.faults.len() - 1
    }

    /// A killed node's successor is being started now.
    pub fn fault_respawning(&self, fault: usize) {
        let now = self.now();
        if let FaultKind::Down { spawned } = &mut self.lock().faults[fault].kind {
            *spawned = Some(now);
        }
    }

    pub fn fault_ended(&self, fault: usize) {
        let now = self.now();
        self.lock().faults[fault].end = Some(now);
    }

    pub fn log(&self) -> Log {
        self.lock().clone()
    }
}

/// A fingerprint of a refresh token, so the log never holds the token itself.
pub fn fingerprint(token: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut hasher);
    hasher.finish()
}

/// The bounds the rules are checked with.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// A node that can read the revocation log applies a revocation within this (the
    /// contract's 2 s).
    pub propagation: Duration,
    /// The nodes' `--max-staleness`.
    pub staleness: Duration,
    /// What the test machine may add: scheduling of the client's own tasks (a socket
    /// reader noticing a close), of three servers and PostgreSQL on two shared cores.
    pub slack: Duration,
    /// A revoking call whose client hung up right after sending it: by this long after
    /// it was sent the server has carried it out (if the node stayed up and connected).
    pub hang_up: Duration,
}

impl Bounds {
    /// The defaults, with `TETHER_HISTORY_SLACK_MS` for a machine slower than the
    /// two shared cores these were measured on.
    pub fn from_env() -> Bounds {
        let mut bounds = Bounds::default();
        if let Some(millis) =
            std::env::var("TETHER_HISTORY_SLACK_MS").ok().and_then(|v| v.trim().parse().ok())
        {
            bounds.slack = Duration::from_millis(millis);
        }
        bounds
    }
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            propagation: Duration::from_secs(2),
            staleness: Duration::from_secs(2),
            slack: Duration::from_millis(500),
            hang_up: Duration::from_secs(2),
        }
    }
}

/// The rules, in the order a report lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    AcceptedAfterRevocation,
    SocketOutlivedRevocation,
    StaleNodeAccepted,
    RefreshTokenUsedTwice,
    BannedUserLoggedIn,
    BanNotLifted,
    BanUntilNotUtc,
    RefusedWithoutRevocation,
    WrongCloseCode,
    NotReadyWhileConnected,
    InvalidTokenForKnownSession,
    MassRevocationUnverified,
}

impl Rule {
    pub fn title(self) -> &'static str {
        match self {
            Rule::AcceptedAfterRevocation => "accepted after revocation",
            Rule::SocketOutlivedRevocation => "socket outlived its revocation",
            Rule::StaleNodeAccepted => "stale node accepted",
            Rule::RefreshTokenUsedTwice => "refresh token used twice",
            Rule::BannedUserLoggedIn => "banned user logged in",
            Rule::BanNotLifted => "ban not lifted",
            Rule::BanUntilNotUtc => "ban until not answered as the same UTC instant",
            Rule::RefusedWithoutRevocation => "refused although nothing revoked it",
            Rule::WrongCloseCode => "wrong close code",
            Rule::NotReadyWhileConnected => "not_ready from a node that could read the log",
            Rule::InvalidTokenForKnownSession => "invalid_token for a real session's unexpired token",
            Rule::MassRevocationUnverified => "mass revocation not verified",
        }
    }

    pub fn rule(self, bounds: &Bounds) -> String {
        let p = bounds.propagation.as_secs_f64();
        let s = bounds.slack.as_secs_f64();
        let st = bounds.staleness.as_secs_f64();
        match self {
            Rule::AcceptedAfterRevocation => format!(
                "once a revocation is answered, the answering node accepts none of its sessions in a \
                 request sent later (restarts included); every other node none sent more than {p}s \
                 (+{s}s slack) later while it could read the log, or after it caught up"
            ),
            Rule::SocketOutlivedRevocation => format!(
                "a revoked session's sockets close: on the answering node before the answer (+{s}s for \
                 the client to read it) and nothing is served for a frame sent after it; elsewhere \
                 within {p}s (+{s}s) of the answer, or of the heal for a node that was cut off"
            ),
            Rule::StaleNodeAccepted => format!(
                "a node cut off from the database accepts no token (2xx, welcome) in a request sent \
                 more than {st}s (+{s}s) after the cut began, until it is healed"
            ),
            Rule::RefreshTokenUsedTwice => "at most one 200 per refresh token".to_owned(),
            Rule::BannedUserLoggedIn => {
                "a banned user's login is refused with 403 banned until the ban lifts".to_owned()
            }
            Rule::BanNotLifted => {
                "after an unban, or once `until` has passed, the user's login is not refused as banned"
                    .to_owned()
            }
            Rule::BanUntilNotUtc => {
                "403 banned answers `until` as the same instant the ban was given, in UTC".to_owned()
            }
            Rule::RefusedWithoutRevocation => {
                "401 session_revoked and close 4001/4003/4004 only for a session some revocation sent \
                 before covered"
                    .to_owned()
            }
            Rule::WrongCloseCode => {
                "the close code follows the token-state table: 4004 kick, 4003 ban while banned, 4001 \
                 after the unban and for every other revocation"
                    .to_owned()
            }
            Rule::NotReadyWhileConnected => format!(
                "503 not_ready and close 1013 only from a node that was cut off (or restarted) within \
                 the last {p}s (+{s}s)"
            ),
            Rule::InvalidTokenForKnownSession => {
                "401 invalid_token and close 4401 are for tokens that are malformed, forged, expired or name an \
                 unknown session; a session this run logged in is known (revoked or not), and a node that cannot \
                 look it up answers 5xx (503 not_ready once stale), not a verdict on the token"
                    .to_owned()
            }
            Rule::MassRevocationUnverified => {
                "the mass revoke-all was answered and every node was seen refusing each of its sessions"
                    .to_owned()
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub rule: Rule,
    pub what: String,
    pub ops: Vec<OpId>,
    pub sockets: Vec<SocketId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RevKind {
    Logout,
    LogoutAll,
    SessionDelete,
    AdminRevoke,
    RevokeAll,
    RefreshReuse,
    Kick,
    Ban,
}

impl RevKind {
    fn close_code(self) -> u16 {
        match self {
            RevKind::Kick => 4004,
            RevKind::Ban => 4003,
            _ => 4001,
        }
    }
}

enum Scope<'a> {
    Session(&'a str),
    User(&'a str),
    AllBut(Option<&'a str>),
}

struct Revocation<'a> {
    op: &'a Op,
    kind: RevKind,
    /// The effective answer: the 2xx (or the reuse 401), or for a hang-up the instant
    /// by which the server must have carried it out. None: it may or may not have
    /// happened.
    acked: Option<At>,
    affected: Vec<&'a str>,
    ambiguous: Vec<&'a str>,
}

impl Revocation<'_> {
    fn covers(&self, session: &str) -> bool {
        self.affected.contains(&session) || self.ambiguous.contains(&session)
    }
}

struct SessionInfo<'a> {
    user: &'a str,
    /// Who logged in: the mass revocation is verified on the mass logins' sessions.
    actor: &'a str,
    issued_sent: At,
    issued_answered: At,
}

#[derive(Clone, Copy)]
enum Blind {
    Cut { start: At, end: At },
    Down { start: At, spawned: At, end: At },
}

impl Blind {
    fn span(self) -> (At, At) {
        match self {
            Blind::Cut { start, end } | Blind::Down { start, end, .. } => (start, end),
        }
    }
}

struct Checker<'a> {
    log: &'a Log,
    bounds: Bounds,
    sessions: HashMap<&'a str, SessionInfo<'a>>,
    users_by_name: HashMap<&'a str, &'a str>,
    blind: Vec<Vec<Blind>>,
    revocations: Vec<Revocation<'a>>,
    acceptances: HashMap<&'a str, Vec<&'a Op>>,
    sockets: HashMap<&'a str, Vec<&'a SocketRecord>>,
    violations: Vec<Violation>,
}

/// Judges a run by its log alone.
pub fn check(log: &Log, bounds: Bounds) -> Vec<Violation> {
    let mut checker = Checker::new(log, bounds);
    checker.accepted_after_revocation();
    checker.sockets_outliving_revocations();
    checker.stale_nodes();
    checker.refresh_tokens();
    checker.bans();
    checker.refusals();
    checker.not_ready();
    checker.invalid_tokens();
    checker.mass_revocation();
    checker.violations.sort_by_key(|v| (v.rule, v.ops.first().copied(), v.sockets.first().copied()));
    checker.violations
}

impl<'a> Checker<'a> {
    fn new(log: &'a Log, bounds: Bounds) -> Checker<'a> {
        let mut sessions = HashMap::new();
        let mut users_by_name = HashMap::new();
        for op in &log.ops {
            if let Outcome::Http { issued: Some(issued), .. } = &op.outcome {
                if let OpKind::Login { username } | OpKind::Register { username } = &op.kind {
                    users_by_name.insert(username.as_str(), issued.user.as_str());
                }
                if matches!(op.kind, OpKind::Login { .. }) {
                    sessions.insert(
                        issued.session.as_str(),
                        SessionInfo {
                            user: &issued.user,
                            actor: &op.actor,
                            issued_sent: op.sent,
                            issued_answered: op.ended,
                        },
                    );
                }
            }
        }
        let mut blind = vec![Vec::new(); log.nodes.len()];
        for fault in &log.faults {
            let end = fault.end.unwrap_or(At::NEVER);
            match fault.kind {
                FaultKind::Cut { .. } => blind[fault.node].push(Blind::Cut { start: fault.start, end }),
                FaultKind::Down { spawned } => blind[fault.node].push(Blind::Down {
                    start: fault.start,
                    spawned: spawned.unwrap_or(At::NEVER),
                    end,
                }),
                FaultKind::ListenerTerminated { .. } => {}
            }
        }
        let mut acceptances: HashMap<&str, Vec<&Op>> = HashMap::new();
        for op in log.ops.iter().filter(|op| op.accepted()) {
            acceptances.entry(op.session.as_deref().unwrap()).or_default().push(op);
        }
        let mut sockets: HashMap<&str, Vec<&SocketRecord>> = HashMap::new();
        for socket in &log.sockets {
            sockets.entry(socket.session.as_str()).or_default().push(socket);
        }
        let mut checker = Checker {
            log,
            bounds,
            sessions,
            users_by_name,
            blind,
            revocations: Vec::new(),
            acceptances,
            sockets,
            violations: Vec::new(),
        };
        checker.revocations = log.ops.iter().filter_map(|op| checker.revocation(op)).collect();
        checker
    }

    fn user_of_session(&self, session: &str) -> Option<&'a str> {
        self.sessions.get(session).map(|info| info.user)
    }

    /// The revocation an operation asked for, with what it covers.
    fn revocation(&self, op: &'a Op) -> Option<Revocation<'a>> {
        let own = op.session.as_deref();
        let (kind, scope) = match &op.kind {
            OpKind::Logout => (RevKind::Logout, Scope::Session(own?)),
            OpKind::LogoutAll => (RevKind::LogoutAll, Scope::User(self.user_of_session(own?)?)),
            OpKind::DeleteSession { target } => (RevKind::SessionDelete, Scope::Session(target)),
            OpKind::RevokeSession { target } => (RevKind::AdminRevoke, Scope::Session(target)),
            OpKind::RevokeAll => (RevKind::RevokeAll, Scope::AllBut(own)),
            OpKind::Kick { user } => (RevKind::Kick, Scope::User(user)),
            OpKind::Ban { user, .. } => (RevKind::Ban, Scope::User(user)),
            OpKind::Refresh { .. } => (RevKind::RefreshReuse, Scope::Session(own?)),
            _ => return None,
        };
        let acked = match (&op.outcome, kind) {
            (Outcome::Http { status: 401, error: Some(error), .. }, RevKind::RefreshReuse)
                if error == "invalid_refresh_token" =>
            {
                Some(op.ended)
            }
            (_, RevKind::RefreshReuse) if !op.might_have_happened() => return None,
            (Outcome::Http { status, .. }, _) if (200..300).contains(status) => Some(op.ended),
            // The kernel discards what a reset connection had not delivered, so a hung-up
            // call may never have reached the server. It is judged as acknowledged (due
            // by `hang_up` after sending) only once something shows that it took effect:
            // a refusal of a session in its scope before any other call could have
            // revoked that session. What this catches is the half-done call: refused
            // somewhere (a restart, another node) yet still accepted where it was sent.
            (Outcome::HungUp, _) => {
                let by = op.sent.plus(self.bounds.hang_up);
                let disturbed = self.blind[op.node].iter().any(|blind| {
                    let (start, end) = blind.span();
                    start < by && end > op.sent
                });
                let in_scope: Vec<&str> = match &scope {
                    Scope::Session(session) => vec![*session],
                    Scope::User(user) => {
                        self.sessions.iter().filter(|(_, info)| info.user == *user).map(|(s, _)| *s).collect()
                    }
                    Scope::AllBut(spared) => {
                        self.sessions.keys().copied().filter(|s| Some(*s) != *spared).collect()
                    }
                };
                let took_effect = in_scope.iter().any(|session| self.observed_revoked_after(op, session));
                if disturbed || !took_effect { None } else { Some(by) }
            }
            _ if op.might_have_happened() => None,
            _ => return None,
        };
        let mut affected = Vec::new();
        let mut ambiguous = Vec::new();
        let answered = acked.unwrap_or(At::NEVER);
        let mut consider = |session: &'a str, info: &SessionInfo<'a>| {
            if acked.is_some() && info.issued_answered < op.sent {
                affected.push(session);
            } else if info.issued_sent < answered {
                ambiguous.push(session);
            }
        };
        match scope {
            Scope::Session(session) => {
                if acked.is_some() {
                    affected.push(session)
                } else {
                    ambiguous.push(session)
                }
            }
            Scope::User(user) => {
                for (session, info) in &self.sessions {
                    if info.user == user {
                        consider(session, info);
                    }
                }
            }
            Scope::AllBut(spared) => {
                for (session, info) in &self.sessions {
                    if Some(*session) != spared {
                        consider(session, info);
                    }
                }
            }
        }
        Some(Revocation { op, kind, acked, affected, ambiguous })
    }

    /// Whether `session` was seen refused as revoked after `op` was sent and before any
    /// other call that could revoke it was sent.
    fn observed_revoked_after(&self, op: &Op, session: &str) -> bool {
        let user = self.user_of_session(session);
        let others: Vec<At> = self
            .log
            .ops
            .iter()
            .filter(|other| other.id != op.id && self.could_revoke(other, session, user))
            .map(|other| other.sent)
            .collect();
        // A session some earlier call may have revoked tells nothing about this one.
        if others.iter().any(|&sent| sent <= op.sent) {
            return false;
        }
        let other = others.into_iter().min().unwrap_or(At::NEVER);
        let refused_call = self.log.ops.iter().any(|seen| {
            seen.session.as_deref() == Some(session)
                && seen.sent > op.sent
                && seen.sent < other
                && match &seen.outcome {
                    Outcome::Http { status: 401, error: Some(error), .. } => error == "session_revoked",
                    Outcome::Closed { code, .. } => (4001..=4005).contains(code) && *code != 4002,
                    _ => false,
                }
        });
        let closed_socket = self.sockets.get(session).into_iter().flatten().any(|socket| match &socket.end {
            Some((at, End::Closed { code, .. })) => {
                *at > op.sent && *at < other && (4001..=4005).contains(code) && *code != 4002
            }
            _ => false,
        });
        refused_call || closed_socket
    }

    /// Whether `op` is a call that could revoke `session` (of `user`).
    fn could_revoke(&self, op: &Op, session: &str, user: Option<&str>) -> bool {
        let own = op.session.as_deref() == Some(session);
        match &op.kind {
            OpKind::Logout | OpKind::Refresh { .. } => own,
            OpKind::LogoutAll => own || op.session.as_deref().and_then(|s| self.user_of_session(s)) == user,
            OpKind::DeleteSession { target } | OpKind::RevokeSession { target } => target == session,
            OpKind::Kick { user: target } | OpKind::Ban { user: target, .. } => Some(target.as_str()) == user,
            OpKind::RevokeAll => !own,
            // A login under the single-session policy would too; the history runs without it.
            _ => false,
        }
    }

    /// By when `node` must refuse a session revoked by a call `answered_on` answered
    /// at `answered`.
    fn learned_by(&self, node: usize, answered_on: usize, answered: At) -> At {
        if node == answered_on {
            return answered;
        }
        let pending = self.bounds.propagation + self.bounds.slack;
        let mut by = answered.plus(pending);
        loop {
            let mut next = by;
            for blind in &self.blind[node] {
                let (start, end) = blind.span();
                if start >= by || end <= answered {
                    continue;
                }
                let candidate = match *blind {
                    Blind::Cut { end, .. } => end.plus(pending),
                    // A node started after the answer loads it with its registry.
                    Blind::Down { spawned, end, .. } if answered < spawned => end,
                    Blind::Down { end, .. } => end.plus(pending),
                };
                next = next.max(candidate);
            }
            if next == by {
                return by;
            }
            by = next;
        }
    }

    fn push(&mut self, rule: Rule, what: String, ops: Vec<OpId>, sockets: Vec<SocketId>) {
        self.violations.push(Violation { rule, what, ops, sockets });
    }

    fn node(&self, node: usize) -> &str {
        self.log.nodes.get(node).map_or("?", String::as_str)
    }

    fn revoked_how(&self, rev: &Revocation<'_>, answered: At) -> String {
        let node = self.node(rev.op.node);
        if matches!(rev.op.outcome, Outcome::HungUp) {
            format!("({:?} on {node} whose client hung up: due by {answered})", rev.kind)
        } else {
            format!("({:?} on {node}, answered {answered})", rev.kind)
        }
    }

    fn accepted_after_revocation(&mut self) {
        let mut found = Vec::new();
        for rev in &self.revocations {
            let Some(answered) = rev.acked else { continue };
            for session in &rev.affected {
                // One violation per revoked session, naming every late acceptance.
                let mut late = Vec::new();
                let mut ops = vec![rev.op.id];
                for op in self.acceptances.get(session).into_iter().flatten() {
                    let by = self.learned_by(op.node, rev.op.node, answered);
                    if op.sent > by {
                        late.push(format!(
                            "{} op#{} sent {} (bound {by})",
                            self.node(op.node),
                            op.id,
                            op.sent
                        ));
                        ops.push(op.id);
                    }
                }
                if late.is_empty() {
                    continue;
                }
                let what = format!(
                    "session {} was revoked by op#{} {}; accepted later {} time(s): {}",
                    short(session),
                    rev.op.id,
                    self.revoked_how(rev, answered),
                    late.len(),
                    late.join(", ")
                );
                found.push((what, ops));
            }
        }
        for (what, ops) in found {
            self.push(Rule::AcceptedAfterRevocation, what, ops, Vec::new());
        }
    }

    fn sockets_outliving_revocations(&mut self) {
        let slack = self.bounds.slack;
        let mut found = Vec::new();
        for rev in &self.revocations {
            let Some(answered) = rev.acked else { continue };
            for session in &rev.affected {
                for socket in self.sockets.get(session).into_iter().flatten() {
                    if socket.ended_at() <= rev.op.sent {
                        continue;
                    }
                    let same = socket.node == rev.op.node;
                    let learned = self.learned_by(socket.node, rev.op.node, answered);
                    let before = socket.opened < rev.op.sent;
                    let close_by = match (same, before) {
                        (true, true) => answered.plus(slack),
                        (true, false) => answered.max(socket.opened).plus(slack),
                        (false, true) => learned,
                        (false, false) => learned.max(socket.opened.plus(slack)),
                    };
                    // A socket whose upgrade raced the revocation may have been attached
                    // just before it; from its welcome on it is held to the same rule.
                    let serve_until = if before { learned } else { learned.max(socket.opened) };
                    let served =
                        socket.frames.iter().find(|frame| frame.caused_by.is_some_and(|c| c > serve_until));
                    if self.log.ops[socket.op].sent > learned {
                        // Its upgrade was accepted too late: that acceptance is reported already.
                        continue;
                    }
                    let head = format!(
                        "session {} was revoked by op#{} {}; its socket #{} on {} (welcome {})",
                        short(session),
                        rev.op.id,
                        self.revoked_how(rev, answered),
                        socket.id,
                        self.node(socket.node),
                        socket.opened,
                    );
                    let what = if let Some(frame) = served {
                        format!(
                            "{head} still answered a client frame sent {} with `{}` at {}",
                            frame.caused_by.unwrap(),
                            frame.kind,
                            frame.at
                        )
                    } else if socket.ended_at() > close_by {
                        let after = socket.frames.iter().filter(|frame| frame.at > close_by).count();
                        format!(
                            "{head} had to be closed by {close_by}; it {} ({after} frames received after \
                             the bound)",
                            match &socket.end {
                                Some((at, end)) => format!("ended {at} ({})", describe_end(end)),
                                None => "never closed".to_owned(),
                            }
                        )
                    } else {
                        continue;
                    };
                    found.push((what, vec![rev.op.id, socket.op], vec![socket.id]));
                }
            }
        }
        for (what, ops, sockets) in found {
            self.push(Rule::SocketOutlivedRevocation, what, ops, sockets);
        }
    }

    fn stale_nodes(&mut self) {
        let mut found = Vec::new();
        for fault in &self.log.faults {
            if !matches!(fault.kind, FaultKind::Cut { .. }) {
                continue;
            }
            let from = fault.start.plus(self.bounds.staleness + self.bounds.slack);
            let until = fault.end.unwrap_or(At::NEVER);
            for op in self.log.ops.iter().filter(|op| op.node == fault.node && op.accepted()) {
                if op.sent > from && op.sent < until {
                    found.push((
                        format!(
                            "{} was cut off from the database {}..{until}; it accepted session {} in op#{} \
                             sent {} (stale from {from} at the latest)",
                            self.node(fault.node),
                            fault.start,
                            short(op.session.as_deref().unwrap_or("?")),
                            op.id,
                            op.sent
                        ),
                        vec![op.id],
                    ));
                }
            }
        }
        for (what, ops) in found {
            self.push(Rule::StaleNodeAccepted, what, ops, Vec::new());
        }
    }

    fn refresh_tokens(&mut self) {
        let mut by_token: BTreeMap<u64, Vec<OpId>> = BTreeMap::new();
        for op in &self.log.ops {
            if let OpKind::Refresh { token } = op.kind
                && op.status() == Some(200)
            {
                by_token.entry(token).or_default().push(op.id);
            }
        }
        for (_, ops) in by_token.into_iter().filter(|(_, ops)| ops.len() > 1) {
            let what = format!("one refresh token got {} answers 200", ops.len());
            self.push(Rule::RefreshTokenUsedTwice, what, ops, Vec::new());
        }
    }

    fn bans(&mut self) {
        let slack = self.bounds.slack;
        struct BanOp<'b> {
            op: &'b Op,
            user: &'b str,
            until: Option<&'b Until>,
            acked: bool,
        }
        let mut bans: Vec<BanOp<'a>> = Vec::new();
        let mut unbans: Vec<&'a Op> = Vec::new();
        for op in &self.log.ops {
            match &op.kind {
                OpKind::Ban { user, until } => {
                    let acked = op.status() == Some(200);
                    if acked || op.might_have_happened() {
                        bans.push(BanOp { op, user, until: until.as_ref(), acked });
                    }
                }
                OpKind::Unban { .. }
                    if op.status().is_some_and(|s| (200..300).contains(&s)) || op.might_have_happened() =>
                {
                    unbans.push(op)
                }
                _ => {}
            }
        }
        let unban_user = |op: &Op| match &op.kind {
            OpKind::Unban { user } => user.clone(),
            _ => unreachable!(),
        };
        let mut found = Vec::new();
        for login in &self.log.ops {
            let OpKind::Login { username } = &login.kind else { continue };
            let Some(user) = self.users_by_name.get(username.as_str()).copied() else { continue };
            let Some(answered) = login.answered() else { continue };
            let status = login.status();
            if status == Some(200) {
                for ban in bans.iter().filter(|ban| ban.acked && ban.user == user) {
                    let from = self.learned_by(login.node, ban.op.node, ban.op.ended);
                    if login.sent <= from {
                        continue;
                    }
                    // An unban, or a newer ban (which replaces this one's until), sent
                    // before the login was answered may have lifted it.
                    let lifted = unbans.iter().any(|unban| {
                        unban_user(unban) == user && unban.sent > ban.op.sent && unban.sent < answered
                    }) || bans.iter().any(|newer| {
                        newer.user == user && newer.op.sent > ban.op.sent && newer.op.sent < answered
                    });
                    let expired = ban.until.is_some_and(|until| answered.plus(slack) >= until.at);
                    if !lifted && !expired {
                        found.push((
                            Rule::BannedUserLoggedIn,
                            format!(
                                "user {} was banned by op#{} (answered {}{}); login op#{} on {} sent {} got 200",
                                short(user),
                                ban.op.id,
                                ban.op.ended,
                                ban.until.map(|u| format!(", until {} = {}", u.text, u.at)).unwrap_or_default(),
                                login.id,
                                self.node(login.node),
                                login.sent
                            ),
                            vec![ban.op.id, login.id],
                        ));
                    }
                }
            }
            if status == Some(403) && login.error() == Some("banned") {
                let in_force: Vec<&BanOp<'_>> = bans
                    .iter()
                    .filter(|ban| ban.user == user && ban.op.sent < answered)
                    .filter(|ban| {
                        let expired = ban.until.is_some_and(|until| until.at.plus(slack) < login.sent);
                        let ban_end = if ban.acked { ban.op.ended } else { At::NEVER };
                        let unbanned = unbans.iter().any(|unban| {
                            unban_user(unban) == user
                                && unban.sent > ban_end
                                && unban.status().is_some_and(|s| (200..300).contains(&s))
                                && self.learned_by(login.node, unban.node, unban.ended) < login.sent
                        });
                        // A newer ban answered before the login replaced this one.
                        let replaced = bans.iter().any(|newer| {
                            newer.acked
                                && newer.user == user
                                && newer.op.sent > ban_end
                                && self.learned_by(login.node, newer.op.node, newer.op.ended) < login.sent
                        });
                        !expired && !unbanned && !replaced
                    })
                    .collect();
                if in_force.is_empty() {
                    let mut ops: Vec<OpId> = bans
                        .iter()
                        .filter(|ban| ban.user == user && ban.op.sent < answered)
                        .map(|ban| ban.op.id)
                        .chain(
                            unbans
                                .iter()
                                .filter(|u| unban_user(u) == user && u.sent < answered)
                                .map(|u| u.id),
                        )
                        .collect();
                    ops.sort_unstable();
                    ops.push(login.id);
                    found.push((
                        Rule::BanNotLifted,
                        format!(
                            "login op#{} of user {} on {} sent {} was refused 403 banned, but every ban of the \
                             user before it had lifted (its until passed, or an unban was answered)",
                            login.id,
                            short(user),
                            self.node(login.node),
                            login.sent
                        ),
                        ops,
                    ));
                } else if let [ban] = in_force.as_slice()
                    && ban.acked
                    && let Outcome::Http { ban_until: Some(answered_until), .. } = &login.outcome
                {
                    let expected = ban.until.map(|until| until.utc);
                    let got = answered_until.as_deref().map(|text| {
                        let parsed =
                            OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339);
                        (text, parsed.ok())
                    });
                    let right = match (expected, got) {
                        (None, None) => true,
                        (Some(expected), Some((text, Some(parsed)))) => {
                            parsed == expected && (text.ends_with('Z') || text.ends_with("+00:00"))
                        }
                        _ => false,
                    };
                    if !right {
                        found.push((
                            Rule::BanUntilNotUtc,
                            format!(
                                "ban op#{} was given until {}; login op#{} was refused with until {}",
                                ban.op.id,
                                ban.until.map_or("null".to_owned(), |u| format!(
                                    "{} (= {})",
                                    u.text,
                                    rfc3339(u.utc)
                                )),
                                login.id,
                                answered_until.as_deref().unwrap_or("null")
                            ),
                            vec![ban.op.id, login.id],
                        ));
                    }
                }
            }
        }
        for (rule, what, ops) in found {
            self.push(rule, what, ops, Vec::new());
        }
    }

    /// The close code the token-state table gives a session at `at`, if it is certain.
    fn expected_close(&self, session: &str, node: usize, sent: At, at: At) -> Option<(u16, OpId)> {
        let covering: Vec<&Revocation<'_>> =
            self.revocations.iter().filter(|rev| rev.covers(session) && rev.op.sent < at).collect();
        let [rev] = covering.as_slice() else { return None };
        let answered = rev.acked?;
        if rev.kind != RevKind::Ban {
            return Some((rev.kind.close_code(), rev.op.id));
        }
        let OpKind::Ban { user, until } = &rev.op.kind else { return None };
        let other_ban = self.log.ops.iter().any(|op| {
            op.id != rev.op.id && matches!(&op.kind, OpKind::Ban { user: u, .. } if u == user) && op.sent < at
        });
        if other_ban {
            return None;
        }
        let unbans: Vec<&Op> = self
            .log
            .ops
            .iter()
            .filter(|op| matches!(&op.kind, OpKind::Unban { user: u } if u == user) && op.sent < at)
            .filter(|op| op.sent > rev.op.sent)
            .collect();
        let unbanned_for_sure = unbans.iter().any(|op| {
            op.status().is_some_and(|s| (200..300).contains(&s))
                && op.sent > answered
                && self.learned_by(node, op.node, op.ended) < sent
        });
        let expired = until.as_ref().is_some_and(|until| until.at.plus(self.bounds.slack) < sent);
        if unbanned_for_sure || expired {
            return Some((4001, rev.op.id));
        }
        let maybe_lifted =
            !unbans.is_empty() || until.as_ref().is_some_and(|until| until.at <= at.plus(self.bounds.slack));
        if maybe_lifted { None } else { Some((4003, rev.op.id)) }
    }

    fn refusals(&mut self) {
        let mut found = Vec::new();
        let mut refused = |session: &str,
                           node: usize,
                           sent: At,
                           at: At,
                           code: Option<u16>,
                           ops: Vec<OpId>,
                           sockets: Vec<SocketId>,
                           how: String| {
            let covered = self.revocations.iter().any(|rev| rev.covers(session) && rev.op.sent < at);
            if !covered {
                found.push((
                    Rule::RefusedWithoutRevocation,
                    format!(
                        "{how}: session {} on {}, but no revocation sent before covered it",
                        short(session),
                        self.node(node)
                    ),
                    ops,
                    sockets,
                ));
                return;
            }
            if let Some(code) = code
                && let Some((expected, by)) = self.expected_close(session, node, sent, at)
                && code != expected
            {
                let mut ops = ops;
                ops.insert(0, by);
                found.push((
                    Rule::WrongCloseCode,
                    format!(
                        "{how}: session {} on {} closed {code}, the table says {expected} (revoked only by op#{by})",
                        short(session),
                        self.node(node)
                    ),
                    ops,
                    sockets,
                ));
            }
        };
        for op in &self.log.ops {
            let Some(session) = op.session.as_deref() else { continue };
            let Some(answered) = op.answered() else { continue };
            match &op.outcome {
                Outcome::Http { status: 401, error: Some(error), .. } if error == "session_revoked" => {
                    refused(
                        session,
                        op.node,
                        op.sent,
                        answered,
                        None,
                        vec![op.id],
                        Vec::new(),
                        format!("op#{} got 401 session_revoked", op.id),
                    );
                }
                Outcome::Closed { code, .. } if matches!(code, 4001 | 4003 | 4004) => {
                    refused(
                        session,
                        op.node,
                        op.sent,
                        answered,
                        Some(*code),
                        vec![op.id],
                        Vec::new(),
                        format!("upgrade op#{} was closed {code}", op.id),
                    );
                }
                _ => {}
            }
        }
        for socket in &self.log.sockets {
            if let Some((at, End::Closed { code, .. })) = &socket.end
                && matches!(code, 4001 | 4003 | 4004)
            {
                refused(
                    &socket.session,
                    socket.node,
                    *at,
                    *at,
                    Some(*code),
                    vec![socket.op],
                    vec![socket.id],
                    format!("socket #{} was closed {code} at {at}", socket.id),
                );
            }
        }
        for (rule, what, ops, sockets) in found {
            self.push(rule, what, ops, sockets);
        }
    }

    fn not_ready(&mut self) {
        let pending = self.bounds.propagation + self.bounds.slack;
        let mut found = Vec::new();
        for op in &self.log.ops {
            let stale_answer = match &op.outcome {
                Outcome::Http { status: 503, error: Some(error), .. } => error == "not_ready",
                Outcome::Closed { code: 1013, .. } => true,
                _ => false,
            };
            if !stale_answer {
                continue;
            }
            let excused = self.blind[op.node].iter().any(|blind| {
                let (start, end) = blind.span();
                start <= op.ended && end.plus(pending) >= op.sent
            });
            if !excused {
                found.push((
                    format!(
                        "op#{} on {} sent {} was answered as from a stale node, but the node was neither cut \
                         off nor restarting then",
                        op.id,
                        self.node(op.node),
                        op.sent
                    ),
                    vec![op.id],
                ));
            }
        }
        for (what, ops) in found {
            self.push(Rule::NotReadyWhileConnected, what, ops, Vec::new());
        }
    }

    fn invalid_tokens(&mut self) {
        // Access tokens live 15 minutes; any token of a session is at least as young
        // as the session, so within 14 minutes of its login every token is unexpired.
        let young = Duration::from_secs(14 * 60);
        let mut found = Vec::new();
        for op in &self.log.ops {
            let Some(session) = op.session.as_deref() else { continue };
            let Some(info) = self.sessions.get(session) else { continue };
            let verdict = match &op.outcome {
                Outcome::Http { status: 401, error: Some(error), .. } if error == "invalid_token" => {
                    "401 invalid_token".to_owned()
                }
                Outcome::Closed { code: 4401, reason } => format!("close 4401 {reason:?}"),
                _ => continue,
            };
            if op.sent < info.issued_answered.plus(young) {
                found.push((
                    format!(
                        "op#{} on {} sent {} got {verdict} for session {} (logged in {})",
                        op.id,
                        self.node(op.node),
                        op.sent,
                        short(session),
                        info.issued_answered
                    ),
                    vec![op.id],
                ));
            }
        }
        for (what, ops) in found {
            self.push(Rule::InvalidTokenForKnownSession, what, ops, Vec::new());
        }
    }

    /// The run's mass revoke-all (by the actor `mass-admin`): it must have been
    /// answered, and every node must have been seen refusing each of its sessions
    /// (a 200 past the bound is already an [`Rule::AcceptedAfterRevocation`]).
    fn mass_revocation(&mut self) {
        for (what, ops) in self.mass_revocation_gaps() {
            self.push(Rule::MassRevocationUnverified, what, ops, Vec::new());
        }
    }

    fn mass_revocation_gaps(&self) -> Vec<(String, Vec<OpId>)> {
        let masses: Vec<&Revocation<'_>> = self
            .revocations
            .iter()
            .filter(|rev| rev.op.actor == MASS_ADMIN && rev.kind == RevKind::RevokeAll)
            .collect();
        if masses.is_empty() {
            return Vec::new();
        }
        let Some(rev) = masses.iter().find(|rev| rev.acked.is_some()) else {
            let ops = masses.iter().map(|rev| rev.op.id).collect();
            return vec![("the mass revoke-all was never answered 200".to_owned(), ops)];
        };
        let mut refused: HashSet<(&str, usize)> = HashSet::new();
        for op in &self.log.ops {
            if op.sent > rev.op.sent
                && op.status() == Some(401)
                && let Some(session) = op.session.as_deref()
            {
                refused.insert((session, op.node));
            }
        }
        let mut missing = Vec::new();
        let mut checked = 0;
        for session in &rev.affected {
            if self.sessions.get(session).is_none_or(|info| info.actor != MASS_BULK) {
                continue;
            }
            checked += 1;
            for node in 0..self.log.nodes.len() {
                if !refused.contains(&(*session, node)) {
                    missing.push(format!("{}@{}", short(session), self.node(node)));
                }
            }
        }
        if checked == 0 {
            return vec![(
                format!("op#{} revoked no session of the mass logins", rev.op.id),
                vec![rev.op.id],
            )];
        }
        if missing.is_empty() {
            return Vec::new();
        }
        let shown: Vec<_> = missing.iter().take(12).cloned().collect();
        let what = format!(
            "op#{} revoked {} sessions ({checked} of the mass logins); no refusal was seen for {} \
             (session@node): {}{}",
            rev.op.id,
            rev.affected.len(),
            missing.len(),
            shown.join(", "),
            if missing.len() > shown.len() { ", ..." } else { "" }
        );
        vec![(what, vec![rev.op.id])]
    }
}

/// The actor name of the run's one mass revoke-all.
pub const MASS_ADMIN: &str = "mass-admin";
/// The actor name of the logins made for it.
pub const MASS_BULK: &str = "mass-bulk";

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| at.to_string())
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn describe_end(end: &End) -> String {
    match end {
        End::Closed { code, reason } => format!("close {code} {reason:?}"),
        End::Broken(error) => format!("broken: {error}"),
        End::ByClient => "closed by the client".to_owned(),
    }
}

/// One line per operation, as a report shows it.
pub fn describe_op(log: &Log, op: &Op) -> String {
    let node = log.nodes.get(op.node).map_or("?", String::as_str);
    let session = op.session.as_deref().map(|s| format!(" sid={}", short(s))).unwrap_or_default();
    let what = match &op.kind {
        OpKind::Register { username } => format!("register {username}"),
        OpKind::Login { username } => format!("login {username}"),
        OpKind::Refresh { token } => format!("refresh token#{:04x}", token & 0xffff),
        OpKind::Me => "GET /api/me".to_owned(),
        OpKind::ListSessions => "GET /api/sessions".to_owned(),
        OpKind::Logout => "logout".to_owned(),
        OpKind::LogoutAll => "logout-all".to_owned(),
        OpKind::DeleteSession { target } => format!("DELETE /api/sessions/{}", short(target)),
        OpKind::Upgrade { transport } => format!("upgrade ({transport:?})"),
        OpKind::Kick { user } => format!("kick user {}", short(user)),
        OpKind::Ban { user, until } => format!(
            "ban user {}{}",
            short(user),
            until.as_ref().map(|u| format!(" until {} (= {})", u.text, u.at)).unwrap_or_default()
        ),
        OpKind::Unban { user } => format!("unban user {}", short(user)),
        OpKind::RevokeSession { target } => format!("admin revoke session {}", short(target)),
        OpKind::RevokeAll => "admin revoke-all".to_owned(),
    };
    let outcome = match &op.outcome {
        Outcome::Pending => "(no answer by the end)".to_owned(),
        Outcome::Http { status, error, issued, .. } => {
            let mut text = status.to_string();
            if let Some(error) = error {
                let _ = write!(text, " {error}");
            }
            if let Some(issued) = issued {
                let _ = write!(text, " session {} user {}", short(&issued.session), short(&issued.user));
            }
            text
        }
        Outcome::Welcome { socket } => format!("welcome (socket #{socket})"),
        Outcome::Closed { code, reason } => format!("closed {code} {reason:?}"),
        Outcome::HungUp => "client hung up after sending".to_owned(),
        Outcome::Failed(error) => format!("failed: {error}"),
    };
    format!("op#{} {}..{} {node} {}{session} {what} -> {outcome}", op.id, op.sent, op.ended, op.actor)
}

fn describe_socket(log: &Log, socket: &SocketRecord) -> String {
    let node = log.nodes.get(socket.node).map_or("?", String::as_str);
    let last = socket
        .frames
        .last()
        .map(|frame| format!(", last `{}` at {}", frame.kind, frame.at))
        .unwrap_or_default();
    let end = match &socket.end {
        Some((at, end)) => format!("ended {at}: {}", describe_end(end)),
        None => "still open".to_owned(),
    };
    format!(
        "socket #{} (op#{}) {node} sid={} welcome {}, {} frames{last}; {end}",
        socket.id,
        socket.op,
        short(&socket.session),
        socket.opened,
        socket.frames.len()
    )
}

fn describe_fault(log: &Log, fault: &Fault) -> String {
    let node = log.nodes.get(fault.node).map_or("?", String::as_str);
    let end = fault.end.map_or("never".to_owned(), |end| end.to_string());
    match &fault.kind {
        FaultKind::Cut { mode } => format!("{} {node}: database cut ({mode}) until {end}", fault.start),
        FaultKind::Down { spawned } => format!(
            "{} {node}: kill -9, restarted {}, ready {end}",
            fault.start,
            spawned.map_or("never".to_owned(), |s| s.to_string())
        ),
        FaultKind::ListenerTerminated { backends } => {
            format!("{} {node}: listener backend terminated ({backends} found)", fault.start)
        }
    }
}

/// The whole log, readable: every fault, operation and socket.
pub fn dump(log: &Log) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "nodes: {}", log.nodes.join(", "));
    let _ = writeln!(text, "\nfaults:");
    for fault in &log.faults {
        let _ = writeln!(text, "  {}", describe_fault(log, fault));
    }
    let _ = writeln!(text, "\noperations:");
    for op in &log.ops {
        let _ = writeln!(text, "  {}", describe_op(log, op));
    }
    let _ = writeln!(text, "\nsockets:");
    for socket in &log.sockets {
        let _ = writeln!(text, "  {}", describe_socket(log, socket));
    }
    text
}

/// What a run did, in counts: shown with every result, so that a run that tested
/// nothing is not mistaken for one that passed.
pub fn summary(log: &Log) -> String {
    let mut kinds: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for op in &log.ops {
        let name = describe_kind(&op.kind);
        let entry = kinds.entry(name).or_default();
        entry.0 += 1;
        if op.accepted() || op.status().is_some_and(|s| (200..300).contains(&s)) {
            entry.1 += 1;
        }
    }
    let mut text = format!("{} operations (2xx or welcome / all): ", log.ops.len());
    let parts: Vec<String> = kinds.iter().map(|(kind, (all, ok))| format!("{kind} {ok}/{all}")).collect();
    text.push_str(&parts.join(", "));
    let frames: usize = log.sockets.iter().map(|s| s.frames.len()).sum();
    let revoked_closes = log
        .sockets
        .iter()
        .filter(|s| matches!(s.end, Some((_, End::Closed { code: 4001 | 4003 | 4004, .. }))))
        .count();
    let _ = write!(
        text,
        "; {} sockets ({revoked_closes} closed by a revocation), {frames} frames; faults:",
        log.sockets.len()
    );
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    for fault in &log.faults {
        let kind = match fault.kind {
            FaultKind::Cut { .. } => "cut",
            FaultKind::Down { .. } => "kill -9",
            FaultKind::ListenerTerminated { .. } => "listener terminated",
        };
        *faults.entry(kind).or_default() += 1;
    }
    for (kind, count) in faults {
        let _ = write!(text, " {kind} {count}");
    }
    let hung_up = log.ops.iter().filter(|op| op.outcome == Outcome::HungUp).count();
    let _ = write!(text, "; {hung_up} hang-ups");
    text
}

fn describe_kind(kind: &OpKind) -> String {
    match kind {
        OpKind::Register { .. } => "register",
        OpKind::Login { .. } => "login",
        OpKind::Refresh { .. } => "refresh",
        OpKind::Me => "me",
        OpKind::ListSessions => "sessions",
        OpKind::Logout => "logout",
        OpKind::LogoutAll => "logout-all",
        OpKind::DeleteSession { .. } => "session-delete",
        OpKind::Upgrade { .. } => "upgrade",
        OpKind::Kick { .. } => "kick",
        OpKind::Ban { .. } => "ban",
        OpKind::Unban { .. } => "unban",
        OpKind::RevokeSession { .. } => "admin-revoke",
        OpKind::RevokeAll => "revoke-all",
    }
    .to_owned()
}

/// The violations grouped by rule, each with the operations and sockets it names;
/// at most `per_rule` of each rule in full.
pub fn report(log: &Log, violations: &[Violation], bounds: &Bounds, per_rule: usize) -> String {
    let mut text = String::new();
    let mut rules: BTreeMap<Rule, Vec<&Violation>> = BTreeMap::new();
    for violation in violations {
        rules.entry(violation.rule).or_default().push(violation);
    }
    let _ = writeln!(text, "{} violations of {} rules:", violations.len(), rules.len());
    for (rule, found) in &rules {
        let _ =
            writeln!(text, "\n[{}] {} violation(s). Rule: {}.", rule.title(), found.len(), rule.rule(bounds));
        for (n, violation) in found.iter().take(per_rule).enumerate() {
            let _ = writeln!(text, "  {}. {}", n + 1, violation.what);
            for &op in &violation.ops {
                let _ = writeln!(text, "       {}", describe_op(log, &log.ops[op]));
            }
            for &socket in &violation.sockets {
                let _ = writeln!(text, "       {}", describe_socket(log, &log.sockets[socket]));
            }
        }
        if found.len() > per_rule {
            let _ = writeln!(text, "  ... and {} more", found.len() - per_rule);
        }
    }
    let involved: HashSet<usize> =
        violations.iter().flat_map(|v| v.ops.iter().map(|&op| log.ops[op].node)).collect();
    let faults: Vec<&Fault> = log.faults.iter().filter(|fault| involved.contains(&fault.node)).collect();
    if !faults.is_empty() {
        let _ = writeln!(text, "\nfaults on the nodes involved:");
        for fault in faults {
            let _ = writeln!(text, "  {}", describe_fault(log, fault));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> At {
        At::from_millis(millis)
    }

    struct Build {
        log: Log,
    }

    impl Build {
        fn new(nodes: usize) -> Build {
            Build { log: Log { nodes: (0..nodes).map(|n| format!("node-{n}")).collect(), ..Log::default() } }
        }

        fn op(
            &mut self,
            node: usize,
            kind: OpKind,
            session: Option<&str>,
            sent: u64,
            ended: u64,
            outcome: Outcome,
        ) -> OpId {
            let id = self.log.ops.len();
            self.log.ops.push(Op {
                id,
                actor: "t".into(),
                node,
                kind,
                session: session.map(str::to_owned),
                sent: ms(sent),
                ended: ms(ended),
                outcome,
            });
            id
        }

        fn login(&mut self, node: usize, session: &str, user: &str, sent: u64, ended: u64) {
            let issued = Some(Issued { session: session.into(), user: user.into() });
            let outcome = Outcome::Http { status: 200, error: None, issued, ban_until: None };
            self.op(node, OpKind::Login { username: format!("name-{user}") }, None, sent, ended, outcome);
        }
    }

    fn http(status: u16) -> Outcome {
        Outcome::Http { status, error: None, issued: None, ban_until: None }
    }

    fn rules(log: &Log) -> Vec<Rule> {
        check(log, Bounds::default()).into_iter().map(|v| v.rule).collect()
    }

    #[test]
    fn an_acceptance_after_the_answer_on_the_same_node_is_a_violation_and_one_sent_before_is_not() {
        let mut b = Build::new(2);
        b.login(0, "s1", "u1", 0, 10);
        b.op(0, OpKind::Logout, Some("s1"), 100, 110, http(204));
        b.op(0, OpKind::Me, Some("s1"), 105, 120, http(200));
        assert_eq!(rules(&b.log), vec![]);
        b.op(0, OpKind::Me, Some("s1"), 111, 120, http(200));
        assert_eq!(rules(&b.log), vec![Rule::AcceptedAfterRevocation]);
    }

    #[test]
    fn another_node_has_the_propagation_bound_and_a_cut_extends_it() {
        let mut b = Build::new(2);
        b.login(0, "s1", "u1", 0, 10);
        b.op(0, OpKind::Logout, Some("s1"), 100, 110, http(204));
        b.op(1, OpKind::Me, Some("s1"), 2500, 2510, http(200));
        assert_eq!(rules(&b.log), vec![]);
        b.op(1, OpKind::Me, Some("s1"), 2700, 2710, http(200));
        assert_eq!(rules(&b.log), vec![Rule::AcceptedAfterRevocation]);

        let mut b = Build::new(2);
        b.login(0, "s1", "u1", 0, 10);
        b.log.faults.push(Fault {
            node: 1,
            kind: FaultKind::Cut { mode: "refuse".into() },
            start: ms(50),
            end: ms(1500).into(),
        });
        b.op(0, OpKind::Logout, Some("s1"), 100, 110, http(204));
        b.op(1, OpKind::Me, Some("s1"), 1000, 1010, http(200));
        b.op(1, OpKind::Me, Some("s1"), 3900, 3910, http(200));
        assert_eq!(rules(&b.log), vec![]);
        b.op(1, OpKind::Me, Some("s1"), 4100, 4110, http(200));
        assert_eq!(rules(&b.log), vec![Rule::AcceptedAfterRevocation]);
    }

    #[test]
    fn a_session_issued_while_a_user_wide_revocation_ran_is_ambiguous() {
        let mut b = Build::new(1);
        b.login(0, "s1", "u1", 0, 10);
        b.login(0, "s2", "u1", 95, 105);
        b.op(0, OpKind::Kick { user: "u1".into() }, None, 100, 110, http(200));
        b.op(0, OpKind::Me, Some("s2"), 200, 210, http(200));
        assert_eq!(rules(&b.log), vec![]);
        b.op(0, OpKind::Me, Some("s1"), 200, 210, http(200));
        assert_eq!(rules(&b.log), vec![Rule::AcceptedAfterRevocation]);
    }

    #[test]
    fn a_stale_node_may_accept_only_until_the_staleness_bound() {
        let mut b = Build::new(1);
        b.login(0, "s1", "u1", 0, 10);
        b.log.faults.push(Fault {
            node: 0,
            kind: FaultKind::Cut { mode: "refuse".into() },
            start: ms(100),
            end: ms(4000).into(),
        });
        b.op(0, OpKind::Me, Some("s1"), 2500, 2510, http(200));
        assert_eq!(rules(&b.log), vec![]);
        b.op(0, OpKind::Me, Some("s1"), 2700, 2710, http(200));
        assert_eq!(rules(&b.log), vec![Rule::StaleNodeAccepted]);
    }

    #[test]
    fn a_socket_must_close_and_must_not_answer_frames_sent_after_the_revocation() {
        let mut b = Build::new(1);
        b.login(0, "s1", "u1", 0, 10);
        let upgrade = b.op(
            0,
            OpKind::Upgrade { transport: Transport::Header },
            Some("s1"),
            20,
            30,
            Outcome::Welcome { socket: 0 },
        );
        b.op(0, OpKind::Logout, Some("s1"), 100, 110, http(204));
        b.log.sockets.push(SocketRecord {
            id: 0,
            op: upgrade,
            node: 0,
            session: "s1".into(),
            opened: ms(30),
            frames: vec![Frame { at: ms(130), kind: "pong".into(), caused_by: Some(ms(120)) }],
            end: Some((ms(140), End::Closed { code: 4001, reason: "revoked: logout".into() })),
        });
        assert_eq!(rules(&b.log), vec![Rule::SocketOutlivedRevocation]);
        b.log.sockets[0].frames.clear();
        assert_eq!(rules(&b.log), vec![]);
        b.log.sockets[0].end = Some((ms(700), End::Closed { code: 4001, reason: String::new() }));
        assert_eq!(rules(&b.log), vec![Rule::SocketOutlivedRevocation]);
    }

    #[test]
    fn a_ban_is_enforced_until_unbanned_and_the_close_code_follows() {
        let mut b = Build::new(1);
        b.login(0, "s1", "u1", 0, 10);
        b.op(0, OpKind::Ban { user: "u1".into(), until: None }, None, 100, 110, http(200));
        let banned =
            Outcome::Http { status: 403, error: Some("banned".into()), issued: None, ban_until: Some(None) };
        b.op(0, OpKind::Login { username: "name-u1".into() }, None, 200, 210, banned.clone());
        b.op(
            0,
            OpKind::Upgrade { transport: Transport::Query },
            Some("s1"),
            220,
            230,
            Outcome::Closed { code: 4003, reason: String::new() },
        );
        b.op(0, OpKind::Unban { user: "u1".into() }, None, 300, 310, http(204));
        b.op(
            0,
            OpKind::Upgrade { transport: Transport::Query },
            Some("s1"),
            400,
            410,
            Outcome::Closed { code: 4001, reason: String::new() },
        );
        assert_eq!(rules(&b.log), vec![]);
        b.op(
            0,
            OpKind::Upgrade { transport: Transport::Query },
            Some("s1"),
            500,
            510,
            Outcome::Closed { code: 4003, reason: String::new() },
        );
        b.op(0, OpKind::Login { username: "name-u1".into() }, None, 500, 510, banned);
        assert_eq!(rules(&b.log), vec![Rule::BanNotLifted, Rule::WrongCloseCode]);
    }

    #[test]
    fn a_newer_ban_replaces_the_until_of_an_older_one() {
        let mut b = Build::new(1);
        b.login(0, "s1", "u1", 0, 10);
        b.op(0, OpKind::Ban { user: "u1".into(), until: None }, None, 100, 110, http(200));
        let until = Until { text: "+1s".into(), utc: OffsetDateTime::UNIX_EPOCH, at: ms(1000) };
        b.op(0, OpKind::Ban { user: "u1".into(), until: Some(until) }, None, 200, 210, http(200));
        let ok = Outcome::Http {
            status: 200,
            error: None,
            issued: Some(Issued { session: "s2".into(), user: "u1".into() }),
            ban_until: None,
        };
        b.op(0, OpKind::Login { username: "name-u1".into() }, None, 2000, 2010, ok);
        assert_eq!(rules(&b.log), vec![]);
        let banned =
            Outcome::Http { status: 403, error: Some("banned".into()), issued: None, ban_until: Some(None) };
        b.op(0, OpKind::Login { username: "name-u1".into() }, None, 2500, 2510, banned);
        assert_eq!(rules(&b.log), vec![Rule::BanNotLifted]);
    }

    #[test]
    fn a_real_sessions_token_is_never_called_invalid() {
        let mut b = Build::new(1);
        b.login(0, "s1", "u1", 0, 10);
        b.op(0, OpKind::Logout, Some("s1"), 100, 110, http(204));
        let revoked = Outcome::Http {
            status: 401,
            error: Some("session_revoked".into()),
            issued: None,
            ban_until: None,
        };
        b.op(0, OpKind::Me, Some("s1"), 200, 210, revoked);
        assert_eq!(rules(&b.log), vec![]);
        let invalid =
            Outcome::Http { status: 401, error: Some("invalid_token".into()), issued: None, ban_until: None };
        b.op(0, OpKind::Me, Some("s1"), 300, 310, invalid);
        assert_eq!(rules(&b.log), vec![Rule::InvalidTokenForKnownSession]);
    }

    #[test]
    fn two_answers_200_to_one_refresh_token_are_a_violation() {
        let mut b = Build::new(1);
        b.login(0, "s1", "u1", 0, 10);
        b.op(0, OpKind::Refresh { token: 7 }, Some("s1"), 20, 30, http(200));
        assert_eq!(rules(&b.log), vec![]);
        b.op(0, OpKind::Refresh { token: 7 }, Some("s1"), 20, 31, http(200));
        assert_eq!(rules(&b.log), vec![Rule::RefreshTokenUsedTwice]);
    }
}
