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
// Panels that appear once the daemon has their route (a 404 hides them). Alerts and declared
// checks have their own panels below.
const PANELS = [
  { card: 'variety-card', box: 'variety', path: '/api/v1/vsm/variety' },
  { card: 'vsm-card', box: 'vsm', path: '/api/v1/vsm/systems' },
  { card: 'insights-card', box: 'insights', path: '/api/v1/consciousness/insights' },
];
const MAX_ROWS = 100;        // rows per alerts or checks table
const SLOW_MS = 15000;       // alerts, checks and the generic panels are polled this often

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
    if (ALERT_EVENT.test(v.type)) onAlertEvent(v.data || {});
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
  slowRound();
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
// Replaces a table body's rows and keeps the keyboard focus on the same button (same row key,
// same action) when it was inside: the tables are rebuilt every few seconds.
function replaceRows(table, key, rows) {
  const body = table.tBodies[0];
  const f = document.activeElement;
  const row = f && body.contains(f) ? f.closest('tr') : null;
  const was = row && f.dataset.action ? [row.dataset[key], f.dataset.action] : null;
  body.replaceChildren(...rows);
  if (!was) return;
  for (const tr of body.rows) {
    if (tr.dataset[key] !== was[0]) continue;
    const b = tr.querySelector('button[data-action="' + was[1] + '"]');
    if (b && !b.disabled) b.focus();
  }
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
  // Only local work: keeps the "since" and "last run" columns current between fetches.
  renderAlerts();
  renderChecks();
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
  replaceRows($('servers'), 'server', rows);
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
  if (ALERT_EVENT.test(e.type)) {
    const head = e.type.endsWith('_resolved') ? 'resolved' : 'raised (' + (d.severity || '?') + ')';
    // A rule usually ends with its metric (performance:memory_usage_percent): say it once.
    const what = String(d.rule).endsWith(':' + d.metric) ? d.rule : d.rule + ': ' + d.metric;
    return head + ' ' + what + ' = ' + num(d.current_value) + vs(d.threshold) +
      (d.trend ? ', ' + arrow(d.trend) : '') + (d.message ? ' · ' + d.message : '');
  }
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
  if (ALERT_EVENT.test(e.type)) li.className = e.type.endsWith('_resolved') ? 'ev-resolved' : 'ev-' + ((e.data || {}).severity || 'warning');
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
    $(p.box).replaceChildren(render(env.data, 0));
  }
}
function slowRound() {
  probePanels();
  refreshAlerts();
  refreshChecks();
}
setInterval(() => { if (ws && ws.readyState === WebSocket.OPEN) slowRound(); }, SLOW_MS);

// ---- alerts -------------------------------------------------------------------------------------
// performance_alert, health_alert, security_alert and their *_resolved.
const ALERT_EVENT = /^[a-z]+_alert(_resolved)?$/;
const SEVERITY_RANK = { critical: 0, warning: 1, info: 2 };
const alerts = new Map();    // id -> record, from get_alerts and from live events
let alertsLoaded = false;

function num(v) {
  if (v === null || v === undefined || v === '') return '–';
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  return String(Math.round(n * 100) / 100);
}
const vs = (t) => (t === null || t === undefined ? '' : ' vs ' + num(t));
const ARROWS = { rising: '↑ rising', falling: '↓ falling', stable: '→ stable' };
const arrow = (t) => ARROWS[t] || String(t || '');
function ago(ts) {
  const t = Date.parse(ts);
  if (!Number.isFinite(t)) return '–';
  return duration(Math.max(0, Math.round((Date.now() - t) / 1000))) + ' ago';
}
function timeCell(ts) {
  const td = el('td', 'num');
  if (!ts) { td.textContent = '–'; return td; }
  const t = el('time', null, ago(ts));
  t.dateTime = ts;
  t.title = new Date(ts).toLocaleString();
  td.appendChild(t);
  return td;
}
function badge(cls, text) {
  const td = el('td');
  td.appendChild(el('span', cls, text));
  return td;
}

// An event carries the whole record: the table changes at once, then the list is fetched again
// (an ack or another alert may have changed meanwhile).
function onAlertEvent(a) {
  if (a && typeof a.id === 'string') {
    alerts.set(a.id, a);
    alertsLoaded = true;
    renderAlerts();
  }
  refreshAlerts();
  if (a && typeof a.rule === 'string' && a.rule.startsWith('check:')) refreshChecks();
}

async function refreshAlerts() {
  const env = await send('get_alerts', {});
  if (env.status !== 'success') return;
  alerts.clear();
  for (const a of env.data.alerts || []) if (a && typeof a.id === 'string') alerts.set(a.id, a);
  alertsLoaded = true;
  renderAlerts();
}

