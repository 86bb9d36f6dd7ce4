//! `play`: N players in rooms of K (player i joins `room-<i / K>`). Once every player
//! is in, each sends `input` at H Hz (seq increasing, a random direction held for a
//! while) and a `ping` a second, for `--duration`. Measures ping → pong round trips,
//! the time from input `n` to the first snapshot with this player's `ack >= n`, the
//! gaps between snapshots as they arrive, and what the server sends (snapshots,
//! bytes). With `--encoding binary` the players take binary delta frames, apply each
//! to the view it names and acknowledge it on their next input.

use super::{CLOSE_PATIENCE, Ctx, check_open_files, join_all, open_paced, settings};
use crate::cli::{PlayArgs, SnapshotEncoding};
use crate::conn::{self, Ws};
use crate::report::Report;
use crate::stats::{Failures, SharedHist};
use crate::{bots, progress};
use anyhow::bail;
use futures_util::StreamExt as _;
use rand::Rng as _;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use tether_shared::snapshot::{self, View};
use tether_shared::ws::{ClientMessage, Encoding, ServerMessage};
use tokio::time::{Instant, MissedTickBehavior, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Inputs waiting for their ack, per player; older ones are given up on past this.
const MAX_PENDING_INPUTS: usize = 4096;
/// Binary views a player keeps, by tick: the baselines the server's next frames may name.
const VIEWS_KEPT: usize = 32;

/// What all players add up, once each, when they finish (or as they go, for the bar).
#[derive(Default)]
struct Totals {
    joined: AtomicU64,
    failed: AtomicU64,
    ended_early: AtomicU64,
    tick_rate: AtomicU32,
    snapshots: AtomicU64,
    missed_ticks: AtomicU64,
    frames: AtomicU64,
    binary_frames: AtomicU64,
    full_frames: AtomicU64,
    bytes: AtomicU64,
    inputs_sent: AtomicU64,
    inputs_acked: AtomicU64,
    inputs_unacked: AtomicU64,
    pings_sent: AtomicU64,
    pongs: AtomicU64,
}

/// The latency distributions every player records into.
#[derive(Clone, Default)]
struct Latencies {
    welcome: SharedHist,
    join: SharedHist,
    rtt: SharedHist,
    input: SharedHist,
    gap: SharedHist,
}

/// What a player task needs, cloned into each.
#[derive(Clone)]
struct Shared {
    totals: Arc<Totals>,
    latencies: Latencies,
    failures: Failures,
    go: CancellationToken,
    stop: CancellationToken,
    /// Ping `t` is microseconds since this instant.
    epoch: Instant,
    hz: f64,
    /// No room, no inputs: pings only.
    pings_only: bool,
    encoding: SnapshotEncoding,
}

pub async fn run(ctx: &Ctx<'_>, args: &PlayArgs, open_files: u64) -> anyhow::Result<Report> {
    let hz_in_range = args.hz > 0.0 && args.hz <= 1000.0;
    if !args.pings_only && !hz_in_range {
        bail!("--hz must be above 0 and at most 1000");
    }
    check_open_files(args.players, open_files);
    let sessions = bots::log_in(ctx, args.sessions.unwrap_or(args.players)).await?;
    let shared = Shared {
        totals: Arc::new(Totals::default()),
        latencies: Latencies::default(),
        failures: ctx.failures.clone(),
        go: CancellationToken::new(),
        stop: CancellationToken::new(),
        epoch: Instant::now(),
        hz: args.hz,
        pings_only: args.pings_only,
        encoding: args.encoding,
    };
    let totals = shared.totals.clone();

    let bar = progress::counter(u64::from(args.players), "join");
    let ticker = progress::live(&bar, false, {
        let totals = totals.clone();
        move || {
            format!(
                "in rooms {} failed {}",
                totals.joined.load(Ordering::Relaxed),
                totals.failed.load(Ordering::Relaxed)
            )
        }
    });
    let patience = args.common.connect_timeout;
    let tasks = open_paced(args.players, args.rate, args.concurrency, |i, permit| {
        let token = sessions[i as usize % sessions.len()].token.clone();
        let target = ctx.target.clone();
        let room = format!("room-{}", i / args.room_size);
        let (shared, bar) = (shared.clone(), bar.clone());
        async move {
            let joined = join(&target, &token, &room, patience, &shared).await;
            bar.inc(1);
            // Counted before the permit goes back: once all are back, the counts are final.
            match joined {
                Ok((ws, you)) => {
                    shared.totals.joined.fetch_add(1, Ordering::Relaxed);
                    drop(permit);
                    play(ws, you, &shared).await;
                }
                Err(kind) => {
                    shared.failures.add(kind);
                    shared.totals.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
    .await;
    drop(ticker);
    bar.finish();

    let joined = totals.joined.load(Ordering::Relaxed);
    let duration = args.common.duration;
    let play_bar = progress::timer(duration, "play");
    let ticker = progress::live(&play_bar, true, {
        let totals = totals.clone();
        move || {
            format!(
                "snapshots {} pongs {} ended {}",
                totals.snapshots.load(Ordering::Relaxed),
                totals.pongs.load(Ordering::Relaxed),
                totals.ended_early.load(Ordering::Relaxed)
            )
        }
    });
    let play_started = Instant::now();
    shared.go.cancel();
    tokio::time::sleep(duration).await;
    shared.stop.cancel();
    let played = play_started.elapsed().as_secs_f64();
    drop(ticker);
    play_bar.finish_and_clear();
    eprintln!("closing {joined} sockets");
    join_all(tasks).await;

    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
    let per_second = |counter: &AtomicU64| load(counter) / played;
    let per_player = |counter: &AtomicU64| if joined > 0 { per_second(counter) / joined as f64 } else { 0.0 };
    let mut report = Report::new("play", settings(args));
    report.figure("players requested", args.players, "");
    report.figure("sessions logged in", sessions.len() as u32, "");
    report.figure("players in rooms (joined received)", joined as f64, "");
    report.figure("rooms", args.players.div_ceil(args.room_size), "");
    report.figure("server tick rate (from joined)", totals.tick_rate.load(Ordering::Relaxed), "/s");
    report.figure("play time", played, "s");
    report.figure("players whose socket ended early", load(&totals.ended_early), "");
    report.figure("snapshots received", load(&totals.snapshots), "");
    report.figure("snapshots per second, all players", per_second(&totals.snapshots), "/s");
    report.figure("snapshots per second per player", per_player(&totals.snapshots), "/s");
    report.figure("ticks missed (gaps in snapshot ticks)", load(&totals.missed_ticks), "");
    report.figure("frames received", load(&totals.frames), "");
    report.figure("binary snapshot frames received", load(&totals.binary_frames), "");
    report.figure("of which full views (baseline 0)", load(&totals.full_frames), "");
    report.figure("bytes received (message payloads)", load(&totals.bytes), "B");
    report.figure("bytes per second, all players", per_second(&totals.bytes), "B/s");
    report.figure("bytes per second per player", per_player(&totals.bytes), "B/s");
    report.figure("inputs asked (players x hz x play time)", joined as f64 * args.hz * played, "");
    report.figure("inputs sent", load(&totals.inputs_sent), "");
    report.figure("inputs acknowledged", load(&totals.inputs_acked), "");
    report.figure("inputs not acknowledged by the end", load(&totals.inputs_unacked), "");
    report.figure("pings sent", load(&totals.pings_sent), "");
    report.figure("pongs received", load(&totals.pongs), "");
    let latencies = &shared.latencies;
    report.latency("ping -> pong", latencies.rtt.snapshot());
    report.latency("input -> acknowledging snapshot", latencies.input.snapshot());
    report.latency("snapshot gap (inter-arrival)", latencies.gap.snapshot());
    report.latency("time to welcome", latencies.welcome.snapshot());
    report.latency("join -> joined", latencies.join.snapshot());
    Ok(report)
}

/// Opens the socket and joins the room; the player's id in it on success.
async fn join(
    target: &crate::target::Target,
    token: &str,
    room: &str,
    patience: Duration,
    shared: &Shared,
) -> Result<(Ws, u32), String> {
    let opened = conn::open(target, token, patience).await?;
    shared.latencies.welcome.record(opened.time_to_welcome);
    let mut ws = opened.ws;
    if shared.pings_only {
        return Ok((ws, 0));
    }
    let deadline = opened.welcomed_at + patience;
    let asked = Instant::now();
    // JSON joins name no encoding, so that a server older than binary frames accepts them.
    let encoding = (shared.encoding == SnapshotEncoding::Binary).then_some(Encoding::Binary);
    conn::send(&mut ws, &ClientMessage::Join { room: Some(room.to_owned()), encoding })
        .await
        .map_err(|error| conn::describe_ws("join", &error))?;
    loop {
        let frame =
            timeout_at(deadline, ws.next()).await.map_err(|_| "join: no joined in time".to_owned())?;
        if let Some(Ok(Message::Text(text))) = &frame {
            match serde_json::from_str::<ServerMessage>(text.as_str()) {
                Ok(ServerMessage::Joined { you, world, .. }) => {
                    shared.latencies.join.record(asked.elapsed());
                    shared.totals.tick_rate.store(world.tick_rate, Ordering::Relaxed);
                    return Ok((ws, you));
                }
                Ok(ServerMessage::Error { code, .. }) => return Err(format!("join: error {code}")),
                _ => continue,
            }
        }
        if let Some(closed) = conn::closed_by(frame) {
            return Err(format!("closed before joined: {}", closed.kind()));
        }
    }
}

/// One player's life in its room: idle until `go` (reading, so as not to look like a
/// slow consumer), then inputs, pings and reading snapshots until `stop`.
async fn play(mut ws: Ws, you: u32, shared: &Shared) {
    loop {
        tokio::select! {
            _ = shared.go.cancelled() => break,
            frame = ws.next() => if let Some(closed) = conn::closed_by(frame) {
                shared.failures.add(format!("closed before play: {}", closed.kind()));
                shared.totals.ended_early.fetch_add(1, Ordering::Relaxed);
                return;
            },
        }
    }
    let mut player = Player::new(you, shared);
    let end = player.run(&mut ws).await;
    player.add_to(&shared.totals);
    match end {
        Some(kind) => {
            shared.failures.add(format!("closed during play: {kind}"));
            shared.totals.ended_early.fetch_add(1, Ordering::Relaxed);
            conn::finish_after_close(&mut ws, Duration::from_secs(1)).await;
        }
        None => {
            conn::close_normally(&mut ws, CLOSE_PATIENCE).await;
        }
    }
}

/// A playing player's state and its own counters (added to the totals once, at the end).
struct Player<'a> {
    you: u32,
    shared: &'a Shared,
    seq: u32,
    direction: (f32, f32),
    turn_at: Instant,
    /// Inputs sent and not yet acknowledged, oldest first.
    pending: VecDeque<(u32, Instant)>,
    last_tick: Option<u64>,
    last_snapshot_at: Option<Instant>,
    /// Binary views by tick, and the newest applied (acknowledged on the next input).
    views: BTreeMap<u32, View>,
    acked: Option<u32>,
    rtt: crate::stats::Recorder,
    input: crate::stats::Recorder,
    gap: crate::stats::Recorder,
    snapshots: u64,
    missed_ticks: u64,
    frames: u64,
    binary_frames: u64,
    full_frames: u64,
    bytes: u64,
    inputs_sent: u64,
    inputs_acked: u64,
    inputs_unacked: u64,
    pings_sent: u64,
    pongs: u64,
}

impl<'a> Player<'a> {
    fn new(you: u32, shared: &'a Shared) -> Player<'a> {
        Player {
            you,
            shared,
            seq: 0,
            direction: random_direction(),
            turn_at: Instant::now() + random_hold(),
            pending: VecDeque::new(),
            last_tick: None,
            last_snapshot_at: None,
            views: BTreeMap::new(),
            acked: None,
            rtt: shared.latencies.rtt.recorder(),
            input: shared.latencies.input.recorder(),
            gap: shared.latencies.gap.recorder(),
            snapshots: 0,
            missed_ticks: 0,
            frames: 0,
            binary_frames: 0,
            full_frames: 0,
            bytes: 0,
            inputs_sent: 0,
            inputs_acked: 0,
            inputs_unacked: 0,
            pings_sent: 0,
            pongs: 0,
        }
    }

    /// Plays until `stop` (`None`) or until the socket ends (`Some(kind)`).
    async fn run(&mut self, ws: &mut Ws) -> Option<String> {
        // Pings only: an input timer that never fires within any bounded run.
        let period = if self.shared.pings_only {
            Duration::from_secs(365 * 86_400)
        } else {
            Duration::from_secs_f64(1.0 / self.shared.hz)
        };
        // Random phases, so that players do not all send in the same instant.
        let mut inputs = tokio::time::interval_at(Instant::now() + period.mul_f64(rand::random()), period);
        inputs.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let second = Duration::from_secs(1);
        let mut pings = tokio::time::interval_at(Instant::now() + second.mul_f64(rand::random()), second);
        pings.set_missed_tick_behavior(MissedTickBehavior::Skip);
        // Pinned once: a fresh `cancelled()` each turn would register with the
        // token's lock anew for every frame.
        let stop = self.shared.stop.clone();
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return None,
                frame = ws.next() => {
                    if let Some(Ok(message)) = &frame {
                        self.receive(message);
                    }
                    if let Some(closed) = conn::closed_by(frame) {
                        return Some(closed.kind());
                    }
                }
                _ = inputs.tick() => {
                    let message = self.next_input();
                    if let Err(error) = conn::send(ws, &message).await {
                        return Some(conn::describe_ws("send", &error));
                    }
                }
                _ = pings.tick() => {
                    let t = self.shared.epoch.elapsed().as_micros() as u64;
                    let t = serde_json::value::to_raw_value(&t).expect("a number serializes");
                    if let Err(error) = conn::send(ws, &ClientMessage::Ping { t }).await {
                        return Some(conn::describe_ws("send", &error));
                    }
                    self.pings_sent += 1;
                }
            }
        }
    }

    fn next_input(&mut self) -> ClientMessage {
        let now = Instant::now();
        if now >= self.turn_at {
            self.direction = random_direction();
            self.turn_at = now + random_hold();
        }
        self.seq += 1;
        self.pending.push_back((self.seq, now));
        if self.pending.len() > MAX_PENDING_INPUTS {
            self.pending.pop_front();
            self.inputs_unacked += 1;
        }
        self.inputs_sent += 1;
        ClientMessage::Input { seq: self.seq, dx: self.direction.0, dy: self.direction.1, ack: self.acked }
    }

    fn receive(&mut self, message: &Message) {
        let text = match message {
            Message::Text(text) => text.as_str(),
            Message::Binary(bytes) => {
                self.frames += 1;
                self.bytes += bytes.len() as u64;
                self.receive_binary(bytes);
                return;
            }
            _ => return,
        };
        self.frames += 1;
        self.bytes += text.len() as u64;
        match serde_json::from_str::<ServerMessage>(text) {
            Ok(ServerMessage::Snapshot { tick, players, .. }) => {
                let me = players.iter().find(|player| player.id == self.you).map(|me| me.ack);
                self.snapshot_arrived(tick, me);
            }
            Ok(ServerMessage::Pong { t }) => {
                if let Some(sent) = t.as_u64() {
                    let rtt = self.shared.epoch.elapsed().saturating_sub(Duration::from_micros(sent));
                    self.rtt.record(rtt);
                    self.pongs += 1;
                }
            }
            Ok(ServerMessage::Error { code, .. }) => self.shared.failures.add(format!("error frame: {code}")),
            // Most likely the server and this build disagree on the shared types.
            Err(error) => self.shared.failures.add(not_understood(&error)),
            _ => {}
        }
    }

    /// A binary frame: applied to the view it names, kept, and acknowledged next.
    fn receive_binary(&mut self, frame: &[u8]) {
        let applied = snapshot::header(frame).and_then(|(_, baseline)| {
            let base = match baseline {
                0 => None,
                _ => Some(self.views.get(&baseline).ok_or(snapshot::FrameError::NotInBaseline)?),
            };
            snapshot::apply(base.unwrap_or(&View::default()), frame).map(|applied| (baseline, applied))
        });
        let (baseline, (tick, view)) = match applied {
            Ok(applied) => applied,
            Err(error) => {
                self.shared.failures.add(format!("binary frame not applied: {error:?}"));
                return;
            }
        };
        self.binary_frames += 1;
        if baseline == 0 {
            self.full_frames += 1;
        }
        let me = view.players.iter().find(|player| player.id == self.you).map(|me| me.ack);
        self.views.insert(tick, view);
        while self.views.len() > VIEWS_KEPT {
            self.views.pop_first();
        }
        self.acked = Some(tick);
        self.snapshot_arrived(u64::from(tick), me);
    }

    /// Counts a snapshot of either encoding; `my_ack`: this player's ack in it.
    fn snapshot_arrived(&mut self, tick: u64, my_ack: Option<u32>) {
        let now = Instant::now();
        self.snapshots += 1;
        if let Some(last) = self.last_snapshot_at.replace(now) {
            self.gap.record(now - last);
        }
        if let Some(last) = self.last_tick
            && tick > last + 1
        {
            self.missed_ticks += tick - last - 1;
        }
        self.last_tick = Some(tick);
        if let Some(ack) = my_ack {
            while let Some(&(seq, sent_at)) = self.pending.front() {
                if seq > ack {
                    break;
                }
                self.input.record(now - sent_at);
                self.inputs_acked += 1;
                self.pending.pop_front();
            }
        }
    }

    fn add_to(&mut self, totals: &Totals) {
        self.inputs_unacked += self.pending.len() as u64;
        self.pending.clear();
        let add = |counter: &AtomicU64, value: u64| counter.fetch_add(value, Ordering::Relaxed);
        add(&totals.snapshots, self.snapshots);
        add(&totals.missed_ticks, self.missed_ticks);
        add(&totals.frames, self.frames);
        add(&totals.binary_frames, self.binary_frames);
        add(&totals.full_frames, self.full_frames);
        add(&totals.bytes, self.bytes);
        add(&totals.inputs_sent, self.inputs_sent);
        add(&totals.inputs_acked, self.inputs_acked);
        add(&totals.inputs_unacked, self.inputs_unacked);
        add(&totals.pings_sent, self.pings_sent);
        add(&totals.pongs, self.pongs);
        self.rtt.flush();
        self.input.flush();
        self.gap.flush();
    }
}

/// `frame not understood: missing field `room``, without the position, so that kinds stay few.
fn not_understood(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let cause = text.split(" at line ").next().unwrap_or_default();
    format!("frame not understood: {cause}")
}

/// A direction of length 1 at a random angle.
fn random_direction() -> (f32, f32) {
    let angle = rand::rng().random_range(0.0..std::f32::consts::TAU);
    (angle.cos(), angle.sin())
}

/// How long a direction is held: half a second to three seconds.
fn random_hold() -> Duration {
    Duration::from_secs_f64(rand::rng().random_range(0.5..3.0))
}
