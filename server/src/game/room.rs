//! One room: a task that owns the members and the world, takes commands from
//! sockets, ticks while it has members, and ends once it has stayed empty for the
//! grace period.

use super::interest::{Baseline, Cell, HISTORY_TICKS, Interest, cell_of};
use super::world::World;
use super::{NewMember, Registry};
use crate::limits::TokenBucket;
use crate::ws::outbox::{Outbox, Payload, frame};
use axum::body::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tether_shared::UserId;
use tether_shared::game;
use tether_shared::ws::{Encoding, PlayerInfo, PresenceEvent, RATE_LIMITED, ServerMessage};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

/// Longest chat line, in characters.
pub const CHAT_MAX_CHARS: usize = 200;
/// Chat lines a player may send at once, and how fast that allowance comes back.
const CHAT_BURST: u32 = 5;
const CHAT_REFILL_PER_SEC: f32 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("room names are 1-32 characters of a-z 0-9 _ -")]
    BadName,
    #[error("this room is full")]
    Full,
    #[error("too many rooms on this server")]
    TooManyRooms,
    #[error("you have opened too many rooms: join one of them, or wait for an empty one to end")]
    TooManyOfYours,
    #[error("you are opening rooms too fast: wait a little")]
    CreatingTooFast,
    /// The room ended just as the player arrived: a fresh one can be made.
    #[error("the room has ended")]
    Ended,
    #[error("the room did not answer")]
    Unavailable,
}

pub(super) enum Command {
    Join { member: NewMember, answer: oneshot::Sender<Result<(), JoinError>> },
    Leave { player: u32, answer: Option<oneshot::Sender<()>> },
    Chat { player: u32, text: String },
}

/// What a player sends each tick, kept for the room's next tick rather than sent
/// as a command: 20 inputs a second from each of thousands of players would wake
/// the room's task as often, for work that waits for the tick anyway.
enum Control {
    /// `ack`: the newest binary frame the player has applied, if it said.
    Input { player: u32, seq: u32, dx: f32, dy: f32, ack: Option<u32> },
    /// The newest binary frame a player has applied, without an input.
    Ack { player: u32, tick: u32 },
}

/// Controls one tick may gather; past this a flood loses its newest (the world
/// keeps only a few inputs per player anyway).
const MAX_CONTROLS_PER_TICK: usize = 16_384;

#[derive(Default)]
struct Controls(std::sync::Mutex<Vec<Control>>);

impl Controls {
    fn push(&self, control: Control) {
        let mut controls = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if controls.len() < MAX_CONTROLS_PER_TICK {
            controls.push(control);
        }
    }

    /// Everything gathered since the last take, leaving `spare`'s memory in its place.
    fn take(&self, spare: &mut Vec<Control>) {
        let mut controls = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::swap(&mut *controls, spare);
    }
}

/// A room as sockets see it: a way to send it commands.
#[derive(Clone)]
pub struct RoomHandle {
    /// Tells this room from a later one of the same name.
    pub(super) id: u64,
    pub name: Arc<str>,
    // Unbounded so that a leave from a socket's drop never waits and is never lost;
    // the room drains commands as they come, and per-socket message limits bound
    // what any one client can put in.
    commands: mpsc::UnboundedSender<Command>,
    controls: Arc<Controls>,
}

impl RoomHandle {
    pub(super) fn spawn(
        id: u64,
        name: Arc<str>,
        creator: Option<UserId>,
        registry: Arc<Registry>,
    ) -> RoomHandle {
        let settings = registry.settings();
        let (commands, inbox) = mpsc::unbounded_channel();
        let controls = Arc::new(Controls::default());
        let tick_rate = settings.tick_rate.max(1);
        let room = Room {
            id,
            name: name.clone(),
            creator,
            capacity: settings.capacity,
            tick_rate,
            grace: settings.grace,
            members: HashMap::new(),
            world: World::new(tick_rate, rand::random()),
            interest: Interest::default(),
            controls: controls.clone(),
            gathered: Vec::new(),
            registry: registry.clone(),
        };
        crate::telemetry::metrics::room_started();
        tokio::spawn(room.run(inbox));
        RoomHandle { id, name, commands, controls }
    }

