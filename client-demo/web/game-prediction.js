// game-prediction.js: your own player, ahead of the server.
//
// Inputs the server has not acknowledged yet are replayed on top of its last word (the
// position it sent with `ack`, the last input seq it applied), with the server's own
// movement rule (`step`, f32 arithmetic like shared/src/game.rs), so that your player
// moves the moment a key is held and still ends exactly where the server puts it. No DOM:
// pure state, whatever the snapshot encoding.

const f32 = Math.fround;
const clamp = (value, low, high) => Math.min(Math.max(value, low), high);

/** Inputs kept for replay; an older one is long acknowledged or lost. */
const MAX_PENDING = 120;
/** A reconciliation that moves the prediction further than this counts as a correction. */
const CORRECTION_UNITS = 0.5;

/** One input of one tick, exactly as the server computes it (f32 arithmetic). */
export function step(position, dx, dy, world) {
  let x = f32(dx);
  let y = f32(dy);
  const length = f32(Math.sqrt(f32(f32(x * x) + f32(y * y))));
  if (length > 1) {
    x = f32(x / length);
    y = f32(y / length);
  }
  const distance = f32(f32(world.speed) / f32(world.tick_rate));
  return {
    x: clamp(f32(position.x + f32(x * distance)), 0, f32(world.width)),
    y: clamp(f32(position.y + f32(y * distance)), 0, f32(world.height)),
  };
}

export class Prediction {
  /** Own position: the last server position plus the unacknowledged inputs; null before the first. */
  predicted = null;
  /** Inputs sent, not yet acknowledged: { seq, dx, dy }. */
  pending = [];
  /** The seq of the last input sent; seqs restart with each socket. */
  seq = 0;
  /** Reconciliations that moved the prediction by more than half a unit. */
  corrections = 0;

  /** Forgets the room (its position and inputs); the seq goes on. */
  clear() {
    this.predicted = null;
    this.pending = [];
  }

  /** A new socket: the server counts seqs from scratch. */
  restart() {
    this.clear();
    this.seq = 0;
  }

  /** The seq the next input gets. */
  get nextSeq() {
    return this.seq + 1;
  }

  /** Records an input just sent and moves the prediction by it. */
  applied(seq, dx, dy, world) {
    this.seq = seq;
    this.pending.push({ seq, dx, dy });
    if (this.pending.length > MAX_PENDING) this.pending.splice(0, this.pending.length - MAX_PENDING);
    if (this.predicted) this.predicted = step(this.predicted, dx, dy, world);
  }

  /** The server's word ({x, y, ack}), then what it has not seen yet. */
  reconcile(server, world) {
    this.pending = this.pending.filter((input) => input.seq > server.ack);
    let position = { x: server.x, y: server.y };
    for (const input of this.pending) position = step(position, input.dx, input.dy, world);
    const before = this.predicted;
    if (before && Math.hypot(before.x - position.x, before.y - position.y) > CORRECTION_UNITS) this.corrections += 1;
    this.predicted = position;
  }
}
