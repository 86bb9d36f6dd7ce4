// Unit tests of client-demo/web/tether-client.js for what v2 adds (API.md "Cluster", close
// 1013, 503 not_ready / busy): "this node cannot vouch for you right now" means back off
// with jitter and retry, never log the player out.
//
//   node --test tests/browser/tether_client_retry.test.mjs
//
// Plain Node (>= 20), no browser, no network, no npm packages: fetch and WebSocket are
// stubbed, and the library is loaded as a data: URL module so that Node reads it as ESM
// whatever its version's module detection.

import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

const source = await readFile(new URL('../../client-demo/web/tether-client.js', import.meta.url), 'utf8');
const lib = await import(`data:text/javascript;base64,${Buffer.from(source).toString('base64')}`);
const { TetherClient, TetherError, classifyClose, backoffMs, retryAfterMs, isTryLater, isAuthFailure, hintMs } = lib;

// ------------------------------------------------------------------ environment

// The library's long timers (the silent refresh minutes ahead, the welcome deadline) must
// not keep this process alive; short ones (retry waits, reconnects) are awaited by the
// tests and stay referenced.
const realSetTimeout = globalThis.setTimeout;
globalThis.setTimeout = (fn, ms, ...args) => {
  const timer = realSetTimeout(fn, ms, ...args);
  if (ms > 5_000) timer.unref?.();
  return timer;
};
const wait = (ms) => new Promise((resolve) => realSetTimeout(resolve, ms));
globalThis.BroadcastChannel = undefined; // one tab; a Node channel would hold the loop open

class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  static instances = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = FakeWebSocket.CONNECTING;
    this.onmessage = null;
    this.onclose = null;
    FakeWebSocket.instances.push(this);
  }
  send() {}
  close() {
    this.readyState = FakeWebSocket.CLOSED;
  }
  /** The server completes the upgrade and closes at once, as a stale node does (1013). */
  serverClose(code, reason) {
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.({ code, reason, wasClean: true });
  }
}
globalThis.WebSocket = FakeWebSocket;

// Every client a test makes is logged out after it, so that no timer outlives the test.
const clients = [];
function newClient(options) {
  const client = new TetherClient({ wsUrl: 'ws://test/ws', pingEveryMs: 0, ...options });
  clients.push(client);
  return client;
}
afterEach(async () => {
  for (const client of clients.splice(0)) {
    scriptFetch([{ status: 204 }]);
    await client.logout().catch(() => {});
  }
});

/** fetch answered from a script: each entry is {status, body, headers} or a function of the call. */
function scriptFetch(script) {
  const calls = [];
  globalThis.fetch = async (url, init) => {
    calls.push({ url, method: init.method, authorization: init.headers.authorization ?? null });
    const next = script.length > 1 ? script.shift() : script[0];
    const answer = typeof next === 'function' ? next(url, init) : next;
    const body = answer.body === undefined ? '' : JSON.stringify(answer.body);
    return new Response(answer.status === 204 ? null : body, { status: answer.status, headers: answer.headers ?? {} });
  };
  return calls;
}

const PAIR = {
  access_token: 'jwt-1',
  token_type: 'Bearer',
  expires_in: 900,
  refresh_token: 'opaque',
  session_id: 'sid-1',
  user: { id: 'uid-1', username: 'ada', role: 'player' },
};
const OK_PAIR = { status: 200, body: PAIR };
const NOT_READY = { status: 503, body: { error: 'not_ready', message: 'this node is catching up' } };
const busy = (seconds) => ({
  status: 503,
  body: { error: 'busy', message: 'too many password hashes in flight' },
  headers: { 'retry-after': String(seconds) },
});

/** A client with fast backoff, logged in (fetch then scripted with `script`). */
async function loggedInClient(options = {}, script = [NOT_READY]) {
  scriptFetch([OK_PAIR]);
  const client = newClient({ backoffBaseMs: 5, backoffMaxMs: 40, ...options });
  await client.login('ada', 'correct horse battery');
  const events = [];
  for (const type of ['retrying', 'loggedout', 'close', 'state', 'terminal']) {
    client.on(type, (detail) => events.push({ type, ...detail }));
  }
  const calls = scriptFetch(script);
  return { client, events, calls };
}

