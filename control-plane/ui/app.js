// Switchyard's dashboard: a client of the public admin API only (every
// call below is an endpoint of openapi/openapi.yaml). Hand-written, no
// build step, no dependencies; the DOM is built with textContent only, so
// no name, URL or comment from the config is ever parsed as HTML.
'use strict';

const TOKEN_KEY = 'switchyard.admin-token';

/** What the page knows; the views read it, the event stream updates it. */
const S = {
  version: null, // the config version live on the gateway
  status: null, // GET /admin/status
  routes: [],
  upstreams: [],
  traffic: null, // the last `traffic` event
  live: false,
  // Called after every traffic or health event to refresh figures in place.
  onLive: null,
  // An edit in progress: a config event then warns instead of re-rendering.
  editing: false,
};

// ---------------------------------------------------------------- DOM ----

/** An element with attributes (`on*` are listeners) and children. */
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

const $ = (id) => document.getElementById(id);
const main = () => $('main');

function fmtRate(r) { return r === undefined ? '–' : r < 10 ? r.toFixed(1) : Math.round(r).toString(); }
function fmtRatio(r) { return r === undefined ? '–' : (r * 100).toFixed(r > 0 && r < 0.01 ? 2 : 1) + '%'; }
function fmtMs(ms) { return ms === null || ms === undefined ? '–' : ms < 10 ? ms.toFixed(2) + ' ms' : Math.round(ms) + ' ms'; }
function fmtShare(s) { return Math.round(s * 100) + '%'; }
function fmtTime(ms) { return new Date(ms).toLocaleString(); }

/** A horizontal bar for a share from 0 to 1. */
function bar(share, kind, testid) {
  const fill = h('span', { class: 'fill ' + kind });
  fill.style.width = Math.max(0, Math.min(1, share)) * 100 + '%';
  return h('span', { class: 'bar', 'data-testid': testid, 'data-share': share.toFixed(4) }, fill);
}

function stateBadge(state) {
  return h('span', { class: 'state state-' + state, 'data-testid': 'state', text: state });
}

function toast(text) {
  const t = $('toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

/** A banner that stays until dismissed, with an optional action. */
function banner(text, action) {
  const b = $('banner');
  b.replaceChildren(h('span', { 'data-testid': 'banner-text', text }));
  if (action) b.append(h('button', { type: 'button', onclick: () => { b.hidden = true; action.run(); } }, action.label));
  b.append(h('button', { type: 'button', class: 'plain', onclick: () => { b.hidden = true; } }, 'Dismiss'));
  b.hidden = false;
}

/** Ask before doing something that cannot be taken back. Resolves true/false. */
function confirmDialog(title, body, ok) {
  const d = $('confirm');
  $('confirm-title').textContent = title;
  $('confirm-body').replaceChildren(body);
  $('confirm-ok').textContent = ok;
  return new Promise((resolve) => {
    const done = (answer) => () => { d.close(); resolve(answer); };
    $('confirm-ok').onclick = done(true);
    $('confirm-cancel').onclick = done(false);
    d.oncancel = done(false);
    d.showModal();
  });
}

// ---------------------------------------------------------------- API ----

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && problem.detail) || 'HTTP ' + status);
    this.status = status;
    this.problem = problem;
  }
}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: 'Bearer ' + token } : {};
}

