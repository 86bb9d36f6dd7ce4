// Tether browser game: the entry module. Boots the page (resume or the login form),
// wires the modules together, and owns the top bar, the forms and the keyboard.
//
//   game-net.js         the socket: joining, inputs and acks, snapshot intake, `game` state
//   game-snapshots.js   binary frame decoder, view history, per-player samples
//   game-prediction.js  your own player ahead of the server (the `step` rule)
//   game-render.js      the canvas: interpolation of the others, drawing
//   game-panels.js      people, scoreboard, chat, sessions, the session-ended overlay
//
// Snapshots come as binary frames, or as JSON with ?encoding=json in the page URL.
//
// Element ids the browser tests rely on: #login-username #login-password #login-submit
// #register-submit #game-canvas #status #room-name #scoreboard #chat-input #chat-log
// #sessions #overlay (data-code = the close code). #status has data-busy="true" while the
// client waits for a node that cannot vouch for the session right now (close 1013, 503
// not_ready / busy): a "server busy, retrying" state, never a logout.
// window.tetherDebug (read-only, a fresh frozen object on each read):
//   { connected, state, user, sessionId, you, room, players: {id: {x, y, name, score, ack}},
//     predicted: {x, y} | null, pendingInputs, corrections (snapshots that moved the
//     prediction by more than half a unit), items: [{id, x, y}], lastSnapshotTick, latencyMs,
//     encoding ('binary' | 'json'), binaryFrames (received), frameErrors (binary frames
//     that did not decode), lastFrameError, missingBaselines (deltas from a view this page
//     did not hold: answered with ack 0), snapshotIntervalMs: {p10, p50, p90, p99, count}
//     (arrival intervals of the last 200 snapshots, JSON or binary) }

import { TetherError, backoffMs, isTooManySockets, isTryLater } from './tether-client.js';
import { client, debugState, game, joinRoom, onNet, resetRoom, restartInputLoop, setDirectionSource } from './game-net.js';
import { startRender } from './game-render.js';
import {
  clearChat,
  errorText,
  hideOverlay,
  initPanels,
  invalidateScores,
  loadSessions,
  problemLine,
  renderPeople,
  renderRoom,
  renderScoreboard,
  seconds,
  setMessage,
  showChat,
  showOverlay,
  showRoomMessage,
  showServerError,
  showSessionsBusy,
  systemLine,
} from './game-panels.js';

const ROOM_NAME = /^[a-z0-9_-]{1,32}$/;

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
  roomForm: $('room-form'),
  roomInput: $('room-input'),
  chatForm: $('chat-form'),
  chatInput: $('chat-input'),
  overlayLogin: $('overlay-login'),
};

const page = {
  connectionLost: false, // said so in the chat log; say "Reconnected." on the next welcome
  busyShown: false, // said "the server is catching up" in the chat log since the last welcome
};

Object.defineProperty(window, 'tetherDebug', { get: debugState, enumerable: true, configurable: false });

// ------------------------------------------------------------------ keyboard

const keys = new Set();
const TYPING = new Set(['INPUT', 'TEXTAREA', 'SELECT']);
const KEY_NAMES = new Set(['ArrowUp', 'ArrowDown', 'ArrowLeft', 'ArrowRight', 'KeyW', 'KeyA', 'KeyS', 'KeyD']);

function keyName(event) {
  if (event.key && event.key.startsWith('Arrow')) return event.key;
  return event.code;
}

function heldDirection() {
  const pressed = (...names) => names.some((name) => keys.has(name));
  const dx = (pressed('ArrowRight', 'KeyD') ? 1 : 0) - (pressed('ArrowLeft', 'KeyA') ? 1 : 0);
  const dy = (pressed('ArrowDown', 'KeyS') ? 1 : 0) - (pressed('ArrowUp', 'KeyW') ? 1 : 0);
  return { dx, dy };
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

// ------------------------------------------------------------------ what the room does

onNet('room', renderRoom);
onNet('joined', ({ room, count, capacity }) => {
  showRoomMessage('');
  systemLine(`You joined ${room} (${count}/${capacity}).`);
});
onNet('left', ({ room }) => systemLine(`You left ${room}.`));
onNet('presence', ({ event, name }) => {
  systemLine(event === 'join' ? `${name} joined.` : `${name} left.`);
  renderPeople();
  invalidateScores();
});
onNet('frame', ({ newcomer }) => {
  if (newcomer) renderPeople();
  renderScoreboard();
});
onNet('latency', ({ ms }) => {
  ui.latency.textContent = ms === null ? '' : `${Math.round(ms)} ms`;
});

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
});

client.on('welcome', () => {
  if (page.connectionLost) systemLine('Reconnected.');
  page.connectionLost = false;
  page.busyShown = false;
});

client.on('chat', showChat);
client.on('error', showServerError);

client.on('close', ({ code, reason, willReconnect, busy }) => {
  if (!game.inGame) return;
  const what = `${code}${reason ? `: ${reason}` : ''}`;
  if (willReconnect && busy) {
    // 1013: this node cannot vouch for the session right now; the client keeps it and retries.
    if (!page.busyShown) {
      page.busyShown = true;
      page.connectionLost = true;
      systemLine('This server is catching up; retrying… You are still logged in.');
    }
    return;
  }
  if (willReconnect) {
    if (code !== 4401 && !page.connectionLost) {
      page.connectionLost = true;
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
  ui.logout.hidden = true;
  ui.logoutAll.hidden = true;
  keys.clear();
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
  initPanels();
  renderRoom();
  setDirectionSource(heldDirection);
  restartInputLoop();
  startRender(ui.canvas, statusCaption);
  await resumeSession();
}

function statusCaption() {
  const text = ui.status.textContent || 'offline';
  return text.charAt(0).toUpperCase() + text.slice(1) + '…';
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
  clearChat();
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
  if (joinRoom(room)) {
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

boot();
