// Unit tests of client-demo/web/game-snapshots.js: the game page's reader of binary
// snapshot frames (the server's writer is shared/src/snapshot.rs; the golden frame below
// is the one its own test pins), the view history that deltas are applied against, and
// the per-player samples that far players are interpolated over.
//
//   node --test tests/browser/snapshot_codec.test.mjs
//
// Plain Node (>= 20), no browser, no npm packages. The module is loaded as a data: URL so
// that Node reads it as ESM whatever its version's module detection.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

const source = await readFile(new URL('../../client-demo/web/game-snapshots.js', import.meta.url), 'utf8');
const lib = await import(`data:text/javascript;base64,${Buffer.from(source).toString('base64')}`);
const { FrameError, SampleBuffers, ViewHistory, applyFrame, decodeFrame, frameHeader, worldOf, HISTORY_TICKS } = lib;

// ------------------------------------------------------------------ a writer, for the tests

// The server's encoder, transcribed: so that views of any shape can be sent through the
// page's reader. The golden bytes keep the two honest.
function encodeFrame(tick, baseline, base, now) {
  const out = [SNAPSHOT(), ...u32(tick), ...u32(baseline)];
  const from = baseline === 0 ? { players: [], items: [] } : base;
  const was = new Map(from.players.map((p) => [p.id, p]));
  const is = new Map(now.players.map((p) => [p.id, p]));
  const changed = [];
  for (const p of now.players) {
    const old = was.get(p.id);
    if (!old) {
      changed.push({ p, fields: 7, baseAck: 0 });
      continue;
    }
    const fields = (old.x !== p.x || old.y !== p.y ? 1 : 0) | (old.score !== p.score ? 2 : 0) | (old.ack !== p.ack ? 4 : 0);
    if (fields) changed.push({ p, fields, baseAck: old.ack });
  }
  varint(out, changed.length);
  for (const { p, fields, baseAck } of changed) {
    varint(out, p.id);
    out.push(fields);
    if (fields & 1) out.push(...u16(p.x), ...u16(p.y));
    if (fields & 2) varint(out, p.score);
    if (fields & 4) {
      const delta = (p.ack - baseAck) | 0;
      varint(out, ((delta << 1) ^ (delta >> 31)) >>> 0);
    }
  }
  ids(out, from.players.filter((p) => !is.has(p.id)).map((p) => p.id));
  const hadItem = new Set(from.items.map((i) => i.id));
  const hasItem = new Set(now.items.map((i) => i.id));
  const added = now.items.filter((i) => !hadItem.has(i.id));
  varint(out, added.length);
  for (const item of added) {
    varint(out, item.id);
    out.push(...u16(item.x), ...u16(item.y));
  }
  ids(out, from.items.filter((i) => !hasItem.has(i.id)).map((i) => i.id));
  return Uint8Array.from(out);
}
const SNAPSHOT = () => 1;
const u32 = (v) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
const u16 = (v) => [v & 0xff, (v >>> 8) & 0xff];
function varint(out, value) {
  let v = value >>> 0;
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  out.push(v);
}
function ids(out, list) {
  varint(out, list.length);
  for (const id of list) varint(out, id);
}

const player = (id, x, y, score, ack) => ({ id, x, y, score, ack });

/** A history holding exactly `view` at `tick` (sent to it as a full frame). */
function historyWith(tick, view) {
  const history = new ViewHistory();
  const result = history.receive(encodeFrame(tick, 0, null, view));
  assert.equal(result.ok, true, JSON.stringify(result));
  return history;
}

/** A tiny deterministic PRNG, so that a failure replays. */
function prng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function randomView(random) {
  const players = [];
  const items = [];
  for (let id = 1; id < 40; id++) {
    if (random() < 0.3) {
      players.push(player(id, Math.floor(random() * 8001), Math.floor(random() * 6001), Math.floor(random() * 1000), Math.floor(random() * 2 ** 32)));
    }
  }
  for (let id = 1; id < 20; id++) {
    // An item never moves: the wire has no way to say it did, so its place is its id's.
    if (random() < 0.3) items.push({ id, x: (id * 4099) % 65536, y: (id * 7919) % 65536 });
  }
  return { players, items };
}

