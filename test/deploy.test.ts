/**
 * Checks the deployment files under deploy/ against the CLI and the metrics:
 * every YAML/JSON parses; Grafana panels and Prometheus rules only use
 * exported metric names; compose and Kubernetes use real flags and env vars,
 * consistent ports, the published image names and GPU requests; promtool
 * accepts the Prometheus files.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import YAML from 'yaml';
import { COORDINATOR_OPTIONS, WORKER_OPTIONS, envVarFor } from '../src/shared/options.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DEPLOY = join(ROOT, 'deploy');
const deployPath = (...p: string[]): string => join(DEPLOY, ...p);

const WS_PORT = 8765;
const COORDINATOR_METRICS_PORT = 9400;
const WORKER_METRICS_PORT = 9401;
const IMAGES = { cpu: 'dptrain/dptrain:cpu', gpu: 'dptrain/dptrain:gpu' } as const;

// ---------------------------------------------------------------------------
// Metric names the coordinator and workers export.

const COUNTERS = [
  'dptrain_tokens_total',
  'dptrain_steps_total',
  'dptrain_worker_tokens_total',
  'dptrain_gradient_bytes_received_total',
  'dptrain_parameter_bytes_sent_total',
  'dptrain_worker_joins_total',
  'dptrain_worker_leaves_total',
  'dptrain_worker_failures_total',
  'dptrain_rejected_messages_total',
  'dptrain_worker_steps_total',
  'dptrain_worker_processed_tokens_total',
];
const GAUGES = [
  'dptrain_tokens_per_second',
  'dptrain_train_loss',
  'dptrain_train_perplexity',
  'dptrain_validation_perplexity',
  'dptrain_workers_connected',
  'dptrain_training_paused',
  'dptrain_membership_epoch',
  'dptrain_epoch',
  'dptrain_step',
  'dptrain_gradient_norm',
  'dptrain_learning_rate',
  'dptrain_last_step_timestamp_seconds',
  'dptrain_info',
];
const HISTOGRAMS = [
  'dptrain_round_duration_seconds',
  'dptrain_worker_compute_seconds',
  'dptrain_worker_wait_seconds',
  'dptrain_worker_step_duration_seconds',
];
const KNOWN_METRICS = new Set<string>([
  ...COUNTERS,
  ...GAUGES,
  ...HISTOGRAMS.flatMap((h) => [`${h}_bucket`, `${h}_sum`, `${h}_count`]),
]);
/** prom-client's default metrics. */
const DEFAULT_METRIC_PREFIXES = ['process_', 'nodejs_'];
/** Labels that the metrics (or Prometheus' target labels) carry. */
const KNOWN_LABELS = new Set(['le', 'worker', 'reason', 'code', 'backend', 'device', 'version', 'instance', 'job', 'role']);
/** Labelled counters that do not exist until the first event. */
const MAYBE_ABSENT = ['dptrain_worker_failures_total', 'dptrain_rejected_messages_total'];

const PROMQL_KEYWORDS = new Set([
  'and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right',
  'bool', 'offset', 'inf', 'nan', 'atan2', 'sum', 'min', 'max', 'avg', 'count', 'stddev', 'stdvar',
  'topk', 'bottomk', 'quantile', 'count_values', 'group',
]);

/** Metric names (and label names from grouping clauses) referenced by a PromQL expression. */
function parsePromql(expr: string): { metrics: Set<string>; labels: Set<string> } {
  const labels = new Set<string>();
  let s = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
  s = s.replace(/\{[^}]*\}/g, (m) => {
    for (const l of m.matchAll(/([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)/g)) labels.add(l[1]);
    return ' ';
  });
  s = s.replace(/\[[^\]]*\]/g, ' ');
  s = s.replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_m, list: string) => {
    for (const l of list.split(',').map((x) => x.trim()).filter(Boolean)) labels.add(l);
    return ' ';
  });
  const metrics = new Set<string>();
  for (const m of s.matchAll(/(?<![\w.:])[a-zA-Z_:][\w:]*/g)) {
    const name = m[0];
    const rest = s.slice((m.index ?? 0) + name.length);
    if (/^\s*\(/.test(rest)) continue; // function or aggregation
    if (PROMQL_KEYWORDS.has(name.toLowerCase())) continue;
    metrics.add(name);
  }
  return { metrics, labels };
}

function isKnownMetric(name: string, extra: ReadonlySet<string> = new Set()): boolean {
  return KNOWN_METRICS.has(name) || extra.has(name) || DEFAULT_METRIC_PREFIXES.some((p) => name.startsWith(p));
}

