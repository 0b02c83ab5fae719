// The status page's script. Everything comes over the WebSocket /ws/monitor: subscriptions
// for live events, and named commands (the ops table's `ws` names) for snapshots and buttons.
// It builds DOM nodes and sets textContent only (the Content-Security-Policy forbids inline
// code, and nothing from the daemon is ever parsed as HTML).
'use strict';

const TOKEN_KEY = 'vsm-daemon.token';
const MAX_EVENTS = 200;      // lines kept in the event log
const MAX_POINTS = 120;      // points per sparkline (4 minutes at one sample per 2 s)
const MAX_DETAILS = 50;      // servers whose details (circuit breaker) are fetched per round
const POLL_MS = 2000;
// Panels that appear once the daemon has their route (a 404 hides them).
const PANELS = [
  { card: 'alerts-card', box: 'alerts', path: '/api/v1/alerts', pick: firing },
  { card: 'variety-card', box: 'variety', path: '/api/v1/vsm/variety' },
  { card: 'vsm-card', box: 'vsm', path: '/api/v1/vsm/systems' },
  { card: 'insights-card', box: 'insights', path: '/api/v1/consciousness/insights' },
];

// Of a list of alerts, those firing (a record without a state field counts as firing).
function firing(data) {
  const list = Array.isArray(data) ? data : (data && Array.isArray(data.alerts) ? data.alerts : null);
  if (!list) return data;
  return list.filter((a) => !a || typeof a !== 'object' || !('state' in a) || a.state === 'firing');
}

const $ = (id) => document.getElementById(id);
function el(tag, cls, text) {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined && text !== null) n.textContent = String(text);
  return n;
}

// ---- token --------------------------------------------------------------------------------
function takeFragmentToken() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (!m) return;
  try { sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1])); } catch (_) { /* storage off */ }
  // The token must not stay in the address bar, the history or a bookmark.
  history.replaceState(null, '', location.pathname + location.search);
}
function token() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return ''; }
}

// ---- connection -----------------------------------------------------------------------------
let ws = null;
let nextId = 1;
const pending = new Map();   // id -> callback(envelope)
let backoff = 500;
let pollTimer = null;
let retryTimer = null;
let everOpen = false;

function setLink(text, cls) {
  const l = $('link');
  l.textContent = text;
  l.className = 'pill ' + cls;
}

function showLogin(message) {
  $('login').hidden = false;
  $('main').hidden = true;
  $('login-error').textContent = message || '';
  $('token').focus();
}

function connect() {
  clearTimeout(retryTimer);
  const t = token();
  if (!t) { setLink('needs token', 'pill-off'); showLogin(''); return; }
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = proto + '//' + location.host + '/ws/monitor?token=' + encodeURIComponent(t);
  setLink('connecting', 'pill-off');
  let opened = false;
  try { ws = new WebSocket(url); } catch (_) { retry(); return; }
  ws.onopen = () => { opened = true; everOpen = true; backoff = 500; setLink('live', 'pill-on'); };
  ws.onmessage = (m) => { let v; try { v = JSON.parse(m.data); } catch (_) { return; } onMessage(v); };
  ws.onclose = () => {
    ws = null;
    clearInterval(pollTimer);
    for (const cb of pending.values()) cb({ status: 'error', errors: [{ message: 'connection closed' }] });
    pending.clear();
    // A refused upgrade (bad token) never opens; ask again rather than retry forever.
    if (!opened && !everOpen) { showLogin('No connection: is the token right, and is the daemon running?'); setLink('refused', 'pill-bad'); return; }
    retry();
  };
  ws.onerror = () => { /* onclose follows and decides */ };
}

function retry() {
  const wait = backoff;
  backoff = Math.min(backoff * 2, 15000);
  setLink('reconnecting in ' + Math.round(wait / 1000) + ' s', 'pill-bad');
  retryTimer = setTimeout(connect, wait);
}

function send(command, parameters) {
  return new Promise((resolve) => {
    if (!ws || ws.readyState !== WebSocket.OPEN) { resolve({ status: 'error', errors: [{ message: 'not connected' }] }); return; }
    const id = nextId++;
    pending.set(id, resolve);
    ws.send(JSON.stringify({ id, command, parameters: parameters || {} }));
  });
}
const request = (method, path, body) => send('request', { method, path, body });
const errorText = (env) => (env.errors && env.errors[0] && env.errors[0].message) || 'failed';

function onMessage(v) {
  if (v.type === 'response' && pending.has(v.id)) {
    const cb = pending.get(v.id);
    pending.delete(v.id);
    cb(v);
    return;
  }
  if (v.type === 'connected') { onConnected(v.data || {}); return; }
  if (v.type === 'events_dropped') { addEvent({ type: 'events_dropped', timestamp: v.timestamp, data: v.data }); return; }
  if (v.type && v.type !== 'response') {
    addEvent(v);
    if (v.type.startsWith('mcp_server')) refreshServers(true);
  }
}