function renderAlerts() {
  if (!alertsLoaded) return;
  $('alerts-card').hidden = false;
  const all = [...alerts.values()];
  const firing = all.filter((a) => a.state !== 'resolved').sort((a, b) =>
    (SEVERITY_RANK[a.severity] ?? 3) - (SEVERITY_RANK[b.severity] ?? 3) || String(b.last_seen).localeCompare(String(a.last_seen)));
  const resolved = all.filter((a) => a.state === 'resolved').sort((a, b) => String(b.resolved_at).localeCompare(String(a.resolved_at)));
  const unacked = firing.filter((a) => !a.acked).length;
  $('alert-count').textContent = firing.length ? '(' + firing.length + ' firing' + (unacked ? ', ' + unacked + ' not acked' : '') + ')' : '';
  $('no-alerts').hidden = firing.length > 0;
  $('alerts').hidden = firing.length === 0;
  replaceRows($('alerts'), 'alert', firing.slice(0, MAX_ROWS).map((a) => {
    const tr = el('tr', a.acked ? 'acked' : null);
    tr.dataset.alert = a.id;
    tr.dataset.rule = a.rule;
    tr.appendChild(badge('sev sev-' + a.severity, a.severity));
    const rule = el('td', null, a.rule);
    if (a.message) rule.title = a.message;
    tr.appendChild(rule);
    tr.appendChild(el('td', null, a.metric));
    tr.appendChild(el('td', 'num', num(a.current_value) + vs(a.threshold)));
    tr.appendChild(el('td', 'trend t-' + a.trend, arrow(a.trend)));
    tr.appendChild(timeCell(a.first_seen));
    tr.appendChild(el('td', 'num', a.count));
    tr.appendChild(el('td', 'ack-state', a.acked ? 'yes' : 'no'));
    const cell = el('td');
    const b = el('button', null, 'ack');
    b.type = 'button';
    b.dataset.action = 'ack';
    b.disabled = !!a.acked;
    b.setAttribute('aria-label', 'acknowledge alert ' + a.id + ' (' + a.rule + ')');
    b.addEventListener('click', () => ack(a.id, b));
    cell.appendChild(b);
    tr.appendChild(cell);
    return tr;
  }));
  $('resolved-box').hidden = resolved.length === 0;
  $('resolved-count').textContent = '(' + resolved.length + ')';
  $('resolved').tBodies[0].replaceChildren(...resolved.slice(0, MAX_ROWS).map((a) => {
    const tr = el('tr');
    tr.dataset.alert = a.id;
    tr.appendChild(badge('sev sev-' + a.severity, a.severity));
    tr.appendChild(el('td', null, a.rule));
    tr.appendChild(el('td', null, a.metric));
    tr.appendChild(el('td', 'num', num(a.current_value) + vs(a.threshold)));
    tr.appendChild(timeCell(a.first_seen));
    tr.appendChild(timeCell(a.resolved_at));
    tr.appendChild(el('td', 'num', a.count));
    tr.appendChild(el('td', null, a.acked ? 'yes' : 'no'));
    return tr;
  }));
}

async function ack(id, button) {
  button.disabled = true;
  $('alert-error').textContent = '';
  const env = await send('ack_alert', { id });
  if (env.status === 'success' && env.data && env.data.alert) alerts.set(id, env.data.alert);
  else $('alert-error').textContent = 'ack ' + id + ': ' + errorText(env);
  renderAlerts();
  refreshAlerts();
}

// ---- declared checks ----------------------------------------------------------------------------
let checks = null;           // the last checks_list answer's list
const runningHere = new Set();  // checks whose "run now" this page is waiting for

async function refreshChecks() {
  const env = await send('checks_list', {});
  if (env.status !== 'success') return;
  checks = Array.isArray(env.data.checks) ? env.data.checks : [];
  renderChecks();
}

function renderChecks() {
  if (!checks) return;
  $('checks-card').hidden = false;
  const down = checks.filter((c) => c.status === 'down').length;
  $('check-count').textContent = checks.length ? '(' + checks.length + (down ? ', ' + down + ' down' : '') + ')' : '';
  $('no-checks').hidden = checks.length > 0;
  $('checks').hidden = checks.length === 0;
  replaceRows($('checks'), 'check', checks.slice(0, MAX_ROWS).map((c) => {
    const tr = el('tr');
    tr.dataset.check = c.name;
    tr.appendChild(el('td', null, c.name));
    tr.appendChild(el('td', null, c.kind));
    tr.appendChild(el('td', 'target', c.target));
    tr.appendChild(badge('state c-' + c.status, c.status));
    tr.appendChild(timeCell(c.last_run));
    tr.appendChild(el('td', 'num runs', c.runs));
    const msg = el('td', 'message', c.message || '');
    if (c.consecutive_failures > 1) msg.textContent += ' (' + c.consecutive_failures + ' failures in a row)';
    tr.appendChild(msg);
    const cell = el('td');
    const busy = runningHere.has(c.name);
    const b = el('button', null, busy ? 'running…' : 'run now');
    b.type = 'button';
    b.dataset.action = 'run';
    b.disabled = busy;
    b.setAttribute('aria-label', 'run check ' + c.name + ' now');
    b.addEventListener('click', () => runCheck(c.name));
    cell.appendChild(b);
    tr.appendChild(cell);
    return tr;
  }));
}

async function runCheck(name) {
  runningHere.add(name);
  $('check-error').textContent = '';
  renderChecks();
  // Answers when the run ends (at most the check's timeout).
  const env = await send('checks_run', { id: name });
  runningHere.delete(name);
  if (env.status !== 'success') $('check-error').textContent = 'run ' + name + ': ' + errorText(env);
  await refreshChecks();
  refreshAlerts();
}

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
