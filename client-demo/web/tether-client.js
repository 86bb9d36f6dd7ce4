/**
 * tether-client.js: the browser side of a Tether server (accounts, tokens, game socket).
 *
 * One standalone ES module, no dependencies, no build step: copy it into any browser
 * game served from the same origin as the Tether server and import it.
 *
 *   import { TetherClient, TetherError } from './tether-client.js';
 *   const tether = new TetherClient();          // options: see below
 *   tether.on('snapshot', (msg) => draw(msg));
 *   tether.on('terminal', ({ code, reason, text }) => showOverlay(text));
 *   tether.on('welcome', () => tether.join('lobby'));   // then snapshots flow
 *   const user = (await tether.resume()) ?? (await tether.login(name, password)).user;
 *   tether.connect();
 *
 * Constructor options (all optional)
 *   baseUrl            prefix of the HTTP routes, default '' (same origin)
 *   wsUrl              socket URL, default ws:// or wss:// (matching the page) + host + '/ws'
 *   refreshMarginSec   refresh this long before the access token expires, default 60
 *   backoffBaseMs      first reconnect delay bound, default 500 (doubles per attempt)
 *   backoffMaxMs       reconnect delay cap, default 15000
 *   requestTimeoutMs   bound of each HTTP request, default 15000
 *   pingEveryMs        keepalive ping period once connected, default 5000 (0: none);
 *                      each pong gives a 'latency' event
 *   staleAfterMs       a connected socket that receives nothing this long is dropped and
 *                      reconnected like after a 1006, default 15000 (needs pings)
 *   welcomeTimeoutMs   a socket without 'welcome' this long is dropped the same way,
 *                      default 10000
 *   retryAttempts      HTTP calls answered 503 not_ready / busy: attempts in all, default 5
 *                      (1: no retry); see "Try again later" below
 *   retryBudgetMs      ... and the time those attempts may take in all, default 30000
 *
 * Accounts and session (each returns a Promise; every non-2xx answer rejects with a
 * TetherError { status, code, message, body, retryAfterMs }; a network failure has status
 * 0 and code 'network_error'; retryAfterMs is the Retry-After header in ms, or null. A 503
 * not_ready / busy is retried first and only then rejects, see "Try again later")
 *   register(username, password)  -> user {id, username, role}; does not log in
 *   login(username, password)     -> { user, sessionId }; starts silent refresh
 *   resume()                      -> user, or null when the browser holds no usable
 *                                    refresh cookie (call on page load: a reload keeps
 *                                    the player logged in); rejects on other failures
 *                                    (e.g. 403 banned, 401 session_revoked, network, or
 *                                    503 not_ready / busy once its retries are spent:
 *                                    then the cookie is still good, call resume() again)
 *   refresh()                     -> { user, sessionId }; normally automatic
 *   logout()                      -> closes the socket, revokes this session (204); the
 *                                    client forgets the session even when the call fails
 *   logoutAll()                   -> closes the socket, revokes every session of the user
 *   me()                          -> { user, session: {id, created_at, expires_at} }
 *   listSessions()                -> [{ id, created_at, last_seen_at, user_agent, ip,
 *                                      sockets, current }]
 *   revokeSession(id)             -> revokes one of the user's own sessions (204)
 *   request(method, path, body?)  -> any other Bearer route; JSON body or null
 *
 * State (read-only properties)
 *   user, sessionId, loggedIn, accessTokenExpiresAt (ms since epoch),
 *   state: 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'disconnected' | 'closed'
 *   connected (true between 'welcome' and the close)
 *
 * Socket
 *   connect()      opens `new WebSocket(wsUrl, ['tether.v1', 'tether.bearer.<jwt>'])`
 *                  (refreshing first if the access token is about to expire) and keeps
 *                  it open per the reconnect policy below
 *   disconnect()   closes with 1000, no reconnect
 *   send(object)   sends one JSON text frame (any message, e.g. {type: 'ack', tick});
 *                  false when the socket is not open
 *   ping(t?), join(room?, extra?), leave(), input(seq, dx, dy, extra?), chat(text):
 *                  message helpers; `extra` adds fields to the message (those the helper
 *                  sets itself win), e.g. join('lobby', { encoding: 'binary' }) or
 *                  input(7, 1, 0, { ack: 41 })
 *
 * Events: on(type, fn) returns an unsubscribe function; fn receives the detail.
 * (The client is also an EventTarget: addEventListener(type, e => e.detail).)
 *   'welcome' 'pong' 'joined' 'left' 'presence' 'snapshot' 'chat' 'error'
 *                  one per server message of that `type`; detail = the parsed message
 *   'message'      every server message
 *   'binary'       ArrayBuffer  a binary frame from the server, as received (the client
 *                  does not read it: what it means is the game's business)
 *   'latency'      { rttMs }  round trip of a keepalive ping
 *   'state'        { state, attempt, delayMs, busy, code?, reason? }  connection state
 *                  changed (delayMs: when 'reconnecting'; code, reason: the close behind
 *                  it; busy: true when the node cannot vouch for the session right now,
 *                  a close 1013 or a 503 not_ready / busy on the way: "server busy,
 *                  retrying in N s", not an error)
 *   'close'        { code, reason, wasClean, willReconnect, delayMs, busy }  every socket
 *                  close (busy: code 1013)
 *   'retrying'     { method, path, status, code, message, attempt, attempts, delayMs,
 *                  retryAfterMs }  an HTTP call was answered 503 not_ready / busy and is
 *                  sent again in delayMs (attempt: the one that failed, 1-based; attempts:
 *                  the most there will be)
 *   'terminal'     { code, reason, kind, text }  the session ended and the client will
 *                  not reconnect: 4001 revoked, 4002 expired, 4003 banned, 4004 kicked,
 *                  4005 replaced; `reason` is the close reason as sent ("kicked:
 *                  spamming"), `text` a sentence for people ("You were kicked: spamming")
 *   'auth'         { user, sessionId, expiresIn, changed }  after login and every refresh;
 *                  changed = the session differs from the previous one (another tab of
 *                  this browser logged in: the cookie is shared, the last login wins)
 *   'loggedout'    { reason, error }  the client holds no session any more: reason is
 *                  'logout', 'logout-all', 'other-tab' (a tab of this session logged
 *                  out) or 'refresh-failed' (error = the TetherError)
 *
 * Also exported (pure helpers, no browser needed):
 *   describeClose(code, reason) -> the 'terminal' sentence
 *   hintMs(reason)              -> the delay a 1001 / 1013 reason names, or null
 *   classifyClose(code, reason) -> the reconnect policy below as data: { action:
 *                                  'terminal', kind, text } | { action: 'refresh' } |
 *                                  { action: 'stop' } | { action: 'reconnect', floorMs, busy }
 *   backoffMs(attempt, { baseMs, maxMs, floorMs, random })
 *                               -> floorMs + random(0, min(maxMs, baseMs * 2^attempt)), rounded
 *   retryAfterMs(header, now?)  -> a Retry-After value (seconds or an HTTP date) in ms, or null
 *   isTryLater(error)           -> true for a 503 not_ready / busy TetherError
 *   isAuthFailure(error)        -> true for a 401 / 403 TetherError (the only answers after
 *                                  which the client drops its tokens)
 *
 * Reconnect policy
 *   1000, 1008, 1009, or disconnect(): no reconnect ('disconnected'). 1008 `too many
 *     sockets` (isTooManySockets) means this login already has as many sockets as the
 *     server allows (other tabs): reconnecting would only be refused again.
 *   Any other 1xxx (1001 server going away, 1006 abnormal, 1011, 1012, 1013, ...):
 *     reconnect after a full-jitter exponential backoff, random(0, min(backoffMaxMs,
 *     backoffBaseMs * 2^attempt)); a 1001 or 1013 reason that names a delay ("server
 *     shutting down: reconnect in 3.4s", "retry in 500ms") is added as a floor; a reason
 *     without one is ignored. The attempt counter resets on 'welcome'.
 *   1013 (try again later: the node cannot vouch for its sessions right now, e.g. it is
 *     catching up on revocations) is such a reconnect, never a logout: the tokens are
 *     kept, and 'close' and 'state' say busy: true.
 *   4401 (token missing or expired at upgrade): one refresh, then reconnect at once; if
 *     the refresh is refused (401 / 403), or 4401 comes again before a 'welcome',
 *     'loggedout'; if it fails otherwise (network, 503 not_ready / busy), reconnect after
 *     the backoff above, logged in.
 *   4001-4005: 'terminal', the access token is dropped, no reconnect.
 *   Other codes: 'disconnected', no reconnect.
 *
 * Tokens and tabs
 *   The access token is kept in memory only (never in storage or URLs). The refresh
 *   token travels only in the HttpOnly cookie `tether_refresh` (Path=/api/auth): the
 *   client sends `POST /api/auth/refresh` with an empty body and credentials
 *   'same-origin', refreshMarginSec before expiry (with a few seconds of random jitter),
 *   and again when a Bearer call answers 401 invalid_token. Tabs of one browser share
 *   that cookie, refresh rotates it, and presenting a rotated token revokes the session,
 *   so login, refresh and logout run under the Web Lock 'tether-refresh': two tabs never
 *   refresh at once, and a tab that refreshes after another one simply sends the newer
 *   cookie. (navigator.locks needs a secure context: https, localhost or 127.0.0.1. Where
 *   it is missing, the tabs fall back to a best-effort mutual exclusion over the
 *   BroadcastChannel: announce, listen 60 ms, lowest ticket wins.)
 *   The BroadcastChannel 'tether-auth' also tells the other tabs about logouts.
 *
 * Try again later (503 not_ready: a node that cannot vouch for sessions right now; 503
 * busy: the server is shedding password-hashing load, with Retry-After)
 *   Every HTTP call of the client (Bearer routes, login, register, refresh, logout) that
 *   is answered so is sent again after a full-jitter backoff, random(0,
 *   min(backoffMaxMs, backoffBaseMs * 2^n)) for n = 1, 2, ..., with the Retry-After
 *   header as a floor, at most retryAttempts times in all and within retryBudgetMs (a
 *   Retry-After beyond the budget ends the retries at once); each wait is announced by
 *   'retrying'. Then the call rejects with that 503 TetherError. Only 401 and 403 make
 *   the client drop its tokens: a 503, on a Bearer route, login or refresh, never logs
 *   anyone out, and a refresh answered 503 leaves the refresh cookie as good as before
 *   (the background refresh simply tries again later).
 */

