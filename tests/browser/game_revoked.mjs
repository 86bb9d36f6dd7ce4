// A session revoked from elsewhere ends the game page's socket for good.
//
//   node tests/browser/game_revoked.mjs --base http://127.0.0.1:PORT [--screenshot DIR]
//
// A fresh player creates an account through the form at ${base}/ and is connected in
// the lobby. The script then logs the same user in through the API (a second session,
// from Node), finds the page's session in GET /api/sessions (the one that is not
// `current`; it must equal window.tetherDebug.sessionId) and deletes it. The page must
// show #overlay with data-code 4001 and a text naming the revocation, and stay
// disconnected: 3 s later tetherDebug.connected is still false, #status says
// "disconnected", and the session list (from the API) shows no socket for it.
// Exit 0 on success; exit 1 with the failing step, the page's state and log.
// Each wait is bounded (10 s), the run 60 s. With --screenshot DIR, writes
// DIR/game_revoked-overlay.png (the overlay) and DIR/game_revoked.png (the end: the form).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseCli, runScenario } from './lib.mjs';
import {
  apiOk,
  baseUrl,
  debugOf,
  describePages,
  enterThroughForm,
  freshName,
  PASSWORD,
  summarize,
} from './game_lib.mjs';

const NAME = 'game_revoked';
const args = parseCli(NAME, {
  base: { required: true, help: 'http://127.0.0.1:PORT' },
  screenshot: { help: 'DIR' },
});
const base = baseUrl(args.base);
const shots = args.screenshot ? (mkdirSync(args.screenshot, { recursive: true }), args.screenshot) : null;
let thePage = null;

await runScenario(
  NAME,
  {
    screenshot: shots ? join(shots, `${NAME}.png`) : undefined,
    inspect: ['#status', '#overlay', '#auth-message'],
    describe: async () => describePages({ page: thePage }),
  },
  async ({ page, step }) => {
    thePage = page;
    const username = freshName('rev');

    const joined = await step(`${username} creates an account on the page and joins the lobby`, () =>
      enterThroughForm(page, base, { username }),
    );
    const pageSession = joined.sessionId;
    if (!pageSession) throw new Error(`tetherDebug has no sessionId: ${summarize(joined)}`);

    const other = await step('the same user logs in through the API', () =>
      apiOk(base, 'POST', '/api/auth/login', 200, { body: { username, password: PASSWORD } }),
    );

    await step("find the page's session in GET /api/sessions", async () => {
      const { sessions } = await apiOk(base, 'GET', '/api/sessions', 200, { token: other.access_token });
      const notCurrent = sessions.filter((s) => !s.current);
      if (notCurrent.length !== 1 || notCurrent[0].id !== pageSession) {
        throw new Error(`expected exactly the page's session ${pageSession} besides the API's, got ${JSON.stringify(sessions)}`);
      }
      if (!(notCurrent[0].sockets >= 1)) throw new Error(`the page's session shows no socket: ${JSON.stringify(notCurrent[0])}`);
    });

    await step(`DELETE /api/sessions/${pageSession}`, () =>
      apiOk(base, 'DELETE', `/api/sessions/${pageSession}`, 204, { token: other.access_token }),
    );

    const overlay = page.locator('#overlay');
    await step('the page shows #overlay with data-code 4001', async () => {
      await page.waitForFunction(
        () => {
          const node = document.querySelector('#overlay');
          return node && !node.hidden && node.dataset.code === '4001';
        },
        null,
        { polling: 100 },
      );
      await overlay.waitFor({ state: 'visible' });
      const text = (await overlay.textContent()).replace(/\s+/g, ' ').trim();
      if (!/revoked/i.test(text)) throw new Error(`the overlay does not say the session was revoked: "${text}"`);
    });

    const overlayText = (await overlay.textContent()).replace(/\s+/g, ' ').trim();
    await step('3 s later the page is still disconnected (no reconnect)', async () => {
      await page.waitForTimeout(3_000);
      const debug = await debugOf(page);
      if (debug.connected) throw new Error(`the page connected again: ${summarize(debug)}`);
      const status = (await page.textContent('#status')).trim();
      if (!/^disconnected/.test(status)) throw new Error(`#status says "${status}", not "disconnected"`);
      if ((await overlay.getAttribute('data-code')) !== '4001' || (await overlay.isHidden())) {
        throw new Error('the overlay went away');
      }
      const { sessions } = await apiOk(base, 'GET', '/api/sessions', 200, { token: other.access_token });
      const still = sessions.find((s) => s.id === pageSession);
      if (still && still.sockets > 0) throw new Error(`the revoked session has sockets again: ${JSON.stringify(still)}`);
    });

    if (shots) {
      await step('screenshot of the overlay', () => page.screenshot({ path: join(shots, `${NAME}-overlay.png`) }));
    }

    await step('the overlay offers to log in again', async () => {
      await page.click('#overlay-login');
      await page.locator('#login-username').waitFor({ state: 'visible' });
      await overlay.waitFor({ state: 'hidden' });
    });

    return `session ${pageSession} of ${username} revoked from the API; overlay: "${overlayText}"; still disconnected after 3 s`;
  },
);
