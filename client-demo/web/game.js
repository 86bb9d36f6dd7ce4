// Tether browser game: login, canvas world, chat, rooms, sessions.
//
// The network side lives in tether-client.js; this file is the page. Your own player is
// predicted (inputs not yet acknowledged by the server are replayed on top of each
// snapshot); the others are drawn INTERP_DELAY_MS in the past, between the two
// snapshots around that time.
//
// Element ids the browser tests rely on: #login-username #login-password #login-submit
// #register-submit #game-canvas #status #room-name #scoreboard #chat-input #chat-log
// #sessions #overlay (data-code = the close code). #status has data-busy="true" while the
// client waits for a node that cannot vouch for the session right now (close 1013, 503
// not_ready / busy): a "server busy, retrying" state, never a logout.
// window.tetherDebug (read-only, a fresh frozen object on each read):
//   { connected, state, user, sessionId, you, room, players: {id: {x, y, name, score, ack}},
//     predicted: {x, y} | null, pendingInputs, corrections (snapshots that moved the
//     prediction by more than half a unit), items: [{id, x, y}], lastSnapshotTick, latencyMs }

import { TetherClient, TetherError, backoffMs, isTooManySockets, isTryLater } from './tether-client.js';

const INTERP_DELAY_MS = 100;
const PING_EVERY_MS = 2_000;
const SESSIONS_EVERY_MS = 15_000;
const MAX_PENDING = 120;
const MAX_CHAT_LINES = 200;
const ROOM_NAME = /^[a-z0-9_-]{1,32}$/;
const PLAYER_RADIUS = 12;
const ITEM_RADIUS = 7;

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  latency: $('latency'),
  reconnect: $('reconnect'),
  whoami: $('whoami'),
  logout: $('logout'),
  logoutAll: $('logout-all'),
  boot: $('boot'),
  auth: $('auth'),
  authForm: $('auth-form'),
  authMessage: $('auth-message'),
  username: $('login-username'),
  password: $('login-password'),
  loginSubmit: $('login-submit'),
  registerSubmit: $('register-submit'),
  game: $('game'),
  canvas: $('game-canvas'),
  roomName: $('room-name'),
  roomForm: $('room-form'),
  roomInput: $('room-input'),
  roomMessage: $('room-message'),
  roomPlayers: $('room-players'),
  scoreboard: $('scoreboard'),
  chatLog: $('chat-log'),
  chatForm: $('chat-form'),
  chatInput: $('chat-input'),
  sessionsBody: document.querySelector('#sessions tbody'),
  sessionsMessage: $('sessions-message'),
  sessionsRefresh: $('sessions-refresh'),
  overlay: $('overlay'),
  overlayTitle: $('overlay-title'),
  overlayReason: $('overlay-reason'),
  overlayCode: $('overlay-code'),
  overlayLogin: $('overlay-login'),
};
const ctx = ui.canvas.getContext('2d');

const client = new TetherClient({ pingEveryMs: PING_EVERY_MS });

// ------------------------------------------------------------------ game state

const game = {
  world: { width: 800, height: 600, speed: 200, tick_rate: 20, pickup_radius: 20 },
  desiredRoom: 'lobby',
  room: null,
  you: null,
  capacity: null,
  sessionId: null,
  names: new Map(), // id -> name, members of the room
  snapshots: [], // { time, tick, players: Map(id -> {x, y, score, ack}), items }
  latest: null,
  tickOffset: null, // performance.now() of tick 0, estimated
  predicted: null, // own position: last server position + unacknowledged inputs
  drawnSelf: null, // what is drawn for self, eased toward `predicted`
  pending: [], // inputs sent, not yet acknowledged: { seq, dx, dy }
  seq: 0,
  latencyMs: null,
  scoreSignature: '',
  inGame: false,
  leaving: null, // { room, until }: switching rooms, the old one's `left` not yet seen
  connectionLost: false, // said so in the chat log; say "Reconnected." on the next welcome
  busyShown: false, // said "the server is catching up" in the chat log since the last welcome
  corrections: 0, // snapshots that moved the prediction by more than half a unit
};
const keys = new Set();

// ------------------------------------------------------------------ debug view for tests

function debugState() {
  const players = {};
  if (game.latest) {
    for (const [id, p] of game.latest.players) {
      players[id] = Object.freeze({ x: p.x, y: p.y, score: p.score, ack: p.ack, name: game.names.get(id) ?? null });
    }
  }
  return Object.freeze({
    connected: client.connected,
    state: client.state,
    user: client.user?.username ?? null,
    sessionId: game.sessionId,
    you: game.you,
    room: game.room,
    players: Object.freeze(players),
    predicted: game.predicted ? Object.freeze({ ...game.predicted }) : null,
    pendingInputs: game.pending.length,
    corrections: game.corrections,
    items: Object.freeze((game.latest?.items ?? []).map((item) => Object.freeze({ ...item }))),
    lastSnapshotTick: game.latest?.tick ?? null,
    latencyMs: game.latencyMs,
  });
}
Object.defineProperty(window, 'tetherDebug', { get: debugState, enumerable: true, configurable: false });

