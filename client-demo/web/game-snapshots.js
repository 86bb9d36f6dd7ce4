// game-snapshots.js: what the game knows of the room, tick by tick.
//
// Owns three things, none of which touches the DOM (Node's test runner imports this file
// as is: tests/browser/snapshot_codec.test.mjs):
//   - the binary snapshot frame decoder (layout below; the server's encoder is
//     shared/src/snapshot.rs, and the two must agree byte for byte),
//   - ViewHistory, the views of the last HISTORY_TICKS ticks this page reconstructed,
//     because the server sends each frame as a delta from whichever of them it last
//     heard acknowledged, not necessarily the newest,
//   - SampleBuffers, per-player position samples for interpolation: the server sends far
//     players less often than near ones, so each player is interpolated over its own
//     samples and at its own pace.
//
// A view is { players: [{id, x, y, score, ack}], items: [{id, x, y}] }, both ascending by
// id, positions in tenths of a unit (integers, as on the wire).
//
// Frame layout, little-endian; varint = unsigned LEB128 of at most 32 bits, zigzag = a
// signed varint:
//   u8 kind (1 = snapshot), u32 tick, u32 baseline (0: a full view, start from nothing)
//   varint n, n player records (added or changed, ascending id):
//     varint id, u8 fields (1 position, 2 score, 4 ack; a player new to the view has all),
//     [u16 x, u16 y], [varint score], [zigzag ack minus the baseline's ack for this player]
//   varint n, n varint ids: players gone
//   varint n, n item records (added): varint id, u16 x, u16 y
//   varint n, n varint ids: items gone

export const SNAPSHOT_KIND = 1;
/** Wire positions are tenths of a world unit. */
export const POSITION_SCALE = 10;
/** How many reconstructed views are kept; the server deltas against at most 16 ticks back. */
export const HISTORY_TICKS = 32;

const FIELD_POSITION = 1;
const FIELD_SCORE = 2;
const FIELD_ACK = 4;
const ALL_FIELDS = FIELD_POSITION | FIELD_SCORE | FIELD_ACK;
const HEADER_BYTES = 9;

/**
 * Why a frame could not be used. `code` is one of: not_a_snapshot, truncated, malformed
 * (a varint past 32 bits, unknown field bits, ids out of order), not_in_baseline (a change
 * or removal of something the baseline does not hold), trailing_bytes, missing_baseline
 * (ViewHistory only: the frame is a delta from a view this page does not hold).
 */
export class FrameError extends Error {
  constructor(code, message = code) {
    super(message);
    this.name = 'FrameError';
    this.code = code;
  }
}

export function emptyView() {
  return { players: [], items: [] };
}

function asBytes(frame) {
  if (frame instanceof Uint8Array) return frame;
  if (ArrayBuffer.isView(frame)) return new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength);
  return new Uint8Array(frame); // an ArrayBuffer, or an array of numbers (tests)
}

class Reader {
  constructor(bytes, at) {
    this.bytes = bytes;
    this.at = at;
  }
  get left() {
    return this.bytes.length - this.at;
  }
  byte() {
    if (this.at >= this.bytes.length) throw new FrameError('truncated', 'the frame ends early');
    return this.bytes[this.at++];
  }
  u16() {
    const low = this.byte();
    return low | (this.byte() << 8);
  }
  varint() {
    // Multiplication, not shifts: JavaScript's bitwise operators are 32-bit signed.
    let value = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const byte = this.byte();
      value += (byte & 0x7f) * 2 ** shift;
      if ((byte & 0x80) === 0) {
        if (value > 0xffff_ffff) throw new FrameError('malformed', 'a varint past 32 bits');
        return value;
      }
    }
    throw new FrameError('malformed', 'a varint longer than 5 bytes');
  }
  /** A count, then that many ascending ids. */
  ids() {
    const count = this.varint();
    const ids = [];
    for (let n = 0; n < count; n++) {
      const id = this.varint();
      if (ids.length && ids[ids.length - 1] >= id) throw new FrameError('malformed', 'ids out of order');
      ids.push(id);
    }
    return ids;
  }
}

const unzigzag = (value) => (value >>> 1) ^ -(value & 1);

/** The tick and baseline of a frame, without reading the rest; throws a FrameError. */
export function frameHeader(frame) {
  const bytes = asBytes(frame);
  if (bytes[0] !== SNAPSHOT_KIND) throw new FrameError('not_a_snapshot', `frame kind ${bytes[0] ?? 'missing'}`);
  if (bytes.length < HEADER_BYTES) throw new FrameError('truncated', 'the frame ends in its header');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { tick: view.getUint32(1, true), baseline: view.getUint32(5, true) };
}

