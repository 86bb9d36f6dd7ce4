// Shared helpers for Tether's headless-browser scenarios (admin_kick.mjs, and the
// game page ones to come).
//
// Chromium is the system one (Debian package `chromium`), driven by playwright-core:
// nothing is downloaded at run time. CHROMIUM_PATH overrides the executable.
//
// A scenario is:
//
//   import { runScenario, parseCli } from './lib.mjs';
//   const args = parseCli('my_scenario', { base: { required: true }, ... });
//   await runScenario('my_scenario', { screenshot: args.screenshot, inspect: ['#status'] },
//     async ({ page, step }) => {
//       await step('open the page', () => page.goto(`${args.base}/`));
//       ...
//       return 'one line that says what succeeded';
//     });
//
// runScenario launches Chromium, runs the body under an overall deadline (60 s by
// default), and exits the process: 0 when the body resolved, 1 otherwise, after
// printing the failing step, the error, the text of the `inspect` selectors, and
// what the page logged (console errors and warnings, uncaught errors, failed
// requests, HTTP answers >= 400).

import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

export const CHROMIUM_ARGS = [
  '--no-sandbox', // we run as root
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking', // no network here: keep Chromium from calling home
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage', // small /dev/shm in containers
];

/** Default bound of a single wait, in milliseconds. */
export const WAIT_MS = 10_000;

export function chromiumPath() {
  return process.env.CHROMIUM_PATH || '/usr/bin/chromium';
}

export async function launchBrowser(options = {}) {
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
    ...options,
  });
}

/**
 * Command-line options, all strings (`--name value`). `spec` maps each option to
 * `{ required?: boolean, default?: string, help?: string }`. Prints usage and exits 1
 * on an unknown or missing option.
 */
export function parseCli(name, spec, argv = process.argv.slice(2)) {
  const options = {};
  for (const [key, value] of Object.entries(spec)) {
    options[key] = { type: 'string', ...(value.default !== undefined ? { default: value.default } : {}) };
  }
  options.help = { type: 'boolean' };
  const usage = () =>
    `usage: node ${name}.mjs ` +
    Object.entries(spec)
      .map(([key, value]) => (value.required ? `--${key} ${value.help ?? 'VALUE'}` : `[--${key} ${value.help ?? 'VALUE'}]`))
      .join(' ');
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }));
  } catch (error) {
    console.error(`${name}: ${error.message}\n${usage()}`);
    process.exit(1);
  }
  if (values.help) {
    console.log(usage());
    process.exit(0);
  }
  const missing = Object.entries(spec)
    .filter(([key, value]) => value.required && !values[key])
    .map(([key]) => `--${key}`);
  if (missing.length) {
    console.error(`${name}: missing ${missing.join(', ')}\n${usage()}`);
    process.exit(1);
  }
  return values;
}

/** Rejects after `ms` with a message naming `label`, unless `promise` settles first. */
export function bounded(promise, ms, label) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${label}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Records what a page logs, for the failure report. */
export function watchPage(page) {
  const log = { console: [], pageErrors: [], failedRequests: [], httpErrors: [] };
  const keep = (list, line) => {
    if (list.length < 50) list.push(line);
  };
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') {
      const where = message.location()?.url ? ` (${message.location().url}:${message.location().lineNumber})` : '';
      keep(log.console, `${message.type()}: ${message.text()}${where}`);
    }
  });
  page.on('pageerror', (error) => keep(log.pageErrors, String(error?.stack || error)));
  page.on('requestfailed', (request) =>
    keep(log.failedRequests, `${request.method()} ${request.url()}: ${request.failure()?.errorText}`),
  );
  page.on('response', (response) => {
    if (response.status() >= 400) {
      keep(log.httpErrors, `${response.status()} ${response.request().method()} ${response.url()}`);
    }
  });
  return log;
}