// ------------------------------------------------------------------ movement (mirrors the server, in f32)

const f32 = Math.fround;
const clamp = (value, low, high) => Math.min(Math.max(value, low), high);

/** One input of one tick, exactly as the server computes it (f32 arithmetic). */
function step(position, dx, dy, world) {
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

function heldDirection() {
  const pressed = (...names) => names.some((name) => keys.has(name));
  const dx = (pressed('ArrowRight', 'KeyD') ? 1 : 0) - (pressed('ArrowLeft', 'KeyA') ? 1 : 0);
  const dy = (pressed('ArrowDown', 'KeyS') ? 1 : 0) - (pressed('ArrowUp', 'KeyW') ? 1 : 0);
  return { dx, dy };
}

let inputTimer = null;
function restartInputLoop() {
  clearInterval(inputTimer);
  inputTimer = setInterval(inputTick, 1000 / game.world.tick_rate);
}

function inputTick() {
  if (!client.connected || !game.room || !game.predicted) return;
  const { dx, dy } = heldDirection();
  if (dx === 0 && dy === 0) return;
  const seq = game.seq + 1;
  if (!client.input(seq, dx, dy)) return;
  game.seq = seq;
  game.pending.push({ seq, dx, dy });
  if (game.pending.length > MAX_PENDING) game.pending.splice(0, game.pending.length - MAX_PENDING);
  game.predicted = step(game.predicted, dx, dy, game.world);
}

const TYPING = new Set(['INPUT', 'TEXTAREA', 'SELECT']);
const KEY_NAMES = new Set(['ArrowUp', 'ArrowDown', 'ArrowLeft', 'ArrowRight', 'KeyW', 'KeyA', 'KeyS', 'KeyD']);
function keyName(event) {
  if (event.key && event.key.startsWith('Arrow')) return event.key;
  return event.code;
}
window.addEventListener('keydown', (event) => {
  if (!game.inGame || event.ctrlKey || event.metaKey || event.altKey) return;
  if (TYPING.has(event.target?.tagName) || event.target?.isContentEditable) return;
  const name = keyName(event);
  if (!KEY_NAMES.has(name)) return;
  keys.add(name);
  event.preventDefault();
});
window.addEventListener('keyup', (event) => {
  keys.delete(keyName(event));
});
window.addEventListener('blur', () => keys.clear());
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState !== 'visible') keys.clear();
});
ui.canvas.addEventListener('pointerdown', () => ui.canvas.focus());

// ------------------------------------------------------------------ socket events

client.on('state', ({ state, delayMs, code, busy }) => {
  const retry = busy ? 'server busy, retrying' : 'reconnecting';
  const text = {
    idle: 'offline',
    connecting: 'connecting',
    connected: 'connected',
    reconnecting: delayMs ? `${retry} in ${seconds(delayMs)} s` : retry,
    disconnected: code && code !== 1000 ? `disconnected (${code})` : 'disconnected',
    closed: 'disconnected',
  }[state];
  ui.status.textContent = text ?? state;
  ui.status.dataset.state = state;
  if (busy) ui.status.dataset.busy = 'true';
  else delete ui.status.dataset.busy;
  // A close the client does not retry (1000, 1008, 1009, an unknown code): offer a retry.
  ui.reconnect.hidden = !(state === 'disconnected' && game.inGame && client.loggedIn);
  if (state !== 'connected') {
    resetRoom();
    ui.latency.textContent = '';
    game.latencyMs = null;
  }
});

client.on('welcome', (message) => {
  if (game.connectionLost) systemLine('Reconnected.');
  game.connectionLost = false;
  game.busyShown = false;
  game.sessionId = message.session_id;
  game.seq = 0;
  game.pending = [];
  client.join(game.desiredRoom);
});

client.on('joined', (message) => {
  // The server enters the new room before it leaves the old one: until the old room's
  // `left` arrives, snapshots may still come from it (they carry no room name).
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
  ui.roomName.textContent = message.room;
  showRoomMessage('');
  renderPeople();
  systemLine(`You joined ${message.room} (${game.names.size}/${message.capacity}).`);
});

client.on('left', (message) => {
  if (game.leaving && message.room === game.leaving.room) {
    game.leaving = null; // the switch to the new room is complete
  } else if (message.room === game.room) {
    resetRoom();
  } else {
    return;
  }
  systemLine(`You left ${message.room}.`);
});

