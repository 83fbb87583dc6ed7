// Browser test: a real headless Chromium opens the dashboard of a live pipeline, checks the graph
// shows the pipeline's stages and that counters advance, and saves a screenshot.
// Usage: node dashboard.test.mjs QINS_EXE SCREENSHOT.png [REPO_ROOT] [run|demo]
//   run:  a real pipeline (qins run pipelines/test/dashboard.yaml --dashboard), worker processes and all
//   demo: `qins monitor --demo` (synthetic; fills the QINS, gate and training panels too)
// Exits 77 (meson's "skipped") with a clear message when chromium or playwright-core is absent.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [qinsExe, shotPath, repoArg, modeArg] = process.argv.slice(2);
const mode = modeArg || 'run';
const repo = repoArg || path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
const chromiumPath = process.env.QINS_CHROMIUM || '/usr/bin/chromium';
const SKIP = 77;

function skip(why) {
  console.log(`SKIP: ${why}`);
  process.exit(SKIP);
}
if (!qinsExe || !shotPath) { console.error('usage: dashboard.test.mjs QINS_EXE SCREENSHOT.png [REPO_ROOT]'); process.exit(2); }
if (!fs.existsSync(chromiumPath)) skip(`no Chromium at ${chromiumPath} (scripts/setup.sh installs the Debian 'chromium' package)`);
let chromium;
try {
  const require = createRequire(path.join(repo, 'package.json'));
  ({ chromium } = require('playwright-core'));
} catch (e) {
  skip(`playwright-core not installed under ${repo}/node_modules (run scripts/setup.sh, which runs npm ci)`);
}

let failures = 0, passes = 0;
function check(ok, what) {
  if (ok) { passes++; console.log(`ok - ${what}`); } else { failures++; console.log(`not ok - ${what}`); }
}

// Start the pipeline with a dashboard on an ephemeral loopback port and read the printed URL.
const args = mode === 'demo'
  ? ['monitor', '--demo', '--duration', '120', '--monitor-tick-ms', '300']
  : ['run', path.join(repo, 'pipelines', 'test', 'dashboard.yaml'), '--quiet', '--dashboard', '127.0.0.1:0',
    '--monitor-tick-ms', '300', '--dashboard-wait', '--set', 'stages.mix1.options.delay_us=40000'];
const proc = spawn(qinsExe, args, { stdio: ['ignore', 'pipe', 'inherit'], env: Object.assign({}, process.env, { QINS_BIN: qinsExe }) });
const url = await new Promise((resolve, reject) => {
  let buf = '';
  const t = setTimeout(() => reject(new Error('no "dashboard:" line from qins within 20 s')), 20000);
  proc.stdout.on('data', (d) => {
    buf += d;
    const m = buf.match(/dashboard: (http:\/\/\S+)/);
    if (m) { clearTimeout(t); resolve(m[1]); }
  });
  proc.on('exit', (code) => reject(new Error(`qins exited early (${code})`)));
}).catch((e) => { console.log(`not ok - start pipeline: ${e.message}`); proc.kill(); process.exit(1); });
check(/^http:\/\/127\.0\.0\.1:\d+\/$/.test(url), `dashboard on loopback by default (${url})`);

// Expected stage names come from the pipeline itself (its published graph).
const state = await (await fetch(new URL('api/state', url))).json();
const graph = state.graph && state.graph.graph ? state.graph.graph : state.graph || {};
const expected = (graph.workers || []).flatMap((w) => w.stages.map((s) => (typeof s === 'string' ? s : s.name)));
check(expected.length > 0, `pipeline publishes its graph (${expected.join(', ')})`);