/** Text content of each selector (first match), bounded; for failure reports. */
export async function inspect(page, selectors) {
  const out = {};
  for (const selector of selectors) {
    try {
      out[selector] = await bounded(
        page.evaluate((sel) => {
          const node = document.querySelector(sel);
          if (!node) return '(absent)';
          const data = Object.entries(node.dataset ?? {})
            .map(([k, v]) => `${k}=${v}`)
            .join(' ');
          const hidden = node.hidden || node.closest('[hidden]') ? ' (hidden)' : '';
          const text = node.textContent.replace(/\s+/g, ' ').trim();
          const cut = text.length > 200 ? `${text.slice(0, 200)}…` : text;
          return `${JSON.stringify(cut)}${data ? ` [${data}]` : ''}${hidden}`;
        }, selector),
        2_000,
        `inspect ${selector}`,
      );
    } catch (error) {
      out[selector] = `(could not read: ${error.message.split('\n')[0]})`;
    }
  }
  return out;
}

/**
 * Runs one scenario and exits the process (see the top of this file).
 * options: { deadlineMs = 60000, screenshot (path, also written on failure),
 *            inspect: selectors whose text to print on failure,
 *            describe: async (page) => [lines] of more state to print on failure,
 *            viewport }
 * body({ browser, context, page, log, step }) resolves to a success line.
 */
export async function runScenario(name, options, body) {
  const {
    deadlineMs = 60_000,
    screenshot,
    inspect: selectors = [],
    describe,
    viewport = { width: 1280, height: 800 },
  } = options;
  const started = Date.now();
  let browser = null;
  let page = null;
  let log = null;
  let current = 'launch chromium';
  const step = async (label, fn) => {
    current = label;
    return fn();
  };

  let deadlineTimer;
  const deadline = new Promise((_, reject) => {
    deadlineTimer = setTimeout(() => reject(new Error(`scenario deadline of ${deadlineMs} ms passed`)), deadlineMs);
  });

  const run = async () => {
    browser = await launchBrowser();
    const context = await browser.newContext({
      viewport,
      locale: 'en-US',
      timezoneId: 'UTC',
      serviceWorkers: 'block',
      acceptDownloads: false,
    });
    context.setDefaultTimeout(WAIT_MS);
    context.setDefaultNavigationTimeout(WAIT_MS);
    page = await context.newPage();
    log = watchPage(page);
    return body({ browser, context, page, log, step });
  };

  let code = 0;
  try {
    const line = await Promise.race([run(), deadline]);
    current = 'screenshot';
    if (screenshot && page) await bounded(page.screenshot({ path: screenshot, fullPage: true }), 10_000, 'screenshot');
    console.log(`${name}: ok (${((Date.now() - started) / 1000).toFixed(1)} s)${line ? `: ${line}` : ''}`);
  } catch (error) {
    code = 1;
    const message = String(error?.message || error).replace(/\x1b\[[0-9;]*m/g, '').trim();
    const lines = [`${name}: FAILED at step "${current}": ${message}`];
    if (page) {
      lines.push(`  url: ${page.url()}`);
      const seen = await inspect(page, selectors);
      for (const [selector, text] of Object.entries(seen)) lines.push(`  ${selector}: ${text}`);
      if (describe) {
        try {
          for (const line of await bounded(describe(page), 3_000, 'describe the page')) lines.push(`  ${line}`);
        } catch (describeError) {
          lines.push(`  (could not describe the page: ${describeError.message.split('\n')[0]})`);
        }
      }
      if (screenshot) {
        try {
          await bounded(page.screenshot({ path: screenshot, fullPage: true }), 5_000, 'failure screenshot');
          lines.push(`  screenshot of the failure: ${screenshot}`);
        } catch (shotError) {
          lines.push(`  (no screenshot: ${shotError.message.split('\n')[0]})`);
        }
      }
    }
    if (log) {
      const section = (title, list) => {
        lines.push(`  ${title}: ${list.length ? '' : 'none'}`);
        for (const entry of list) lines.push(`    ${entry}`);
      };
      section('page console errors/warnings', log.console);
      section('uncaught page errors', log.pageErrors);
      section('failed requests', log.failedRequests);
      section('HTTP answers >= 400', log.httpErrors);
    }
    console.error(lines.join('\n'));
  } finally {
    clearTimeout(deadlineTimer);
    if (browser) await bounded(browser.close(), 10_000, 'close chromium').catch(() => {});
  }
  process.exit(code);
}

/** A CSS attribute-selector value in double quotes. */
export function cssString(value) {
  return `"${String(value).replace(/["\\]/g, '\\$&').replace(/\n/g, '\\a ')}"`;
}
