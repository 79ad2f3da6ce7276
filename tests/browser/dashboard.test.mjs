// The dashboard in a real browser: headless Chromium from Debian
// (/usr/bin/chromium) driven by Playwright (playwright-core from npm). Run
// by .ci/browser.sh, which installs both and builds the gateway:
//
//   SWITCHYARD_BIN=target/debug/switchyard node --test tests/browser/dashboard.test.mjs
//
// Each run starts its own gateway and demo backends on 127.0.0.1 with
// free ports, sends them steady traffic, and stops every process it
// started by PID. SCREENSHOT=path also saves the README's screenshot.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BIN = process.env.SWITCHYARD_BIN;
assert.ok(BIN, 'set SWITCHYARD_BIN to the switchyard binary');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const HEALTH_INTERVAL_MS = 1000;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-browser-'));
const children = [];

/** A child that has exited stops `until` at once, with the end of its log. */
class Exited extends Error {}

function exited(child) {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Poll `check` until it returns a truthy value or `ms` pass. */
async function until(what, ms, check) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      if (e instanceof Exited) throw new Error(`${what}: ${e.message}`);
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms${last ? ` (${last.message})` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function run(args, name) {
  const file = path.join(work, name + '.log');
  const log = fs.openSync(file, 'a');
  // Info: the "listening" line names the ports the system chose.
  const child = spawn(BIN, args, { stdio: ['ignore', log, log], env: { ...process.env, SWITCHYARD_LOG: 'info' } });
  fs.closeSync(log);
  child.logFile = file;
  children.push(child);
  return child;
}

function stop(child) {
  if (!exited(child)) process.kill(child.pid, 'SIGTERM');
}

/**
 * The addresses `child` logged as `key=addr` on its line containing
 * `message`, once it has. Every listener binds 127.0.0.1:0, so no port
 * picked in advance can be taken by another socket in between.
 */
function listening(child, message, keys) {
  const text = fs.readFileSync(child.logFile, 'utf8');
  if (exited(child)) {
    const lines = text.trimEnd().split('\n').slice(-10).join('\n');
    throw new Exited(`exited (${child.exitCode ?? child.signalCode}); the end of its log:\n${lines}`);
  }
  const line = text.split('\n').find((l) => l.includes(message));
  if (!line) return null;
  return keys.map((key) => {
    const m = line.match(new RegExp(`${key}=(\\S+)`));
    assert.ok(m, `${key} in ${line}`);
    return m[1];
  });
}

async function backend(name) {
  const child = run(['demo-backend', '--port', '0', '--name', name], name);
  const [addr] = await until(`backend ${name} listening`, 10_000, () => listening(child, 'demo backend listening', ['addr']));
  const url = `http://${addr}`;
  await until(`backend ${name} up`, 10_000, async () => (await fetch(`${url}/healthz`)).ok);
  return { child, url };
}

async function gateway(name, config, extra = []) {
  const file = path.join(work, name + '.json');
  fs.writeFileSync(file, JSON.stringify(config));
  const child = run(['--proxy-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0',
    '--database-url', `sqlite://${path.join(work, name + '.db')}`, '--bootstrap', file, '--drain-seconds', '1', ...extra], name);
  const [proxy, admin] = await until(`gateway ${name} listening`, 30_000,
    () => listening(child, 'switchyard listening', ['proxy_addr', 'admin_addr']));
  const base = `http://${admin}`;
  await until(`gateway ${name} ready`, 30_000, async () => (await fetch(base + '/ui/')).ok);
  return { child, admin: base, proxy: `http://${proxy}` };
}

/** Steady traffic through the proxy until stopped: `concurrency` loops. */
function traffic(base, concurrency) {
  let on = true;
  const loops = Array.from({ length: concurrency }, async () => {
    while (on) {
      try {
        const r = await fetch(base + '/');
        await r.arrayBuffer();
      } catch (e) { await new Promise((res) => setTimeout(res, 20)); }
    }
  });
  return async () => { on = false; await Promise.all(loops); };
}

let a, b, gw, stopTraffic, browser, page;
const consoleErrors = [];

before(async () => {
  a = await backend('a');
  b = await backend('b');
  gw = await gateway('gw', {
    upstreams: [{
      name: 'demo',
      strategy: 'weighted_round_robin',
      backends: [{ url: a.url, weight: 1 }, { url: b.url, weight: 1 }],
      health_check: { path: '/healthz', interval_ms: HEALTH_INTERVAL_MS, timeout_ms: 500, healthy_threshold: 1, unhealthy_threshold: 1 },
    }],
    routes: [
      { name: 'demo', path: '/', upstream: 'demo' },
      { name: 'api', path: '/api', strip_prefix: true, methods: ['GET', 'POST'], upstream: 'demo' },
    ],
  });
  stopTraffic = traffic(gw.proxy, 4);
  const profile = fs.mkdtempSync(path.join(work, 'profile-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1360, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--no-first-run', '--disable-sync', '--disable-quic'],
  });
  page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
});

after(async () => {
  if (stopTraffic) await stopTraffic();
  if (browser) await browser.close();
  for (const c of children) stop(c);
  await Promise.all(children.map((c) => (c.exitCode !== null || c.signalCode !== null) ? null : new Promise((r) => c.once('exit', r))));
  fs.rmSync(work, { recursive: true, force: true });
});

const admin = async (p, init) => {
  const r = await fetch(gw.admin + p, init);
  assert.ok(r.ok, `${p}: ${r.status}`);
  return r.status === 204 ? null : r.json();
};

/** The row of backend `url` in the upstream view. */
const row = (url) => page.locator(`tr[data-backend="${url}"]`);

/** Wait until a backend's observed share (from the event stream) is in [lo, hi]. */
async function observedShare(url, lo, hi, ms) {
  return until(`observed share of ${url} in [${lo}, ${hi}]`, ms, async () => {
    const share = Number(await row(url).locator('[data-testid="actual-share"]').getAttribute('data-share'));
    return share >= lo && share <= hi ? share : null;
  });
}

test('the root redirects to the dashboard, which carries a strict CSP', async () => {
  const r = await fetch(gw.admin + '/', { redirect: 'manual' });
  assert.equal(r.status, 307);
  assert.equal(r.headers.get('location'), '/ui/');
  const ui = await fetch(gw.admin + '/ui/');
  const csp = ui.headers.get('content-security-policy');
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe/);
});

