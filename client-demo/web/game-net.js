// game-net.js: the game's side of the socket.
//
// Owns the TetherClient, the room state every other module reads (`game`), joining rooms
// with the page's snapshot encoding, the input loop (one input per tick while a key is
// held, each carrying the newest acknowledged snapshot tick; an `ack` message in a tick
// without input), and frame intake: JSON `snapshot` messages and binary frames (decoded
// by game-snapshots.js) both become `game.latest`, the per-player interpolation samples
// and a reconciliation of the prediction. Nothing here touches the DOM: what the page
// shows follows the events of onNet().
//
// Encoding: binary frames unless the page URL says ?encoding=json (the server's default,
// readable in the browser's network panel).

import { TetherClient } from './tether-client.js';
import { Prediction } from './game-prediction.js';
import { SampleBuffers, ViewHistory, frameHeader, worldOf } from './game-snapshots.js';

const PING_EVERY_MS = 2_000;
/** Arrival intervals kept for tetherDebug.snapshotIntervalMs. */
const INTERVALS_KEPT = 200;
/** A snapshot this many ticks older than the newest is from another timeline (a new room). */
const OTHER_TIMELINE_TICKS = 40;

export const client = new TetherClient({ pingEveryMs: PING_EVERY_MS });

export const encoding = new URLSearchParams(globalThis.location?.search ?? '').get('encoding') === 'json' ? 'json' : 'binary';

/** What the page knows of its room: kept by this module (game.js sets inGame and desiredRoom), read by the others. */
export const game = {
  world: { width: 800, height: 600, speed: 200, tick_rate: 20, pickup_radius: 20 },
  desiredRoom: 'lobby',
  room: null,
  you: null,
  capacity: null,
  sessionId: null,
  inGame: false, // the game screen is up (set by game.js)
  names: new Map(), // id -> name, members of the room
  latest: null, // { tick, players: Map(id -> {x, y, score, ack}), items: [{id, x, y}] }, world units
  tickOffset: null, // performance.now() of tick 0, estimated
  prediction: new Prediction(),
  samples: new SampleBuffers(), // other players' positions by tick, for interpolation
  latencyMs: null,
  leaving: null, // { room, until }: switching rooms, the old one's `left` not yet seen
};

const history = new ViewHistory();
const stats = { binaryFrames: 0, frameErrors: 0, missingBaselines: 0, lastFrameError: null };
const intervals = []; // ms between snapshot arrivals, newest last
let lastArrival = null;
// The tick to acknowledge with the next message (0: "I hold nothing, send a full view"),
// or null when the server already heard the newest.
let ackDue = null;

// ------------------------------------------------------------------ events for the page

const listeners = new Map();

/**
 * Subscribes to what the page shows: 'room' (membership changed or reset: redraw the
 * panels), 'joined' {room, count, capacity}, 'left' {room}, 'presence' {event, name},
 * 'frame' {newcomer} (a snapshot was taken in; newcomer: a player not in the names yet),
 * 'latency' {ms}.
 */
export function onNet(type, fn) {
  if (!listeners.has(type)) listeners.set(type, new Set());
  listeners.get(type).add(fn);
  return () => listeners.get(type).delete(fn);
}

function emit(type, detail = {}) {
  for (const fn of listeners.get(type) ?? []) fn(detail);
}

// ------------------------------------------------------------------ rooms

/** Asks to join `room` with the page's encoding; false when not connected. */
export function joinRoom(room) {
  return client.join(room, encoding === 'binary' ? { encoding: 'binary' } : undefined);
}

export function resetRoom() {
  game.room = null;
  game.leaving = null;
  game.you = null;
  game.names.clear();
  forgetFrames();
  game.prediction.clear();
  emit('room');
}

/** A new room's first frame is a full view: nothing of the old timeline is any use. */
function forgetFrames() {
  history.reset();
  game.samples.reset();
  game.latest = null;
  game.tickOffset = null;
  ackDue = null;
}

