/**
 * The status page at / on the metrics port: the per-round series behind its
 * charts, /status.json, the asset whitelist, and the page itself driven in
 * headless Chromium during a real run (coordinator + 2 worker processes).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { HttpServer } from '../src/coordinator/http-server.js';
import { LogThinning, RoundSeries } from '../src/coordinator/round-series.js';
import { medianStepMs, recordStepTime, STEP_WINDOW, type Member } from '../src/coordinator/membership.js';
import { statusJson } from '../src/coordinator/status.js';
import type { StatusJson } from '../src/coordinator/status.js';
import type { Coordinator, RunSummary } from '../src/coordinator/coordinator.js';
import { killAll, repoRoot, spawnWorker, startCoordinator, tinyCoordinatorConfig, waitFor, type WorkerProc } from './support/cluster.js';

const CHROMIUM = process.env.DPTRAIN_TEST_CHROMIUM ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const SCREENSHOT = path.join(repoRoot, 'test-artifacts', 'status-page.png');
/** A worker name a careless page would turn into markup. */
const HOSTILE_NAME = '<img src=x onerror="document.body.dataset.pwned=1"><b>alpha</b>';

test('round series: smoothed values, thinning keeps the whole run within capacity, incremental views', () => {
  const s = new RoundSeries(16, 0.9, 5000);
  let mono = 0;
  for (let step = 1; step <= 1000; step++) {
    mono += 10; // 100 tokens every 10 ms = 10,000 tokens/s
    s.add({ step, epoch: Math.floor(step / 100), loss: Math.log(20), tokens: 100, durationMs: 10 }, 1_000_000 + mono, mono);
  }
  const v = s.view();
  assert.ok(v.points.length < 16 && v.points.length >= 8, `${v.points.length} points`);
  assert.equal(v.points[0].step, 1, 'the first round survives thinning');
  assert.ok(v.stride >= 64 && (v.stride & (v.stride - 1)) === 0, `stride ${v.stride}`);
  for (let i = 1; i < v.points.length; i++) assert.equal(v.points[i].step - v.points[i - 1].step, v.stride, 'evenly spaced');
  assert.equal(v.latest?.step, 1000, 'the newest round is always reported');
  // A constant loss and rate smooth to exactly themselves: the EMAs are bias-corrected from the first round on.
  for (const p of v.points) {
    assert.ok(Math.abs(p.perplexity - 20) < 1e-9, `perplexity ${p.perplexity}`);
    assert.ok(Math.abs(p.tokensPerSecond - 10_000) < 1e-6, `tokens/s ${p.tokensPerSecond}`);
  }
  // Incremental: same generation -> only newer points; a stale generation -> everything.
  const lastKept = v.points.at(-1)!.step;
  assert.deepEqual(s.view(lastKept, v.generation).points, []);
  assert.deepEqual(s.view(v.points[1].step, v.generation).points.map((p) => p.step), v.points.slice(2).map((p) => p.step));
  assert.equal(s.view(lastKept, v.generation - 1).points.length, v.points.length);
  const gen = v.generation;
  for (let step = 1001; step <= 3000; step++) {
    mono += 10;
    s.add({ step, epoch: 10, loss: Math.log(20), tokens: 100, durationMs: 8 }, 1_000_000 + mono, mono);
  }
  assert.ok(s.view().generation > gen, 'thinning again bumps the generation');
  assert.ok(s.length < 16);

  // Throughput follows a change within a few time constants, rather than averaging the whole run.
  for (let i = 0; i < 300; i++) {
    mono += 10;
    s.add({ step: 3001 + i, epoch: 10, loss: 1, tokens: 50, durationMs: 8 }, 1_000_000 + mono, mono);
  }
  const now = s.view().latest!;
  assert.ok(Math.abs(now.tokensPerSecond - 5_000) < 5_000 * 0.6, `tokens/s after the change ${now.tokensPerSecond}`);
  assert.ok(now.tokensPerSecond < 10_000 * 0.9);
  assert.ok(Math.abs(now.perplexity - Math.E) < 1e-3, `perplexity after the change ${now.perplexity}`);
});