client.on('presence', (message) => {
  if (message.room !== game.room || !message.player) return;
  if (message.event === 'join') {
    game.names.set(message.player.id, message.player.name);
    systemLine(`${message.player.name} joined.`);
  } else if (message.event === 'leave') {
    game.names.delete(message.player.id);
    systemLine(`${message.player.name} left.`);
  }
  renderPeople();
  game.scoreSignature = '';
});

client.on('snapshot', (message) => {
  if (!game.room) return;
  const now = performance.now();
  if (game.leaving) {
    if (now < game.leaving.until) return; // possibly the old room's
    game.leaving = null;
  }
  if (game.latest && message.tick <= game.latest.tick) {
    if (game.latest.tick - message.tick < 40) return; // late or repeated
    // Far behind: another timeline (a new room); start over.
    game.snapshots = [];
    game.latest = null;
    game.tickOffset = null;
  }
  const tickMs = 1000 / game.world.tick_rate;
  // Map server ticks onto this page's clock: the earliest arrival is the best guess of
  // when a tick happened; drift up slowly, and start over after a long gap.
  const sample = now - message.tick * tickMs;
  if (game.tickOffset === null || sample < game.tickOffset || sample - game.tickOffset > 250) {
    game.tickOffset = sample;
  } else {
    game.tickOffset += (sample - game.tickOffset) * 0.02;
  }
  const players = new Map();
  for (const p of message.players ?? []) {
    players.set(p.id, { x: f32(p.x), y: f32(p.y), score: p.score ?? 0, ack: p.ack ?? 0 });
  }
  const snapshot = { tick: message.tick, time: message.tick * tickMs + game.tickOffset, players, items: message.items ?? [] };
  game.latest = snapshot;
  game.snapshots.push(snapshot);
  while (game.snapshots.length > 2 && game.snapshots[1].time < now - 1_000) game.snapshots.shift();

  // Reconciliation: the server's word, then what it has not seen yet.
  const me = players.get(game.you);
  if (me) {
    game.pending = game.pending.filter((input) => input.seq > me.ack);
    let position = { x: me.x, y: me.y };
    for (const input of game.pending) position = step(position, input.dx, input.dy, game.world);
    const before = game.predicted;
    if (before && Math.hypot(before.x - position.x, before.y - position.y) > 0.5) game.corrections += 1;
    game.predicted = position;
    if (!game.drawnSelf) game.drawnSelf = { ...position };
  }
  let newcomer = false;
  for (const id of players.keys()) if (!game.names.has(id)) newcomer = true;
  if (newcomer) renderPeople();
  renderScoreboard();
});

client.on('latency', ({ rttMs }) => {
  if (!(rttMs >= 0 && rttMs < 60_000)) return;
  game.latencyMs = game.latencyMs === null ? rttMs : game.latencyMs * 0.7 + rttMs * 0.3;
  ui.latency.textContent = `${Math.round(game.latencyMs)} ms`;
});

client.on('chat', (message) => {
  if (message.room && game.room && message.room !== game.room) return;
  const line = document.createElement('div');
  line.className = 'line';
  const time = document.createElement('span');
  time.className = 'time';
  time.textContent = clock(message.at);
  const from = document.createElement('span');
  from.className = 'from';
  from.textContent = `${message.from?.name ?? '?'}:`;
  from.style.color = playerColor(message.from?.id ?? 0, 45);
  const text = document.createElement('span');
  text.textContent = String(message.text ?? '');
  line.append(time, from, text);
  appendChat(line);
});

client.on('error', (message) => {
  const text = `${message.message || message.code}`;
  if (message.code === 'room_full') showRoomMessage('That room is full; you stayed where you were.');
  else if (message.code === 'not_in_room') showRoomMessage(text);
  problemLine(message.code === 'rate_limited' ? `Slow down: ${text}` : `Server: ${text}`);
});

client.on('close', ({ code, reason, willReconnect, busy }) => {
  if (!game.inGame) return;
  const what = `${code}${reason ? `: ${reason}` : ''}`;
  if (willReconnect && busy) {
    // 1013: this node cannot vouch for the session right now; the client keeps it and retries.
    if (!game.busyShown) {
      game.busyShown = true;
      game.connectionLost = true;
      systemLine('This server is catching up; retrying… You are still logged in.');
    }
    return;
  }
  if (willReconnect) {
    if (code !== 4401 && !game.connectionLost) {
      game.connectionLost = true;
      systemLine(`Connection lost (${what}); reconnecting…`);
    }
    return;
  }
  if ((code >= 4001 && code <= 4005) || code === 4401) return; // the overlay or the form says it
  if (isTooManySockets(code, reason)) {
    problemLine('This login is already playing in too many tabs: close one, then use Reconnect.');
    return;
  }
  problemLine(`Disconnected (${what}). Use Reconnect at the top to play again.`);
});