/** One admin API call; JSON in and out. `ifMatch`: the version the edit was made against. */
async function api(method, path, opts = {}) {
  const headers = { Accept: 'application/json', ...authHeaders() };
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  if (opts.ifMatch !== undefined) headers['If-Match'] = '"' + opts.ifMatch + '"';
  if (opts.comment) headers['X-Change-Comment'] = opts.comment;
  const resp = await fetch(path, {
    method,
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  if (resp.status === 401) {
    askForToken(sessionStorage.getItem(TOKEN_KEY) ? 'The token was refused.' : null);
    throw new ApiError(401, null);
  }
  const type = resp.headers.get('content-type') || '';
  const data = resp.status === 204 ? null : type.includes('json') ? await resp.json() : await resp.text();
  if (!resp.ok) throw new ApiError(resp.status, typeof data === 'object' ? data : null);
  const version = resp.headers.get('x-config-version');
  if (version !== null) setVersion(Number(version));
  return data;
}

/** Show why an edit failed; a 412 means the view is stale. */
function failed(e) {
  if (e.status === 401) return;
  if (e.status === 412) {
    banner('Someone else changed this — reload to see the current config before you edit it.', { label: 'Reload', run: reload });
    return;
  }
  const fields = e.problem && e.problem.errors && e.problem.errors.length
    ? ' (' + e.problem.errors.map((f) => f.pointer + ': ' + f.detail).join('; ') + ')'
    : '';
  banner((e.problem ? e.problem.title + ': ' : '') + e.message + fields);
}

// ------------------------------------------------------------- token -----

function askForToken(why) {
  S.needToken = true;
  $('nav').hidden = true;
  $('forget').hidden = true;
  const input = h('input', { type: 'password', id: 'token', autocomplete: 'off', placeholder: 'admin token', 'data-testid': 'token-input', required: true });
  const form = h('form', {
    class: 'card token',
    onsubmit: (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      S.needToken = false;
      start();
    },
  },
  h('h2', { text: 'Admin token' }),
  h('p', { text: 'This gateway requires its admin token. It is kept in this tab\'s session storage only and sent as Authorization: Bearer.' }),
  why ? h('p', { class: 'error', 'data-testid': 'token-error', text: why }) : null,
  input,
  h('button', { type: 'submit', 'data-testid': 'token-submit' }, 'Use token'));
  main().replaceChildren(form);
  input.focus();
}

// ----------------------------------------------------------- events ------

function setVersion(v) {
  if (S.version !== null && v < S.version) return;
  S.version = v;
  $('version').textContent = 'config v' + v;
}

function setLive(on) {
  S.live = on;
  const el = $('live');
  el.textContent = on ? 'live' : 'offline';
  el.className = 'live ' + (on ? 'on' : 'off');
}

/** Follow GET /admin/events (fetch, not EventSource: it sends the token header). */
async function follow() {
  for (;;) {
    try {
      const resp = await fetch('/admin/events', { headers: { Accept: 'text/event-stream', ...authHeaders() } });
      if (resp.status === 401) { askForToken('The token was refused.'); setLive(false); start.following = false; return; }
      if (!resp.ok) throw new Error('events: HTTP ' + resp.status);
      setLive(true);
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n/g, '\n');
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          dispatch(buf.slice(0, end));
          buf = buf.slice(end + 2);
        }
      }
    } catch (e) {
      // Reconnect below.
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function dispatch(block) {
  let name = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') name = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length) return;
  const d = JSON.parse(data.join('\n'));
  if (name === 'hello') setVersion(d.config_version);
  else if (name === 'config') configChanged(d.config_version);
  else if (name === 'traffic') { S.traffic = d; if (S.onLive) S.onLive(); }
  else if (name === 'health') healthChanged(d);
}

async function configChanged(version) {
  setVersion(version);
  // This page's own change: it reloaded at that version already.
  if (version <= S.loadedAt) return;
  if (S.editing) {
    banner('The config changed (now v' + version + ') while you were editing.', { label: 'Reload', run: reload });
    return;
  }
  await reload();
}

async function healthChanged() {
  try {
    S.status = await api('GET', '/admin/status');
    if (S.onHealth) await S.onHealth();
    if (S.onLive) S.onLive();
  } catch (e) { /* shown when the next call fails */ }
}

// ------------------------------------------------------------ data -------

async function load() {
  const [status, routes, upstreams] = await Promise.all([
    api('GET', '/admin/status'),
    api('GET', '/admin/routes'),
    api('GET', '/admin/upstreams'),
  ]);
  S.status = status;
  S.routes = routes.items;
  S.upstreams = upstreams.items;
  S.loadedAt = Math.min(status.config_version, routes.config_version, upstreams.config_version);
  setVersion(status.config_version);
}

async function reload() {
  S.editing = false;
  $('banner').hidden = true;
  try {
    await load();
    await render();
  } catch (e) { failed(e); }
}

function routeTraffic(name) {
  return S.traffic && S.traffic.routes.find((r) => r.name === name);
}

function backendTraffic(upstream, id) {
  return S.traffic && S.traffic.backends.find((b) => b.upstream === upstream && b.id === id);
}

function liveBackends() {
  return S.status ? S.status.upstreams.flatMap((u) => u.backends.map((b) => ({ ...b, upstream: u.name }))) : [];
}

// ----------------------------------------------------------- views -------

const views = { overview, routes, upstreams, upstream, history };

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  if (parts[0] === 'upstreams' && parts[1]) return { view: 'upstream', arg: parts[1] };
  return { view: views[parts[0]] ? parts[0] : 'overview', arg: null };
}

async function render() {
  if (S.needToken) return;
  const { view, arg } = route();
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.view === view || (view === 'upstream' && a.dataset.view === 'upstreams'));
  }
  S.gen = (S.gen || 0) + 1;
  S.onLive = null;
  S.onHealth = null;
  S.editing = false;
  try {
    await views[view](arg);
  } catch (e) { failed(e); }
}

