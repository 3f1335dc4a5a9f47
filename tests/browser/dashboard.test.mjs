// End-to-end test of the web dashboard, driven the way a user sees it: start the real
// `sensorfleet up` (embedded backends + simulated devices) on free loopback ports, open
// the dashboard in headless Chromium and check that it fills in and goes live.
//
//   SENSORFLEET_BIN=/path/to/sensorfleet node --test tests/browser/
//
// Environment:
//   SENSORFLEET_BIN          the built binary (required)
//   SENSORFLEET_TEST_OUTPUT  where the screenshot and logs go (default: tests/output)
//   SENSORFLEET_CHROMIUM     the browser (default: /usr/bin/chromium; never downloaded)

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const TEST_BUDGET_MS = 90_000;
const STARTUP_BUDGET_MS = 30_000;

const CHROMIUM = process.env.SENSORFLEET_CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const outDir = path.resolve(process.env.SENSORFLEET_TEST_OUTPUT || path.join(REPO, 'tests', 'output'));

// Everything this file starts, so that it is stopped whatever happens: test failure,
// timeout, or the runner exiting.
const started = { child: null, context: null, dirs: [] };

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function requireBinary() {
  const bin = process.env.SENSORFLEET_BIN;
  if (!bin) {
    throw new Error(
      'SENSORFLEET_BIN is not set: build the binary (cargo build --release) and run\n'
        + '  SENSORFLEET_BIN=<target>/release/sensorfleet node --test tests/browser/',
    );
  }
  const abs = path.resolve(bin);
  try {
    fs.accessSync(abs, fs.constants.X_OK);
  } catch {
    throw new Error(`SENSORFLEET_BIN=${bin} does not exist or is not executable (${abs})`);
  }
  return abs;
}

function requireChromium() {
  try {
    fs.accessSync(CHROMIUM, fs.constants.X_OK);
  } catch {
    throw new Error(
      `no Chromium at ${CHROMIUM}: install the distribution's package (apt-get install chromium) `
        + 'or point SENSORFLEET_CHROMIUM at one; this test never downloads a browser',
    );
  }
}

// Two distinct free ports: both listeners stay open until both are known.
async function freePorts(n) {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) {
      const srv = net.createServer();
      await new Promise((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(0, '127.0.0.1', resolve);
      });
      servers.push(srv);
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  }
}

function logTail(file, lines = 40) {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function waitForHealth(base, child, logFile, deadline) {
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `sensorfleet up exited early (code ${child.exitCode}, signal ${child.signalCode}); `
          + `log ${logFile}:\n${logTail(logFile)}`,
      );
    }
    try {
      const res = await fetch(`${base}/health/system`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
    } catch (e) {
      last = e.cause?.code || e.message;
    }
    await sleep(250);
  }
  throw new Error(
    `GET ${base}/health/system did not answer 200 within ${STARTUP_BUDGET_MS / 1000} s `
      + `(last: ${last}); log ${logFile}:\n${logTail(logFile)}`,
  );
}

// Polls `probe` until `ok(value)` or the time is up; returns the last value either way,
// so that the assertion after it states what was seen.
async function pollUntil(probe, ok, timeoutMs, deadline) {
  const until = Math.min(Date.now() + timeoutMs, deadline);
  let value = await probe();
  while (!ok(value) && Date.now() < until) {
    await sleep(250);
    value = await probe();
  }
  return value;
}

async function stopChild() {
  const child = started.child;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    process.kill(child.pid, 'SIGTERM');
  } catch {
    return; // already gone
  }
  const done = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
  if (!done) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    await Promise.race([exited, sleep(2000)]);
  }
}

