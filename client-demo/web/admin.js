// Tether admin console: plain ES module, no build step, no external URL.
//
// Served by the tether binary at /admin (admin.html), /admin.js and /admin.css.
// Wire contract: API.md, "Admin routes", "Errors" and "Tokens".
//
// Security rules kept here:
//   - The access token lives in the `auth` variable below and nowhere else: not in
//     a URL, not in localStorage/sessionStorage. The refresh token travels only in
//     the HttpOnly cookie `tether_refresh` (refresh sends an empty body).
//   - Every string that came from the server (usernames, reasons, ids, messages) is
//     put in the page with textContent / DOM nodes, never innerHTML.
//
// Stable hooks for tests (tests/browser/*.mjs drive these; keep them stable):
//   #boot                      shown while the page checks for a session at load; while
//                              the server answers 503 not_ready / busy it stays, with
//                              data-busy="true", a note and #boot-retry / #boot-login
//   #login-form                the sign-in form (hidden once signed in)
//     #login-username, #login-password, #login-submit
//   #console                   the signed-in view
//   #whoami                    "<username> · session <short sid>"
//   #logout                    log out button
//   #status                    one-line result/error, role=status, aria-live=polite;
//                              attributes: data-kind = none|pending|ok|error|info,
//                              data-action = login|refresh|revoke|kick|ban|unban|
//                              revoke-all|audit|sessions|logout (what it reports on),
//                              data-seq = increments on every update
//   #sessions tbody tr         one row per online session:
//                              data-session-id, data-user-id, data-username,
//                              data-sockets, data-current="true" on this console's own
//     button[data-action="revoke"|"kick"|"ban"]   in each row
//   #sessions-count            "(n)" or "(shown of n)" with a filter
//   #sessions-empty            shown when no session is online
//   #session-filter            username filter (case-insensitive substring)
//   #poll-state                data-state = live|paused|error|idle|retrying (retrying:
//                              the server answered 503 not_ready / busy; not an error)
//   #revoke-all                opens the dialog for POST /api/admin/revoke-all
//   #action-dialog             <dialog> for revoke / kick / ban / revoke-all;
//                              data-action = the pending action while open
//     #action-title, #action-summary
//     #action-reason           text, maxlength 500
//     #action-until            ban duration: 3600|86400|604800|2592000|permanent
//     #action-confirm, #action-cancel
//   #unban-user-id, #unban-submit   DELETE /api/admin/users/{uid}/ban
//   #audit tbody tr            newest first: data-entry-id, data-action, data-target-id
//     button[data-action="unban"][data-user-id]   on the live ban of a user
//   #audit-refresh             reloads the audit trail
//
// Status texts (stable prefixes):
//   "Kicked <username>: <n> session(s) revoked, <m> socket(s) closed"
//   "Banned <username> for <duration> …: …" / "Banned <username> permanently: …"
//   "Revoked session <sid8> of <username>: …"
//   "Revoked all other sessions: …"
//   "Unbanned user <uid>"
//
// Try again later (API.md "Cluster", "Limits"): a call answered 503 not_ready (this node
// cannot vouch for sessions right now) or 503 busy (shedding password-hashing load, with
// Retry-After) did nothing and is sent again after a full-jitter backoff (Retry-After as
// a floor), at most RETRY_ATTEMPTS times within RETRY_BUDGET_MS; then it is reported as
// a calm "the server is catching up" (data-kind="info"), never as a sign-out. Only 401
// and 403 sign the console out; a refresh answered 503 leaves the session as it was.

const POLL_MS = 2000;
const AUDIT_LIMIT = 100;
const REASON_MAX = 500;
/** 401 codes after which this console's session is gone: back to the login form. */
const SESSION_GONE = new Set(['invalid_token', 'session_revoked', 'session_expired']);
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** 503 codes that mean "nothing was done; send the same call again later". */
const TRY_LATER = new Set(['not_ready', 'busy']);
const RETRY_ATTEMPTS = 5;
const RETRY_BUDGET_MS = 30_000;
const RETRY_BASE_MS = 500;
const RETRY_MAX_MS = 15_000;

const $ = (selector) => document.querySelector(selector);

const el = {
  boot: $('#boot'),
  loginForm: $('#login-form'),
  loginUsername: $('#login-username'),
  loginPassword: $('#login-password'),
  loginSubmit: $('#login-submit'),
  console: $('#console'),
  whoami: $('#whoami'),
  logout: $('#logout'),
  status: $('#status'),
  sessionsBody: $('#sessions tbody'),
  sessionsCount: $('#sessions-count'),
  sessionsEmpty: $('#sessions-empty'),
  sessionFilter: $('#session-filter'),
  pollState: $('#poll-state'),
  revokeAll: $('#revoke-all'),
  dialog: $('#action-dialog'),
  actionForm: $('#action-form'),
  actionTitle: $('#action-title'),
  actionSummary: $('#action-summary'),
  actionReason: $('#action-reason'),
  actionUntilRow: $('#action-until-row'),
  actionUntil: $('#action-until'),
  actionConfirm: $('#action-confirm'),
  actionCancel: $('#action-cancel'),
  unbanForm: $('#unban-form'),
  unbanUserId: $('#unban-user-id'),
  unbanSubmit: $('#unban-submit'),
  auditBody: $('#audit tbody'),
  auditEmpty: $('#audit-empty'),
  auditRefresh: $('#audit-refresh'),
};

