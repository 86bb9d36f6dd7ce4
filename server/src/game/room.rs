//! One room: a task that owns the members and the world, takes commands from
//! sockets, and ticks while it has members.

use super::world::World;
use super::{NewMember, RoomSettings};
use crate::limits::TokenBucket;
use crate::ws::outbox::{Outbox, frame};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tether_shared::game;
use tether_shared::ws::{PlayerInfo, PresenceEvent, RATE_LIMITED, ServerMessage};
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
    #[error("the room did not answer")]
    Unavailable,
}

pub(super) enum Command {
    Join { member: NewMember, answer: oneshot::Sender<Result<(), JoinError>> },
    Leave { player: u32, answer: Option<oneshot::Sender<()>> },
    Input { player: u32, seq: u32, dx: f32, dy: f32 },
    Chat { player: u32, text: String },
}

/// A room as sockets see it: a way to send it commands.
#[derive(Clone)]
pub struct RoomHandle {
    pub name: Arc<str>,
    // Unbounded so that a leave from a socket's drop never waits and is never lost;
    // the room drains commands as they come, and per-socket message limits bound
    // what any one client can put in.
    commands: mpsc::UnboundedSender<Command>,
}

impl RoomHandle {
    pub(super) fn spawn(name: Arc<str>, settings: &RoomSettings) -> RoomHandle {
        let (commands, inbox) = mpsc::unbounded_channel();
        let room = Room {
            name: name.clone(),
            capacity: settings.capacity,
            tick_rate: settings.tick_rate.max(1),
            members: HashMap::new(),
            world: World::new(settings.tick_rate.max(1), rand::random()),
        };
        tokio::spawn(room.run(inbox));
        RoomHandle { name, commands }
    }

    /// Enters the room; the room itself sends `joined` (and then snapshots) to the outbox.
    pub async fn join(&self, member: NewMember) -> Result<(), JoinError> {
        let (answer, answered) = oneshot::channel();
        self.commands.send(Command::Join { member, answer }).map_err(|_| JoinError::Unavailable)?;
        tokio::time::timeout(Duration::from_secs(2), answered)
            .await
            .map_err(|_| JoinError::Unavailable)?
            .map_err(|_| JoinError::Unavailable)?
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

    pub fn input(&self, player: u32, seq: u32, dx: f32, dy: f32) {
        let _ = self.commands.send(Command::Input { player, seq, dx, dy });
    }

    pub fn chat(&self, player: u32, text: String) {
        let _ = self.commands.send(Command::Chat { player, text });
    }
}

struct Member {
    name: Arc<str>,
    outbox: Arc<Outbox>,
    chat: TokenBucket,
}

struct Room {
    name: Arc<str>,
    capacity: u32,
    tick_rate: u32,
    members: HashMap<u32, Member>,
    world: World,
}

impl Room {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Command>) {
        let period = Duration::from_secs(1) / self.tick_rate;
        let mut ticker: Option<tokio::time::Interval> = None;
        loop {
            let command = match ticker.as_mut() {
                // Empty: no timer at all, the task sleeps until someone joins.
                None => inbox.recv().await,
                Some(ticker) => tokio::select! {
                    biased;
                    command = inbox.recv() => command,
                    _ = ticker.tick() => {
                        self.tick();
                        continue;
                    }
                },
            };
            let Some(command) = command else { return };
            self.handle(command);
            match (&ticker, self.members.is_empty()) {
                (Some(_), true) => ticker = None,
                (None, false) => {
                    let mut started = tokio::time::interval_at(Instant::now() + period, period);
                    // A late tick is skipped, not bunched: snapshots stay evenly spaced.
                    started.set_missed_tick_behavior(MissedTickBehavior::Skip);
                    ticker = Some(started);
                }
                _ => {}
            }
        }
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
            Command::Input { player, seq, dx, dy } => {
                self.world.queue_input(player, seq, dx, dy);
            }
            Command::Chat { player, text } => self.chat(player, text),
        }
    }

    fn join(&mut self, member: NewMember) -> Result<(), JoinError> {
        if self.members.contains_key(&member.player) {
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

    fn tick(&mut self) {
        let started = std::time::Instant::now();
        self.world.advance();
        let snapshot = frame(&ServerMessage::Snapshot {
            room: self.name.to_string(),
            tick: self.world.tick(),
            players: self.world.players(),
            items: self.world.items().to_vec(),
        });
        for member in self.members.values() {
            member.outbox.push(snapshot.clone());
        }
        crate::telemetry::metrics::tick(started.elapsed());
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

    fn member(player: u32, name: &str) -> (NewMember, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(64, 100));
        (NewMember { player, name: name.into(), outbox: outbox.clone() }, outbox)
    }

    async fn next(queued: &mut Arc<Outbox>) -> serde_json::Value {
        match tokio::time::timeout(Duration::from_secs(2), queued.next()).await.unwrap() {
            crate::ws::outbox::Outgoing::Frame(frame) => serde_json::from_str(frame.as_str()).unwrap(),
            crate::ws::outbox::Outgoing::TooSlow => panic!("a member was found slow"),
        }
    }

    fn settings(capacity: u32) -> RoomSettings {
        RoomSettings { capacity, tick_rate: 20, max_rooms: 10 }
    }

    #[tokio::test]
    async fn members_see_each_other_arrive_and_get_the_same_snapshots() {
        let room = RoomHandle::spawn("arena".into(), &settings(2));
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

        room.input(1, 1, 1.0, 0.0);
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
        let room = RoomHandle::spawn("talk".into(), &settings(8));
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
}
