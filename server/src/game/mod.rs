//! The game: rooms, each a task that owns its [`world::World`] and ticks it at a
//! fixed rate while anyone is inside, fanning out each tick's snapshot encoded
//! once per distinct frame. An empty room ends after a grace period, so the room
//! limit counts live rooms, and one user's live rooms are capped.

pub mod interest;
mod player;
mod room;
pub mod world;

pub use player::{Player, PlayerEnd};
pub use room::{CHAT_MAX_CHARS, JoinError, RoomHandle};

use crate::limits::{self, Buckets};
use crate::ws::outbox::Outbox;
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use tether_shared::UserId;
use tether_shared::ws::Encoding;

/// The room every socket can join without naming one.
pub const LOBBY: &str = "lobby";

#[derive(Debug, Clone)]
pub struct RoomSettings {
    pub capacity: u32,
    pub tick_rate: u32,
    /// Live rooms on this node (0: no limit).
    pub max_rooms: usize,
    /// How long an empty room lives on, so that a reload or a reconnect finds it.
    pub grace: Duration,
    /// Live rooms one user may have created (0: no limit); the lobby is no one's.
    pub max_rooms_per_user: u32,
    /// Rooms one user may create a minute (0: no limit).
    pub room_creations_per_user_per_minute: u32,
}

/// Every live room of this node, created on first join.
#[derive(Clone)]
pub struct Rooms(Arc<Registry>);

pub(crate) struct Registry {
    rooms: DashMap<Arc<str>, RoomHandle>,
    /// Live rooms by the user who created them.
    created_by: DashMap<UserId, u32>,
    creations: Option<Buckets<UserId>>,
    next_player_id: AtomicU32,
    next_room_id: AtomicU64,
    settings: RoomSettings,
}

impl Rooms {
    pub fn new(settings: RoomSettings) -> Rooms {
        let creations = Buckets::new(settings.room_creations_per_user_per_minute, Duration::from_secs(60));
        Rooms(Arc::new(Registry {
            rooms: DashMap::new(),
            created_by: DashMap::new(),
            creations,
            next_player_id: AtomicU32::new(1),
            next_room_id: AtomicU64::new(1),
            settings,
        }))
    }

    /// A player id for a new socket: players are per connection.
    pub fn next_player_id(&self) -> u32 {
        self.0.next_player_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The live room of that name, created (and its task started) for `user` if
    /// there is none.
    pub fn room(&self, name: &str, user: UserId) -> Result<RoomHandle, JoinError> {
        if !valid_room_name(name) {
            return Err(JoinError::BadName);
        }
        if let Some(room) = self.0.rooms.get(name) {
            return Ok(room.clone());
        }
        let settings = &self.0.settings;
        if settings.max_rooms > 0 && self.0.rooms.len() >= settings.max_rooms {
            return Err(JoinError::TooManyRooms);
        }
        let creator = (name != LOBBY).then_some(user);
        if let Some(user) = creator {
            if settings.max_rooms_per_user > 0 && self.created_by(user) >= settings.max_rooms_per_user {
                return Err(JoinError::TooManyOfYours);
            }
            if limits::take(&self.0.creations, &user).is_err() {
                return Err(JoinError::CreatingTooFast);
            }
        }
        let name: Arc<str> = name.into();
        let room = self
            .0
            .rooms
            .entry(name.clone())
            .or_insert_with(|| {
                if let Some(user) = creator {
                    *self.0.created_by.entry(user).or_insert(0) += 1;
                }
                let id = self.0.next_room_id.fetch_add(1, Ordering::Relaxed);
                RoomHandle::spawn(id, name, creator, self.0.clone())
            })
            .clone();
        Ok(room)
    }

    /// Live rooms.
    pub fn len(&self) -> usize {
        self.0.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.rooms.is_empty()
    }

    /// Live rooms `user` created.
    pub fn created_by(&self, user: UserId) -> u32 {
        self.0.created_by.get(&user).map_or(0, |count| *count)
    }

    /// Drops the creation allowances that have refilled: they limit nothing.
    pub fn forget_idle(&self) {
        if let Some(creations) = &self.0.creations {
            creations.forget_full();
        }
    }
}

impl Registry {
    pub(crate) fn settings(&self) -> &RoomSettings {
        &self.settings
    }

    /// A room's task ends: it leaves the registry (unless a newer room of the same
    /// name already took its place) and stops counting against its creator.
    pub(crate) fn room_ended(&self, id: u64, name: &str, creator: Option<UserId>) {
        self.rooms.remove_if(name, |_, room| room.id == id);
        if let Some(user) = creator {
            self.created_by.remove_if_mut(&user, |_, count| {
                *count = count.saturating_sub(1);
                *count == 0
            });
        }
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
    pub encoding: Encoding,
}
