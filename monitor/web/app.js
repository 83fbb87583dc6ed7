// qins dashboard: renders the state stream (/events) into the graph, charts and tables.
'use strict';
(function () {
  const HISTORY = 120; // points kept per time-series chart
  const PALETTE = ['#4fb3ff', '#3fc47a', '#f0b43c', '#ff5d5d', '#b58cff', '#3fd0c9', '#ff8fd0', '#c4d66b',
    '#ff9f5a', '#8fa8ff'];
  const token = new URLSearchParams(location.search).get('token');
  const q = token ? '?token=' + encodeURIComponent(token) : '';
  const $ = (id) => document.getElementById(id);
  const haveCharts = typeof window.Chart === 'function' && !window.QINS_NO_CHARTS;
  if (!haveCharts) $('nocharts').hidden = false;

  // ---------- metrics helpers ----------
  const key = (m) => m.name + '{' + Object.keys(m.labels || {}).sort().map((k) => k + '=' + m.labels[k]).join(',') + '}';
  function index(metrics) {
    const byKey = new Map();
    const byName = new Map();
    for (const m of metrics) {
      byKey.set(key(m), m);
      if (!byName.has(m.name)) byName.set(m.name, []);
      byName.get(m.name).push(m);
    }
    return { byKey, byName, all: (n) => byName.get(n) || [] };
  }
  const val = (m) => (m && typeof m.value === 'number' ? m.value : m && typeof m.sum === 'number' ? m.sum : 0);
  const finiteBound = (b) => (typeof b[0] === 'number' ? b[0] : Infinity);
  // Quantile from per-bucket counts (linear within a bucket; +Inf bucket reports the last bound).
  function quantile(buckets, qq) {
    const total = buckets.reduce((s, b) => s + b[1], 0);
    if (!total) return null;
    const target = qq * total;
    let cum = 0;
    for (let i = 0; i < buckets.length; i++) {
      const c = buckets[i][1];
      if (c > 0 && cum + c >= target) {
        const hi = finiteBound(buckets[i]);
        const lo = i === 0 ? Math.min(0, hi) : finiteBound(buckets[i - 1]);
        if (!isFinite(hi)) return lo;
        return lo + (hi - lo) * ((target - cum) / c);
      }
      cum += c;
    }
    return finiteBound(buckets[buckets.length - 2] || buckets[0]);
  }
  // Buckets seen since the previous snapshot (falls back to all-time when nothing new came).
  function deltaBuckets(cur, prev) {
    if (!cur || !cur.buckets) return null;
    if (!prev || !prev.buckets || prev.buckets.length !== cur.buckets.length) return cur.buckets;
    const d = cur.buckets.map((b, i) => [b[0], Math.max(0, b[1] - prev.buckets[i][1])]);
    return d.some((b) => b[1] > 0) ? d : null;
  }
  const fmtNum = (v, digits = 1) => (v == null || !isFinite(v) ? '–' : Math.abs(v) >= 1e6 ? (v / 1e6).toFixed(digits) + 'M'
    : Math.abs(v) >= 1e3 ? (v / 1e3).toFixed(digits) + 'k' : v.toFixed(digits));
  const fmtBytes = (v) => {
    if (v == null || !isFinite(v)) return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return v.toFixed(i ? 1 : 0) + ' ' + u[i];
  };
  const fmtSec = (v) => (v == null ? '–' : v < 1e-3 ? (v * 1e6).toFixed(0) + ' µs' : v < 1 ? (v * 1e3).toFixed(1) + ' ms' : v.toFixed(2) + ' s');
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

  // ---------- graph normalisation (accepts a few shapes) ----------
  // The coordinator's document is either the graph itself or {graph, instances, requests}.
  function normGraph(doc) {
    if (!doc || typeof doc !== 'object') return null;
    const g = doc.graph && typeof doc.graph === 'object' ? doc.graph : doc;
    const types = new Map();
    for (const s of g.stages || []) if (s && typeof s === 'object') types.set(s.name || s.id, s.type || '');
    const workers = [];
    for (const w of g.workers || []) {
      const stages = (w.stages || []).map((s) => (typeof s === 'string' ? { name: s, type: types.get(s) || '' }
        : { name: s.name || s.id, type: s.type || types.get(s.name) || '' }));
      workers.push({ name: w.name || w.id || '?', stages, replicas: w.replicas || 1, host: w.host || '' });
    }
    if (!workers.length && Array.isArray(g.stages)) {
      const by = new Map();
      for (const s of g.stages) {
        const w = s.worker || 'main';
        if (!by.has(w)) by.set(w, []);
        by.get(w).push({ name: s.name || s.id, type: s.type || '' });
      }
      for (const [name, stages] of by) workers.push({ name, stages });
    }
    const strip = (e) => String(e || '').split('.')[0];
    const edges = (g.edges || []).map((e) => ({ from: strip(e.from || e.src), to: strip(e.to || e.dst), loop: !!e.loop }));
    const restarts = {};
    for (const i of doc.instances || []) restarts[i.worker || i.name] = (restarts[i.worker || i.name] || 0) + (i.restarts || 0);
    return { name: g.name || '', workers, edges, types, restarts: doc.instances ? restarts : null, requests: doc.requests || null };
  }

  // ---------- charts ----------
  const charts = {};
  const commonOpts = (yTitle) => ({
    animation: false, responsive: true, maintainAspectRatio: false, parsing: true, normalized: true,
    interaction: { mode: 'nearest', intersect: false },
    plugins: { legend: { labels: { color: '#d8dee6', boxWidth: 12, font: { size: 11 } } } },
    scales: {
      x: { ticks: { color: '#8593a3', maxTicksLimit: 6, font: { size: 10 } }, grid: { color: '#222c36' } },
      y: { beginAtZero: true, title: { display: !!yTitle, text: yTitle, color: '#8593a3' },
        ticks: { color: '#8593a3', font: { size: 10 } }, grid: { color: '#222c36' } },
    },
  });
  function makeLine(id, yTitle) {
    if (!haveCharts) return null;
    return (charts[id] = new window.Chart($(id), { type: 'line', data: { labels: [], datasets: [] },
      options: Object.assign(commonOpts(yTitle), { elements: { point: { radius: 0 }, line: { borderWidth: 1.6, tension: 0.2 } } }) }));
  }
  function makeBar(id, yTitle) {
    if (!haveCharts) return null;
    const o = commonOpts(yTitle);
    o.plugins.legend.display = false;
    return (charts[id] = new window.Chart($(id), { type: 'bar', data: { labels: [], datasets: [{ data: [], backgroundColor: '#4fb3ff' }] }, options: o }));
  }
  // Time series: one shared label axis per chart, one dataset per series name.
  function pushSeries(chart, label, values) {
    if (!chart) return;
    const d = chart.data;
    d.labels.push(label);
    for (const [name, v] of Object.entries(values)) {
      let ds = d.datasets.find((x) => x.label === name);
      if (!ds) {
        const c = PALETTE[d.datasets.length % PALETTE.length];
        ds = { label: name, data: new Array(d.labels.length - 1).fill(null), borderColor: c, backgroundColor: c, spanGaps: true };
        d.datasets.push(ds);
      }
      ds.data.push(v);
    }
    for (const ds of d.datasets) if (ds.data.length < d.labels.length) ds.data.push(null);
    while (d.labels.length > HISTORY) { d.labels.shift(); for (const ds of d.datasets) ds.data.shift(); }
    chart.update('none');
  }

  makeLine('c-throughput', 'items/s');
  makeLine('c-latency', 'seconds');
  if (charts['c-latency']) charts['c-latency'].options.scales.y.ticks.callback = (v) => fmtSec(v);
  makeLine('c-cpu', '%');
  makeLine('c-mem', 'MiB');
  makeLine('c-tokens', 'tokens/s');
  makeLine('c-queue', 'items');
  makeBar('c-codes', 'count');
  makeBar('c-err', 'count');
  if (haveCharts) {
    charts['c-loss'] = new window.Chart($('c-loss'), { type: 'line', data: { datasets: [{ label: 'loss', data: [], borderColor: '#f0b43c', backgroundColor: '#f0b43c', pointRadius: 0, borderWidth: 1.6 }] },
      options: Object.assign(commonOpts('loss'), { scales: Object.assign(commonOpts('loss').scales, { x: { type: 'linear', title: { display: true, text: 'step', color: '#8593a3' }, ticks: { color: '#8593a3' }, grid: { color: '#222c36' } } }) }) });
    charts['c-loss'].options.scales.y.beginAtZero = false;
  }

  // ---------- state ----------
  let prev = null; // { t, idx }
  const latHist = new Map(); // stage -> {labels, p50, p95, p99}
  let latPicked = false;
  $('lat-stage').addEventListener('change', () => { latPicked = true; });
  const lossFromGauges = [];

  function stageRates(idx, pidx, dt) {
    const rates = {};
    for (const m of idx.all('qins_stage_items_total')) {
      const st = m.labels.stage || '?';
      const p = pidx && pidx.byKey.get(key(m));
      if (p && dt > 0) rates[st] = (rates[st] || 0) + Math.max(0, (val(m) - val(p)) / dt);
      else if (!(st in rates)) rates[st] = null;
    }
    return rates;
  }
  function sumRate(idx, pidx, name, dt) {
    let r = null;
    for (const m of idx.all(name)) {
      const p = pidx && pidx.byKey.get(key(m));
      if (p && dt > 0) r = (r || 0) + Math.max(0, (val(m) - val(p)) / dt);
    }
    return r;
  }
  const edgeKey = (from, to) => from + '->' + to;
  function edgeLabels(m) {
    const l = m.labels || {};
    if (l.from || l.to) return edgeKey(l.from || l.src, l.to || l.dst);
    if (l.edge) return l.edge.replace('→', '->');
    return edgeKey(l.src, l.dst);
  }

  function renderGraph(g, idx, rates, edgeRates, depth) {
    const el = $('graph');
    if (!g || !g.workers.length) { el.innerHTML = '<p class="empty">No pipeline graph published yet.</p>'; return; }
    const SW = 170, SH = 46, GAP = 22, PADX = 60, PADY = 34, WGAP = 70;
    const pos = new Map();
    let x = 20, maxH = 0;
    const parts = [];
    g.workers.forEach((w) => {
      const h = PADY + w.stages.length * (SH + GAP) - GAP + 16;
      maxH = Math.max(maxH, h);
      parts.push(`<g class="worker" data-worker="${esc(w.name)}"><rect x="${x}" y="10" rx="8" width="${SW + PADX - 20}" height="${h}"/>` +
        `<text class="wname" x="${x + 10}" y="27">${esc(w.name)}${w.replicas > 1 ? ' ×' + w.replicas : ''}` +
        `${w.host && w.host !== 'local' ? ' @ ' + esc(w.host) : ''}</text></g>`);
      w.stages.forEach((s, i) => {
        const sx = x + (PADX - 20) / 2, sy = 10 + PADY + i * (SH + GAP);
        pos.set(s.name, { x: sx, y: sy });
        const items = (idx.all('qins_stage_items_total').filter((m) => m.labels.stage === s.name).reduce((a, m) => a + val(m), 0));
        const lat = idx.all('qins_stage_latency_seconds').find((m) => m.labels.stage === s.name);
        const p95 = lat && lat.buckets ? quantile(lat.buckets, 0.95) : null;
        const r = rates[s.name];
        const errs = idx.all('qins_stage_errors_total').filter((m) => m.labels.stage === s.name).reduce((a, m) => a + val(m), 0);
        parts.push(`<g class="stage${r > 0 ? ' busy' : ''}${errs > 0 ? ' failing' : ''}" data-stage="${esc(s.name)}" data-items="${items}">` +
          `<rect x="${sx}" y="${sy}" rx="6" width="${SW}" height="${SH}"/>` +
          `<text x="${sx + 8}" y="${sy + 17}">${esc(s.name)}${s.type && s.type !== s.name ? ' <tspan class="meta">' + esc(s.type) + '</tspan>' : ''}</text>` +
          `<text class="meta" x="${sx + 8}" y="${sy + 35}">${fmtNum(r)} /s · p95 ${fmtSec(p95)} · ${fmtNum(items, 0)} items` +
          `${errs > 0 ? ' · ' + errs + ' errors' : ''}</text></g>`);
      });
      x += SW + PADX - 20 + WGAP;
    });
    const width = x - WGAP + 20;
    const colW = SW + PADX - 20 + WGAP;
    const backSkips = g.edges.some((e) => { const a = pos.get(e.from), b = pos.get(e.to); return a && b && a.x - b.x > colW + 1; });
    const height = maxH + (backSkips ? 70 : 24);
    const edgeParts = [];
    for (const e of g.edges) {
      const a = pos.get(e.from), b = pos.get(e.to);
      if (!a || !b) continue;
      let d, lx, ly;
      if (b.x > a.x + 1) { // to a later worker column: right side to left side
        const x1 = a.x + SW, y1 = a.y + SH / 2, x2 = b.x, y2 = b.y + SH / 2;
        d = `M${x1},${y1} C${x1 + 50},${y1} ${x2 - 50},${y2} ${x2},${y2}`;
        lx = (x1 + x2) / 2; ly = (y1 + y2) / 2 - 6;
      } else if (b.x < a.x - 1) { // to an earlier worker column: left side to right side
        const x1 = a.x, y1 = a.y + SH / 2, x2 = b.x + SW, y2 = b.y + SH / 2;
        if (a.x - b.x > colW + 1) { // skipping columns: dip under the workers in between
          const by = maxH + 70;
          d = `M${x1},${y1} C${x1 - 60},${by} ${x2 + 60},${by} ${x2},${y2}`;
          lx = (x1 + x2) / 2; ly = 0.75 * by + 0.125 * (y1 + y2) - 4;
        } else {
          d = `M${x1},${y1} C${x1 - 50},${y1} ${x2 + 50},${y2} ${x2},${y2}`;
          lx = (x1 + x2) / 2; ly = (y1 + y2) / 2 + 14;
        }
      } else if (b.y > a.y) { // same worker, downwards
        const x1 = a.x + SW / 2, y1 = a.y + SH, y2 = b.y;
        d = `M${x1},${y1} L${x1},${y2}`;
        lx = x1 + 6; ly = (y1 + y2) / 2 + 4;
      } else { // same worker, upwards (loop): around the right side
        const x1 = a.x + SW, y1 = a.y + SH / 2, y2 = b.y + SH / 2;
        d = `M${x1},${y1} C${x1 + 40},${y1} ${x1 + 40},${y2} ${x1},${y2}`;
        lx = x1 + 24; ly = (y1 + y2) / 2;
      }
      const k = edgeKey(e.from, e.to);
      const rate = edgeRates[k], qd = depth[k];
      const label = (rate != null ? fmtNum(rate) + '/s' : '') + (qd != null ? (rate != null ? ' · ' : '') + 'q ' + qd : '');
      edgeParts.push(`<g class="edge${qd > 0 && qd >= (depth[k + '#cap'] || Infinity) ? ' full' : ''}" data-edge="${esc(k)}"><path d="${d}" marker-end="url(#arrow)"/>` +
        (label ? `<text x="${lx}" y="${ly}">${esc(label)}</text>` : '') + '</g>');
    }
    el.innerHTML = `<svg width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="pipeline graph">` +
      '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">' +
      '<path d="M0,0 L10,5 L0,10 z" fill="#6c7f93"/></marker></defs>' + parts.join('') + edgeParts.join('') + '</svg>';
  }

  function fillSelect(sel, names) {
    const cur = sel.value;
    const have = Array.from(sel.options).map((o) => o.value).join('\n');
    if (have !== names.join('\n')) {
      sel.innerHTML = names.map((n) => `<option>${esc(n)}</option>`).join('');
      if (names.includes(cur)) sel.value = cur;
    }
    return sel.value;
  }

  function renderHist(chartId, emptyId, selId, metrics, fmtLabel) {
    const tensors = metrics.map((m) => m.labels.tensor || m.labels.stage || key(m));
    const sel = fillSelect($(selId), tensors);
    $(emptyId).hidden = metrics.length > 0;
    const c = charts[chartId];
    if (!c) return;
    const m = metrics[tensors.indexOf(sel)];
    if (!m || !m.buckets) { c.data.labels = []; c.data.datasets[0].data = []; c.update('none'); return; }
    const b = m.buckets.filter((x, i) => typeof x[0] === 'number' || x[1] > 0);
    c.data.labels = b.map((x, i) => fmtLabel(x, i, b));
    c.data.datasets[0].data = b.map((x) => x[1]);
    c.update('none');
  }

  function render(st) {
    const t = st.time || Date.now() / 1000;
    const metrics = (st.metrics && st.metrics.metrics) || [];
    const idx = index(metrics);
    const pidx = prev && prev.idx;
    const dt = prev ? t - prev.t : 0;
    const label = new Date(t * 1000).toLocaleTimeString([], { hour12: false });
    $('seq').textContent = st.seq;

    // throughput
    const rates = stageRates(idx, pidx, dt);
    const anyRate = Object.values(rates).some((v) => v != null);
    if (anyRate) pushSeries(charts['c-throughput'], label, rates);
    const total = Object.values(rates).reduce((a, v) => a + (v || 0), 0);
    $('ips').textContent = anyRate ? fmtNum(total) : '–';

    const g = normGraph(st.graph);

    // tokens: qins_tokens_total, else the items of the sampling stage(s) (one token per item)
    let tokTotal = idx.all('qins_tokens_total').reduce((a, m) => a + val(m), 0);
    let tps = sumRate(idx, pidx, 'qins_tokens_total', dt);
    let haveTok = idx.all('qins_tokens_total').length > 0;
    if (!haveTok && g) {
      const samplers = new Set([...g.types].filter(([, t]) => /sample/.test(t)).map(([n]) => n));
      const sm = idx.all('qins_stage_items_total').filter((m) => samplers.has(m.labels.stage));
      if (sm.length) {
        haveTok = true;
        tokTotal = sm.reduce((a, m) => a + val(m), 0);
        tps = null;
        for (const m of sm) {
          const p = pidx && pidx.byKey.get(key(m));
          if (p && dt > 0) tps = (tps || 0) + Math.max(0, (val(m) - val(p)) / dt);
        }
      }
    }
    $('tokens').textContent = haveTok ? fmtNum(tokTotal, 0) : '–';
    if (g && g.name) $('pname').textContent = 'pipeline ' + g.name;
    if (g && g.requests) $('reqs').textContent = (g.requests.done ?? '–') + ' / ' + (g.requests.total ?? '–');
    $('tps').textContent = fmtNum(tps);
    if (tps != null) pushSeries(charts['c-tokens'], label, { 'tokens/s': tps });

    // latency per stage
    const lat = idx.all('qins_stage_latency_seconds');
    const stageNames = [...new Set(lat.map((m) => m.labels.stage || '?'))];
    let selStage = fillSelect($('lat-stage'), stageNames);
    if (!latPicked && lat.length) { // until the user picks: the stage with the highest p95 latency
      let best = null, bestV = -1;
      for (const m of lat) { const v = m.buckets ? quantile(m.buckets, 0.95) : null; if (v != null && v > bestV) { bestV = v; best = m.labels.stage; } }
      if (best && best !== selStage) { $('lat-stage').value = best; selStage = best; }
    }
    for (const m of lat) {
      const s = m.labels.stage || '?';
      const b = deltaBuckets(m, pidx && pidx.byKey.get(key(m)));
      if (!latHist.has(s)) latHist.set(s, { labels: [], p50: [], p95: [], p99: [] });
      const h = latHist.get(s);
      h.labels.push(label);
      h.p50.push(b ? quantile(b, 0.5) : null);
      h.p95.push(b ? quantile(b, 0.95) : null);
      h.p99.push(b ? quantile(b, 0.99) : null);
      while (h.labels.length > HISTORY) { h.labels.shift(); h.p50.shift(); h.p95.shift(); h.p99.shift(); }
    }
    const lc = charts['c-latency'];
    if (lc && latHist.has(selStage)) {
      const h = latHist.get(selStage);
      lc.data.labels = h.labels.slice();
      lc.data.datasets = [['p50', h.p50, PALETTE[1]], ['p95', h.p95, PALETTE[2]], ['p99', h.p99, PALETTE[3]]]
        .map(([n, d, c]) => ({ label: n, data: d.slice(), borderColor: c, backgroundColor: c, spanGaps: true }));
      lc.update('none');
    }

    // edges: each producer instance (worker label, replicas included) reports its own share of
    // an edge, so rates, slots in flight and capacity are summed per edge
    const edgeRates = {}, depth = {};
    const addTo = (o, k, v) => { o[k] = (o[k] || 0) + v; };
    for (const m of idx.all('qins_edge_items_total')) {
      const p = pidx && pidx.byKey.get(key(m));
      if (p && dt > 0) addTo(edgeRates, edgeLabels(m), Math.max(0, (val(m) - val(p)) / dt));
    }
    for (const m of idx.all('qins_edge_queue_depth')) addTo(depth, edgeLabels(m), val(m));
    for (const m of idx.all('qins_edge_capacity')) addTo(depth, edgeLabels(m) + '#cap', val(m));
    const qd = {};
    for (const k of Object.keys(depth)) if (!k.endsWith('#cap')) qd[k] = depth[k];
    if (Object.keys(qd).length) pushSeries(charts['c-queue'], label, qd);

    // graph
    renderGraph(g, idx, rates, edgeRates, depth);

    // workers
    const wnames = new Set();
    const wm = ['qins_worker_cpu_seconds_total', 'qins_worker_rss_bytes', 'qins_worker_engine_bytes', 'qins_worker_device_bytes', 'qins_worker_restarts_total'];
    for (const n of wm) for (const m of idx.all(n)) if (m.labels.worker) wnames.add(m.labels.worker);
    if (g) for (const w of g.workers) wnames.add(w.name);
    const get = (n, w) => { const m = idx.all(n).find((x) => x.labels.worker === w); return m ? val(m) : null; };
    const cpu = {}, mem = {};
    const rows = [];
    for (const w of [...wnames].sort()) {
      const m = idx.all('qins_worker_cpu_seconds_total').find((x) => x.labels.worker === w);
      const p = m && pidx && pidx.byKey.get(key(m));
      const c = m && p && dt > 0 ? Math.max(0, (val(m) - val(p)) / dt) * 100 : null;
      if (c != null) cpu[w] = c;
      const rss = get('qins_worker_rss_bytes', w);
      if (rss != null) mem[w] = rss / 1048576;
      const stages = g ? (g.workers.find((x) => x.name === w) || { stages: [] }).stages.map((s) => s.name).join(', ') : '';
      let rs = get('qins_worker_restarts_total', w);
      if (g && g.restarts && w in g.restarts) rs = g.restarts[w];
      rows.push(`<tr data-worker="${esc(w)}"><td>${esc(w)}</td><td>${esc(stages)}</td><td>${c == null ? '–' : c.toFixed(0) + ' %'}</td>` +
        `<td>${fmtBytes(rss)}</td><td>${fmtBytes(get('qins_worker_engine_bytes', w))}</td><td>${fmtBytes(get('qins_worker_device_bytes', w))}</td>` +
        `<td${rs > 0 ? ' class="verdict-fail"' : ''}>${rs == null ? '–' : rs}</td></tr>`);
    }
    $('workers').tBodies[0].innerHTML = rows.length ? rows.join('') : '<tr><td colspan="7" class="empty">No worker metrics published yet.</td></tr>';
    if (Object.keys(cpu).length) pushSeries(charts['c-cpu'], label, cpu);
    if (Object.keys(mem).length) pushSeries(charts['c-mem'], label, mem);

    // QINS histograms
    renderHist('c-codes', 'codes-empty', 'codes-tensor', idx.all('qins_codes'),
      (x) => (typeof x[0] === 'number' ? String(Math.round(x[0] * 1000) / 1000) : 'other'));
    renderHist('c-err', 'err-empty', 'err-tensor', idx.all('qins_recon_error'),
      (x) => (typeof x[0] === 'number' ? '≤' + x[0].toExponential(0) : '>'));

    // evaluation stages (stages/eval_stage.h): every qins_eval_* gauge, with its stage's record count
    const evals = metrics.filter((m) => m.name.startsWith('qins_eval_') && m.name !== 'qins_eval_records_total' &&
      m.name !== 'qins_eval_scored_tokens_total');
    if (evals.length) {
      const recs = {};
      for (const m of idx.all('qins_eval_records_total')) recs[m.labels.stage] = (recs[m.labels.stage] || 0) + val(m);
      evals.sort((a, b) => key(a) < key(b) ? -1 : 1);
      $('evals').tBodies[0].innerHTML = evals.map((m) => {
        const l = Object.keys(m.labels || {}).filter((k) => k !== 'stage' && k !== 'worker').map((k) => k + '=' + m.labels[k]).join(' ');
        return `<tr><td>${esc(m.labels.stage || '')}</td><td>${esc(m.name.replace('qins_eval_', ''))}</td><td>${esc(l)}</td>` +
          `<td>${esc(typeof m.value === 'number' ? m.value.toPrecision(6) : '–')}</td><td>${fmtNum(recs[m.labels.stage] || 0, 0)}</td></tr>`;
      }).join('');
    }

    // gates
    const gates = (st.gates && st.gates.gates) || [];
    if (gates.length) {
      const done = gates.reduce((a, x) => a + Math.min(1, Math.max(0, x.progress || 0)), 0) / gates.length;
      $('gates-progress').textContent = (done * 100).toFixed(0) + ' % done · ' +
        gates.filter((x) => x.verdict === 'pass').length + ' pass · ' + gates.filter((x) => x.verdict === 'fail').length + ' fail';
      $('gates').tBodies[0].innerHTML = gates.map((x) => {
        const p = Math.min(1, Math.max(0, x.progress || 0));
        const v = x.verdict || 'running';
        return `<tr data-gate="${esc(x.name)}"><td>${esc(x.name)}</td><td><span class="bar"><span style="width:${(p * 100).toFixed(1)}%"></span></span> ${(p * 100).toFixed(0)}%</td>` +
          `<td>${esc(x.metric || '')}</td><td>${x.value == null ? '–' : esc(Number(x.value).toPrecision(4))}</td>` +
          `<td>${x.threshold == null ? '–' : esc(x.threshold)}</td><td class="verdict-${esc(v)}">${esc(v)}</td></tr>`;
      }).join('');
    } else {
      $('gates-progress').textContent = '';
      $('gates').tBodies[0].innerHTML = '<tr><td colspan="6" class="empty">No gates running.</td></tr>';
    }

    // training
    let loss = st.training && Array.isArray(st.training.loss) ? st.training.loss.map((p) => ({ x: p[0], y: p[1] })) : null;
    if (!loss) {
      const lg = idx.all('qins_train_loss')[0], sg = idx.all('qins_train_step')[0];
      if (lg && sg && (!lossFromGauges.length || lossFromGauges[lossFromGauges.length - 1].x !== val(sg))) lossFromGauges.push({ x: val(sg), y: val(lg) });
      loss = lossFromGauges.length ? lossFromGauges : null;
    }
    // several runs (the C3 pilot: fp, qins8, qins-f32): one line per run, the running one named in the title
    const runs = st.training && Array.isArray(st.training.runs) ? st.training.runs.filter((r) => Array.isArray(r.loss)) : [];
    $('loss-empty').hidden = !!loss || runs.length > 0;
    if (st.training && st.training.step != null)
      $('train-info').textContent = (st.training.run ? 'run ' + st.training.run + ' · ' : '') + 'step ' + st.training.step +
        (st.training.total_steps ? ' / ' + st.training.total_steps : '') +
        (st.training.lr != null ? ' · lr ' + Number(st.training.lr).toPrecision(3) : '') +
        (st.training.tokens_per_s ? ' · ' + Math.round(st.training.tokens_per_s) + ' tok/s' : '');
    else if (runs.length)
      $('train-info').textContent = runs.map((r) => r.name + ' ' + r.state).join(' · ');
    if (charts['c-loss']) {
      const ch = charts['c-loss'], palette = ['#f0b43c', '#4fa3e0', '#7bc96f', '#d9659b'];
      if (runs.length) {
        ch.data.datasets = runs.map((r, i) => ({ label: r.name + (r.tokens_per_s ? ' (' + Math.round(r.tokens_per_s) + ' tok/s)' : ''),
          data: r.loss.map((p) => ({ x: p[0], y: p[1] })), borderColor: palette[i % 4], backgroundColor: palette[i % 4], pointRadius: 0, borderWidth: 1.4 }));
      } else {
        if (ch.data.datasets.length !== 1) ch.data.datasets = ch.data.datasets.slice(0, 1);
        ch.data.datasets[0].data = loss ? loss.slice() : [];
      }
      ch.update('none');
    }

    prev = { t, idx };
  }

  let lastSeq = -1;
  function onState(st) {
    if (st.seq === lastSeq) return;
    lastSeq = st.seq;
    try { render(st); } catch (e) { console.error('render failed', e); }
  }

  function setConn(text, cls) { const c = $('conn'); c.textContent = text; c.className = 'value ' + cls; }
  fetch('api/state' + q, { credentials: 'same-origin' }).then((r) => r.json()).then((st) => { if (st.seq > 0) onState(st); }).catch(() => {});
  const es = new EventSource('events' + q);
  es.addEventListener('open', () => setConn('live', 'conn-ok'));
  es.addEventListener('error', () => setConn(es.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting', 'conn-bad'));
  es.addEventListener('state', (ev) => { setConn('live', 'conn-ok'); onState(JSON.parse(ev.data)); });
})();