test('PromQL metric-name parser', () => {
  const { metrics, labels } = parsePromql(
    'histogram_quantile(0.9, sum by (worker, le) (rate(dptrain_worker_wait_seconds_bucket{job="x"}[1m]))) / on (instance) group_left max(dptrain_step) or vector(0) > bool 1e-3',
  );
  assert.deepEqual([...metrics].sort(), ['dptrain_step', 'dptrain_worker_wait_seconds_bucket']);
  assert.deepEqual([...labels].sort(), ['instance', 'job', 'le', 'worker']);
  assert.deepEqual([...parsePromql('time() - max(dptrain_last_step_timestamp_seconds)').metrics], [
    'dptrain_last_step_timestamp_seconds',
  ]);
});

// ---------------------------------------------------------------------------
// Files.

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return e.name === 'secrets' ? [] : walk(p);
    return [p];
  });
}
const ALL_FILES = walk(DEPLOY);
const rel = (p: string): string => relative(ROOT, p);

function yamlDocs(file: string): any[] {
  const docs = YAML.parseAllDocuments(readFileSync(file, 'utf8'));
  const out: any[] = [];
  for (const d of docs) {
    assert.equal(d.errors.length, 0, `${rel(file)}: ${d.errors.map((e) => e.message).join('; ')}`);
    const js = d.toJS();
    if (js !== null && js !== undefined) out.push(js);
  }
  return out;
}
const yaml1 = (...p: string[]): any => {
  const docs = yamlDocs(deployPath(...p));
  assert.equal(docs.length, 1, `${p.join('/')} should hold one document`);
  return docs[0];
};

const EXPECTED_FILES = [
  'README.md',
  'docker-compose.yml',
  'docker/Dockerfile.cpu',
  'docker/Dockerfile.cpu.dockerignore',
  'docker/Dockerfile.gpu',
  'docker/Dockerfile.gpu.dockerignore',
  'grafana/dashboards/dptrain.json',
  'grafana/provisioning/dashboards/dptrain.yml',
  'grafana/provisioning/datasources/prometheus.yml',
  'k8s/coordinator.yaml',
  'k8s/kustomization.yaml',
  'k8s/namespace.yaml',
  'k8s/pvc.yaml',
  'k8s/secret.yaml',
  'k8s/servicemonitor.yaml',
  'k8s/workers.yaml',
  'prometheus/prometheus.yml',
  'prometheus/rules.yml',
];

test('every YAML and JSON file under deploy/ parses', () => {
  for (const f of EXPECTED_FILES) assert.ok(existsSync(deployPath(f)), `deploy/${f} is missing`);
  const data = ALL_FILES.filter((f) => /\.(ya?ml|json)$/.test(f));
  assert.ok(data.length >= 13, `found only ${data.length} YAML/JSON files`);
  for (const f of data) {
    if (f.endsWith('.json')) assert.doesNotThrow(() => JSON.parse(readFileSync(f, 'utf8')), rel(f));
    else assert.ok(yamlDocs(f).length >= 1, `${rel(f)} is empty`);
  }
});

// ---------------------------------------------------------------------------
// CLI flags and env vars.

type OptionTable = Record<
  string,
  { type: 'string' | 'number' | 'boolean'; choices?: readonly string[]; min?: number; max?: number; integer?: boolean }
>;
const COMMANDS: Record<string, OptionTable> = {
  'coordinator start': COORDINATOR_OPTIONS as OptionTable,
  'worker join': WORKER_OPTIONS as OptionTable,
};

interface ParsedArgs {
  command: string;
  flags: Map<string, string | true>;
}

/** Parses `coordinator start --x 1 ...` / `worker join ...`, asserting every flag is real and well typed. */
function checkArgs(args: unknown, where: string): ParsedArgs {
  const list = typeof args === 'string' ? args.trim().split(/\s+/) : (args as unknown[]).map(String);
  assert.ok(Array.isArray(list) && list.length >= 2, `${where}: no command`);
  let start = 0;
  if (list[0] === 'dptrain') start = 1;
  const command = `${list[start]} ${list[start + 1]}`;
  const table = COMMANDS[command];
  assert.ok(table, `${where}: unknown command "${command}" (expected "coordinator start" or "worker join")`);
  const flags = new Map<string, string | true>();
  for (let i = start + 2; i < list.length; i++) {
    const tok = list[i];
    assert.ok(tok.startsWith('--'), `${where}: stray argument "${tok}"`);
    let name = tok.slice(2);
    let value: string | true | undefined;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const opt = table[name];
    assert.ok(opt, `${where}: --${name} is not a flag of "${command}"`);
    if (value === undefined) {
      if (opt.type === 'boolean') {
        value = list[i + 1] === 'true' || list[i + 1] === 'false' ? list[++i] : true;
      } else {
        assert.ok(i + 1 < list.length && !list[i + 1].startsWith('--'), `${where}: --${name} needs a value`);
        value = list[++i];
      }
    }
    checkValue(opt, value, `${where}: --${name}`);
    assert.ok(!flags.has(name), `${where}: --${name} given twice`);
    flags.set(name, value);
  }
  return { command, flags };
}