const TERMINAL = {
  4001: { kind: 'revoked', text: 'Your session was revoked' },
  4002: { kind: 'expired', text: 'Your session expired' },
  4003: { kind: 'banned', text: 'You were banned' },
  4004: { kind: 'kicked', text: 'You were kicked' },
  4005: { kind: 'replaced', text: 'You were signed out', fallback: 'a newer login took over' },
};
const GAME_EVENTS = new Set(['welcome', 'pong', 'joined', 'left', 'presence', 'snapshot', 'chat', 'error']);
const LOCK_NAME = 'tether-refresh';
const CHANNEL_NAME = 'tether-auth';

const TRY_LATER_CODES = new Set(['not_ready', 'busy']);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** 401 or 403 from the server: the session cannot be used any more (unlike 429, 5xx, network). */
export function isAuthFailure(error) {
  return error instanceof TetherError && (error.status === 401 || error.status === 403);
}

/**
 * 503 not_ready (this node cannot vouch for sessions right now) or 503 busy (shedding
 * password-hashing load): nothing was done, the same call can be sent again later, and
 * the session is as good as before.
 */
export function isTryLater(error) {
  return error instanceof TetherError && error.status === 503 && TRY_LATER_CODES.has(error.code);
}

export class TetherError extends Error {
  constructor(status, code, message, body = null, retryAfterMs = null) {
    super(message || code || `HTTP ${status}`);
    this.name = 'TetherError';
    this.status = status;
    this.code = code;
    this.body = body;
    this.retryAfterMs = retryAfterMs;
  }
}

