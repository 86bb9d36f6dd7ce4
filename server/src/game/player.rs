//! One socket's player: how it answers the game's client messages. No network
//! here: the socket task hands it each text frame, and it answers through the
//! socket's outbox, so the game is tested without a connection.

use super::{CHAT_MAX_CHARS, JoinError, LOBBY, NewMember, RoomHandle, Rooms};
use crate::ws::outbox::{Outbox, frame};
use std::sync::Arc;
use tether_shared::UserId;
use tether_shared::game::direction;
use tether_shared::ws::{
    BAD_MESSAGE, BadMessage, ClientMessage, Encoding, NOT_IN_ROOM, RATE_LIMITED, ROOM_FULL, ROOM_UNAVAILABLE,
    ServerMessage, pong_frame,
};

/// How many times a join is retried when its room ended as the player arrived.
const JOIN_ATTEMPTS: usize = 3;

/// Why a player's socket must end.
#[derive(Debug, PartialEq, Eq)]
pub enum PlayerEnd {
    /// More bad frames than allowed (close 1008).
    TooManyBadFrames,
}

pub struct Player {
    id: u32,
    user: UserId,
    name: Arc<str>,
    rooms: Rooms,
    room: Option<RoomHandle>,
    outbox: Arc<Outbox>,
    bad_frames: u32,
    max_bad_frames: u32,
}

impl Player {
    pub fn new(user: UserId, name: &str, rooms: Rooms, outbox: Arc<Outbox>, max_bad_frames: u32) -> Player {
        Player {
            id: rooms.next_player_id(),
            user,
            name: name.into(),
            rooms,
            room: None,
            outbox,
            bad_frames: 0,
            max_bad_frames,
        }
    }

    /// Answers one text frame.
    pub async fn handle(&mut self, text: &str) -> Result<(), PlayerEnd> {
        let message = match ClientMessage::decode(text) {
            Ok(message) => message,
            Err(bad) => return self.bad(bad),
        };
        match message {
            ClientMessage::Ping { t } => {
                self.outbox.push(pong_frame(&t).into());
            }
            ClientMessage::Join { room, encoding } => {
                self.join(room.as_deref().unwrap_or(LOBBY), encoding.unwrap_or_default()).await?
            }
            ClientMessage::Leave {} => match self.room.take() {
                Some(room) => room.leave(self.id).await,
                None => self.error(NOT_IN_ROOM, "not in a room"),
            },
            ClientMessage::Input { seq, dx, dy, ack } => {
                if direction(dx, dy).is_none() {
                    return self.bad(BadMessage("input: dx and dy are numbers in [-1, 1]"));
                }
                match &self.room {
                    Some(room) => room.input(self.id, seq, dx, dy, ack),
                    None => self.error(NOT_IN_ROOM, "join a room first"),
                }
            }
            ClientMessage::Ack { tick } => match &self.room {
                Some(room) => room.ack(self.id, tick),
                None => self.error(NOT_IN_ROOM, "join a room first"),
            },
            ClientMessage::Chat { text } => {
                let text = text.trim();
                if text.is_empty() || text.chars().count() > CHAT_MAX_CHARS {
                    return self.bad(BadMessage("chat: text of 1 to 200 characters"));
                }
                match &self.room {
                    Some(room) => room.chat(self.id, text.to_owned()),
                    None => self.error(NOT_IN_ROOM, "join a room first"),
                }
            }
        }
        Ok(())
    }

    /// A binary frame from the client: the contract has none.
    pub fn binary_frame(&mut self) -> Result<(), PlayerEnd> {
        self.bad(BadMessage("binary frames are not used: send JSON text"))
    }