function checkValue(opt: OptionTable[string], value: string | true, where: string): void {
  if (opt.type === 'number') {
    const n = Number(value);
    assert.ok(value !== true && value !== '' && Number.isFinite(n), `${where}: "${String(value)}" is not a number`);
    if (opt.integer) assert.ok(Number.isInteger(n), `${where}: ${n} is not an integer`);
    if (opt.min !== undefined) assert.ok(n >= opt.min, `${where}: ${n} < ${opt.min}`);
    if (opt.max !== undefined) assert.ok(n <= opt.max, `${where}: ${n} > ${opt.max}`);
  }
  if (opt.type === 'boolean' && value !== true) {
    assert.ok(['true', 'false', '1', '0'].includes(value), `${where}: "${value}" is not a boolean`);
  }
  if (opt.choices && value !== true) {
    assert.ok(opt.choices.includes(value), `${where}: "${value}" is not one of ${opt.choices.join('|')}`);
  }
}

/** Asserts each DPTRAIN_* variable names a flag of the command; returns flag -> value. */
function checkEnv(env: Record<string, string>, command: string, where: string): Map<string, string> {
  const table = COMMANDS[command];
  const byEnv = new Map(Object.keys(table).map((flag) => [envVarFor(flag), flag]));
  const out = new Map<string, string>();
  for (const [k, v] of Object.entries(env)) {
    if (!k.startsWith('DPTRAIN_')) continue;
    const flag = byEnv.get(k);
    assert.ok(flag, `${where}: ${k} is not the env var of any "${command}" flag`);
    if (!/^\$\(/.test(v)) checkValue(table[flag], v, `${where}: ${k}`);
    out.set(flag, v);
  }
  return out;
}

test('option tables expose the flags the deployment relies on', () => {
  for (const f of ['corpus', 'data-dir', 'checkpoint-dir', 'min-workers', 'port', 'host', 'metrics-port', 'metrics-host', 'token', 'token-file']) {
    assert.ok(COMMANDS['coordinator start'][f], `coordinator --${f}`);
  }
  for (const f of ['coordinator', 'gpu', 'backend', 'metrics-port', 'metrics-host', 'token', 'token-file', 'name']) {
    assert.ok(COMMANDS['worker join'][f], `worker --${f}`);
  }
  assert.equal(envVarFor('metrics-port'), 'DPTRAIN_METRICS_PORT');
  assert.equal(envVarFor('token-file'), 'DPTRAIN_TOKEN_FILE');
});

// ---------------------------------------------------------------------------
// Prometheus.

test('prometheus.yml scrapes the coordinator and workers and loads the rules', () => {
  const cfg = yaml1('prometheus', 'prometheus.yml');
  assert.equal(cfg.global.scrape_interval, '5s');
  assert.deepEqual(cfg.rule_files, ['rules.yml']);
  assert.ok(existsSync(deployPath('prometheus', 'rules.yml')));
  const jobs = new Map<string, string[]>(
    cfg.scrape_configs.map((j: any) => [j.job_name, j.static_configs.flatMap((s: any) => s.targets)]),
  );
  assert.deepEqual(jobs.get('dptrain-coordinator'), [`coordinator:${COORDINATOR_METRICS_PORT}`]);
  assert.deepEqual(jobs.get('dptrain-worker'), [`worker-0:${WORKER_METRICS_PORT}`, `worker-1:${WORKER_METRICS_PORT}`]);
});

test('rules.yml uses only exported metrics and has the required alerts', () => {
  const rules = yaml1('prometheus', 'rules.yml').groups.flatMap((g: any) => g.rules);
  const recorded = new Set<string>(rules.filter((r: any) => r.record).map((r: any) => r.record));
  assert.ok(recorded.has('dptrain:tokens_per_second:rate1m'));
  const alerts = new Map<string, string>(rules.filter((r: any) => r.alert).map((r: any) => [r.alert, r.expr]));
  for (const a of ['DptrainNoProgress', 'DptrainWorkerLost', 'DptrainPerplexityNaN']) assert.ok(alerts.has(a), a);
  assert.match(alerts.get('DptrainNoProgress')!, /dptrain_steps_total/);
  assert.match(alerts.get('DptrainWorkerLost')!, /dptrain_worker_failures_total/);
  assert.match(alerts.get('DptrainPerplexityNaN')!, /dptrain_train_perplexity\s*!=\s*dptrain_train_perplexity/);
  for (const r of rules) {
    const { metrics, labels } = parsePromql(String(r.expr));
    for (const m of metrics) {
      assert.ok(isKnownMetric(m, new Set([...recorded, 'up'])), `${r.record ?? r.alert}: unknown metric ${m}`);
    }
    for (const l of labels) assert.ok(KNOWN_LABELS.has(l), `${r.record ?? r.alert}: unknown label ${l}`);
  }
});

test('promtool accepts prometheus.yml and rules.yml', () => {
  const config = spawnSync('promtool', ['check', 'config', deployPath('prometheus', 'prometheus.yml')], { encoding: 'utf8' });
  assert.ok(
    !config.error,
    `promtool is required for this test (Debian/Ubuntu: apt-get install prometheus): ${config.error?.message}`,
  );
  assert.equal(config.status, 0, `promtool check config:\n${config.stdout}${config.stderr}`);
  const rules = spawnSync('promtool', ['check', 'rules', deployPath('prometheus', 'rules.yml')], { encoding: 'utf8' });
  assert.equal(rules.status, 0, `promtool check rules:\n${rules.stdout}${rules.stderr}`);
});

// ---------------------------------------------------------------------------
// Grafana.

const DASHBOARD = JSON.parse(readFileSync(deployPath('grafana', 'dashboards', 'dptrain.json'), 'utf8'));
const PANELS: any[] = (DASHBOARD.panels as any[]).flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== 'row');
const panelExprs = (p: any): string[] => (p.targets ?? []).map((t: any) => t.expr);

