// Unit tests of client-demo/web/tether-client.js for what a game with its own frame format
// needs (the game page's binary snapshots): binary frames are handed over as received, an
// ArrayBuffer in a 'binary' event, and any message or extra field can be sent, while the
// library itself knows nothing of what they mean.
//
//   node --test tests/browser/tether_client_frames.test.mjs
//
// Plain Node (>= 20), no browser, no network, no npm packages: fetch and WebSocket are
// stubbed, and the library is loaded as a data: URL module (as in
// tether_client_retry.test.mjs).

import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

const source = await readFile(new URL('../../client-demo/web/tether-client.js', import.meta.url), 'utf8');
const { TetherClient } = await import(`data:text/javascript;base64,${Buffer.from(source).toString('base64')}`);

const realSetTimeout = globalThis.setTimeout;
globalThis.setTimeout = (fn, ms, ...args) => {
  const timer = realSetTimeout(fn, ms, ...args);
  if (ms > 5_000) timer.unref?.(); // the silent refresh and the welcome deadline
  return timer;
};
const wait = (ms) => new Promise((resolve) => realSetTimeout(resolve, ms));
globalThis.BroadcastChannel = undefined;

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
    this.binaryType = 'blob'; // a browser's default
    this.sent = [];
    FakeWebSocket.instances.push(this);
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.readyState = FakeWebSocket.CLOSED;
  }
  deliver(data) {
    this.onmessage?.({ data });
  }
}
globalThis.WebSocket = FakeWebSocket;

const login = async () =>
  new Response(
    JSON.stringify({
      access_token: 'jwt-1',
      token_type: 'Bearer',
      expires_in: 900,
      refresh_token: 'opaque',
      session_id: 'sid-1',
      user: { id: 'uid-1', username: 'ada', role: 'player' },
    }),
    { status: 200 },
  );

const clients = [];
afterEach(async () => {
  for (const client of clients.splice(0)) {
    globalThis.fetch = async () => new Response(null, { status: 204 });
    await client.logout().catch(() => {});
  }
});

/** A logged-in client whose socket got its welcome; the socket is returned too. */
async function connected() {
  const client = new TetherClient({ wsUrl: 'ws://test/ws', pingEveryMs: 0 });
  clients.push(client);
  globalThis.fetch = login;
  await client.login('ada', 'correct horse battery');
  client.connect();
  for (let n = 0; n < 50 && FakeWebSocket.instances.length === 0; n++) await wait(2);
  const ws = FakeWebSocket.instances.pop();
  assert.ok(ws, 'the client opened a socket');
  ws.readyState = FakeWebSocket.OPEN;
  ws.deliver(JSON.stringify({ type: 'welcome', session_id: 'sid-1', user: { id: 'uid-1' }, server_time: 'now' }));
  assert.equal(client.connected, true);
  return { client, ws };
}

test('the socket asks for ArrayBuffers, and a binary frame comes out as a binary event, untouched', async () => {
  const { client, ws } = await connected();
  assert.equal(ws.binaryType, 'arraybuffer');
  const got = [];
  const messages = [];
  client.on('binary', (buffer) => got.push(buffer));
  client.on('message', (message) => messages.push(message));
  const frame = Uint8Array.from([1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).buffer;
  ws.deliver(frame);
  assert.equal(got.length, 1);
  assert.equal(got[0], frame, 'the very ArrayBuffer received');
  assert.equal(messages.length, 0, "a binary frame is not a JSON 'message'");
  ws.deliver(new Blob(['x'])); // a socket left at 'blob' would give these: not ours to read
  assert.equal(got.length, 1);
});

test('join and input take extra fields; their own fields win; send() sends any message', async () => {
  const { client, ws } = await connected();
  assert.equal(client.join('lobby', { encoding: 'binary' }), true);
  assert.equal(client.join(undefined, { encoding: 'binary' }), true);
  assert.equal(client.join('arena'), true);
  assert.equal(client.input(7, 1, 0, { ack: 41 }), true);
  assert.equal(client.input(8, 0, -1, { seq: 99, type: 'chat', ack: 0 }), true);
  assert.equal(client.input(9, 0, 1), true);
  assert.equal(client.send({ type: 'ack', tick: 42 }), true);
  assert.deepEqual(ws.sent, [
    { type: 'join', room: 'lobby', encoding: 'binary' },
    { type: 'join', encoding: 'binary' },
    { type: 'join', room: 'arena' },
    { type: 'input', seq: 7, dx: 1, dy: 0, ack: 41 },
    { type: 'input', seq: 8, dx: 0, dy: -1, ack: 0 },
    { type: 'input', seq: 9, dx: 0, dy: 1 },
    { type: 'ack', tick: 42 },
  ]);
});