/** Put a view on the page, unless another render started since this one did. */
function mounter() {
  const gen = S.gen;
  return (...nodes) => {
    if (gen !== S.gen) return false;
    main().replaceChildren(...nodes);
    return true;
  };
}

function figure(label, testid) {
  const value = h('div', { class: 'value', 'data-testid': testid, text: '–' });
  return { el: h('div', { class: 'figure' }, h('div', { class: 'label', text: label }), value), value };
}

function overview() {
  const mount = mounter();
  const f = {
    version: figure('Config version', 'ov-version'),
    routes: figure('Routes', 'ov-routes'),
    upstreams: figure('Upstreams', 'ov-upstreams'),
    rps: figure('Requests/s', 'ov-rps'),
    errors: figure('Error ratio (5xx)', 'ov-errors'),
    p99: figure('p99 to headers', 'ov-p99'),
    unhealthy: figure('Backends down', 'ov-unhealthy'),
    live: figure('Event stream', 'ov-live'),
  };
  const down = h('ul', { class: 'down', 'data-testid': 'down-list' });
  const pools = h('div', { class: 'pools' });
  if (!mount(
    h('section', { class: 'figures' }, Object.values(f).map((x) => x.el)),
    h('section', { class: 'card' }, h('h2', { text: 'Backends not taking traffic' }), down),
    h('section', { class: 'card' }, h('h2', { text: 'Upstreams' }), pools),
  )) return;
  S.onLive = () => {
    const backends = liveBackends();
    const bad = backends.filter((b) => !['healthy', 'unknown'].includes(b.state));
    f.version.value.textContent = 'v' + S.version;
    f.routes.value.textContent = S.status.routes;
    f.upstreams.value.textContent = S.status.upstreams.length;
    const t = S.traffic && S.traffic.total;
    f.rps.value.textContent = t ? fmtRate(t.rps) : '–';
    f.errors.value.textContent = t ? fmtRatio(t.error_ratio) : '–';
    f.p99.value.textContent = t ? fmtMs(t.p99_ms) : '–';
    f.unhealthy.value.textContent = bad.length;
    f.unhealthy.value.classList.toggle('bad', bad.length > 0);
    f.live.value.textContent = S.live ? 'live' : 'offline';
    down.replaceChildren(...(bad.length
      ? bad.map((b) => h('li', {}, stateBadge(b.state), ' ', h('a', { href: '#/upstreams/' + encodeURIComponent(b.upstream), text: b.upstream }), ' ', b.url))
      : [h('li', { class: 'muted', text: 'None: every backend is healthy or not yet probed.' })]));
    pools.replaceChildren(...S.status.upstreams.map((u) => h('a', { class: 'pool', href: '#/upstreams/' + encodeURIComponent(u.name) },
      h('strong', { text: u.name }), ' ', h('span', { class: 'muted', text: u.strategy }),
      h('span', { class: 'dots' }, u.backends.map((b) => h('span', { class: 'dot state-' + b.state, title: b.url + ': ' + b.state }))))));
  };
  S.onLive();
}