// ------------------------------------------------------------------ pure helpers

test('1013 is a reconnect, busy, not terminal; its reason may name a floor', () => {
  assert.deepEqual(classifyClose(1013, 'try again later: node is catching up'), {
    action: 'reconnect',
    floorMs: null,
    busy: true,
  });
  assert.deepEqual(classifyClose(1013, 'try again later: retry in 2.5s'), { action: 'reconnect', floorMs: 2500, busy: true });
  assert.deepEqual(classifyClose(1001, 'server shutting down: reconnect in 300ms'), {
    action: 'reconnect',
    floorMs: 300,
    busy: false,
  });
  // Only 1001 and 1013 reasons are read for a delay.
  assert.deepEqual(classifyClose(1006, 'retry in 9s'), { action: 'reconnect', floorMs: null, busy: false });
  assert.equal(classifyClose(4004, 'kicked: spamming').action, 'terminal');
  assert.equal(classifyClose(4004, 'kicked: spamming').text, 'You were kicked: spamming');
  assert.equal(classifyClose(4401, '').action, 'refresh');
  for (const code of [1000, 1008, 1009, 999, 3000, 4999]) assert.equal(classifyClose(code, '').action, 'stop', `code ${code}`);
  assert.equal(hintMs('try again later: node is catching up'), null);
});

test('backoff is full jitter over an exponential bound, capped, above the floor', () => {
  const low = () => 0;
  const high = () => 0.999999;
  assert.equal(backoffMs(0, { baseMs: 500, maxMs: 15_000, random: low }), 0);
  assert.equal(backoffMs(0, { baseMs: 500, maxMs: 15_000, random: high }), 500);
  assert.equal(backoffMs(3, { baseMs: 500, maxMs: 15_000, random: high }), 4_000);
  assert.equal(backoffMs(10, { baseMs: 500, maxMs: 15_000, random: high }), 15_000);
  // Retry-After (or a delay in a close reason) is a floor, never shortened by jitter.
  assert.equal(backoffMs(2, { baseMs: 500, maxMs: 15_000, floorMs: 3_000, random: low }), 3_000);
  assert.equal(backoffMs(2, { baseMs: 500, maxMs: 15_000, floorMs: 3_000, random: high }), 5_000);
  for (let i = 0; i < 200; i++) {
    const delay = backoffMs(4, { baseMs: 500, maxMs: 15_000, floorMs: 1_000 });
    assert.ok(delay >= 1_000 && delay <= 9_000, `delay ${delay}`);
  }
});

test('Retry-After: seconds or an HTTP date; anything else is no floor', () => {
  assert.equal(retryAfterMs('5'), 5_000);
  assert.equal(retryAfterMs(' 0.5 '), 500);
  assert.equal(retryAfterMs('0'), 0);
  const now = Date.parse('2030-01-01T00:00:00Z');
  assert.equal(retryAfterMs('Tue, 01 Jan 2030 00:00:07 GMT', now), 7_000);
  assert.equal(retryAfterMs('Mon, 31 Dec 2029 23:59:00 GMT', now), 0);
  assert.equal(retryAfterMs('soon'), null);
  assert.equal(retryAfterMs(''), null);
  assert.equal(retryAfterMs(null), null);
});

test('503 not_ready / busy is "try later", never an auth failure', () => {
  const notReady = new TetherError(503, 'not_ready', 'stale');
  const busyError = new TetherError(503, 'busy', 'shedding', null, 2_000);
  assert.equal(isTryLater(notReady), true);
  assert.equal(isTryLater(busyError), true);
  assert.equal(isAuthFailure(notReady), false);
  assert.equal(isAuthFailure(busyError), false);
  assert.equal(busyError.retryAfterMs, 2_000);
  assert.equal(isTryLater(new TetherError(503, 'http_503', 'proxy')), false);
  assert.equal(isTryLater(new TetherError(429, 'rate_limited', 'slow down')), false);
  assert.equal(isAuthFailure(new TetherError(401, 'session_revoked', 'revoked')), true);
  assert.equal(isAuthFailure(new TetherError(403, 'banned', 'banned')), true);
});

