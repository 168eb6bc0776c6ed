/**
 * Browser workers: the page at /worker on the coordinator's HTTP port, its
 * headers and files, and tabs of headless Chromium training in real runs
 * (WebGL2 on SwiftShader, Chromium's software GPU) next to a `worker join`
 * process: a run to the end, equivalence with the in-process loop, a tab
 * closed mid-run and a new one taking its place, a wrong token refused.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { chromium, type Browser, type Page } from 'playwright-core';
import { HttpServer } from '../src/coordinator/http-server.js';
import { joinLinkLines } from '../src/coordinator/join-link.js';
import { requestHostname, WORKER_BUNDLE } from '../src/coordinator/worker-page.js';
import { statusJson } from '../src/coordinator/status.js';
import type { Coordinator } from '../src/coordinator/coordinator.js';
import { uaFamily } from '../src/browser/ua.js';
import { loadCorpus } from '../src/shared/data/corpus-source.js';
import { initialParams, trainLocal } from '../src/shared/train/local-trainer.js';
import { buildBrowserWorker } from '../scripts/build-browser.js';
import { killAll, relativeError, spawnWorker, startCoordinator, tinyCoordinatorConfig, TOKEN, waitFor, type WorkerProc } from './support/cluster.js';

const CHROMIUM = process.env.DPTRAIN_TEST_CHROMIUM ?? '/usr/bin/chromium';
/** SwiftShader's WebGL2 (float render targets included) in a headless Chromium without a GPU. */
export const CHROMIUM_WEBGL_ARGS = ['--headless', '--no-sandbox', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
/**
 * Relative error of the parameters, a run with a webgl tab against the in-process loop (cpu backend).
 * Measured on SwiftShader: 1.8e-7 after 118 steps (BENCHMARKS.md, part browser); the bound is the one worker processes meet.
 */
const WEBGL_TOLERANCE = 1e-5;

let browser: Browser;
before(async () => {
  await buildBrowserWorker(WORKER_BUNDLE);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_WEBGL_ARGS, timeout: 30_000 });
});
after(async () => {
  await browser?.close();
});

interface Run {
  c: Coordinator;
  httpPort: number;
  logs: string[];
  close: () => Promise<void>;
}

async function startRun(over: Record<string, unknown>): Promise<Run> {
  const logs: string[] = [];
  const c = await startCoordinator(tinyCoordinatorConfig(over), logs);
  const server = new HttpServer(c);
  const httpPort = await server.listen('127.0.0.1', 0);
  return {
    c,
    httpPort,
    logs,
    close: async () => {
      await server.close();
      // A run that never started (or never ended) still listens: close its WebSocket port too, or the test process stays up.
      await c.ws.close();
      await c.dispose();
    },
  };
}

async function openTab(run: Run, fragment = `#token=${TOKEN}`, query = ''): Promise<Page> {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${run.httpPort}/worker${query}${fragment}`, { waitUntil: 'load' });
  return page;
}

const tabState = (page: Page) =>
  page.evaluate(() => ({
    state: document.body.dataset.state,
    backend: document.body.dataset.backend,
    detail: document.getElementById('detail')!.textContent,
    rounds: Number(document.getElementById('rounds')!.textContent),
    log: document.getElementById('log')!.textContent,
  }));

/** Polls the page until its state is one of `states`. */
async function tabReaches(page: Page, states: string[], timeoutMs: number): Promise<Awaited<ReturnType<typeof tabState>>> {
  const t0 = Date.now();
  for (;;) {
    const s = await tabState(page);
    if (states.includes(s.state ?? '') || Date.now() - t0 > timeoutMs) return s;
    await new Promise((r) => setTimeout(r, 50));
  }
}

function browserMembers(c: Coordinator) {
  return statusJson(c).workers.filter((w) => w.name.startsWith('browser:'));
}

function get(port: number, path: string, host = `127.0.0.1:${port}`): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers: { host } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
  });
}

test('the worker page, its script, config and wasm files are served from the coordinator with headers that keep it unframed and self-contained', async () => {
  const run = await startRun({ minWorkers: 1 });
  try {
    const page = await get(run.httpPort, '/worker');
    assert.equal(page.status, 200);
    const csp = String(page.headers['content-security-policy']);
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /script-src 'self' 'wasm-unsafe-eval'/);
    assert.match(csp, new RegExp(`connect-src 'self' ws://127\\.0\\.0\\.1:${run.c.port}(;|$)`), 'the WebSocket port on the host the page came from, nothing else');
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(csp, /unsafe-inline|\*|https?:/);
    assert.equal(page.headers['x-frame-options'], 'DENY');
    assert.equal(page.headers['x-content-type-options'], 'nosniff');
    assert.match(page.body.toString(), /<script type="module" src="\/worker\/worker\.js">/);
    assert.doesNotMatch(page.body.toString(), /<script>|\son\w+=/, 'no inline script or handlers');

    const js = await get(run.httpPort, '/worker/worker.js');
    assert.equal(js.status, 200);
    assert.match(String(js.headers['content-type']), /javascript/);
    assert.ok(js.body.length > 100_000, `the bundle holds tfjs: ${js.body.length} bytes`);
    const cfg = JSON.parse((await get(run.httpPort, '/worker/config.json')).body.toString());
    assert.deepEqual(cfg, { scheme: 'ws', port: run.c.port });
    const wasm = await get(run.httpPort, '/worker/wasm/tfjs-backend-wasm-simd.wasm');
    assert.equal(wasm.status, 200);
    assert.equal(wasm.headers['content-type'], 'application/wasm');
    assert.deepEqual([...wasm.body.subarray(0, 4)], [0x00, 0x61, 0x73, 0x6d], 'a wasm module');
    for (const p of ['/worker/wasm/../../package.json', '/worker/wasm/x.wasm', '/worker/nothing', '/worker/wasm/%2e%2e%2fpackage.json']) assert.equal((await get(run.httpPort, p)).status, 404, p);
    // The Host header goes into the CSP: anything but a host name or address is refused.
    assert.equal((await get(run.httpPort, '/worker', "evil.example; script-src *")).status, 400);
    assert.equal(requestHostname('[::1]:9400'), '[::1]');
    assert.equal(requestHostname('Example.org:80'), 'example.org');
  } finally {
    await run.close();
  }
});