// ------------------------------------------------------------------ the golden frame

const GOLDEN_BASE = {
  players: [player(7, 1000, 2000, 3, 41), player(9, 50, 60, 0, 0)],
  items: [{ id: 2, x: 100, y: 100 }],
};
const GOLDEN_FRAME = [1, 101, 0, 0, 0, 99, 0, 0, 0, 1, 7, 5, 0x4c, 0x04, 0xd0, 0x07, 4, 0, 1, 3, 0xa0, 0x0f, 0xb8, 0x0b, 1, 2];
const GOLDEN_VIEW = {
  players: [player(7, 1100, 2000, 3, 43), player(9, 50, 60, 0, 0)],
  items: [{ id: 3, x: 4000, y: 3000 }],
};

test('the documented frame applied to its baseline at tick 99 gives the view at tick 101', () => {
  const history = historyWith(99, GOLDEN_BASE);
  const result = history.receive(Uint8Array.from(GOLDEN_FRAME).buffer);
  assert.deepEqual(result, { ok: true, tick: 101, baseline: 99, view: GOLDEN_VIEW });
  assert.equal(history.newestTick, 101);
  assert.deepEqual(history.get(99), GOLDEN_BASE, 'the baseline view is kept as it was');
  const world = worldOf(result.view);
  assert.deepEqual(world.players.get(7), { x: 110, y: 200, score: 3, ack: 43 });
  assert.deepEqual(world.players.get(9), { x: Math.fround(5), y: Math.fround(6), score: 0, ack: 0 });
  assert.deepEqual(world.items, [{ id: 3, x: 400, y: 300 }]);
});

test("the test's writer produces the golden bytes (so its other frames are the server's too)", () => {
  assert.deepEqual([...encodeFrame(101, 99, GOLDEN_BASE, GOLDEN_VIEW)], GOLDEN_FRAME);
});

test('the frame parts read as sent', () => {
  assert.deepEqual(frameHeader(GOLDEN_FRAME), { tick: 101, baseline: 99 });
  assert.deepEqual(decodeFrame(GOLDEN_FRAME), {
    tick: 101,
    baseline: 99,
    players: [{ id: 7, fields: 5, x: 1100, y: 2000, ackDelta: 2 }],
    gonePlayers: [],
    items: [{ id: 3, x: 4000, y: 3000 }],
    goneItems: [2],
  });
});

// ------------------------------------------------------------------ full views and deltas

test('a full view (baseline 0) replaces whatever view it is applied to', () => {
  const now = { players: [player(1, 1, 2, 3, 4)], items: [{ id: 5, x: 6, y: 7 }] };
  const frame = encodeFrame(3, 0, null, now);
  const unrelated = { players: [player(2, 0, 0, 0, 0), player(8, 9, 9, 9, 9)], items: [{ id: 1, x: 1, y: 1 }] };
  assert.deepEqual(applyFrame(unrelated, frame), { tick: 3, baseline: 0, view: now });
  const history = historyWith(2, unrelated);
  assert.deepEqual(history.receive(frame), { ok: true, tick: 3, baseline: 0, view: now });
});

test('acks travel as signed differences from the baseline, and wrap like a u32', () => {
  const base = { players: [player(4, 10, 10, 0, 100), player(5, 10, 10, 0, 0xffff_fffe)], items: [] };
  const now = { players: [player(4, 10, 10, 0, 97), player(5, 10, 10, 0, 3)], items: [] };
  const history = historyWith(10, base);
  assert.deepEqual(history.receive(encodeFrame(11, 10, base, now)).view, now);
});