test('worker step time: the median of the recent rounds shrugs off one slow round; the window is bounded', () => {
  const m = { recentStepMs: [] as number[], lastStepMs: undefined as number | undefined };
  assert.equal(medianStepMs(m), undefined, 'no rounds yet');
  for (let i = 0; i < 50; i++) recordStepTime(m, 10 + (i % 3));
  recordStepTime(m, 500);
  assert.equal(m.lastStepMs, 500, 'the last step is the slow one');
  assert.equal(m.recentStepMs.length, STEP_WINDOW);
  assert.equal(medianStepMs(m), 11, 'the median is what the worker usually takes');
  // Even count: the mean of the two middle values.
  assert.equal(medianStepMs({ recentStepMs: [4, 1, 3, 2] }), 2.5);
  // Slow for most of the window: the median follows.
  for (let i = 0; i < STEP_WINDOW / 2 + 1; i++) recordStepTime(m, 80);
  assert.equal(medianStepMs(m), 80);
});

test('log history thinning: bounded, evenly spaced from the first entry, newest always last', () => {
  const t = new LogThinning(16);
  const log: { n: number }[] = [];
  const sizes: number[] = [];
  for (let n = 0; n < 10_000; n++) {
    t.push(log, { n });
    assert.ok(log.length <= 16, `length ${log.length} after ${n + 1} entries`);
    assert.equal(log.at(-1)!.n, n, 'the newest entry is last');
    assert.equal(log[0].n, 0, 'the first entry is kept');
    sizes.push(log.length);
  }
  const stride = t.currentStride;
  assert.ok(stride >= 512 && (stride & (stride - 1)) === 0, `stride ${stride}`);
  const kept = log.slice(0, -1);
  for (let i = 1; i < kept.length; i++) assert.equal(kept[i].n - kept[i - 1].n, stride, 'evenly spaced');
  assert.ok(kept.length >= 8, `${kept.length} kept`);
  assert.ok(Math.min(...sizes.slice(100)) >= 8, 'never thinned to nearly nothing');

  // A resumed run's history (already in the log before the first push) is adopted and thinned with the rest.
  const resumed = Array.from({ length: 100 }, (_, n) => ({ n }));
  const t2 = new LogThinning(16);
  t2.push(resumed, { n: 100 });
  assert.ok(resumed.length <= 16, `resumed length ${resumed.length}`);
  assert.equal(resumed[0].n, 0);
  assert.equal(resumed.at(-1)!.n, 100);
  for (let n = 101; n < 1000; n++) t2.push(resumed, { n });
  assert.ok(resumed.length <= 16 && resumed.at(-1)!.n === 999);
});

