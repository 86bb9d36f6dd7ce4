//! A seeded fault-injection run against real `tether serve` processes.
//!
//! [`plan`] turns a seed into a schedule (what happens when: which player logs in,
//! refreshes, opens a socket or logs out on which node, what the admins do, which
//! node is cut off, killed or has its listener terminated); the same seed always
//! gives the same schedule. [`run`] carries it out on fresh nodes while a
//! [`Recorder`] writes down every operation, frame and fault, and hands back the
//! [`Log`] for [`crate::history::check`]. The run decides nothing about right and
//! wrong: what it does next depends only on the schedule and on what the servers
//! answered, and the checker judges the log alone.
//!
//! Every wait is bounded: each HTTP call and upgrade by [`CALL_BOUND`], a restarted
//! node by [`crate::nodes::READY_BOUND`], the end of the run by [`FINISH_BOUND`].

use crate::history::{
    End, FaultKind, Issued, Log, MASS_ADMIN, MASS_BULK, OpKind, Outcome, Recorder, SocketId, Transport,
    Until, fingerprint,
};
use crate::nodes::{self, Node};
use crate::proxy::{CutMode, DbProxy};
use crate::{PASSWORD, TestDb};
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Bounds every HTTP call and every upgrade (its answer, and `welcome` after it).
pub const CALL_BOUND: Duration = Duration::from_secs(5);
/// Bounds the wait for the schedule's last tasks once its time is up.
pub const FINISH_BOUND: Duration = Duration::from_secs(60);
/// How long the pollers after the mass revoke-all keep asking a node that still
/// accepts (the rule is 2 s; this only bounds the test).
const MASS_POLL_BOUND: Duration = Duration::from_secs(10);
/// When a revoking call's sessions are checked on every node: past a hang-up's own
/// bound (2 s), the propagation bound (2 s) and the slack (0.5 s).
const CHECK_AFTER: Duration = Duration::from_millis(4700);

/// SplitMix64: small, and the same sequence on every platform and crate version, so
/// a seed printed by one run replays the same schedule on any machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next_u64() % (high - low + 1))
    }

    pub fn pick(&mut self) -> u32 {
        self.next_u64() as u32
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// What is run: how many nodes on which database.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub name: &'static str,
    pub nodes: usize,
    pub backend: Backend,
}

pub const CLUSTER: Shape = Shape { name: "three nodes on PostgreSQL", nodes: 3, backend: Backend::Postgres };
pub const SINGLE: Shape = Shape { name: "one node on SQLite", nodes: 1, backend: Backend::Sqlite };

/// The run's knobs: the seed and length from the environment, the sizes fixed.
#[derive(Clone, Debug)]
pub struct Settings {
    pub seed: u64,
    pub duration: Duration,
    /// Players registered before the schedule starts.
    pub players: usize,
    /// Players the schedule registers.
    pub late_players: usize,
    /// Sessions the mass revoke-all revokes (many times the batch size).
    pub mass_sessions: usize,
    /// How many of them hold a socket when it lands.
    pub mass_sockets: usize,
}

/// `TETHER_HISTORY_SECONDS` when unset.
pub const DEFAULT_SECONDS: u64 = 45;

impl Settings {
    /// `TETHER_HISTORY_SEED` (decimal or `0x` hex) replays a seed; otherwise a new
    /// one. `TETHER_HISTORY_SECONDS` sets the schedule's length.
    pub fn from_env() -> Settings {
        let seed = match std::env::var("TETHER_HISTORY_SEED") {
            Ok(text) => {
                parse_seed(&text).unwrap_or_else(|| panic!("TETHER_HISTORY_SEED={text:?} is not a number"))
            }
            Err(_) => fresh_seed(),
        };
        let seconds = std::env::var("TETHER_HISTORY_SECONDS")
            .ok()
            .map(|text| text.trim().parse::<u64>().expect("TETHER_HISTORY_SECONDS is a whole number"))
            .unwrap_or(DEFAULT_SECONDS)
            .max(10);
        Settings {
            seed,
            duration: Duration::from_secs(seconds),
            players: 12,
            late_players: 4,
            mass_sessions: 300,
            mass_sockets: 40,
        }
    }

    /// The environment that replays this run.
    pub fn replay(&self) -> String {
        format!("TETHER_HISTORY_SEED={:#x} TETHER_HISTORY_SECONDS={}", self.seed, self.duration.as_secs())
    }
}

fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    Rng::new(nanos ^ (u64::from(std::process::id()) << 32)).next_u64()
}

/// One thing the schedule does. Players, admins and sessions are named by index
/// (`pick` chooses among the sessions a player holds when the step runs).
#[derive(Clone, Debug)]
pub enum Action {
    Register {
        player: usize,
        node: usize,
    },
    Login {
        player: usize,
        node: usize,
    },
    Refresh {
        player: usize,
        node: usize,
        pick: u32,
        twice: bool,
    },
    Me {
        player: usize,
        node: usize,
        pick: u32,
    },
    ListSessions {
        player: usize,
        node: usize,
        pick: u32,
    },
    OpenSocket {
        player: usize,
        node: usize,
        pick: u32,
        transport: Transport,
        play: bool,
    },
    CloseSocket {
        player: usize,
        pick: u32,
    },
    /// Upgrade again with a session the player lost (as a client that reconnects
    /// after a close does, to learn why).
    Reconnect {
        player: usize,
        node: usize,
        pick: u32,
        transport: Transport,
    },
    Logout {
        player: usize,
        node: usize,
        pick: u32,
        hang_up: bool,
    },
    LogoutAll {
        player: usize,
        node: usize,
        pick: u32,
        hang_up: bool,
    },
    DeleteSession {
        player: usize,
        node: usize,
        pick: u32,
        target: u32,
        hang_up: bool,
    },
    Kick {
        admin: usize,
        node: usize,
        player: usize,
    },
    /// `until`: seconds from now, and the offset (minutes; None: `Z`) it is written in.
    Ban {
        admin: usize,
        node: usize,
        player: usize,
        until: Option<(u64, Option<i32>)>,
    },
    Unban {
        admin: usize,
        node: usize,
        player: usize,
    },
    RevokeSession {
        admin: usize,
        node: usize,
        player: usize,
        pick: u32,
        hang_up: bool,
    },
    RevokeAll {
        admin: usize,
        node: usize,
    },
    /// Log in [`Settings::mass_sessions`] sessions, give some sockets, revoke them all
    /// from `node`, and poll every node until each refuses each of them.
    MassRevokeAll {
        node: usize,
    },
    Cut {
        node: usize,
        length: Duration,
        mode: CutMode,
    },
    Kill {
        node: usize,
        down: Duration,
    },
    TerminateListener {
        node: usize,
    },
}