async function cleanup() {
  const context = started.context;
  started.context = null;
  if (context) await context.close().catch(() => {});
  await stopChild();
  for (const d of started.dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

// Last resort if the runner exits while the server is still up (e.g. after a timeout).
process.on('exit', () => {
  const child = started.child;
  if (child && child.exitCode === null && child.signalCode === null) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

after(cleanup);

const PHONE = { width: 390, height: 844 };

// Runs in the page: what sticks out of the viewport at the current width. An element
// clipped by a scrolling or clipping ancestor counts only through that ancestor (its
// own sideways scroll is reported separately).
function phoneLayout() {
  const width = document.documentElement.clientWidth;
  const clipped = (el) => {
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      if (getComputedStyle(p).overflowX !== 'visible') return true;
    }
    return false;
  };
  const describe = (el, r) => `${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}.${el.className} [${Math.round(r.left)}, ${Math.round(r.right)}]`;
  const overflowing = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || clipped(el)) continue;
    if (r.left < -0.5 || r.right > width + 0.5) overflowing.push(describe(el, r));
  }
  const sidewaysScrollers = [...document.querySelectorAll('.table-wrap, .alerts, .card')]
    .filter((el) => el.scrollWidth > el.clientWidth + 1)
    .map((el) => describe(el, el.getBoundingClientRect()));
  const deviceHead = document.querySelector('#devices-table th.col-device').getBoundingClientRect();
  const healthHead = document.querySelector('#devices-table th.col-health').getBoundingClientRect();
  return {
    width,
    pageWidth: document.documentElement.scrollWidth,
    overflowing: overflowing.slice(0, 10),
    sidewaysScrollers,
    deviceColumn: Math.round(deviceHead.width),
    healthVisible: healthHead.width > 0 && healthHead.right <= width + 0.5,
  };
}

test('dashboard shows devices, stats, live stream and a growing chart', { timeout: TEST_BUDGET_MS }, async () => {
  const deadline = Date.now() + TEST_BUDGET_MS - 8_000; // leave time to clean up
  const bin = requireBinary();
  requireChromium();
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (e) {
    throw new Error(`playwright-core is not installed: run \`npm ci\` in ${HERE} (${e.message})`);
  }

  fs.mkdirSync(outDir, { recursive: true });
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sensorfleet-browser-data-'));
  const profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sensorfleet-browser-profile-'));
  started.dirs.push(dataDir, profileDir);
  const [httpPort, mqttPort] = await freePorts(2);
  const base = `http://127.0.0.1:${httpPort}`;
  const logFile = path.join(outDir, 'sensorfleet-up.log');
  const consoleFile = path.join(outDir, 'browser-console.log');
  const screenshot = path.join(outDir, 'dashboard.png');
  const phoneScreenshot = path.join(outDir, 'dashboard-phone.png');

  const logFd = fs.openSync(logFile, 'w');
  try {
    started.child = spawn(
      bin,
      [
        'up',
        '--data-dir', dataDir,
        '--http-addr', `127.0.0.1:${httpPort}`,
        '--mqtt-addr', `127.0.0.1:${mqttPort}`,
        '--simulate-interval', '300ms',
      ],
      { stdio: ['ignore', logFd, logFd] },
    );
  } finally {
    fs.closeSync(logFd); // the child holds its own copy
  }
  const spawnError = new Promise((_, reject) => started.child.once('error', reject));
  spawnError.catch(() => {});

  let page = null;
  const pageErrors = [];
  const consoleLines = [];
  try {
    await Promise.race([
      waitForHealth(base, started.child, logFile, Date.now() + STARTUP_BUDGET_MS),
      spawnError,
    ]);

    started.context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 800 },
      timeout: 20_000,
    });
    page = started.context.pages()[0] || (await started.context.newPage());
    page.setDefaultTimeout(15_000);
    page.on('pageerror', (err) => pageErrors.push(String(err && err.stack ? err.stack : err)));
    page.on('console', (msg) => consoleLines.push(`[${msg.type()}] ${msg.text()}`));

    const res = await page.goto(`${base}/`, { waitUntil: 'load' });
    assert.equal(res && res.status(), 200, 'GET / should serve the dashboard');

    // 1. The device table fills with rows from /api/devices.
    const rows = await pollUntil(
      () => page.locator('#devices-table tbody tr').count(),
      (n) => n > 0,
      25_000,
      deadline,
    );
    assert.ok(rows > 0, `the device table should list the simulated devices, found ${rows} rows`);
    const rowIds = await page.locator('#devices-table tbody tr').evaluateAll(
      (trs) => trs.map((tr) => tr.getAttribute('data-device-id')),
    );
    assert.ok(rowIds.every(Boolean), `each device row should carry data-device-id: ${JSON.stringify(rowIds)}`);

    // 2. The stats show active devices.
    const active = await pollUntil(
      async () => Number.parseInt(((await page.textContent('#stat-active-devices')) || '').replace(/[^0-9]/g, ''), 10),
      (n) => n > 0,
      20_000,
      deadline,
    );
    assert.ok(active > 0, `#stat-active-devices should be > 0, was ${active}`);

    // 3. The WebSocket is connected.
    const ws = await pollUntil(
      async () => ((await page.textContent('#ws-status')) || '').trim(),
      (s) => s === 'live',
      15_000,
      deadline,
    );
    assert.equal(ws, 'live', '#ws-status should become "live"');

    // 4. Clicking a row selects it. The dashboard opens on the first device, so when
    //    there is a second one, pick it first: the click on the first row then really
    //    switches devices. Then live readings must make the chart grow.
    const selectedText = async () => ((await page.textContent('#detail-device')) || '').trim();
    const rowLocator = page.locator('#devices-table tbody tr');
    if ((await rowLocator.count()) > 1) {
      const secondId = await rowLocator.nth(1).getAttribute('data-device-id');
      await rowLocator.nth(1).click();
      assert.equal(await selectedText(), secondId, 'clicking the second row should select that device');
    }
    const firstRow = rowLocator.first();
    const firstId = await firstRow.getAttribute('data-device-id');
    await firstRow.click();
    assert.equal(await selectedText(), firstId, 'clicking the first row should select that device');
    assert.equal(await firstRow.getAttribute('aria-selected'), 'true', 'the selected row should be marked');
    const points = () => page.getAttribute('#chart', 'data-points').then((v) => Number(v));
    const first = await pollUntil(points, (n) => n > 0, 15_000, deadline);
    assert.ok(first > 0, `the chart should plot the selected device, #chart[data-points]=${first}`);
    const later = await pollUntil(points, (n) => n > first, 15_000, deadline);
    assert.ok(later > first, `live readings should grow the chart: data-points stayed at ${first}`);
    const latestFields = await pollUntil(
      () => page.locator('#latest-panel [data-field]').count(),
      (n) => n > 0,
      5_000,
      deadline,
    );
    assert.ok(latestFields > 0, '#latest-panel should list the fields of the latest reading');

    // A few more seconds of live data make the screenshot say more.
    await sleep(Math.min(3000, Math.max(0, deadline - Date.now())));
    await page.screenshot({ path: screenshot, fullPage: true });

    // 5. On a phone (390 x 844) nothing overflows the viewport, and the device list
    //    still shows each device's id and health.
    await page.setViewportSize(PHONE);
    await sleep(500); // a layout pass and a refresh at the new width
    await page.screenshot({ path: phoneScreenshot, fullPage: true });
    const phone = await page.evaluate(phoneLayout);
    assert.ok(phone.pageWidth <= phone.width, `the page scrolls sideways at phone width: ${JSON.stringify(phone)}`);
    assert.deepEqual(phone.overflowing, [], `elements overflow the ${PHONE.width} px viewport`);
    assert.deepEqual(phone.sidewaysScrollers, [], 'a card scrolls sideways at phone width');
    assert.ok(phone.deviceColumn >= 120, `the device column is ${phone.deviceColumn} px wide at phone width`);
    assert.ok(phone.healthVisible, 'the health column is not visible at phone width');

    // 6. Nothing blew up in the page along the way.
    assert.deepEqual(pageErrors, [], 'the page should raise no uncaught error');
  } catch (e) {
    // Keep what helps to understand a failure next to the screenshot.
    if (page) await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
    if (!String(e && e.message).includes(logFile)) {
      console.error(`sensorfleet up log (${logFile}), last lines:\n${logTail(logFile)}`);
    }
    throw e;
  } finally {
    fs.writeFileSync(consoleFile, consoleLines.concat(pageErrors.map((p) => `[pageerror] ${p}`)).join('\n') + '\n');
    await cleanup();
  }
});
