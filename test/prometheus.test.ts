/**
 * The metrics against real Prometheus tooling: `promtool check metrics` on
 * real scrapes, and a real Prometheus server, configured from
 * deploy/prometheus/prometheus.yml and rules.yml, scraping a coordinator and
 * two workers through a short training run, answering every query of the
 * Grafana dashboard (its variables substituted). Also over real HTTP: gauges
 * that are not known yet are absent, the checkpoint metrics, and what /readyz
 * means for the coordinator and for a worker.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import YAML from 'yaml';
import { encode, PROTOCOL_VERSION } from '../src/shared/wire/protocol.js';
import { CHECKPOINT_FILE } from '../src/shared/store/checkpoint.js';
import { HttpServer } from '../src/coordinator/http-server.js';
import type { Coordinator, RunSummary } from '../src/coordinator/coordinator.js';
import { killAll, repoRoot, spawnWorker, startCoordinator, tinyCoordinatorConfig, tmpDir, waitFor, type WorkerProc } from './support/cluster.js';
import { freePort } from './support/proc.js';

const PROMETHEUS = process.env.DPTRAIN_TEST_PROMETHEUS ?? '/usr/bin/prometheus';
const PROMTOOL = process.env.DPTRAIN_TEST_PROMTOOL ?? 'promtool';
const DEPLOY = path.join(repoRoot, 'deploy');
/** Long enough that every [1m] window of the dashboard and the rules holds a full minute of 1 s scrapes. */
const SCRAPE_FOR_MS = 62_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A coordinator (this process) with metrics on loopback and two worker processes that serve their own /metrics. */
async function cluster(epochs: number) {
  // Checkpoints every 20 steps, so that the dashboard's checkpoint age has data.
  const ckptDir = tmpDir('dptrain-prom-ckpt-');
  const cfg = tinyCoordinatorConfig({ epochs, minWorkers: 2, logEvery: 1, sampleEvery: 0, checkpointDir: ckptDir, checkpointEvery: 20 });
  const logs: string[] = [];
  const c = await startCoordinator(cfg, logs);
  const http = new HttpServer(c);
  const procs: WorkerProc[] = [];
  let run: Promise<RunSummary> | undefined;
  const metricsPort = await http.listen('127.0.0.1', 0);
  const url = `ws://127.0.0.1:${c.port}`;
  for (let i = 0; i < 2; i++) procs.push(spawnWorker(url, ['--name', `prom-${i}`, '--metrics-host', '127.0.0.1', '--metrics-port', '0']));
  const workerPorts = async (): Promise<number[]> => {
    const re = /worker metrics on http:\/\/127\.0\.0\.1:(\d+)\/metrics/;
    await waitFor(() => procs.every((p) => re.test(p.output())), 30_000, `the workers' metrics ports (${procs.map((p) => p.output()).join('\n')})`);
    return procs.map((p) => Number(re.exec(p.output())![1]));
  };
  return {
    c,
    logs,
    metricsPort,
    workerPorts,
    start: () => (run = c.run()),
    async close(): Promise<void> {
      killAll(procs);
      await Promise.all(procs.map((p) => Promise.race([p.exited, new Promise((r) => setTimeout(r, 10_000).unref())])));
      c.stop('test finished');
      if (run) {
        const t = setTimeout(() => c.stop('test finished (abort the round)'), 10_000);
        await run.catch(() => {});
        clearTimeout(t);
      }
      await http.close();
      await c.dispose();
      fs.rmSync(ckptDir, { recursive: true, force: true });
    },
  };
}

function promtoolCheckMetrics(exposition: string): { status: number | null; output: string; error?: Error } {
  const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: exposition, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, output: `${r.stdout ?? ''}${r.stderr ?? ''}`, error: r.error };
}