function matchRules(r) {
  const parts = [];
  parts.push(h('code', { text: r.path }));
  if (r.methods && r.methods.length) parts.push(' ', h('span', { class: 'tag', text: r.methods.join(' ') }));
  if (r.hosts && r.hosts.length) parts.push(' ', h('span', { class: 'tag', text: r.hosts.join(', ') }));
  if (r.strip_prefix) parts.push(' ', h('span', { class: 'tag', text: 'strip prefix' }));
  return parts;
}

function routes() {
  const mount = mounter();
  const rows = new Map();
  const table = h('table', { 'data-testid': 'routes' },
    h('thead', {}, h('tr', {}, ['Route', 'Match', 'Upstream', 'Policies', 'Req/s', 'Errors', 'p99'].map((t) => h('th', { text: t })))),
    h('tbody', {}, S.routes.map((r) => {
      const cells = { rps: h('td', { class: 'num' }), errors: h('td', { class: 'num' }), p99: h('td', { class: 'num' }) };
      rows.set(r.name, cells);
      const policies = r.policies ? Object.keys(r.policies) : [];
      return h('tr', { 'data-route': r.name },
        h('td', {}, h('strong', { text: r.name })),
        h('td', {}, matchRules(r)),
        h('td', {}, r.upstream ? h('a', { href: '#/upstreams/' + encodeURIComponent(r.upstream), text: r.upstream }) : h('span', { class: 'muted', text: r.redirect ? 'redirect' : '–' })),
        h('td', {}, policies.length ? policies.map((p) => h('span', { class: 'tag', text: p })) : h('span', { class: 'muted', text: 'none' })),
        cells.rps, cells.errors, cells.p99);
    })));
  if (!mount(
    h('section', { class: 'card' }, h('h2', { text: 'Routes' }), S.routes.length ? table : h('p', { class: 'muted', text: 'No routes yet.' })),
    explainBox(),
    createRouteForm(),
  )) return;
  S.onLive = () => {
    for (const [name, cells] of rows) {
      const t = routeTraffic(name);
      cells.rps.textContent = t ? fmtRate(t.rps) : '–';
      cells.errors.textContent = t ? fmtRatio(t.error_ratio) : '–';
      cells.p99.textContent = t ? fmtMs(t.p99_ms) : '–';
    }
  };
  S.onLive();
}

