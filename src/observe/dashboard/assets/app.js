// The dashboard's script: fetches /dashboard/data (the last five minutes, backend health) and
// /analytics (top APIs and subscriptions of the last hour) with the admin token every two
// seconds and draws them with uPlot and tables. The token comes from the URL fragment (#token=…) or the form, and stays in
// this tab's session storage.
(function () {
  'use strict';
  const KEY = 'gatehouse-admin-token';
  // A token in the fragment is stored and removed from the address bar.
  function tokenFromHash() {
    const hash = new URLSearchParams(location.hash.slice(1));
    if (!hash.get('token')) return false;
    sessionStorage.setItem(KEY, hash.get('token'));
    history.replaceState(null, '', location.pathname);
    return true;
  }
  tokenFromHash();
  let token = sessionStorage.getItem(KEY);
  const charts = {};
  const $ = (id) => document.getElementById(id);

  function login(why) {
    $('login').classList.add('shown');
    $('panels').style.display = 'none';
    $('login-why').textContent = why;
    $('status').textContent = 'locked';
  }
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    token = $('token').value;
    sessionStorage.setItem(KEY, token);
    $('login').classList.remove('shown');
    $('panels').style.display = '';
    refresh();
  });

  function chart(id, series, data) {
    const el = $(id);
    if (!charts[id]) {
      const opts = {
        width: Math.max(300, el.clientWidth),
        height: 220,
        series: [{}].concat(series.map(([label, stroke]) => ({ label, stroke, width: 2, spanGaps: false }))),
        axes: [{}, { size: 60 }],
        scales: { x: { time: true } },
      };
      charts[id] = new uPlot(opts, data, el);
    } else {
      charts[id].setData(data);
    }
  }

  function rows(id, list, cells) {
    const body = $(id).querySelector('tbody');
    body.replaceChildren();
    if (list.length === 0) {
      const tr = body.insertRow();
      const td = tr.insertCell();
      td.colSpan = $(id).querySelectorAll('th').length;
      td.className = 'empty';
      td.textContent = 'none yet';
      return;
    }
    for (const item of list) {
      const tr = body.insertRow();
      for (const [text, cls] of cells(item)) {
        const td = tr.insertCell();
        td.textContent = text;
        if (cls) td.className = cls;
      }
    }
  }

  function draw(d) {
    const s = d.seconds;
    const t = s.map((x) => x.t);
    const col = (k) => s.map((x) => x[k]);
    chart('traffic', [['requests/s', '#2f6fde']], [t, col('requests')]);
    chart('latency', [['p50', '#1a7f37'], ['p95', '#bf8700'], ['p99', '#cf222e']], [t, col('p50_ms'), col('p95_ms'), col('p99_ms')]);
    chart('errors', [['edge', '#8250df'], ['policy', '#bf8700'], ['backend', '#cf222e'], ['gateway', '#57606a']],
      [t, col('edge'), col('policy'), col('backend'), col('gateway')]);
    rows('backends', d.backends, (b) => [[b.backend], [b.server], [b.up ? 'up' : 'down', b.up ? 'up' : 'down']]);
    const sum = (k) => s.reduce((a, x) => a + x[k], 0);
    const total = sum('requests');
    document.body.dataset.requests = total;
    for (const layer of ['edge', 'policy', 'backend', 'gateway']) document.body.dataset[layer] = sum(layer);
    document.body.dataset.ready = '1';
    $('status').textContent = `config generation ${d.generation} · ${total} requests in the last 5 minutes · ` +
      new Date().toLocaleTimeString();
  }

  const ms = (v) => (v == null ? '–' : v < 10 ? v.toFixed(2) : v.toFixed(0));
  const top = (list, name) => list.filter((r) => r[name] != null).slice(0, 10);
  // One table of /analytics rows (by=api or by=subscription, interval=total, most requests first).
  function drawTop(id, name, a) {
    rows(id, top(a.rows, name), (r) => [
      [r[name] === '' ? '(no route)' : r[name]], [r.requests, 'n'], [r.errors, 'n'], [ms(r.latency_ms.p95), 'n'],
    ]);
  }

  async function analytics(by) {
    const r = await fetch('/analytics?by=' + by, { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' });
    if (!r.ok) throw new Error('/analytics answered ' + r.status);
    return r.json();
  }

  async function refresh() {
    if (!token) return login('The dashboard needs the admin token.');
    try {
      const r = await fetch('/dashboard/data', { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' });
      if (r.status === 401 || r.status === 403) {
        sessionStorage.removeItem(KEY);
        token = null;
        return login('The admin token was refused.');
      }
      draw(await r.json());
    } catch (e) {
      $('status').textContent = 'gateway unreachable: ' + e.message;
      return;
    }
    try {
      drawTop('apis', 'api', await analytics('api'));
      drawTop('subs', 'subscription', await analytics('subscription'));
      document.body.dataset.analytics = '1';
    } catch (e) {
      // The store behind /analytics may be away while the rest of the page works.
      $('status').textContent += ' · analytics unavailable: ' + e.message;
    }
  }
  window.addEventListener('hashchange', () => {
    if (!tokenFromHash()) return;
    token = sessionStorage.getItem(KEY);
    $('login').classList.remove('shown');
    $('panels').style.display = '';
    refresh();
  });
  refresh();
  setInterval(refresh, 2000);
})();