const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'qins-chromium-'));
let ctx;
try {
  ctx = await chromium.launchPersistentContext(userDir, {
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1400, height: 1000 },
  });
  const page = ctx.pages()[0] || await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  // Nothing may leave the machine: any request to another origin fails the test.
  const foreign = [];
  page.on('request', (r) => { if (!r.url().startsWith(new URL(url).origin) && !r.url().startsWith('data:')) foreign.push(r.url()); });

  await page.goto(url, { waitUntil: 'load', timeout: 20000 });
  await page.waitForSelector('#graph svg g.stage', { timeout: 20000 });
  const shown = await page.$$eval('#graph svg g.stage', (els) => els.map((e) => e.getAttribute('data-stage')));
  for (const s of expected) check(shown.includes(s), `graph shows stage '${s}'`);
  const text = await page.textContent('#graph');
  check(expected.every((s) => text.includes(s)), 'stage names are visible text in the graph');
  const workers = await page.$$eval('#graph svg g.worker', (els) => els.map((e) => e.getAttribute('data-worker')));
  check(workers.length === graph.workers.length && workers.every((w, i) => w === graph.workers[i].name),
    `stages grouped into workers (${workers.join(', ')})`);

  // Counters advance: the snapshot number and a stage's item count grow while we watch.
  const readCounters = () => page.evaluate(() => ({
    seq: Number(document.getElementById('seq').textContent),
    items: Array.from(document.querySelectorAll('#graph g.stage')).reduce((a, e) => a + Number(e.getAttribute('data-items')), 0),
  }));
  const c0 = await readCounters();
  await page.waitForFunction((s0) => Number(document.getElementById('seq').textContent) >= s0 + 3, c0.seq, { timeout: 30000 });
  const c1 = await readCounters();
  check(c1.seq > c0.seq, `snapshot counter advances (${c0.seq} -> ${c1.seq})`);
  check(c1.items > c0.items, `stage item counters advance (${c0.items} -> ${c1.items})`);
  check((await page.textContent('#conn')).trim() === 'live', 'event stream connected');
  check(!(await page.isVisible('#nocharts')), 'charting library loaded from our server');
  const drawn = await page.evaluate(() => window.Chart && Object.values(window.Chart.instances || {}).length);
  check(drawn >= 8, `charts created (${drawn})`);
  const rows = await page.$$eval('#workers tbody tr[data-worker]', (els) => els.map((e) => e.getAttribute('data-worker')));
  check(graph.workers.every((w) => rows.includes(w.name)), `worker table has a row per worker (${rows.join(', ')})`);
  await page.waitForFunction(() => Array.from(document.querySelectorAll('#workers tbody tr[data-worker] td:nth-child(3)')).every((td) => td.textContent.includes('%')), null, { timeout: 20000 });
  check(true, 'worker CPU is shown');
  if (mode === 'demo') {
    await page.waitForSelector('#gates tbody tr[data-gate]', { timeout: 20000 });
    check(true, 'gate table fills');
    check(!(await page.isVisible('#codes-empty')) && !(await page.isVisible('#loss-empty')), 'QINS and training panels show data');
  } else {
    check((await page.textContent('#gates')).includes('No gates running'), 'gate panel shows its empty state');
    const edgeText = await page.textContent('#graph svg');
    check(/\/s/.test(edgeText) && /q \d/.test(edgeText), 'edges show live rates and queue depth');
  }
  check(errors.length === 0, `no page errors${errors.length ? ': ' + errors.join(' | ') : ''}`);
  check(foreign.length === 0, `no request leaves the dashboard's origin${foreign.length ? ': ' + foreign.join(' ') : ''}`);

  fs.mkdirSync(path.dirname(path.resolve(shotPath)), { recursive: true });
  await page.screenshot({ path: shotPath, fullPage: true });
  check(fs.statSync(shotPath).size > 10000, `screenshot saved to ${shotPath}`);
} catch (e) {
  check(false, `browser run: ${e.message}`);
} finally {
  if (ctx) await ctx.close().catch(() => {});
  proc.kill('SIGTERM');
  fs.rmSync(userDir, { recursive: true, force: true });
}
console.log(`${passes} passed, ${failures} failed`);
process.exit(failures ? 1 : 0);