test('dashboard: every panel queries exported metrics with plain [1m] windows', () => {
  assert.ok(DASHBOARD.schemaVersion >= 36 && DASHBOARD.schemaVersion <= 41, `schemaVersion ${DASHBOARD.schemaVersion}`);
  assert.ok(DASHBOARD.uid && DASHBOARD.title);
  assert.deepEqual(DASHBOARD.templating?.list ?? [], [], 'no template variables');
  const ids = new Set<number>();
  for (const p of PANELS) {
    assert.ok(!ids.has(p.id), `duplicate panel id ${p.id}`);
    ids.add(p.id);
    assert.equal(p.datasource?.uid, 'prometheus', `${p.title}: panel datasource`);
    assert.ok(p.targets?.length > 0, `${p.title}: no targets`);
    for (const t of p.targets) {
      const where = `${p.title} / ${t.refId}`;
      assert.equal(typeof t.expr, 'string', `${where}: no expr`);
      assert.ok(t.expr.trim().length > 0, `${where}: empty expr`);
      assert.equal(t.datasource?.uid ?? 'prometheus', 'prometheus', `${where}: datasource`);
      assert.ok(!t.expr.includes('$'), `${where}: Grafana variables are not allowed: ${t.expr}`);
      for (const w of t.expr.matchAll(/\[([^\]]*)\]/g)) assert.equal(w[1], '1m', `${where}: window [${w[1]}]`);
      // Only-on-trouble filters would leave the panel empty on a healthy run.
      assert.ok(!/(==|!=|>=|<=|[<>])/.test(t.expr), `${where}: comparison filter in ${t.expr}`);
      const { metrics, labels } = parsePromql(t.expr);
      assert.ok(metrics.size > 0, `${where}: no metric in ${t.expr}`);
      for (const m of metrics) assert.ok(isKnownMetric(m), `${where}: unknown metric ${m}`);
      for (const l of labels) assert.ok(KNOWN_LABELS.has(l), `${where}: unknown label ${l}`);
      for (const m of MAYBE_ABSENT) {
        if (metrics.has(m)) assert.match(t.expr, /or\s+vector\(0\)\s*$/, `${where}: ${m} may be absent; add "or vector(0)"`);
      }
    }
  }
});

test('dashboard has the required panels', () => {
  const has = (re: RegExp, type?: string): boolean =>
    PANELS.some((p) => (!type || p.type === type) && panelExprs(p).some((e) => re.test(e)));
  const required: Array<[string, RegExp, string?]> = [
    ['tokens/s total', /rate\(dptrain_tokens_total\[1m\]\)/],
    ['tokens/s per worker', /rate\(dptrain_worker_tokens_total\[1m\]\)/],
    ['train perplexity', /dptrain_train_perplexity/, 'timeseries'],
    ['validation perplexity', /dptrain_validation_perplexity/, 'timeseries'],
    ['straggler wait per worker', /dptrain_worker_wait_seconds/],
    ['workers connected', /dptrain_workers_connected/, 'timeseries'],
    ['joins', /dptrain_worker_joins_total/],
    ['leaves', /dptrain_worker_leaves_total/],
    ['failures', /dptrain_worker_failures_total/],
    ['gradient bytes/s', /rate\(dptrain_gradient_bytes_received_total\[1m\]\)/],
    ['gradient norm', /dptrain_gradient_norm/],
    ['learning rate', /dptrain_learning_rate/],
    ['epoch stat', /dptrain_epoch\b/, 'stat'],
    ['step stat', /dptrain_step\b/, 'stat'],
  ];
  for (const q of ['0.5', '0.9', '0.99']) {
    required.push([`step time p${q}`, new RegExp(`histogram_quantile\\(${q.replace('.', '\\.')},.*dptrain_round_duration_seconds_bucket\\[1m\\]`)]);
  }
  for (const [what, re, type] of required) assert.ok(has(re, type), `missing panel: ${what}`);
  // Per-worker series are split by the worker label.
  assert.ok(has(/by \(worker\) \(rate\(dptrain_worker_tokens_total\[1m\]\)\)/));
});