// ------------------------------------------------------------------ the client

test('a socket closed 1013 reconnects with backoff and keeps the session', async () => {
  const { client, events } = await loggedInClient();
  FakeWebSocket.instances.length = 0;
  client.connect();
  await wait(0); // #open awaits the token check
  assert.equal(FakeWebSocket.instances.length, 1);
  FakeWebSocket.instances[0].serverClose(1013, 'try again later: retry in 60ms');

  const close = events.find((e) => e.type === 'close');
  assert.equal(close.code, 1013);
  assert.equal(close.willReconnect, true);
  assert.equal(close.busy, true);
  assert.ok(close.delayMs >= 60, `the reason's delay is a floor: ${close.delayMs}`);
  const state = events.filter((e) => e.type === 'state').at(-1);
  assert.equal(state.state, 'reconnecting');
  assert.equal(state.busy, true);
  assert.equal(state.code, 1013);
  assert.equal(client.state, 'reconnecting');
  assert.equal(client.loggedIn, true);
  assert.equal(client.sessionId, 'sid-1');
  assert.equal(client.user.username, 'ada');
  assert.ok(!events.some((e) => e.type === 'loggedout' || e.type === 'terminal'));

  await wait(close.delayMs + 50);
  assert.equal(FakeWebSocket.instances.length, 2, 'a new socket was opened');
  assert.deepEqual(FakeWebSocket.instances[1].protocols, ['tether.v1', 'tether.bearer.jwt-1']);
  // Again 1013: the attempt counter grows (no welcome in between), still no logout.
  FakeWebSocket.instances[1].serverClose(1013, 'try again later: node is catching up');
  const second = events.filter((e) => e.type === 'close').at(-1);
  assert.equal(second.willReconnect, true);
  assert.equal(client.loggedIn, true);
  client.disconnect();
});

test('a Bearer call answered 503 not_ready is retried, then succeeds', async () => {
  const { client, events, calls } = await loggedInClient({}, [NOT_READY, NOT_READY, { status: 200, body: { sessions: [] } }]);
  const sessions = await client.listSessions();
  assert.deepEqual(sessions, []);
  assert.equal(calls.length, 3);
  assert.ok(calls.every((c) => c.authorization === 'Bearer jwt-1'));
  const retries = events.filter((e) => e.type === 'retrying');
  assert.deepEqual(
    retries.map((e) => [e.attempt, e.code, e.path]),
    [
      [1, 'not_ready', '/api/sessions'],
      [2, 'not_ready', '/api/sessions'],
    ],
  );
  assert.equal(client.loggedIn, true);
});

test('retries are bounded, then the 503 surfaces; the session is kept', async () => {
  const { client, events, calls } = await loggedInClient({ retryAttempts: 3 }, [NOT_READY]);
  await assert.rejects(client.me(), (error) => {
    assert.ok(error instanceof TetherError);
    assert.equal(error.status, 503);
    assert.equal(error.code, 'not_ready');
    assert.equal(error.attempts, 3);
    return true;
  });
  assert.equal(calls.length, 3);
  assert.equal(events.filter((e) => e.type === 'retrying').length, 2);
  assert.equal(client.loggedIn, true);
  assert.equal(client.sessionId, 'sid-1');
  assert.ok(!events.some((e) => e.type === 'loggedout'));
});

test('Retry-After is a floor; one beyond the budget ends the retries at once', async () => {
  const { client, events, calls } = await loggedInClient({}, [busy(1), { status: 200, body: { ok: true } }]);
  const started = Date.now();
  assert.deepEqual(await client.request('GET', '/api/me'), { ok: true });
  assert.ok(Date.now() - started >= 990, 'waited out Retry-After');
  const retry = events.find((e) => e.type === 'retrying');
  assert.equal(retry.code, 'busy');
  assert.equal(retry.retryAfterMs, 1_000);
  assert.ok(retry.delayMs >= 1_000);
  assert.equal(calls.length, 2);

  scriptFetch([busy(60)]);
  await assert.rejects(client.request('GET', '/api/me'), (error) => error.code === 'busy' && error.attempts === 1 && error.retryAfterMs === 60_000);
  assert.equal(client.loggedIn, true);
});

