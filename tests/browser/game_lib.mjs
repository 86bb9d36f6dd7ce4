// Helpers for the game page scenarios (game_two_players, game_binary, game_revoked, game_reload).
// The browser side (launch, deadline, failure report) is lib.mjs; this file adds what
// the game page needs: fresh users, logging in through the form, reading
// window.tetherDebug, and a few API calls made from Node.

import { randomBytes } from 'node:crypto';
import { bounded, watchPage, WAIT_MS } from './lib.mjs';

export const PASSWORD = 'correct horse battery';

/** A fresh username (3-32 of A-Z a-z 0-9 _ -). */
export function freshName(prefix) {
  return `${prefix}_${randomBytes(5).toString('hex')}`.slice(0, 32);
}

/** The base URL without trailing slashes. */
export function baseUrl(raw) {
  return raw.replace(/\/+$/, '');
}

/** A second browser context like runScenario's, with its own cookies and its own log. */
export async function newPlayerPage(browser) {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    locale: 'en-US',
    timezoneId: 'UTC',
    serviceWorkers: 'block',
    acceptDownloads: false,
  });
  context.setDefaultTimeout(WAIT_MS);
  context.setDefaultNavigationTimeout(WAIT_MS);
  const page = await context.newPage();
  const log = watchPage(page);
  return { context, page, log };
}

/** window.tetherDebug as plain data (null when the page has none). */
export function debugOf(page) {
  return bounded(
    page.evaluate(() => (window.tetherDebug ? JSON.parse(JSON.stringify(window.tetherDebug)) : null)),
    3_000,
    'read window.tetherDebug',
  );
}

/**
 * Waits until fn(tetherDebug, arg) is truthy; returns its value. fn runs in Node on a
 * copy of window.tetherDebug read every 100 ms (the page's CSP forbids eval, so a
 * predicate cannot be shipped into the page as a string).
 */
export async function waitForDebug(page, label, fn, arg = null, timeout = WAIT_MS) {
  const deadline = Date.now() + timeout;
  let last = null;
  let lastError = null;
  for (;;) {
    try {
      last = await debugOf(page);
      lastError = null;
      const value = last ? fn(last, arg) : null;
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const why = lastError ? `; last read failed: ${lastError.message.split('\n')[0]}` : '';
  throw new Error(`${label}: not reached within ${timeout} ms${why}; tetherDebug: ${summarize(last)}`);
}

/** One line of tetherDebug for failure messages. */
export function summarize(debug) {
  if (!debug) return 'absent';
  const players = Object.entries(debug.players ?? {})
    .map(([id, p]) => `${id}:${p.name ?? '?'}@${Number(p.x).toFixed(1)},${Number(p.y).toFixed(1)}`)
    .join(' ');
  const intervals = debug.snapshotIntervalMs
    ? ` intervals(ms) p50=${debug.snapshotIntervalMs.p50} p90=${debug.snapshotIntervalMs.p90} n=${debug.snapshotIntervalMs.count}`
    : '';
  return (
    `state=${debug.state} connected=${debug.connected} user=${debug.user} session=${debug.sessionId} ` +
    `room=${debug.room} you=${debug.you} tick=${debug.lastSnapshotTick} players=[${players}] ` +
    `encoding=${debug.encoding} binaryFrames=${debug.binaryFrames} frameErrors=${debug.frameErrors}` +
    `${debug.lastFrameError ? ` (${debug.lastFrameError})` : ''} missingBaselines=${debug.missingBaselines}${intervals}`
  );
}

/**
 * Opens the page (`${base}/${query}`, e.g. query '?encoding=json') and gets in through
 * the form: "Create account" (which also logs in) when `register`, else "Log in".
 * Resolves once the game socket is connected and the player is in `room`.
 */
export async function enterThroughForm(page, base, { username, password = PASSWORD, register = true, room = 'lobby', query = '' }) {
  const response = await page.goto(`${base}/${query}`, { waitUntil: 'domcontentloaded' });
  if (!response || !response.ok()) throw new Error(`GET / answered ${response?.status()}`);
  // The page first tries a silent refresh; the form shows once that is settled.
  await page.locator('#login-username').waitFor({ state: 'visible' });
  await page.fill('#login-username', username);
  await page.fill('#login-password', password);
  await page.click(register ? '#register-submit' : '#login-submit');
  const outcome = await page.waitForFunction(
    () => {
      const message = document.querySelector('#auth-message');
      if (message && !message.hidden && message.dataset.kind === 'error') return `error: ${message.textContent}`;
      return window.tetherDebug?.connected ? 'connected' : null;
    },
    null,
    { timeout: WAIT_MS, polling: 100 },
  );
  const value = await outcome.jsonValue();
  if (value !== 'connected') throw new Error(`the page refused ${username}: ${value}`);
  return waitForInRoom(page, room);
}

/** Waits until the player is in `room` and the first snapshot with them arrived. */
export function waitForInRoom(page, room = 'lobby') {
  return waitForDebug(
    page,
    `in room ${room} with a snapshot`,
    (debug, room) =>
      debug.connected && debug.room === room && debug.you !== null && debug.players[debug.you] ? debug : null,
    room,
  );
}

/** A JSON call to the server from Node (no browser): { status, body }. */
export async function api(base, method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await bounded(
    fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }),
    WAIT_MS,
    `${method} ${path}`,
  );
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = text;
  }
  return { status: response.status, body: parsed };
}

