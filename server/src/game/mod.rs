//! The game: rooms, each a task that owns its [`world::World`] and ticks it at a
//! fixed rate while anyone is inside (an empty room waits on its command channel
//! and costs nothing), fanning out one serialized snapshot per tick.

mod room;
pub mod world;

pub use room::{CHAT_MAX_CHARS, JoinError, RoomHandle};

use crate::ws::outbox::Outbox;
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// The room every socket can join without naming one.
pub const LOBBY: &str = "lobby";

#[derive(Debug, Clone)]
pub struct RoomSettings {
    pub capacity: u32,
    pub tick_rate: u32,
    pub max_rooms: usize,
}

/// Every room of this node, created on first join.
#[derive(Clone)]
pub struct Rooms {
    rooms: Arc<DashMap<Arc<str>, RoomHandle>>,
    next_player_id: Arc<AtomicU32>,
    settings: Arc<RoomSettings>,
}

impl Rooms {
    pub fn new(settings: RoomSettings) -> Rooms {
        Rooms {
            rooms: Arc::new(DashMap::new()),
            next_player_id: Arc::new(AtomicU32::new(1)),
            settings: Arc::new(settings),
        }
    }

    /// A player id for a new socket: players are per connection.
    pub fn next_player_id(&self) -> u32 {
        self.next_player_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The room of that name, created (and its task started) if it is new.
    pub fn room(&self, name: &str) -> Result<RoomHandle, JoinError> {
        if !valid_room_name(name) {
            return Err(JoinError::BadName);
        }
        if let Some(room) = self.rooms.get(name) {
            return Ok(room.clone());
        }
        if self.rooms.len() >= self.settings.max_rooms {
            return Err(JoinError::TooManyRooms);
        }
        let name: Arc<str> = name.into();
        Ok(self.rooms.entry(name.clone()).or_insert_with(|| RoomHandle::spawn(name, &self.settings)).clone())
    }

    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

/// 1-32 characters of `a-z 0-9 _ -`.
pub fn valid_room_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// What a room needs to know of a joining socket.
pub struct NewMember {
    pub player: u32,
    pub name: Arc<str>,
    pub outbox: Arc<Outbox>,
}