#[derive(Clone, Debug)]
pub struct Step {
    pub at: Duration,
    pub action: Action,
}

const ADMINS: usize = 2;
/// Offsets a ban's `until` is written in (minutes east of UTC; None: `Z`).
const OFFSETS: [Option<i32>; 6] = [None, Some(0), Some(-600), Some(330), Some(840), Some(-210)];

/// The schedule of a seed: client steps every 10-60 ms, a fault every few seconds
/// (never two at once on one node), and one mass revoke-all at 40 % of the run in a
/// window without faults, so that every node can be held to the 2 s bound.
pub fn plan(shape: &Shape, settings: &Settings) -> Vec<Step> {
    let mut rng = Rng::new(settings.seed);
    let nodes = shape.nodes;
    let total = settings.players + settings.late_players;
    let end = settings.duration;
    let mass_at = end * 2 / 5;
    let quiet_from = mass_at.saturating_sub(Duration::from_secs(1));
    // The mass logins, its sockets, the revoke-all and the pollers take a few
    // seconds on a busy machine: no fault may reach into them.
    let quiet_to = mass_at + Duration::from_secs(12);
    let in_quiet = |from: Duration, to: Duration| from < quiet_to && to > quiet_from;
    let mut steps = vec![Step { at: mass_at, action: Action::MassRevokeAll { node: rng.below(nodes) } }];
    for player in settings.players..total {
        let at = rng.millis(300, (end.as_millis() / 2) as u64);
        steps.push(Step { at, action: Action::Register { player, node: rng.below(nodes) } });
    }

    let mut at = Duration::from_millis(100);
    loop {
        at += rng.millis(10, 60);
        if at >= end {
            break;
        }
        let node = rng.below(nodes);
        let player = rng.below(total);
        let pick = rng.pick();
        let admin = rng.below(ADMINS);
        let transport = [Transport::Header, Transport::Subprotocol, Transport::Query][rng.below(3)];
        let action = match rng.below(920) {
            0..150 => Action::Login { player, node },
            150..260 => Action::Refresh { player, node, pick, twice: rng.chance(25) },
            260..460 => Action::Me { player, node, pick },
            460..510 => Action::ListSessions { player, node, pick },
            510..630 => Action::OpenSocket { player, node, pick, transport, play: rng.chance(40) },
            880..920 => Action::Reconnect { player, node, pick, transport },
            630..655 => Action::CloseSocket { player, pick },
            655..735 => Action::Logout { player, node, pick, hang_up: rng.chance(35) },
            735..760 => Action::LogoutAll { player, node, pick, hang_up: rng.chance(25) },
            760..800 => {
                Action::DeleteSession { player, node, pick, target: rng.pick(), hang_up: rng.chance(25) }
            }
            800..820 => Action::Kick { admin, node, player },
            820..840 => {
                let until =
                    rng.chance(60).then(|| (2 + rng.below(7) as u64, OFFSETS[rng.below(OFFSETS.len())]));
                if until.is_none() {
                    let later = at + rng.millis(2000, 6000);
                    let unban = Action::Unban { admin: rng.below(ADMINS), node: rng.below(nodes), player };
                    steps.push(Step { at: later.min(end), action: unban });
                }
                Action::Ban { admin, node, player, until }
            }
            840..850 => Action::Unban { admin, node, player },
            850..878 => Action::RevokeSession { admin, node, player, pick, hang_up: rng.chance(25) },
            878.. if in_quiet(at, at) => continue,
            878.. => Action::RevokeAll { admin, node },
        };
        steps.push(Step { at, action });
    }

    let mut busy_until = vec![Duration::ZERO; nodes];
    let mut at = Duration::from_secs(2);
    // Faults are drawn from a bag that is refilled once empty, so that every kind
    // comes up in every run that is long enough for a bagful.
    let mut bag: Vec<u8> = Vec::new();
    loop {
        at += match shape.backend {
            Backend::Postgres => rng.millis(1500, 4000),
            Backend::Sqlite => rng.millis(3000, 6000),
        };
        if bag.is_empty() {
            bag = match shape.backend {
                Backend::Postgres => vec![b'c', b'c', b'k', b'l'],
                Backend::Sqlite => vec![b'k'],
            };
        }
        let node = rng.below(nodes);
        let kind = bag[rng.below(bag.len())];
        let action = match kind {
            b'c' => Action::Cut {
                node,
                length: rng.millis(1000, 5000),
                mode: if rng.chance(50) { CutMode::Refuse } else { CutMode::Blackhole },
            },
            b'l' => Action::TerminateListener { node },
            _ => Action::Kill { node, down: rng.millis(300, 1500) },
        };
        let length = match &action {
            Action::Cut { length, .. } => *length,
            Action::Kill { down, .. } => *down + Duration::from_secs(3),
            _ => Duration::from_millis(300),
        };
        if at + length + Duration::from_secs(2) >= end {
            break;
        }
        if busy_until[node] > at || in_quiet(at, at + length + Duration::from_secs(1)) {
            continue;
        }
        busy_until[node] = at + length + Duration::from_secs(1);
        let drawn = bag.iter().position(|&k| k == kind).unwrap();
        bag.swap_remove(drawn);
        steps.push(Step { at, action });
    }
    steps.sort_by_key(|step| step.at);
    steps
}