// ---------------------------------------------------------------------------
// Auth state: memory only.

/** @type {{token: string, user: {id: string, username: string, role: string}, sessionId: string, staleAt: number} | null} */
let auth = null;
/** Bumped whenever the console signs out, so that late answers are dropped. */
let generation = 0;
let refreshTimer = 0;
let refreshInFlight = null;

class ApiError extends Error {
  constructor(status, code, message, body = null, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** 503 not_ready / busy: the server did nothing; the session is as good as before. */
function isTryLater(error) {
  return error instanceof ApiError && error.status === 503 && TRY_LATER.has(error.code);
}

/** A Retry-After value (delay-seconds or an HTTP date) in ms, or null. */
function retryAfterMs(value) {
  if (typeof value !== 'string' || !value.trim()) return null;
  const text = value.trim();
  if (/^\d+(?:\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  const at = Date.parse(text);
  return Number.isNaN(at) ? null : Math.max(0, at - Date.now());
}

/** Full-jitter exponential backoff: floorMs + random(0, min(max, base * 2^n)). */
function backoffMs(n, floorMs = 0, baseMs = RETRY_BASE_MS, maxMs = RETRY_MAX_MS) {
  return Math.round(floorMs + Math.random() * Math.min(maxMs, baseMs * 2 ** n));
}

/** "3.4" or "12": a delay in seconds for people. */
function seconds(ms) {
  const s = Math.max(0, ms) / 1000;
  return s < 10 ? s.toFixed(1) : String(Math.round(s));
}

/** "This server is catching up" / "The server is busy" for a try-later error. */
function busyText(error) {
  return error?.code === 'busy' ? 'The server is busy' : 'This server is catching up';
}

/**
 * Runs fn() again while it fails with 503 not_ready / busy: a full-jitter backoff with
 * Retry-After as a floor, at most RETRY_ATTEMPTS attempts within RETRY_BUDGET_MS;
 * onRetry(delayMs, error) is told of each wait. The last error is thrown with
 * `attempts` set, and such an error is not retried again by an outer loop.
 */
async function withRetries(fn, onRetry) {
  const started = performance.now();
  for (let n = 1; ; n++) {
    try {
      return await fn();
    } catch (error) {
      if (!isTryLater(error) || error.attempts) throw error;
      const floorMs = retryAfterMs(error.retryAfter) ?? 0;
      const leftMs = RETRY_BUDGET_MS - (performance.now() - started);
      if (n >= RETRY_ATTEMPTS || floorMs > leftMs) {
        error.attempts = n;
        throw error;
      }
      const delayMs = Math.min(leftMs, backoffMs(n, floorMs));
      if (onRetry) onRetry(delayMs, error);
      await sleep(delayMs);
    }
  }
}

/**
 * One JSON call to the server, sent again on 503 not_ready / busy (see withRetries;
 * `onRetry(delayMs, error)` hears of each wait). Bearer routes (`bearer: true`) get one
 * silent refresh and retry on 401 invalid_token (the access token may have gone stale
 * while the tab slept; nothing was done by the refused call).
 */
function api(method, path, { onRetry, ...options } = {}) {
  const gen = generation;
  return withRetries(() => {
    // Signed out while waiting: do not send the call with someone else's token.
    if (options.bearer !== false && gen !== generation) throw new ApiError(401, 'invalid_token', 'Not signed in.');
    return apiOnce(method, path, options);
  }, onRetry);
}

async function apiOnce(method, path, { body, bearer = true, retried = false } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (bearer) {
    if (!auth) throw new ApiError(401, 'invalid_token', 'Not signed in.');
    headers.Authorization = `Bearer ${auth.token}`;
  }
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
      redirect: 'error',
    });
  } catch {
    throw new ApiError(0, 'network', 'Cannot reach the server.');
  }
  const text = response.status === 204 ? '' : await response.text().catch(() => '');
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (response.ok) return data;

  const code = typeof data?.error === 'string' ? data.error : `http_${response.status}`;
  const message =
    typeof data?.message === 'string' && data.message
      ? data.message
      : `HTTP ${response.status} ${response.statusText}`.trim();
  const error = new ApiError(response.status, code, message, data, response.headers.get('Retry-After'));
  if (bearer && !retried && response.status === 401 && code === 'invalid_token' && auth) {
    const sent = headers.Authorization;
    // Another call may already have refreshed while this one was out.
    if (auth && `Bearer ${auth.token}` !== sent) return apiOnce(method, path, { body, bearer, retried: true });
    const outcome = await refreshSession();
    if (outcome === 'ok') return apiOnce(method, path, { body, bearer, retried: true });
    // A refresh that failed for want of a server (503 not_ready / busy, network, 5xx) says
    // nothing about the session: report that, not the 401, which would sign out.
    if (outcome instanceof ApiError && outcome.status !== 401 && outcome.status !== 403) throw outcome;
  }
  throw error;
}

/** Text for people from an ApiError, with what the extra fields add. */
function describe(error) {
  let text = error.message || 'Something went wrong.';
  if (error.code === 'banned' && error.body) {
    const until = error.body.until ? `until ${formatDateTime(error.body.until)}` : 'permanently';
    text += ` (${until}${error.body.reason ? `; reason: ${error.body.reason}` : ''})`;
  }
  if (error.code === 'rate_limited' && error.retryAfter) text += ` Try again in ${error.retryAfter} s.`;
  if (isTryLater(error)) {
    const wait = retryAfterMs(error.retryAfter);
    text = `${busyText(error)}; try again ${wait ? `in ${seconds(wait)} s` : 'in a moment'}.`;
  }
  return text;
}

/** Takes a token pair. Returns 'ok', or 'not_admin' (the pair is then not kept). */
function acceptPair(pair) {
  if (!pair || typeof pair.access_token !== 'string' || !pair.user) {
    throw new ApiError(0, 'bad_answer', 'The server sent an unexpected answer.');
  }
  if (pair.user.role !== 'admin') return 'not_admin';
  const ttl = Math.max(1, Number(pair.expires_in) || 60);
  // Refresh a little before expiry: a fifth of the lifetime, at most a minute, at least a second.
  const margin = Math.min(60, Math.max(1, ttl / 5));
  auth = {
    token: pair.access_token,
    user: pair.user,
    sessionId: pair.session_id,
    staleAt: performance.now() + (ttl - margin) * 1000,
  };
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(scheduledRefresh, (ttl - margin) * 1000);
  return 'ok';
}

/**
 * POST /api/auth/refresh with an empty body: the HttpOnly cookie carries the token.
 * Single-flight in this tab, and serialized across tabs with a Web Lock where the
 * browser has them: two tabs presenting the same refresh token at once would look
 * like token theft to the server. Resolves to 'ok', 'not_admin' or an ApiError.
 */
function refreshSession() {
  if (!refreshInFlight) {
    const once = () => apiOnce('POST', '/api/auth/refresh', { bearer: false });
    // The lock is held per attempt, not across a 503 wait.
    const locked = () => (navigator.locks?.request ? navigator.locks.request('tether-refresh', once) : once());
    const onRetry = (delayMs, error) => {
      if (!el.boot.hidden) showBootNotice(`${busyText(error)}; retrying in ${seconds(delayMs)} s… Your session is kept.`, true);
    };
    const run = async () => {
      try {
        return acceptPair(await withRetries(locked, onRetry));
      } catch (error) {
        return error instanceof ApiError ? error : new ApiError(0, 'network', String(error));
      }
    };
    refreshInFlight = run().finally(() => {
      refreshInFlight = null;
    });
  }
  return refreshInFlight;
}

let refreshFailures = 0;
async function scheduledRefresh() {
  if (!auth) return;
  const gen = generation;
  const outcome = await refreshSession();
  if (gen !== generation) return;
  if (outcome === 'ok') {
    refreshFailures = 0;
    return;
  }
  if (outcome === 'not_admin') {
    signedOut('This account is no longer an admin.');
  } else if (outcome.status === 0 || outcome.status >= 500 || outcome.status === 429) {
    // Transient (503 not_ready / busy included): try again soon, a little later each
    // time; the session is untouched and the current token may still have its margin.
    clearTimeout(refreshTimer);
    const floorMs = retryAfterMs(outcome.retryAfter) ?? 0;
    refreshTimer = setTimeout(scheduledRefresh, Math.max(1_000, backoffMs(refreshFailures + 2, floorMs, 1_000, 30_000)));
    refreshFailures += 1;
  } else {
    signedOut(`Signed out: ${describe(outcome)}`);
  }
}

/** Local sign-out: forget the token, stop timers, clear every table. */
function signedOut(message, kind = 'error') {
  generation += 1;
  auth = null;
  clearTimeout(refreshTimer);
  stopPolling();
  if (el.dialog.open) el.dialog.close();
  pending = null;
  sessionRows.clear();
  el.sessionsBody.replaceChildren();
  el.auditBody.replaceChildren();
  showView('login');
  if (message) setStatus(message, kind, 'login');
  el.loginPassword.value = '';
  el.loginUsername.focus();
}

/** Shared handling of a failed call: session gone → login form; else the message. */
function reportError(error, action) {
  if (!(error instanceof ApiError)) {
    console.error(error);
    setStatus(`Unexpected error: ${error}`, 'error', action);
    return;
  }
  if (error.status === 401 && SESSION_GONE.has(error.code)) {
    signedOut(`Signed out: ${error.message}`);
  } else if (error.status === 403 && error.code === 'forbidden') {
    signedOut(`Signed out: ${error.message}`);
  } else if (isTryLater(error)) {
    // Nothing was done and the session is fine: say so calmly.
    const what = FAILED[action];
    setStatus(`${what ? `${what}: ` : ''}${describe(error)}`, 'info', action);
  } else {
    const what = FAILED[action];
    setStatus(what ? `${what}: ${describe(error)}` : describe(error), 'error', action);
  }
}

const FAILED = {
  revoke: 'Revoke failed',
  kick: 'Kick failed',
  ban: 'Ban failed',
  unban: 'Unban failed',
  'revoke-all': 'Revoke all failed',
  audit: 'Could not load the audit trail',
  sessions: 'Could not load the sessions',
};

// ---------------------------------------------------------------------------
// Views and status.

function showView(view) {
  el.boot.hidden = view !== 'boot';
  el.loginForm.hidden = view !== 'login';
  el.console.hidden = view !== 'console';
  el.logout.hidden = view !== 'console';
  el.whoami.hidden = view !== 'console';
}

let statusSeq = 0;
function setStatus(text, kind = 'info', action = '') {
  statusSeq += 1;
  el.status.textContent = text;
  el.status.dataset.kind = kind;
  el.status.dataset.action = action;
  el.status.dataset.seq = String(statusSeq);
}

function enterConsole() {
  showView('console');
  el.whoami.textContent = `${auth.user.username} · session ${short(auth.sessionId)}`;
  el.whoami.title = `user ${auth.user.id}\nsession ${auth.sessionId}`;
  startPolling();
  loadAudit();
}

// ---------------------------------------------------------------------------
// Formatting (all results go through textContent).

function short(id) {
  return typeof id === 'string' ? id.slice(0, 8) : '';
}

function plural(n, word) {
  const count = Number(n) || 0;
  return `${count} ${word}${count === 1 ? '' : 's'}`;
}

function counts(result) {
  return `${plural(result?.sessions_revoked, 'session')} revoked, ${plural(result?.sockets_closed, 'socket')} closed`;
}

const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: '2-digit',
  day: '2-digit',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
});
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

function formatDateTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso ?? '') : dateTimeFormat.format(date);
}

/** Today's times as a time of day, older ones with the date. */
function formatWhen(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso ?? '');
  return date.toDateString() === new Date().toDateString() ? timeFormat.format(date) : dateTimeFormat.format(date);
}

function formatAgo(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso ?? '');
  const seconds = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (seconds < 5) return 'just now';
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return formatDateTime(iso);
}

function setText(node, text) {
  const value = String(text ?? '');
  if (node.textContent !== value) node.textContent = value;
}

function setTitle(node, title) {
  const value = String(title ?? '');
  if (node.title !== value) node.title = value;
}

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'className') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('aria-')) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

// ---------------------------------------------------------------------------
// Online sessions: polled every 2 s while the tab is visible, rows keyed by id.

/** @type {Map<string, {row: HTMLTableRowElement, cells: Object}>} */
const sessionRows = new Map();
let sessionsTotal = 0;
let pollTimer = 0;
let polling = false;
let pollInFlight = false;

function startPolling() {
  polling = true;
  schedulePoll(0);
}

function stopPolling() {
  polling = false;
  clearTimeout(pollTimer);
  setPollState('idle', '');
}

function schedulePoll(delay) {
  clearTimeout(pollTimer);
  if (polling) pollTimer = setTimeout(pollSessions, delay);
}