test('the join link carries the token in the fragment, on a terminal only; browser names by user agent family', () => {
  assert.deepEqual(joinLinkLines('http://127.0.0.1:9400', 'a+b/c', true), ['join from a browser: http://127.0.0.1:9400/worker#token=a%2Bb%2Fc']);
  const piped = joinLinkLines('http://127.0.0.1:9400', 'secret-token-123', false);
  assert.equal(piped.length, 1);
  assert.match(piped[0], /http:\/\/127\.0\.0\.1:9400\/worker /);
  assert.doesNotMatch(piped[0], /secret-token-123/);
  assert.equal(uaFamily('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36'), 'Chrome');
  assert.equal(uaFamily('Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0'), 'Firefox');
  assert.equal(uaFamily('Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15'), 'Safari');
  assert.equal(uaFamily('Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36 Edg/140.0.0.0'), 'Edge');
});

test('a worker process and a webgl tab train a run to the end, the tab visible on the status page, and end at the in-process loop\'s parameters', async () => {
  const run = await startRun({ minWorkers: 2, epochs: 2 });
  const procs: WorkerProc[] = [];
  try {
    procs.push(spawnWorker(`ws://127.0.0.1:${run.c.port}`));
    const page = await openTab(run);
    const done = run.c.run();
    await waitFor(() => browserMembers(run.c).some((w) => w.rounds > 0), 120_000, 'the tab to compute a round');
    const seen = browserMembers(run.c)[0];
    assert.equal(seen.name, 'browser:Chrome');
    assert.equal(seen.backend, 'webgl');
    assert.match(seen.device, /SwiftShader/i, 'the device is the renderer WebGL names');
    assert.equal(seen.host, 'browser');
    const metrics = await run.c.metrics.registry.metrics();
    assert.match(metrics, new RegExp(`dptrain_worker_info\\{worker="${seen.slot}",name="browser:Chrome",backend="webgl",device="[^"]*SwiftShader[^"]*"\\} 1`));
    const summary = await done;
    assert.equal(summary.reason, 'done');
    const tab = await tabReaches(page, ['done'], 10_000);
    assert.equal(tab.state, 'done', `the tab says ${JSON.stringify(tab)}`);
    assert.equal(tab.backend, 'webgl');
    assert.ok(tab.rounds > 0 && tab.rounds <= run.c.server.version, `the tab computed ${tab.rounds} of ${run.c.server.version} rounds`);
    await page.close();

    const cfg = run.c.cfg;
    const { corpus } = await loadCorpus(cfg.corpus, { dataDir: '.', maxTokens: cfg.maxTokens, valFraction: cfg.valFraction, preprocess: cfg.preprocess });
    const local = trainLocal(cfg, corpus);
    assert.equal(run.c.server.version, local.server.version, 'same number of optimizer steps');
    const rel = relativeError(run.c.server.params(), local.server.params());
    const moved = relativeError(run.c.server.params(), initialParams(cfg, run.c.model));
    console.log(`# browser-equivalence {"backend":"webgl","steps":${run.c.server.version},"tabRounds":${tab.rounds},"relativeError":${rel},"moved":${moved}}`);
    assert.ok(moved > 1e-2, `parameters moved only ${moved.toExponential(2)} from their init`);
    assert.ok(rel <= WEBGL_TOLERANCE, `parameters differ: relative error ${rel.toExponential(2)} after ${run.c.server.version} steps`);
    local.server.dispose();
  } finally {
    killAll(procs);
    await run.close();
  }
});