/// Counts of a plan's steps by kind, for the run's first lines.
pub fn describe_plan(steps: &[Step]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for step in steps {
        let name = match step.action {
            Action::Register { .. } => "register",
            Action::Login { .. } => "login",
            Action::Refresh { twice: true, .. } => "double refresh",
            Action::Refresh { .. } => "refresh",
            Action::Me { .. } => "me",
            Action::ListSessions { .. } => "sessions",
            Action::OpenSocket { .. } => "open socket",
            Action::CloseSocket { .. } => "close socket",
            Action::Reconnect { .. } => "reconnect",
            Action::Logout { hang_up: true, .. } => "logout (hang-up)",
            Action::Logout { .. } => "logout",
            Action::LogoutAll { hang_up: true, .. } => "logout-all (hang-up)",
            Action::LogoutAll { .. } => "logout-all",
            Action::DeleteSession { hang_up: true, .. } => "session delete (hang-up)",
            Action::DeleteSession { .. } => "session delete",
            Action::Kick { .. } => "kick",
            Action::Ban { until: Some(_), .. } => "ban until",
            Action::Ban { .. } => "ban",
            Action::Unban { .. } => "unban",
            Action::RevokeSession { hang_up: true, .. } => "admin revoke (hang-up)",
            Action::RevokeSession { .. } => "admin revoke",
            Action::RevokeAll { .. } => "revoke-all",
            Action::MassRevokeAll { .. } => "mass revoke-all",
            Action::Cut { .. } => "FAULT cut",
            Action::Kill { .. } => "FAULT kill -9",
            Action::TerminateListener { .. } => "FAULT listener",
        };
        *counts.entry(name).or_default() += 1;
    }
    counts.iter().map(|(name, count)| format!("{name} {count}")).collect::<Vec<_>>().join(", ")
}

/// What a run hands back: its log, and anything that went wrong with the harness
/// itself (a node that would not come back), which is not the server's verdict.
pub struct RunResult {
    pub log: Log,
    pub harness_errors: Vec<String>,
}

#[derive(Clone, Debug)]
struct Sess {
    sid: String,
    access: String,
    /// None while a refresh with it is under way (or after it was used).
    refresh: Option<String>,
}

struct Player {
    name: String,
    user_id: Option<String>,
    registered: bool,
    sessions: Vec<Sess>,
    /// The last few sessions it lost, for [`Action::Reconnect`].
    lost: Vec<Sess>,
}

impl Player {
    fn lose(&mut self, sess: Sess) {
        self.lost.push(sess);
        if self.lost.len() > 4 {
            self.lost.remove(0);
        }
    }
}

struct Admin {
    name: String,
    session: Option<Sess>,
}

struct SocketEntry {
    session: String,
    player: Option<usize>,
    close: Option<oneshot::Sender<()>>,
}

enum Answer {
    /// The node was down: nothing was sent.
    Skipped,
    Failed,
    Http {
        status: u16,
        body: Value,
    },
}