test('random views survive a delta from any random view, and a full frame', () => {
  const random = prng(13);
  for (let round = 0; round < 300; round++) {
    const base = randomView(random);
    const now = randomView(random);
    assert.deepEqual(applyFrame(base, encodeFrame(round + 2, round + 1, base, now)).view, now, `round ${round}`);
    assert.deepEqual(applyFrame(base, encodeFrame(round + 2, 0, null, now)).view, now, `full, round ${round}`);
  }
});

test('a client that loses frames still ends with the view the server meant, acking only what arrived', () => {
  const random = prng(7);
  const views = Array.from({ length: 200 }, () => randomView(random));
  const history = new ViewHistory();
  let acked = null; // what the server last heard acknowledged
  for (let index = 0; index < views.length; index++) {
    const tick = index + 1;
    const frame = acked === null ? encodeFrame(tick, 0, null, views[index]) : encodeFrame(tick, acked, views[acked - 1], views[index]);
    if (random() < 0.3) continue; // lost on the way
    const result = history.receive(frame);
    assert.equal(result.ok, true, `tick ${tick}: ${JSON.stringify(result)}`);
    assert.deepEqual(result.view, views[index], `tick ${tick}`);
    if (random() < 0.6) acked = tick; // the ack reached the server
  }
});

// ------------------------------------------------------------------ refusals

test('truncated frames are refused as truncated, and never throw out of receive()', () => {
  const history = historyWith(99, GOLDEN_BASE);
  for (let length = 0; length < GOLDEN_FRAME.length; length++) {
    const cut = Uint8Array.from(GOLDEN_FRAME.slice(0, length));
    const result = history.receive(cut);
    assert.equal(result.ok, false, `length ${length}`);
    assert.equal(result.error, length === 0 ? 'not_a_snapshot' : 'truncated', `length ${length}: ${result.message}`);
    assert.throws(() => applyFrame(GOLDEN_BASE, cut), (error) => error instanceof FrameError && error.code === result.error);
  }
  assert.equal(history.newestTick, 99, 'nothing refused was kept');
});

test('a frame whose kind is not 1 is refused', () => {
  const history = historyWith(99, GOLDEN_BASE);
  for (const kind of [0, 2, 255]) {
    const frame = [kind, ...GOLDEN_FRAME.slice(1)];
    assert.deepEqual(
      { ok: history.receive(frame).ok, error: history.receive(frame).error },
      { ok: false, error: 'not_a_snapshot' },
    );
  }
  assert.deepEqual(history.receive([2, 0, 0]).error, 'not_a_snapshot');
});

test('bytes after the frame are refused', () => {
  const history = historyWith(99, GOLDEN_BASE);
  const result = history.receive([...GOLDEN_FRAME, 0]);
  assert.equal(result.ok, false);
  assert.equal(result.error, 'trailing_bytes');
  assert.equal(history.get(101), null);
});

test('malformed frames are refused: long varints, unknown fields, ids out of order, changes to what the baseline lacks', () => {
  const history = historyWith(99, GOLDEN_BASE);
  const header = [1, 101, 0, 0, 0, 99, 0, 0, 0];
  const cases = {
    'a six-byte varint': [[...header, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0, 0, 0], 'malformed'],
    'a varint past 32 bits': [[...header, 0xff, 0xff, 0xff, 0xff, 0x1f, 0, 0, 0], 'malformed'],
    'an unknown field bit': [[...header, 1, 7, 8, 0, 0, 0], 'malformed'],
    'gone ids out of order': [[...header, 0, 2, 9, 7, 0, 0], 'malformed'],
    'a change to a player not held': [[...header, 1, 8, 2, 5, 0, 0, 0], 'not_in_baseline'],
    'a player gone that was not there': [[...header, 0, 1, 8, 0, 0], 'not_in_baseline'],
    'an item gone that was not there': [[...header, 0, 0, 0, 1, 4], 'not_in_baseline'],
    'an item added twice': [[...header, 0, 0, 1, 2, 0, 0, 0, 0, 0], 'malformed'],
  };
  for (const [name, [frame, code]] of Object.entries(cases)) {
    const result = history.receive(frame);
    assert.equal(result.ok, false, name);
    assert.equal(result.error, code, `${name}: ${result.message}`);
  }
});