/** A close 1008 `too many sockets`: this session has its server's most sockets open. */
export function isTooManySockets(code, reason) {
  return code === 1008 && reason === 'too many sockets';
}

/** The sentence for a terminal close: "You were kicked: spamming". */
export function describeClose(code, reason) {
  const known = TERMINAL[code];
  if (!known) return reason ? `Disconnected (${code}): ${reason}` : `Disconnected (${code})`;
  const colon = typeof reason === 'string' ? reason.indexOf(': ') : -1;
  const detail = (colon >= 0 ? reason.slice(colon + 2).trim() : '') || known.fallback;
  return detail ? `${known.text}: ${detail}` : `${known.text}.`;
}

export class TetherClient extends EventTarget {
  #baseUrl;
  #wsUrl;
  #refreshMarginMs;
  #backoffBaseMs;
  #backoffMaxMs;
  #requestTimeoutMs;
  #pingEveryMs;
  #staleAfterMs;
  #welcomeTimeoutMs;
  #retryAttempts;
  #retryBudgetMs;

  #accessToken = null;
  #expiresAt = 0; // ms since epoch (wall clock: keeps counting through a suspend)
  #user = null;
  #sessionId = null;
  #refreshTimer = null;
  #refreshing = null; // this tab's refresh in flight
  #localChain = Promise.resolve(); // lock fallback
  #busyOthers = new Map(); // lock fallback: ticket -> until, tabs that announced the lock
  #myTicket = null;
  #beaten = false;
  #channel = null;

  #ws = null;
  #state = 'idle';
  #connected = false;
  #wantConnected = false;
  #attempt = 0;
  #reconnectTimer = null;
  #retried4401 = false;
  #socketTimer = null; // welcome deadline, then keepalive pings and the stale check
  #lastReceivedAt = 0;
  #pingsSent = new Set(); // `t` of keepalive pings awaiting their pong

