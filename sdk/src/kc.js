/*
 * kc.js: the nginx-kafka page SDK. Embedded with one tag that carries the site key:
 *
 *   <script async src="https://collector.example/kc.js?key=KEY"></script>
 *
 * It sends a page view on load, and what the page asks for:
 *
 *   kc.track('signup', {plan: 'pro'});  // a custom event
 *   kc.page();                          // another page view (single-page applications)
 *   kc.identify('user-42');             // a "uid" field on every later event
 *   kc.flush();                         // send what is queued now
 *
 * Calls made before the script has loaded are queued and run when it loads:
 *
 *   window.kc = window.kc || []; kc.push(['track', 'signup', {plan: 'pro'}]);
 *
 * Events are batched (20 events, or 1 second, whichever first; at once when the page is
 * hidden or left) and sent as one JSON array to the collector's /collect?key=KEY, by
 * navigator.sendBeacon with a text/plain body (a CORS-safelisted type: no preflight), else
 * fetch with keepalive, else one image pixel per event. Attributes on the script tag:
 * data-endpoint (another collect URL), data-auto="false" (no page view on load).
 * No cookie, no storage, no dependency.
 */
(function (w, d) {
  'use strict';
  var BATCH = 20;
  var WAIT = 1000;

  var tag = d.currentScript;
  if (!tag) {
    var all = d.getElementsByTagName('script');
    for (var i = all.length - 1; i >= 0 && !tag; i--) {
      if (/\/kc(\.min)?\.js\?(.*&)?key=/.test(all[i].src)) tag = all[i];
    }
  }
  var src = (tag && tag.src) || '';
  var m = /[?&]key=([0-9a-f]{32})(&|#|$)/.exec(src);
  var before = w.kc;
  if (!m || (before && before.track)) return;
  var endpoint = (tag.getAttribute('data-endpoint') ||
    src.replace(/[^\/?#]*([?#].*)?$/, '') + 'collect');
  var url = endpoint + (endpoint.indexOf('?') < 0 ? '?' : '&') + 'key=' + m[1];

  var queue = [];
  var timer = 0;
  var uid;
  var pending = [];

  function event(type, name, props) {
    var e = {
      type: type,
      name: name,
      url: w.location.href,
      title: d.title,
      ts: new Date().getTime()
    };
    if (type === 'pageview' && d.referrer) e.referrer = d.referrer;
    if (w.navigator.language) e.lang = w.navigator.language;
    if (w.screen) e.screen = w.screen.width + 'x' + w.screen.height;
    if (uid !== undefined) e.uid = uid;
    if (props && typeof props === 'object') e.props = props;
    queue.push(e);
    if (queue.length >= BATCH) flush();
    else if (!timer) timer = setTimeout(flush, WAIT);
  }

  // One event as a pixel's query string: fields as they are, props as p.NAME (the pixel's
  // event is a flat object of strings).
  function query(e) {
    var parts = [];
    function add(k, v) {
      if (v === undefined || v === null) return;
      if (typeof v === 'object') v = JSON.stringify(v);
      parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(String(v)));
    }
    for (var k in e) {
      if (k === 'props') {
        for (var p in e.props) add('p.' + p, e.props[p]);
      } else {
        add(k, e[k]);
      }
    }
    return parts.join('&');
  }

  function pixel(e) {
    var img = new w.Image(1, 1);
    // Held until it settles, so that it is not collected before it is sent.
    img.onload = img.onerror = function () {
      for (var i = 0; i < pending.length; i++) if (pending[i] === img) pending.splice(i, 1);
    };
    pending.push(img);
    img.src = url + '&' + query(e);
  }

  function send(batch) {
    var body = JSON.stringify(batch);
    var nav = w.navigator;
    try {
      if (nav.sendBeacon && w.Blob && nav.sendBeacon(url, new w.Blob([body], { type: 'text/plain' }))) return;
    } catch (err) { /* the next transport */ }
    if (w.fetch) {
      try {
        var r = w.fetch(url, {
          method: 'POST',
          body: body,
          headers: { 'Content-Type': 'text/plain' },
          keepalive: true,
          mode: 'cors',
          credentials: 'omit'
        });
        if (r && r['catch']) r['catch'](function () {});
        return;
      } catch (err) { /* the pixel */ }
    }
    for (var i = 0; i < batch.length; i++) pixel(batch[i]);
  }

  function flush() {
    if (timer) clearTimeout(timer);
    timer = 0;
    while (queue.length) send(queue.splice(0, BATCH));
  }

  var api = {
    track: function (name, props) { event('event', String(name), props); },
    page: function (props) { event('pageview', 'page_view', props); },
    identify: function (id) { uid = id === null ? undefined : id; },
    flush: flush,
    push: function (call) {
      if (call && api[call[0]] && call[0] !== 'push') api[call[0]].apply(api, [].slice.call(call, 1));
    }
  };

  d.addEventListener('visibilitychange', function () {
    if (d.visibilityState === 'hidden') flush();
  });
  w.addEventListener('pagehide', flush);

  w.kc = api;
  // Queued calls: an identify first, so that the page view carries the uid; then the rest.
  var calls = (before && before.length) ? before : [];
  for (var j = 0; j < calls.length; j++) if (calls[j] && calls[j][0] === 'identify') api.push(calls[j]);
  if (tag.getAttribute('data-auto') !== 'false') api.page();
  for (j = 0; j < calls.length; j++) if (calls[j] && calls[j][0] !== 'identify') api.push(calls[j]);
})(window, document);
