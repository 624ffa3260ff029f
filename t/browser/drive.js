// Drives Debian's headless Chromium for t/browser.rs (with playwright-core, from sdk/'s
// npm dependencies). Usage: node drive.js PLAN.json; prints a JSON report on stdout.
//
// PLAN: {"profile": DIR, "visits": [{"url": U, "click": ["#add", ...],
//        "disable": ["sendBeacon", "fetch"], "screenshot": PATH}]}
// Each visit opens U in a new page, waits for kc.js to load, clicks what it is told (in
// order), takes the screenshot, then leaves the page (about:blank: pagehide), which makes
// kc.js flush. The report lists, per visit, every request the page made to /collect or
// /kc.js with its answer, and the page's console errors.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require(path.join(__dirname, '..', '..', 'sdk', 'node_modules', 'playwright-core'));

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

async function visit(context, v) {
  const page = await context.newPage();
  const seen = [];
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  const track = (req, status) => {
    const u = req.url();
    if (/\/(collect|kc\.js)\?/.test(u)) seen.push({ url: u, method: req.method(), status });
  };
  page.on('requestfinished', async (req) => {
    const res = await req.response().catch(() => null);
    track(req, res ? res.status() : 0);
  });
  page.on('requestfailed', (req) => track(req, -1));
  if (v.disable && v.disable.length) {
    // Before any script of the page: the transports the page must do without.
    await page.addInitScript((names) => {
      for (const n of names) {
        if (n === 'sendBeacon') Object.defineProperty(Navigator.prototype, 'sendBeacon', { value: undefined });
        else Object.defineProperty(window, n, { value: undefined, configurable: true });
      }
    }, v.disable);
  }
  await page.goto(v.url, { waitUntil: 'load' });
  const loaded = await page.waitForFunction(() => window.kc && typeof window.kc.track === 'function',
    null, { timeout: 10000 }).then(() => true, () => false);
  const agent = await page.evaluate(() => navigator.userAgent);
  for (const sel of v.click || []) await page.click(sel);
  if (v.screenshot) {
    fs.mkdirSync(path.dirname(v.screenshot), { recursive: true });
    await page.screenshot({ path: v.screenshot });
  }
  await page.goto('about:blank');
  // Let the beacons, fetches and pixels of the page's last moment finish.
  await page.waitForTimeout(1500);
  await page.close();
  return { url: v.url, agent, loaded, requests: seen, errors };
}

(async () => {
  const plan = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const context = await chromium.launchPersistentContext(plan.profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    viewport: { width: 1000, height: 560 },
  });
  const report = { visits: [] };
  try {
    for (const v of plan.visits) report.visits.push(await visit(context, v));
  } finally {
    await context.close();
  }
  process.stdout.write(JSON.stringify(report) + '\n');
})().catch((e) => { console.error(e); process.exit(1); });