test('promtool check metrics accepts real scrapes of the coordinator and of both workers', { timeout: 90_000 }, async () => {
  const probe = promtoolCheckMetrics('');
  assert.ok(!probe.error, `promtool is required for this test (Debian/Ubuntu: apt-get install prometheus; .ci/run installs it): ${probe.error?.message}`);
  const cl = await cluster(100_000);
  try {
    cl.start();
    const ports = await cl.workerPorts();
    await waitFor(() => cl.c.membership.size === 2 && cl.c.state.step >= 20 && cl.c.history.length > 0, 60_000, 'some rounds with both workers');
    const scrapes: Array<[string, string]> = [[`coordinator :${cl.metricsPort}`, await (await fetch(`http://127.0.0.1:${cl.metricsPort}/metrics`)).text()]];
    for (const p of ports) scrapes.push([`worker :${p}`, await (await fetch(`http://127.0.0.1:${p}/metrics`)).text()]);
    for (const [who, text] of scrapes) {
      // The scrape is the real thing: training has been counted in it.
      assert.match(text, who.startsWith('coordinator') ? /^dptrain_steps_total [1-9]\d*$/m : /^dptrain_worker_steps_total [1-9]\d*$/m, who);
      // The coordinator's dptrain_info names the model it trains.
      if (who.startsWith('coordinator')) assert.match(text, /^dptrain_info\{[^}]*model="char-lstm",model_hyper="hidden=\d+"[^}]*\} 1$/m, who);
      const r = promtoolCheckMetrics(text);
      assert.equal(r.status, 0, `promtool check metrics on the ${who} scrape:\n${r.output}`);
      assert.equal(r.output.trim(), '', `${who}: promtool printed problems`);
    }
    // promtool is strict enough to catch the kind of problem this guards against.
    const bad = promtoolCheckMetrics('# HELP x_total A gauge.\n# TYPE x_total gauge\nx_total 1\n');
    assert.notEqual(bad.status, 0, bad.output);
  } finally {
    await cl.close();
  }
});


/** Says hello with a wrong token; resolves when the coordinator has closed the socket. */
function refuseOne(url: string): Promise<void> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    ws.on('open', () => ws.send(encode({ type: 'hello', version: PROTOCOL_VERSION, token: 'not-the-token-0123456789', info: { backend: 'cpu', device: 'cpu', host: 'test', pid: 1 } })));
    ws.on('close', () => resolve());
    ws.on('error', () => {});
  });
}

const DASHBOARD = JSON.parse(fs.readFileSync(path.join(DEPLOY, 'grafana', 'dashboards', 'dptrain.json'), 'utf8'));

/**
 * A query as Grafana sends it: the job and instance variables at "All" (their allValue) and
 * $__rate_interval at a minute (Grafana makes it at least four scrape intervals).
 */
function substitute(expr: string): string {
  const vars = new Map<string, any>(DASHBOARD.templating.list.map((v: any) => [v.name, v]));
  const out = expr
    .replace(/\$__rate_interval\b/g, '1m')
    .replace(/\$(job|instance)\b/g, (_m, name: string) => vars.get(name).allValue);
  assert.ok(!out.includes('$'), `a variable left in ${out}`);
  return out;
}

/** Every `expr` of every panel (rows included) of the Grafana dashboard, its variables substituted. */
function dashboardExprs(): Array<{ panel: string; expr: string }> {
  const out: Array<{ panel: string; expr: string }> = [];
  const walk = (panels: any[]): void => {
    for (const p of panels ?? []) {
      for (const t of p.targets ?? []) if (typeof t.expr === 'string' && t.expr.trim()) out.push({ panel: `${p.title} / ${t.refId}`, expr: substitute(t.expr) });
      walk(p.panels);
    }
  };
  walk(DASHBOARD.panels);
  return out;
}