    /// Enters the room; the room itself sends `joined` (and then snapshots) to the outbox.
    pub async fn join(&self, member: NewMember) -> Result<(), JoinError> {
        let (answer, answered) = oneshot::channel();
        self.commands.send(Command::Join { member, answer }).map_err(|_| JoinError::Ended)?;
        tokio::time::timeout(Duration::from_secs(2), answered)
            .await
            .map_err(|_| JoinError::Unavailable)?
            .map_err(|_| JoinError::Ended)?
    }

    /// Leaves the room; the room sends `left` to the outbox before it answers.
    pub async fn leave(&self, player: u32) {
        let (answer, answered) = oneshot::channel();
        if self.commands.send(Command::Leave { player, answer: Some(answer) }).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), answered).await;
        }
    }

    /// Leaves without waiting: for a socket that is going away.
    pub fn leave_now(&self, player: u32) {
        let _ = self.commands.send(Command::Leave { player, answer: None });
    }

    /// An input for the next tick, with the acknowledgement it carried: one push, so
    /// the most common message takes the room's lock once.
    pub fn input(&self, player: u32, seq: u32, dx: f32, dy: f32, ack: Option<u32>) {
        self.controls.push(Control::Input { player, seq, dx, dy, ack });
    }

    /// The newest binary frame the player applied, for its next frame's baseline.
    pub fn ack(&self, player: u32, tick: u32) {
        self.controls.push(Control::Ack { player, tick });
    }

    pub fn chat(&self, player: u32, text: String) {
        let _ = self.commands.send(Command::Chat { player, text });
    }
}

struct Member {
    name: Arc<str>,
    outbox: Arc<Outbox>,
    chat: TokenBucket,
    encoding: Encoding,
    /// The newest binary frame the client says it applied (0: none).
    acked: u32,
    /// The ticks and cells of the binary frames sent lately, to find the view an ack names.
    sent: VecDeque<(u64, Cell)>,
}

impl Member {
    /// The view this member's next frame can be a delta from.
    fn baseline(&self) -> Baseline {
        let acked = u64::from(self.acked);
        let &(tick, cell) = self.sent.iter().find(|(tick, _)| *tick == acked)?;
        Some((tick, cell))
    }
}

struct Room {
    id: u64,
    name: Arc<str>,
    creator: Option<UserId>,
    capacity: u32,
    tick_rate: u32,
    grace: Duration,
    members: HashMap<u32, Member>,
    world: World,
    interest: Interest,
    controls: Arc<Controls>,
    /// The controls being applied, and their memory between ticks.
    gathered: Vec<Control>,
    registry: Arc<Registry>,
}

