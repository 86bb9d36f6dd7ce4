// game-render.js: the canvas, redrawn every animation frame.
//
// Your own player is drawn at its prediction (game-prediction.js), eased so that 20 Hz
// steps look smooth. Every other player is drawn in the past, between two of its own
// samples (game-snapshots.js SampleBuffers): INTERP_DELAY_MS behind for a player that
// updates every tick, two of its update intervals behind for one the server sends less
// often (a far player), so that both move smoothly; the delay changes gradually when a
// player's rate does, or it would jump back or forth in time.

import { client, game } from './game-net.js';

const INTERP_DELAY_MS = 100;
/** How fast a player's delay follows its update rate, in ms of delay per ms of time. */
const DELAY_SLEW = 0.5;
const PLAYER_RADIUS = 12;
const ITEM_RADIUS = 7;

const clamp = (value, low, high) => Math.min(Math.max(value, low), high);

let canvas = null;
let ctx = null;
let caption = () => '';
let drawnSelf = null; // what is drawn for self, eased toward the prediction
const delays = new Map(); // id -> the render delay in ms drawn last frame

/** Starts drawing on `canvasElement`; captionText() says why the world is empty, when it is. */
export function startRender(canvasElement, captionText) {
  canvas = canvasElement;
  ctx = canvas.getContext('2d');
  caption = captionText;
  let lastFrame = performance.now();
  const frame = (now) => {
    const dt = Math.min(0.1, Math.max(0, (now - lastFrame) / 1000));
    lastFrame = now;
    if (!canvas.closest('[hidden]')) draw(now, dt);
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}

/** A player's colour, the same on the canvas and in the panels. */
export function playerColor(id, lightness = 62) {
  const hue = (Number(id) * 137.508 + 200) % 360;
  return `hsl(${hue.toFixed(1)} 70% ${lightness}%)`;
}

function fitCanvas() {
  const world = game.world;
  const aspect = `${world.width} / ${world.height}`;
  if (canvas.style.aspectRatio !== aspect) canvas.style.aspectRatio = aspect;
  const rect = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(rect.width * dpr));
  const height = Math.max(1, Math.round(rect.height * dpr));
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  ctx.setTransform(width / world.width, 0, 0, height / world.height, 0, 0);
  return width / world.width;
}

/** Where each other player is drawn at `now`: Map id -> {x, y}. */
export function interpolatedOthers(now, dtMs) {
  const out = new Map();
  if (game.tickOffset === null) return out;
  const tickMs = 1000 / game.world.tick_rate;
  const seen = new Set();
  for (const id of game.samples.ids()) {
    seen.add(id);
    if (id === game.you) continue;
    const target = Math.max(INTERP_DELAY_MS, 2 * game.samples.intervalTicks(id) * tickMs);
    const was = delays.get(id);
    const delay = was === undefined ? target : was + clamp(target - was, -DELAY_SLEW * dtMs, DELAY_SLEW * dtMs);
    delays.set(id, delay);
    const position = game.samples.positionAt(id, (now - delay - game.tickOffset) / tickMs);
    if (position) out.set(id, position);
  }
  for (const id of delays.keys()) if (!seen.has(id)) delays.delete(id);
  return out;
}