/** deploy/prometheus/prometheus.yml with its targets moved to this run's ports and 1 s intervals. */
function writePrometheusConfig(dir: string, coordinatorPort: number, workerPorts: number[]): string {
  const config = YAML.parse(fs.readFileSync(path.join(DEPLOY, 'prometheus', 'prometheus.yml'), 'utf8'));
  config.global = { ...config.global, scrape_interval: '1s', evaluation_interval: '1s', scrape_timeout: '1s' };
  // No Alertmanager in this test (deploy/alertmanager/ is checked by test/deploy.test.ts).
  assert.ok(config.alerting?.alertmanagers?.length > 0, 'prometheus.yml sends alerts to an Alertmanager');
  delete config.alerting;
  const ruleFiles: string[] = config.rule_files ?? [];
  assert.ok(ruleFiles.length > 0, 'prometheus.yml loads the rules');
  for (const f of ruleFiles) fs.copyFileSync(path.join(DEPLOY, 'prometheus', f), path.join(dir, path.basename(f)));
  config.rule_files = ruleFiles.map((f) => path.join(dir, path.basename(f)));
  // This run has no relay (test/relays.test.ts scrapes one): its job is left out here.
  config.scrape_configs = config.scrape_configs.filter((j: any) => j.job_name !== 'dptrain-relay');
  const targets: Record<string, string[]> = {
    'dptrain-coordinator': [`127.0.0.1:${coordinatorPort}`],
    'dptrain-worker': workerPorts.map((p) => `127.0.0.1:${p}`),
  };
  assert.deepEqual(config.scrape_configs.map((j: any) => j.job_name).sort(), Object.keys(targets).sort(), 'the scrape jobs of prometheus.yml');
  for (const job of config.scrape_configs) {
    assert.equal(job.static_configs.length, 1, `${job.job_name}: one static_configs entry`);
    // The deployed target count is the one the test stands in for: one coordinator, two workers.
    assert.equal(job.static_configs[0].targets.length, targets[job.job_name].length, `${job.job_name}: targets`);
    job.static_configs[0].targets = targets[job.job_name];
  }
  const file = path.join(dir, 'prometheus.yml');
  fs.writeFileSync(file, YAML.stringify(config));
  return file;
}

interface Prom {
  child: ChildProcess;
  base: string;
  output: () => string;
  exited: Promise<unknown>;
}

function startPrometheus(configFile: string, dataDir: string, port: number): Prom {
  const child = spawn(PROMETHEUS, [
    `--config.file=${configFile}`,
    `--storage.tsdb.path=${dataDir}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: Buffer) => (out = (out + d).slice(-20_000));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise((r) => child.once('exit', r));
  return { child, base: `http://127.0.0.1:${port}`, output: () => out, exited };
}

async function stopPrometheus(p: Prom): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), 10_000);
  await p.exited;
  clearTimeout(t);
}

async function api(p: Prom, pathAndQuery: string): Promise<any> {
  const r = await fetch(p.base + pathAndQuery, { signal: AbortSignal.timeout(10_000) });
  const body: any = await r.json();
  assert.equal(body.status, 'success', `${pathAndQuery}: ${JSON.stringify(body).slice(0, 500)}`);
  return body.data;
}

const query = (p: Prom, q: string): Promise<any> => api(p, `/api/v1/query?query=${encodeURIComponent(q)}`);