test('grafana provisioning points at the dashboard folder and the prometheus service', () => {
  const ds = yaml1('grafana', 'provisioning', 'datasources', 'prometheus.yml');
  const prom = ds.datasources.find((d: any) => d.type === 'prometheus');
  assert.equal(prom.uid, 'prometheus');
  assert.equal(prom.url, 'http://prometheus:9090');
  const prov = yaml1('grafana', 'provisioning', 'dashboards', 'dptrain.yml');
  assert.equal(prov.providers[0].type, 'file');
  assert.equal(prov.providers[0].options.path, '/var/lib/grafana/dashboards');
});

// ---------------------------------------------------------------------------
// Docker.

const DOCKERFILES = { cpu: 'Dockerfile.cpu', gpu: 'Dockerfile.gpu' } as const;

test('Dockerfiles: node 20, npm ci + build, non-root, CLI entry point, ignore files', () => {
  for (const [kind, name] of Object.entries(DOCKERFILES)) {
    const text = readFileSync(deployPath('docker', name), 'utf8');
    assert.match(text, /npm ci\b/, `${name}: npm ci`);
    assert.match(text, /npm run build/, `${name}: npm run build`);
    assert.match(text, /node:20-bookworm-slim/, `${name}: Node 20`);
    assert.match(text, /^USER\s+(?!0\b|root\b)\S+/m, `${name}: must run as a non-root user`);
    assert.match(text, /^ENTRYPOINT\s+\[.*"node",\s*"\/app\/dist\/cli\.js"\]/m, `${name}: entry point`);
    assert.match(text, /\/data\b/);
    assert.match(text, /\/checkpoints\b/);
    const users = [...text.matchAll(/^USER\s+(\S+)/gm)].map((m) => m[1]);
    assert.match(users[users.length - 1], /^\d+(:\d+)?$/, `${name}: numeric USER (for runAsNonRoot)`);
    if (kind === 'gpu') {
      assert.match(text, /^ARG CUDA_IMAGE=nvidia\/cuda:[\w.-]*cudnn[\w.-]*$/m, `${name}: CUDA + cuDNN base`);
      assert.match(text, /tfjs-node-gpu/, `${name}: checks the GPU binding`);
    }
    const ignore = readFileSync(deployPath('docker', `${name}.dockerignore`), 'utf8').split('\n').map((l) => l.trim());
    for (const p of ['node_modules', 'dist', 'checkpoints', 'data']) {
      assert.ok(ignore.includes(p) || ignore.includes(`**/${p}`), `${name}.dockerignore must exclude ${p}`);
    }
    assert.ok(ignore.includes('deploy/secrets'), `${name}.dockerignore must exclude deploy/secrets`);
  }
});

// ---------------------------------------------------------------------------
// docker compose.

const COMPOSE = yaml1('docker-compose.yml');

function composeEnv(svc: any): Record<string, string> {
  const env = svc.environment ?? {};
  if (Array.isArray(env)) return Object.fromEntries(env.map((e: string) => [e.split('=')[0], e.slice(e.indexOf('=') + 1)]));
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)]));
}
function publishedContainerPorts(svc: any): number[] {
  return (svc.ports ?? []).map((p: any) => Number(typeof p === 'object' ? p.target : String(p).split(':').pop()));
}
const flagOrEnv = (args: ParsedArgs, env: Map<string, string>, flag: string): string | undefined => {
  const v = args.flags.get(flag) ?? env.get(flag);
  return v === true ? 'true' : v;
};