client.on('state', ({ state }) => {
  if (state === 'connected') return;
  resetRoom();
  game.latencyMs = null;
  emit('latency', { ms: null });
});

client.on('welcome', (message) => {
  game.sessionId = message.session_id;
  game.prediction.restart();
  joinRoom(game.desiredRoom);
});

client.on('joined', (message) => {
  // The server enters the new room before it leaves the old one: until the old room's
  // `left` arrives, snapshots may still come from it (binary frames carry no room name).
  const previous = game.room;
  resetRoom();
  game.leaving = previous && previous !== message.room ? { room: previous, until: performance.now() + 1_000 } : null;
  game.room = message.room;
  game.desiredRoom = message.room;
  game.you = message.you;
  game.capacity = message.capacity;
  if (message.world) {
    const tickChanged = message.world.tick_rate !== game.world.tick_rate;
    game.world = { ...game.world, ...message.world };
    if (tickChanged) restartInputLoop();
  }
  for (const player of message.players ?? []) game.names.set(player.id, player.name);
  game.names.set(message.you, client.user?.username ?? game.names.get(message.you) ?? 'you');
  emit('room');
  emit('joined', { room: message.room, count: game.names.size, capacity: message.capacity });
});

client.on('left', (message) => {
  if (game.leaving && message.room === game.leaving.room) {
    game.leaving = null; // the switch to the new room is complete
  } else if (message.room === game.room) {
    resetRoom();
  } else {
    return;
  }
  emit('left', { room: message.room });
});

client.on('presence', (message) => {
  if (message.room !== game.room || !message.player) return;
  if (message.event === 'join') game.names.set(message.player.id, message.player.name);
  else if (message.event === 'leave') game.names.delete(message.player.id);
  else return;
  emit('presence', { event: message.event, name: message.player.name });
});

client.on('latency', ({ rttMs }) => {
  if (!(rttMs >= 0 && rttMs < 60_000)) return;
  game.latencyMs = game.latencyMs === null ? rttMs : game.latencyMs * 0.7 + rttMs * 0.3;
  emit('latency', { ms: game.latencyMs });
});

// ------------------------------------------------------------------ inputs and acks

let inputTimer = null;
let direction = () => ({ dx: 0, dy: 0 });

/** Where the movement keys point: fn() -> {dx, dy} in [-1, 1]. */
export function setDirectionSource(fn) {
  direction = fn;
}

export function restartInputLoop() {
  clearInterval(inputTimer);
  inputTimer = setInterval(inputTick, 1000 / game.world.tick_rate);
}

// At most one message a tick (the server allows 30 a second, pings included): an input
// carries the ack along; without input, the ack goes alone.
function inputTick() {
  if (!client.connected || !game.room) return;
  const { dx, dy } = direction();
  const ack = ackDue;
  if ((dx !== 0 || dy !== 0) && game.prediction.predicted) {
    const seq = game.prediction.nextSeq;
    if (!client.input(seq, dx, dy, ack === null ? undefined : { ack })) return;
    if (ackDue === ack) ackDue = null;
    game.prediction.applied(seq, dx, dy, game.world);
    return;
  }
  if (ack !== null && client.send({ type: 'ack', tick: ack })) ackDue = null;
}

// ------------------------------------------------------------------ frame intake

function noteArrival() {
  const now = performance.now();
  if (lastArrival !== null) {
    intervals.push(now - lastArrival);
    if (intervals.length > INTERVALS_KEPT) intervals.shift();
  }
  lastArrival = now;
  return now;
}

/** False while a snapshot may still be the old room's (see `joined`). */
function fromThisRoom(now) {
  if (!game.room) return false;
  if (game.leaving) {
    if (now < game.leaving.until) return false;
    game.leaving = null;
  }
  return true;
}