test('the page loads without console errors and shows routes, upstreams and backends', async () => {
  await page.goto(gw.admin + '/');
  assert.equal(new URL(page.url()).pathname, '/ui/');
  await page.locator('[data-testid="live"]', { hasText: 'live' }).waitFor();
  const version = (await admin('/admin/status')).config_version;
  await page.locator('[data-testid="ov-version"]', { hasText: `v${version}` }).waitFor();
  assert.equal(await page.locator('[data-testid="ov-routes"]').textContent(), '2');
  // Traffic figures arrive from the event stream once a second.
  await until('requests/s shown', 10_000, async () => Number(await page.locator('[data-testid="ov-rps"]').textContent()) > 0);

  await page.click('nav a[data-view="routes"]');
  await page.locator('tr[data-route="demo"]').waitFor();
  await page.locator('tr[data-route="api"]', { hasText: 'strip prefix' }).waitFor();
  // The explain box answers from the live router.
  await page.fill('[data-testid="explain-url"]', 'http://example.com/api/users');
  await page.click('[data-testid="explain-go"]');
  await page.locator('[data-testid="explain-winner"]', { hasText: 'api' }).waitFor();
  assert.match(await page.locator('[data-testid="explain-winner"]').textContent(), /sent upstream as \/users/);

  await page.click('nav a[data-view="upstreams"]');
  await page.click('text=demo');
  await row(a.url).waitFor();
  await row(b.url).waitFor();
  assert.equal(await row(a.url).locator('[data-testid="expected-share-text"]').textContent(), '50%');
  await observedShare(a.url, 0.3, 0.7, 10_000);
  assert.deepEqual(consoleErrors, []);
});

