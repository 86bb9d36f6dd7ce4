//! Binary snapshot frames: what a socket that joined with `"encoding":"binary"` gets
//! each tick instead of the JSON `snapshot`. A frame is a delta from the view of the
//! room the client last acknowledged (`ack` in `input`, or an `ack` message) to the
//! view now; with no usable baseline it is a full view (baseline 0).
//!
//! Layout, little-endian; `varint` is unsigned LEB128 (7 bits a byte, low first),
//! `zigzag` a signed varint (`(n << 1) ^ (n >> 31)`):
//!
//! ```text
//! u8   kind       1 = snapshot
//! u32  tick       the room's tick this view is of
//! u32  baseline   the tick it is a delta from; 0: a full view, start from nothing
//! varint n, then n player records (added or changed, ascending id):
//!      varint id
//!      u8     fields: 1 position, 2 score, 4 ack (a player new to the view has all three)
//!      [u16 x, u16 y]     position, in tenths of a unit (0..=8000, 0..=6000)
//!      [varint score]
//!      [zigzag ack]       this player's last applied input `seq`, minus the baseline's
//!                         (a player new to the view: minus 0)
//! varint n, then n varint ids: players gone from the view
//! varint n, then n item records (added; an item never moves): varint id, u16 x, u16 y
//! varint n, then n varint ids: items gone
//! ```
//!
//! Applying a frame to the client's view at `baseline` (kept for the last few ticks it
//! received) gives the view at `tick`, which the client then acknowledges.

/// The first byte of a snapshot frame.
pub const SNAPSHOT_KIND: u8 = 1;
/// Positions travel in tenths of a unit.
pub const POSITION_SCALE: f32 = 10.0;

const FIELD_POSITION: u8 = 1;
const FIELD_SCORE: u8 = 2;
const FIELD_ACK: u8 = 4;
const ALL_FIELDS: u8 = FIELD_POSITION | FIELD_SCORE | FIELD_ACK;
const HEADER_BYTES: usize = 9;

/// A player as a view holds it: position quantized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlayerEntry {
    pub id: u32,
    pub x: u16,
    pub y: u16,
    pub score: u32,
    pub ack: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ItemEntry {
    pub id: u32,
    pub x: u16,
    pub y: u16,
}

/// What one client knows of the room at a tick; both lists ascend by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub players: Vec<PlayerEntry>,
    pub items: Vec<ItemEntry>,
}

/// A world coordinate on the wire: tenths, rounded, clamped to what a `u16` holds.
pub fn quantize(value: f32) -> u16 {
    (value * POSITION_SCALE).round().clamp(0.0, f32::from(u16::MAX)) as u16
}

pub fn unquantize(value: u16) -> f32 {
    f32::from(value) / POSITION_SCALE
}

/// Appends the frame that takes a client from `base` (the view at `baseline`; `None`
/// for a full view) to `now`.
pub fn encode(tick: u32, baseline: Option<(u32, &View)>, now: &View, out: &mut Vec<u8>) {
    let empty = View::default();
    let (baseline_tick, base) = baseline.unwrap_or((0, &empty));
    out.push(SNAPSHOT_KIND);
    out.extend_from_slice(&tick.to_le_bytes());
    out.extend_from_slice(&baseline_tick.to_le_bytes());

    let mut changed = Vec::new();
    let mut gone = Vec::new();
    merge(
        &base.players,
        &now.players,
        |entry| entry.id,
        |was, is| match (was, is) {
            (None, Some(is)) => changed.push((ALL_FIELDS, 0, is)),
            (Some(was), Some(is)) => {
                let mut fields = 0;
                if (was.x, was.y) != (is.x, is.y) {
                    fields |= FIELD_POSITION;
                }
                if was.score != is.score {
                    fields |= FIELD_SCORE;
                }
                if was.ack != is.ack {
                    fields |= FIELD_ACK;
                }
                if fields != 0 {
                    changed.push((fields, was.ack, is));
                }
            }
            (Some(was), None) => gone.push(was.id),
            (None, None) => {}
        },
    );
    put_varint(out, changed.len() as u32);
    for (fields, base_ack, player) in changed {
        put_varint(out, player.id);
        out.push(fields);
        if fields & FIELD_POSITION != 0 {
            out.extend_from_slice(&player.x.to_le_bytes());
            out.extend_from_slice(&player.y.to_le_bytes());
        }
        if fields & FIELD_SCORE != 0 {
            put_varint(out, player.score);
        }
        if fields & FIELD_ACK != 0 {
            put_varint(out, zigzag(player.ack.wrapping_sub(base_ack) as i32));
        }
    }
    put_ids(out, &gone);

    let mut added = Vec::new();
    let mut gone = Vec::new();
    merge(
        &base.items,
        &now.items,
        |item| item.id,
        |was, is| match (was, is) {
            (None, Some(is)) => added.push(is),
            (Some(was), None) => gone.push(was.id),
            // Items do not move; one that did anyway is sent as gone and added again.
            (Some(was), Some(is)) if was != is => {
                gone.push(was.id);
                added.push(is);
            }
            _ => {}
        },
    );
    put_varint(out, added.len() as u32);
    for item in added {
        put_varint(out, item.id);
        out.extend_from_slice(&item.x.to_le_bytes());
        out.extend_from_slice(&item.y.to_le_bytes());
    }
    put_ids(out, &gone);
}

