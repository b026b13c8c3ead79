// The dashboard in a real browser: Debian's Chromium driven by playwright-core. Starts the
// gatehouse binary (GATEHOUSE_BIN, default target/debug/gatehouse) in front of a small node
// backend, sends known traffic (successes, edge 404s, backend 502s), opens the dashboard with
// the admin token and checks that the charts and tables (top APIs from /analytics) show that
// traffic; the screenshot goes
// to target/ci-artifacts/dashboard.png. Without the token the page is locked and the data 401s.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const root = path.resolve(import.meta.dirname, '../..');
const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, 'target');
const bin = process.env.GATEHOUSE_BIN || path.join(targetDir, 'debug', 'gatehouse');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const artifacts = path.join(root, 'target', 'ci-artifacts');
const TOKEN = 'dashboard-test-admin-token-0123456789';

const listen = (server) => new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server.address().port)));
async function freePort() {
  const s = http.createServer();
  const port = await listen(s);
  await new Promise((ok) => s.close(ok));
  return port;
}
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
async function status(url, headers = {}) {
  const r = await fetch(url, { headers });
  await r.arrayBuffer();
  return r.status;
}

test('the dashboard shows the traffic just sent', { timeout: 120_000 }, async () => {
  assert.ok(fs.existsSync(bin), `build the gateway first: ${bin}`);
  const backend = http.createServer((req, res) => res.end('ok ' + req.url));
  const backendPort = await listen(backend);
  const [port, adminPort, deadPort] = [await freePort(), await freePort(), await freePort()];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-dashboard-'));
  const config = path.join(dir, 'gatehouse.yaml');
  fs.writeFileSync(config, `
listeners: [ { name: main, bind: "127.0.0.1:${port}" } ]
admin: { bind: "127.0.0.1:${adminPort}", token: "${TOKEN}" }
edge: { access_log: { format: off } }
backends:
  shop: { servers: [ { url: "http://127.0.0.1:${backendPort}" } ] }
  gone: { servers: [ { url: "http://127.0.0.1:${deadPort}" } ], retry: { attempts: 1 } }
apis:
  orders: { path: /orders, backend: shop }
  catalog: { path: /catalog, backend: shop }
  legacy: { path: /legacy, backend: gone }
`);
  const gw = spawn(bin, ['run', '-c', config], { stdio: ['ignore', 'inherit', 'inherit'] });
  const browser = { current: null };
  try {
    const admin = `http://127.0.0.1:${adminPort}`;
    let ready = false;
    for (let i = 0; i < 100 && !ready; i++) {
      ready = await status(`${admin}/readyz`).then((s) => s === 200, () => false);
      if (!ready) await sleep(100);
    }
    assert.ok(ready, 'the gateway became ready');

    const gwUrl = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 40; i++) assert.equal(await status(`${gwUrl}/orders/${i}`), 200);
    for (let i = 0; i < 10; i++) assert.equal(await status(`${gwUrl}/catalog/${i}`), 200);
    for (let i = 0; i < 5; i++) assert.equal(await status(`${gwUrl}/nowhere/${i}`), 404);
    for (let i = 0; i < 3; i++) assert.equal(await status(`${gwUrl}/legacy/${i}`), 502);

    assert.equal(await status(`${admin}/dashboard/data`), 401, 'the data needs the token');

    browser.current = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
    const page = await browser.current.newPage({ viewport: { width: 1280, height: 900 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));

    await page.goto(`${admin}/dashboard`);
    await page.waitForSelector('#login.shown');

    await page.goto(`${admin}/dashboard#token=${TOKEN}`);
    await page.waitForFunction(() => Number(document.body.dataset.requests) >= 58, null, { timeout: 20_000 });
    assert.equal(await page.evaluate(() => location.hash), '', 'the token leaves the address bar');
    const data = await page.evaluate(() => ({ ...document.body.dataset }));
    assert.equal(Number(data.requests), 58);
    assert.equal(Number(data.edge), 5);
    assert.equal(Number(data.backend), 3);
    for (const id of ['traffic', 'latency', 'errors']) {
      const box = await page.locator(`#${id} canvas`).boundingBox();
      assert.ok(box && box.width > 200 && box.height > 100, `chart ${id} is drawn: ${JSON.stringify(box)}`);
    }
    // Top APIs of the last hour, from /analytics: requests, errors, p95 latency.
    await page.waitForFunction(() => document.body.dataset.analytics === '1', null, { timeout: 20_000 });
    const apis = await page.locator('#apis tbody tr').allInnerTexts();
    assert.match(apis[0], /^orders\s+40\s+0\s+\d+(\.\d+)?$/, apis.join(' | '));
    assert.ok(apis.some((r) => /^catalog\s+10\s+0\s/.test(r)), apis.join(' | '));
    assert.ok(apis.some((r) => /^legacy\s+3\s+3\s/.test(r)), apis.join(' | '));
    assert.ok(apis.some((r) => /^\(no route\)\s+5\s+5\s/.test(r)), apis.join(' | '));
    // No subscription keys in this config: the panel says so.
    assert.match(await page.locator('#subs tbody').innerText(), /none yet/);
    const backends = await page.locator('#backends tbody tr').allInnerTexts();
    assert.ok(backends.some((r) => r.startsWith('shop') && r.endsWith('up')), backends.join(' | '));
    // Legend values of the traffic chart: uPlot drew the series it was given.
    const legend = await page.locator('#traffic .u-legend').innerText();
    assert.match(legend, /requests\/s/);

    fs.mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: path.join(artifacts, 'dashboard.png'), fullPage: true });
    assert.deepEqual(errors, [], 'no script errors');
  } finally {
    if (browser.current) await browser.current.close();
    gw.kill('SIGTERM');
    backend.close();
  }
});