test('compose: coordinator', () => {
  const svc = COMPOSE.services.coordinator;
  assert.equal(svc.image, IMAGES.cpu);
  assert.equal(svc.build.dockerfile, `deploy/docker/${DOCKERFILES.cpu}`);
  assert.ok(existsSync(join(deployPath(), svc.build.context, svc.build.dockerfile)));
  const args = checkArgs(svc.command, 'compose coordinator');
  assert.equal(args.command, 'coordinator start');
  const env = checkEnv(composeEnv(svc), args.command, 'compose coordinator');
  assert.equal(flagOrEnv(args, env, 'corpus'), 'timemachine');
  assert.equal(flagOrEnv(args, env, 'min-workers'), '2');
  const port = Number(flagOrEnv(args, env, 'port') ?? WS_PORT);
  const metricsPort = Number(flagOrEnv(args, env, 'metrics-port') ?? COORDINATOR_METRICS_PORT);
  assert.equal(port, WS_PORT);
  assert.equal(metricsPort, COORDINATOR_METRICS_PORT);
  assert.deepEqual(publishedContainerPorts(svc).sort(), [WS_PORT, COORDINATOR_METRICS_PORT]);
  assert.equal(flagOrEnv(args, env, 'metrics-host'), '0.0.0.0', 'metrics must listen beyond loopback');
  assert.equal(env.get('token-file'), '/run/secrets/dptrain_token');
  assert.deepEqual(svc.secrets, ['dptrain_token']);
  const mounts = (svc.volumes as string[]).map((v) => v.split(':')[1]);
  assert.deepEqual(mounts.sort(), ['/checkpoints', '/data']);
  assert.equal(flagOrEnv(args, env, 'data-dir'), '/data');
  assert.equal(flagOrEnv(args, env, 'checkpoint-dir'), '/checkpoints');
  assert.match(svc.healthcheck.test.join(' '), new RegExp(`:${COORDINATOR_METRICS_PORT}/healthz`));
});

test('compose: GPU workers', () => {
  const coordinator = checkArgs(COMPOSE.services.coordinator.command, 'compose coordinator');
  const coordinatorPort = Number(coordinator.flags.get('port') ?? WS_PORT);
  for (const [i, name] of ['worker-0', 'worker-1'].entries()) {
    const svc = COMPOSE.services[name];
    assert.ok(svc, `compose service ${name}`);
    assert.equal(svc.image, IMAGES.gpu);
    assert.equal(svc.build.dockerfile, `deploy/docker/${DOCKERFILES.gpu}`);
    const args = checkArgs(svc.command, `compose ${name}`);
    assert.equal(args.command, 'worker join');
    const env = checkEnv(composeEnv(svc), args.command, `compose ${name}`);
    assert.equal(flagOrEnv(args, env, 'coordinator'), `ws://coordinator:${coordinatorPort}`);
    assert.equal(flagOrEnv(args, env, 'gpu'), '0', 'each container sees its own GPU as device 0');
    assert.equal(flagOrEnv(args, env, 'backend'), 'tensorflow');
    assert.equal(Number(flagOrEnv(args, env, 'metrics-port')), WORKER_METRICS_PORT);
    assert.equal(flagOrEnv(args, env, 'metrics-host'), '0.0.0.0');
    assert.equal(env.get('token-file'), '/run/secrets/dptrain_token');
    assert.deepEqual(svc.secrets, ['dptrain_token']);
    const devices = svc.deploy.resources.reservations.devices;
    assert.equal(devices.length, 1);
    assert.equal(devices[0].driver, 'nvidia');
    assert.deepEqual(devices[0].device_ids, [String(i)]);
    assert.deepEqual(devices[0].capabilities, ['gpu']);
  }
  assert.equal(COMPOSE.secrets.dptrain_token.file, './secrets/dptrain_token');
});

test('compose: prometheus targets are the compose services and their metrics ports', () => {
  const prom = yaml1('prometheus', 'prometheus.yml');
  const targets: string[] = prom.scrape_configs.flatMap((j: any) => j.static_configs.flatMap((s: any) => s.targets));
  for (const t of targets) {
    const [host, port] = t.split(':');
    const svc = COMPOSE.services[host];
    assert.ok(svc, `prometheus target ${t} is not a compose service`);
    const args = checkArgs(svc.command, `compose ${host}`);
    const env = checkEnv(composeEnv(svc), args.command, `compose ${host}`);
    assert.equal(flagOrEnv(args, env, 'metrics-port'), port, `${t}: --metrics-port of ${host}`);
  }
  const p = COMPOSE.services.prometheus;
  assert.match(p.image, /^prom\/prometheus(:|$)/);
  assert.ok(publishedContainerPorts(p).includes(9090));
  assert.ok(p.volumes.some((v: string) => v.startsWith('./prometheus:/etc/prometheus')));
  const g = COMPOSE.services.grafana;
  assert.match(g.image, /^grafana\/grafana(:|$)/);
  assert.ok(publishedContainerPorts(g).includes(3000));
  assert.ok(g.volumes.some((v: string) => v.startsWith('./grafana/provisioning:/etc/grafana/provisioning')));
  assert.ok(g.volumes.some((v: string) => v.startsWith('./grafana/dashboards:/var/lib/grafana/dashboards')));
  const deps = Array.isArray(g.depends_on) ? g.depends_on : Object.keys(g.depends_on);
  assert.ok(deps.includes('prometheus'));
});