function onConnected(data) {
  $('login').hidden = true;
  $('main').hidden = false;
  $('version').textContent = data.version ? 'v' + data.version : '';
  const channels = (data.channels || []).filter((c) => c !== 'logs');
  ws.send(JSON.stringify({ id: nextId++, command: 'subscribe', channels }));
  // A new connection may be a new daemon process: rates start over (its CPU counter did).
  lastSample = null;
  loadHistory();
  probePanels();
  poll();
  clearInterval(pollTimer);
  pollTimer = setInterval(poll, POLL_MS);
}

// ---- daemon: facts and sparklines -------------------------------------------------------------
const series = { rss: [], cpu: [], lat: [] };
let lastSample = null;

function push(name, value) {
  const s = series[name];
  s.push(value);
  if (s.length > MAX_POINTS) s.shift();
  const svg = $('spark-' + name);
  svg.replaceChildren();
  if (s.length < 2) return;
  const max = Math.max(...s) || 1;
  const pts = s.map((y, i) => (i * 120 / (s.length - 1)).toFixed(1) + ',' + (31 - 30 * y / max).toFixed(1));
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  line.setAttribute('points', pts.join(' '));
  svg.appendChild(line);
}

function bytes(n) {
  if (n >= 1 << 30) return (n / (1 << 30)).toFixed(2) + ' GiB';
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(2) + ' MiB';
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + ' KiB';
  return n + ' B';
}
function duration(s) {
  if (s === null || s === undefined) return '–';
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor(s % 3600 / 60) + ' min';
  return Math.floor(s / 86400) + ' d ' + Math.floor(s % 86400 / 3600) + ' h';
}
function facts(box, pairs) {
  box.replaceChildren(...pairs.map(([k, v]) => { const s = el('span', null, k + ' '); s.appendChild(el('b', null, v)); return s; }));
}

async function poll() {
  const [status, perf] = await Promise.all([send('status', { detailed: true }), send('get_performance_metrics')]);
  if (status.status === 'success') {
    const d = status.data.daemon || {};
    const lp = status.data.loop || {};
    const m = status.data.mcp_servers || {};
    facts($('facts'), [['up', duration(d.uptime_seconds)], ['pid', d.pid], ['listen', d.http_listen || '–']]);
    facts($('daemon-facts'), [['config', d.config_source], ['state dir', d.state_dir], ['open fds', lp.open_fds],
      ['connections', lp.connections], ['timers', lp.timers_armed], ['servers active', (m.active_count || 0) + ' / ' + (m.total_registered || 0)]]);
  }
  if (perf.status === 'success') sample(perf.data);
  refreshServers(false);
}

function sample(p) {
  const proc = p.process || {};
  const routes = ((p.requests || {}).http || {}).routes || {};
  let count = 0, sum = 0;
  for (const r of Object.values(routes)) { count += (r.latency || {}).count || 0; sum += (r.latency || {}).sum_seconds || 0; }
  const now = { t: performance.now(), cpu: proc.cpu_seconds || 0, count, sum };
  push('rss', proc.rss_bytes || 0);
  $('rss-now').textContent = bytes(proc.rss_bytes || 0);
  if (lastSample) {
    const dt = (now.t - lastSample.t) / 1000;
    const cpu = dt > 0 ? Math.max(0, 100 * (now.cpu - lastSample.cpu) / dt) : 0;
    push('cpu', cpu);
    $('cpu-now').textContent = cpu.toFixed(1) + ' %';
    const dn = now.count - lastSample.count;
    // Mean over the interval, from the cumulative histograms (our own polls included).
    const lat = dn > 0 ? 1000 * (now.sum - lastSample.sum) / dn : 0;
    push('lat', lat);
    $('lat-now').textContent = dn > 0 ? lat.toFixed(2) + ' ms' : 'no requests';
  }
  lastSample = now;
}

// ---- servers ------------------------------------------------------------------------------------
const details = new Map();   // id -> mcp_get_server data
let detailRound = 0;

async function refreshServers(withDetails) {
  const env = await send('mcp_list_servers', { status: 'all' });
  if (env.status !== 'success') return;
  const servers = env.data.servers || [];
  if (withDetails || detailRound++ % 5 === 0) {
    await Promise.all(servers.slice(0, MAX_DETAILS).map(async (s) => {
      const d = await send('mcp_get_server', { id: s.id });
      if (d.status === 'success') details.set(s.id, d.data);
    }));
  }
  renderServers(servers);
}