test('a refresh answered 503 does not drop the session or the refresh token', async () => {
  const { client, events, calls } = await loggedInClient({ retryAttempts: 2 }, [NOT_READY]);
  await assert.rejects(client.refresh(), (error) => error.code === 'not_ready');
  assert.equal(calls.length, 2);
  assert.equal(client.loggedIn, true);
  assert.equal(client.sessionId, 'sid-1');
  assert.ok(!events.some((e) => e.type === 'loggedout'));
  // The cookie was not used up: the next refresh simply works.
  scriptFetch([{ status: 200, body: { ...PAIR, access_token: 'jwt-2' } }]);
  await client.refresh();
  assert.equal(client.loggedIn, true);

  // Contrast: a 401 is what ends a session.
  scriptFetch([{ status: 401, body: { error: 'session_revoked', message: 'revoked' } }]);
  await assert.rejects(client.refresh(), (error) => error.code === 'session_revoked');
  assert.equal(client.loggedIn, false);
});

test('a 401 invalid_token whose refresh meets 503 surfaces the 503, not a logout', async () => {
  const calls = [];
  const { client, events } = await loggedInClient({ retryAttempts: 2 }, [{ status: 200 }]);
  scriptFetch([
    (url) => {
      calls.push(url);
      return url.endsWith('/api/me')
        ? { status: 401, body: { error: 'invalid_token', message: 'expired' } }
        : NOT_READY;
    },
  ]);
  await assert.rejects(client.me(), (error) => error.code === 'not_ready');
  assert.equal(client.loggedIn, true);
  assert.ok(!events.some((e) => e.type === 'loggedout'));
  // Refresh retried inside its own loop (2), not again by the outer one.
  assert.deepEqual(calls.map((u) => u.replace(/^.*\/api/, '/api')), ['/api/me', '/api/auth/refresh', '/api/auth/refresh']);
});

test('resume() on a node that is not ready rejects with not_ready (not null: the cookie is good)', async () => {
  scriptFetch([NOT_READY]);
  const client = newClient({ backoffBaseMs: 1, backoffMaxMs: 5, retryAttempts: 2 });
  await assert.rejects(client.resume(), (error) => isTryLater(error));
  scriptFetch([OK_PAIR]);
  const user = await client.resume();
  assert.equal(user.username, 'ada');
});

test('login answered 503 busy is retried and then logs in', async () => {
  const calls = scriptFetch([busy(0), OK_PAIR]);
  const client = newClient({ backoffBaseMs: 1, backoffMaxMs: 5 });
  const retries = [];
  client.on('retrying', (detail) => retries.push(detail));
  const { user } = await client.login('ada', 'correct horse battery');
  assert.equal(user.username, 'ada');
  assert.equal(calls.length, 2);
  assert.equal(retries.length, 1);
  assert.equal(retries[0].path, '/api/auth/login');
});

test('a refresh before connecting that meets 503 reconnects later, busy, logged in', async () => {
  // An access token about to expire: connect() refreshes first.
  scriptFetch([{ status: 200, body: { ...PAIR, expires_in: 5 } }]);
  const client = newClient({ backoffBaseMs: 5, backoffMaxMs: 40, retryAttempts: 1 });
  await client.login('ada', 'correct horse battery');
  const states = [];
  client.on('state', (detail) => states.push(detail));
  scriptFetch([NOT_READY]);
  FakeWebSocket.instances.length = 0;
  client.connect();
  await wait(20);
  const reconnecting = states.find((s) => s.state === 'reconnecting');
  assert.ok(reconnecting, 'reconnecting');
  assert.equal(reconnecting.busy, true);
  assert.equal(client.loggedIn, true);
  client.disconnect();
});