  constructor(options = {}) {
    super();
    this.#baseUrl = (options.baseUrl ?? '').replace(/\/+$/, '');
    this.#wsUrl = options.wsUrl ?? null;
    this.#refreshMarginMs = (options.refreshMarginSec ?? 60) * 1000;
    this.#backoffBaseMs = options.backoffBaseMs ?? 500;
    this.#backoffMaxMs = options.backoffMaxMs ?? 15_000;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 15_000;
    this.#pingEveryMs = options.pingEveryMs ?? 5_000;
    this.#staleAfterMs = options.staleAfterMs ?? 15_000;
    this.#welcomeTimeoutMs = options.welcomeTimeoutMs ?? 10_000;
    this.#retryAttempts = Math.max(1, options.retryAttempts ?? 5);
    this.#retryBudgetMs = options.retryBudgetMs ?? 30_000;

    if (typeof BroadcastChannel === 'function') {
      this.#channel = new BroadcastChannel(CHANNEL_NAME);
      this.#channel.onmessage = (event) => this.#onChannel(event.data);
    }
    if (typeof window !== 'undefined') {
      // Timers sleep with the machine: check the token when the page comes back.
      document.addEventListener('visibilitychange', () => {
        if (document.visibilityState === 'visible') this.#checkToken();
      });
      window.addEventListener('online', () => {
        this.#checkToken();
        if (this.#wantConnected && this.#reconnectTimer) this.#reconnectNow();
      });
    }
  }

  // ---------------------------------------------------------------- state

  get user() {
    return this.#user;
  }
  get sessionId() {
    return this.#sessionId;
  }
  get loggedIn() {
    return this.#accessToken !== null;
  }
  get accessTokenExpiresAt() {
    return this.#expiresAt;
  }
  get state() {
    return this.#state;
  }
  get connected() {
    return this.#connected;
  }

  on(type, fn) {
    const listener = (event) => fn(event.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #setState(state, extra = {}) {
    this.#state = state;
    this.#emit('state', { state, attempt: this.#attempt, delayMs: null, busy: false, ...extra });
  }

  // ---------------------------------------------------------------- HTTP

  async #fetch(method, path, { body, token, credentials = 'same-origin' } = {}) {
    const headers = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (token) headers.authorization = `Bearer ${token}`;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.#requestTimeoutMs);
    let response;
    try {
      response = await fetch(this.#baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials,
        cache: 'no-store',
        signal: controller.signal,
      });
    } catch (error) {
      throw new TetherError(
        0,
        'network_error',
        controller.signal.aborted ? 'the server did not answer in time' : 'the server cannot be reached',
      );
    } finally {
      clearTimeout(timer);
    }
    let data = null;
    const text = await response.text().catch(() => '');
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const code = (data && typeof data.error === 'string' && data.error) || `http_${response.status}`;
      const message = (data && typeof data.message === 'string' && data.message) || response.statusText || code;
      throw new TetherError(response.status, code, message, data, retryAfterMs(response.headers.get('retry-after')));
    }
    return data;
  }

  /**
   * Runs attempt() until it does not fail with a 503 not_ready / busy, waiting a
   * full-jitter backoff (Retry-After as a floor) in between, at most #retryAttempts times
   * within #retryBudgetMs. An error that already went through such a loop (a refresh
   * inside a Bearer call) is not retried again: it has `attempts` set.
   */
  async #retrying(method, path, attempt) {
    const started = Date.now();
    for (let n = 1; ; n++) {
      try {
        return await attempt();
      } catch (error) {
        if (!isTryLater(error) || error.attempts) throw error;
        const floorMs = error.retryAfterMs ?? 0;
        const leftMs = this.#retryBudgetMs - (Date.now() - started);
        if (n >= this.#retryAttempts || floorMs > leftMs) {
          error.attempts = n;
          throw error;
        }
        const delayMs = Math.min(
          leftMs,
          backoffMs(n, { baseMs: this.#backoffBaseMs, maxMs: this.#backoffMaxMs, floorMs }),
        );
        this.#emit('retrying', {
          method,
          path,
          status: error.status,
          code: error.code,
          message: error.message,
          attempt: n,
          attempts: this.#retryAttempts,
          delayMs,
          retryAfterMs: error.retryAfterMs,
        });
        await sleep(delayMs);
      }
    }
  }

  /**
   * A Bearer call; one refresh and retry when the access token is refused as invalid;
   * a 503 not_ready / busy is sent again later (see "Try again later").
   */
  async request(method, path, body) {
    if (!this.#accessToken) throw new TetherError(401, 'not_logged_in', 'not logged in');
    return this.#retrying(method, path, async () => {
      if (!this.#accessToken) throw new TetherError(401, 'not_logged_in', 'not logged in');
      await this.#ensureFresh(5_000);
      try {
        return await this.#fetch(method, path, { body, token: this.#accessToken });
      } catch (error) {
        if (!(error instanceof TetherError) || error.status !== 401 || error.code !== 'invalid_token') throw error;
        await this.refresh();
        return this.#fetch(method, path, { body, token: this.#accessToken });
      }
    });
  }

  /** Runs fn under the cross-tab lock (or, without Web Locks, the best-effort fallback). */
  #withLock(fn) {
    if (typeof navigator !== 'undefined' && navigator.locks?.request) {
      return navigator.locks.request(LOCK_NAME, () => fn());
    }
    const guarded = () => this.#announcedLock(fn);
    const run = this.#localChain.then(guarded, guarded);
    this.#localChain = run.catch(() => {});
    return run;
  }

  /**
   * Without Web Locks (an insecure context): a small mutual exclusion over the
   * BroadcastChannel. A tab waits while another one announced it holds the lock (at most
   * 5 s per announcement), announces itself with a random ticket, listens 60 ms, and backs
   * off if a rival with a lower ticket announced in the meantime.
   */
  async #announcedLock(fn) {
    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
    const ticket = Math.random();
    for (let tries = 0; tries < 20; tries++) {
      for (let i = 0; i < 60 && this.#othersBusy(); i++) await sleep(100);
      this.#myTicket = ticket;
      this.#beaten = false;
      this.#channel?.postMessage({ type: 'lock', busy: true, ticket });
      if (!this.#channel) break;
      await sleep(60);
      if (!this.#beaten) break;
      this.#myTicket = null;
      this.#channel.postMessage({ type: 'lock', busy: false, ticket });
      await sleep(100 + Math.random() * 200);
    }
    try {
      return await fn();
    } finally {
      this.#myTicket = null;
      this.#channel?.postMessage({ type: 'lock', busy: false, ticket });
    }
  }

  #othersBusy() {
    const now = Date.now();
    for (const [ticket, until] of this.#busyOthers) {
      if (until > now) return true;
      this.#busyOthers.delete(ticket);
    }
    return false;
  }

  async register(username, password) {
    const path = '/api/auth/register';
    const data = await this.#retrying('POST', path, () => this.#fetch('POST', path, { body: { username, password } }));
    return data.user;
  }

  async login(username, password) {
    // The lock is taken per attempt: another tab may refresh while this one waits.
    const path = '/api/auth/login';
    const data = await this.#retrying('POST', path, () =>
      this.#withLock(() => this.#fetch('POST', path, { body: { username, password } })),
    );
    this.#applyPair(data);
    return { user: this.#user, sessionId: this.#sessionId };
  }

  async resume() {
    try {
      await this.refresh();
      return this.#user;
    } catch (error) {
      if (error instanceof TetherError && error.status === 401 && error.code === 'invalid_refresh_token') return null;
      throw error;
    }
  }

  /**
   * One refresh through the cookie, at most one in flight per tab, never two across tabs.
   * A 503 not_ready / busy is retried (the lock is released while waiting) and, once the
   * retries are spent, rejects without touching the session: the refresh token was not
   * used, so it stays good. Only a 401 / 403 drops the tokens.
   */
  refresh() {
    if (!this.#refreshing) {
      const path = '/api/auth/refresh';
      this.#refreshing = this.#retrying('POST', path, () => this.#withLock(() => this.#fetch('POST', path)))
        .then(
          (data) => {
            this.#applyPair(data);
            return { user: this.#user, sessionId: this.#sessionId };
          },
          (error) => {
            if (isAuthFailure(error)) this.#dropAuth();
            throw error;
          },
        )
        .finally(() => {
          this.#refreshing = null;
        });
    }
    return this.#refreshing;
  }

  async logout() {
    await this.#endSession('logout', '/api/auth/logout', { type: 'logout', sessionId: this.#sessionId });
  }

  async logoutAll() {
    await this.#endSession('logout-all', '/api/auth/logout-all', { type: 'logout-all', userId: this.#user?.id });
  }

  async #endSession(reason, path, announcement) {
    // Close our own socket first, so that the server's 4001 is not taken for a revocation.
    this.disconnect();
    this.#channel?.postMessage(announcement);
    try {
      if (this.#accessToken) {
        // An access token about to expire is renewed first (outside the lock: refresh
        // takes it too); then the call runs under the lock, because its answer clears
        // the cookie, which must not race another tab's refresh.
        await this.#ensureFresh(5_000).catch(() => {});
        if (this.#accessToken) {
          await this.#retrying('POST', path, () =>
            this.#withLock(() => this.#fetch('POST', path, { token: this.#accessToken })),
          );
        }
      }
    } catch (error) {
      // 401: the session was already over; there is nothing left to revoke.
      if (!(error instanceof TetherError && error.status === 401)) throw error;
    } finally {
      this.#dropAuth();
      this.#emit('loggedout', { reason, error: null });
    }
  }

  me() {
    return this.request('GET', '/api/me');
  }

  async listSessions() {
    const data = await this.request('GET', '/api/sessions');
    return data.sessions;
  }

  async revokeSession(id) {
    await this.request('DELETE', `/api/sessions/${encodeURIComponent(id)}`);
  }

  #applyPair(data) {
    if (!data || typeof data.access_token !== 'string') {
      throw new TetherError(0, 'bad_response', 'the server sent no access token');
    }
    const changed = this.#sessionId !== null && this.#sessionId !== data.session_id;
    this.#accessToken = data.access_token;
    // data.refresh_token is ignored on purpose: the HttpOnly cookie carries it.
    const expiresIn = Number(data.expires_in) || 60;
    this.#expiresAt = Date.now() + expiresIn * 1000;
    this.#user = data.user ?? null;
    this.#sessionId = data.session_id ?? null;
    this.#scheduleRefresh(expiresIn * 1000);
    this.#emit('auth', { user: this.#user, sessionId: this.#sessionId, expiresIn, changed });
    if (changed && this.#wantConnected) {
      // Another tab's login replaced the cookie: follow it with a fresh socket.
      this.#closeSocket(1000, 'session changed');
      this.#open();
    }
  }

  #dropAuth() {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    this.#accessToken = null;
    this.#expiresAt = 0;
    this.#user = null;
    this.#sessionId = null;
  }

  #scheduleRefresh(lifetimeMs) {
    clearTimeout(this.#refreshTimer);
    const jitter = Math.random() * 10_000;
    const delay =
      lifetimeMs > this.#refreshMarginMs * 2 ? lifetimeMs - this.#refreshMarginMs - jitter : lifetimeMs / 2;
    this.#refreshTimer = setTimeout(() => this.#backgroundRefresh(0), Math.max(1_000, delay));
  }

  async #backgroundRefresh(failures) {
    if (!this.#accessToken) return;
    try {
      await this.refresh();
    } catch (error) {
      if (isAuthFailure(error)) {
        this.#loggedOut(error);
      } else if (this.#accessToken) {
        // Network or server trouble: try again soon, a little later each time.
        const delay = Math.min(30_000, 2_000 * 2 ** failures) * (0.5 + Math.random() / 2);
        clearTimeout(this.#refreshTimer);
        this.#refreshTimer = setTimeout(() => this.#backgroundRefresh(failures + 1), delay);
      }
    }
  }

  async #ensureFresh(marginMs) {
    if (this.#accessToken && this.#expiresAt - Date.now() < marginMs) await this.refresh();
  }

  #checkToken() {
    if (this.#accessToken && this.#expiresAt - Date.now() < this.#refreshMarginMs) {
      clearTimeout(this.#refreshTimer);
      this.#backgroundRefresh(0);
    }
  }

  #loggedOut(error) {
    const wasLoggedIn = this.#accessToken !== null || this.#wantConnected;
    this.#wantConnected = false;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    this.#closeSocket(1000, 'logged out');
    this.#dropAuth();
    if (this.#state !== 'disconnected') this.#setState('disconnected');
    if (wasLoggedIn) this.#emit('loggedout', { reason: 'refresh-failed', error });
  }

  #onChannel(message) {
    if (!message || typeof message !== 'object') return;
    if (message.type === 'lock') {
      if (!message.busy) {
        this.#busyOthers.delete(message.ticket);
        return;
      }
      this.#busyOthers.set(message.ticket, Date.now() + 5_000);
      if (this.#myTicket !== null && message.ticket < this.#myTicket) this.#beaten = true;
      return;
    }
    if (!this.#accessToken) return;
    const mine =
      (message.type === 'logout' && message.sessionId === this.#sessionId) ||
      (message.type === 'logout-all' && message.userId === this.#user?.id);
    if (!mine) return;
    this.#wantConnected = false;
    clearTimeout(this.#reconnectTimer);
    this.#closeSocket(1000, 'logged out');
    this.#dropAuth();
    this.#setState('disconnected');
    this.#emit('loggedout', { reason: 'other-tab', error: null });
  }

  // ---------------------------------------------------------------- socket

  #socketUrl() {
    if (this.#wsUrl) return this.#wsUrl;
    const base = this.#baseUrl ? new URL(this.#baseUrl, location.href) : location;
    const scheme = base.protocol === 'https:' ? 'wss:' : 'ws:';
    const prefix = this.#baseUrl ? new URL(this.#baseUrl, location.href).pathname.replace(/\/+$/, '') : '';
    return `${scheme}//${base.host}${prefix}/ws`;
  }

  connect() {
    if (!this.#accessToken) throw new TetherError(401, 'not_logged_in', 'not logged in');
    this.#wantConnected = true;
    this.#attempt = 0;
    this.#retried4401 = false;
    if (this.#ws && this.#ws.readyState <= WebSocket.OPEN) return;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    this.#open();
  }

  disconnect() {
    const had = this.#wantConnected || this.#ws !== null;
    this.#wantConnected = false;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    this.#closeSocket(1000, 'bye');
    if (had) this.#setState('disconnected');
  }

  send(message) {
    if (!this.#ws || this.#ws.readyState !== WebSocket.OPEN) return false;
    this.#ws.send(JSON.stringify(message));
    return true;
  }

  ping(t = Math.round(performance.now() * 1000) / 1000) {
    return this.send({ type: 'ping', t });
  }
  join(room, extra) {
    return this.send(withExtra(room ? { type: 'join', room } : { type: 'join' }, extra));
  }
  leave() {
    return this.send({ type: 'leave' });
  }
  input(seq, dx, dy, extra) {
    return this.send(withExtra({ type: 'input', seq, dx, dy }, extra));
  }
  chat(text) {
    return this.send({ type: 'chat', text });
  }

  #closeSocket(code, reason) {
    clearTimeout(this.#socketTimer);
    clearInterval(this.#socketTimer);
    this.#socketTimer = null;
    const ws = this.#ws;
    this.#ws = null;
    const wasConnected = this.#connected;
    this.#connected = false;
    if (ws && ws.readyState <= WebSocket.OPEN) {
      try {
        ws.close(code, reason);
      } catch {
        /* already closing */
      }
    }
    return wasConnected;
  }

  async #open() {
    if (!this.#wantConnected) return;
    this.#setState(this.#attempt > 0 ? 'reconnecting' : 'connecting');
    try {
      await this.#ensureFresh(10_000);
    } catch (error) {
      if (isAuthFailure(error)) {
        this.#loggedOut(error);
      } else {
        // Network trouble or 503 not_ready / busy: the session is kept; try again later.
        this.#scheduleReconnect(isTryLater(error) ? error.retryAfterMs : null, null, isTryLater(error));
      }
      return;
    }
    if (!this.#wantConnected || !this.#accessToken) return;
    if (this.#ws) return; // another #open won the race
    let ws;
    try {
      ws = new WebSocket(this.#socketUrl(), ['tether.v1', `tether.bearer.${this.#accessToken}`]);
    } catch (error) {
      this.#scheduleReconnect(null);
      return;
    }
    this.#ws = ws;
    ws.binaryType = 'arraybuffer'; // a Blob would need an async read per frame
    this.#socketTimer = setTimeout(() => {
      if (ws === this.#ws && !this.#connected) this.#abandon(`no welcome within ${this.#welcomeTimeoutMs} ms`);
    }, this.#welcomeTimeoutMs);
    ws.onmessage = (event) => {
      if (ws !== this.#ws) return;
      if (typeof event.data !== 'string') {
        if (!(event.data instanceof ArrayBuffer)) return;
        this.#lastReceivedAt = Date.now();
        this.#emit('binary', event.data);
        return;
      }
      this.#lastReceivedAt = Date.now();
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!message || typeof message.type !== 'string') return;
      if (message.type === 'welcome') {
        this.#attempt = 0;
        this.#retried4401 = false;
        this.#connected = true;
        this.#startKeepalive(ws);
        this.#setState('connected');
      }
      if (GAME_EVENTS.has(message.type)) this.#emit(message.type, message);
      if (message.type === 'pong' && typeof message.t === 'number' && this.#pingsSent.has(message.t)) {
        this.#pingsSent.delete(message.t);
        this.#emit('latency', { rttMs: performance.now() - message.t });
      }
      this.#emit('message', message);
    };
    ws.onclose = (event) => {
      if (ws !== this.#ws) return; // closed on purpose, already handled
      this.#closeSocket(1000, '');
      this.#onClose(event);
    };
  }

  /** Keepalive pings (they also measure latency) and a check that traffic still flows. */
  #startKeepalive(ws) {
    clearTimeout(this.#socketTimer);
    this.#pingsSent.clear();
    if (!this.#pingEveryMs) return;
    this.#lastReceivedAt = Date.now();
    const beat = () => {
      if (ws !== this.#ws) return;
      if (this.#staleAfterMs && Date.now() - this.#lastReceivedAt > this.#staleAfterMs) {
        this.#abandon(`nothing received for ${Math.round((Date.now() - this.#lastReceivedAt) / 1000)} s`);
        return;
      }
      const t = Math.round(performance.now() * 1000) / 1000;
      if (this.#pingsSent.size > 16) this.#pingsSent.clear();
      this.#pingsSent.add(t);
      this.send({ type: 'ping', t });
    };
    beat();
    this.#socketTimer = setInterval(beat, this.#pingEveryMs);
  }

  /** Gives up on a socket that hangs (no welcome, or silent): reconnect as after a 1006. */
  #abandon(why) {
    this.#closeSocket(1000, 'abandoned');
    if (this.#wantConnected) this.#scheduleReconnect(null, { code: 1006, reason: why, wasClean: false, busy: false });
  }

  #onClose({ code, reason, wasClean }) {
    const decision = classifyClose(code, reason);
    const base = { code, reason, wasClean, busy: decision.busy === true };
    if (!this.#wantConnected) {
      this.#setState('disconnected');
      this.#emit('close', { ...base, willReconnect: false, delayMs: null });
      return;
    }
    if (decision.action === 'terminal') {
      this.#wantConnected = false;
      this.#dropAuth(); // the session is over; its tokens are worthless
      this.#setState('closed', { code, reason });
      this.#emit('close', { ...base, willReconnect: false, delayMs: null });
      this.#emit('terminal', { code, reason, kind: decision.kind, text: decision.text });
      return;
    }
    if (decision.action === 'refresh') {
      if (this.#retried4401) {
        this.#emit('close', { ...base, willReconnect: false, delayMs: null });
        this.#loggedOut(new TetherError(401, 'invalid_token', 'the server refused the access token'));
        return;
      }
      this.#retried4401 = true;
      this.#emit('close', { ...base, willReconnect: true, delayMs: 0 });
      this.#setState('reconnecting', { delayMs: 0, code, reason });
      this.refresh().then(
        () => this.#open(),
        (error) => {
          if (isAuthFailure(error)) this.#loggedOut(error);
          else this.#scheduleReconnect(isTryLater(error) ? error.retryAfterMs : null, null, isTryLater(error));
        },
      );
      return;
    }
    if (decision.action === 'stop') {
      this.#wantConnected = false;
      this.#setState('disconnected', { code, reason });
      this.#emit('close', { ...base, willReconnect: false, delayMs: null });
      return;
    }
    // 'reconnect': 1001, 1006, 1011, 1012, 1013 (busy: the tokens are kept), ...
    this.#scheduleReconnect(decision.floorMs, base);
  }

  #scheduleReconnect(floorMs, closeDetail = null, busy = closeDetail?.busy === true) {
    const delayMs = backoffMs(this.#attempt, {
      baseMs: this.#backoffBaseMs,
      maxMs: this.#backoffMaxMs,
      floorMs: Math.min(floorMs ?? 0, 60_000), // a reason's hint or a Retry-After, at most 60 s
    });
    this.#attempt += 1;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      this.#open();
    }, delayMs);
    if (closeDetail) this.#emit('close', { ...closeDetail, willReconnect: true, delayMs });
    const cause = closeDetail ? { code: closeDetail.code, reason: closeDetail.reason } : {};
    this.#setState('reconnecting', { delayMs, busy, ...cause });
    return delayMs;
  }

  #reconnectNow() {
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    this.#open();
  }
}

/** `base` plus the fields of `extra` it does not set itself. */
function withExtra(base, extra) {
  if (!extra) return base;
  const message = { ...base };
  for (const [key, value] of Object.entries(extra)) if (!(key in base)) message[key] = value;
  return message;
}

/**
 * What the client does after a socket close (the "Reconnect policy" of the header):
 *   { action: 'terminal', kind, text }  4001-4005: the session is over
 *   { action: 'refresh' }               4401: refresh once, then reconnect
 *   { action: 'stop' }                  1000, 1008, 1009, codes below 1000 or from 2000
 *                                       on (other than 4401 and 4001-4005)
 *   { action: 'reconnect', floorMs, busy }  any other 1xxx; floorMs: the delay a 1001 or
 *                                       1013 reason names (or null); busy: 1013, the node
 *                                       cannot vouch for the session right now (keep the
 *                                       tokens, say "retrying", not "logged out")
 */
export function classifyClose(code, reason) {
  const terminal = TERMINAL[code];
  if (terminal) return { action: 'terminal', kind: terminal.kind, text: describeClose(code, reason) };
  if (code === 4401) return { action: 'refresh' };
  if (code === 1000 || code === 1008 || code === 1009 || !(code >= 1000 && code < 2000)) return { action: 'stop' };
  const floorMs = code === 1001 || code === 1013 ? hintMs(reason) : null;
  return { action: 'reconnect', floorMs, busy: code === 1013 };
}

/**
 * Full-jitter exponential backoff: floorMs + random(0, min(maxMs, baseMs * 2^attempt)),
 * in whole milliseconds. random() is Math.random unless given (tests).
 */
export function backoffMs(attempt, { baseMs = 500, maxMs = 15_000, floorMs = 0, random = Math.random } = {}) {
  const bound = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt));
  return Math.round(Math.max(0, floorMs || 0) + random() * bound);
}

/**
 * A Retry-After header value in milliseconds, or null when absent or unreadable:
 * delay-seconds ("5") or an HTTP date (then the time left until it, at least 0).
 */
export function retryAfterMs(value, now = Date.now()) {
  if (typeof value !== 'string' || !value.trim()) return null;
  const text = value.trim();
  if (/^\d+(?:\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  const at = Date.parse(text);
  if (Number.isNaN(at)) return null;
  return Math.max(0, at - now);
}

/**
 * A delay named in a 1001 or 1013 reason, or null: "server shutting down: reconnect in 3.4s",
 * "retry in 500ms", "retry_after_ms=5000"; seconds unless "ms" follows; capped at 60 s.
 */
export function hintMs(reason) {
  if (typeof reason !== 'string') return null;
  const match = /(?:reconnect|retry)(_after_ms)?[^0-9]{0,20}?(\d+(?:\.\d+)?)\s*(ms|s)?\b/i.exec(reason);
  if (!match) return null;
  const value = Number(match[2]);
  if (!Number.isFinite(value)) return null;
  const ms = match[1] || match[3]?.toLowerCase() === 'ms' ? value : value * 1000;
  return Math.min(Math.max(ms, 0), 60_000);
}