/** A frame's parts as sent, not yet applied to anything; throws a FrameError. */
export function decodeFrame(frame) {
  const bytes = asBytes(frame);
  const { tick, baseline } = frameHeader(bytes);
  const reader = new Reader(bytes, HEADER_BYTES);
  const players = [];
  const count = reader.varint();
  for (let n = 0; n < count; n++) {
    const id = reader.varint();
    const fields = reader.byte();
    if (fields & ~ALL_FIELDS) throw new FrameError('malformed', `unknown field bits ${fields}`);
    const record = { id, fields };
    if (fields & FIELD_POSITION) {
      record.x = reader.u16();
      record.y = reader.u16();
    }
    if (fields & FIELD_SCORE) record.score = reader.varint();
    if (fields & FIELD_ACK) record.ackDelta = unzigzag(reader.varint());
    players.push(record);
  }
  const gonePlayers = reader.ids();
  const items = [];
  const itemCount = reader.varint();
  for (let n = 0; n < itemCount; n++) items.push({ id: reader.varint(), x: reader.u16(), y: reader.u16() });
  const goneItems = reader.ids();
  if (reader.left > 0) throw new FrameError('trailing_bytes', `${reader.left} bytes after the frame`);
  return { tick, baseline, players, gonePlayers, items, goneItems };
}

/**
 * Applies a frame to the view at its baseline (`base` is ignored for a full view, baseline
 * 0): { tick, baseline, view } with the view at `tick`. Throws a FrameError; never
 * changes `base`.
 */
export function applyFrame(base, frame) {
  const decoded = decodeFrame(frame);
  const from = decoded.baseline === 0 ? emptyView() : base;
  return { tick: decoded.tick, baseline: decoded.baseline, view: applyDecoded(from, decoded) };
}

function applyDecoded(base, { players: changes, gonePlayers, items: added, goneItems }) {
  const players = [];
  const push = (entry) => {
    if (players.length && players[players.length - 1].id >= entry.id) throw new FrameError('malformed', 'player ids out of order');
    players.push(entry);
  };
  const newcomer = (change) => {
    if (change.fields !== ALL_FIELDS) throw new FrameError('not_in_baseline', `player ${change.id} changed but not held`);
    return { id: change.id, x: change.x, y: change.y, score: change.score, ack: change.ackDelta >>> 0 };
  };
  let c = 0;
  let g = 0;
  for (const was of base.players) {
    while (c < changes.length && changes[c].id < was.id) push(newcomer(changes[c++]));
    if (g < gonePlayers.length && gonePlayers[g] === was.id) {
      g += 1;
      continue;
    }
    const entry = { ...was };
    if (c < changes.length && changes[c].id === was.id) {
      const change = changes[c++];
      if (change.fields & FIELD_POSITION) {
        entry.x = change.x;
        entry.y = change.y;
      }
      if (change.fields & FIELD_SCORE) entry.score = change.score;
      if (change.fields & FIELD_ACK) entry.ack = (was.ack + change.ackDelta) >>> 0;
    }
    push(entry);
  }
  while (c < changes.length) push(newcomer(changes[c++]));
  if (g < gonePlayers.length) throw new FrameError('not_in_baseline', `player ${gonePlayers[g]} gone but not held`);

  const kept = [];
  g = 0;
  for (const was of base.items) {
    if (g < goneItems.length && goneItems[g] === was.id) g += 1;
    else kept.push(was);
  }
  if (g < goneItems.length) throw new FrameError('not_in_baseline', `item ${goneItems[g]} gone but not held`);
  const items = [];
  let k = 0;
  let a = 0;
  while (k < kept.length || a < added.length) {
    let next;
    if (a >= added.length || (k < kept.length && kept[k].id < added[a].id)) next = kept[k++];
    else if (k < kept.length && kept[k].id === added[a].id) throw new FrameError('malformed', `item ${added[a].id} added twice`);
    else next = { ...added[a++] };
    if (items.length && items[items.length - 1].id >= next.id) throw new FrameError('malformed', 'item ids out of order');
    items.push(next);
  }
  return { players, items };
}

/**
 * The views this page reconstructed, keyed by tick, newest HISTORY_TICKS kept. receive()
 * never throws: it answers { ok: true, tick, baseline, view } or { ok: false, error: code,
 * message, tick?, baseline? }.
 */
export class ViewHistory {
  #views = new Map(); // tick -> view, in arrival order
  #limit;
  #newest = null;

  constructor(limit = HISTORY_TICKS) {
    this.#limit = limit;
  }

  /** The tick of the newest view held, or null. */
  get newestTick() {
    return this.#newest;
  }
  get size() {
    return this.#views.size;
  }
  get(tick) {
    return this.#views.get(tick) ?? null;
  }
  reset() {
    this.#views.clear();
    this.#newest = null;
  }