client.on('terminal', ({ code, reason, text }) => {
  showOverlay(code, reason, text);
});

client.on('loggedout', ({ reason, error }) => {
  if (reason === 'logout' || reason === 'logout-all') {
    leaveGame('');
  } else if (reason === 'other-tab') {
    leaveGame('You logged out in another tab.', 'info');
  } else {
    leaveGame(`Your session ended: ${errorText(error)}`);
  }
});

// An HTTP call answered 503 not_ready / busy that the client sends again shortly.
client.on('retrying', ({ path, delayMs, code }) => {
  const text = `${code === 'busy' ? 'The server is busy' : 'This server is catching up'}; retrying in ${seconds(delayMs)} s…`;
  if (!ui.boot.hidden) {
    showBootNotice(`${text} Your session is kept.`, true);
  } else if (!ui.auth.hidden && ui.loginSubmit.disabled) {
    setMessage(ui.authMessage, text, 'info'); // a login or registration in flight
  } else if (game.inGame && path === '/api/sessions') {
    showSessionsBusy(text);
  } else if (game.inGame && path.startsWith('/api/auth/logout')) {
    systemLine(`Logging out: ${text}`);
  }
});

client.on('auth', ({ user, changed }) => {
  showWhoami(user);
  if (changed && game.inGame) systemLine(`Now playing as ${user?.username} (signed in from another tab).`);
});

// ------------------------------------------------------------------ page flow

async function boot() {
  restartInputLoop();
  requestAnimationFrame(frame);
  await resumeSession();
}

// Resuming on a node that cannot vouch for sessions right now (503 not_ready / busy once
// the client's own retries are spent): keep the boot notice, say so, and try again later
// with a growing jittered delay. The refresh cookie is untouched, so nobody is logged out.
let resumeTimer = null;
let resumeWaits = 0;
let resumeRound = 0; // bumped by "Log in instead": a resume still in flight is then ignored

async function resumeSession() {
  clearTimeout(resumeTimer);
  resumeTimer = null;
  const round = resumeRound;
  try {
    const user = await client.resume();
    if (round !== resumeRound) {
      // The player went to the form meanwhile: only a session that came back is taken.
      if (user && !game.inGame && !ui.loginSubmit.disabled) enterGame();
      return;
    }
    resumeWaits = 0;
    if (user) enterGame();
    else showAuth('');
  } catch (error) {
    if (round !== resumeRound) return;
    if (isTryLater(error)) {
      waitToResume(error);
      return;
    }
    resumeWaits = 0;
    const code = error instanceof TetherError ? error.code : null;
    if (code === 'session_revoked' || code === 'session_expired') {
      showAuth(`Your last session has ended (${error.message}). Log in again.`, 'info');
    } else if (code === 'banned') {
      showAuth(errorText(error));
    } else {
      showAuth(`Could not resume your session: ${errorText(error)}`);
    }
  }
}

function waitToResume(error) {
  resumeWaits += 1;
  const delayMs = backoffMs(resumeWaits, { baseMs: 1_000, maxMs: 30_000, floorMs: error.retryAfterMs ?? 0 });
  resumeTimer = setTimeout(resumeSession, delayMs);
  const what = error.code === 'busy' ? 'The server is busy' : 'This server is catching up';
  showBootNotice(`${what}; retrying in ${seconds(delayMs)} s… Your session is kept.`, true);
}

/** The boot notice with a status text; with `actions`, "Retry now" and "Log in instead". */
function showBootNotice(text, actions = false) {
  ui.boot.hidden = false;
  ui.boot.setAttribute('role', 'status');
  ui.boot.setAttribute('aria-live', 'polite');
  ui.boot.dataset.busy = 'true';
  ui.status.textContent = 'server busy';
  ui.status.dataset.state = 'reconnecting';
  ui.status.dataset.busy = 'true';
  const line = document.createElement('p');
  line.id = 'boot-message';
  line.textContent = text;
  const hadFocus = ui.boot.contains(document.activeElement) ? document.activeElement.id : null;
  if (!actions) {
    ui.boot.replaceChildren(line);
    return;
  }
  const retry = smallButton('boot-retry', 'Retry now', () => {
    showBootNotice('Checking for a signed-in session…');
    resumeSession();
  });
  const login = smallButton('boot-login', 'Log in instead', () => {
    clearTimeout(resumeTimer);
    resumeTimer = null;
    resumeWaits = 0;
    resumeRound += 1;
    showAuth('', 'info');
  });
  const row = document.createElement('p');
  row.append(retry, ' ', login);
  ui.boot.replaceChildren(line, row);
  // Keep the keyboard where it was across updates (the buttons are rebuilt).
  if (hadFocus === 'boot-login') login.focus();
  else retry.focus();
}