function renderServers(servers) {
  $('server-count').textContent = servers.length ? '(' + servers.length + ')' : '';
  $('no-servers').hidden = servers.length > 0;
  const rows = servers.map((s) => {
    const tr = el('tr');
    tr.dataset.server = s.id;
    tr.appendChild(el('td', null, s.id));
    const st = el('td');
    st.appendChild(el('span', 'state s-' + s.status, s.status));
    tr.appendChild(st);
    tr.appendChild(el('td', 'num', s.status === 'active' || s.status === 'degraded' ? duration(s.uptime_seconds) : '–'));
    tr.appendChild(el('td', 'num', s.restarts));
    tr.appendChild(el('td', 'num', s.tools));
    tr.appendChild(el('td', 'num', s.pid || '–'));
    const cb = (details.get(s.id) || {}).circuit_breaker;
    const open = (cb && cb.open) || s.status === 'failed';
    tr.appendChild(el('td', open ? 'breaker-open' : null,
      open ? 'open' : cb ? 'closed (' + (cb.recent_failures || 0) + ' recent failures)' : 'closed'));
    const actions = el('td');
    const running = !['stopped', 'failed', 'stopping'].includes(s.status);
    for (const [name, enabled] of [['start', !running], ['stop', running], ['restart', running], ['reset', open]]) {
      const b = el('button', null, name);
      b.type = 'button';
      b.dataset.action = name;
      b.disabled = !enabled;
      b.addEventListener('click', () => act(name, s.id, b));
      actions.appendChild(b);
    }
    tr.appendChild(actions);
    return tr;
  });
  $('servers').tBodies[0].replaceChildren(...rows);
}

async function act(name, id, button) {
  button.disabled = true;
  $('action-error').textContent = '';
  const env = await send('mcp_' + name + '_server', { id });
  if (env.status !== 'success') $('action-error').textContent = name + ' ' + id + ': ' + errorText(env);
  refreshServers(true);
}

// ---- events ------------------------------------------------------------------------------------
function summary(e) {
  const d = e.data || {};
  if (e.type === 'mcp_server_status_change') return d.server_id + ': ' + d.old_status + ' → ' + d.new_status + (d.reason ? ' (' + d.reason + ')' : '');
  if (e.type === 'events_dropped') return d.count + ' events lost (this page fell behind)';
  const parts = [];
  for (const [k, v] of Object.entries(d)) {
    if (parts.length >= 6) break;
    if (v !== null && typeof v !== 'object') parts.push(k + '=' + v);
  }
  return parts.join(' ');
}

function addEvent(e, atEnd) {
  const li = el('li');
  const when = e.timestamp ? new Date(e.timestamp) : new Date();
  const time = el('time', null, when.toLocaleTimeString());
  time.dateTime = when.toISOString();
  li.appendChild(time);
  li.appendChild(el('span', 'type', e.type));
  li.appendChild(el('span', null, summary(e)));
  const list = $('events');
  if (atEnd) list.appendChild(li); else list.insertBefore(li, list.firstChild);
  while (list.children.length > MAX_EVENTS) list.removeChild(list.lastChild);
}

async function loadHistory() {
  const env = await send('get_events', { limit: 50 });
  if (env.status !== 'success') return;
  $('events').replaceChildren();
  for (const e of (env.data.events || []).slice().reverse()) addEvent(e, true);
}

// ---- panels that appear when their data exists -------------------------------------------------
function render(value, depth) {
  if (Array.isArray(value)) {
    if (value.length === 0) return el('p', 'muted', 'none');
    const objects = value.filter((v) => v && typeof v === 'object' && !Array.isArray(v));
    if (objects.length === value.length) {
      const cols = [];
      for (const o of objects.slice(0, 50)) for (const [k, v] of Object.entries(o)) if (cols.length < 7 && !cols.includes(k) && (v === null || typeof v !== 'object')) cols.push(k);
      const table = el('table');
      const head = el('tr');
      for (const c of cols) head.appendChild(el('th', null, c));
      table.appendChild(el('thead')).appendChild(head);
      const body = el('tbody');
      for (const o of objects.slice(0, 50)) { const tr = el('tr'); for (const c of cols) tr.appendChild(el('td', null, o[c] ?? '')); body.appendChild(tr); }
      table.appendChild(body);
      return table;
    }
    return el('p', null, value.slice(0, 50).join(', '));
  }
  if (value && typeof value === 'object') {
    const dl = el('dl', 'kv');
    for (const [k, v] of Object.entries(value).slice(0, 30)) {
      dl.appendChild(el('dt', null, k));
      const dd = el('dd');
      if (v && typeof v === 'object' && depth < 2) dd.appendChild(render(v, depth + 1));
      else dd.textContent = v && typeof v === 'object' ? JSON.stringify(v).slice(0, 200) : String(v);
      dl.appendChild(dd);
    }
    return dl;
  }
  return el('p', null, value);
}

async function probePanels() {
  for (const p of PANELS) {
    const env = await request('GET', p.path);
    const code = env.errors && env.errors[0] && env.errors[0].code;
    const card = $(p.card);
    if (env.status !== 'success' || code === 'not_found') { card.hidden = true; continue; }
    card.hidden = false;
    $(p.box).replaceChildren(render(p.pick ? p.pick(env.data) : env.data, 0));
  }
}
setInterval(() => { if (ws && ws.readyState === WebSocket.OPEN) probePanels(); }, 15000);

// ---- start ---------------------------------------------------------------------------------------
document.addEventListener('DOMContentLoaded', () => {
  takeFragmentToken();
  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token').value.trim();
    if (!t) return;
    try { sessionStorage.setItem(TOKEN_KEY, t); } catch (_) { /* storage off */ }
    $('token').value = '';
    everOpen = false;
    connect();
  });
  connect();
});
