//! Interest management: what a player is sent of its room. The world is a grid of
//! [`CELL`]-unit cells. A player sees the players in its own cell and the eight
//! around it as of every tick, and the others as of every [`FAR_EVERY`]th tick
//! (staggered by id, so that far updates spread evenly over the ticks). Items are
//! always seen.
//!
//! What a player knows depends only on its cell, so the room keeps one view per
//! cell, and everyone in a cell with the same baseline gets the same bytes, encoded
//! once. Views of the cells that had binary members are kept for
//! [`HISTORY_TICKS`], the baselines a client's acknowledgement can name.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tether_shared::game::{WORLD_HEIGHT, WORLD_WIDTH};
use tether_shared::snapshot::{self, ItemEntry, PlayerEntry, View};

/// Cell side, in world units.
pub const CELL: f32 = 100.0;
/// A player outside the cells around a viewer is refreshed every this many ticks.
pub const FAR_EVERY: u64 = 4;
/// How many ticks back an acknowledged view can serve as a baseline; an older
/// acknowledgement gets a full view.
pub const HISTORY_TICKS: usize = 16;

const CELL_TENTHS: u16 = (CELL * snapshot::POSITION_SCALE) as u16;
const COLUMNS: usize = (WORLD_WIDTH as usize).div_ceil(CELL as usize);
const ROWS: usize = (WORLD_HEIGHT as usize).div_ceil(CELL as usize);

/// A grid cell's index.
pub type Cell = u8;

/// The cell a quantized position is in (the far walls belong to the last cells).
pub fn cell_of(x: u16, y: u16) -> Cell {
    let column = usize::from(x / CELL_TENTHS).min(COLUMNS - 1);
    let row = usize::from(y / CELL_TENTHS).min(ROWS - 1);
    (row * COLUMNS + column) as Cell
}

/// Whether a viewer in `viewer` sees `other` every tick.
fn near(viewer: Cell, other: Cell) -> bool {
    let (viewer, other) = (usize::from(viewer), usize::from(other));
    (viewer % COLUMNS).abs_diff(other % COLUMNS) <= 1 && (viewer / COLUMNS).abs_diff(other / COLUMNS) <= 1
}

/// Which baseline a frame is a delta from: a tick and the cell the client was in.
pub type Baseline = Option<(u64, Cell)>;

pub struct Interest {
    /// What a viewer in each cell knows now, one list per cell, ascending by id.
    current: Vec<Vec<PlayerEntry>>,
    /// The views sent at each recent tick, of the cells that had a viewer.
    sent: VecDeque<(u64, HashMap<Cell, Arc<View>>)>,
    spare: Vec<PlayerEntry>,
}

impl Default for Interest {
    fn default() -> Interest {
        Interest { current: vec![Vec::new(); COLUMNS * ROWS], sent: VecDeque::new(), spare: Vec::new() }
    }
}

impl Interest {
    /// Moves every cell's view to `tick`, given the world's players (ascending by
    /// id) and items, and keeps the views of the cells `viewers` are in.
    pub fn advance(
        &mut self,
        tick: u64,
        players: &[PlayerEntry],
        items: &[ItemEntry],
        viewers: impl IntoIterator<Item = Cell>,
    ) {
        let cells: Vec<Cell> = players.iter().map(|player| cell_of(player.x, player.y)).collect();
        // Each cell's list is rebuilt into the previous cell's old one: no allocation
        // once the room's size is steady.
        let mut updated = std::mem::take(&mut self.spare);
        for (viewer, known) in self.current.iter_mut().enumerate() {
            let viewer = viewer as Cell;
            updated.clear();
            let mut old = known.iter().peekable();
            for (player, &cell) in players.iter().zip(&cells) {
                while old.next_if(|entry| entry.id < player.id).is_some() {}
                let previous = old.next_if(|entry| entry.id == player.id);
                let fresh = near(viewer, cell) || (tick + u64::from(player.id)).is_multiple_of(FAR_EVERY);
                updated.push(match previous {
                    Some(previous) if !fresh => *previous,
                    _ => *player,
                });
            }
            std::mem::swap(known, &mut updated);
        }
        self.spare = updated;
        let mut views = HashMap::new();
        for viewer in viewers {
            views.entry(viewer).or_insert_with(|| {
                Arc::new(View { players: self.current[usize::from(viewer)].clone(), items: items.to_vec() })
            });
        }
        self.sent.push_back((tick, views));
        while self.sent.len() > HISTORY_TICKS {
            self.sent.pop_front();
        }
    }