function smallButton(id, text, onClick) {
  const button = document.createElement('button');
  button.type = 'button';
  button.id = id;
  button.className = 'small-button';
  button.textContent = text;
  button.addEventListener('click', onClick);
  return button;
}

function clearBootNotice() {
  delete ui.boot.dataset.busy;
  if (ui.status.dataset.busy && !game.inGame) {
    ui.status.textContent = 'offline';
    ui.status.dataset.state = 'idle';
    delete ui.status.dataset.busy;
  }
}

function showAuth(message, kind = 'error') {
  clearBootNotice();
  ui.boot.hidden = true;
  ui.game.hidden = !game.inGame;
  ui.auth.hidden = false;
  setMessage(ui.authMessage, message, kind);
  setAuthBusy(false);
  (ui.username.value ? ui.password : ui.username).focus();
}

function enterGame() {
  hideOverlay();
  clearBootNotice();
  game.inGame = true;
  ui.boot.hidden = true;
  ui.auth.hidden = true;
  ui.game.hidden = false;
  setMessage(ui.authMessage, '');
  ui.password.value = '';
  ui.logout.hidden = false;
  ui.logoutAll.hidden = false;
  showWhoami(client.user);
  ui.chatLog.replaceChildren();
  client.connect();
  loadSessions();
  ui.canvas.focus();
}

function leaveGame(message, kind = 'error') {
  game.inGame = false;
  resetRoom();
  keys.clear();
  ui.game.hidden = true;
  ui.logout.hidden = true;
  ui.logoutAll.hidden = true;
  ui.whoami.hidden = true;
  hideOverlay();
  ui.status.textContent = 'offline';
  ui.status.dataset.state = 'idle';
  ui.reconnect.hidden = true;
  showAuth(message, kind);
}

function showWhoami(user) {
  if (!user) return;
  ui.whoami.textContent = user.role === 'admin' ? `${user.username} (admin)` : user.username;
  ui.whoami.hidden = false;
  if (!ui.username.value) ui.username.value = user.username;
}

function resetRoom() {
  game.room = null;
  game.leaving = null;
  game.you = null;
  game.names.clear();
  game.snapshots = [];
  game.latest = null;
  game.tickOffset = null;
  game.predicted = null;
  game.drawnSelf = null;
  game.pending = [];
  game.scoreSignature = '';
  ui.roomName.textContent = '—';
  renderPeople();
  renderScoreboard();
}

function setAuthBusy(busy) {
  ui.loginSubmit.disabled = busy;
  ui.registerSubmit.disabled = busy;
}

function credentials() {
  const username = ui.username.value.trim();
  const password = ui.password.value;
  if (!/^[A-Za-z0-9_-]{3,32}$/.test(username)) {
    return { problem: 'A username has 3 to 32 letters, digits, _ or -.' };
  }
  if (password.length < 8 || password.length > 128) return { problem: 'A password has 8 to 128 characters.' };
  return { username, password };
}

ui.authForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const { username, password, problem } = credentials();
  if (problem) return setMessage(ui.authMessage, problem);
  setAuthBusy(true);
  setMessage(ui.authMessage, 'Logging in…', 'info');
  try {
    await client.login(username, password);
    enterGame();
  } catch (error) {
    setAuthBusy(false);
    setMessage(ui.authMessage, errorText(error), isTryLater(error) ? 'info' : 'error');
  }
});

ui.registerSubmit.addEventListener('click', async () => {
  const { username, password, problem } = credentials();
  if (problem) return setMessage(ui.authMessage, problem);
  setAuthBusy(true);
  setMessage(ui.authMessage, 'Creating your account…', 'info');
  try {
    await client.register(username, password);
    await client.login(username, password);
    enterGame();
  } catch (error) {
    setAuthBusy(false);
    setMessage(ui.authMessage, errorText(error), isTryLater(error) ? 'info' : 'error');
  }
});

ui.logout.addEventListener('click', async () => {
  try {
    await client.logout();
  } catch (error) {
    leaveGame(`Logged out here; the server said: ${errorText(error)}`);
  }
});

ui.logoutAll.addEventListener('click', async () => {
  if (!confirm('Log out on every device?')) return;
  try {
    await client.logoutAll();
  } catch (error) {
    leaveGame(`Logged out here; the server said: ${errorText(error)}`);
  }
});

