//! The simulation of one room, pure and synchronous: avatars move by their inputs
//! one tick at a time, walk over items to score, and items respawn elsewhere.
//! No I/O here, so it is tested directly.

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use std::collections::{BTreeMap, VecDeque};
use tether_shared::game::{self, PICKUP_RADIUS, WORLD_HEIGHT, WORLD_WIDTH};
use tether_shared::snapshot::{ItemEntry, PlayerEntry, quantize};
use tether_shared::ws::{ItemState, PlayerState};

/// Items on the floor of a room at any time.
pub const ITEMS_PER_ROOM: usize = 8;
/// Inputs a player may have waiting; beyond, the oldest is dropped (the client's
/// reconciliation absorbs it: the ack moves past it).
pub const MAX_QUEUED_INPUTS: usize = 8;
/// Inputs applied per player per tick: one, plus one to catch up after jitter.
pub const INPUTS_PER_TICK: usize = 2;

struct Avatar {
    x: f32,
    y: f32,
    score: u32,
    /// The last input applied.
    ack: u32,
    /// The last input accepted (queued); older or repeated sequence numbers are ignored.
    newest_seq: u32,
    inputs: VecDeque<(u32, (f32, f32))>,
}

pub struct World {
    tick_rate: u32,
    tick: u64,
    avatars: BTreeMap<u32, Avatar>,
    items: Vec<ItemState>,
    next_item_id: u32,
    rng: StdRng,
}

impl World {
    pub fn new(tick_rate: u32, seed: u64) -> World {
        let mut world = World {
            tick_rate,
            tick: 0,
            avatars: BTreeMap::new(),
            items: Vec::with_capacity(ITEMS_PER_ROOM),
            next_item_id: 1,
            rng: StdRng::seed_from_u64(seed),
        };
        while world.items.len() < ITEMS_PER_ROOM {
            let item = world.new_item();
            world.items.push(item);
        }
        world
    }

    pub fn tick(&self) -> u64 {
        self.tick
    }

    pub fn add_player(&mut self, id: u32) {
        let (x, y) = self.random_point();
        self.avatars.insert(id, Avatar { x, y, score: 0, ack: 0, newest_seq: 0, inputs: VecDeque::new() });
    }

    pub fn remove_player(&mut self, id: u32) {
        self.avatars.remove(&id);
    }

    /// Queues an input for the next ticks. Returns false when it was not used (an
    /// unknown player, an old or repeated `seq`, or a direction out of range).
    pub fn queue_input(&mut self, id: u32, seq: u32, dx: f32, dy: f32) -> bool {
        let (Some(avatar), Some(direction)) = (self.avatars.get_mut(&id), game::direction(dx, dy)) else {
            return false;
        };
        if seq <= avatar.newest_seq {
            return false;
        }
        avatar.newest_seq = seq;
        if avatar.inputs.len() == MAX_QUEUED_INPUTS {
            avatar.inputs.pop_front();
        }
        avatar.inputs.push_back((seq, direction));
        true
    }

    /// Advances one tick: applies queued inputs, scores pickups, respawns items.
    pub fn advance(&mut self) {
        self.tick += 1;
        let radius_squared = PICKUP_RADIUS * PICKUP_RADIUS;
        let mut taken = Vec::new();
        for avatar in self.avatars.values_mut() {
            for _ in 0..INPUTS_PER_TICK {
                let Some((seq, direction)) = avatar.inputs.pop_front() else { break };
                (avatar.x, avatar.y) = game::step(avatar.x, avatar.y, direction, self.tick_rate);
                avatar.ack = seq;
            }
            for (index, item) in self.items.iter().enumerate() {
                let (dx, dy) = (item.x - avatar.x, item.y - avatar.y);
                if dx * dx + dy * dy < radius_squared && !taken.contains(&index) {
                    avatar.score += 1;
                    taken.push(index);
                }
            }
        }
        for index in taken {
            self.items[index] = self.new_item();
        }
    }

    pub fn players(&self) -> Vec<PlayerState> {
        self.avatars
            .iter()
            .map(|(&id, avatar)| PlayerState {
                id,
                x: round_tenth(avatar.x),
                y: round_tenth(avatar.y),
                score: avatar.score,
                ack: avatar.ack,
            })
            .collect()
    }