/// Why a frame could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    NotASnapshot,
    Truncated,
    /// A varint longer than 32 bits, or ids out of order.
    Malformed,
    /// A change or removal of something the baseline does not hold.
    NotInBaseline,
    TrailingBytes,
}

/// The tick and baseline of a frame, without reading the rest.
pub fn header(frame: &[u8]) -> Result<(u32, u32), FrameError> {
    if frame.first() != Some(&SNAPSHOT_KIND) {
        return Err(FrameError::NotASnapshot);
    }
    if frame.len() < HEADER_BYTES {
        return Err(FrameError::Truncated);
    }
    let word = |at: usize| u32::from_le_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]]);
    Ok((word(1), word(5)))
}

/// Applies a frame to the view at its baseline (`base` is ignored for a full view);
/// the frame's tick and the view at that tick.
pub fn apply(base: &View, frame: &[u8]) -> Result<(u32, View), FrameError> {
    let (tick, baseline) = header(frame)?;
    let empty = View::default();
    let base = if baseline == 0 { &empty } else { base };
    let mut reader = Reader { bytes: &frame[HEADER_BYTES..] };

    let count = reader.varint()?;
    let mut changes = Vec::with_capacity(count.min(4096) as usize);
    for _ in 0..count {
        let id = reader.varint()?;
        let fields = reader.byte()?;
        if fields & !ALL_FIELDS != 0 {
            return Err(FrameError::Malformed);
        }
        let position = if fields & FIELD_POSITION != 0 { Some((reader.u16()?, reader.u16()?)) } else { None };
        let score = if fields & FIELD_SCORE != 0 { Some(reader.varint()?) } else { None };
        let ack = if fields & FIELD_ACK != 0 { Some(unzigzag(reader.varint()?)) } else { None };
        changes.push((id, fields, position, score, ack));
    }
    let gone_players = reader.ids()?;
    let count = reader.varint()?;
    let mut added_items = Vec::with_capacity(count.min(4096) as usize);
    for _ in 0..count {
        added_items.push(ItemEntry { id: reader.varint()?, x: reader.u16()?, y: reader.u16()? });
    }
    let gone_items = reader.ids()?;
    if !reader.bytes.is_empty() {
        return Err(FrameError::TrailingBytes);
    }

    let mut players = Vec::with_capacity(base.players.len() + changes.len());
    let mut changes = changes.into_iter().peekable();
    let mut gone = gone_players.iter().peekable();
    let mut last_id = None;
    for was in &base.players {
        while let Some(&(id, fields, position, score, ack)) = changes.peek() {
            if id >= was.id {
                break;
            }
            changes.next();
            if fields != ALL_FIELDS {
                return Err(FrameError::NotInBaseline);
            }
            push_ascending(&mut players, &mut last_id, new_player(id, position, score, ack))?;
        }
        if gone.peek() == Some(&&was.id) {
            gone.next();
            continue;
        }
        let mut entry = *was;
        if let Some(&(id, _, position, score, ack)) = changes.peek()
            && id == was.id
        {
            changes.next();
            if let Some((x, y)) = position {
                (entry.x, entry.y) = (x, y);
            }
            entry.score = score.unwrap_or(entry.score);
            entry.ack = ack.map_or(entry.ack, |delta| was.ack.wrapping_add(delta as u32));
        }
        push_ascending(&mut players, &mut last_id, entry)?;
    }
    for (id, fields, position, score, ack) in changes {
        if fields != ALL_FIELDS {
            return Err(FrameError::NotInBaseline);
        }
        push_ascending(&mut players, &mut last_id, new_player(id, position, score, ack))?;
    }
    if gone.next().is_some() {
        return Err(FrameError::NotInBaseline);
    }

    let mut items: Vec<ItemEntry> = Vec::with_capacity(base.items.len() + added_items.len());
    let mut gone = gone_items.iter().peekable();
    let mut kept = Vec::with_capacity(base.items.len());
    for was in &base.items {
        if gone.peek() == Some(&&was.id) {
            gone.next();
        } else {
            kept.push(*was);
        }
    }
    if gone.next().is_some() {
        return Err(FrameError::NotInBaseline);
    }
    let (mut kept, mut added) = (kept.into_iter().peekable(), added_items.into_iter().peekable());
    loop {
        let next = match (kept.peek(), added.peek()) {
            (Some(k), Some(a)) if k.id < a.id => kept.next(),
            (Some(k), Some(a)) if k.id == a.id => return Err(FrameError::Malformed),
            (_, Some(_)) => added.next(),
            (Some(_), None) => kept.next(),
            (None, None) => break,
        };
        let next = next.expect("peeked");
        if items.last().is_some_and(|last| last.id >= next.id) {
            return Err(FrameError::Malformed);
        }
        items.push(next);
    }
    Ok((tick, View { players, items }))
}