impl Answer {
    fn status(&self) -> Option<u16> {
        match self {
            Answer::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

struct Run {
    settings: Settings,
    rec: Arc<Recorder>,
    nodes: Vec<Node>,
    db_url: String,
    http: reqwest::Client,
    players: Vec<Mutex<Player>>,
    admins: Vec<Mutex<Admin>>,
    mass_admin: Mutex<Admin>,
    bulk_users: Vec<String>,
    /// Sessions this run believes revoked: probed after every restart and at the end.
    dead: Mutex<Vec<Sess>>,
    sockets: Mutex<Vec<SocketEntry>>,
    socket_tasks: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    harness_errors: Mutex<Vec<String>>,
}

/// Sets up `shape` on `db`, runs the schedule of `settings.seed`, and returns the log.
pub async fn run(shape: Shape, settings: &Settings, db: Arc<TestDb>) -> RunResult {
    let names: Vec<String> = (0..shape.nodes).map(|n| format!("node-{n}")).collect();
    let rec = Recorder::new(names.clone());
    let admin_names: Vec<String> =
        (0..ADMINS).map(|n| format!("hadmin{n}")).chain([MASS_ADMIN.to_owned()]).collect();
    let admin_refs: Vec<&str> = admin_names.iter().map(String::as_str).collect();
    nodes::prepare_database(&db.url, &admin_refs, PASSWORD).await;
    let secret = nodes::secret_file(&db);
    let mut nodes = Vec::new();
    for name in &names {
        let (url, proxy) = match shape.backend {
            Backend::Postgres => {
                let proxy = DbProxy::start(nodes::postgres_addr(&db.url).await).await;
                (proxy.url_for(&db.url), Some(proxy))
            }
            Backend::Sqlite => (db.url.clone(), None),
        };
        let mut env = nodes::serve_env(&url, &secret, name);
        nodes::set_env(&mut env, "TETHER_MAX_STALENESS", "2s");
        nodes::set_env(&mut env, "TETHER_REVOCATION_BATCH_SIZE", "7");
        nodes.push(Node::start(name, env, proxy).await);
    }
    let total = settings.players + settings.late_players;
    let players = (0..total)
        .map(|n| {
            Mutex::new(Player {
                name: format!("hplayer{n}"),
                user_id: None,
                registered: false,
                sessions: Vec::new(),
                lost: Vec::new(),
            })
        })
        .collect();
    let bulk_users = (0..settings.mass_sessions.div_ceil(10)).map(|n| format!("hbulk{n}")).collect();
    let (stop, _) = watch::channel(false);
    let run = Arc::new(Run {
        settings: settings.clone(),
        rec,
        nodes,
        db_url: db.url.clone(),
        http: reqwest::Client::builder()
            .timeout(CALL_BOUND)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
        players,
        admins: admin_names[..ADMINS]
            .iter()
            .map(|name| Mutex::new(Admin { name: name.clone(), session: None }))
            .collect(),
        mass_admin: Mutex::new(Admin { name: MASS_ADMIN.to_owned(), session: None }),
        bulk_users,
        dead: Mutex::new(Vec::new()),
        sockets: Mutex::new(Vec::new()),
        socket_tasks: Mutex::new(Vec::new()),
        stop,
        harness_errors: Mutex::new(Vec::new()),
    });
    run.register_everyone().await;

    let steps = plan(&shape, settings);
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for step in steps {
        tokio::time::sleep_until(started + step.at).await;
        let run = run.clone();
        tasks.push(tokio::spawn(async move { run.act(step.action).await }));
    }
    let deadline = tokio::time::Instant::now() + FINISH_BOUND;
    for task in tasks {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            run.harness_error(format!("the schedule's tasks did not finish within {FINISH_BOUND:?}"));
            break;
        }
    }
    run.finish().await;
    let log = run.rec.log();
    for node in &run.nodes {
        node.kill().await;
    }
    let harness_errors = run.harness_errors.lock().unwrap().clone();
    RunResult { log, harness_errors }
}

impl Run {
    fn harness_error(&self, error: String) {
        eprintln!("harness: {error}");
        self.harness_errors.lock().unwrap().push(error);
    }

    async fn register_everyone(self: &Arc<Self>) {
        for player in 0..self.settings.players {
            self.register(player, player % self.nodes.len()).await;
        }
        let gate = Arc::new(Semaphore::new(8));
        let mut tasks = Vec::new();
        for (n, name) in self.bulk_users.iter().enumerate() {
            let (run, gate, name) = (self.clone(), gate.clone(), name.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = gate.acquire().await;
                let body = json!({"username": name, "password": PASSWORD});
                let node = n % run.nodes.len();
                let kind = OpKind::Register { username: name };
                run.call("setup", node, kind, None, Method::POST, "/api/auth/register", Some(body)).await;
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    async fn act(self: Arc<Self>, action: Action) {
        match action {
            Action::Register { player, node } => self.register(player, node).await,
            Action::Login { player, node } => self.login(player, node).await,
            Action::Refresh { player, node, pick, twice } => self.refresh(player, node, pick, twice).await,
            Action::Me { player, node, pick } => self.read(player, node, pick, OpKind::Me, "/api/me").await,
            Action::ListSessions { player, node, pick } => {
                self.read(player, node, pick, OpKind::ListSessions, "/api/sessions").await
            }
            Action::OpenSocket { player, node, pick, transport, play } => {
                let Some(sess) = self.session_of(player, pick) else { return };
                let open = self.sockets.lock().unwrap().iter().filter(|s| s.session == sess.sid).count();
                if open < 3 {
                    self.open_socket(&format!("p{player}"), node, &sess, transport, play, Some(player)).await;
                }
            }
            Action::CloseSocket { player, pick } => {
                let mut sockets = self.sockets.lock().unwrap();
                let mine: Vec<usize> = (0..sockets.len())
                    .filter(|&i| sockets[i].player == Some(player) && sockets[i].close.is_some())
                    .collect();
                if !mine.is_empty() {
                    let chosen = mine[pick as usize % mine.len()];
                    if let Some(close) = sockets[chosen].close.take() {
                        let _ = close.send(());
                    }
                }
            }
            Action::Reconnect { player, node, pick, transport } => {
                let lost = {
                    let state = self.players[player].lock().unwrap();
                    if state.lost.is_empty() {
                        return;
                    }
                    state.lost[pick as usize % state.lost.len()].clone()
                };
                self.open_socket(&format!("p{player}"), node, &lost, transport, false, Some(player)).await;
            }
            Action::Logout { player, node, pick, hang_up } => {
                let Some(sess) = self.session_of(player, pick) else { return };
                let actor = format!("p{player}");
                if hang_up {
                    self.hang_up(&actor, node, OpKind::Logout, &sess, "POST", "/api/auth/logout", None).await;
                } else {
                    self.call(
                        &actor,
                        node,
                        OpKind::Logout,
                        Some(&sess),
                        Method::POST,
                        "/api/auth/logout",
                        None,
                    )
                    .await;
                }
                self.check_later(self.bury(Some(player), &sess.sid)).await;
            }
            Action::LogoutAll { player, node, pick, hang_up } => {
                let Some(sess) = self.session_of(player, pick) else { return };
                let actor = format!("p{player}");
                let path = "/api/auth/logout-all";
                if hang_up {
                    self.hang_up(&actor, node, OpKind::LogoutAll, &sess, "POST", path, None).await;
                    self.check_later(self.bury_player(player)).await;
                } else {
                    let answer = self
                        .call(&actor, node, OpKind::LogoutAll, Some(&sess), Method::POST, path, None)
                        .await;
                    self.after_own_call(player, &sess, &answer);
                    if answer.status() == Some(204) {
                        self.check_later(self.bury_player(player)).await;
                    }
                }
            }
            Action::DeleteSession { player, node, pick, target, hang_up } => {
                let Some(sess) = self.session_of(player, pick) else { return };
                let Some(victim) = self.session_of(player, target) else { return };
                let actor = format!("p{player}");
                let path = format!("/api/sessions/{}", victim.sid);
                let kind = OpKind::DeleteSession { target: victim.sid.clone() };
                if hang_up {
                    self.hang_up(&actor, node, kind, &sess, "DELETE", &path, None).await;
                    self.check_later(self.bury(Some(player), &victim.sid)).await;
                } else {
                    let answer =
                        self.call(&actor, node, kind, Some(&sess), Method::DELETE, &path, None).await;
                    self.after_own_call(player, &sess, &answer);
                    if answer.status() == Some(204) {
                        self.check_later(self.bury(Some(player), &victim.sid)).await;
                    }
                }
            }
            Action::Kick { admin, node, player } => {
                let Some(user) = self.user_id(player) else { return };
                let path = format!("/api/admin/users/{user}/kick");
                let body = json!({"reason": "chaos kick"});
                let answer = self
                    .admin_call(admin, node, OpKind::Kick { user }, Method::POST, &path, Some(body))
                    .await;
                if answer.status() == Some(200) {
                    self.check_later(self.bury_player(player)).await;
                }
            }
            Action::Ban { admin, node, player, until } => {
                let Some(user) = self.user_id(player) else { return };
                let path = format!("/api/admin/users/{user}/ban");
                let until = until.map(|(seconds, offset)| self.until(seconds, offset));
                let mut body = json!({"reason": "chaos ban"});
                if let Some(until) = &until {
                    body["until"] = json!(until.text);
                }
                let kind = OpKind::Ban { user, until };
                let answer = self.admin_call(admin, node, kind, Method::POST, &path, Some(body)).await;
                if answer.status() == Some(200) {
                    self.check_later(self.bury_player(player)).await;
                }
            }
            Action::Unban { admin, node, player } => {
                let Some(user) = self.user_id(player) else { return };
                let path = format!("/api/admin/users/{user}/ban");
                self.admin_call(admin, node, OpKind::Unban { user }, Method::DELETE, &path, None).await;
            }
            Action::RevokeSession { admin, node, player, pick, hang_up } => {
                let Some(victim) = self.session_of(player, pick) else { return };
                let path = format!("/api/admin/sessions/{}/revoke", victim.sid);
                let body = json!({"reason": "chaos revoke"});
                let kind = OpKind::RevokeSession { target: victim.sid.clone() };
                if hang_up {
                    let Some(own) = self.admin_session(admin, node).await else { return };
                    let actor = self.admins[admin].lock().unwrap().name.clone();
                    self.hang_up(&actor, node, kind, &own, "POST", &path, Some(body)).await;
                    self.check_later(self.bury(Some(player), &victim.sid)).await;
                } else {
                    let answer = self.admin_call(admin, node, kind, Method::POST, &path, Some(body)).await;
                    if answer.status() == Some(200) {
                        self.check_later(self.bury(Some(player), &victim.sid)).await;
                    }
                }
            }
            Action::RevokeAll { admin, node } => {
                let body = json!({"reason": "chaos revoke-all"});
                let answer = self
                    .admin_call(
                        admin,
                        node,
                        OpKind::RevokeAll,
                        Method::POST,
                        "/api/admin/revoke-all",
                        Some(body),
                    )
                    .await;
                if answer.status() == Some(200) {
                    let keep = self.admins[admin].lock().unwrap().session.as_ref().map(|s| s.sid.clone());
                    self.bury_everyone(keep.as_deref());
                }
            }
            Action::MassRevokeAll { node } => self.mass_revoke_all(node).await,
            Action::Cut { node, length, mode } => {
                let Some(proxy) = &self.nodes[node].proxy else { return };
                proxy.cut(mode);
                let fault =
                    self.rec.fault_started(node, FaultKind::Cut { mode: format!("{mode:?}").to_lowercase() });
                tokio::time::sleep(length).await;
                self.rec.fault_ended(fault);
                proxy.heal();
            }
            Action::Kill { node, down } => {
                let fault = self.rec.fault_started(node, FaultKind::Down { spawned: None });
                self.nodes[node].kill().await;
                tokio::time::sleep(down).await;
                self.rec.fault_respawning(fault);
                let restarted = self.nodes[node].spawn().await;
                self.rec.fault_ended(fault);
                match restarted {
                    Ok(()) => self.probe_dead(&[node], "restart-probe").await,
                    Err(error) => self.harness_error(error),
                }
            }
            Action::TerminateListener { node } => {
                let backends = self.terminate_listener(node).await;
                let fault = self.rec.fault_started(node, FaultKind::ListenerTerminated { backends });
                self.rec.fault_ended(fault);
            }
        }
    }

    // --- players' state ---------------------------------------------------------

    fn session_of(&self, player: usize, pick: u32) -> Option<Sess> {
        let player = self.players[player].lock().unwrap();
        if player.sessions.is_empty() {
            return None;
        }
        Some(player.sessions[pick as usize % player.sessions.len()].clone())
    }

    fn user_id(&self, player: usize) -> Option<String> {
        self.players[player].lock().unwrap().user_id.clone()
    }

    /// Asks every node about `sessions` once the propagation bound (and a hang-up's
    /// own bound) has passed, so that a revocation that did not hold is seen even if
    /// a later one would have covered it up.
    async fn check_later(&self, sessions: Vec<Sess>) {
        if sessions.is_empty() {
            return;
        }
        tokio::time::sleep(CHECK_AFTER).await;
        for sess in &sessions {
            for node in 0..self.nodes.len() {
                self.call("check", node, OpKind::Me, Some(sess), Method::GET, "/api/me", None).await;
            }
        }
    }

    /// The session is (believed) revoked: forget it, but keep probing it.
    fn bury(&self, player: Option<usize>, sid: &str) -> Vec<Sess> {
        let mut found = None;
        if let Some(player) = player {
            let mut player = self.players[player].lock().unwrap();
            if let Some(i) = player.sessions.iter().position(|s| s.sid == sid) {
                let sess = player.sessions.remove(i);
                player.lose(sess.clone());
                found = Some(sess);
            }
        }
        let mut dead = self.dead.lock().unwrap();
        if let Some(sess) = &found
            && !dead.iter().any(|d| d.sid == sess.sid)
        {
            dead.push(sess.clone());
        }
        found.into_iter().collect()
    }

    fn bury_player(&self, player: usize) -> Vec<Sess> {
        let sessions = {
            let mut player = self.players[player].lock().unwrap();
            let sessions = std::mem::take(&mut player.sessions);
            for sess in &sessions {
                player.lose(sess.clone());
            }
            sessions
        };
        self.dead.lock().unwrap().extend(sessions.iter().cloned());
        sessions
    }

    fn bury_everyone(&self, keep: Option<&str>) {
        for player in 0..self.players.len() {
            let _ = self.bury_player(player);
        }
        for admin in self.admins.iter().chain([&self.mass_admin]) {
            let mut admin = admin.lock().unwrap();
            if admin.session.as_ref().is_some_and(|s| Some(s.sid.as_str()) != keep) {
                let sess = admin.session.take().unwrap();
                self.dead.lock().unwrap().push(sess);
            }
        }
    }

    /// A player's call answered 401/403: the session it used is gone.
    fn after_own_call(&self, player: usize, sess: &Sess, answer: &Answer) {
        if matches!(answer.status(), Some(401 | 403)) {
            let _ = self.bury(Some(player), &sess.sid);
        }
    }

    fn until(&self, seconds: u64, offset: Option<i32>) -> Until {
        use time::format_description::well_known::Rfc3339;
        let utc = (self.rec.wall_now() + Duration::from_secs(seconds)).replace_nanosecond(0).unwrap();
        let text = match offset {
            None => utc.format(&Rfc3339).unwrap(),
            Some(0) => utc.format(&Rfc3339).unwrap().replace('Z', "+00:00"),
            Some(minutes) => {
                let offset = time::UtcOffset::from_whole_seconds(minutes * 60).unwrap();
                utc.to_offset(offset).format(&Rfc3339).unwrap()
            }
        };
        Until { text, utc, at: self.rec.at_wall(utc) }
    }

    // --- calls ------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        actor: &str,
        node: usize,
        kind: OpKind,
        session: Option<&Sess>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let Some(base) = self.nodes[node].base() else { return Answer::Skipped };
        let mut request = self.http.request(method, format!("{base}{path}"));
        if let Some(sess) = session {
            request = request.bearer_auth(&sess.access);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let is_register = matches!(kind, OpKind::Register { .. });
        let op = self.rec.begin(actor, node, kind, session.map(|s| s.sid.as_str()));
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let error = body["error"].as_str().map(str::to_owned);
                let user = body["user"]["id"].as_str().map(str::to_owned);
                let issued = match (status, body["session_id"].as_str(), user) {
                    (200, Some(sid), Some(user)) => Some(Issued { session: sid.to_owned(), user }),
                    (201, _, Some(user)) if is_register => Some(Issued { session: String::new(), user }),
                    _ => None,
                };
                let ban_until =
                    (error.as_deref() == Some("banned")).then(|| body["until"].as_str().map(str::to_owned));
                self.rec.finish(op, Outcome::Http { status, error, issued, ban_until });
                Answer::Http { status, body }
            }
            Err(error) => {
                self.rec.finish(op, Outcome::Failed(describe_error(&error)));
                Answer::Failed
            }
        }
    }

    /// Writes the whole request on a connection of its own and resets it at once:
    /// the server sees its client vanish right after the request.
    #[allow(clippy::too_many_arguments)]
    async fn hang_up(
        &self,
        actor: &str,
        node: usize,
        kind: OpKind,
        sess: &Sess,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) {
        let Some(addr) = self.nodes[node].addr() else { return };
        let request = raw_request(method, path, &addr, &sess.access, body.as_ref());
        let op = self.rec.begin(actor, node, kind, Some(&sess.sid));
        let outcome = match send_and_reset(&addr, request.as_bytes()).await {
            Ok(()) => Outcome::HungUp,
            Err(error) => Outcome::Failed(error.to_string()),
        };
        self.rec.finish(op, outcome);
    }

    async fn register(&self, player: usize, node: usize) {
        let name = {
            let player = self.players[player].lock().unwrap();
            if player.registered {
                return;
            }
            player.name.clone()
        };
        let body = json!({"username": name, "password": PASSWORD});
        let kind = OpKind::Register { username: name };
        let answer =
            self.call("setup", node, kind, None, Method::POST, "/api/auth/register", Some(body)).await;
        if let Answer::Http { status: 201, body } = answer {
            let mut player = self.players[player].lock().unwrap();
            player.registered = true;
            player.user_id = body["user"]["id"].as_str().map(str::to_owned);
        }
    }

    async fn login_as(&self, actor: &str, name: &str, node: usize) -> Option<Sess> {
        let body = json!({"username": name, "password": PASSWORD});
        let kind = OpKind::Login { username: name.to_owned() };
        match self.call(actor, node, kind, None, Method::POST, "/api/auth/login", Some(body)).await {
            Answer::Http { status: 200, body } => Some(Sess {
                sid: body["session_id"].as_str()?.to_owned(),
                access: body["access_token"].as_str()?.to_owned(),
                refresh: body["refresh_token"].as_str().map(str::to_owned),
            }),
            _ => None,
        }
    }

    async fn login(&self, player: usize, node: usize) {
        let name = {
            let player = self.players[player].lock().unwrap();
            if !player.registered {
                return;
            }
            player.name.clone()
        };
        if let Some(sess) = self.login_as(&format!("p{player}"), &name, node).await {
            let mut player = self.players[player].lock().unwrap();
            player.sessions.push(sess);
            // A player keeps a few sessions; older ones are simply forgotten.
            if player.sessions.len() > 4 {
                player.sessions.remove(0);
            }
        }
    }

    async fn read(&self, player: usize, node: usize, pick: u32, kind: OpKind, path: &str) {
        let Some(sess) = self.session_of(player, pick) else { return };
        let answer = self.call(&format!("p{player}"), node, kind, Some(&sess), Method::GET, path, None).await;
        self.after_own_call(player, &sess, &answer);
    }

    async fn refresh(self: &Arc<Self>, player: usize, node: usize, pick: u32, twice: bool) {
        let (sess, token) = {
            let mut state = self.players[player].lock().unwrap();
            if state.sessions.is_empty() {
                return;
            }
            let n = pick as usize % state.sessions.len();
            let Some(token) = state.sessions[n].refresh.take() else { return };
            (state.sessions[n].clone(), token)
        };
        let nodes = self.nodes.len();
        let attempts = if twice { vec![node, (node + 1) % nodes] } else { vec![node] };
        let calls = attempts.into_iter().map(|node| {
            let (run, sess, token) = (self.clone(), sess.clone(), token.clone());
            async move {
                let kind = OpKind::Refresh { token: fingerprint(&token) };
                let body = json!({"refresh_token": token});
                run.call(
                    &format!("p{player}"),
                    node,
                    kind,
                    Some(&sess),
                    Method::POST,
                    "/api/auth/refresh",
                    Some(body),
                )
                .await
            }
        });
        let answers = futures_util::future::join_all(calls).await;
        let mut state = self.players[player].lock().unwrap();
        let Some(held) = state.sessions.iter_mut().find(|s| s.sid == sess.sid) else { return };
        let mut refused = false;
        for answer in answers {
            match answer {
                Answer::Http { status: 200, body } => {
                    if let (Some(access), Some(refresh)) =
                        (body["access_token"].as_str(), body["refresh_token"].as_str())
                    {
                        held.access = access.to_owned();
                        held.refresh = Some(refresh.to_owned());
                    }
                }
                Answer::Http { status: 401 | 403, .. } => refused = true,
                _ => {}
            }
        }
        if held.refresh.is_none() && !refused {
            // Unanswered: the token may or may not have been rotated; use it again
            // later (a reuse, if it was), as a client that retries would.
            held.refresh = Some(token);
        }
        drop(state);
        if refused {
            let _ = self.bury(Some(player), &sess.sid);
        }
    }

    /// The admin's session, logging in on `node` if it has none.
    async fn admin_session(&self, admin: usize, node: usize) -> Option<Sess> {
        let (name, session) = {
            let admin = self.admins[admin].lock().unwrap();
            (admin.name.clone(), admin.session.clone())
        };
        if session.is_some() {
            return session;
        }
        let sess = self.login_as(&name, &name, node).await?;
        self.admins[admin].lock().unwrap().session = Some(sess.clone());
        Some(sess)
    }

    async fn admin_call(
        &self,
        admin: usize,
        node: usize,
        kind: OpKind,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let Some(sess) = self.admin_session(admin, node).await else { return Answer::Skipped };
        let name = self.admins[admin].lock().unwrap().name.clone();
        let answer = self.call(&name, node, kind, Some(&sess), method, path, body).await;
        if answer.status() == Some(401) {
            let mut state = self.admins[admin].lock().unwrap();
            if state.session.as_ref().is_some_and(|s| s.sid == sess.sid) {
                state.session = None;
            }
            drop(state);
            self.dead.lock().unwrap().push(sess);
        }
        answer
    }

    // --- sockets ----------------------------------------------------------------

    /// Upgrades with `transport`; on `welcome`, a task reads (and records) every
    /// frame, pings every 300 ms and, when `play`, joins a room and sends an input
    /// every 100 ms.
    async fn open_socket(
        self: &Arc<Self>,
        actor: &str,
        node: usize,
        sess: &Sess,
        transport: Transport,
        play: bool,
        player: Option<usize>,
    ) -> Option<SocketId> {
        let addr = self.nodes[node].addr()?;
        let query = match transport {
            Transport::Query => format!("?access_token={}", sess.access),
            _ => String::new(),
        };
        let mut request = format!("ws://{addr}/ws{query}").into_client_request().unwrap();
        match transport {
            Transport::Header => {
                let value = HeaderValue::from_str(&format!("Bearer {}", sess.access)).unwrap();
                request.headers_mut().insert("authorization", value);
            }
            Transport::Subprotocol => {
                let value =
                    HeaderValue::from_str(&format!("tether.v1, tether.bearer.{}", sess.access)).unwrap();
                request.headers_mut().insert("sec-websocket-protocol", value);
            }
            Transport::Query => {}
        }
        let op = self.rec.begin(actor, node, OpKind::Upgrade { transport }, Some(&sess.sid));
        let mut ws = match tokio::time::timeout(CALL_BOUND, tokio_tungstenite::connect_async(request)).await {
            Err(_) => {
                self.rec.finish(op, Outcome::Failed("no upgrade answer in time".into()));
                return None;
            }
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let body: Value = response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                let error = body["error"].as_str().map(str::to_owned);
                self.rec.finish(op, Outcome::Http { status, error, issued: None, ban_until: None });
                return None;
            }
            Ok(Err(error)) => {
                self.rec.finish(op, Outcome::Failed(format!("upgrade: {error}")));
                return None;
            }
            Ok(Ok((ws, _))) => ws,
        };
        let first = loop {
            match tokio::time::timeout(CALL_BOUND, ws.next()).await {
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                other => break other,
            }
        };
        let socket = match first {
            Ok(Some(Ok(Message::Text(text)))) if frame_type(&text).as_deref() == Some("welcome") => {
                self.rec.socket_opened(op, node, &sess.sid)
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                let (code, reason) =
                    frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                self.rec.finish(op, Outcome::Closed { code, reason });
                return None;
            }
            Ok(Some(Ok(other))) => {
                self.rec.finish(op, Outcome::Failed(format!("first frame was not welcome: {other:?}")));
                return None;
            }
            Ok(Some(Err(error))) => {
                self.rec.finish(op, Outcome::Failed(format!("socket: {error}")));
                return None;
            }
            Ok(None) => {
                self.rec.finish(op, Outcome::Failed("connection ended before welcome".into()));
                return None;
            }
            Err(_) => {
                self.rec.finish(op, Outcome::Failed("no welcome in time".into()));
                return None;
            }
        };
        let (close, closed) = oneshot::channel();
        self.sockets.lock().unwrap().push(SocketEntry {
            session: sess.sid.clone(),
            player,
            close: Some(close),
        });
        let task =
            tokio::spawn(socket_loop(self.rec.clone(), socket, ws, play, self.stop.subscribe(), closed));
        self.socket_tasks.lock().unwrap().push(task);
        Some(socket)
    }

    // --- the mass revocation ----------------------------------------------------

    async fn mass_revoke_all(self: &Arc<Self>, node: usize) {
        let nodes = self.nodes.len();
        let gate = Arc::new(Semaphore::new(16));
        let mut logins = Vec::new();
        for n in 0..self.settings.mass_sessions {
            let (run, gate) = (self.clone(), gate.clone());
            let name = self.bulk_users[n % self.bulk_users.len()].clone();
            logins.push(tokio::spawn(async move {
                let _turn = gate.acquire().await;
                run.login_as(MASS_BULK, &name, n % nodes).await
            }));
        }
        let mut sessions = Vec::new();
        for login in logins {
            if let Ok(Some(sess)) = login.await {
                sessions.push(sess);
            }
        }
        // Their sockets sit on the other nodes, where only the log can close them.
        for (n, sess) in sessions.iter().take(self.settings.mass_sockets).enumerate() {
            let on = if nodes > 1 { (node + 1 + n % (nodes - 1)) % nodes } else { node };
            self.open_socket(MASS_BULK, on, sess, Transport::Header, false, None).await;
        }
        let own = {
            let existing = self.mass_admin.lock().unwrap().session.clone();
            match existing {
                Some(sess) => Some(sess),
                None => self.login_as(MASS_ADMIN, MASS_ADMIN, node).await,
            }
        };
        let Some(own) = own else {
            self.harness_error("the mass admin could not log in".into());
            return;
        };
        self.mass_admin.lock().unwrap().session = Some(own.clone());
        let body = json!({"reason": "mass revocation"});
        let path = "/api/admin/revoke-all";
        let answer =
            self.call(MASS_ADMIN, node, OpKind::RevokeAll, Some(&own), Method::POST, path, Some(body)).await;
        if answer.status() != Some(200) {
            return;
        }
        self.bury_everyone(Some(&own.sid));
        self.dead.lock().unwrap().extend(sessions.iter().cloned());
        let deadline = tokio::time::Instant::now() + MASS_POLL_BOUND;
        let gate = Arc::new(Semaphore::new(24));
        let mut polls = Vec::new();
        for sess in sessions {
            for target in 0..nodes {
                let (run, gate, sess) = (self.clone(), gate.clone(), sess.clone());
                polls.push(tokio::spawn(async move {
                    loop {
                        let answer = {
                            let _turn = gate.acquire().await;
                            run.call(
                                "mass-probe",
                                target,
                                OpKind::Me,
                                Some(&sess),
                                Method::GET,
                                "/api/me",
                                None,
                            )
                            .await
                        };
                        if answer.status() == Some(401) || tokio::time::Instant::now() >= deadline {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }));
            }
        }
        for poll in polls {
            let _ = poll.await;
        }
    }

    // --- probes and the end -----------------------------------------------------

    /// Asks `nodes` about every session this run believes revoked: by HTTP, and a few
    /// by upgrade.
    async fn probe_dead(self: &Arc<Self>, nodes: &[usize], actor: &'static str) {
        let dead: Vec<Sess> = self.dead.lock().unwrap().clone();
        let gate = Arc::new(Semaphore::new(16));
        let mut probes = Vec::new();
        for &node in nodes {
            for (n, sess) in dead.iter().rev().enumerate() {
                let (run, gate, sess) = (self.clone(), gate.clone(), sess.clone());
                probes.push(tokio::spawn(async move {
                    let _turn = gate.acquire().await;
                    run.call(actor, node, OpKind::Me, Some(&sess), Method::GET, "/api/me", None).await;
                    if n < 6 {
                        let transport = [Transport::Header, Transport::Subprotocol, Transport::Query][n % 3];
                        run.open_socket(actor, node, &sess, transport, false, None).await;
                    }
                }));
            }
        }
        for probe in probes {
            let _ = probe.await;
        }
    }

    /// Every node up, the last revocations given time to spread, every revoked
    /// session probed on every node, every socket closed.
    async fn finish(self: &Arc<Self>) {
        for node in &self.nodes {
            if node.addr().is_none()
                && let Err(error) = node.spawn().await
            {
                self.harness_error(error);
            }
        }
        // The last revocations may be up to the propagation bound old: let it pass,
        // so that every probe below is held to "refuse".
        tokio::time::sleep(Duration::from_millis(2600)).await;
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.probe_dead(&all, "final-probe").await;
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.socket_tasks.lock().unwrap());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for task in tasks {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                self.harness_error("socket tasks did not end within 10 s of the stop".into());
                break;
            }
        }
    }

    async fn terminate_listener(&self, node: usize) -> usize {
        use sqlx::Connection as _;
        let Ok(mut pg) = sqlx::PgConnection::connect(&self.db_url).await else { return 0 };
        let name = format!("tether-listener-{}", self.nodes[node].name);
        let terminated: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND datname = current_database()",
        )
        .bind(name)
        .fetch_all(&mut pg)
        .await
        .unwrap_or_default();
        terminated.len()
    }
}

fn describe_error(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn frame_type(text: &str) -> Option<String> {
    let value: Value = serde_json::from_str(text).ok()?;
    value["type"].as_str().map(str::to_owned)
}

/// An HTTP/1.1 request as bytes, Bearer token and optional JSON body.
pub fn raw_request(method: &str, path: &str, host: &str, token: &str, body: Option<&Value>) -> String {
    let body = body.map(Value::to_string).unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Connects, writes `request` in full, and resets the connection (SO_LINGER 0): the
/// server has the whole request and then finds its client gone.
pub async fn send_and_reset(addr: &str, request: &[u8]) -> std::io::Result<()> {
    let mut stream = tokio::time::timeout(CALL_BOUND, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.write_all(request).await?;
    stream.set_zero_linger()?;
    drop(stream);
    Ok(())
}

async fn socket_loop(
    rec: Arc<Recorder>,
    socket: SocketId,
    mut ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    play: bool,
    mut stop: watch::Receiver<bool>,
    mut closed_by_client: oneshot::Receiver<()>,
) {
    let mut ping = tokio::time::interval(Duration::from_millis(300));
    let mut input = tokio::time::interval(Duration::from_millis(100));
    // inputs[seq] is when input `seq` was sent.
    let mut inputs = vec![crate::history::At(0)];
    let mut join_sent = None;
    let mut me: Option<u64> = None;
    if play {
        join_sent = Some(rec.now());
        let _ = ws.send(Message::text(json!({"type": "join", "room": "chaos"}).to_string())).await;
    }
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let kind = value["type"].as_str().unwrap_or("?").to_owned();
                    let caused_by = match kind.as_str() {
                        "pong" => value["t"].as_u64().map(crate::history::At::from_millis),
                        "joined" => {
                            me = value["you"].as_u64();
                            join_sent
                        }
                        "snapshot" => value["players"]
                            .as_array()
                            .and_then(|players| players.iter().find(|p| p["id"].as_u64() == me))
                            .and_then(|mine| mine["ack"].as_u64())
                            .filter(|&ack| ack > 0)
                            .and_then(|ack| inputs.get(ack as usize).copied()),
                        _ => None,
                    };
                    rec.frame(socket, &kind, caused_by);
                }
                Some(Ok(Message::Binary(_))) => rec.frame(socket, "binary", None),
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) =
                        frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                    rec.socket_ended(socket, End::Closed { code, reason });
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    rec.socket_ended(socket, End::Broken(error.to_string()));
                    return;
                }
                None => {
                    rec.socket_ended(socket, End::Broken("ended without a close frame".into()));
                    return;
                }
            },
            _ = ping.tick() => {
                let t = rec.now().millis();
                let _ = ws.send(Message::text(format!(r#"{{"type":"ping","t":{t}}}"#))).await;
            }
            _ = input.tick(), if play && me.is_some() => {
                let seq = inputs.len();
                inputs.push(rec.now());
                let frame = json!({"type": "input", "seq": seq, "dx": if seq % 40 < 20 { 1 } else { -1 }, "dy": 0});
                let _ = ws.send(Message::text(frame.to_string())).await;
            }
            _ = stop.changed() => break,
            _ = &mut closed_by_client => break,
        }
    }
    rec.socket_ended(socket, End::ByClient);
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule_every_time() {
        let settings = Settings {
            seed: 42,
            duration: Duration::from_secs(60),
            players: 4,
            late_players: 2,
            mass_sessions: 20,
            mass_sockets: 4,
        };
        let one = format!("{:?}", plan(&CLUSTER, &settings));
        let two = format!("{:?}", plan(&CLUSTER, &settings));
        assert_eq!(one, two);
        let other = format!("{:?}", plan(&CLUSTER, &Settings { seed: 43, ..settings.clone() }));
        assert_ne!(one, other);
        let steps = plan(&CLUSTER, &settings);
        assert_eq!(steps.iter().filter(|s| matches!(s.action, Action::MassRevokeAll { .. })).count(), 1);
        assert!(steps.iter().any(|s| matches!(s.action, Action::Cut { .. })), "{}", describe_plan(&steps));
        assert!(steps.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn seeds_are_read_in_decimal_or_hex() {
        assert_eq!(parse_seed("0x2a"), Some(42));
        assert_eq!(parse_seed(" 42 "), Some(42));
        assert_eq!(parse_seed("forty-two"), None);
    }
}