/** Like api(), but throws unless the status is `expected`. */
export async function apiOk(base, method, path, expected, options) {
  const answer = await api(base, method, path, options);
  if (answer.status !== expected) {
    throw new Error(`${method} ${path} answered ${answer.status} (expected ${expected}): ${JSON.stringify(answer.body)}`);
  }
  return answer.body;
}

/** Lines for a failure report: tetherDebug, #status and #overlay of each page. */
export async function describePages(pages) {
  const lines = [];
  for (const [name, page] of Object.entries(pages)) {
    if (!page) continue;
    try {
      const debug = await debugOf(page);
      const extra = await bounded(
        page.evaluate(() => {
          const overlay = document.querySelector('#overlay');
          const status = document.querySelector('#status');
          return {
            status: status?.textContent ?? '(absent)',
            overlay: overlay && !overlay.hidden ? `${overlay.dataset.code}: ${overlay.textContent.replace(/\s+/g, ' ').trim()}` : 'hidden',
            auth: document.querySelector('#auth')?.hidden === false ? 'form shown' : 'form hidden',
          };
        }),
        2_000,
        'read the page',
      );
      lines.push(`${name}: ${summarize(debug)}`);
      lines.push(`${name}: #status "${extra.status}", #overlay ${extra.overlay}, ${extra.auth}`);
    } catch (error) {
      lines.push(`${name}: (could not read: ${error.message.split('\n')[0]})`);
    }
  }
  return lines;
}

/** Lines of what a second page logged (lib.mjs reports only the first page's). */
export function logLines(name, log) {
  const lines = [];
  const all = [...log.console, ...log.pageErrors, ...log.failedRequests, ...log.httpErrors];
  lines.push(`${name} page logged: ${all.length ? '' : 'nothing of note'}`);
  for (const entry of all) lines.push(`  ${entry}`);
  return lines;
}

/**
 * Holds a movement key on `mover`'s page until `watcher`'s page sees that player 20 units
 * from where it saw it before; the key goes away from the nearest wall, so a player that
 * spawned against one still moves. Returns the key and both positions.
 */
export async function moveAndWatch(mover, moverName, moverId, watcher, watcherName) {
  const before = (await debugOf(watcher)).players[moverId];
  const own = (await debugOf(mover)).players[moverId];
  // Away from the nearest wall, along the axis with the most room.
  const room = [
    ['ArrowRight', 800 - own.x],
    ['ArrowLeft', own.x],
    ['ArrowDown', 600 - own.y],
    ['ArrowUp', own.y],
  ].sort((a, b) => b[1] - a[1]);
  const key = room[0][0];
  await mover.locator('#game-canvas').click(); // give the world the keyboard
  await mover.keyboard.down(key);
  try {
    const moved = await waitForDebug(
      watcher,
      `${watcherName} sees ${moverName} move (holding ${key}, from ${before.x.toFixed(1)},${before.y.toFixed(1)})`,
      (debug, arg) => {
        const p = debug.players[arg.id];
        return p && Math.hypot(p.x - arg.x, p.y - arg.y) >= 20 ? p : null;
      },
      { id: moverId, x: before.x, y: before.y },
    );
    return { key, before, moved };
  } finally {
    await bounded(mover.keyboard.up(key), 2_000, 'release the key').catch(() => {});
  }
}

/** Both pages have the other page's player in their view. */
export async function seeEachOther(pageA, idA, pageB, idB) {
  await waitForDebug(pageA, `A sees B (player ${idB})`, (debug, id) => debug.players[id], idB);
  await waitForDebug(pageB, `B sees A (player ${idA})`, (debug, id) => debug.players[id], idA);
}
