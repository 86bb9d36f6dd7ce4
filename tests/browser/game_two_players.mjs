// Two players on the game page see each other move.
//
//   node tests/browser/game_two_players.mjs --base http://127.0.0.1:PORT [--screenshot DIR]
//
// Two browser contexts (two cookie jars) each create a fresh account through the form
// and end up connected in the lobby: A's page at ${base}/?encoding=json takes JSON
// snapshots, B's at ${base}/ binary frames (game_binary.mjs tests those further), so
// that both encodings are in one room. Player A holds a movement key; B's page
// must see A's position change (window.tetherDebug.players). Then B holds a key and A
// must see B move. Each key is pressed away from the nearest wall, so that a player who
// spawned against a wall still moves. Exit 0 on success; exit 1 with the failing step,
// both pages' state and what they logged. Each wait is bounded (10 s), the run 60 s.
// With --screenshot DIR, writes DIR/game_two_players-a.png and -b.png.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { bounded, parseCli, runScenario } from './lib.mjs';
import {
  baseUrl,
  debugOf,
  describePages,
  enterThroughForm,
  freshName,
  logLines,
  moveAndWatch,
  seeEachOther,
  newPlayerPage,
  waitForDebug,
} from './game_lib.mjs';

const NAME = 'game_two_players';
const args = parseCli(NAME, {
  base: { required: true, help: 'http://127.0.0.1:PORT' },
  screenshot: { help: 'DIR' },
});
const base = baseUrl(args.base);
const shots = args.screenshot ? (mkdirSync(args.screenshot, { recursive: true }), args.screenshot) : null;

let pageB = null;
let logB = null;
let pageA = null;

await runScenario(
  NAME,
  {
    screenshot: shots ? join(shots, `${NAME}-a.png`) : undefined,
    inspect: ['#status', '#room-name', '#auth-message', '#overlay'],
    describe: async () => [...(await describePages({ A: pageA, B: pageB })), ...(logB ? logLines('B', logB) : [])],
  },
  async ({ browser, page, step }) => {
    pageA = page;
    const nameA = freshName('ann');
    const nameB = freshName('ben');

    await step(`A (${nameA}) creates an account and joins the lobby, with JSON snapshots`, async () => {
      const joined = await enterThroughForm(pageA, base, { username: nameA, query: '?encoding=json' });
      if (joined.encoding !== 'json' || joined.binaryFrames !== 0) {
        throw new Error(`A asked for ${joined.encoding} snapshots and got ${joined.binaryFrames} binary frames`);
      }
    });
    await step(`B (${nameB}) creates an account and joins the lobby`, async () => {
      ({ page: pageB, log: logB } = await newPlayerPage(browser));
      await enterThroughForm(pageB, base, { username: nameB });
    });

    const idA = (await debugOf(pageA)).you;
    const idB = (await debugOf(pageB)).you;
    await step('each page sees the other player in the lobby', () => seeEachOther(pageA, idA, pageB, idB));

    const a = await step("A holds a key; B's page sees A move", () => moveAndWatch(pageA, 'A', idA, pageB, 'B'));
    const b = await step("B holds a key; A's page sees B move", () => moveAndWatch(pageB, 'B', idB, pageA, 'A'));

    await step("once both stop, A's prediction, the server and B agree on where A is", async () => {
      const settled = await waitForDebug(
        pageA,
        'A has no unacknowledged input left',
        (debug) => debug.pendingInputs === 0 && debug.predicted && debug.players[debug.you] && debug,
      );
      const server = settled.players[idA];
      // Snapshots carry tenths; the prediction replays from them, so it is within 0.1.
      if (Math.hypot(settled.predicted.x - server.x, settled.predicted.y - server.y) > 0.15) {
        throw new Error(`A predicts ${JSON.stringify(settled.predicted)}, the server says ${JSON.stringify(server)}`);
      }
      await waitForDebug(
        pageB,
        `B sees A at ${server.x},${server.y}`,
        (debug, at) => {
          const p = debug.players[at.id];
          return p && Math.abs(p.x - at.x) < 0.01 && Math.abs(p.y - at.y) < 0.01;
        },
        { id: idA, x: server.x, y: server.y },
      );
    });

    if (shots) {
      await step('screenshot of B', () => bounded(pageB.screenshot({ path: join(shots, `${NAME}-b.png`) }), 10_000, 'screenshot B'));
    }
    const fmt = (p) => `${p.x.toFixed(1)},${p.y.toFixed(1)}`;
    return (
      `A (${nameA}, player ${idA}) held ${a.key}: B saw ${fmt(a.before)} -> ${fmt(a.moved)}; ` +
      `B (${nameB}, player ${idB}) held ${b.key}: A saw ${fmt(b.before)} -> ${fmt(b.moved)}`
    );
  },
);
