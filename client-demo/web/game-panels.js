// game-panels.js: everything on the page around the canvas that shows game state.
//
// The side panels (people in the room, the scoreboard, the chat log, "your sessions"),
// the overlay that says why a session ended, and the wording helpers the page shares
// (errorText, seconds, setMessage). Reads `game` (game-net.js); changes only the DOM.
//
// Element ids the browser tests rely on: #room-name #scoreboard #chat-log #sessions
// #overlay (data-code = the close code).

import { TetherError, isTryLater } from './tether-client.js';
import { client, game } from './game-net.js';
import { playerColor } from './game-render.js';

const SESSIONS_EVERY_MS = 15_000;
const MAX_CHAT_LINES = 200;

const $ = (id) => document.getElementById(id);
const ui = {
  roomName: $('room-name'),
  roomMessage: $('room-message'),
  roomPlayers: $('room-players'),
  scoreboard: $('scoreboard'),
  chatLog: $('chat-log'),
  sessionsBody: document.querySelector('#sessions tbody'),
  sessionsMessage: $('sessions-message'),
  sessionsRefresh: $('sessions-refresh'),
  overlay: $('overlay'),
  overlayTitle: $('overlay-title'),
  overlayReason: $('overlay-reason'),
  overlayCode: $('overlay-code'),
  overlayLogin: $('overlay-login'),
};

let scoreSignature = ''; // what the scoreboard shows; redrawn only when it changes

export function initPanels() {
  ui.sessionsRefresh.addEventListener('click', () => loadSessions());
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && game.inGame) loadSessions();
  });
}

// ------------------------------------------------------------------ room, people, scores

/** The room changed (joined, left, reset): its name, its people, its scores. */
export function renderRoom() {
  ui.roomName.textContent = game.room ?? '—';
  scoreSignature = '';
  renderPeople();
  renderScoreboard();
}

/** Names changed: the scoreboard shows them too. */
export function invalidateScores() {
  scoreSignature = '';
}

export function renderPeople() {
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

export function renderScoreboard() {
  const entries = game.latest
    ? [...game.latest.players.entries()].map(([id, p]) => ({ id, name: game.names.get(id) ?? `#${id}`, score: p.score }))
    : [];
  entries.sort((a, b) => b.score - a.score || a.name.localeCompare(b.name) || a.id - b.id);
  const signature = entries.map((e) => `${e.id}:${e.name}:${e.score}`).join('|') + `|${game.you}|${game.room}`;
  if (signature === scoreSignature) return;
  scoreSignature = signature;
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

export function showRoomMessage(text, kind = 'error') {
  setMessage(ui.roomMessage, text, kind);
}

// ------------------------------------------------------------------ chat

/** A chat line from the server (rendered as text, never as markup). */
export function showChat(message) {
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
}

/** A server `error` message: in the chat log, and under the room form when it is about rooms. */
export function showServerError(message) {
  const text = `${message.message || message.code}`;
  if (message.code === 'room_full') showRoomMessage('That room is full; you stayed where you were.');
  else if (message.code === 'not_in_room') showRoomMessage(text);
  problemLine(message.code === 'rate_limited' ? `Slow down: ${text}` : `Server: ${text}`);
}

export function clearChat() {
  ui.chatLog.replaceChildren();
}

function appendChat(line) {
  const log = ui.chatLog;
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 30;
  log.append(line);
  while (log.childElementCount > MAX_CHAT_LINES) log.firstElementChild.remove();
  if (atBottom) log.scrollTop = log.scrollHeight;
}

export function systemLine(text, className = 'system') {
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

export function problemLine(text) {
  systemLine(text, 'problem');
}

// ------------------------------------------------------------------ overlay

export function showOverlay(code, reason, text) {
  ui.overlay.dataset.code = String(code);
  ui.overlayTitle.textContent = text;
  ui.overlayReason.textContent = reason ? `The server said: “${reason}”.` : 'The server gave no reason.';
  ui.overlayCode.textContent = `Close code ${code}. You will not be reconnected; log in again to keep playing.`;
  ui.overlay.hidden = false;
  ui.overlayLogin.focus();
}

export function hideOverlay() {
  ui.overlay.hidden = true;
  delete ui.overlay.dataset.code;
}

// ------------------------------------------------------------------ sessions panel

let sessionsTimer = null;
export async function loadSessions() {
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
export function showSessionsBusy(text) {
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

// ------------------------------------------------------------------ wording

export function setMessage(node, text, kind = 'error') {
  node.textContent = text || '';
  node.hidden = !text;
  node.dataset.kind = kind;
}

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

export function errorText(error) {
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
export function seconds(ms) {
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