// ---------------------------------------------------------------------------
// Kubernetes.

const K8S_DIR = deployPath('k8s');
const KUSTOMIZATION = yaml1('k8s', 'kustomization.yaml');
const K8S: any[] = readdirSync(K8S_DIR)
  .filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml')
  .flatMap((f) => yamlDocs(join(K8S_DIR, f)).map((d) => ({ ...d, __file: f })));
const k8s = (kind: string, name: string): any => {
  const found = K8S.find((d) => d.kind === kind && d.metadata?.name === name);
  assert.ok(found, `k8s ${kind}/${name}`);
  return found;
};
function k8sEnv(c: any): Record<string, string> {
  return Object.fromEntries((c.env ?? []).map((e: any) => [e.name, e.value ?? '$(valueFrom)']));
}

test('k8s: kustomization lists the manifests; all objects are in the namespace', () => {
  for (const f of ['namespace.yaml', 'secret.yaml', 'pvc.yaml', 'coordinator.yaml', 'workers.yaml']) {
    assert.ok(KUSTOMIZATION.resources.includes(f), `kustomization.yaml lists ${f}`);
  }
  for (const f of KUSTOMIZATION.resources) assert.ok(existsSync(join(K8S_DIR, f)), f);
  assert.ok(existsSync(join(K8S_DIR, 'servicemonitor.yaml')));
  const ns = k8s('Namespace', KUSTOMIZATION.namespace);
  for (const d of K8S) {
    assert.ok(d.apiVersion && d.kind && d.metadata?.name, `${d.__file}: apiVersion/kind/name`);
    if (d.kind !== 'Namespace') assert.equal(d.metadata.namespace, ns.metadata.name, `${d.__file} ${d.kind}/${d.metadata.name}`);
  }
  assert.ok(k8s('Secret', 'dptrain-token').stringData.token);
});

/** Container port number for a probe/service targetPort (number or port name). */
function resolvePort(container: any, port: number | string): number {
  if (typeof port === 'number') return port;
  const p = (container.ports ?? []).find((x: any) => x.name === port);
  assert.ok(p, `no container port named ${port}`);
  return p.containerPort;
}

test('k8s: coordinator Deployment and Service', () => {
  const dep = k8s('Deployment', 'dptrain-coordinator');
  assert.equal(dep.spec.replicas, 1);
  assert.equal(dep.spec.strategy.type, 'Recreate');
  const pod = dep.spec.template;
  for (const [k, v] of Object.entries(dep.spec.selector.matchLabels)) assert.equal(pod.metadata.labels[k], v);
  assert.equal(pod.metadata.annotations['prometheus.io/scrape'], 'true');
  assert.equal(pod.metadata.annotations['prometheus.io/port'], String(COORDINATOR_METRICS_PORT));
  const c = pod.spec.containers[0];
  assert.equal(c.image, IMAGES.cpu);
  const args = checkArgs(c.args, 'k8s coordinator');
  assert.equal(args.command, 'coordinator start');
  const env = checkEnv(k8sEnv(c), args.command, 'k8s coordinator');
  assert.equal(Number(flagOrEnv(args, env, 'port') ?? WS_PORT), WS_PORT);
  assert.equal(Number(flagOrEnv(args, env, 'metrics-port') ?? COORDINATOR_METRICS_PORT), COORDINATOR_METRICS_PORT);
  assert.equal(flagOrEnv(args, env, 'metrics-host'), '0.0.0.0');
  assert.ok(env.has('token') || env.has('token-file'), 'coordinator gets the token');
  assert.deepEqual((c.ports as any[]).map((p) => p.containerPort).sort(), [WS_PORT, COORDINATOR_METRICS_PORT]);
  assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  assert.equal(resolvePort(c, c.readinessProbe.httpGet.port), COORDINATOR_METRICS_PORT);
  assert.equal(c.livenessProbe.httpGet.path, '/healthz');
  assert.equal(resolvePort(c, c.livenessProbe.httpGet.port), COORDINATOR_METRICS_PORT);
  // Volumes: checkpoints on the PVC, token file from the Secret.
  const mounts = new Map<string, string>(c.volumeMounts.map((m: any) => [m.mountPath, m.name]));
  const volumes = new Map<string, any>(pod.spec.volumes.map((v: any) => [v.name, v]));
  const ckpt = volumes.get(mounts.get(flagOrEnv(args, env, 'checkpoint-dir')!)!);
  assert.ok(ckpt?.persistentVolumeClaim, 'checkpoint dir on a PVC');
  k8s('PersistentVolumeClaim', ckpt.persistentVolumeClaim.claimName);
  for (const v of volumes.values()) {
    if (v.persistentVolumeClaim) k8s('PersistentVolumeClaim', v.persistentVolumeClaim.claimName);
    if (v.secret) k8s('Secret', v.secret.secretName);
  }
  const tokenFile = env.get('token-file');
  if (tokenFile) {
    const dir = tokenFile.slice(0, tokenFile.lastIndexOf('/'));
    assert.ok(volumes.get(mounts.get(dir)!)?.secret, `${tokenFile} comes from a Secret volume`);
  }

  const svc = k8s('Service', 'dptrain-coordinator');
  for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(pod.metadata.labels[k], v, `selector ${k}`);
  const svcPorts = (svc.spec.ports as any[]).map((p) => [p.port, resolvePort(c, p.targetPort ?? p.port)]);
  assert.deepEqual(svcPorts.sort(), [
    [WS_PORT, WS_PORT],
    [COORDINATOR_METRICS_PORT, COORDINATOR_METRICS_PORT],
  ]);
});

