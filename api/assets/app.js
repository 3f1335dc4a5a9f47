// SensorFleet web dashboard.
//
// Plain browser JavaScript, no framework and no build step: the sensorfleet binary
// embeds this file and serves it at /app.js. It polls the REST API for the slow-moving
// views (stats, devices, alerts), streams readings and alerts over one WebSocket, and
// draws the live chart itself on a <canvas>.
//
// Robustness rules, because an operator leaves this page open for days:
// - every API answer may be an error ({"error","code"}) or missing fields: show it in
//   the error bar and keep the last good view;
// - all data is written with textContent, never innerHTML (device ids and locations
//   come from devices in the field);
// - memory is bounded: chart points per field, alerts kept, WebSocket backoff.
(() => {
  'use strict';

  const POLL_MS = 5000;
  const MAX_POINTS_PER_FIELD = 20000; // 1 h of a reading every 180 ms
  const MAX_ALERTS = 200;
  const WS_BACKOFF_MIN_MS = 500;
  const WS_BACKOFF_MAX_MS = 15000;
  const HISTORY_HOURS = 1;
  const OFFLINE_AFTER_MS = 5 * 60 * 1000;

  // The field a device type is usually watched by; anything else falls back to the
  // first non-meta field.
  const MAIN_FIELD = {
    temperature_sensor: 'temperature_celsius',
    humidity_sensor: 'humidity_percent',
    gps_sensor: 'speed_kmh',
    gps_tracker: 'speed_kmh',
    gps: 'speed_kmh',
    motion_sensor: 'motion',
  };

  // Keys of /latest that describe the reading rather than measure something.
  // `main_field` names the field the moving average and window are of: it is shown
  // through their units, not as a value of its own.
  const LATEST_HEADER_KEYS = new Set([
    'device_id', 'device_type', 'location', 'timestamp', 'health_score', 'main_field',
  ]);
  // Legacy aliases of /latest (from the original design) that repeat a real field.
  const LATEST_ALIASES = { temperature: 'temperature_celsius', humidity: 'humidity_percent' };

  const $ = (sel) => document.querySelector(sel);

  // ---------------------------------------------------------------- state

  const state = {
    devices: new Map(),        // device_id -> device from /api/devices (+ live last_seen)
    deviceOrder: [],
    filter: '',
    selected: null,            // device_id
    selectGen: 0,              // bumps on every selection, so late answers are ignored
    series: new Map(),         // field -> [{t, v}] ascending by t
    field: null,               // field plotted
    fieldChosenByUser: false,
    rangeSec: 900,
    latest: null,              // object shown in the latest panel
    pending: null,             // readings received while history loads
    alerts: [],                // newest first
    alertsActiveOnly: false,
    ws: null,
    wsGen: 0,
    wsAttempt: 0,
    wsTimer: null,
  };

  // ---------------------------------------------------------------- helpers

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function isNum(v) {
    return typeof v === 'number' && Number.isFinite(v);
  }

  function parseTime(s) {
    if (s === null || s === undefined || s === '') return NaN;
    if (typeof s === 'number') return s > 1e12 ? s : s * 1000;
    return Date.parse(s);
  }

  function fmtNumber(v) {
    if (!isNum(v)) return '–';
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    if (Number.isInteger(v)) return v.toLocaleString('en-US');
    return v.toLocaleString('en-US', { maximumFractionDigits: a >= 100 ? 1 : 2 });
  }

  function unitOf(field) {
    if (!field) return '';
    if (field === 'moving_average') return unitOf(mainFieldOf(selectedType()));
    if (field.endsWith('_celsius')) return '°C';
    if (field.endsWith('_fahrenheit')) return '°F';
    if (field.endsWith('_percent') || field.endsWith('battery_level')) return '%';
    if (field.endsWith('_kmh')) return 'km/h';
    if (field.endsWith('signal_strength')) return 'dBm';
    if (field === 'dew_point') return '°C';
    return '';
  }

  function fmtValue(field, v) {
    if (v === null || v === undefined) return '–';
    if (typeof v === 'boolean') return v ? 'yes' : 'no';
    if (isNum(v)) {
      const u = unitOf(field);
      return u ? `${fmtNumber(v)} ${u}` : fmtNumber(v);
    }
    if (field === 'window' && typeof v === 'object') {
      // The window statistics of the main field: mean, then the spread, then the count.
      const u = unitOf('moving_average');
      const n = (x) => (isNum(x) ? fmtNumber(x) : '–');
      return `${n(v.mean)}${u ? ' ' + u : ''} (${n(v.min)}–${n(v.max)}, σ ${n(v.stddev)}, n ${n(v.count)})`;
    }
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }

  // "temperature_celsius" -> "Temperature", "meta_battery_level" -> "Battery level":
  // the unit, shown beside the value, is dropped from the name.
  function prettyField(field) {
    const words = String(field)
      .replace(/^meta_/, '')
      .replace(/_(celsius|fahrenheit|percent|kmh)$/, '')
      .replace(/_/g, ' ');
    return capitalise(words);
  }

  function prettyType(t) {
    if (!t) return 'Unknown type';
    return capitalise(String(t).replace(/_/g, ' ').replace(/\bgps\b/i, 'GPS'));
  }

  function capitalise(s) {
    return s ? s[0].toUpperCase() + s.slice(1) : s;
  }

  function relTime(ms) {
    if (!Number.isFinite(ms)) return 'never';
    const s = Math.round((Date.now() - ms) / 1000);
    if (s < 2) return 'just now';
    if (s < 60) return `${s} s ago`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ago`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h} h ago`;
    return `${Math.floor(h / 24)} d ago`;
  }

  function clockTime(ms, withSeconds = true) {
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, '0');
    return withSeconds
      ? `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
      : `${p(d.getHours())}:${p(d.getMinutes())}`;
  }

  function mainFieldOf(type) {
    return MAIN_FIELD[type] || null;
  }

  function selectedType() {
    const d = state.selected ? state.devices.get(state.selected) : null;
    return (d && d.device_type) || (state.latest && state.latest.device_type) || null;
  }

  function healthClass(h) {
    if (!isNum(h)) return 'h-none';
    if (h >= 0.8) return 'h-good';
    if (h >= 0.5) return 'h-warn';
    return 'h-bad';
  }

  // Fields to plot: numbers, and booleans (motion) as 0/1.
  function numericValue(v) {
    if (isNum(v)) return v;
    if (typeof v === 'boolean') return v ? 1 : 0;
    return null;
  }

  // ---------------------------------------------------------------- errors

  let errorTimer = null;

  function showError(msg) {
    const bar = $('#error-bar');
    $('#error-text').textContent = msg;
    bar.hidden = false;
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => { bar.hidden = true; }, 10000);
  }

  class ApiError extends Error {
    constructor(message, code, status) {
      super(message);
      this.code = code;
      this.status = status;
    }
  }

  // fetch + JSON, turning every failure (network, HTTP status, {"error"} body, bad
  // JSON) into an ApiError with a readable message.
  async function api(path, opts = {}) {
    const method = opts.method || 'GET';
    const headers = { Accept: 'application/json' };
    const token = apiToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    let res;
    try {
      res = await fetch(path, { method, headers, cache: 'no-store' });
    } catch (e) {
      throw new ApiError('API unreachable', 'network', 0);
    }
    const text = await res.text().catch(() => '');
    let body = null;
    if (text) {
      try { body = JSON.parse(text); } catch (e) { body = null; }
    }
    if (!res.ok) {
      const msg = body && typeof body.error === 'string' ? body.error : `HTTP ${res.status}`;
      if (res.status === 401 && !opts.retried && await signIn(msg)) {
        return api(path, { ...opts, retried: true });
      }
      const code = body && body.code ? body.code : String(res.status);
      throw new ApiError(msg, code, res.status);
    }
    if (text && body === null) throw new ApiError('answer is not JSON', 'bad_json', res.status);
    return body;
  }

  // A server with auth on (--api-keys, --api-token, JWTs) wants a credential on every
  // request but the page's own files. Asked for once, kept for this tab only, sent as
  // a bearer header (never a cookie, so other sites cannot use it).
  const TOKEN_KEY = 'sensorfleet-api-token';
  function apiToken() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }
  function askToken(why) {
    const t = window.prompt(`${why}\n\nAPI key or token:`, '');
    if (!t) return false;
    try { sessionStorage.setItem(TOKEN_KEY, t.trim()); } catch (e) { return false; }
    return true;
  }
  // Several requests may be refused at once: they share one question, and a user who
  // declines is not asked again until the page is reloaded.
  let signingIn = null;
  let declined = false;
  function signIn(why) {
    if (declined) return Promise.resolve(false);
    if (!signingIn) {
      signingIn = Promise.resolve().then(() => {
        const ok = askToken(why);
        declined = !ok;
        signingIn = null;
        return ok;
      });
    }
    return signingIn;
  }
  // Browsers cannot put headers on a WebSocket: the credential travels as a subprotocol
  // next to the feed's own, which the server answers with.
  function wsProtocols() {
    const token = apiToken();
    return token ? ['sensorfleet', `bearer.${token}`] : ['sensorfleet'];
  }

  function reportError(what, e) {
    const code = e && e.code && e.code !== 'network' ? ` (${e.code})` : '';
    showError(`${what}: ${e && e.message ? e.message : e}${code}`);
  }

  function markUpdated() {
    $('#last-updated').textContent = `updated ${clockTime(Date.now())}`;
  }

  // ---------------------------------------------------------------- stats

  async function refreshStats() {
    let s;
    try {
      s = await api('/api/dashboard/stats');
    } catch (e) {
      reportError('Stats', e);
      return;
    }
    if (!s || typeof s !== 'object') return;
    $('#stat-active-devices').textContent = isNum(s.active_devices) ? fmtNumber(s.active_devices) : '–';
    $('#stat-total-alerts').textContent = isNum(s.total_alerts) ? fmtNumber(s.total_alerts) : '–';
    $('#stat-avg-health').textContent = isNum(s.average_health_score)
      ? `${Math.round(s.average_health_score * 100)}%` : '–';
    const status = typeof s.system_status === 'string' ? s.system_status : 'unknown';
    const badge = $('#stat-status');
    badge.textContent = status;
    badge.dataset.status = status;
    markUpdated();
  }

  // ---------------------------------------------------------------- devices

  async function refreshDevices() {
    let body;
    try {
      body = await api('/api/devices');
    } catch (e) {
      reportError('Devices', e);
      return;
    }
    const list = body && Array.isArray(body.devices) ? body.devices : [];
    const next = new Map();
    const order = [];
    for (const d of list) {
      if (!d || typeof d.device_id !== 'string') continue;
      const prev = state.devices.get(d.device_id);
      const dev = { ...d, lastSeenMs: parseTime(d.last_seen) };
      // A live reading may be newer than the server's last poll: keep the newest.
      if (prev && Number.isFinite(prev.lastSeenMs)
          && !(dev.lastSeenMs >= prev.lastSeenMs)) dev.lastSeenMs = prev.lastSeenMs;
      next.set(d.device_id, dev);
      order.push(d.device_id);
    }
    state.devices = next;
    state.deviceOrder = order;
    renderDevices();
    renderDetailHeader();
    markUpdated();
    // First load: show something useful instead of an empty chart.
    if (!state.selected && order.length > 0) {
      const fromHash = deviceFromHash();
      selectDevice(fromHash && next.has(fromHash) ? fromHash : order[0]);
    }
  }

  function deviceMatches(d, f) {
    if (!f) return true;
    return [d.device_id, d.device_type, d.location]
      .some((x) => typeof x === 'string' && x.toLowerCase().includes(f));
  }

  function buildRow(id) {
    const tr = el('tr');
    tr.dataset.deviceId = id;
    tr.tabIndex = 0;
    const tdDev = el('td', 'c-device');
    tdDev.append(el('div', 'dev-id'), el('div', 'dev-sub'));
    const tdHealth = el('td', 'c-health');
    const cell = el('div', 'hcell');
    const bar = el('div', 'hbar');
    bar.append(el('div', 'hbar-fill'));
    cell.append(bar, el('span', 'hval'));
    tdHealth.append(cell);
    const tdSeen = el('td', 'c-seen');
    const tdStatus = el('td', 'c-status');
    tdStatus.append(el('span', 'pill'));
    tr.append(tdDev, tdHealth, tdSeen, tdStatus);
    return tr;
  }

  function updateRow(tr, d) {
    tr.querySelector('.dev-id').textContent = d.device_id;
    const sub = d.location ? `${prettyType(d.device_type)} · ${d.location}` : prettyType(d.device_type);
    tr.querySelector('.dev-sub').textContent = sub;
    tr.querySelector('.c-device').title = `${d.device_id}\n${sub}`;
    const h = isNum(d.health_score) ? Math.max(0, Math.min(1, d.health_score)) : null;
    const fill = tr.querySelector('.hbar-fill');
    fill.style.width = h === null ? '0%' : `${Math.round(h * 100)}%`;
    tr.querySelector('.hbar').className = `hbar ${healthClass(h)}`;
    tr.querySelector('.hval').textContent = h === null ? '–' : `${Math.round(h * 100)}%`;
    const seen = tr.querySelector('.c-seen');
    seen.textContent = relTime(d.lastSeenMs);
    seen.title = Number.isFinite(d.lastSeenMs) ? new Date(d.lastSeenMs).toISOString() : '';
    const status = deviceStatus(d);
    const pill = tr.querySelector('.pill');
    pill.textContent = status;
    pill.className = `pill s-${status}`;
    tr.classList.toggle('selected', d.device_id === state.selected);
    tr.setAttribute('aria-selected', d.device_id === state.selected ? 'true' : 'false');
  }

  // The server's word when it gives one; otherwise judged from the last reading with
  // the design's default offlineAfter of 5 minutes.
  function deviceStatus(d) {
    if (['online', 'offline', 'unknown'].includes(d.status)) return d.status;
    if (!Number.isFinite(d.lastSeenMs)) return 'unknown';
    return Date.now() - d.lastSeenMs < OFFLINE_AFTER_MS ? 'online' : 'offline';
  }

  // Keyed update: rows are reused, so focus, hover and scroll survive a refresh.
  function renderDevices() {
    const tbody = $('#devices-table tbody');
    const existing = new Map();
    for (const tr of tbody.rows) existing.set(tr.dataset.deviceId, tr);
    let shown = 0;
    let cursor = tbody.firstElementChild;
    for (const id of state.deviceOrder) {
      const d = state.devices.get(id);
      if (!deviceMatches(d, state.filter)) continue;
      let tr = existing.get(id);
      if (tr) existing.delete(id); else tr = buildRow(id);
      updateRow(tr, d);
      if (tr !== cursor) tbody.insertBefore(tr, cursor);
      else cursor = cursor.nextElementSibling;
      shown += 1;
    }
    for (const tr of existing.values()) tr.remove();
    const total = state.deviceOrder.length;
    $('#devices-count').textContent = total ? (shown === total ? `${total}` : `${shown} / ${total}`) : '';
    const empty = $('#devices-empty');
    empty.hidden = shown > 0;
    empty.textContent = total === 0 ? 'No devices have reported yet.' : 'No device matches the filter.';
  }

  // Only the relative times move between polls: touch just those cells.
  function tickRelativeTimes() {
    for (const tr of $('#devices-table tbody').rows) {
      const d = state.devices.get(tr.dataset.deviceId);
      if (d) tr.querySelector('.c-seen').textContent = relTime(d.lastSeenMs);
    }
    for (const li of $('#alerts-list').children) {
      const t = li.querySelector('.a-time');
      if (t && t.dataset.ms) t.textContent = relTime(Number(t.dataset.ms));
    }
    if (state.latest) {
      const ts = $('#latest-panel .latest-ts');
      if (ts && ts.dataset.ms) ts.textContent = relTime(Number(ts.dataset.ms));
    }
  }

  function deviceFromHash() {
    const m = /(?:^#|&)device=([^&]+)/.exec(location.hash);
    if (!m) return null;
    try { return decodeURIComponent(m[1]); } catch (e) { return null; }
  }

  // ---------------------------------------------------------------- selection

  function selectDevice(id) {
    if (!id || id === state.selected) return;
    state.selected = id;
    state.selectGen += 1;
    const gen = state.selectGen;
    state.series = new Map();
    state.field = null;
    state.fieldChosenByUser = false;
    state.latest = null;
    state.pending = [];
    try { history.replaceState(null, '', `#device=${encodeURIComponent(id)}`); } catch (e) { /* file:// etc. */ }

    for (const tr of $('#devices-table tbody').rows) {
      const on = tr.dataset.deviceId === id;
      tr.classList.toggle('selected', on);
      tr.setAttribute('aria-selected', on ? 'true' : 'false');
    }
    renderDetailHeader();
    renderFieldSelect();
    renderLatest();
    scheduleDraw();

    // Subscribe first (readings are buffered while history loads), then load history,
    // so that no reading falls between the two. A socket that does not open soon does
    // not hold the history back.
    const opened = connectWs();
    Promise.race([opened, new Promise((r) => setTimeout(r, 1500))])
      .then(() => loadDevice(id, gen))
      .catch((e) => console.error(e));
  }

  function renderDetailHeader() {
    const id = state.selected;
    const d = id ? state.devices.get(id) : null;
    const type = (d && d.device_type) || (state.latest && state.latest.device_type);
    const loc = (d && d.location) || (state.latest && state.latest.location);
    $('#detail-device').textContent = id || 'No device selected';
    $('#detail-device').title = id || '';
    $('#detail-meta').textContent = id && (type || loc)
      ? `${prettyType(type)} · ${loc || 'no location'}` : '';
  }

  async function loadDevice(id, gen) {
    const enc = encodeURIComponent(id);
    const [hist, latest] = await Promise.allSettled([
      api(`/api/device/${enc}/history?hours=${HISTORY_HOURS}`),
      api(`/api/device/${enc}/latest`),
    ]);
    if (gen !== state.selectGen) return; // another device was picked meanwhile

    if (hist.status === 'fulfilled') {
      ingestHistory(hist.value);
    } else {
      reportError(`History of ${id}`, hist.reason);
    }
    if (latest.status === 'fulfilled' && latest.value && typeof latest.value === 'object') {
      state.latest = latest.value;
    } else if (latest.status === 'rejected' && latest.reason && latest.reason.status !== 404) {
      // 404 only means the device has not reported yet: not worth an error.
      reportError(`Latest of ${id}`, latest.reason);
    }
    // Readings that arrived meanwhile; applyReading keeps whichever is newer.
    const buffered = state.pending || [];
    state.pending = null;
    for (const r of buffered) applyReading(r);
    pickDefaultField();
    renderDetailHeader();
    renderFieldSelect();
    renderLatest();
    scheduleDraw();
  }

  async function backfill(id, gen) {
    const body = await api(`/api/device/${encodeURIComponent(id)}/history?hours=${HISTORY_HOURS}`)
      .catch(() => null);
    if (gen !== state.selectGen || !body) return;
    ingestHistory(body);
    renderFieldSelect();
    scheduleDraw();
  }

  // {"data":[{"timestamp","field","value"}]} into the chart series.
  function ingestHistory(body) {
    const rows = body && Array.isArray(body.data) ? body.data : [];
    for (const r of rows) {
      if (!r || typeof r.field !== 'string') continue;
      const v = numericValue(r.value);
      const t = parseTime(r.timestamp);
      if (v !== null && Number.isFinite(t)) addPoint(r.field, t, v);
    }
  }

  // ---------------------------------------------------------------- series

  // Insert keeping ascending order; a reading seen twice (history + live) is stored once.
  function addPoint(field, t, v) {
    let s = state.series.get(field);
    if (!s) {
      s = [];
      state.series.set(field, s);
    }
    const n = s.length;
    if (n === 0 || t > s[n - 1].t) {
      s.push({ t, v });
    } else {
      let lo = 0;
      let hi = n;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (s[mid].t < t) lo = mid + 1; else hi = mid;
      }
      if (lo < n && s[lo].t === t) s[lo].v = v; else s.splice(lo, 0, { t, v });
    }
    if (s.length > MAX_POINTS_PER_FIELD) s.splice(0, s.length - MAX_POINTS_PER_FIELD);
  }

  function pickDefaultField() {
    if (state.fieldChosenByUser && state.series.has(state.field)) return;
    const fields = [...state.series.keys()];
    if (fields.length === 0) {
      state.field = null;
      return;
    }
    const main = mainFieldOf(selectedType());
    if (main && state.series.has(main)) state.field = main;
    else if (!state.field || !state.series.has(state.field)) {
      state.field = fields.filter((f) => !f.startsWith('meta_')).sort()[0] || fields.sort()[0];
    }
  }

  function sortedFields() {
    const main = state.field;
    return [...state.series.keys()].sort((a, b) => {
      const ka = (a === main ? '0' : a.startsWith('meta_') ? '2' : '1') + a;
      const kb = (b === main ? '0' : b.startsWith('meta_') ? '2' : '1') + b;
      return ka < kb ? -1 : ka > kb ? 1 : 0;
    });
  }

  function renderFieldSelect() {
    const sel = $('#field-select');
    const fields = sortedFields();
    const same = sel.options.length === fields.length
      && fields.every((f) => [...sel.options].some((o) => o.value === f));
    if (!same) {
      sel.replaceChildren(...fields.map((f) => {
        const o = el('option', null, prettyField(f) + (unitOf(f) ? ` (${unitOf(f)})` : ''));
        o.value = f;
        return o;
      }));
    }
    sel.disabled = fields.length === 0;
    if (state.field) sel.value = state.field;
  }

  // ---------------------------------------------------------------- live readings

  function onReading(r) {
    if (!r || typeof r.device_id !== 'string') return;
    const t = parseTime(r.timestamp);
    const d = state.devices.get(r.device_id);
    if (d && Number.isFinite(t)) {
      if (!(d.lastSeenMs >= t)) d.lastSeenMs = t;
      d.status = 'online';
    }
    if (r.device_id !== state.selected) return;
    if (state.pending) {
      if (state.pending.length < 10000) state.pending.push(r);
      return;
    }
    applyReading(r);
    const hadField = state.field;
    pickDefaultField();
    if (hadField !== state.field || $('#field-select').options.length !== state.series.size) {
      renderFieldSelect();
    }
    scheduleDraw();
    scheduleLatest();
  }

  function applyReading(r) {
    const t = parseTime(r.timestamp);
    const fields = r.fields && typeof r.fields === 'object' ? r.fields : {};
    if (Number.isFinite(t)) {
      for (const [k, raw] of Object.entries(fields)) {
        const v = numericValue(raw);
        if (v !== null) addPoint(k, t, v);
      }
    }
    const cur = state.latest;
    if (cur && parseTime(cur.timestamp) > t) return; // out-of-order: keep the newer
    state.latest = {
      ...(cur || {}),
      device_id: r.device_id,
      device_type: r.device_type || (cur && cur.device_type),
      location: r.location || (cur && cur.location),
      timestamp: r.timestamp,
      ...fields,
    };
  }

  // ---------------------------------------------------------------- latest panel

  let latestQueued = false;
  function scheduleLatest() {
    if (latestQueued) return;
    latestQueued = true;
    setTimeout(() => { latestQueued = false; renderLatest(); }, 250);
  }

  function renderLatest() {
    const panel = $('#latest-panel');
    const L = state.latest;
    if (!state.selected) {
      panel.replaceChildren(el('div', 'empty', 'Nothing selected.'));
      return;
    }
    if (!L) {
      panel.replaceChildren(el('div', 'empty', 'No reading yet.'));
      return;
    }
    const head = el('div', 'latest-head');
    const ms = parseTime(L.timestamp);
    const ts = el('span', 'latest-ts', relTime(ms));
    if (Number.isFinite(ms)) {
      ts.dataset.ms = String(ms);
      ts.title = new Date(ms).toISOString();
    }
    head.append(el('span', 'latest-label', 'reading'), ts);
    if (isNum(L.health_score)) {
      const h = el('span', `latest-health ${healthClass(L.health_score)}`,
        `health ${Math.round(L.health_score * 100)}%`);
      head.append(h);
    }

    const grid = el('dl', 'kv');
    const keys = Object.keys(L)
      .filter((k) => !LATEST_HEADER_KEYS.has(k) && L[k] !== null && L[k] !== undefined)
      .filter((k) => !(k in LATEST_ALIASES && LATEST_ALIASES[k] in L))
      .sort((a, b) => {
        const ma = a.startsWith('meta_') ? 1 : 0;
        const mb = b.startsWith('meta_') ? 1 : 0;
        return ma - mb || (a < b ? -1 : a > b ? 1 : 0);
      });
    for (const k of keys) {
      const item = el('div', 'kv-item');
      item.dataset.field = k;
      if (k === state.field) item.classList.add('plotted');
      item.append(el('dt', null, prettyField(k)), el('dd', null, fmtValue(k, L[k])));
      grid.append(item);
    }
    if (keys.length === 0) grid.append(el('div', 'empty', 'The reading has no fields.'));
    panel.replaceChildren(head, grid);
  }

  // ---------------------------------------------------------------- chart

  const chart = {
    canvas: null,
    ctx: null,
    w: 0,
    h: 0,
    queued: false,
    hoverX: null,
    pad: { l: 56, r: 16, t: 26, b: 28 },
  };

  function scheduleDraw() {
    if (chart.queued) return;
    chart.queued = true;
    requestAnimationFrame(() => {
      chart.queued = false;
      try { drawChart(); } catch (e) { console.error('chart', e); }
    });
  }

  // The points of the plotted field inside the time range, ending at the newest point
  // (not at the browser's clock, which may disagree with the server's).
  function visibleWindow() {
    const s = state.field ? state.series.get(state.field) : null;
    if (!s || s.length === 0) return { s: [], from: 0, to: 0, start: 0 };
    const end = s[s.length - 1].t;
    const from = end - state.rangeSec * 1000;
    let lo = 0;
    let hi = s.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (s[mid].t < from) lo = mid + 1; else hi = mid;
    }
    return { s, start: lo, from: Math.max(from, s[lo] ? s[lo].t : from), to: end };
  }

  function niceStep(span, target) {
    const raw = span / Math.max(1, target);
    const mag = 10 ** Math.floor(Math.log10(raw));
    const n = raw / mag;
    const m = n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10;
    return m * mag;
  }

  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600].map((x) => x * 1000);

  function resizeCanvas() {
    const c = chart.canvas;
    const rect = c.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(rect.width));
    const h = Math.max(1, Math.round(rect.height));
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    chart.w = w;
    chart.h = h;
    chart.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }

  function drawChart() {
    const c = chart.canvas;
    const ctx = chart.ctx;
    resizeCanvas();
    const { w, h, pad } = chart;
    ctx.clearRect(0, 0, w, h);

    const win = visibleWindow();
    const count = win.s.length - win.start;
    c.dataset.points = String(Math.max(0, count));
    c.dataset.field = state.field || '';

    const empty = $('#chart-empty');
    if (!state.selected) empty.textContent = 'Select a device to see its readings live.';
    else if (count === 0) empty.textContent = state.pending ? 'Loading…' : 'Waiting for data…';
    empty.hidden = Boolean(state.selected) && count > 0;

    const plotW = w - pad.l - pad.r;
    const plotH = h - pad.t - pad.b;
    if (plotW < 20 || plotH < 20) return;

    // Y range from the visible points, padded, and snapped to nice ticks.
    let ymin = Infinity;
    let ymax = -Infinity;
    for (let i = win.start; i < win.s.length; i++) {
      const v = win.s[i].v;
      if (v < ymin) ymin = v;
      if (v > ymax) ymax = v;
    }
    if (!Number.isFinite(ymin)) { ymin = 0; ymax = 1; }
    if (ymin === ymax) { ymin -= 1; ymax += 1; }
    const yStep = niceStep(ymax - ymin, 5);
    ymin = Math.floor(ymin / yStep) * yStep;
    ymax = Math.ceil(ymax / yStep) * yStep;

    let x0 = win.from;
    let x1 = win.to;
    if (count <= 1) { x0 = (count ? win.to : Date.now()) - state.rangeSec * 1000; x1 = x0 + state.rangeSec * 1000; }
    if (x1 - x0 < 1000) x0 = x1 - 1000;

    const X = (t) => pad.l + ((t - x0) / (x1 - x0)) * plotW;
    const Y = (v) => pad.t + (1 - (v - ymin) / (ymax - ymin)) * plotH;

    const css = getComputedStyle(document.documentElement);
    const gridColor = css.getPropertyValue('--chart-grid').trim() || '#e5e9f0';
    const axisColor = css.getPropertyValue('--chart-axis').trim() || '#6b7280';
    const lineColor = css.getPropertyValue('--chart-line').trim() || '#2563eb';

    ctx.font = '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
    ctx.lineWidth = 1;

    // Horizontal grid + Y labels.
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    const decimals = Math.max(0, -Math.floor(Math.log10(yStep)));
    for (let v = ymin; v <= ymax + yStep / 2; v += yStep) {
      const y = Math.round(Y(v)) + 0.5;
      ctx.strokeStyle = gridColor;
      ctx.beginPath();
      ctx.moveTo(pad.l, y);
      ctx.lineTo(w - pad.r, y);
      ctx.stroke();
      ctx.fillStyle = axisColor;
      ctx.fillText(v.toFixed(Math.min(decimals, 3)), pad.l - 8, y);
    }

    // Vertical grid + time labels.
    const span = x1 - x0;
    const tStep = TIME_STEPS.find((s) => span / s <= Math.max(2, Math.floor(plotW / 90))) || 3600000;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (let t = Math.ceil(x0 / tStep) * tStep; t <= x1; t += tStep) {
      const x = Math.round(X(t)) + 0.5;
      ctx.strokeStyle = gridColor;
      ctx.beginPath();
      ctx.moveTo(x, pad.t);
      ctx.lineTo(x, pad.t + plotH);
      ctx.stroke();
      ctx.fillStyle = axisColor;
      ctx.fillText(clockTime(t, tStep < 60000), x, pad.t + plotH + 8);
    }

    // Axes.
    ctx.strokeStyle = axisColor;
    ctx.beginPath();
    ctx.moveTo(pad.l + 0.5, pad.t);
    ctx.lineTo(pad.l + 0.5, pad.t + plotH + 0.5);
    ctx.lineTo(w - pad.r, pad.t + plotH + 0.5);
    ctx.stroke();

    // Unit label on the Y axis.
    const unit = unitOf(state.field);
    if (state.field) {
      ctx.save();
      ctx.fillStyle = axisColor;
      ctx.textAlign = 'left';
      ctx.textBaseline = 'top';
      ctx.fillText(prettyField(state.field) + (unit ? ` (${unit})` : ''), pad.l - 30, 4);
      ctx.restore();
    }

    if (count === 0) return;

    // The line, reduced to min/max per pixel column so an hour of fast readings
    // still draws in a few hundred segments.
    const pts = [];
    let col = -1;
    let cmin = null;
    let cmax = null;
    let clast = null;
    const flush = () => {
      if (col < 0) return;
      if (cmin !== cmax) {
        if (cmin.t <= cmax.t) pts.push(cmin, cmax); else pts.push(cmax, cmin);
      } else pts.push(cmin);
      if (clast !== cmin && clast !== cmax) pts.push(clast);
    };
    for (let i = win.start; i < win.s.length; i++) {
      const p = win.s[i];
      const cx = Math.floor(X(p.t));
      if (cx !== col) {
        flush();
        col = cx;
        cmin = p;
        cmax = p;
      } else {
        if (p.v < cmin.v) cmin = p;
        if (p.v > cmax.v) cmax = p;
      }
      clast = p;
    }
    flush();

    const grad = ctx.createLinearGradient(0, pad.t, 0, pad.t + plotH);
    grad.addColorStop(0, hexAlpha(lineColor, 0.22));
    grad.addColorStop(1, hexAlpha(lineColor, 0.02));
    ctx.save();
    ctx.beginPath();
    ctx.rect(pad.l, pad.t - 2, plotW + 2, plotH + 4);
    ctx.clip();
    // On/off fields (motion) hold their value until the next reading: draw steps.
    const stepped = pts.every((p) => p.v === 0 || p.v === 1);
    const trace = () => {
      let prev = null;
      for (const p of pts) {
        if (prev && stepped) ctx.lineTo(X(p.t), Y(prev.v));
        ctx.lineTo(X(p.t), Y(p.v));
        prev = p;
      }
    };
    ctx.beginPath();
    ctx.moveTo(X(pts[0].t), pad.t + plotH);
    trace();
    ctx.lineTo(X(pts[pts.length - 1].t), pad.t + plotH);
    ctx.closePath();
    ctx.fillStyle = grad;
    ctx.fill();

    ctx.beginPath();
    ctx.moveTo(X(pts[0].t), Y(pts[0].v));
    trace();
    ctx.strokeStyle = lineColor;
    ctx.lineWidth = 2;
    ctx.lineJoin = 'round';
    ctx.stroke();
    ctx.restore();

    // Newest point.
    const last = win.s[win.s.length - 1];
    ctx.beginPath();
    ctx.arc(X(last.t), Y(last.v), 4, 0, Math.PI * 2);
    ctx.fillStyle = lineColor;
    ctx.fill();
    ctx.strokeStyle = '#fff';
    ctx.lineWidth = 2;
    ctx.stroke();

    drawHover(win, X, Y, plotH, lineColor);
  }

  function drawHover(win, X, Y, plotH, lineColor) {
    const tip = $('#chart-tip');
    const hx = chart.hoverX;
    if (hx === null || hx < chart.pad.l || hx > chart.w - chart.pad.r) {
      tip.hidden = true;
      return;
    }
    // Nearest point by x.
    let best = null;
    let bestD = Infinity;
    let lo = win.start;
    let hi = win.s.length - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (X(win.s[mid].t) < hx) lo = mid; else hi = mid;
    }
    for (const i of [lo, hi]) {
      const p = win.s[i];
      if (!p) continue;
      const d = Math.abs(X(p.t) - hx);
      if (d < bestD) { bestD = d; best = p; }
    }
    if (!best) { tip.hidden = true; return; }
    const ctx = chart.ctx;
    const x = Math.round(X(best.t)) + 0.5;
    ctx.save();
    ctx.strokeStyle = hexAlpha(lineColor, 0.5);
    ctx.setLineDash([4, 4]);
    ctx.beginPath();
    ctx.moveTo(x, chart.pad.t);
    ctx.lineTo(x, chart.pad.t + plotH);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.beginPath();
    ctx.arc(x, Y(best.v), 4, 0, Math.PI * 2);
    ctx.fillStyle = lineColor;
    ctx.fill();
    ctx.restore();
    tip.textContent = `${fmtValue(state.field, best.v)} · ${clockTime(best.t)}`;
    tip.hidden = false;
    const left = Math.min(Math.max(x + 10, 0), chart.w - tip.offsetWidth - 4);
    tip.style.left = `${left}px`;
    tip.style.top = `${Math.max(0, Y(best.v) - 34)}px`;
  }

  function hexAlpha(color, a) {
    const m = /^#([0-9a-f]{6})$/i.exec(color);
    if (!m) return color;
    const n = parseInt(m[1], 16);
    return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
  }

  // ---------------------------------------------------------------- alerts

  function alertKey(a) {
    return a.id !== undefined && a.id !== null
      ? String(a.id)
      : `${a.device_id}|${a.rule || a.alert_type}|${a.timestamp}`;
  }

  async function refreshAlerts() {
    let body;
    try {
      body = await api('/api/alerts');
    } catch (e) {
      reportError('Alerts', e);
      return;
    }
    const list = body && Array.isArray(body.alerts) ? body.alerts : [];
    state.alerts = list.filter((a) => a && typeof a === 'object').slice(0, MAX_ALERTS);
    renderAlerts();
  }

  // A live alert frame: a new alert goes on top, a known one (state change) is replaced.
  function onAlert(a) {
    if (!a || typeof a !== 'object') return;
    const key = alertKey(a);
    const i = state.alerts.findIndex((x) => alertKey(x) === key);
    if (i >= 0) state.alerts.splice(i, 1);
    state.alerts.unshift(a);
    if (state.alerts.length > MAX_ALERTS) state.alerts.length = MAX_ALERTS;
    renderAlerts(key);
  }

  function renderAlerts(flashKey) {
    const ul = $('#alerts-list');
    const items = state.alertsActiveOnly
      ? state.alerts.filter((a) => a.state !== 'resolved')
      : state.alerts;
    const lis = items.map((a) => buildAlert(a, alertKey(a) === flashKey));
    ul.replaceChildren(...lis);
    const firing = state.alerts.filter((a) => a.state === 'firing').length;
    $('#alerts-count').textContent = state.alerts.length
      ? (firing ? `${firing} firing` : `${state.alerts.length}`) : '';
    $('#alerts-count').classList.toggle('hot', firing > 0);
    document.title = firing ? `(${firing}) SensorFleet` : 'SensorFleet';
    const empty = $('#alerts-empty');
    empty.hidden = items.length > 0;
    empty.textContent = state.alerts.length ? 'No active alerts.' : 'No alerts. All quiet.';
  }

  function buildAlert(a, flash) {
    const sev = ['info', 'warning', 'critical'].includes(a.severity) ? a.severity : 'info';
    const st = typeof a.state === 'string' && a.state ? a.state : 'unknown';
    const li = el('li', `alert sev-${sev} st-${st}${flash ? ' flash' : ''}`);
    li.dataset.alertId = alertKey(a);
    li.dataset.severity = sev;
    li.dataset.state = st;

    const main = el('div', 'a-main');
    const top = el('div', 'a-top');
    top.append(el('span', `sev sev-${sev}`, sev));
    top.append(el('span', 'a-title', a.rule || prettyField(a.alert_type || 'alert')));
    top.append(el('span', `a-state st-${st}`, st));
    const msg = el('div', 'a-msg', a.message || describeAlert(a));
    const meta = el('div', 'a-meta');
    const dev = el('button', 'a-device linklike', a.device_id || '?');
    dev.type = 'button';
    dev.title = 'Show this device';
    dev.addEventListener('click', () => {
      if (a.device_id && state.devices.has(a.device_id)) {
        selectDevice(a.device_id);
        const row = [...$('#devices-table tbody').rows].find((r) => r.dataset.deviceId === a.device_id);
        if (row) row.scrollIntoView({ block: 'nearest' });
      }
    });
    meta.append(dev);
    if (a.alert_type) meta.append(el('span', 'a-type', prettyField(a.alert_type)));
    const ms = parseTime(a.timestamp);
    const time = el('span', 'a-time', relTime(ms));
    if (Number.isFinite(ms)) {
      time.dataset.ms = String(ms);
      time.title = new Date(ms).toISOString();
    }
    meta.append(time);
    main.append(top, msg, meta);
    li.append(main);

    if (a.id !== undefined && a.id !== null && (st === 'firing' || st === 'acknowledged')) {
      const actions = el('div', 'a-actions');
      if (st === 'firing') actions.append(alertButton('Ack', 'ack', a));
      actions.append(alertButton('Clear', 'clear', a));
      li.append(actions);
    }
    return li;
  }

  function describeAlert(a) {
    const parts = [prettyField(a.alert_type || 'alert')];
    if (isNum(a.value)) parts.push(fmtNumber(a.value));
    if (a.threshold !== undefined && a.threshold !== null) parts.push(`(threshold ${a.threshold})`);
    return parts.join(' ');
  }

  function alertButton(label, action, a) {
    const b = el('button', `btn btn-${action}`, label);
    b.type = 'button';
    b.dataset.action = action;
    b.addEventListener('click', async () => {
      b.disabled = true;
      const path = `/api/alerts/${encodeURIComponent(String(a.id))}/${action}`;
      try {
        let res;
        try {
          res = await api(path, { method: 'POST' });
        } catch (e) {
          if (e.status !== 403 || !askToken(e.message)) throw e;
          res = await api(path, { method: 'POST' });
        }
        // Show the new state at once; the next poll (or a live frame) confirms it.
        const updated = res && typeof res === 'object' && res.id !== undefined ? res
          : { ...a, state: action === 'ack' ? 'acknowledged' : 'resolved' };
        const i = state.alerts.findIndex((x) => alertKey(x) === alertKey(a));
        if (i >= 0) state.alerts[i] = { ...a, ...updated };
        renderAlerts();
        refreshStats();
      } catch (e) {
        reportError(`${label} alert`, e);
        b.disabled = false;
      }
    });
    return b;
  }

  // ---------------------------------------------------------------- WebSocket

  function setWsStatus(s, title) {
    $('#ws-status').textContent = s;
    const ind = $('#ws-indicator');
    ind.dataset.state = s;
    ind.title = title || 'Live stream (WebSocket)';
  }

  function wsUrl() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const q = state.selected ? `?device=${encodeURIComponent(state.selected)}` : '';
    return `${proto}//${location.host}/api/ws${q}`;
  }

  // One socket at a time: filtered to the selected device (the server sends its
  // readings, and alerts), all devices while nothing is selected. Each socket carries
  // a generation number so events of a replaced socket are ignored.
  // Returns a promise that settles once the socket is open (never, if it fails).
  function connectWs() {
    clearTimeout(state.wsTimer);
    state.wsTimer = null;
    const old = state.ws;
    state.ws = null;
    if (old) {
      old.onmessage = null;
      old.onclose = null;
      old.onerror = null;
      // Closing a socket still connecting makes the browser log a warning: let it
      // open, then close it.
      if (old.readyState === WebSocket.CONNECTING) old.onopen = () => old.close(1000, 'switching device');
      else {
        old.onopen = null;
        try { old.close(1000, 'switching device'); } catch (e) { /* already closed */ }
      }
    }
    const gen = ++state.wsGen;
    let ws;
    let markOpen;
    const opened = new Promise((resolve) => { markOpen = resolve; });
    try {
      ws = new WebSocket(wsUrl(), wsProtocols());
    } catch (e) {
      scheduleReconnect(gen);
      return opened;
    }
    state.ws = ws;
    setWsStatus(state.wsAttempt ? 'reconnecting' : 'connecting');
    ws.onopen = () => {
      markOpen();
      if (gen !== state.wsGen) return;
      // After a drop, readings of the gap were missed: refill the chart from history.
      if (state.wsAttempt > 0 && state.selected && state.pending === null) {
        safe(backfill)(state.selected, state.selectGen);
      }
      state.wsAttempt = 0;
      setWsStatus('live', state.selected ? `Streaming ${state.selected}` : 'Streaming all devices');
    };
    ws.onmessage = (ev) => {
      if (gen !== state.wsGen) return;
      handleFrame(ev.data);
    };
    ws.onclose = () => {
      if (gen !== state.wsGen) return;
      state.ws = null;
      scheduleReconnect(gen);
    };
    ws.onerror = () => { /* onclose follows and schedules the retry */ };
    return opened;
  }

  function scheduleReconnect(gen) {
    if (gen !== state.wsGen) return;
    const base = Math.min(WS_BACKOFF_MAX_MS, WS_BACKOFF_MIN_MS * 2 ** state.wsAttempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5)); // jitter: no thundering herd
    state.wsAttempt += 1;
    setWsStatus('reconnecting', `Connection lost; retrying in ${Math.ceil(delay / 1000)} s`);
    state.wsTimer = setTimeout(() => {
      if (gen === state.wsGen) connectWs();
    }, delay);
  }

  // The server skipped frames this page was too slow for: refill the chart from
  // history, at most every few seconds.
  let lastLagFill = 0;
  function onLagged() {
    const now = Date.now();
    if (!state.selected || state.pending !== null || now - lastLagFill < 5000) return;
    lastLagFill = now;
    safe(backfill)(state.selected, state.selectGen);
  }

  function handleFrame(data) {
    if (typeof data !== 'string') return;
    let msg;
    try { msg = JSON.parse(data); } catch (e) { return; }
    const msgs = Array.isArray(msg) ? msg : [msg];
    for (const m of msgs) {
      if (!m || typeof m !== 'object') continue;
      try {
        if (m.type === 'reading') onReading(m.data);
        else if (m.type === 'alert') onAlert(m.data);
        else if (m.type === 'lagged') onLagged();
      } catch (e) {
        console.error('frame', e);
      }
    }
  }

  // ---------------------------------------------------------------- wiring

  function safe(fn) {
    return (...args) => {
      try {
        const r = fn(...args);
        if (r && typeof r.catch === 'function') r.catch((e) => console.error(e));
      } catch (e) {
        console.error(e);
      }
    };
  }

  function poll(fn, ms) {
    const run = safe(fn);
    run();
    setInterval(() => { if (!document.hidden) run(); }, ms);
  }

  function init() {
    chart.canvas = $('#chart');
    chart.ctx = chart.canvas.getContext('2d');

    $('#error-close').addEventListener('click', () => { $('#error-bar').hidden = true; });

    const tbody = $('#devices-table tbody');
    tbody.addEventListener('click', safe((ev) => {
      const tr = ev.target.closest('tr[data-device-id]');
      if (tr) selectDevice(tr.dataset.deviceId);
    }));
    tbody.addEventListener('keydown', safe((ev) => {
      const tr = ev.target.closest('tr[data-device-id]');
      if (!tr) return;
      if (ev.key === 'Enter' || ev.key === ' ') {
        ev.preventDefault();
        selectDevice(tr.dataset.deviceId);
      } else if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
        ev.preventDefault();
        const next = ev.key === 'ArrowDown' ? tr.nextElementSibling : tr.previousElementSibling;
        if (next) { next.focus(); selectDevice(next.dataset.deviceId); }
      }
    }));

    $('#device-filter').addEventListener('input', safe((ev) => {
      state.filter = ev.target.value.trim().toLowerCase();
      renderDevices();
    }));

    $('#alerts-active-only').addEventListener('change', safe((ev) => {
      state.alertsActiveOnly = ev.target.checked;
      renderAlerts();
    }));

    $('#field-select').addEventListener('change', safe((ev) => {
      state.field = ev.target.value;
      state.fieldChosenByUser = true;
      renderLatest();
      scheduleDraw();
    }));

    for (const b of document.querySelectorAll('.segmented button')) {
      b.addEventListener('click', safe(() => {
        state.rangeSec = Number(b.dataset.range) || 900;
        for (const o of document.querySelectorAll('.segmented button')) o.classList.toggle('active', o === b);
        scheduleDraw();
      }));
    }

    chart.canvas.addEventListener('mousemove', (ev) => {
      const r = chart.canvas.getBoundingClientRect();
      chart.hoverX = ev.clientX - r.left;
      scheduleDraw();
    });
    chart.canvas.addEventListener('mouseleave', () => {
      chart.hoverX = null;
      scheduleDraw();
    });

    if (typeof ResizeObserver === 'function') {
      new ResizeObserver(() => scheduleDraw()).observe(chart.canvas);
    } else {
      window.addEventListener('resize', () => scheduleDraw());
    }

    document.addEventListener('visibilitychange', safe(() => {
      if (!document.hidden) { refreshStats(); refreshDevices(); refreshAlerts(); }
    }));

    window.addEventListener('unhandledrejection', (ev) => {
      console.error('unhandled', ev.reason);
      ev.preventDefault();
    });

    const fromHash = deviceFromHash();
    if (fromHash) selectDevice(fromHash);
    else connectWs();

    poll(refreshStats, POLL_MS);
    poll(refreshDevices, POLL_MS);
    poll(refreshAlerts, POLL_MS);
    setInterval(safe(tickRelativeTimes), 1000);
    scheduleDraw();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