function draw(now, dt) {
  const world = game.world;
  const scale = fitCanvas();
  const px = 1 / scale; // one device pixel in world units

  // Ground and grid.
  ctx.fillStyle = '#141a22';
  ctx.fillRect(0, 0, world.width, world.height);
  ctx.strokeStyle = 'rgba(255,255,255,0.05)';
  ctx.lineWidth = px;
  ctx.beginPath();
  for (let x = 50; x < world.width; x += 50) {
    ctx.moveTo(x, 0);
    ctx.lineTo(x, world.height);
  }
  for (let y = 50; y < world.height; y += 50) {
    ctx.moveTo(0, y);
    ctx.lineTo(world.width, y);
  }
  ctx.stroke();
  ctx.strokeStyle = 'rgba(120,160,255,0.35)';
  ctx.lineWidth = 2 * px;
  ctx.strokeRect(px, px, world.width - 2 * px, world.height - 2 * px);

  const predicted = game.prediction.predicted;
  if (!predicted) drawnSelf = null;
  if (!game.room || !game.latest) {
    drawCaption(client.connected ? (game.room ? 'Waiting for the first tick…' : 'Not in a room: join one on the right.') : caption());
    return;
  }

  // Items: coins with a soft pulse.
  const pulse = 1 + Math.sin(now / 250) * 0.08;
  for (const item of game.latest.items) {
    ctx.beginPath();
    ctx.fillStyle = 'rgba(255, 200, 60, 0.14)';
    ctx.arc(item.x, item.y, ITEM_RADIUS * 2.1 * pulse, 0, Math.PI * 2);
    ctx.fill();
    ctx.beginPath();
    ctx.fillStyle = '#ffc83c';
    ctx.strokeStyle = '#b07a00';
    ctx.lineWidth = 1.5;
    ctx.arc(item.x, item.y, ITEM_RADIUS, 0, Math.PI * 2);
    ctx.fill();
    ctx.stroke();
  }

  for (const [id, p] of interpolatedOthers(now, dt * 1000)) {
    drawPlayer(id, p.x, p.y, game.names.get(id) ?? `#${id}`, false);
  }

  if (predicted) {
    if (!drawnSelf || Math.hypot(predicted.x - drawnSelf.x, predicted.y - drawnSelf.y) > 60) {
      drawnSelf = { ...predicted };
    } else {
      const k = 1 - Math.exp(-dt * 25);
      drawnSelf.x += (predicted.x - drawnSelf.x) * k;
      drawnSelf.y += (predicted.y - drawnSelf.y) * k;
    }
    drawPlayer(game.you, drawnSelf.x, drawnSelf.y, game.names.get(game.you) ?? 'you', true);
  }

  if (!client.connected) drawCaption(caption());
}

function drawPlayer(id, x, y, name, self) {
  if (self) {
    ctx.beginPath();
    ctx.fillStyle = 'rgba(110,162,255,0.18)';
    ctx.arc(x, y, PLAYER_RADIUS + 9, 0, Math.PI * 2);
    ctx.fill();
  }
  ctx.beginPath();
  ctx.fillStyle = playerColor(id);
  ctx.arc(x, y, PLAYER_RADIUS, 0, Math.PI * 2);
  ctx.fill();
  ctx.lineWidth = self ? 3 : 1.5;
  ctx.strokeStyle = self ? '#ffffff' : 'rgba(0,0,0,0.45)';
  ctx.stroke();

  ctx.font = `${self ? '600 ' : ''}13px system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif`;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'bottom';
  const label = self ? `${name} (you)` : name;
  // Keep the label inside the world: below the player at the top edge, shifted at the sides.
  const half = ctx.measureText(label).width / 2 + 3;
  const labelX = clamp(x, half, game.world.width - half);
  const above = y - PLAYER_RADIUS - 5 > 16;
  const labelY = above ? y - PLAYER_RADIUS - 5 : y + PLAYER_RADIUS + 19;
  ctx.lineWidth = 3;
  ctx.strokeStyle = 'rgba(10,14,20,0.85)';
  ctx.strokeText(label, labelX, labelY);
  ctx.fillStyle = self ? '#ffffff' : 'rgba(230,235,240,0.92)';
  ctx.fillText(label, labelX, labelY);
}

function drawCaption(text) {
  const world = game.world;
  ctx.fillStyle = 'rgba(10,14,20,0.55)';
  ctx.fillRect(0, world.height / 2 - 28, world.width, 56);
  ctx.font = '600 18px system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif';
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  ctx.fillStyle = '#e6e9ed';
  ctx.fillText(text, world.width / 2, world.height / 2);
}