/** False for a late or repeated tick; a far older one starts a new timeline. */
function isNewTick(tick) {
  if (!game.latest || tick > game.latest.tick) return true;
  if (game.latest.tick - tick < OTHER_TIMELINE_TICKS) return false;
  forgetFrames();
  return true;
}

client.on('snapshot', (message) => {
  const now = noteArrival();
  if (!fromThisRoom(now) || !isNewTick(message.tick)) return;
  const f32 = Math.fround;
  const players = new Map();
  for (const p of message.players ?? []) {
    players.set(p.id, { x: f32(p.x), y: f32(p.y), score: p.score ?? 0, ack: p.ack ?? 0 });
  }
  takeIn(message.tick, players, message.items ?? [], now);
});

client.on('binary', (buffer) => {
  try {
    const now = noteArrival();
    stats.binaryFrames += 1;
    if (!fromThisRoom(now)) return;
    const { tick } = frameHeader(buffer);
    if (!isNewTick(tick)) return;
    const result = history.receive(buffer);
    if (!result.ok) {
      if (result.error === 'missing_baseline') {
        stats.missingBaselines += 1;
        ackDue = 0;
      } else {
        frameError(result.message);
      }
      return;
    }
    const { players, items } = worldOf(result.view);
    takeIn(result.tick, players, items, now);
    ackDue = result.tick;
  } catch (error) {
    // A frame must never break the socket's handler: count it and wait for the next.
    frameError(String(error?.message ?? error));
  }
});

function frameError(message) {
  stats.frameErrors += 1;
  stats.lastFrameError = message;
}

function takeIn(tick, players, items, now) {
  const tickMs = 1000 / game.world.tick_rate;
  // Map server ticks onto this page's clock: the earliest arrival is the best guess of
  // when a tick happened; drift up slowly, and start over after a long gap.
  const sample = now - tick * tickMs;
  if (game.tickOffset === null || sample < game.tickOffset || sample - game.tickOffset > 250) {
    game.tickOffset = sample;
  } else {
    game.tickOffset += (sample - game.tickOffset) * 0.02;
  }
  game.latest = { tick, players, items };
  game.samples.record(tick, players);
  const me = players.get(game.you);
  if (me) game.prediction.reconcile(me, game.world);
  let newcomer = false;
  for (const id of players.keys()) if (!game.names.has(id)) newcomer = true;
  emit('frame', { newcomer });
}

// ------------------------------------------------------------------ debug view for tests

function percentiles(values) {
  if (!values.length) return { p10: null, p50: null, p90: null, p99: null, count: 0 };
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p) => Math.round(sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] * 10) / 10;
  return { p10: rank(10), p50: rank(50), p90: rank(90), p99: rank(99), count: sorted.length };
}

/** window.tetherDebug: a fresh frozen object on each read (see game.js). */
export function debugState() {
  const players = {};
  if (game.latest) {
    for (const [id, p] of game.latest.players) {
      players[id] = Object.freeze({ x: p.x, y: p.y, score: p.score, ack: p.ack, name: game.names.get(id) ?? null });
    }
  }
  const prediction = game.prediction;
  return Object.freeze({
    connected: client.connected,
    state: client.state,
    user: client.user?.username ?? null,
    sessionId: game.sessionId,
    you: game.you,
    room: game.room,
    players: Object.freeze(players),
    predicted: prediction.predicted ? Object.freeze({ ...prediction.predicted }) : null,
    pendingInputs: prediction.pending.length,
    corrections: prediction.corrections,
    items: Object.freeze((game.latest?.items ?? []).map((item) => Object.freeze({ ...item }))),
    lastSnapshotTick: game.latest?.tick ?? null,
    latencyMs: game.latencyMs,
    encoding,
    binaryFrames: stats.binaryFrames,
    frameErrors: stats.frameErrors,
    lastFrameError: stats.lastFrameError,
    missingBaselines: stats.missingBaselines,
    snapshotIntervalMs: Object.freeze(percentiles(intervals)),
  });
}