test('moving a weight previews the split; applying it bumps the version and moves the observed split', async () => {
  await page.goto(gw.admin + '/ui/#/upstreams/demo');
  await row(a.url).waitFor();
  const before = (await admin('/admin/status')).config_version;
  // Move the slider from 1 to 3 with the keyboard, as a user would.
  const slider = row(a.url).locator('[data-testid="weight-slider"]');
  await slider.focus();
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('ArrowRight');
  assert.equal(await row(a.url).locator('[data-testid="weight-value"]').textContent(), '3');
  // The dry run's answer: 75/25 after, nothing applied yet.
  const preview = page.locator('[data-testid="preview"]');
  await preview.locator(`tr[data-preview="${a.url}"] [data-testid="share-after-text"]`, { hasText: '75%' }).waitFor();
  assert.equal(await preview.locator(`tr[data-preview="${b.url}"] [data-testid="share-after-text"]`).textContent(), '25%');
  assert.equal((await admin('/admin/status')).config_version, before, 'a preview changes nothing');

  await preview.locator('[data-testid="apply"]').click();
  await page.locator('[data-testid="config-version"]', { hasText: `v${before + 1}` }).waitFor();
  await row(a.url).locator('[data-testid="expected-share-text"]', { hasText: '75%' }).waitFor();
  const upstream = await admin('/admin/upstreams/demo');
  assert.equal(upstream.backends.find((x) => x.url === a.url).weight, 3);
  // The traffic the proxy really sends follows.
  await observedShare(a.url, 0.65, 0.85, 15_000);
  assert.deepEqual(consoleErrors, []);
});

test('an edit made against a stale view gets a 412 and says so', async () => {
  // This page does not hear of changes (its event stream is cut), so it
  // keeps showing backend b as it was when it loaded...
  await page.route('**/admin/events', (route) => route.abort());
  // A new document, so its stream is the one cut: going to the URL the
  // page shows already would only be a same-document (fragment)
  // navigation, and the stream opened before would go on.
  await page.goto('about:blank');
  const cut = page.waitForEvent('requestfailed', (r) => r.url().endsWith('/admin/events'));
  await page.goto(gw.admin + '/ui/#/upstreams/demo');
  await cut;
  await row(b.url).waitFor();
  // ... while someone else changes it.
  const patch = (id, weight) => admin(`/admin/upstreams/demo/backends/${id}`, {
    method: 'PATCH', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ weight }),
  });
  const id = (await admin('/admin/upstreams/demo')).backends.find((x) => x.url === b.url).id;
  await patch(id, 2);
  const version = (await admin('/admin/status')).config_version;
  // The page's edit carries the version it saw: refused, and said so.
  await row(b.url).locator('[data-testid="drain"]').click();
  await page.locator('[data-testid="banner-text"]', { hasText: 'Someone else changed this' }).waitFor();
  assert.equal((await admin('/admin/status')).config_version, version, 'nothing changed');
  await page.unroute('**/admin/events');
  await patch(id, 1);
  // The page follows the stream again (it retries every 2 s).
  await page.locator('[data-testid="live"]', { hasText: 'live' }).waitFor();
  // Chromium logs the refused request and the cut stream: expected here.
  consoleErrors.length = 0;
});

test('rolling back from the history view restores the previous weights', async () => {
  await page.goto(gw.admin + '/ui/#/history');
  const revisions = (await admin('/admin/revisions?limit=50')).items;
  // The revision before the weight was set to 3 (the bootstrap's).
  const target = revisions.find((r) => r.source === 'bootstrap').version;
  const live = (await admin('/admin/status')).config_version;
  await page.locator(`tr[data-revision="${target}"] [data-testid="show-diff"]`).click();
  await page.locator('[data-testid="diff"]', { hasText: `Revision ${target - 1} → ${target}` }).waitFor();
  await page.locator(`tr[data-revision="${target}"] [data-testid="rollback"]`).click();
  // The confirmation says what would change, from a dry run.
  await page.locator('[data-testid="rollback-summary"]', { hasText: '~ upstream demo' }).waitFor();
  assert.equal((await admin('/admin/status')).config_version, live, 'nothing changes before the confirmation');
  await page.click('#confirm-ok');
  await page.locator('[data-testid="config-version"]', { hasText: `v${live + 1}` }).waitFor();
  const up = await admin('/admin/upstreams/demo');
  assert.deepEqual(up.backends.map((x) => x.weight), [1, 1]);
  const last = (await admin('/admin/revisions?limit=1')).items[0];
  assert.equal(last.source, 'rollback');
  await page.goto(gw.admin + '/ui/#/upstreams/demo');
  await row(a.url).locator('[data-testid="weight-value"]', { hasText: '1' }).waitFor();
  await row(a.url).locator('[data-testid="expected-share-text"]', { hasText: '50%' }).waitFor();
  await observedShare(a.url, 0.3, 0.7, 15_000);
  if (process.env.SCREENSHOT) {
    // For the README: a second whose split shows the weights (best effort).
    await observedShare(a.url, 0.45, 0.55, 10_000).catch(() => {});
    await page.screenshot({ path: process.env.SCREENSHOT, fullPage: false });
  }
  assert.deepEqual(consoleErrors, []);
});

