// Unit tests of kc.js (the built dist/kc.js, as nginx serves it) in a small fake page:
// node:vm with the window, document and navigator parts the SDK touches. The real browser
// test is t/browser.rs (Chromium, the module, Kafka).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const zlib = require('node:zlib');
const { execFileSync } = require('node:child_process');

const DIST = path.join(__dirname, '..', 'dist', 'kc.js');
const KEY = '0123456789abcdef0123456789abcdef';
const SRC = `https://collect.example/kc.js?key=${KEY}`;
const URL_ = `https://collect.example/collect?key=${KEY}`;

// A page with the SDK's tag. transports: which of sendBeacon / fetch exist, and what
// sendBeacon answers. Returns the page, with what was sent in `sent`.
function page({ beacon = true, beaconOk = true, fetch = true, attrs = {}, src = SRC, before } = {}) {
  const sent = [];
  const listeners = {};
  const timers = [];
  const tag = { src, getAttribute: (n) => (n in attrs ? attrs[n] : null) };
  const document = {
    currentScript: tag,
    title: 'Shop',
    referrer: 'https://search.example/?q=shoes',
    visibilityState: 'visible',
    getElementsByTagName: () => [tag],
    addEventListener: (t, f) => { (listeners['doc:' + t] ||= []).push(f); },
  };
  class Blob {
    constructor(parts, opts) { this.text = parts.join(''); this.type = opts.type; }
  }
  class Image {
    set src(v) { sent.push({ via: 'pixel', url: v }); }
  }
  const navigator = { language: 'en-GB' };
  if (beacon) {
    navigator.sendBeacon = (url, blob) => {
      if (beaconOk) sent.push({ via: 'beacon', url, type: blob.type, body: JSON.parse(blob.text) });
      return beaconOk;
    };
  }
  const window = {
    location: { href: 'https://shop.example/p/1' },
    screen: { width: 1280, height: 720 },
    navigator, Blob, Image,
    addEventListener: (t, f) => { (listeners['win:' + t] ||= []).push(f); },
  };
  if (fetch) {
    window.fetch = (url, init) => {
      sent.push({ via: 'fetch', url, init, body: JSON.parse(init.body) });
      return Promise.resolve({ status: 204 });
    };
  }
  if (before) window.kc = before;
  const ctx = vm.createContext({
    window, document,
    setTimeout: (f, ms) => { timers.push({ f, ms }); return timers.length; },
    clearTimeout: (id) => { if (timers[id - 1]) timers[id - 1].f = null; },
  });
  vm.runInContext(fs.readFileSync(DIST, 'utf8'), ctx);
  return {
    window, document, sent, timers,
    tick() { for (const t of timers.splice(0)) if (t.f) t.f(); },
    fire(name) { for (const f of listeners[name] || []) f(); },
  };
}

test('a page view on load, sent as a text/plain beacon after 1 s', () => {
  const p = page();
  assert.strictEqual(p.sent.length, 0, 'batched, not sent at once');
  assert.deepStrictEqual(p.timers.map((t) => t.ms), [1000]);
  p.tick();
  assert.strictEqual(p.sent.length, 1);
  const [s] = p.sent;
  assert.strictEqual(s.via, 'beacon');
  assert.strictEqual(s.url, URL_);
  assert.strictEqual(s.type, 'text/plain');
  assert.strictEqual(s.body.length, 1);
  const e = s.body[0];
  assert.strictEqual(e.type, 'pageview');
  assert.strictEqual(e.name, 'page_view');
  assert.strictEqual(e.url, 'https://shop.example/p/1');
  assert.strictEqual(e.title, 'Shop');
  assert.strictEqual(e.referrer, 'https://search.example/?q=shoes');
  assert.strictEqual(e.lang, 'en-GB');
  assert.strictEqual(e.screen, '1280x720');
  assert.ok(Number.isInteger(e.ts) && e.ts > 1.6e12);
});

test('custom events: track, identify, props; 20 events make a batch at once', () => {
  const p = page();
  p.window.kc.identify('user-42');
  for (let i = 0; i < 19; i++) p.window.kc.track('click', { n: i });
  assert.strictEqual(p.sent.length, 1, 'page view + 19 = 20: sent without waiting');
  const body = p.sent[0].body;
  assert.strictEqual(body.length, 20);
  assert.strictEqual(body[0].uid, undefined, 'the page view came before identify');
  assert.deepStrictEqual(body.slice(1).map((e) => e.props.n), [...Array(19).keys()]);
  assert.ok(body.slice(1).every((e) => e.type === 'event' && e.name === 'click' && e.uid === 'user-42'));
  assert.ok(body.slice(1).every((e) => e.referrer === undefined), 'referrer only on page views');
  p.window.kc.track('late');
  p.tick();
  assert.strictEqual(p.sent.length, 2);
  assert.deepStrictEqual(p.sent[1].body.map((e) => e.name), ['late']);
});