ui.roomForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const room = ui.roomInput.value.trim().toLowerCase();
  if (!ROOM_NAME.test(room)) {
    showRoomMessage('A room name has 1 to 32 of a-z, 0-9, _ and -.');
    return;
  }
  if (room === game.room) return showRoomMessage(`You are already in ${room}.`, 'info');
  // desiredRoom follows `joined`, so that a full room does not stick; offline, the
  // next welcome joins it.
  if (client.join(room)) {
    showRoomMessage(`Joining ${room}…`, 'info');
  } else {
    game.desiredRoom = room;
    showRoomMessage(`Not connected; you will join ${room} once connected.`, 'info');
  }
  ui.roomInput.value = '';
  ui.canvas.focus();
});

ui.chatForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = ui.chatInput.value.trim();
  if (!text) return;
  if (text.length > 200) return problemLine('A chat message has at most 200 characters.');
  if (!game.room) return problemLine('Join a room to chat.');
  if (client.chat(text)) ui.chatInput.value = '';
  else problemLine('Not connected.');
});

ui.reconnect.addEventListener('click', () => {
  ui.reconnect.hidden = true;
  if (client.loggedIn) client.connect();
});

ui.overlayLogin.addEventListener('click', () => {
  leaveGame('');
});

// ------------------------------------------------------------------ overlay

function showOverlay(code, reason, text) {
  ui.overlay.dataset.code = String(code);
  ui.overlayTitle.textContent = text;
  ui.overlayReason.textContent = reason ? `The server said: “${reason}”.` : 'The server gave no reason.';
  ui.overlayCode.textContent = `Close code ${code}. You will not be reconnected; log in again to keep playing.`;
  ui.overlay.hidden = false;
  ui.logout.hidden = true;
  ui.logoutAll.hidden = true;
  keys.clear();
  ui.overlayLogin.focus();
}

function hideOverlay() {
  ui.overlay.hidden = true;
  delete ui.overlay.dataset.code;
}

// ------------------------------------------------------------------ sessions panel

let sessionsTimer = null;
async function loadSessions() {
  clearTimeout(sessionsTimer);
  if (!game.inGame || !client.loggedIn) return;
  sessionsTimer = setTimeout(loadSessions, SESSIONS_EVERY_MS);
  if (document.visibilityState !== 'visible') return;
  try {
    const sessions = await client.listSessions();
    renderSessions(sessions);
    if (ui.sessionsMessage.dataset.kind === 'error' || ui.sessionsMessage.dataset.busy) setMessage(ui.sessionsMessage, '');
    delete ui.sessionsMessage.dataset.busy;
  } catch (error) {
    if (!game.inGame) return;
    if (isTryLater(error)) showSessionsBusy('This server is catching up; the list will come back shortly.');
    else setMessage(ui.sessionsMessage, `Could not list your sessions: ${errorText(error)}`);
  }
}

/** A calm note in the sessions panel while the server cannot answer for sessions. */
function showSessionsBusy(text) {
  setMessage(ui.sessionsMessage, text, 'info');
  ui.sessionsMessage.dataset.busy = 'true';
}

function renderSessions(sessions) {
  const rows = [...sessions]
    .sort((a, b) => (b.current ? 1 : 0) - (a.current ? 1 : 0) || String(b.last_seen_at).localeCompare(String(a.last_seen_at)))
    .map((session) => {
      const row = document.createElement('tr');
      row.dataset.sessionId = session.id;
      row.dataset.current = String(Boolean(session.current));
      const device = document.createElement('td');
      const ua = document.createElement('div');
      ua.className = 'ua';
      ua.textContent = describeAgent(session.user_agent);
      ua.title = session.user_agent ?? '';
      device.append(ua);
      if (session.current) {
        const badge = document.createElement('span');
        badge.className = 'badge';
        badge.textContent = 'this browser';
        ua.append(badge);
      }
      const ip = cell(session.ip ?? '—');
      const created = cell(dateTime(session.created_at));
      const seen = cell(ago(session.last_seen_at));
      seen.title = session.last_seen_at ?? '';
      const sockets = cell(String(session.sockets ?? 0));
      const action = document.createElement('td');
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'danger small-button';
      button.dataset.action = 'revoke';
      button.textContent = session.current ? 'Log out' : 'Revoke';
      button.addEventListener('click', () => revoke(session, button));
      action.append(button);
      row.append(device, ip, created, seen, sockets, action);
      return row;
    });
  if (!rows.length) {
    const row = document.createElement('tr');
    const empty = cell('No sessions.');
    empty.colSpan = 6;
    row.append(empty);
    rows.push(row);
  }
  ui.sessionsBody.replaceChildren(...rows);
}

async function revoke(session, button) {
  button.disabled = true;
  try {
    if (session.current) {
      await client.logout();
      return;
    }
    await client.revokeSession(session.id);
    setMessage(ui.sessionsMessage, 'Session revoked.', 'ok');
  } catch (error) {
    setMessage(ui.sessionsMessage, `Could not revoke: ${errorText(error)}`);
  }
  loadSessions();
}