    /// Enters a room; on success leaves the one it was in, so a full room leaves the
    /// player where they were. Joining the room it is in changes only the encoding.
    async fn join(&mut self, name: &str, encoding: Encoding) -> Result<(), PlayerEnd> {
        for _ in 0..JOIN_ATTEMPTS {
            let room = match self.room.as_ref() {
                Some(room) if &*room.name == name => room.clone(),
                _ => match self.rooms.room(name, self.user) {
                    Ok(room) => room,
                    Err(JoinError::BadName) => {
                        return self.bad(BadMessage("room names are 1-32 characters of a-z 0-9 _ -"));
                    }
                    Err(JoinError::CreatingTooFast) => {
                        self.error(RATE_LIMITED, &JoinError::CreatingTooFast.to_string());
                        return Ok(());
                    }
                    Err(other) => {
                        self.error(ROOM_UNAVAILABLE, &other.to_string());
                        return Ok(());
                    }
                },
            };
            let member =
                NewMember { player: self.id, name: self.name.clone(), outbox: self.outbox.clone(), encoding };
            match room.join(member).await {
                Ok(()) => {
                    if let Some(previous) = self.room.replace(room.clone())
                        && previous.id != room.id
                    {
                        previous.leave(self.id).await;
                    }
                    return Ok(());
                }
                // Its room ended just now: the registry no longer has it, so the
                // next attempt makes a fresh one.
                Err(JoinError::Ended) => {
                    if self.room.as_ref().is_some_and(|current| current.id == room.id) {
                        self.room = None;
                    }
                }
                Err(JoinError::Full) => {
                    self.error(ROOM_FULL, "this room is full");
                    return Ok(());
                }
                Err(other) => {
                    self.error(ROOM_UNAVAILABLE, &other.to_string());
                    return Ok(());
                }
            }
        }
        self.error(ROOM_UNAVAILABLE, &JoinError::Unavailable.to_string());
        Ok(())
    }

    /// Answers a frame it cannot use; too many of them end the socket.
    fn bad(&mut self, bad: BadMessage) -> Result<(), PlayerEnd> {
        self.bad_frames += 1;
        if self.bad_frames > self.max_bad_frames {
            return Err(PlayerEnd::TooManyBadFrames);
        }
        self.error(BAD_MESSAGE, bad.0);
        Ok(())
    }

    fn error(&self, code: &str, message: &str) {
        self.outbox.push(frame(&ServerMessage::Error { code: code.to_owned(), message: message.to_owned() }));
    }
}

impl Drop for Player {
    /// A socket that goes away leaves its room without waiting.
    fn drop(&mut self) {
        if let Some(room) = self.room.take() {
            room.leave_now(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::RoomSettings;
    use crate::ws::outbox::{Outgoing, Payload};
    use std::time::Duration;

    fn rooms() -> Rooms {
        Rooms::new(RoomSettings {
            capacity: 8,
            tick_rate: 20,
            max_rooms: 10,
            grace: Duration::from_secs(10),
            max_rooms_per_user: 3,
            room_creations_per_user_per_minute: 0,
        })
    }

    async fn next(outbox: &Outbox) -> Payload {
        match tokio::time::timeout(Duration::from_secs(2), outbox.next()).await.expect("a frame in time") {
            Outgoing::Frame(frame) => frame.payload,
            Outgoing::TooSlow => panic!("slow"),
        }
    }

    #[tokio::test]
    async fn a_player_joins_with_binary_frames_and_leaves_its_room_when_dropped() {
        let rooms = rooms();
        let outbox = Arc::new(Outbox::new(64, 100));
        let mut player = Player::new(UserId::new_random(), "ann", rooms.clone(), outbox.clone(), 3);
        player.handle(r#"{"type":"join","room":"arena","encoding":"binary"}"#).await.unwrap();
        let Payload::Text(joined) = next(&outbox).await else { panic!("joined comes as text") };
        assert!(joined.as_str().contains(r#""type":"joined""#));
        assert!(matches!(next(&outbox).await, Payload::Binary(_)), "snapshots come as binary frames");
        player.handle(r#"{"type":"ack","tick":1}"#).await.unwrap();

        let other_outbox = Arc::new(Outbox::new(64, 100));
        let mut other = Player::new(UserId::new_random(), "ben", rooms.clone(), other_outbox.clone(), 3);
        other.handle(r#"{"type":"join","room":"arena"}"#).await.unwrap();
        drop(player);
        let left = async {
            loop {
                if let Payload::Text(text) = next(&other_outbox).await
                    && text.as_str().contains(r#""event":"leave""#)
                {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(2), left).await.expect("the room was told ann left");
    }

    #[tokio::test]
    async fn bad_frames_are_answered_until_there_are_too_many() {
        let outbox = Arc::new(Outbox::new(64, 100));
        let mut player = Player::new(UserId::new_random(), "ann", rooms(), outbox.clone(), 2);
        assert_eq!(player.handle("{").await, Ok(()));
        assert_eq!(player.binary_frame(), Ok(()));
        assert_eq!(player.handle(r#"{"type":"ack"}"#).await, Err(PlayerEnd::TooManyBadFrames));
        let Payload::Text(answer) = next(&outbox).await else { panic!("text") };
        assert!(answer.as_str().contains("bad_message"));
    }
}