test('flushed when the page is hidden or left', () => {
  const p = page();
  p.window.kc.track('a');
  p.document.visibilityState = 'hidden';
  p.fire('doc:visibilitychange');
  assert.strictEqual(p.sent.length, 1);
  assert.deepStrictEqual(p.sent[0].body.map((e) => e.name), ['page_view', 'a']);
  p.window.kc.track('b');
  p.fire('win:pagehide');
  assert.strictEqual(p.sent.length, 2);
  assert.deepStrictEqual(p.sent[1].body.map((e) => e.name), ['b']);
  p.fire('win:pagehide');
  p.tick();
  assert.strictEqual(p.sent.length, 2, 'nothing twice, nothing empty');
});

test('fetch with keepalive when sendBeacon refuses, no preflight', () => {
  const p = page({ beaconOk: false });
  p.window.kc.flush();
  assert.strictEqual(p.sent.length, 1);
  const [s] = p.sent;
  assert.strictEqual(s.via, 'fetch');
  assert.strictEqual(s.url, URL_);
  assert.strictEqual(s.init.method, 'POST');
  assert.strictEqual(s.init.keepalive, true);
  assert.strictEqual(s.init.credentials, 'omit');
  assert.strictEqual(JSON.stringify(s.init.headers), '{"Content-Type":"text/plain"}');
  assert.strictEqual(s.body[0].type, 'pageview');
});

test('one pixel per event without sendBeacon and fetch, props flattened as p.NAME', () => {
  const p = page({ beacon: false, fetch: false });
  p.window.kc.track('add to cart', { sku: 'A&B=1', qty: 2 });
  p.window.kc.flush();
  assert.deepStrictEqual(p.sent.map((s) => s.via), ['pixel', 'pixel']);
  const q = new URL(p.sent[1].url).searchParams;
  assert.ok(p.sent[1].url.startsWith(URL_ + '&'));
  assert.strictEqual(q.get('key'), KEY);
  assert.strictEqual(q.get('type'), 'event');
  assert.strictEqual(q.get('name'), 'add to cart');
  assert.strictEqual(q.get('p.sku'), 'A&B=1');
  assert.strictEqual(q.get('p.qty'), '2');
  assert.strictEqual(q.get('url'), 'https://shop.example/p/1');
  assert.strictEqual(new URL(p.sent[0].url).searchParams.get('type'), 'pageview');
});

test('calls queued before the script loaded run, identify first', () => {
  const before = [['track', 'early', { x: 1 }], ['identify', 'u7'], ['nope']];
  const p = page({ before });
  p.window.kc.flush();
  const names = p.sent[0].body.map((e) => [e.name, e.uid]);
  assert.deepStrictEqual(names, [['page_view', 'u7'], ['early', 'u7']]);
  assert.strictEqual(typeof p.window.kc.track, 'function');
});

test('data-auto="false" and data-endpoint', () => {
  const p = page({ attrs: { 'data-auto': 'false', 'data-endpoint': 'https://c2.example/e' } });
  assert.strictEqual(p.timers.length, 0, 'no page view');
  p.window.kc.track('x');
  p.tick();
  assert.strictEqual(p.sent[0].url, `https://c2.example/e?key=${KEY}`);
});

test('without a valid key in its src, the SDK does nothing', () => {
  for (const src of ['https://collect.example/kc.js', 'https://collect.example/kc.js?key=nothex',
    `https://collect.example/kc.js?key=${KEY}0`]) {
    const p = page({ src });
    assert.strictEqual(p.window.kc, undefined, src);
    assert.strictEqual(p.timers.length, 0);
  }
});

test('the built file is current and at most 3 KB gzipped', () => {
  const built = execFileSync(path.join(__dirname, '..', 'node_modules', '.bin', 'esbuild'),
    [path.join(__dirname, '..', 'src', 'kc.js'), '--minify', '--target=es2015', '--legal-comments=none'],
    { encoding: 'utf8' });
  assert.strictEqual(fs.readFileSync(DIST, 'utf8'), built, 'dist/kc.js is not src/kc.js built: npm run build');
  const gz = zlib.gzipSync(fs.readFileSync(DIST), { level: 9 }).length;
  console.log(`dist/kc.js: ${fs.statSync(DIST).size} bytes, ${gz} gzipped`);
  assert.ok(gz <= 3072, `${gz} bytes gzipped`);
});