function setPollState(state, text) {
  el.pollState.dataset.state = state;
  setText(el.pollState, text);
}

async function pollSessions() {
  if (!polling || !auth) return;
  if (document.hidden) {
    setPollState('paused', 'paused');
    return; // visibilitychange restarts it
  }
  if (pollInFlight) return;
  pollInFlight = true;
  const gen = generation;
  try {
    const data = await api('GET', '/api/admin/sessions?online=true', {
      onRetry: (delayMs, error) => {
        if (gen === generation) setPollState('retrying', `${busyText(error).toLowerCase()} · retrying in ${seconds(delayMs)} s`);
      },
    });
    if (gen !== generation) return;
    renderSessions(Array.isArray(data?.sessions) ? data.sessions : []);
    setPollState('live', `live · ${timeFormat.format(new Date())}`);
  } catch (error) {
    if (gen !== generation) return;
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      reportError(error, 'sessions');
      return;
    }
    if (isTryLater(error)) {
      setPollState('retrying', `${busyText(error).toLowerCase()} · retrying…`);
      return;
    }
    setPollState('error', `not updating: ${describe(error)}`);
  } finally {
    pollInFlight = false;
    if (gen === generation) schedulePoll(POLL_MS);
  }
}

function makeSessionRow() {
  const cells = {
    username: h('span', { className: 'username' }),
    you: h('span', { className: 'badge', text: 'you', hidden: true }),
    userId: h('code'),
    sessionId: h('code'),
    created: h('td', { className: 'col-opt' }),
    lastSeen: h('td'),
    sockets: h('td', { className: 'num' }),
    nodes: h('td', { className: 'nodes col-opt' }),
    revoke: h('button', { type: 'button', className: 'small', text: 'Revoke session', dataset: { action: 'revoke' } }),
    kick: h('button', { type: 'button', className: 'small warn', text: 'Kick user', dataset: { action: 'kick' } }),
    ban: h('button', { type: 'button', className: 'small danger', text: 'Ban user', dataset: { action: 'ban' } }),
  };
  const row = h(
    'tr',
    {},
    h('td', {}, cells.username, cells.you),
    h('td', { className: 'col-opt' }, cells.userId),
    h('td', {}, cells.sessionId),
    cells.created,
    cells.lastSeen,
    cells.sockets,
    cells.nodes,
    h('td', { className: 'actions' }, cells.revoke, cells.kick, cells.ban),
  );
  return { row, cells };
}