    pub fn items(&self) -> &[ItemState] {
        &self.items
    }

    /// The players as binary frames carry them: quantized, ascending by id.
    pub fn player_entries(&self) -> Vec<PlayerEntry> {
        self.avatars
            .iter()
            .map(|(&id, avatar)| PlayerEntry {
                id,
                x: quantize(avatar.x),
                y: quantize(avatar.y),
                score: avatar.score,
                ack: avatar.ack,
            })
            .collect()
    }

    /// The items as binary frames carry them, ascending by id.
    pub fn item_entries(&self) -> Vec<ItemEntry> {
        let mut items: Vec<ItemEntry> = self
            .items
            .iter()
            .map(|item| ItemEntry { id: item.id, x: quantize(item.x), y: quantize(item.y) })
            .collect();
        items.sort_unstable_by_key(|item| item.id);
        items
    }

    fn random_point(&mut self) -> (f32, f32) {
        let margin = PICKUP_RADIUS;
        (
            round_tenth(self.rng.random_range(margin..WORLD_WIDTH - margin)),
            round_tenth(self.rng.random_range(margin..WORLD_HEIGHT - margin)),
        )
    }

    fn new_item(&mut self) -> ItemState {
        let (x, y) = self.random_point();
        let id = self.next_item_id;
        self.next_item_id = self.next_item_id.wrapping_add(1);
        ItemState { id, x, y }
    }
}

/// Snapshots carry a tenth of a unit: plenty for drawing, and short on the wire.
fn round_tenth(value: f32) -> f32 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn player(world: &World, id: u32) -> PlayerState {
        world.players().into_iter().find(|p| p.id == id).unwrap()
    }

    #[test]
    fn inputs_move_one_tick_each_and_are_acknowledged() {
        let mut world = World::new(20, 7);
        world.add_player(1);
        let start = player(&world, 1);
        assert!(world.queue_input(1, 1, 1.0, 0.0));
        assert!(world.queue_input(1, 2, 1.0, 0.0));
        assert!(world.queue_input(1, 3, 1.0, 0.0));
        world.advance();
        let after = player(&world, 1);
        assert_eq!(after.ack, 2, "two inputs per tick at most");
        assert!((after.x - (start.x + 20.0).min(WORLD_WIDTH)).abs() < 0.11);
        world.advance();
        assert_eq!(player(&world, 1).ack, 3);
        world.advance();
        assert_eq!(player(&world, 1).ack, 3, "no input, no movement");
    }

    #[test]
    fn old_repeated_and_out_of_range_inputs_are_refused() {
        let mut world = World::new(20, 7);
        world.add_player(1);
        assert!(world.queue_input(1, 5, 0.0, 1.0));
        assert!(!world.queue_input(1, 5, 0.0, 1.0));
        assert!(!world.queue_input(1, 4, 0.0, 1.0));
        assert!(!world.queue_input(1, 6, 2.0, 0.0));
        assert!(!world.queue_input(1, 7, f32::NAN, 0.0));
        assert!(!world.queue_input(2, 1, 0.0, 1.0), "not a player here");
    }

    #[test]
    fn a_flood_of_inputs_keeps_only_the_newest() {
        let mut world = World::new(20, 7);
        world.add_player(1);
        for seq in 1..=100 {
            world.queue_input(1, seq, 0.0, -1.0);
        }
        for _ in 0..MAX_QUEUED_INPUTS {
            world.advance();
        }
        assert_eq!(player(&world, 1).ack, 100);
    }

    #[test]
    fn walking_over_an_item_scores_and_respawns_it() {
        let mut world = World::new(20, 7);
        world.add_player(1);
        let target = world.items()[0].clone();
        let avatar = world.avatars.get_mut(&1).unwrap();
        (avatar.x, avatar.y) = (target.x, target.y);
        world.advance();
        assert_eq!(player(&world, 1).score, 1);
        assert!(world.items().iter().all(|item| item.id != target.id));
        assert_eq!(world.items().len(), ITEMS_PER_ROOM);
    }
}