function explainBox() {
  const method = h('select', { 'aria-label': 'method' }, ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'].map((m) => h('option', { text: m })));
  const url = h('input', { type: 'text', placeholder: 'http://example.com/api/users?id=1', 'data-testid': 'explain-url', required: true });
  const out = h('div', { class: 'explain', 'data-testid': 'explain-result' });
  const form = h('form', {
    class: 'row',
    onsubmit: async (ev) => {
      ev.preventDefault();
      let target = url.value.trim();
      if (!/^[a-z]+:\/\//i.test(target)) target = 'http://' + (target.startsWith('/') ? 'localhost' : '') + target;
      try {
        const q = new URLSearchParams({ method: method.value, url: target });
        showExplanation(out, await api('GET', '/admin/explain?' + q));
      } catch (e) { failed(e); }
    },
  }, method, url, h('button', { type: 'submit', 'data-testid': 'explain-go' }, 'Explain'));
  return h('section', { class: 'card' }, h('h2', { text: 'Explain a request' }),
    h('p', { class: 'muted', text: 'Which route would answer this request, and why: the live router\'s own answer.' }), form, out);
}

function showExplanation(out, x) {
  const kids = [];
  if (x.path_error) kids.push(h('p', { class: 'error', text: 'The proxy would refuse this path: ' + x.path_error }));
  if (x.winner) {
    const w = x.winner;
    kids.push(h('p', { 'data-testid': 'explain-winner' }, 'Route ', h('strong', { text: w.route }), ' wins',
      w.upstream ? [' → upstream ', h('a', { href: '#/upstreams/' + encodeURIComponent(w.upstream), text: w.upstream }), ', sent upstream as ', h('code', { text: w.upstream_path })] : ''));
    if (w.backends && w.backends.length) {
      kids.push(h('table', {}, h('tr', {}, ['Backend', 'Weight', 'State', 'Expected share'].map((t) => h('th', { text: t }))),
        w.backends.map((b) => h('tr', {}, h('td', { text: b.url }), h('td', { class: 'num', text: b.weight }), h('td', {}, stateBadge(b.state)),
          h('td', {}, bar(b.expected_share, 'expected', 'explain-share'), ' ', fmtShare(b.expected_share))))));
    }
    if (w.hash_backend) kids.push(h('p', {}, 'Its hash key goes to ', h('code', { text: w.hash_backend })));
  } else if (!x.path_error) {
    kids.push(h('p', { class: 'error', 'data-testid': 'explain-winner', text: 'No route matches: the proxy answers 404.' }));
  }
  if (x.considered.length) {
    kids.push(h('h3', { text: 'Routes looked at' }), h('table', {},
      h('tr', {}, ['Route', 'Path', 'Host', 'Method', 'Segment', 'Why'].map((t) => h('th', { text: t }))),
      x.considered.map((c) => h('tr', { class: c.wins ? 'wins' : '' }, h('td', { text: c.route }), h('td', {}, h('code', { text: c.path })),
        h('td', { text: c.host_match }), h('td', { text: c.method_match ? 'yes' : 'no' }), h('td', { text: c.segment_match ? 'yes' : 'no' }), h('td', { text: c.reason })))));
  }
  out.replaceChildren(...kids);
}

function field(label, input) {
  return h('label', {}, h('span', { text: label }), input);
}

function createRouteForm() {
  const name = h('input', { type: 'text', required: true, 'data-testid': 'new-route-name' });
  const path = h('input', { type: 'text', required: true, value: '/', 'data-testid': 'new-route-path' });
  const upstream = h('select', { 'data-testid': 'new-route-upstream' }, S.upstreams.map((u) => h('option', { text: u.name })));
  const methods = h('input', { type: 'text', placeholder: 'any (or GET, POST)' });
  const hosts = h('input', { type: 'text', placeholder: 'any (or api.example.com)' });
  const strip = h('input', { type: 'checkbox' });
  const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
  const form = h('form', {
    class: 'grid',
    onsubmit: async (ev) => {
      ev.preventDefault();
      const body = { name: name.value.trim(), path: path.value.trim(), upstream: upstream.value, strip_prefix: strip.checked };
      if (list(methods.value).length) body.methods = list(methods.value).map((m) => m.toUpperCase());
      if (list(hosts.value).length) body.hosts = list(hosts.value);
      try {
        // A new name cannot be stale: one that exists is refused (409).
        const r = await api('POST', '/admin/routes', { body });
        toast('Route ' + r.name + ' is live (config v' + r.version + ')');
        await reload();
      } catch (e) { failed(e); }
    },
  }, field('Name', name), field('Path prefix', path), field('Upstream', upstream), field('Methods', methods), field('Hosts', hosts),
  h('label', { class: 'check' }, strip, ' strip the prefix'), h('button', { type: 'submit', 'data-testid': 'new-route-create' }, 'Create route'));
  return h('section', { class: 'card' }, h('h2', { text: 'New route' }), S.upstreams.length ? form : h('p', { class: 'muted', text: 'Create an upstream first.' }));
}

function upstreams() {
  const mount = mounter();
  if (!mount(h('section', { class: 'card' }, h('h2', { text: 'Upstreams' }),
    h('table', { 'data-testid': 'upstreams' }, h('tr', {}, ['Upstream', 'Strategy', 'Backends', 'Health'].map((t) => h('th', { text: t }))),
      S.upstreams.map((u) => {
        const live = S.status.upstreams.find((x) => x.name === u.name);
        return h('tr', {}, h('td', {}, h('a', { href: '#/upstreams/' + encodeURIComponent(u.name), text: u.name })), h('td', { text: u.strategy }),
          h('td', { class: 'num', text: u.backends.length }),
          h('td', {}, live ? live.backends.map((b) => h('span', { class: 'dot state-' + b.state, title: b.url + ': ' + b.state })) : ''));
      })))));
}

/** The upstream view: backends with live figures, weights with a dry-run preview, history. */
async function upstream(name) {
  const mount = mounter();
  const [u, health] = await Promise.all([
    api('GET', '/admin/upstreams/' + encodeURIComponent(name)),
    api('GET', '/admin/upstreams/' + encodeURIComponent(name) + '/health'),
  ]);
  const base = '/admin/upstreams/' + encodeURIComponent(name) + '/backends/';
  const preview = h('div', { class: 'preview', 'data-testid': 'preview', hidden: true });
  const rows = new Map();
  let statusNow = health;

  // The dry run of one weight, then Apply or Cancel.
  let pending = null;
  const showPreview = async (b, weight) => {
    const ask = { b, weight };
    pending = ask;
    S.editing = true;
    try {
      const run = await api('PATCH', base + b.id + '?dry_run=true', { body: { weight }, ifMatch: b.version });
      if (pending !== ask) return;
      const effect = run.traffic.find((t) => t.upstream === name);
      preview.replaceChildren(
        h('h3', {}, 'Preview: ', h('code', { text: b.url }), ' weight ' + b.weight + ' → ' + weight + (run.no_op ? ' (no change)' : '')),
        h('table', {}, h('tr', {}, ['Backend', 'Weight', 'Share now', 'Share after'].map((t) => h('th', { text: t }))),
          (effect ? effect.backends : []).map((x) => h('tr', { 'data-preview': x.url },
            h('td', { text: x.url }),
            h('td', { class: 'num', text: (x.weight_before ?? '–') + ' → ' + (x.weight_after ?? '–') }),
            h('td', {}, bar(x.share_before, 'expected', 'share-before'), ' ', fmtShare(x.share_before)),
            h('td', {}, bar(x.share_after, 'after', 'share-after'), ' ', h('span', { 'data-testid': 'share-after-text', text: fmtShare(x.share_after) }))))),
        h('div', { class: 'row' },
          h('button', { type: 'button', 'data-testid': 'apply', onclick: () => apply(b, weight) }, weight === 0 ? 'Drain now' : 'Apply'),
          h('button', { type: 'button', class: 'plain', onclick: () => { pending = null; reload(); } }, 'Cancel')));
      preview.hidden = false;
    } catch (e) { failed(e); }
  };
  const apply = async (b, weight) => {
    try {
      const r = await api('PATCH', base + b.id, { body: { weight }, ifMatch: b.version });
      toast('Weight of ' + r.url + ' is ' + r.weight + ' (config v' + r.version + ')');
      await reload();
    } catch (e) { failed(e); }
  };
  const remove = async (b) => {
    const ok = await confirmDialog('Remove ' + b.url + '?', h('p', { text: 'It leaves upstream ' + name + ' now; requests in flight finish.' }), 'Remove');
    if (!ok) return;
    try {
      await api('DELETE', base + b.id, { ifMatch: b.version });
      toast('Removed ' + b.url);
      await reload();
    } catch (e) { failed(e); }
  };

  const table = h('table', { 'data-testid': 'backends' },
    h('tr', {}, ['Backend', 'Weight', 'State', 'In flight', 'Req/s', 'Errors', 'p99', 'Actual share', 'Expected share', ''].map((t) => h('th', { text: t }))),
    u.backends.map((b) => {
      const range = h('input', { type: 'range', min: 0, max: Math.max(10, b.weight * 4), value: b.weight, 'data-testid': 'weight-slider', 'aria-label': 'weight of ' + b.url });
      const number = h('output', { class: 'num', 'data-testid': 'weight-value', text: b.weight });
      let timer = null;
      range.addEventListener('input', () => {
        number.textContent = range.value;
        clearTimeout(timer);
        timer = setTimeout(() => showPreview(b, Number(range.value)), 200);
      });
      const cells = {
        state: h('td', {}), inFlight: h('td', { class: 'num' }), rps: h('td', { class: 'num' }), errors: h('td', { class: 'num' }),
        p99: h('td', { class: 'num' }), actual: h('td', { class: 'share' }), expected: h('td', { class: 'share' }),
      };
      rows.set(b.id, cells);
      return h('tr', { 'data-backend': b.url },
        h('td', {}, h('code', { text: b.url })),
        h('td', { class: 'weight' }, range, number),
        cells.state, cells.inFlight, cells.rps, cells.errors, cells.p99, cells.actual, cells.expected,
        h('td', { class: 'actions' },
          h('button', { type: 'button', 'data-testid': 'drain', disabled: b.weight === 0, onclick: () => { range.value = 0; number.textContent = '0'; showPreview(b, 0); } }, 'Drain'),
          h('button', { type: 'button', class: 'plain', 'data-testid': 'remove', onclick: () => remove(b) }, 'Remove')));
    }));

  const historyBox = h('div', { class: 'history', 'data-testid': 'health-history' });
  const url = h('input', { type: 'url', required: true, placeholder: 'http://10.0.0.5:8080', 'data-testid': 'new-backend-url' });
  const weight = h('input', { type: 'number', min: 0, max: 1000, value: 1, 'data-testid': 'new-backend-weight' });
  const addForm = h('form', {
    class: 'row',
    onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        // Against the upstream as shown: a change to it since is a 412.
        const r = await api('POST', base.slice(0, -1), { body: { url: url.value.trim(), weight: Number(weight.value) }, ifMatch: u.version });
        toast('Added ' + r.url + ' (config v' + r.version + ')');
        await reload();
      } catch (e) { failed(e); }
    },
  }, url, weight, h('button', { type: 'submit', 'data-testid': 'add-backend' }, 'Add backend'));

  if (!mount(
    h('section', { class: 'card' },
      h('h2', {}, 'Upstream ', h('span', { 'data-testid': 'upstream-name', text: u.name })),
      h('p', { class: 'muted', text: u.strategy + (u.health_check ? ' · health checked every ' + u.health_check.interval_ms + ' ms' : ' · not health checked') + (u.fail_open ? ' · fail open' : '') }),
      table, preview),
    h('section', { class: 'card' }, h('h2', { text: 'Add a backend' }), addForm),
    h('section', { class: 'card' }, h('h2', { text: 'Health history' }), historyBox),
  )) return;

  const drawHistory = () => {
    historyBox.replaceChildren(...statusNow.backends.map((b) => h('div', { class: 'backend-history' },
      h('h3', {}, h('code', { text: b.url }), ' ', stateBadge(b.state)),
      (b.transitions || []).length
        ? h('ol', { reversed: true }, (b.transitions || []).slice().reverse().map((t) => h('li', {},
          h('time', { text: fmtTime(t.at_unix_ms) }), ' ', stateBadge(t.from), ' → ', stateBadge(t.to), ' ', h('span', { class: 'muted', text: t.reason }))))
        : h('p', { class: 'muted', text: 'No transitions yet.' }))));
  };
  S.onHealth = async () => {
    statusNow = await api('GET', '/admin/upstreams/' + encodeURIComponent(name) + '/health');
    drawHistory();
  };
  S.onLive = () => {
    for (const b of statusNow.backends) {
      const cells = rows.get(b.id);
      if (!cells) continue;
      const t = backendTraffic(name, b.id);
      cells.state.replaceChildren(stateBadge(b.state));
      cells.inFlight.textContent = t ? t.in_flight : b.in_flight;
      cells.rps.textContent = t ? fmtRate(t.rps) : '–';
      cells.errors.textContent = t ? fmtRatio(t.error_ratio) : '–';
      cells.p99.textContent = t ? fmtMs(t.p99_ms) : '–';
      cells.actual.replaceChildren(bar(t ? t.share : 0, 'actual', 'actual-share'), ' ', h('span', { 'data-testid': 'actual-share-text', text: t ? fmtShare(t.share) : '–' }));
      cells.expected.replaceChildren(bar(b.expected_share, 'expected', 'expected-share'), ' ', h('span', { 'data-testid': 'expected-share-text', text: fmtShare(b.expected_share) }));
    }
  };
  drawHistory();
  S.onLive();
}