function renderSessions(list) {
  const sorted = [...list].sort(
    (a, b) =>
      String(a.username).localeCompare(String(b.username), undefined, { sensitivity: 'base' }) ||
      String(a.created_at).localeCompare(String(b.created_at)),
  );
  const seen = new Set();
  let index = 0;
  for (const session of sorted) {
    if (typeof session?.id !== 'string' || seen.has(session.id)) continue;
    seen.add(session.id);
    let entry = sessionRows.get(session.id);
    if (!entry) {
      entry = makeSessionRow();
      sessionRows.set(session.id, entry);
    }
    const { row, cells } = entry;
    const username = String(session.username ?? '');
    const current = auth && session.id === auth.sessionId;
    row.dataset.sessionId = session.id;
    row.dataset.userId = String(session.user_id ?? '');
    row.dataset.username = username;
    row.dataset.sockets = String(session.sockets ?? 0);
    if (current) row.dataset.current = 'true';
    else delete row.dataset.current;
    setText(cells.username, username);
    cells.you.hidden = !current;
    setText(cells.userId, short(session.user_id));
    setTitle(cells.userId, session.user_id);
    setText(cells.sessionId, short(session.id));
    setTitle(cells.sessionId, session.id);
    setText(cells.created, formatWhen(session.created_at));
    setTitle(cells.created, formatDateTime(session.created_at));
    setText(cells.lastSeen, formatAgo(session.last_seen_at));
    setTitle(cells.lastSeen, formatDateTime(session.last_seen_at));
    setText(cells.sockets, Number(session.sockets) || 0);
    const nodes = Array.isArray(session.nodes) ? session.nodes.map(String) : [];
    setText(cells.nodes, nodes.length ? nodes.join(', ') : '—');
    setTitle(cells.nodes, nodes.join('\n'));
    setTitle(cells.revoke, `Revoke session ${session.id} of ${username}`);
    setTitle(cells.kick, `Kick ${username}: end all their sessions (close 4004)`);
    setTitle(cells.ban, `Ban ${username}`);
    // Move only what is out of place, so that a row under the pointer stays put.
    if (el.sessionsBody.children[index] !== row) el.sessionsBody.insertBefore(row, el.sessionsBody.children[index] ?? null);
    index += 1;
  }
  for (const [id, entry] of sessionRows) {
    if (!seen.has(id)) {
      entry.row.remove();
      sessionRows.delete(id);
    }
  }
  sessionsTotal = seen.size;
  applyFilter();
}

function applyFilter() {
  const needle = el.sessionFilter.value.trim().toLowerCase();
  let shown = 0;
  for (const { row } of sessionRows.values()) {
    const visible = !needle || row.dataset.username.toLowerCase().includes(needle);
    row.hidden = !visible;
    if (visible) shown += 1;
  }
  setText(el.sessionsCount, needle ? `(${shown} of ${sessionsTotal})` : `(${sessionsTotal})`);
  el.sessionsEmpty.hidden = sessionsTotal !== 0;
  setText(el.sessionsEmpty, 'No one is online.');
  if (sessionsTotal !== 0 && shown === 0) {
    el.sessionsEmpty.hidden = false;
    setText(el.sessionsEmpty, 'No online session matches the filter.');
  }
}

// ---------------------------------------------------------------------------
// Audit trail.

let auditInFlight = false;
let auditAgain = false;

async function loadAudit() {
  if (!auth) return;
  if (auditInFlight) {
    auditAgain = true;
    return;
  }
  auditInFlight = true;
  const gen = generation;
  try {
    const data = await api('GET', `/api/admin/audit?limit=${AUDIT_LIMIT}`);
    if (gen !== generation) return;
    renderAudit(Array.isArray(data?.entries) ? data.entries : []);
  } catch (error) {
    if (gen === generation) reportError(error, 'audit');
  } finally {
    auditInFlight = false;
    if (auditAgain && gen === generation) {
      auditAgain = false;
      loadAudit();
    }
  }
}

function isUnban(action) {
  return typeof action === 'string' && /^unban/i.test(action);
}