test('a route created from the form goes live; a backend is added and removed', async () => {
  await page.goto(gw.admin + '/ui/#/routes');
  await page.fill('[data-testid="new-route-name"]', 'echo');
  await page.fill('[data-testid="new-route-path"]', '/echo');
  await page.click('[data-testid="new-route-create"]');
  await page.locator('tr[data-route="echo"]').waitFor();
  const r = await fetch(gw.proxy + '/echo/x');
  assert.equal(r.status, 200);
  assert.equal((await r.json()).path, '/echo/x');

  const c = await backend('c');
  await page.goto(gw.admin + '/ui/#/upstreams/demo');
  await page.fill('[data-testid="new-backend-url"]', c.url);
  await page.click('[data-testid="add-backend"]');
  await row(c.url).waitFor();
  assert.equal((await admin('/admin/upstreams/demo')).backends.length, 3);
  await row(c.url).locator('[data-testid="remove"]').click();
  await page.click('#confirm-ok');
  await row(c.url).waitFor({ state: 'detached' });
  assert.equal((await admin('/admin/upstreams/demo')).backends.length, 2);
  stop(c.child);
  assert.deepEqual(consoleErrors, []);
});

test('a stopped backend turns red within the health interval', async () => {
  await page.goto(gw.admin + '/ui/#/upstreams/demo');
  await row(b.url).locator('[data-testid="state"]', { hasText: 'healthy' }).waitFor();
  const stopped = Date.now();
  stop(b.child);
  // The next probe fails (at most one interval later, threshold 1); the
  // transition is pushed to the page at once.
  await row(b.url).locator('[data-testid="state"].state-unhealthy').waitFor({ timeout: HEALTH_INTERVAL_MS + 500 });
  const took = Date.now() - stopped;
  console.log(`# backend shown unhealthy ${took} ms after it stopped (health interval ${HEALTH_INTERVAL_MS} ms)`);
  // With its reason in the health history, and on the overview.
  await page.locator('[data-testid="health-history"]', { hasText: 'unhealthy' }).waitFor();
  await page.goto(gw.admin + '/ui/#/overview');
  await page.locator('[data-testid="down-list"]', { hasText: b.url }).waitFor();
  assert.equal(await page.locator('[data-testid="ov-unhealthy"]').textContent(), '1');
  assert.deepEqual(consoleErrors, []);
});

test('with an admin token set, the page is unusable without it', async () => {
  const token = 'browser-test-token';
  const secured = await gateway('secured', {
    upstreams: [{ name: 'hidden-pool', backends: [{ url: a.url }] }],
    routes: [{ name: 'secret-route', path: '/', upstream: 'hidden-pool' }],
  }, ['--admin-token', token]);
  const p = await browser.newPage();
  await p.goto(secured.admin + '/ui/');
  await p.locator('[data-testid="token-input"]').waitFor();
  assert.equal(await p.locator('#nav').isVisible(), false);
  await p.goto(secured.admin + '/ui/#/routes');
  await p.locator('[data-testid="token-input"]').waitFor();
  assert.equal(await p.locator('text=secret-route').count(), 0);
  // A wrong token is refused.
  await p.fill('[data-testid="token-input"]', 'wrong');
  await p.click('[data-testid="token-submit"]');
  await p.locator('[data-testid="token-error"]').waitFor();
  assert.equal(await p.locator('text=secret-route').count(), 0);
  // The right one opens it; it is in session storage, not in a cookie.
  await p.fill('[data-testid="token-input"]', token);
  await p.click('[data-testid="token-submit"]');
  await p.locator('tr[data-route="secret-route"]').waitFor();
  await p.locator('[data-testid="live"]', { hasText: 'live' }).waitFor();
  assert.equal(await p.evaluate(() => sessionStorage.getItem('switchyard.admin-token')), token);
  assert.deepEqual(await browser.cookies(secured.admin), []);
  await p.close();
  stop(secured.child);
});