test('Prometheus with the deploy config and rules scrapes a real run; every Grafana query returns data', { timeout: 150_000 }, async () => {
  assert.ok(
    fs.existsSync(PROMETHEUS),
    `Prometheus is required for this test and was not found at ${PROMETHEUS} (Debian/Ubuntu: apt-get install prometheus; .ci/run installs it)`,
  );
  const dir = tmpDir('dptrain-prometheus-');
  const cl = await cluster(100_000);
  let prom: Prom | undefined;
  try {
    const workerPorts = await cl.workerPorts();
    const configFile = writePrometheusConfig(dir, cl.metricsPort, workerPorts);
    const check = spawnSync(PROMTOOL, ['check', 'config', configFile], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(check.status, 0, `promtool check config on the generated config:\n${check.stdout}${check.stderr}`);

    prom = startPrometheus(configFile, path.join(dir, 'data'), await freePort());
    const p = prom;
    const deadline = Date.now() + 30_000;
    for (;;) {
      assert.ok(p.child.exitCode === null, `prometheus exited (${p.child.exitCode}):\n${p.output()}`);
      const ok = await fetch(`${p.base}/-/ready`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.ok, () => false);
      if (ok) break;
      assert.ok(Date.now() < deadline, `prometheus not ready within 30 s:\n${p.output()}`);
      await sleep(200);
    }
    const scrapingSince = Date.now();
    cl.start();

    // The rules loaded: both groups of rules.yml, every rule in them.
    const deployedRules = YAML.parse(fs.readFileSync(path.join(DEPLOY, 'prometheus', 'rules.yml'), 'utf8'));
    const loaded = await api(p, '/api/v1/rules');
    assert.deepEqual(
      loaded.groups.map((g: any) => g.name).sort(),
      deployedRules.groups.map((g: any) => g.name).sort(),
      'rule groups loaded',
    );
    for (const g of deployedRules.groups) {
      const lg = loaded.groups.find((x: any) => x.name === g.name);
      assert.equal(lg.rules.length, g.rules.length, `${g.name}: rules loaded`);
    }

    // All three targets are scraped successfully.
    await waitFor(() => cl.c.membership.size === 2, 30_000, 'both workers to join');
    const targetsUp = async () => {
      const t = await api(p, '/api/v1/targets?state=active');
      return t.activeTargets.map((x: any) => `${x.labels.job} ${x.scrapeUrl} ${x.health} ${x.lastError}`) as string[];
    };
    let targets: string[] = [];
    for (const until = Date.now() + 20_000; Date.now() < until; await sleep(500)) {
      targets = await targetsUp();
      if (targets.length === 3 && targets.every((t) => / up $/.test(t))) break;
    }
    assert.equal(targets.length, 3, targets.join('\n'));
    for (const t of targets) assert.match(t, / up $/, `target not up: ${t}`);

    // A connection with a wrong token: refused and counted, so the refusals panel has a series.
    await refuseOne(`ws://127.0.0.1:${cl.c.port}`);

    // Train while Prometheus fills its [1m] windows.
    await sleep(Math.max(0, SCRAPE_FOR_MS - (Date.now() - scrapingSince)));
    assert.equal(cl.c.membership.size, 2, 'both workers trained throughout');
    assert.ok(cl.c.state.step > 100, `steps: ${cl.c.state.step}`);
    assert.ok(cl.c.history.some((h) => h.validationPerplexity !== undefined), 'validation perplexity was computed');

    // Every PromQL expression of the Grafana dashboard returns a non-empty result of finite numbers.
    const exprs = dashboardExprs();
    assert.ok(exprs.length >= 20, `dashboard queries: ${exprs.length}`);
    // One scrape that misses its 1 s timeout on a loaded machine marks a target's series stale for
    // an instant, so a miss is retried for a few seconds before it counts.
    let problems: string[] = [];
    for (const until = Date.now() + 15_000; ; await sleep(1_000)) {
      problems = [];
      for (const { panel, expr } of exprs) {
        const d = await query(p, expr);
        const samples: Array<[number, string]> = d.resultType === 'vector' ? d.result.map((s: any) => s.value) : d.resultType === 'scalar' ? [d.result] : [];
        if (samples.length === 0) problems.push(`${panel}: ${expr} -> no data ${JSON.stringify(d)}`);
        for (const [, v] of samples) if (!Number.isFinite(Number(v))) problems.push(`${panel}: ${expr} -> ${v}`);
      }
      if (problems.length === 0 || Date.now() > until) break;
    }
    assert.deepEqual(problems, [], 'dashboard queries without a finite result');

    // The dashboard's job and instance variables list both jobs and all three processes.
    const jobs = await api(p, `/api/v1/label/job/values?match[]=${encodeURIComponent('dptrain_info')}`);
    assert.deepEqual([...jobs].sort(), ['dptrain-coordinator', 'dptrain-worker']);
    const instances = await api(p, `/api/v1/label/instance/values?match[]=${encodeURIComponent('dptrain_info{job=~".+"}')}`);
    assert.equal(instances.length, 3, `instances: ${instances}`);

    // Per-worker panels see both workers.
    const perWorker = await query(p, 'sum by (worker) (rate(dptrain_worker_tokens_total[1m]))');
    assert.deepEqual(perWorker.result.map((s: any) => s.metric.worker).sort(), ['w0', 'w1']);
    for (const s of perWorker.result) assert.ok(Number(s.value[1]) > 0, `worker ${s.metric.worker} tokens/s ${s.value[1]}`);
    const tps = await query(p, 'rate(dptrain_tokens_total[1m])');
    assert.equal(tps.result.length, 1);
    assert.ok(Number(tps.result[0].value[1]) > 0, `rate(dptrain_tokens_total[1m]) = ${tps.result[0].value[1]}`);
    // The workers' own metrics arrive under their job.
    const workerSteps = await query(p, 'sum by (instance) (rate(dptrain_worker_steps_total{job="dptrain-worker"}[1m]))');
    assert.equal(workerSteps.result.length, 2);
    for (const s of workerSteps.result) assert.ok(Number(s.value[1]) > 0, `${s.metric.instance} steps/s ${s.value[1]}`);

    // The rules evaluate cleanly; the recording rules hold data; a healthy run fires no alert.
    const evaluated = await api(p, '/api/v1/rules');
    for (const g of evaluated.groups) {
      for (const r of g.rules) assert.equal(r.health, 'ok', `${g.name}/${r.name}: ${r.health} ${r.lastError ?? ''}`);
    }
    const recorded = await query(p, 'dptrain:tokens_per_second:rate1m');
    assert.equal(recorded.result.length, 1, 'recording rule dptrain:tokens_per_second:rate1m');
    assert.ok(Number(recorded.result[0].value[1]) > 0);
    const alerts = await api(p, '/api/v1/alerts');
    const firing = alerts.alerts.filter((a: any) => a.state === 'firing').map((a: any) => a.labels.alertname);
    assert.deepEqual(firing, [], 'alerts firing during a healthy run');
  } finally {
    if (prom) await stopPrometheus(prom);
    await cl.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** The value of an unlabelled sample in an exposition, or undefined when there is none. */
function sampleOf(text: string, name: string): string | undefined {
  return new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1];
}

/** Gauges whose value is not known when a coordinator starts (no step, evaluation or checkpoint yet). */
const UNKNOWN_AT_START = [
  'dptrain_train_loss',
  'dptrain_train_perplexity',
  'dptrain_validation_perplexity',
  'dptrain_gradient_norm',
  'dptrain_tokens_per_second',
  'dptrain_last_step_timestamp_seconds',
  'dptrain_last_checkpoint_timestamp_seconds',
];

test('unknown gauges are absent until known; checkpoint time and failures; /readyz of a worker and of the coordinator', { timeout: 120_000 }, async () => {
  const probe = promtoolCheckMetrics('');
  assert.ok(!probe.error, `promtool is required for this test: ${probe.error?.message}`);
  const ckptDir = tmpDir('dptrain-ckpt-');
  const wsPort = await freePort();
  // The worker first: nothing listens on the coordinator's port yet, so it is alive but not ready.
  const worker = spawnWorker(`ws://127.0.0.1:${wsPort}`, ['--name', 'probe-0', '--metrics-host', '127.0.0.1', '--metrics-port', '0']);
  let c: Coordinator | undefined;
  let http: HttpServer | undefined;
  try {
    const re = /worker metrics on http:\/\/127\.0\.0\.1:(\d+)\/metrics/;
    await waitFor(() => re.test(worker.output()), 30_000, `the worker's metrics port (${worker.output()})`);
    const wbase = `http://127.0.0.1:${re.exec(worker.output())![1]}`;
    const status = async (url: string): Promise<number> => (await fetch(url)).status;
    assert.equal(await status(`${wbase}/healthz`), 200);
    assert.equal(await status(`${wbase}/readyz`), 503, 'a worker without a coordinator is not ready');

    c = await startCoordinator(tinyCoordinatorConfig({ port: wsPort, epochs: 1, logEvery: 1, checkpointDir: ckptDir, checkpointEvery: 0 }));
    http = new HttpServer(c);
    const base = `http://127.0.0.1:${await http.listen('127.0.0.1', 0)}`;
    const scrape = async (): Promise<string> => (await fetch(`${base}/metrics`)).text();

    // Before any step: the unknown gauges have HELP and TYPE but no sample; promtool accepts that.
    const before = await scrape();
    for (const name of UNKNOWN_AT_START) {
      assert.match(before, new RegExp(`^# TYPE ${name} gauge$`, 'm'), name);
      assert.equal(sampleOf(before, name), undefined, `${name} must be absent before it is known, not 0`);
    }
    assert.equal(sampleOf(before, 'dptrain_checkpoint_failures_total'), '0', 'the failure counter starts at 0');
    assert.equal(sampleOf(before, 'dptrain_step'), '0');
    const check = promtoolCheckMetrics(before);
    assert.equal(check.status, 0, check.output);
    assert.equal(check.output.trim(), '', `promtool printed problems: ${check.output}`);
    // Listening and not training yet: accepting workers, so ready.
    assert.equal(await status(`${base}/readyz`), 200, 'the coordinator accepts workers before --min-workers have joined');
    await waitFor(() => c!.membership.size === 1, 30_000, 'the worker to join');
    for (let t0 = Date.now(); (await status(`${wbase}/readyz`)) !== 200; ) {
      assert.ok(Date.now() - t0 < 10_000, 'the worker is ready once welcomed');
      await sleep(100);
    }

    // A failed checkpoint write counts and leaves the timestamp unknown; a good one sets it.
    const blocker = path.join(ckptDir, `.${CHECKPOINT_FILE}.tmp-${process.pid}`);
    fs.mkdirSync(blocker);
    assert.equal(await c.checkpoint(), undefined, 'the write fails (its temp file is a directory)');
    fs.rmdirSync(blocker);
    let text = await scrape();
    assert.equal(sampleOf(text, 'dptrain_checkpoint_failures_total'), '1');
    assert.equal(sampleOf(text, 'dptrain_last_checkpoint_timestamp_seconds'), undefined);
    const t1 = Date.now() / 1000;
    assert.ok(await c.checkpoint(), 'the write succeeds');
    text = await scrape();
    const written = Number(sampleOf(text, 'dptrain_last_checkpoint_timestamp_seconds'));
    assert.ok(written >= t1 - 1 && written <= Date.now() / 1000 + 1, `last checkpoint ${written}, now ${Date.now() / 1000}`);

    // Train to the end: every gauge is known and finite; a finished coordinator is not ready.
    const summary = await c.run();
    assert.equal(summary.reason, 'done');
    text = await scrape();
    for (const name of UNKNOWN_AT_START) {
      const v = Number(sampleOf(text, name));
      assert.ok(Number.isFinite(v), `${name} after the run: ${sampleOf(text, name)}`);
    }
    assert.ok(Number(sampleOf(text, 'dptrain_last_checkpoint_timestamp_seconds')) >= written, 'the final checkpoint moved the timestamp');
    assert.equal(sampleOf(text, 'dptrain_checkpoint_failures_total'), '1');
    assert.equal(await status(`${base}/readyz`), 503, 'a finished coordinator accepts no workers');
    assert.equal(await status(`${base}/healthz`), 200);
    assert.equal((await worker.exited).code, 0, 'the worker exits 0 when the run is finished');
  } finally {
    killAll([worker]);
    await http?.close();
    await c?.dispose();
    fs.rmSync(ckptDir, { recursive: true, force: true });
  }
});

test('a stopping coordinator is not ready', async () => {
  const c = await startCoordinator(tinyCoordinatorConfig({ epochs: 1000 }));
  const http = new HttpServer(c);
  try {
    const base = `http://127.0.0.1:${await http.listen('127.0.0.1', 0)}`;
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    c.stop('test');
    assert.equal((await fetch(`${base}/readyz`)).status, 503);
    assert.equal((await fetch(`${base}/healthz`)).status, 200, 'still alive while it stops');
    assert.equal((await c.run()).reason, 'stopped');
  } finally {
    await http.close();
    await c.dispose();
  }
});