test('k8s: GPU worker StatefulSet', () => {
  const sts = k8s('StatefulSet', 'dptrain-worker');
  assert.equal(sts.spec.replicas, 2);
  k8s('Service', sts.spec.serviceName);
  const pod = sts.spec.template;
  for (const [k, v] of Object.entries(sts.spec.selector.matchLabels)) assert.equal(pod.metadata.labels[k], v);
  assert.equal(pod.metadata.annotations['prometheus.io/scrape'], 'true');
  assert.equal(pod.metadata.annotations['prometheus.io/port'], String(WORKER_METRICS_PORT));
  const c = pod.spec.containers[0];
  assert.equal(c.image, IMAGES.gpu);
  assert.equal(String(c.resources.limits['nvidia.com/gpu']), '1');
  const args = checkArgs(c.args, 'k8s worker');
  assert.equal(args.command, 'worker join');
  const env = checkEnv(k8sEnv(c), args.command, 'k8s worker');
  const svc = k8s('Service', 'dptrain-coordinator');
  const wsPort = (svc.spec.ports as any[]).find((p) => p.port === WS_PORT);
  assert.ok(wsPort);
  assert.equal(flagOrEnv(args, env, 'coordinator'), `ws://${svc.metadata.name}:${WS_PORT}`);
  assert.equal(flagOrEnv(args, env, 'gpu'), '0', 'the device plugin shows the pod its GPU as device 0');
  assert.equal(flagOrEnv(args, env, 'backend'), 'tensorflow');
  assert.equal(Number(flagOrEnv(args, env, 'metrics-port')), WORKER_METRICS_PORT);
  assert.equal(flagOrEnv(args, env, 'metrics-host'), '0.0.0.0');
  assert.deepEqual((c.ports as any[]).map((p) => p.containerPort), [WORKER_METRICS_PORT]);
  const token = (c.env as any[]).find((e) => e.name === envVarFor('token'));
  if (token) {
    const ref = token.valueFrom.secretKeyRef;
    const secret = k8s('Secret', ref.name);
    assert.ok(ref.key in (secret.stringData ?? secret.data ?? {}), `Secret ${ref.name} has key ${ref.key}`);
  } else {
    assert.ok(env.has('token-file'), 'worker gets the token');
  }
});

test('k8s: ServiceMonitors select existing Services by their metrics port', () => {
  const monitors = K8S.filter((d) => d.kind === 'ServiceMonitor');
  assert.equal(monitors.length, 2);
  const services = K8S.filter((d) => d.kind === 'Service');
  for (const m of monitors) {
    const matching = services.filter((s) =>
      Object.entries(m.spec.selector.matchLabels).every(([k, v]) => s.metadata.labels?.[k] === v),
    );
    assert.equal(matching.length, 1, `${m.metadata.name} selects exactly one Service`);
    const ports = (matching[0].spec.ports as any[]).map((p) => p.name);
    for (const e of m.spec.endpoints) assert.ok(ports.includes(e.port), `${m.metadata.name}: port ${e.port}`);
  }
});

test('image names refer to Dockerfiles that exist', () => {
  const images = new Set<string>();
  for (const svc of Object.values<any>(COMPOSE.services)) if (svc.image?.startsWith('dptrain/')) images.add(svc.image);
  for (const d of K8S) for (const c of d.spec?.template?.spec?.containers ?? []) images.add(c.image);
  assert.ok(images.size >= 2);
  for (const image of images) {
    const m = /^dptrain\/dptrain:(cpu|gpu)$/.exec(image);
    assert.ok(m, `unexpected image ${image}`);
    assert.ok(existsSync(deployPath('docker', `Dockerfile.${m[1]}`)), `Dockerfile.${m[1]}`);
  }
});