function renderAudit(entries) {
  // Newest first (as the server sends them; sorted again in case).
  const sorted = [...entries].sort((a, b) => String(b.at).localeCompare(String(a.at)));
  // Offer "Unban" only on a user's newest ban, when no newer unban lifted it and it has not run out.
  const settled = new Set();
  const rows = sorted.map((entry) => {
    const action = String(entry.action ?? '');
    const targetId = String(entry.target_id ?? '');
    const isUserTarget = !entry.target_type || entry.target_type === 'user';
    let unban = null;
    if (isUnban(action)) {
      settled.add(targetId);
    } else if (action === 'ban' && isUserTarget && targetId) {
      const running = entry.until == null || new Date(entry.until).getTime() > Date.now();
      if (!settled.has(targetId) && running) {
        unban = h('button', {
          type: 'button',
          className: 'small',
          text: 'Unban',
          title: `Lift the ban on user ${targetId}`,
          dataset: { action: 'unban', userId: targetId, username: String(entry.target_name ?? '') },
        });
      }
      settled.add(targetId);
    }
    const target = h('code', { text: short(targetId), title: targetId });
    const targetCell = h('td', {}, target);
    if (entry.target_name) targetCell.prepend(h('span', { text: `${entry.target_name} ` }));
    let until = '';
    if ('until' in entry || action === 'ban') {
      until = entry.until == null ? (action === 'ban' ? 'permanent' : '') : formatDateTime(entry.until);
    }
    return h(
      'tr',
      { dataset: { entryId: String(entry.id ?? ''), action, targetId } },
      h('td', { text: formatWhen(entry.at), title: formatDateTime(entry.at) }),
      h('td', { text: String(entry.actor_name ?? ''), title: String(entry.actor_id ?? '') }),
      h('td', {}, h('span', { className: `action action-${action.replace(/[^a-z_-]/gi, '')}`, text: action })),
      h('td', { text: String(entry.target_type ?? '') }),
      targetCell,
      h('td', { className: 'reason', text: String(entry.reason ?? '') }),
      h('td', { className: 'num', text: String(entry.sessions_revoked ?? '') }),
      h('td', { className: 'num', text: String(entry.sockets_closed ?? '') }),
      h('td', { text: until, title: entry.until ? String(entry.until) : '' }),
      h('td', { className: 'actions' }, ...(unban ? [unban] : [])),
    );
  });
  el.auditBody.replaceChildren(...rows);
  el.auditEmpty.hidden = rows.length !== 0;
}

// ---------------------------------------------------------------------------
// Actions: one dialog for revoke / kick / ban / revoke-all.

/** @type {{kind: string, userId?: string, username?: string, sessionId?: string} | null} */
let pending = null;
let actionBusy = false;

const ACTIONS = {
  revoke: {
    title: (a) => `Revoke session ${short(a.sessionId)} of ${a.username}`,
    summary: () =>
      'Ends this one session. Its sockets close with code 4001; the user keeps their other sessions and may log in again.',
    confirm: 'Revoke session',
    request: (a, body) => ['POST', `/api/admin/sessions/${encodeURIComponent(a.sessionId)}/revoke`, body],
    done: (a, r) => `Revoked session ${short(a.sessionId)} of ${a.username}: ${counts(r)}`,
  },
  kick: {
    title: (a) => `Kick ${a.username}`,
    summary: () =>
      'Ends every session of this user. Their sockets close with code 4004 and the reason below; they may log in again.',
    confirm: 'Kick',
    request: (a, body) => ['POST', `/api/admin/users/${encodeURIComponent(a.userId)}/kick`, body],
    done: (a, r) => `Kicked ${a.username}: ${counts(r)}`,
  },
  ban: {
    title: (a) => `Ban ${a.username}`,
    summary: () =>
      'Ends every session of this user (sockets close with code 4003) and refuses their login and refresh until the ban ends.',
    confirm: 'Ban',
    request: (a, body) => ['POST', `/api/admin/users/${encodeURIComponent(a.userId)}/ban`, body],
    done: (a, r, body) =>
      body.until
        ? `Banned ${a.username} for ${a.untilLabel} (until ${formatDateTime(body.until)}): ${counts(r)}`
        : `Banned ${a.username} permanently: ${counts(r)}`,
  },
  'revoke-all': {
    title: () => 'Revoke all sessions',
    summary: () =>
      'Ends every session on the server except this console’s own: every player is disconnected (code 4001) and must log in again.',
    confirm: 'Revoke all sessions',
    request: (a, body) => ['POST', '/api/admin/revoke-all', body],
    done: (a, r) => `Revoked all other sessions: ${counts(r)}`,
  },
};

function openAction(action) {
  const spec = ACTIONS[action.kind];
  if (!spec || !auth) return;
  pending = action;
  el.dialog.dataset.action = action.kind;
  el.actionTitle.textContent = spec.title(action);
  let summary = spec.summary(action);
  if (action.kind !== 'revoke-all' && auth && (action.userId === auth.user.id || action.sessionId === auth.sessionId)) {
    summary += ' This is your own account: this console may be signed out.';
  }
  el.actionSummary.textContent = summary;
  el.actionConfirm.textContent = spec.confirm;
  el.actionConfirm.disabled = false;
  el.actionReason.value = '';
  el.actionUntilRow.hidden = action.kind !== 'ban';
  el.actionUntil.value = '86400';
  if (!el.dialog.open) el.dialog.showModal();
  el.actionReason.focus();
}