ui.sessionsRefresh.addEventListener('click', () => loadSessions());
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && game.inGame) loadSessions();
});

// ------------------------------------------------------------------ side panels

function renderPeople() {
  if (!game.room) {
    const empty = document.createElement('li');
    empty.className = 'empty';
    empty.textContent = 'Not in a room.';
    ui.roomPlayers.replaceChildren(empty);
    return;
  }
  const people = [...game.names.entries()].sort((a, b) => (a[0] === game.you ? -1 : b[0] === game.you ? 1 : a[1].localeCompare(b[1])));
  ui.roomPlayers.replaceChildren(
    ...people.map(([id, name]) => {
      const item = document.createElement('li');
      item.dataset.playerId = String(id);
      if (id === game.you) item.className = 'you';
      const swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.style.background = playerColor(id);
      const label = document.createElement('span');
      label.textContent = id === game.you ? `${name} (you)` : name;
      item.append(swatch, label);
      return item;
    }),
  );
}

function renderScoreboard() {
  const entries = game.latest
    ? [...game.latest.players.entries()].map(([id, p]) => ({ id, name: game.names.get(id) ?? `#${id}`, score: p.score }))
    : [];
  entries.sort((a, b) => b.score - a.score || a.name.localeCompare(b.name) || a.id - b.id);
  const signature = entries.map((e) => `${e.id}:${e.name}:${e.score}`).join('|') + `|${game.you}`;
  if (signature === game.scoreSignature) return;
  game.scoreSignature = signature;
  if (!entries.length) {
    const empty = document.createElement('li');
    empty.className = 'empty';
    empty.textContent = game.room ? 'Waiting for the first tick…' : 'Join a room to play.';
    ui.scoreboard.replaceChildren(empty);
    return;
  }
  ui.scoreboard.replaceChildren(
    ...entries.map((entry) => {
      const item = document.createElement('li');
      item.dataset.playerId = String(entry.id);
      if (entry.id === game.you) item.className = 'you';
      const swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.style.background = playerColor(entry.id);
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = entry.id === game.you ? `${entry.name} (you)` : entry.name;
      const score = document.createElement('span');
      score.className = 'score';
      score.textContent = String(entry.score);
      item.append(swatch, name, score);
      return item;
    }),
  );
}

function appendChat(line) {
  const log = ui.chatLog;
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 30;
  log.append(line);
  while (log.childElementCount > MAX_CHAT_LINES) log.firstElementChild.remove();
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function systemLine(text, className = 'system') {
  const line = document.createElement('div');
  line.className = `line ${className}`;
  const time = document.createElement('span');
  time.className = 'time';
  time.textContent = clock();
  const body = document.createElement('span');
  body.textContent = text;
  line.append(time, body);
  appendChat(line);
}

function problemLine(text) {
  systemLine(text, 'problem');
}

function showRoomMessage(text, kind = 'error') {
  setMessage(ui.roomMessage, text, kind);
}

// ------------------------------------------------------------------ rendering

let lastFrame = performance.now();
function frame(now) {
  const dt = Math.min(0.1, Math.max(0, (now - lastFrame) / 1000));
  lastFrame = now;
  if (!ui.game.hidden) draw(now, dt);
  requestAnimationFrame(frame);
}

function fitCanvas() {
  const world = game.world;
  const aspect = `${world.width} / ${world.height}`;
  if (ui.canvas.style.aspectRatio !== aspect) ui.canvas.style.aspectRatio = aspect;
  const rect = ui.canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(rect.width * dpr));
  const height = Math.max(1, Math.round(rect.height * dpr));
  if (ui.canvas.width !== width || ui.canvas.height !== height) {
    ui.canvas.width = width;
    ui.canvas.height = height;
  }
  ctx.setTransform(width / world.width, 0, 0, height / world.height, 0, 0);
  return width / world.width;
}