    /// The view a viewer in `cell` was sent at `tick`, if it is still kept.
    fn view(&self, tick: u64, cell: Cell) -> Option<&Arc<View>> {
        let index = self.sent.binary_search_by_key(&tick, |(sent, _)| *sent).ok()?;
        self.sent[index].1.get(&cell)
    }

    /// The frame for a viewer in `cell` now, from `baseline` (a full view when that
    /// view is no longer kept). None before the first [`Interest::advance`] for `cell`.
    pub fn frame(&self, cell: Cell, baseline: Baseline) -> Option<Vec<u8>> {
        let (tick, _) = self.sent.back()?;
        let now = self.view(*tick, cell)?;
        let base = baseline.and_then(|(at, was)| Some((at as u32, &**self.view(at, was)?)));
        let mut frame = Vec::with_capacity(64);
        snapshot::encode(*tick as u32, base, now, &mut frame);
        Some(frame)
    }

    /// Forgets everything: no one is watching.
    pub fn clear(&mut self) {
        self.current.iter_mut().for_each(Vec::clear);
        self.sent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_shared::snapshot::{apply, quantize};

    fn at(id: u32, x: f32, y: f32, ack: u32) -> PlayerEntry {
        PlayerEntry { id, x: quantize(x), y: quantize(y), score: 0, ack }
    }

    #[test]
    fn the_grid_covers_the_world_and_neighbours_are_near() {
        assert_eq!(cell_of(0, 0), 0);
        assert_eq!(cell_of(quantize(WORLD_WIDTH), quantize(WORLD_HEIGHT)) as usize, COLUMNS * ROWS - 1);
        let middle = cell_of(quantize(350.0), quantize(250.0));
        assert!(near(middle, cell_of(quantize(250.0), quantize(150.0))));
        assert!(!near(middle, cell_of(quantize(150.0), quantize(250.0))));
        assert!(
            !near(cell_of(0, quantize(150.0)), cell_of(quantize(WORLD_WIDTH), quantize(150.0))),
            "no wrap"
        );
    }

    /// A viewer at the top left; a near player beside it and a far one at the other
    /// corner, both moving every tick. The near one is in every frame, the far one
    /// in one frame of four, and the client's view always equals the server's.
    #[test]
    fn a_near_player_is_sent_every_tick_and_a_far_one_every_fourth() {
        let mut interest = Interest::default();
        let viewer_cell = cell_of(quantize(50.0), quantize(50.0));
        let mut client: Option<(u64, View)> = None;
        let (mut near_updates, mut far_updates) = (0, 0);
        for tick in 1..=40u64 {
            let step = tick as f32;
            let players =
                [at(1, 50.0, 50.0, 0), at(2, 120.0 + step, 60.0, tick as u32), at(3, 700.0 - step, 500.0, 0)];
            interest.advance(tick, &players, &[], [viewer_cell]);
            let baseline = client.as_ref().map(|(acked, _)| (*acked, viewer_cell));
            let frame = interest.frame(viewer_cell, baseline).unwrap();
            let base = client.map(|(_, view)| view).unwrap_or_default();
            let (got_tick, view) = apply(&base, &frame).unwrap();
            assert_eq!(u64::from(got_tick), tick);
            let near_now = view.players.iter().find(|p| p.id == 2).unwrap();
            let far_now = view.players.iter().find(|p| p.id == 3).unwrap();
            assert_eq!(*near_now, players[1], "the near player is current at tick {tick}");
            if tick > 1 {
                near_updates += usize::from(*near_now != base.players[1]);
                far_updates += usize::from(*far_now != base.players[2]);
            }
            assert!(far_now.x >= players[2].x && far_now.x - players[2].x <= quantize(3.0));
            client = Some((tick, view));
        }
        assert_eq!(near_updates, 39);
        assert_eq!(far_updates, 9, "ticks 5, 9, ..., 37: (tick + id) a multiple of four");
    }

    #[test]
    fn a_baseline_that_is_no_longer_kept_gives_a_full_view() {
        let mut interest = Interest::default();
        let cell = cell_of(0, 0);
        for tick in 1..=(HISTORY_TICKS as u64 + 2) {
            interest.advance(tick, &[at(1, 10.0, 10.0, tick as u32)], &[], [cell]);
        }
        let frame = interest.frame(cell, Some((1, cell))).unwrap();
        assert_eq!(snapshot::header(&frame).unwrap().1, 0, "baseline 0: full");
        let frame = interest.frame(cell, Some((HISTORY_TICKS as u64, cell))).unwrap();
        assert_eq!(snapshot::header(&frame).unwrap().1, HISTORY_TICKS as u32);
    }
}
