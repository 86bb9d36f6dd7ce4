// An operator kicks a player from the admin console, through the page as a person would.
//
//   node tests/browser/admin_kick.mjs --base http://127.0.0.1:PORT \
//     --admin-user NAME --admin-password PW --target-user USERNAME \
//     --reason "typed reason" [--screenshot /path/file.png]
//
// Opens ${base}/admin, signs in through the form, waits for a row of the target
// user's online session, clicks its Kick button, types the reason into
// #action-reason, confirms, and waits for #status to report the kick
// ("Kicked <username>: …"). Exit 0 on success (one line on stdout naming the status);
// exit 1 on any failure or timeout, with what the page showed and logged on stderr.
// Each wait is bounded (10 s); the whole run is bounded (60 s).
// The element ids it relies on are listed at the top of client-demo/web/admin.js.

import { cssString, parseCli, runScenario, WAIT_MS } from './lib.mjs';

const NAME = 'admin_kick';
const args = parseCli(NAME, {
  base: { required: true, help: 'http://127.0.0.1:PORT' },
  'admin-user': { required: true, help: 'NAME' },
  'admin-password': { required: true, help: 'PW' },
  'target-user': { required: true, help: 'USERNAME' },
  reason: { required: true, help: '"typed reason"' },
  screenshot: { help: '/path/file.png' },
});
const base = args.base.replace(/\/+$/, '');
const target = args['target-user'];

await runScenario(
  NAME,
  {
    screenshot: args.screenshot,
    inspect: ['#status', '#poll-state', '#sessions-count'],
    describe: (page) =>
      page.evaluate(() => {
        const shown = ['#boot', '#login-form', '#console', '#action-dialog']
          .filter((selector) => {
            const node = document.querySelector(selector);
            return node && (node.tagName === 'DIALOG' ? node.open : !node.hidden);
          })
          .join(', ');
        const rows = [...document.querySelectorAll('#sessions tbody tr')].map(
          (row) => `${row.dataset.username} (session ${row.dataset.sessionId}, ${row.dataset.sockets} sockets)`,
        );
        return [`shown: ${shown || 'nothing'}`, `online session rows: ${rows.length ? rows.join('; ') : 'none'}`];
      }),
  },
  async ({ page, step }) => {
    await step(`open ${base}/admin`, async () => {
      const response = await page.goto(`${base}/admin`, { waitUntil: 'domcontentloaded' });
      if (!response || !response.ok()) throw new Error(`GET /admin answered ${response?.status()}`);
    });

    await step('sign in through the form', async () => {
      // The page first tries a silent refresh; the form shows once that is settled.
      await page.locator('#login-username').waitFor({ state: 'visible' });
      await page.fill('#login-username', args['admin-user']);
      await page.fill('#login-password', args['admin-password']);
      await page.click('#login-submit');
      const outcome = await page.waitForFunction(
        () => {
          if (!document.querySelector('#console')?.hidden) return 'console';
          const status = document.querySelector('#status');
          return status?.dataset.action === 'login' && status.dataset.kind === 'error' ? 'error' : null;
        },
        null,
        { timeout: WAIT_MS, polling: 100 },
      );
      if ((await outcome.jsonValue()) !== 'console') {
        throw new Error(`login refused: ${await page.textContent('#status')}`);
      }
    });

    const row = page.locator(`#sessions tbody tr[data-username=${cssString(target)} i]`).first();
    await step(`wait for an online session of ${target}`, () => row.waitFor({ state: 'visible' }));
    const sessionId = await row.getAttribute('data-session-id');

    const seqBefore = Number(await page.getAttribute('#status', 'data-seq'));
    await step('click Kick and type the reason', async () => {
      await row.locator('button[data-action="kick"]').click();
      await page.locator('#action-dialog[open][data-action="kick"]').waitFor({ state: 'visible' });
      await page.locator('#action-reason').pressSequentially(args.reason);
      const typed = await page.inputValue('#action-reason');
      if (typed !== args.reason) throw new Error(`the reason field holds ${JSON.stringify(typed)}`);
    });

    return step('confirm and wait for #status to report the kick', async () => {
      await page.click('#action-confirm');
      await page.waitForFunction(
        (before) => {
          const status = document.querySelector('#status');
          return (
            Number(status.dataset.seq) > before &&
            status.dataset.action === 'kick' &&
            (status.dataset.kind === 'ok' || status.dataset.kind === 'error')
          );
        },
        seqBefore,
        { timeout: WAIT_MS, polling: 100 },
      );
      const kind = await page.getAttribute('#status', 'data-kind');
      const text = (await page.textContent('#status')).trim();
      if (kind !== 'ok' || !/^Kicked /.test(text)) throw new Error(`the kick failed: ${text}`);
      await page.locator('#action-dialog').waitFor({ state: 'hidden' });
      return `session ${sessionId}: ${text}`;
    });
  },
);