function summaryText(s) {
  const part = (kind, c) => [['+', c.added], ['~', c.changed], ['−', c.removed]]
    .filter(([, names]) => names.length).map(([sign, names]) => sign + ' ' + kind + ' ' + names.join(', '));
  const all = [...part('route', s.routes), ...part('upstream', s.upstreams)];
  return all.length ? all.join('; ') : 'no change';
}

async function history() {
  const mount = mounter();
  const list = await api('GET', '/admin/revisions?limit=50');
  // A rollback is made against the config this list was read at.
  const seen = list.config_version;
  setVersion(seen);
  const diffBox = h('div', { class: 'diff', 'data-testid': 'diff' });
  const showDiff = async (v) => {
    try {
      const d = await api('GET', '/admin/revisions/' + v + '/diff');
      diffBox.replaceChildren(h('h3', { text: 'Revision ' + d.from + ' → ' + d.to + ': ' + summaryText(d.summary) }),
        h('pre', {}, d.patch.map((op) => op.op + ' ' + op.path + (op.value === undefined ? '' : ' ' + JSON.stringify(op.value)) + '\n')));
    } catch (e) { failed(e); }
  };
  const rollback = async (v) => {
    try {
      // What it would change, from the real rollback run dry.
      const dry = await api('POST', '/admin/revisions/' + v + '/rollback?dry_run=true', { ifMatch: seen });
      const body = h('div', {}, h('p', { text: 'The config becomes what it was at revision ' + v + ', as a new revision.' }),
        h('p', { 'data-testid': 'rollback-summary', text: dry.no_op ? 'It is the live config already: nothing would change.' : 'Changes: ' + summaryText(dry.summary) }),
        dry.traffic.map((t) => h('div', {}, h('strong', { text: t.upstream }), h('ul', {}, t.backends.map((b) => h('li', {}, b.url + ': ' + fmtShare(b.share_before) + ' → ' + fmtShare(b.share_after)))))));
      if (!(await confirmDialog('Roll back to revision ' + v + '?', body, 'Roll back'))) return;
      await api('POST', '/admin/revisions/' + v + '/rollback', { ifMatch: seen, comment: 'rollback to ' + v + ' from the dashboard' });
      toast('Rolled back to revision ' + v + ' (config v' + S.version + ')');
      await reload();
    } catch (e) { failed(e); }
  };
  if (!mount(h('section', { class: 'card' }, h('h2', { text: 'Config history' }),
    h('table', { 'data-testid': 'revisions' }, h('tr', {}, ['Version', 'When', 'Source', 'Change', 'Client', 'Comment', 'Summary', ''].map((t) => h('th', { text: t }))),
      list.items.map((r) => h('tr', { 'data-revision': r.version },
        h('td', { class: 'num', text: r.version }), h('td', { text: fmtTime(r.at_unix_ms) }), h('td', { text: r.source }),
        h('td', {}, h('code', { text: r.endpoint })), h('td', { text: r.client || '–' }), h('td', { text: r.comment || '' }),
        h('td', { text: summaryText(r.summary) }),
        h('td', { class: 'actions' },
          h('button', { type: 'button', class: 'plain', 'data-testid': 'show-diff', onclick: () => showDiff(r.version) }, 'Diff'),
          r.version === seen ? h('span', { class: 'muted', text: 'live' })
            : h('button', { type: 'button', 'data-testid': 'rollback', onclick: () => rollback(r.version) }, 'Roll back')))))),
  h('section', { class: 'card' }, diffBox))) return;
}

// ------------------------------------------------------------ start ------

async function start() {
  try {
    await load();
  } catch (e) {
    if (e.status !== 401) banner('Cannot reach the admin API: ' + e.message, { label: 'Retry', run: start });
    return;
  }
  $('nav').hidden = false;
  $('forget').hidden = !sessionStorage.getItem(TOKEN_KEY);
  await render();
  if (!start.following) {
    start.following = true;
    follow();
  }
}

window.addEventListener('hashchange', () => { $('banner').hidden = true; render(); });
// Typing in a form is an edit in progress: a config change then warns
// instead of redrawing the form under the user's hands.
document.addEventListener('input', (ev) => {
  if (ev.target.closest && ev.target.closest('main form')) S.editing = true;
});
document.addEventListener('DOMContentLoaded', () => {
  $('forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  start();
});