function closeAction() {
  pending = null;
  delete el.dialog.dataset.action;
  if (el.dialog.open) el.dialog.close();
}

/** RFC 3339 UTC, whole seconds. */
function utcIn(seconds) {
  return new Date(Date.now() + seconds * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
}

async function confirmAction(event) {
  event.preventDefault();
  if (!pending || actionBusy) return;
  const action = pending;
  const spec = ACTIONS[action.kind];
  const reason = el.actionReason.value.trim().slice(0, REASON_MAX);
  const body = { reason };
  if (action.kind === 'ban') {
    const choice = el.actionUntil.value;
    action.untilLabel = el.actionUntil.selectedOptions[0]?.textContent ?? choice;
    body.until = choice === 'permanent' ? null : utcIn(Number(choice));
  }
  const [method, path] = spec.request(action, body);
  actionBusy = true;
  el.actionConfirm.disabled = true;
  setStatus(`${spec.confirm}…`, 'pending', action.kind);
  const gen = generation;
  try {
    const result = await api(method, path, {
      body,
      onRetry: (delayMs, error) => {
        if (gen === generation) setStatus(`${spec.confirm}: ${busyText(error)}; retrying in ${seconds(delayMs)} s…`, 'pending', action.kind);
      },
    });
    if (gen !== generation) return;
    closeAction();
    setStatus(spec.done(action, result ?? {}, body), 'ok', action.kind);
  } catch (error) {
    if (gen !== generation) return;
    closeAction();
    reportError(error, action.kind);
  } finally {
    actionBusy = false;
    el.actionConfirm.disabled = false;
  }
  if (gen === generation) {
    loadAudit();
    schedulePoll(0);
  }
}

async function unban(userId, label) {
  const id = String(userId ?? '').trim();
  if (!UUID_RE.test(id)) {
    setStatus('Unban: give a user id (a UUID, as in the audit trail).', 'error', 'unban');
    el.unbanUserId.focus();
    return;
  }
  const gen = generation;
  setStatus(`Unbanning ${label || id}…`, 'pending', 'unban');
  try {
    await api('DELETE', `/api/admin/users/${encodeURIComponent(id)}/ban`, {
      onRetry: (delayMs, error) => {
        if (gen === generation) setStatus(`Unbanning: ${busyText(error)}; retrying in ${seconds(delayMs)} s…`, 'pending', 'unban');
      },
    });
    if (gen !== generation) return;
    setStatus(`Unbanned user ${label ? `${label} (${id})` : id}`, 'ok', 'unban');
    if (el.unbanUserId.value.trim() === id) el.unbanUserId.value = '';
  } catch (error) {
    if (gen === generation) reportError(error, 'unban');
  }
  if (gen === generation) loadAudit();
}

// ---------------------------------------------------------------------------
// Login / logout.

async function login(event) {
  event.preventDefault();
  const username = el.loginUsername.value.trim();
  const password = el.loginPassword.value;
  if (!username || !password) {
    setStatus('Enter a username and a password.', 'error', 'login');
    return;
  }
  el.loginSubmit.disabled = true;
  setStatus('Signing in…', 'pending', 'login');
  try {
    const pair = await api('POST', '/api/auth/login', {
      body: { username, password },
      bearer: false,
      onRetry: (delayMs, error) => setStatus(`Signing in: ${busyText(error)}; retrying in ${seconds(delayMs)} s…`, 'pending', 'login'),
    });
    if (acceptPair(pair) === 'not_admin') {
      // This login opened a session for a non-admin: end it again, quietly.
      await fetch('/api/auth/logout', {
        method: 'POST',
        headers: { Authorization: `Bearer ${pair.access_token}` },
        credentials: 'same-origin',
      }).catch(() => {});
      setStatus(`${pair.user.username} is not an admin: this console is for admins only.`, 'error', 'login');
      return;
    }
    el.loginPassword.value = '';
    setStatus(`Signed in as ${auth.user.username}.`, 'ok', 'login');
    enterConsole();
  } catch (error) {
    const kind = isTryLater(error) ? 'info' : 'error';
    setStatus(error instanceof ApiError ? describe(error) : `Unexpected error: ${error}`, kind, 'login');
  } finally {
    el.loginSubmit.disabled = false;
  }
}

async function logout() {
  const token = auth?.token;
  el.logout.disabled = true;
  if (token) {
    await fetch('/api/auth/logout', {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}` },
      credentials: 'same-origin',
    }).catch(() => {});
  }
  el.logout.disabled = false;
  signedOut('Signed out.', 'info');
}

// ---------------------------------------------------------------------------
// Wiring.

function onVisibility() {
  if (!auth) return;
  if (document.hidden) {
    clearTimeout(pollTimer);
    setPollState('paused', 'paused');
    return;
  }
  // Timers are throttled in hidden tabs: catch up on the token first.
  if (performance.now() >= auth.staleAt) scheduledRefresh();
  if (polling) schedulePoll(0);
}

function wire() {
  el.loginForm.addEventListener('submit', login);
  el.logout.addEventListener('click', logout);
  el.sessionFilter.addEventListener('input', applyFilter);
  el.sessionsBody.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    const row = button?.closest('tr');
    if (!button || !row) return;
    openAction({
      kind: button.dataset.action,
      userId: row.dataset.userId,
      username: row.dataset.username,
      sessionId: row.dataset.sessionId,
    });
  });
  el.revokeAll.addEventListener('click', () => openAction({ kind: 'revoke-all' }));
  el.actionForm.addEventListener('submit', confirmAction);
  el.actionCancel.addEventListener('click', closeAction);
  el.dialog.addEventListener('close', () => {
    pending = null;
    delete el.dialog.dataset.action;
  });
  el.unbanForm.addEventListener('submit', (event) => {
    event.preventDefault();
    unban(el.unbanUserId.value);
  });
  el.auditBody.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action="unban"]');
    if (button) unban(button.dataset.userId, button.dataset.username);
  });
  el.auditRefresh.addEventListener('click', loadAudit);
  document.addEventListener('visibilitychange', onVisibility);
}

async function boot() {
  if (window.top !== window.self) {
    // Never operate inside someone else's frame (clickjacking).
    document.body.replaceChildren(h('p', { className: 'notice', text: 'The admin console cannot run inside a frame.' }));
    return;
  }
  wire();
  showView('boot');
  await resumeSession();
}

// A reload keeps the admin signed in: the refresh cookie. While the server answers 503
// not_ready / busy (after refreshSession's own retries), the boot view stays with a calm
// note and the refresh is tried again later, with a growing jittered delay: the cookie is
// untouched, so nobody is signed out. "Sign in instead" leaves for the form.
let resumeTimer = 0;
let resumeWaits = 0;
let resumeRound = 0;

async function resumeSession() {
  clearTimeout(resumeTimer);
  const round = resumeRound;
  const outcome = await refreshSession();
  if (round !== resumeRound) {
    // The operator went to the form meanwhile: only a session that came back is taken.
    if (outcome === 'ok' && el.console.hidden && !el.loginSubmit.disabled) enterConsole();
    return;
  }
  if (isTryLater(outcome)) {
    resumeWaits += 1;
    const delayMs = backoffMs(resumeWaits, retryAfterMs(outcome.retryAfter) ?? 0, 1_000, 30_000);
    resumeTimer = setTimeout(resumeSession, delayMs);
    const text = `${busyText(outcome)}; retrying in ${seconds(delayMs)} s… Your session is kept.`;
    showBootNotice(text, true);
    setStatus(text, 'info', 'refresh');
    return;
  }
  const waited = resumeWaits > 0 || el.boot.dataset.busy === 'true';
  resumeWaits = 0;
  delete el.boot.dataset.busy;
  if (waited) setStatus('', 'none', 'refresh'); // the "catching up" note is over
  if (outcome === 'ok') {
    enterConsole();
    return;
  }
  showView('login');
  if (outcome === 'not_admin') {
    setStatus('The signed-in account is not an admin: sign in with an admin account.', 'info', 'refresh');
  } else if (outcome.code === 'banned' || outcome.code === 'session_revoked' || outcome.code === 'session_expired') {
    setStatus(`Sign in again: ${describe(outcome)}`, 'info', 'refresh');
  } else if (outcome.status === 0 || outcome.status >= 500) {
    setStatus(describe(outcome), 'error', 'refresh');
  }
  el.loginUsername.focus();
}

/** The boot view's note; with `actions`, the "Retry now" and "Sign in instead" buttons. */
function showBootNotice(text, actions = false) {
  el.boot.dataset.busy = 'true';
  el.boot.setAttribute('role', 'status');
  el.boot.setAttribute('aria-live', 'polite');
  const hadFocus = el.boot.contains(document.activeElement) ? document.activeElement.id : null;
  const line = h('p', { id: 'boot-message', text });
  if (!actions) {
    el.boot.replaceChildren(line);
    return;
  }
  const retry = h('button', { type: 'button', id: 'boot-retry', text: 'Retry now' });
  retry.addEventListener('click', () => {
    showBootNotice('Checking for a signed-in session…');
    resumeSession();
  });
  const login = h('button', { type: 'button', id: 'boot-login', text: 'Sign in instead' });
  login.addEventListener('click', () => {
    clearTimeout(resumeTimer);
    resumeWaits = 0;
    resumeRound += 1;
    delete el.boot.dataset.busy;
    showView('login');
    setStatus('', 'none', 'refresh');
    el.loginUsername.focus();
  });
  el.boot.replaceChildren(line, h('p', {}, retry, ' ', login));
  if (hadFocus === 'boot-login') login.focus();
  else retry.focus();
}

boot();