  receive(frame) {
    let header;
    try {
      header = frameHeader(frame);
      const base = header.baseline === 0 ? emptyView() : this.#views.get(header.baseline);
      if (!base) {
        return { ok: false, error: 'missing_baseline', message: `no view of tick ${header.baseline}`, ...header };
      }
      const { tick, baseline, view } = applyFrame(base, frame);
      this.#views.delete(tick); // re-inserted as the newest arrival
      this.#views.set(tick, view);
      while (this.#views.size > this.#limit) this.#views.delete(this.#views.keys().next().value);
      this.#newest = tick;
      return { ok: true, tick, baseline, view };
    } catch (error) {
      const code = error instanceof FrameError ? error.code : 'malformed';
      return { ok: false, error: code, message: String(error?.message ?? error), ...(header ?? {}) };
    }
  }
}

/** A view's positions in world units, as the server's f32 holds them. */
export function worldOf(view) {
  const f32 = Math.fround;
  const players = new Map();
  for (const p of view.players) {
    players.set(p.id, { x: f32(p.x / POSITION_SCALE), y: f32(p.y / POSITION_SCALE), score: p.score, ack: p.ack });
  }
  const items = view.items.map((item) => ({ id: item.id, x: f32(item.x / POSITION_SCALE), y: f32(item.y / POSITION_SCALE) }));
  return { players, items };
}

// A gap between two changes of a player longer than this is the player standing still,
// not its update rate: it is not counted in the rate, and the old position is held until
// one interval before the new one (or the player would glide across the whole gap).
const STILL_GAP_TICKS = 8;
const MAX_SAMPLES = 64;
const KEEP_TICKS = 48;

/**
 * Per-player position samples, each at the tick where that player's position last
 * changed. A near player moving gets one every tick, a far one (sent at a lower rate) one
 * every few ticks; intervalTicks(id) is that player's recent update interval (the largest
 * of its last three gaps, so that a slowdown shows at once and a speedup after a few
 * samples), 1 until known.
 */
export class SampleBuffers {
  #players = new Map(); // id -> { samples: [{tick, x, y}], gaps: [ticks] }

  reset() {
    this.#players.clear();
  }

  /** Records the positions of one view (players: Map id -> {x, y}); drops players gone. */
  record(tick, players) {
    for (const id of this.#players.keys()) if (!players.has(id)) this.#players.delete(id);
    for (const [id, { x, y }] of players) {
      const entry = this.#players.get(id);
      if (!entry) {
        this.#players.set(id, { samples: [{ tick, x, y }], gaps: [] });
        continue;
      }
      const { samples } = entry;
      const last = samples[samples.length - 1];
      if (tick < last.tick) {
        // Another timeline (a new room): start this player over.
        this.#players.set(id, { samples: [{ tick, x, y }], gaps: [] });
        continue;
      }
      if (tick === last.tick || (last.x === x && last.y === y)) continue;
      const gap = tick - last.tick;
      if (gap > STILL_GAP_TICKS) {
        const hold = tick - this.#interval(entry);
        if (hold > last.tick) samples.push({ tick: hold, x: last.x, y: last.y });
      } else {
        entry.gaps.push(gap);
        if (entry.gaps.length > 3) entry.gaps.shift();
      }
      samples.push({ tick, x, y });
      while (samples.length > MAX_SAMPLES || (samples.length > 2 && samples[1].tick < tick - KEEP_TICKS)) samples.shift();
    }
  }

  ids() {
    return this.#players.keys();
  }

  /** The player's samples, oldest first (do not change them), or an empty list. */
  samplesOf(id) {
    return this.#players.get(id)?.samples ?? [];
  }

  intervalTicks(id) {
    const entry = this.#players.get(id);
    return entry ? this.#interval(entry) : 1;
  }

  #interval(entry) {
    return entry.gaps.length ? Math.max(...entry.gaps) : 1;
  }

  /** The player's position at a (fractional) tick, between the samples around it; null if unknown. */
  positionAt(id, tick) {
    const samples = this.samplesOf(id);
    if (!samples.length) return null;
    if (tick <= samples[0].tick) return { x: samples[0].x, y: samples[0].y };
    const last = samples[samples.length - 1];
    if (tick >= last.tick) return { x: last.x, y: last.y };
    let i = samples.length - 1;
    while (i > 0 && samples[i - 1].tick > tick) i -= 1;
    const a = samples[i - 1];
    const b = samples[i];
    const alpha = (tick - a.tick) / (b.tick - a.tick);
    return { x: a.x + (b.x - a.x) * alpha, y: a.y + (b.y - a.y) * alpha };
  }
}