fn new_player(id: u32, position: Option<(u16, u16)>, score: Option<u32>, ack: Option<i32>) -> PlayerEntry {
    let (x, y) = position.unwrap_or_default();
    PlayerEntry { id, x, y, score: score.unwrap_or_default(), ack: ack.unwrap_or_default() as u32 }
}

fn push_ascending(
    players: &mut Vec<PlayerEntry>,
    last_id: &mut Option<u32>,
    entry: PlayerEntry,
) -> Result<(), FrameError> {
    if last_id.is_some_and(|last| last >= entry.id) {
        return Err(FrameError::Malformed);
    }
    *last_id = Some(entry.id);
    players.push(entry);
    Ok(())
}

/// Walks two id-sorted lists together, calling `visit` once per id in either.
fn merge<T: Copy>(was: &[T], is: &[T], id: impl Fn(&T) -> u32, mut visit: impl FnMut(Option<T>, Option<T>)) {
    let (mut i, mut j) = (0, 0);
    while i < was.len() || j < is.len() {
        match (was.get(i), is.get(j)) {
            (Some(a), Some(b)) if id(a) == id(b) => {
                visit(Some(*a), Some(*b));
                (i, j) = (i + 1, j + 1);
            }
            (Some(a), Some(b)) if id(a) < id(b) => {
                visit(Some(*a), None);
                i += 1;
            }
            (Some(a), None) => {
                visit(Some(*a), None);
                i += 1;
            }
            (_, Some(b)) => {
                visit(None, Some(*b));
                j += 1;
            }
            (None, None) => unreachable!("the loop condition"),
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_ids(out: &mut Vec<u8>, ids: &[u32]) {
    put_varint(out, ids.len() as u32);
    for &id in ids {
        put_varint(out, id);
    }
}

fn zigzag(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

fn unzigzag(value: u32) -> i32 {
    ((value >> 1) as i32) ^ -((value & 1) as i32)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, FrameError> {
        let (&first, rest) = self.bytes.split_first().ok_or(FrameError::Truncated)?;
        self.bytes = rest;
        Ok(first)
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }

    fn varint(&mut self) -> Result<u32, FrameError> {
        let mut value: u64 = 0;
        for shift in (0..35).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return u32::try_from(value).map_err(|_| FrameError::Malformed);
            }
        }
        Err(FrameError::Malformed)
    }

    /// A count, then that many ascending ids.
    fn ids(&mut self) -> Result<Vec<u32>, FrameError> {
        let count = self.varint()?;
        let mut ids: Vec<u32> = Vec::with_capacity(count.min(4096) as usize);
        for _ in 0..count {
            let id = self.varint()?;
            if ids.last().is_some_and(|&last| last >= id) {
                return Err(FrameError::Malformed);
            }
            ids.push(id);
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn player(id: u32, x: u16, y: u16, score: u32, ack: u32) -> PlayerEntry {
        PlayerEntry { id, x, y, score, ack }
    }

    /// The README's example, byte for byte: the client's documentation depends on it.
    #[test]
    fn the_documented_example_encodes_as_documented() {
        let base = View {
            players: vec![player(7, 1000, 2000, 3, 41), player(9, 50, 60, 0, 0)],
            items: vec![ItemEntry { id: 2, x: 100, y: 100 }],
        };
        let now = View {
            players: vec![player(7, 1100, 2000, 3, 43), player(9, 50, 60, 0, 0)],
            items: vec![ItemEntry { id: 3, x: 4000, y: 3000 }],
        };
        let mut frame = Vec::new();
        encode(101, Some((99, &base)), &now, &mut frame);
        assert_eq!(
            frame,
            [
                1, 101, 0, 0, 0, 99, 0, 0, 0, // kind, tick 101, baseline 99
                1, 7, 5, 0x4c, 0x04, 0xd0, 0x07, 4, // player 7: position 110.0,200.0, ack +2
                0, // no player gone
                1, 3, 0xa0, 0x0f, 0xb8, 0x0b, // item 3 at 400.0,300.0
                1, 2, // item 2 gone
            ]
        );
        assert_eq!(apply(&base, &frame), Ok((101, now)));
    }

    #[test]
    fn a_full_view_needs_no_baseline_and_garbage_is_refused() {
        let now = View { players: vec![player(1, 1, 2, 3, 4)], items: vec![ItemEntry { id: 5, x: 6, y: 7 }] };
        let mut frame = Vec::new();
        encode(3, None, &now, &mut frame);
        let unrelated = View { players: vec![player(2, 0, 0, 0, 0)], items: vec![] };
        assert_eq!(apply(&unrelated, &frame), Ok((3, now.clone())));
        assert_eq!(apply(&View::default(), &frame[..frame.len() - 1]), Err(FrameError::Truncated));
        assert_eq!(apply(&View::default(), &[2, 0, 0]), Err(FrameError::NotASnapshot));
        let mut longer = frame.clone();
        longer.push(0);
        assert_eq!(apply(&View::default(), &longer), Err(FrameError::TrailingBytes));
    }

    mod properties {
        use super::*;
        use proptest::collection::{btree_map, vec};
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        fn view() -> impl Strategy<Value = View> {
            (
                btree_map(0u32..40, (any::<u16>(), any::<u16>(), 0u32..1000, any::<u32>()), 0..20),
                btree_map(0u32..20, (any::<u16>(), any::<u16>()), 0..8),
            )
                .prop_map(|(players, items): (BTreeMap<_, _>, BTreeMap<_, _>)| View {
                    players: players
                        .into_iter()
                        .map(|(id, (x, y, score, ack))| PlayerEntry { id, x, y, score, ack })
                        .collect(),
                    items: items.into_iter().map(|(id, (x, y))| ItemEntry { id, x, y }).collect(),
                })
        }

        proptest! {
            #[test]
            fn a_delta_applied_to_its_baseline_gives_the_view(base in view(), now in view(), tick in 1u32..) {
                let mut frame = Vec::new();
                encode(tick, Some((tick.max(2) - 1, &base)), &now, &mut frame);
                prop_assert_eq!(apply(&base, &frame), Ok((tick, now.clone())));
                let mut full = Vec::new();
                encode(tick, None, &now, &mut full);
                prop_assert_eq!(apply(&View::default(), &full), Ok((tick, now)));
            }

            /// The server's side of the exchange: each tick's frame is a delta from the
            /// last view the client acknowledged, and the client acknowledges only what
            /// reached it. Whatever frames are lost, what the client holds is the server's view.
            #[test]
            fn a_client_that_loses_frames_still_ends_with_the_servers_view(
                views in vec(view(), 1..30),
                delivered in vec(any::<bool>(), 30),
                acks_arrive in vec(any::<bool>(), 30),
            ) {
                let mut server_acked: Option<u32> = None;
                let mut client_views: BTreeMap<u32, View> = BTreeMap::new();
                for (index, now) in views.iter().enumerate() {
                    let tick = index as u32 + 1;
                    let baseline = server_acked.map(|acked| (acked, &views[acked as usize - 1]));
                    let mut frame = Vec::new();
                    encode(tick, baseline, now, &mut frame);
                    if !delivered[index] {
                        continue;
                    }
                    let (_, frame_baseline) = header(&frame).unwrap();
                    let base = client_views.get(&frame_baseline).cloned().unwrap_or_default();
                    let (got_tick, got) = apply(&base, &frame).unwrap();
                    prop_assert_eq!(got_tick, tick);
                    prop_assert_eq!(&got, now);
                    client_views.insert(tick, got);
                    if acks_arrive[index] {
                        server_acked = Some(tick);
                    }
                }
            }

            #[test]
            fn any_bytes_decode_to_a_view_or_an_error(bytes in vec(any::<u8>(), 0..64), base in view()) {
                let mut frame = vec![SNAPSHOT_KIND];
                frame.extend(bytes);
                let _ = apply(&base, &frame);
            }
        }
    }
}
