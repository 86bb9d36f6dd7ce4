// A reload keeps the player logged in through the refresh cookie.
//
//   node tests/browser/game_reload.mjs --base http://127.0.0.1:PORT [--screenshot DIR]
//
// A fresh player creates an account through the form at ${base}/ and is connected in
// the lobby. The page is reloaded: without touching the form, the page must log in
// again through the HttpOnly refresh cookie (same session, same user), connect and
// join the lobby. The script also checks that no token was left in localStorage,
// sessionStorage or the URL, and that the cookie is HttpOnly. Exit 0 on success;
// exit 1 with the failing step, the page's state and log. Each wait is bounded
// (10 s), the run 60 s. With --screenshot DIR, writes DIR/game_reload.png.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseCli, runScenario } from './lib.mjs';
import { baseUrl, describePages, enterThroughForm, freshName, waitForInRoom } from './game_lib.mjs';

const NAME = 'game_reload';
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
    inspect: ['#status', '#auth-message', '#overlay', '#boot'],
    describe: async () => describePages({ page: thePage }),
  },
  async ({ context, page, step }) => {
    thePage = page;
    const username = freshName('rel');

    const before = await step(`${username} creates an account on the page and joins the lobby`, () =>
      enterThroughForm(page, base, { username }),
    );

    await step('the refresh token is only in an HttpOnly cookie', async () => {
      const cookies = await context.cookies(`${base}/api/auth/refresh`);
      const cookie = cookies.find((c) => c.name === 'tether_refresh');
      if (!cookie) throw new Error(`no tether_refresh cookie for /api/auth: ${JSON.stringify(cookies.map((c) => c.name))}`);
      if (!cookie.httpOnly) throw new Error('the tether_refresh cookie is not HttpOnly');
      const stored = await page.evaluate(() => ({
        local: Object.keys(localStorage).length,
        session: Object.keys(sessionStorage).length,
        url: location.href,
        cookie: document.cookie,
      }));
      if (stored.local || stored.session) throw new Error(`the page stored something: ${JSON.stringify(stored)}`);
      if (/token|eyJ/.test(stored.url)) throw new Error(`a token in the URL: ${stored.url}`);
      if (stored.cookie.includes('tether_refresh')) throw new Error('document.cookie shows the refresh cookie');
    });

    let formShown = false;
    await step('reload the page', async () => {
      // Note whether the login form ever becomes visible during the reload.
      await page.reload({ waitUntil: 'domcontentloaded' });
      const watch = page
        .waitForFunction(() => document.querySelector('#auth')?.hidden === false, null, { polling: 50, timeout: 15_000 })
        .then(
          () => {
            formShown = true;
          },
          () => {},
        );
      void watch;
    });

    const after = await step('the page logs in again by itself and joins the lobby', () => waitForInRoom(page, 'lobby'));

    await step('same user, same session, and the form was never needed', async () => {
      if (formShown) throw new Error('the login form was shown after the reload');
      if (after.user !== username) throw new Error(`logged in as ${after.user}, not ${username}`);
      if (after.sessionId !== before.sessionId) {
        throw new Error(`session ${after.sessionId} after the reload, ${before.sessionId} before: expected the same`);
      }
      if (await page.isVisible('#login-username')) throw new Error('the login form is visible');
      const status = (await page.textContent('#status')).trim();
      if (status !== 'connected') throw new Error(`#status says "${status}"`);
    });

    return `${username} reloaded and came back connected in session ${after.sessionId} (player ${before.you} -> ${after.you})`;
  },
);