test('a delta from a view the history does not hold is refused, and nothing is kept', () => {
  const history = historyWith(50, GOLDEN_BASE);
  const result = history.receive(GOLDEN_FRAME); // baseline 99: never received
  assert.equal(result.ok, false);
  assert.equal(result.error, 'missing_baseline');
  assert.equal(result.baseline, 99);
  assert.equal(history.newestTick, 50);
  assert.equal(history.size, 1);
  history.reset();
  assert.equal(historyWith(99, GOLDEN_BASE).receive(GOLDEN_FRAME).ok, true);
  assert.equal(history.receive(GOLDEN_FRAME).error, 'missing_baseline', 'reset forgets every view');
});

test(`the history keeps the newest ${HISTORY_TICKS} views: a delta from an older one is refused`, () => {
  const view = { players: [player(1, 10, 10, 0, 0)], items: [] };
  const history = historyWith(1, view);
  for (let tick = 2; tick <= HISTORY_TICKS + 1; tick++) {
    assert.equal(history.receive(encodeFrame(tick, tick - 1, view, view)).ok, true);
  }
  assert.equal(history.size, HISTORY_TICKS);
  assert.equal(history.receive(encodeFrame(100, 1, view, view)).error, 'missing_baseline');
  assert.equal(history.receive(encodeFrame(100, 2, view, view)).ok, true);
});

// ------------------------------------------------------------------ samples for interpolation

const at = (x, y) => ({ x, y });

test('a player updated every tick is sampled every tick, one updated every 4th tick every 4th', () => {
  const samples = new SampleBuffers();
  for (let tick = 1; tick <= 20; tick++) {
    const far = Math.floor((tick - 1) / 4) * 4 + 1; // the far player's last update
    samples.record(tick, new Map([[1, at(tick, 0)], [2, at(far * 10, 0)]]));
  }
  assert.equal(samples.intervalTicks(1), 1);
  assert.equal(samples.intervalTicks(2), 4);
  assert.deepEqual(samples.samplesOf(2).map((s) => s.tick), [1, 5, 9, 13, 17]);
  assert.deepEqual(samples.positionAt(2, 7), { x: 70, y: 0 }, 'between its own samples, not the frames');
  assert.deepEqual(samples.positionAt(1, 7.5), { x: 7.5, y: 0 });
  assert.deepEqual(samples.positionAt(2, 30), { x: 170, y: 0 }, 'no extrapolation past the newest');
  assert.deepEqual(samples.positionAt(2, 0), { x: 10, y: 0 });
  assert.equal(samples.positionAt(3, 5), null);
});

test('a player who stood still starts moving from where it stood, one interval before its move', () => {
  const samples = new SampleBuffers();
  for (let tick = 1; tick <= 4; tick++) samples.record(tick, new Map([[1, at(tick, 0)]]));
  for (let tick = 5; tick <= 40; tick++) samples.record(tick, new Map([[1, at(4, 0)]]));
  samples.record(41, new Map([[1, at(5, 0)]]));
  assert.deepEqual(samples.positionAt(1, 30), { x: 4, y: 0 });
  assert.deepEqual(samples.positionAt(1, 40), { x: 4, y: 0 });
  assert.deepEqual(samples.positionAt(1, 40.5), { x: 4.5, y: 0 });
  assert.equal(samples.intervalTicks(1), 1, 'standing still is not a slow update rate');
});

test('players gone from the view are forgotten, and an older tick starts a player over', () => {
  const samples = new SampleBuffers();
  samples.record(10, new Map([[1, at(1, 1)], [2, at(2, 2)]]));
  samples.record(11, new Map([[1, at(1, 2)]]));
  assert.deepEqual([...samples.ids()], [1]);
  samples.record(3, new Map([[1, at(9, 9)]]));
  assert.deepEqual(samples.samplesOf(1), [{ tick: 3, x: 9, y: 9 }]);
});
