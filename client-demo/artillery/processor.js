// The custom steps of scenario.yml: the account a virtual user logs in as, the
// login's timing, and the player's WebSocket (welcome, join, inputs, pings), with
// Tether's own figures as Artillery metrics (`tether.*`, listed in ../README.md).
'use strict';

const { performance } = require('node:perf_hooks');
const { threadId } = require('node:worker_threads');
const WebSocket = require('ws');

// Like the Rust load generator, this only loads servers on the machine it runs on.
function isLoopback(hostname) {
  return hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);
}

// The `before` step: it fails the run before any virtual user starts.
function refuseRemoteTarget(context, events, done) {
  const { target } = context.vars;
  const url = URL.canParse(target) ? new URL(target) : null;
  if (!url || url.protocol !== 'http:' || !isLoopback(url.hostname)) {
    return done(new Error(`target ${target}: only http:// on loopback (127.0.0.0/8, localhost, [::1])`));
  }
  return done();
}

function pickAccount(context, events, done) {
  const { usersPrefix, users } = context.vars;
  context.vars.username = `${usersPrefix}${1 + Math.floor(Math.random() * Number(users))}`;
  return done();
}

// The contract's error body says why far better than a failed capture would.
function httpFailure(step, res) {
  let code = '';
  try {
    code = ` ${JSON.parse(res.body).error}`;
  } catch {
    // Not the contract's body (a proxy's page, say): the status alone.
  }
  return new Error(`${step}: http ${res.statusCode}${code}`);
}

function checkRegistered(req, res, context, events, done) {
  // 409: another virtual user (or an earlier run) made this account already.
  if (res.statusCode === 201 || res.statusCode === 409) {
    return done();
  }
  return done(httpFailure('register', res));
}

function recordLogin(req, res, context, events, done) {
  if (res.statusCode !== 200) {
    return done(httpFailure('login', res));
  }
  events.emit('counter', 'tether.logins', 1);
  events.emit('histogram', 'tether.login_ms', res.timings.phases.total);
  return done();
}

// Players are dealt into rooms of `roomSize` in arrival order. Each Artillery worker
// thread counts on its own, and so does each artillery process: naming rooms after
// both keeps their rooms apart, so that none is dealt more than `roomSize`.
let arrivals = 0;

function roomFor(roomSize) {
  return `artillery-${process.pid}-${threadId}-${Math.floor(arrivals++ / Number(roomSize))}`;
}

function wsUrl(target) {
  const url = new URL('/ws', target);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

function describeClose(code, reason) {
  return `${code}${reason.length ? ` ${reason}` : ''}`;
}

// One player's socket, from the upgrade to its normal close. Resolves once the player
// has played `playSeconds`, every ping has had its pong and the server has answered
// the close; rejects, naming the stage, on anything else. Declared `async` because
// Artillery tells promise steps from callback steps by the function's constructor.
async function play(context, events) {
  const vars = context.vars;
  const patience = Number(vars.connectTimeoutMs);
  const emit = (kind, name, value) => events.emit(kind, `tether.${name}`, value);

  return new Promise((resolve, reject) => {
    const started = performance.now();
    const ws = new WebSocket(wsUrl(vars.target), {
      // The load tester's transport; browsers use the `tether.bearer.<jwt>` subprotocol.
      headers: { Authorization: `Bearer ${vars.token}` },
      handshakeTimeout: patience,
      // The server does not compress; offering it only costs the client zlib state.
      perMessageDeflate: false,
    });
    const timers = new Set();
    let stage = 'welcome';
    let joinSent = 0;
    let you = null;
    let seq = 0;
    let acked = 0;
    let direction = [0, 0];
    const pingsInFlight = new Set();
    let finishing = false;

    const later = (ms, f) => timers.add(setTimeout(f, ms));
    const every = (ms, f) => timers.add(setInterval(f, ms));
    const clearTimers = () => {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
    };
    const fail = (why) => {
      clearTimers();
      ws.terminate();
      reject(new Error(`${stage}: ${why}`));
    };
    const send = (message) => ws.send(JSON.stringify(message));

    later(patience, () => fail(`no answer within ${patience} ms`));

    const startPlaying = () => {
      stage = 'play';
      clearTimers();
      every(1000 / Number(vars.inputHz), () => {
        // A direction held for a while, then another, as a person steers.
        if (seq % 10 === 0) {
          const angle = Math.random() * 2 * Math.PI;
          direction = [Math.cos(angle), Math.sin(angle)];
        }
        seq += 1;
        send({ type: 'input', seq, dx: direction[0], dy: direction[1] });
        emit('counter', 'inputs.sent', 1);
      });
      every(Number(vars.pingIntervalMs), () => {
        const t = performance.now();
        pingsInFlight.add(t);
        send({ type: 'ping', t });
        emit('counter', 'pings.sent', 1);
      });
      later(Number(vars.playSeconds) * 1000, finish);
    };

    // Stops sending, then closes once the last pong is in, so that a run's pongs
    // equal its pings unless the server lost one.
    const finish = () => {
      stage = 'closing';
      clearTimers();
      finishing = true;
      later(patience, () => fail(`${pingsInFlight.size} pings without a pong or no close answered`));
      if (pingsInFlight.size === 0) ws.close(1000);
    };

    ws.on('message', (data, isBinary) => {
      if (isBinary) return fail('a binary frame, which this client never asked for');
      let message;
      try {
        message = JSON.parse(data.toString());
      } catch {
        return fail('a frame that is not JSON');
      }
      switch (message.type) {
        case 'welcome':
          if (stage !== 'welcome') return fail('a second welcome');
          emit('counter', 'sockets.welcomed', 1);
          emit('histogram', 'welcome_ms', performance.now() - started);
          stage = 'join';
          joinSent = performance.now();
          send({ type: 'join', room: roomFor(vars.roomSize) });
          return undefined;
        case 'joined':
          you = message.you;
          emit('counter', 'rooms.joined', 1);
          emit('histogram', 'join_ms', performance.now() - joinSent);
          return startPlaying();
        case 'pong':
          if (!pingsInFlight.delete(message.t)) return fail(`a pong for no ping: ${message.t}`);
          emit('counter', 'pongs', 1);
          emit('histogram', 'ping_rtt_ms', performance.now() - message.t);
          if (finishing && pingsInFlight.size === 0) ws.close(1000);
          return undefined;
        case 'snapshot': {
          emit('counter', 'snapshots', 1);
          const me = message.players.find((player) => player.id === you);
          if (me && me.ack > acked) {
            emit('counter', 'inputs.acked', me.ack - acked);
            acked = me.ack;
          }
          return undefined;
        }
        case 'error':
          return fail(`server error ${message.code}: ${message.message}`);
        default:
          // presence and chat: other players' doings.
          return undefined;
      }
    });

    ws.on('close', (code, reason) => {
      clearTimers();
      if (stage === 'closing' && code === 1000) {
        emit('counter', 'sockets.closed_normally', 1);
        return resolve();
      }
      return reject(new Error(`${stage}: closed ${describeClose(code, reason.toString())}`));
    });

    // Upgrade refusals (429, 403) and network errors; `close` follows for an open socket.
    ws.on('unexpected-response', (req, res) => fail(`http ${res.statusCode}`));
    ws.on('error', (error) => fail(error.code || error.message));
  });
}

module.exports = { refuseRemoteTarget, pickAccount, checkRegistered, recordLogin, play };