function interpolatedOthers(renderTime) {
  const list = game.snapshots;
  const out = new Map();
  if (!list.length) return out;
  let older = list[0];
  let newer = null;
  for (const snapshot of list) {
    if (snapshot.time <= renderTime) older = snapshot;
    else {
      newer = snapshot;
      break;
    }
  }
  if (older.time > renderTime || !newer) {
    // Nothing to blend: before the first or after the last snapshot.
    const only = older.time > renderTime ? list[0] : list[list.length - 1];
    for (const [id, p] of only.players) out.set(id, { x: p.x, y: p.y });
    return out;
  }
  const alpha = clamp((renderTime - older.time) / (newer.time - older.time || 1), 0, 1);
  for (const [id, b] of newer.players) {
    const a = older.players.get(id);
    out.set(id, a ? { x: a.x + (b.x - a.x) * alpha, y: a.y + (b.y - a.y) * alpha } : { x: b.x, y: b.y });
  }
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

  if (!game.room || !game.latest) {
    caption(client.connected ? (game.room ? 'Waiting for the first tick…' : 'Not in a room: join one on the right.') : statusCaption());
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

  // Others, in the past.
  const others = interpolatedOthers(now - INTERP_DELAY_MS);
  for (const [id, p] of others) {
    if (id === game.you) continue;
    drawPlayer(id, p.x, p.y, game.names.get(id) ?? `#${id}`, false);
  }

  // Self, predicted, eased toward the prediction so that 20 Hz steps look smooth.
  if (game.predicted) {
    const target = game.predicted;
    if (!game.drawnSelf || Math.hypot(target.x - game.drawnSelf.x, target.y - game.drawnSelf.y) > 60) {
      game.drawnSelf = { ...target };
    } else {
      const k = 1 - Math.exp(-dt * 25);
      game.drawnSelf.x += (target.x - game.drawnSelf.x) * k;
      game.drawnSelf.y += (target.y - game.drawnSelf.y) * k;
    }
    drawPlayer(game.you, game.drawnSelf.x, game.drawnSelf.y, game.names.get(game.you) ?? 'you', true);
  }

  if (!client.connected) caption(statusCaption());
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

function caption(text) {
  const world = game.world;
  ctx.fillStyle = 'rgba(10,14,20,0.55)';
  ctx.fillRect(0, world.height / 2 - 28, world.width, 56);
  ctx.font = '600 18px system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif';
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  ctx.fillStyle = '#e6e9ed';
  ctx.fillText(text, world.width / 2, world.height / 2);
}

function statusCaption() {
  const text = ui.status.textContent || 'offline';
  return text.charAt(0).toUpperCase() + text.slice(1) + '…';
}

// ------------------------------------------------------------------ helpers

function playerColor(id, lightness = 62) {
  const hue = (Number(id) * 137.508 + 200) % 360;
  return `hsl(${hue.toFixed(1)} 70% ${lightness}%)`;
}

function setMessage(node, text, kind = 'error') {
  node.textContent = text || '';
  node.hidden = !text;
  node.dataset.kind = kind;
}

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

function errorText(error) {
  if (error instanceof TetherError) {
    if (error.code === 'banned' && error.body) {
      const until = error.body.until ? ` until ${dateTime(error.body.until)}` : '';
      const why = error.body.reason ? `: ${error.body.reason}` : '';
      return `You are banned${until}${why}.`;
    }
    if (error.code === 'rate_limited') return `${error.message} (too many attempts; wait a moment).`;
    if (isTryLater(error)) {
      const wait = error.retryAfterMs ? `in ${seconds(error.retryAfterMs)} s` : 'in a moment';
      const what = error.code === 'busy' ? 'The server is busy' : 'This server is catching up';
      return `${what}; please try again ${wait}.`;
    }
    return error.message || error.code;
  }
  return String(error?.message || error);
}

/** Milliseconds as seconds for people: "3.4", "12". */
function seconds(ms) {
  const s = Math.max(0, ms) / 1000;
  return s < 10 ? s.toFixed(1) : String(Math.round(s));
}

function clock(at) {
  const date = at ? new Date(at) : new Date();
  if (Number.isNaN(date.getTime())) return '';
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function dateTime(at) {
  const date = new Date(at);
  if (!at || Number.isNaN(date.getTime())) return '—';
  return date.toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });
}

function ago(at) {
  const date = new Date(at);
  if (!at || Number.isNaN(date.getTime())) return '—';
  const seconds = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (seconds < 45) return 'just now';
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 36 * 3600) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function describeAgent(agent) {
  if (!agent) return 'Unknown device';
  const version = (pattern, name) => {
    const match = pattern.exec(agent);
    return match ? `${name} ${match[1]}` : null;
  };
  const browser =
    version(/Edg\/(\d+)/, 'Edge') ||
    version(/Firefox\/(\d+)/, 'Firefox') ||
    version(/HeadlessChrome\/(\d+)/, 'Headless Chrome') ||
    version(/Chrom(?:e|ium)\/(\d+)/, 'Chrome') ||
    version(/Version\/(\d+).*Safari\//, 'Safari');
  const os =
    (/Windows/.test(agent) && 'Windows') ||
    (/Android/.test(agent) && 'Android') ||
    (/iPhone|iPad/.test(agent) && 'iOS') ||
    (/Mac OS X/.test(agent) && 'macOS') ||
    (/Linux/.test(agent) && 'Linux') ||
    null;
  if (browser) return os ? `${browser} on ${os}` : browser;
  return agent.length > 60 ? `${agent.slice(0, 60)}…` : agent;
}

boot();