test('status page HTTP: page and assets with types and CSP, only whitelisted assets, ETag revalidation, /status.json', async () => {
  const c = await startCoordinator(tinyCoordinatorConfig({ epochs: 3, cell: 'gru' }));
  const http = new HttpServer(c);
  try {
    const port = await http.listen('127.0.0.1', 0);
    const base = `http://127.0.0.1:${port}`;
    const page = await fetch(`${base}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/);
    const html = await page.text();
    assert.ok(!/<script>|<script\s+(?![^>]*\bsrc=)/.test(html), 'no inline script (the CSP forbids it)');
    for (const src of html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)) {
      const r = await fetch(base + src[1]);
      assert.equal(r.status, 200, src[1]);
      await r.arrayBuffer();
    }
    const chart = await fetch(`${base}/assets/chart.umd.min.js`);
    assert.equal(chart.status, 200);
    assert.match(chart.headers.get('content-type') ?? '', /^text\/javascript/);
    const body = await chart.text();
    assert.ok(body.length > 100_000 && body.includes('Chart'), 'the Chart.js UMD build');
    const etag = chart.headers.get('etag');
    assert.ok(etag);
    const again = await fetch(`${base}/assets/chart.umd.min.js`, { headers: { 'if-none-match': etag } });
    assert.equal(again.status, 304);
    assert.match((await fetch(`${base}/assets/status.css`)).headers.get('content-type') ?? '', /^text\/css/);
    // Anything else under /assets/ is a 404, including files that exist next to the whitelisted ones.
    for (const p of ['/assets/chart.umd.min.js.map', '/assets/chart.js', '/assets/../package.json', '/assets/%2e%2e/package.json', '/assets/', '/assets/status.ts', '/node_modules/chart.js/dist/chart.umd.min.js']) {
      const r = await fetch(base + p);
      assert.equal(r.status, 404, p);
      await r.arrayBuffer();
    }
    assert.equal((await fetch(`${base}/`, { method: 'POST' })).status, 405);

    const s = (await (await fetch(`${base}/status.json`)).json()) as StatusJson;
    assert.equal(s.state, 'waiting', 'no worker yet, min-workers 1');
    assert.equal(s.epochs, 3);
    assert.equal(s.step, 0);
    assert.deepEqual(s.model, { name: 'char-gru', summary: c.model.summary, paramCount: c.model.paramCount, tokenizer: 'char' });
    assert.match(s.model.summary, /^GRU hidden 16, vocabulary \d+$/);
    assert.match(html, /id="model"/);
    assert.deepEqual(s.workers, []);
    assert.deepEqual(s.series.points, []);
    assert.equal(s.series.latest, null);
    // Malformed query parameters mean "send everything", not an error.
    assert.equal((await fetch(`${base}/status.json?since=abc&generation=`)).status, 200);
  } finally {
    await http.close();
    await stopRun(c, c.run());
    c.dispose();
  }
});

test('/status.json stays bounded over a long run: history thinned like the per-round series', { timeout: 120_000 }, async () => {
  // One round per epoch and a log line every epoch: more log entries than the history keeps, in seconds.
  const cfg = tinyCoordinatorConfig({ maxTokens: 60, batchSize: 4, numSteps: 10, hidden: 8, epochs: 1200, logEvery: 1 });
  const c = await startCoordinator(cfg);
  const http = new HttpServer(c);
  const procs: WorkerProc[] = [];
  let run: Promise<RunSummary> | undefined;
  try {
    const port = await http.listen('127.0.0.1', 0);
    procs.push(spawnWorker(`ws://127.0.0.1:${c.port}`));
    run = c.run();
    const sizes: number[] = [];
    const historyBytes: number[] = [];
    let s: StatusJson | undefined;
    while (!s || s.state !== 'done') {
      await new Promise((r) => setTimeout(r, 250));
      const body = await (await fetch(`http://127.0.0.1:${port}/status.json`)).text();
      sizes.push(body.length);
      s = JSON.parse(body) as StatusJson;
      historyBytes.push(JSON.stringify(s.history).length);
    }
    await run;
    assert.equal(s.epoch, 1200);
    const h = s.history;
    assert.ok(h.length < 300, `${h.length} history entries after 1200 log lines`);
    assert.equal(h[0].epoch, 1, 'the first log line is kept');
    assert.equal(h.at(-1)!.epoch, 1200, 'the last log line is kept');
    const gaps = new Set(h.slice(1, -1).map((e, i) => e.epoch - h[i].epoch));
    assert.equal(gaps.size, 1, `kept entries evenly spaced: gaps ${[...gaps]}`);
    assert.ok([...gaps][0] > 1, 'thinned');
    // Bounded at every poll, not only at the end: 1200 unthinned entries would be about 140 kB.
    assert.ok(Math.max(...historyBytes) < 40_000, `largest history ${Math.max(...historyBytes)} bytes`);
    assert.ok(Math.max(...sizes) < 400_000, `largest /status.json ${Math.max(...sizes)} bytes`);
    assert.ok(c.history.length === h.length, 'what is sent is what is kept (and checkpointed)');
  } finally {
    await reap(procs);
    await stopRun(c, run).catch(() => {});
    await http.close().catch(() => {});
    c.dispose();
  }
});

async function stopRun(c: Coordinator, run: Promise<RunSummary> | undefined): Promise<void> {
  c.stop('test finished');
  if (!run) return;
  const t = setTimeout(() => c.stop('test finished (abort the round)'), 10_000);
  try {
    await run;
  } finally {
    clearTimeout(t);
  }
}

async function reap(procs: WorkerProc[]): Promise<void> {
  killAll(procs);
  await Promise.all(procs.map((p) => Promise.race([p.exited, new Promise((r) => setTimeout(r, 10_000).unref())])));
}

test('status page in headless Chromium during a real run: charts with data, workers, sample, run state', { timeout: 150_000 }, async () => {
  assert.ok(
    fs.existsSync(CHROMIUM),
    `Chromium is required for this test and was not found at ${CHROMIUM} (Debian/Ubuntu: apt-get install chromium; .ci/run installs it)`,
  );
  const logs: string[] = [];
  // Many epochs so the run outlasts the browser checks; it is stopped at the end. Frequent
  // log lines and samples so validation points and a sample appear within seconds.
  const cfg = tinyCoordinatorConfig({ epochs: 100_000, minWorkers: 2, logEvery: 1, sampleEvery: 2, samplePrefix: 'time traveller' });
  const c = await startCoordinator(cfg, logs);
  const http = new HttpServer(c);
  const procs: WorkerProc[] = [];
  let run: Promise<RunSummary> | undefined;
  let browser: Browser | undefined;
  try {
    const port = await http.listen('127.0.0.1', 0);
    const url = `ws://127.0.0.1:${c.port}`;
    procs.push(spawnWorker(url, ['--name', HOSTILE_NAME]), spawnWorker(url, ['--name', 'beta']));
    run = c.run();
    await waitFor(() => c.membership.size === 2 && c.state.step > 30 && c.lastSample !== '' && c.history.length >= 2, 60_000, 'two workers training, a sample and two log lines');

    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const problems: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
    page.on('response', (r) => {
      if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
    });
    page.setDefaultTimeout(30_000);
    await page.goto(`http://127.0.0.1:${port}/`, { waitUntil: 'load' });

    // Charts: Chart.js instances on both canvases, with per-round points and validation points.
    await page.waitForFunction(() => {
      const C = (window as any).Chart;
      const p = C?.getChart('chart-perplexity');
      const t = C?.getChart('chart-throughput');
      return p && t && p.data.datasets[0].data.length > 5 && p.data.datasets[1].data.length > 0 && t.data.datasets[0].data.length > 5;
    });
    // Functions passed to the page must not define named functions: tsx would wrap them in a helper the page lacks.
    const lengths = () =>
      page.evaluate(() =>
        ['chart-perplexity', 'chart-throughput'].map((id) => (window as any).Chart.getChart(id).data.datasets.map((d: any) => d.data.length) as number[]),
      ).then(([perplexity, throughput]) => ({ perplexity, throughput }));
    const first = await lengths();
    // Live: the next polls add points without a reload.
    await page.waitForFunction((n) => (window as any).Chart.getChart('chart-perplexity').data.datasets[0].data.length > n, first.perplexity[0]);
    const [train, val, tps] = await page.evaluate(() =>
      ([['chart-perplexity', 0], ['chart-perplexity', 1], ['chart-throughput', 0]] as const).map(
        ([id, i]) => (window as any).Chart.getChart(id).data.datasets[i].data.map((p: any) => [p.x, p.y]) as [number, number][],
      ),
    );
    const points = { train, val, tps };
    for (const [name, pts] of Object.entries(points)) {
      for (let i = 0; i < pts.length; i++) {
        assert.ok(Number.isFinite(pts[i][1]) && pts[i][1] > 0, `${name}[${i}] = ${pts[i][1]}`);
        if (i > 0) assert.ok(pts[i][0] > pts[i - 1][0], `${name}: steps increase`);
      }
    }
    assert.ok(points.train.every(([, y]) => y < 200), 'train perplexity of a 28-symbol vocabulary stays in range');

    // The canvases hold drawn lines in the datasets' colours, not just axes.
    // One readback per canvas (Chrome warns about repeated ones), counting pixels of each dataset's colour.
    const [[trainInk, validationInk], [tpsInk]] = await page.evaluate(() =>
      ([['chart-perplexity', [[47, 111, 219], [224, 122, 31]]], ['chart-throughput', [[31, 157, 85]]]] as const).map(([id, colours]) => {
        const cv = document.getElementById(id) as HTMLCanvasElement;
        const d = cv.getContext('2d')!.getImageData(0, 0, cv.width, cv.height).data;
        const n = colours.map(() => 0);
        for (let i = 0; i < d.length; i += 4) {
          if (d[i + 3] <= 200) continue;
          colours.forEach((rgb, k) => {
            if (Math.abs(d[i] - rgb[0]) < 40 && Math.abs(d[i + 1] - rgb[1]) < 40 && Math.abs(d[i + 2] - rgb[2]) < 40) n[k]++;
          });
        }
        return n;
      }),
    );
    const inked = { train: trainInk, validation: validationInk, tps: tpsInk };
    assert.ok(inked.train > 200, `train line pixels: ${inked.train}`);
    assert.ok(inked.validation > 30, `validation pixels: ${inked.validation}`);
    assert.ok(inked.tps > 200, `throughput line pixels: ${inked.tps}`);

    // Workers table: both workers with their slot and backend, names shown as text.
    await page.waitForFunction(() => document.querySelectorAll('#workers tbody tr').length === 2);
    const rows = await page.$$eval('#workers tbody tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')));
    const members = c.membership.list();
    assert.equal(rows.length, 2);
    for (const m of members) {
      const row = rows.find((r) => r[1] === m.slot);
      assert.ok(row, `row for ${m.slot}: ${JSON.stringify(rows)}`);
      assert.equal(row[0], m.info.name);
      assert.equal(row[2], m.info.backend);
      assert.equal(row[3], m.info.device);
      assert.match(row[4], /^\d+(\.\d+)? m?s$/, `median step time ${row[4]}`);
      assert.match(row[5], /^\d+(\.\d+)? m?s$/, `last step time ${row[5]}`);
      assert.match(row[7], /^[\d,]+$/, `rounds ${row[7]}`);
      assert.ok(Number(row[7].replace(/,/g, '')) > 0);
      assert.match(row[9], /ago$/);
    }
    // Step time: the median of each worker's recent rounds, so one slow round does not make a worker look slow; the last one beside it.
    const headers = await page.$$eval('#workers thead th', (ths) => ths.map((th) => th.textContent ?? ''));
    assert.equal(headers[4], 'Step time median');
    assert.equal(headers[5], 'Last step');
    const medianTitles = await page.$$eval('#workers tbody tr', (trs) => trs.map((tr) => tr.querySelectorAll('td')[4].title));
    for (const t of medianTitles) assert.match(t, /^median of the last \d+ rounds$/);
    for (const w of statusJson(c).workers) {
      assert.ok(w.stepWindow >= 1 && w.stepWindow <= STEP_WINDOW, `window ${w.stepWindow}`);
      const recent = c.membership.list().find((m) => m.slot === w.slot)!.recentStepMs;
      assert.ok(w.stepMedianMs !== null && w.stepMedianMs >= Math.min(...recent) && w.stepMedianMs <= Math.max(...recent), `median ${w.stepMedianMs} of ${recent}`);
      assert.ok(w.stepMs !== null && w.stepMs > 0);
    }
    assert.deepEqual(rows.map((r) => r[0]).sort(), [HOSTILE_NAME, 'beta'].sort());
    assert.equal(await page.locator('#workers tbody img, #workers tbody b').count(), 0, 'a worker name must not become markup');
    assert.equal(await page.evaluate(() => document.body.dataset.pwned), undefined);
    assert.equal(await page.locator('#no-workers').isHidden(), true);

    // Sample: the latest generated text, the prefix first.
    await page.waitForFunction(() => (document.getElementById('sample')?.textContent ?? '').startsWith('time traveller'));
    const sample = (await page.locator('#sample').textContent()) ?? '';
    assert.ok(sample.length > 'time traveller'.length + 10, `sample: ${sample}`);
    assert.equal(await page.locator('#sample .prefix').textContent(), 'time traveller');

    // Run state.
    assert.equal(await page.locator('#state').textContent(), 'training');
    assert.match((await page.locator('#epoch').textContent()) ?? '', /^[\d,]+ \/ 100,000$/);
    const shownStep = Number(((await page.locator('#step').textContent()) ?? '').replace(/,/g, ''));
    assert.ok(shownStep > 30 && shownStep <= c.state.step, `step ${shownStep} vs ${c.state.step}`);
    assert.match((await page.locator('#workers-count').textContent()) ?? '', /^2\b/);
    assert.match((await page.locator('#tps').textContent()) ?? '', /^[\d,]+$/);
    assert.match((await page.locator('#val-ppl').textContent()) ?? '', /^\d+\.\d\d$/);

    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    assert.ok(fs.statSync(SCREENSHOT).size > 10_000);

    // Below --min-workers the run pauses, and the page says so.
    procs[1].child.kill('SIGKILL');
    await page.waitForFunction(() => document.getElementById('state')?.textContent === 'paused' && document.querySelectorAll('#workers tbody tr').length === 1);
    assert.equal(await page.locator('#state').getAttribute('data-state'), 'paused');

    assert.deepEqual(problems, [], 'no console errors, CSP violations, failed or 4xx requests');

    // The page notices a lost coordinator and keeps what it drew.
    await http.close();
    await page.waitForFunction(() => !(document.getElementById('conn') as HTMLElement).hidden, undefined, { timeout: 10_000 });
    const after = await lengths();
    assert.ok(after.perplexity[0] >= first.perplexity[0]);
  } finally {
    await browser?.close().catch(() => {});
    await reap(procs);
    await stopRun(c, run).catch(() => {});
    await http.close().catch(() => {});
    c.dispose();
  }
});