impl Room {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Command>) {
        let period = Duration::from_secs(1) / self.tick_rate;
        let mut ticker: Option<tokio::time::Interval> = None;
        let mut empty_since = Some(Instant::now());
        loop {
            let command = match (ticker.as_mut(), empty_since) {
                (Some(ticker), _) => tokio::select! {
                    biased;
                    command = inbox.recv() => command,
                    _ = ticker.tick() => {
                        self.tick();
                        continue;
                    }
                },
                // Empty: no timer but the end; the task sleeps until someone joins.
                (None, Some(since)) => tokio::select! {
                    command = inbox.recv() => command,
                    _ = tokio::time::sleep_until(since + self.grace) => break,
                },
                (None, None) => inbox.recv().await,
            };
            let Some(command) = command else { break };
            self.handle(command);
            match (&ticker, self.members.is_empty()) {
                (Some(_), true) => {
                    ticker = None;
                    empty_since = Some(Instant::now());
                    self.interest.clear();
                }
                (None, false) => {
                    let mut started = tokio::time::interval_at(Instant::now() + period, period);
                    // A late tick is skipped, not bunched: snapshots stay evenly spaced.
                    started.set_missed_tick_behavior(MissedTickBehavior::Skip);
                    ticker = Some(started);
                    empty_since = None;
                }
                _ => {}
            }
        }
        self.end(inbox).await;
    }

    /// Leaves the registry first, so that a join from now on makes a new room; then
    /// turns away whoever reached this one meanwhile, so that they try again.
    async fn end(self, mut inbox: mpsc::UnboundedReceiver<Command>) {
        self.registry.room_ended(self.id, &self.name, self.creator);
        inbox.close();
        while let Some(command) = inbox.recv().await {
            match command {
                Command::Join { answer, .. } => {
                    let _ = answer.send(Err(JoinError::Ended));
                }
                Command::Leave { answer: Some(answer), .. } => {
                    let _ = answer.send(());
                }
                _ => {}
            }
        }
        crate::telemetry::metrics::room_ended();
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Join { member, answer } => {
                let _ = answer.send(self.join(member));
            }
            Command::Leave { player, answer } => {
                self.leave(player);
                if let Some(answer) = answer {
                    let _ = answer.send(());
                }
            }
            Command::Chat { player, text } => self.chat(player, text),
        }
    }

    fn join(&mut self, member: NewMember) -> Result<(), JoinError> {
        if let Some(already) = self.members.get_mut(&member.player) {
            if already.encoding != member.encoding {
                // What it acknowledged before belongs to the other encoding's frames.
                (already.encoding, already.acked) = (member.encoding, 0);
                already.sent.clear();
            }
            return Ok(());
        }
        if self.members.len() as u32 >= self.capacity {
            return Err(JoinError::Full);
        }
        let me = PlayerInfo { id: member.player, name: member.name.to_string() };
        self.broadcast(&ServerMessage::Presence {
            room: self.name.to_string(),
            event: PresenceEvent::Join,
            player: me,
        });
        self.world.add_player(member.player);
        self.members.insert(
            member.player,
            Member {
                name: member.name,
                outbox: member.outbox.clone(),
                chat: TokenBucket::new(CHAT_BURST, CHAT_REFILL_PER_SEC),
                encoding: member.encoding,
                acked: 0,
                sent: VecDeque::new(),
            },
        );
        member.outbox.push_message(&ServerMessage::Joined {
            room: self.name.to_string(),
            you: member.player,
            capacity: self.capacity,
            world: game::rules(self.tick_rate),
            players: self.player_list(),
        });
        Ok(())
    }

    fn leave(&mut self, player: u32) {
        let Some(member) = self.members.remove(&player) else { return };
        self.world.remove_player(player);
        member.outbox.push_message(&ServerMessage::Left { room: self.name.to_string() });
        self.broadcast(&ServerMessage::Presence {
            room: self.name.to_string(),
            event: PresenceEvent::Leave,
            player: PlayerInfo { id: player, name: member.name.to_string() },
        });
    }

    fn chat(&mut self, player: u32, text: String) {
        let Some(member) = self.members.get_mut(&player) else { return };
        if !member.chat.take() {
            member.outbox.push_message(&ServerMessage::Error {
                code: RATE_LIMITED.to_owned(),
                message: "chat: too many lines; wait a little".to_owned(),
            });
            return;
        }
        let from = PlayerInfo { id: player, name: member.name.to_string() };
        self.broadcast(&ServerMessage::Chat {
            room: self.name.to_string(),
            from,
            text,
            at: crate::store::now(),
        });
    }

    /// Applies what the players sent since the last tick, in the order it came.
    fn apply_controls(&mut self) {
        let mut gathered = std::mem::take(&mut self.gathered);
        self.controls.take(&mut gathered);
        for control in gathered.drain(..) {
            match control {
                Control::Input { player, seq, dx, dy, ack } => {
                    self.world.queue_input(player, seq, dx, dy);
                    if let Some(tick) = ack {
                        self.acknowledge(player, tick);
                    }
                }
                Control::Ack { player, tick } => self.acknowledge(player, tick),
            }
        }
        self.gathered = gathered;
    }

    fn acknowledge(&mut self, player: u32, tick: u32) {
        if let Some(member) = self.members.get_mut(&player) {
            member.acked = tick;
        }
    }

    fn tick(&mut self) {
        let started = std::time::Instant::now();
        self.apply_controls();
        self.world.advance();
        let json_members = self.members.values().filter(|member| member.encoding == Encoding::Json).count();
        if json_members > 0 {
            let snapshot = frame(&ServerMessage::Snapshot {
                room: self.name.to_string(),
                tick: self.world.tick(),
                players: self.world.players(),
                items: self.world.items().to_vec(),
            });
            for member in self.members.values().filter(|member| member.encoding == Encoding::Json) {
                member.outbox.push_snapshot(Payload::Text(snapshot.clone()), started);
            }
        }
        if json_members < self.members.len() {
            self.send_binary(started);
        } else {
            // No one takes binary frames: views kept now would be stale for the next one who does.
            self.interest.clear();
        }
        crate::telemetry::metrics::tick(started.elapsed());
    }

    /// Each binary member gets the frame for its cell from its baseline, encoded
    /// once for everyone who shares both.
    fn send_binary(&mut self, started: std::time::Instant) {
        let tick = self.world.tick();
        let players = self.world.player_entries();
        let cell_of_player = |id: u32| {
            let at = players.binary_search_by_key(&id, |player| player.id).ok()?;
            Some(cell_of(players[at].x, players[at].y))
        };
        let binary = |member: &&Member| member.encoding == Encoding::Binary;
        let viewers: Vec<Cell> = self
            .members
            .iter()
            .filter(|(_, m)| binary(m))
            .filter_map(|(&id, _)| cell_of_player(id))
            .collect();
        self.interest.advance(tick, &players, &self.world.item_entries(), viewers);
        let mut encoded: HashMap<(Cell, Baseline), Bytes> = HashMap::new();
        for (&id, member) in self.members.iter_mut().filter(|(_, m)| m.encoding == Encoding::Binary) {
            let Some(cell) = cell_of_player(id) else { continue };
            let baseline = member.baseline();
            let bytes = match encoded.get(&(cell, baseline)) {
                Some(bytes) => bytes.clone(),
                None => {
                    let Some(frame) = self.interest.frame(cell, baseline) else { continue };
                    let bytes = Bytes::from(frame);
                    encoded.insert((cell, baseline), bytes.clone());
                    bytes
                }
            };
            member.outbox.push_snapshot(Payload::Binary(bytes), started);
            if member.sent.len() == HISTORY_TICKS {
                member.sent.pop_front();
            }
            member.sent.push_back((tick, cell));
        }
        crate::telemetry::metrics::binary_frames_encoded(encoded.len());
    }

    /// One serialization, the same bytes to every member.
    fn broadcast(&self, message: &ServerMessage) {
        let frame = frame(message);
        for member in self.members.values() {
            member.outbox.push(frame.clone());
        }
    }

    fn player_list(&self) -> Vec<PlayerInfo> {
        let mut players: Vec<PlayerInfo> =
            self.members.iter().map(|(&id, m)| PlayerInfo { id, name: m.name.to_string() }).collect();
        players.sort_by_key(|p| p.id);
        players
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::{RoomSettings, Rooms};
    use crate::ws::outbox::Outgoing;
    use tether_shared::snapshot::{self, View};

    fn member_with(player: u32, name: &str, encoding: Encoding) -> (NewMember, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(64, 100));
        (NewMember { player, name: name.into(), outbox: outbox.clone(), encoding }, outbox)
    }

    fn member(player: u32, name: &str) -> (NewMember, Arc<Outbox>) {
        member_with(player, name, Encoding::Json)
    }

    async fn next_payload(queued: &Arc<Outbox>) -> Payload {
        match tokio::time::timeout(Duration::from_secs(2), queued.next()).await.unwrap() {
            Outgoing::Frame(frame) => frame.payload,
            Outgoing::TooSlow => panic!("a member was found slow"),
        }
    }

    async fn next(queued: &mut Arc<Outbox>) -> serde_json::Value {
        loop {
            if let Payload::Text(text) = next_payload(queued).await {
                return serde_json::from_str(text.as_str()).unwrap();
            }
        }
    }

    fn settings(capacity: u32) -> RoomSettings {
        RoomSettings {
            capacity,
            tick_rate: 20,
            max_rooms: 10,
            grace: Duration::from_secs(10),
            max_rooms_per_user: 2,
            room_creations_per_user_per_minute: 0,
        }
    }

    fn user() -> UserId {
        UserId::new_random()
    }

    #[tokio::test]
    async fn members_see_each_other_arrive_and_get_the_same_snapshots() {
        let room = Rooms::new(settings(2)).room("arena", user()).unwrap();
        let (alice, mut alice_frames) = member(1, "alice");
        let (bob, mut bob_frames) = member(2, "bob");
        let (carol, _) = member(3, "carol");
        room.join(alice).await.unwrap();
        assert_eq!(next(&mut alice_frames).await["type"], "joined");
        room.join(bob).await.unwrap();
        let presence = next(&mut alice_frames).await;
        assert_eq!(
            (presence["event"].as_str(), presence["player"]["name"].as_str()),
            (Some("join"), Some("bob"))
        );
        let joined = next(&mut bob_frames).await;
        assert_eq!(joined["players"].as_array().unwrap().len(), 2);
        assert_eq!(room.join(carol).await, Err(JoinError::Full));

        room.input(1, 1, 1.0, 0.0, None);
        let from_alice = loop {
            let frame = next(&mut alice_frames).await;
            if frame["type"] == "snapshot" && frame["players"][0]["ack"] == 1 {
                break frame;
            }
        };
        let from_bob = loop {
            let frame = next(&mut bob_frames).await;
            if frame["type"] == "snapshot" && frame["tick"] == from_alice["tick"] {
                break frame;
            }
        };
        assert_eq!(from_alice, from_bob);
    }

    #[tokio::test]
    async fn chat_fans_out_and_a_flood_is_rate_limited() {
        let room = Rooms::new(settings(8)).room("talk", user()).unwrap();
        let (alice, mut alice_frames) = member(1, "alice");
        room.join(alice).await.unwrap();
        next(&mut alice_frames).await;
        for n in 0..6 {
            room.chat(1, format!("line {n}"));
        }
        let mut lines = 0;
        loop {
            let frame = next(&mut alice_frames).await;
            match frame["type"].as_str() {
                Some("chat") => lines += 1,
                Some("error") => {
                    assert_eq!(frame["code"], "rate_limited");
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(lines, 5);
    }

    /// A binary member gets a full view first, deltas from what it acknowledged
    /// after, and a JSON member beside it keeps its JSON snapshots.
    #[tokio::test]
    async fn a_binary_member_gets_deltas_from_its_acknowledged_view() {
        let room = Rooms::new(settings(8)).room("bits", user()).unwrap();
        let (alice, alice_frames) = member_with(1, "alice", Encoding::Binary);
        let (bob, mut bob_frames) = member(2, "bob");
        room.join(alice).await.unwrap();
        room.join(bob).await.unwrap();
        let mut view = View::default();
        let mut held = HashMap::new();
        let mut baselines = Vec::new();
        while baselines.len() < 6 {
            let Payload::Binary(bytes) = next_payload(&alice_frames).await else { continue };
            let (_, baseline) = snapshot::header(&bytes).unwrap();
            let base = held.get(&baseline).cloned().unwrap_or_default();
            let tick;
            (tick, view) = snapshot::apply(&base, &bytes).unwrap();
            held.insert(tick, view.clone());
            baselines.push((tick, baseline));
            room.input(1, tick, 1.0, 0.0, Some(tick));
        }
        assert_eq!(baselines[0].1, 0, "the first frame is a full view");
        assert!(baselines[1..].iter().all(|&(_, baseline)| baseline != 0), "then deltas: {baselines:?}");
        assert_eq!(view.players.len(), 2);
        assert!(view.players.iter().any(|p| p.id == 1 && p.ack > 0), "its own input is acknowledged");
        loop {
            if next(&mut bob_frames).await["type"] == "snapshot" {
                break;
            }
        }
    }

    /// An acknowledgement of a tick this member was never sent (a future one, a
    /// made-up one) or 0 cannot name a baseline: the next frame is a full view, never a
    /// delta from a view the client does not hold.
    #[tokio::test]
    async fn an_acknowledgement_of_a_frame_never_sent_gets_a_full_view() {
        let room = Rooms::new(settings(8)).room("lies", user()).unwrap();
        let (alice, frames) = member_with(1, "alice", Encoding::Binary);
        room.join(alice).await.unwrap();
        // Alice never acknowledges a frame she got, so every frame must be a full view.
        for claimed in [u32::MAX, 0, 1 << 20] {
            room.ack(1, claimed);
            for _ in 0..3 {
                let bytes = loop {
                    if let Payload::Binary(bytes) = next_payload(&frames).await {
                        break bytes;
                    }
                };
                assert_eq!(snapshot::header(&bytes).unwrap().1, 0, "after an ack of {claimed}");
            }
        }
    }

    /// Cycling through room names cannot take rooms from others: one user's live
    /// rooms are capped, an empty room ends after the grace, and its name is free again.
    #[tokio::test(start_paused = true)]
    async fn a_user_cannot_exhaust_the_rooms_and_an_empty_room_ends_after_the_grace() {
        let rooms = Rooms::new(settings(8));
        let (mallory, alice) = (user(), user());
        let first = rooms.room("m-1", mallory).unwrap();
        rooms.room("m-2", mallory).unwrap();
        assert_eq!(rooms.room("m-3", mallory).err(), Some(JoinError::TooManyOfYours));
        assert!(rooms.room("m-1", mallory).is_ok(), "joining one's own live room is not creating one");
        rooms.room("alices", alice).unwrap();
        assert!(rooms.room(crate::game::LOBBY, mallory).is_ok(), "the lobby is no one's");
        assert_eq!(rooms.len(), 4);

        let (member, _frames) = member(1, "mallory");
        first.join(member).await.unwrap();
        first.leave(1).await;
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(rooms.created_by(mallory), 2, "still within the grace");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ended = async {
            while rooms.created_by(mallory) > 0 || !rooms.is_empty() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(1), ended).await.expect("the empty rooms ended");
        let (late, _) = member_with(2, "late", Encoding::Json);
        assert_eq!(first.join(late).await, Err(JoinError::Ended), "an ended room turns joins away");
        assert!(rooms.room("m-3", mallory).is_ok(), "a user whose rooms ended may open more");
    }

    #[tokio::test]
    async fn creating_rooms_is_rate_limited_per_user() {
        let rooms = Rooms::new(RoomSettings {
            max_rooms_per_user: 0,
            room_creations_per_user_per_minute: 3,
            ..settings(8)
        });
        let (mallory, alice) = (user(), user());
        for n in 0..3 {
            rooms.room(&format!("m-{n}"), mallory).unwrap();
        }
        assert_eq!(rooms.room("m-9", mallory).err(), Some(JoinError::CreatingTooFast));
        assert!(rooms.room("m-0", mallory).is_ok(), "an existing room is not a creation");
        assert!(rooms.room("a-0", alice).is_ok(), "another user is not limited");
    }
}