test('a tab closed mid-run is a leave: training goes on with the worker process, and a new tab takes streams', async () => {
  const run = await startRun({ minWorkers: 1, epochs: 40 });
  const procs: WorkerProc[] = [];
  try {
    procs.push(spawnWorker(`ws://127.0.0.1:${run.c.port}`));
    const first = await openTab(run);
    const done = run.c.run();
    await waitFor(() => browserMembers(run.c).some((w) => w.rounds >= 3), 120_000, 'the first tab to compute 3 rounds');
    const firstJoined = browserMembers(run.c)[0].joinedAt;
    await first.close({ runBeforeUnload: true });
    await waitFor(() => browserMembers(run.c).length === 0, 20_000, 'the closed tab to leave');
    const stepAtLeave = run.c.state.step;
    await waitFor(() => run.c.state.step >= stepAtLeave + 3, 60_000, 'training to go on without the tab');
    assert.ok(statusJson(run.c).workers.length === 1, 'the worker process alone');

    const second = await openTab(run);
    await waitFor(() => browserMembers(run.c).some((w) => w.rounds >= 3), 120_000, 'the new tab to compute 3 rounds');
    const now = browserMembers(run.c);
    assert.equal(now.length, 1);
    assert.ok(now[0].tokens > 0, 'the new tab is given streams');
    assert.ok(now[0].joinedAt > firstJoined, 'a new member, not the first tab back');
    // The page sends a leave on pagehide; when the socket closes first the coordinator sees a disconnect: either way the tab is gone.
    const leave = run.logs.find((l) => /^worker \S+ left \((leave|disconnect)\)/.test(l));
    assert.ok(leave, `the coordinator logged the leave:\n${run.logs.join('\n')}`);
    console.log(`# tab-close ${JSON.stringify({ leave })}`);
    run.c.stop('test done');
    const summary = await done;
    assert.equal(summary.reason, 'stopped');
    await second.close();
  } finally {
    killAll(procs);
    await run.close();
  }
});

test('a wrong token in the fragment is refused with ERR_BAD_TOKEN and the page says so; without a token the page asks for one', async () => {
  const run = await startRun({ minWorkers: 1 });
  try {
    const wrong = await openTab(run, '#token=not-the-token-0000000');
    const s = await tabReaches(wrong, ['refused', 'error', 'done'], 60_000);
    assert.equal(s.state, 'refused', JSON.stringify(s));
    assert.match(s.detail ?? '', /ERR_BAD_TOKEN/);
    assert.equal(run.c.membership.size, 0, 'nobody joined');
    await wrong.close();

    const none = await openTab(run, '');
    const asked = await tabReaches(none, ['needs-token'], 30_000);
    assert.equal(asked.state, 'needs-token');
    assert.equal(await none.isVisible('#token-form'), true);
    // The token typed into the form joins like the fragment's.
    await none.fill('#token-input', TOKEN);
    await none.click('button[type=submit]');
    await waitFor(() => run.c.membership.size === 1, 60_000, 'the tab to join with the typed token');
    assert.equal(await none.isVisible('#token-form'), false);
    await none.close();
  } finally {
    await run.close();
  }
});

test('a frozen tab misses its round deadline and is dropped; training goes on with the worker process', async () => {
  const run = await startRun({ minWorkers: 1, epochs: 40, roundTimeout: 2 });
  const procs: WorkerProc[] = [];
  try {
    procs.push(spawnWorker(`ws://127.0.0.1:${run.c.port}`));
    const page = await openTab(run);
    const done = run.c.run();
    await waitFor(() => browserMembers(run.c).some((w) => w.rounds >= 3), 120_000, 'the tab to compute 3 rounds');
    // Freeze the tab's main thread for 12 s, as a browser freezing a tab would: no step, no reply.
    await page.evaluate(() => {
      setTimeout(() => {
        const t = Date.now();
        while (Date.now() - t < 12_000);
      }, 0);
    });
    await waitFor(() => run.logs.some((l) => /^worker \S+ left \(timeout\)/.test(l)), 30_000, 'the frozen tab to be dropped at the deadline');
    const step = run.c.state.step;
    await waitFor(() => run.c.state.step >= step + 3, 60_000, 'training to go on without the frozen tab');
    run.c.stop('test done');
    assert.equal((await done).reason, 'stopped');
    await page.close();
  } finally {
    killAll(procs);
    await run.close();
  }
});
