/**
 * Checks the deployment files under deploy/ against the CLI and the metrics:
 * every YAML/JSON parses; Grafana panels and Prometheus rules only use
 * exported metric names, and the dashboard follows its conventions (datasource
 * variable, job/instance selectors, $__rate_interval, increase() for counters,
 * no made-up zeros); compose and Kubernetes use real flags, resume, run as Jobs
 * with restart-on-failure semantics, a relay per node that the workers try
 * before the coordinator, probes, the restricted security context,
 * the token as a file, loopback-only published ports; the Kubernetes exit-code
 * wrapper behaves; kustomize renders (in a temporary copy with a token file);
 * promtool and amtool accept the Prometheus and Alertmanager files.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn, spawnSync } from 'node:child_process';
import YAML from 'yaml';
import { Ajv } from 'ajv';
import { COORDINATOR_OPTIONS, RELAY_OPTIONS, WORKER_OPTIONS, envVarFor } from '../src/shared/options.js';
import { createCoordinatorMetrics } from '../src/coordinator/metrics.js';
import { WorkerMetrics } from '../src/worker/metrics.js';
import { RelayMetrics } from '../src/relay/metrics.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DEPLOY = join(ROOT, 'deploy');
const deployPath = (...p: string[]): string => join(DEPLOY, ...p);

const WS_PORT = 8765;
const COORDINATOR_METRICS_PORT = 9400;
const WORKER_METRICS_PORT = 9401;
const RELAY_PORT = 8766;
const RELAY_METRICS_PORT = 9399;
const IMAGES = { cpu: 'dptrain/dptrain:cpu', gpu: 'dptrain/dptrain:gpu' } as const;

// ---------------------------------------------------------------------------
// Metric names the coordinator and workers export: read from their registries.

const EXPORTED = new Map<string, string>(); // name -> type
for (const registry of [createCoordinatorMetrics().registry, new WorkerMetrics('cpu', 'cpu').registry, new RelayMetrics().registry]) {
  for (const m of await registry.getMetricsAsJSON()) if (m.name.startsWith('dptrain_')) EXPORTED.set(m.name, String(m.type));
}
/** Series names: histograms as _bucket, _sum and _count. */
const KNOWN_METRICS = new Set<string>(
  [...EXPORTED].flatMap(([name, type]) => (type === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : [name])),
);
/** Series that only ever grow: counters and the parts of histograms. */
const COUNTER_SERIES = new Set<string>(
  [...EXPORTED].flatMap(([name, type]) => (type === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : type === 'counter' ? [name] : [])),
);
/** prom-client's default metrics. */
const DEFAULT_METRIC_PREFIXES = ['process_', 'nodejs_'];
/** Labels that the metrics (or Prometheus' target labels) carry. */
const KNOWN_LABELS = new Set(['le', 'worker', 'reason', 'code', 'backend', 'device', 'version', 'instance', 'job', 'role']);

test('the registries export the metrics the deployment relies on, and README documents every one', () => {
  for (const m of ['dptrain_last_checkpoint_timestamp_seconds', 'dptrain_checkpoint_failures_total', 'dptrain_steps_total', 'dptrain_worker_steps_total']) {
    assert.ok(EXPORTED.has(m), m);
  }
  assert.equal(EXPORTED.get('dptrain_checkpoint_failures_total'), 'counter');
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const metricsSection = readme.slice(readme.indexOf('## Metrics'), readme.indexOf('## Error codes'));
  for (const name of EXPORTED.keys()) assert.ok(metricsSection.includes(name), `README.md's Metrics section does not document ${name}`);
});

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

function parseYamlDocs(text: string, where: string): any[] {
  const out: any[] = [];
  for (const d of YAML.parseAllDocuments(text)) {
    assert.equal(d.errors.length, 0, `${where}: ${d.errors.map((e) => e.message).join('; ')}`);
    const js = d.toJS();
    if (js !== null && js !== undefined) out.push(js);
  }
  return out;
}
const yamlDocs = (file: string): any[] => parseYamlDocs(readFileSync(file, 'utf8'), rel(file));
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
  'alertmanager/alertmanager.yml',
  'k8s/coordinator.yaml',
  'k8s/kustomization.yaml',
  'k8s/namespace.yaml',
  'k8s/pvc.yaml',
  'k8s/pdb.yaml',
  'k8s/workers.yaml',
  'k8s/operator/kustomization.yaml',
  'k8s/operator/servicemonitor.yaml',
  'k8s/operator/prometheusrule.yaml',
  'prometheus/prometheus.yml',
  'prometheus/rules.yml',
  'prometheus/rules.test.yml',
];

test('every YAML and JSON file under deploy/ parses; secrets are git-ignored, none is committed', () => {
  for (const f of EXPECTED_FILES) assert.ok(existsSync(deployPath(f)), `deploy/${f} is missing`);
  const data = ALL_FILES.filter((f) => /\.(ya?ml|json)$/.test(f));
  assert.ok(data.length >= 17, `found only ${data.length} YAML/JSON files`);
  for (const f of data) {
    if (f.endsWith('.json')) assert.doesNotThrow(() => JSON.parse(readFileSync(f, 'utf8')), rel(f));
    else assert.ok(yamlDocs(f).length >= 1, `${rel(f)} is empty`);
  }
  // The token files the instructions create are ignored by git, and no manifest carries a token.
  const secretFiles = ['deploy/secrets/dptrain_token', 'deploy/secrets/grafana_admin_password', 'deploy/k8s/secrets/token'];
  const ignored = spawnSync('git', ['check-ignore', '--no-index', ...secretFiles], { cwd: ROOT, encoding: 'utf8' });
  if (!ignored.error && ignored.status !== 128) assert.deepEqual(ignored.stdout.trim().split('\n'), secretFiles, 'the secret files must be git-ignored');
  for (const f of ALL_FILES.filter((x) => x.includes(`${join('deploy', 'k8s')}`))) {
    for (const d of /\.ya?ml$/.test(f) ? yamlDocs(f) : []) assert.notEqual(d.kind, 'Secret', `${rel(f)}: a Secret in the repository is a known token`);
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
  relay: RELAY_OPTIONS as OptionTable,
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
  // `relay` is one word; the others two.
  const words = list[start] === 'relay' ? 1 : 2;
  const command = list.slice(start, start + words).join(' ');
  const table = COMMANDS[command];
  assert.ok(table, `${where}: unknown command "${command}" (expected "coordinator start", "worker join" or "relay")`);
  const flags = new Map<string, string | true>();
  for (let i = start + words; i < list.length; i++) {
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
  for (const f of ['corpus', 'data-dir', 'checkpoint-dir', 'resume', 'min-workers', 'port', 'host', 'metrics-port', 'metrics-host', 'token', 'token-file']) {
    assert.ok(COMMANDS['coordinator start'][f], `coordinator --${f}`);
  }
  for (const f of ['coordinator', 'gpu', 'backend', 'metrics-port', 'metrics-host', 'token', 'token-file', 'name']) {
    assert.ok(COMMANDS['worker join'][f], `worker --${f}`);
  }
  for (const f of ['coordinator', 'host', 'port', 'metrics-port', 'metrics-host', 'token', 'token-file', 'name', 'reconnect-grace']) {
    assert.ok(COMMANDS.relay[f], `relay --${f}`);
  }
  assert.equal(envVarFor('metrics-port'), 'DPTRAIN_METRICS_PORT');
  assert.equal(envVarFor('token-file'), 'DPTRAIN_TOKEN_FILE');
});

/** What every dptrain process in a manifest must do, whatever runs it. */
function checkCoordinatorArgs(args: ParsedArgs, env: Map<string, string>, where: string): void {
  assert.equal(args.command, 'coordinator start', where);
  assert.equal(flagOrEnv(args, env, 'resume'), 'true', `${where}: --resume (an empty checkpoint dir starts fresh; anything else continues)`);
  assert.equal(flagOrEnv(args, env, 'overwrite'), undefined, `${where}: --overwrite would destroy the checkpoint on every restart`);
  assert.equal(flagOrEnv(args, env, 'corpus'), 'timemachine');
  assert.equal(flagOrEnv(args, env, 'min-workers'), '2');
  assert.equal(Number(flagOrEnv(args, env, 'port') ?? WS_PORT), WS_PORT);
  assert.equal(Number(flagOrEnv(args, env, 'metrics-port') ?? COORDINATOR_METRICS_PORT), COORDINATOR_METRICS_PORT);
  assert.equal(flagOrEnv(args, env, 'metrics-host'), '0.0.0.0', `${where}: metrics must listen beyond loopback (the default is 127.0.0.1)`);
  assert.equal(flagOrEnv(args, env, 'data-dir'), '/data');
  assert.equal(flagOrEnv(args, env, 'checkpoint-dir'), '/checkpoints');
  assert.equal(flagOrEnv(args, env, 'token'), undefined, `${where}: the token comes from a file`);
  assert.ok(flagOrEnv(args, env, 'token-file'), `${where}: --token-file`);
}
function checkWorkerArgs(args: ParsedArgs, env: Map<string, string>, coordinatorUrl: string, where: string): void {
  assert.equal(args.command, 'worker join', where);
  assert.equal(flagOrEnv(args, env, 'coordinator'), coordinatorUrl, `${where}: the node's relay first, then the coordinator`);
  assert.equal(flagOrEnv(args, env, 'gpu'), '0', `${where}: each container sees its own GPU as device 0`);
  assert.equal(flagOrEnv(args, env, 'backend'), 'tensorflow');
  assert.equal(Number(flagOrEnv(args, env, 'metrics-port')), WORKER_METRICS_PORT, `${where}: the worker's probes and metrics need --metrics-port`);
  assert.equal(flagOrEnv(args, env, 'metrics-host'), '0.0.0.0', `${where}: metrics must listen beyond loopback`);
  assert.equal(flagOrEnv(args, env, 'token'), undefined, `${where}: the token comes from a file`);
  assert.ok(flagOrEnv(args, env, 'token-file'), `${where}: --token-file`);
}

function checkRelayArgs(args: ParsedArgs, env: Map<string, string>, coordinatorUrl: string, where: string): void {
  assert.equal(args.command, 'relay', where);
  assert.equal(flagOrEnv(args, env, 'coordinator'), coordinatorUrl, where);
  assert.equal(flagOrEnv(args, env, 'host'), '0.0.0.0', `${where}: workers in other containers or pods join it`);
  assert.equal(Number(flagOrEnv(args, env, 'port') ?? RELAY_PORT), RELAY_PORT);
  assert.equal(Number(flagOrEnv(args, env, 'metrics-port') ?? RELAY_METRICS_PORT), RELAY_METRICS_PORT);
  assert.equal(flagOrEnv(args, env, 'metrics-host'), '0.0.0.0', `${where}: metrics must listen beyond loopback`);
  assert.equal(flagOrEnv(args, env, 'token'), undefined, `${where}: the token comes from a file`);
  assert.ok(flagOrEnv(args, env, 'token-file'), `${where}: --token-file`);
}

// ---------------------------------------------------------------------------
// Prometheus and Alertmanager.

test('prometheus.yml scrapes the coordinator and workers, loads the rules, sends alerts to Alertmanager', () => {
  const cfg = yaml1('prometheus', 'prometheus.yml');
  assert.equal(cfg.global.scrape_interval, '5s');
  assert.deepEqual(cfg.rule_files, ['rules.yml']);
  const jobs = new Map<string, string[]>(
    cfg.scrape_configs.map((j: any) => [j.job_name, j.static_configs.flatMap((s: any) => s.targets)]),
  );
  assert.deepEqual(jobs.get('dptrain-coordinator'), [`coordinator:${COORDINATOR_METRICS_PORT}`]);
  assert.deepEqual(jobs.get('dptrain-worker'), [`worker-0:${WORKER_METRICS_PORT}`, `worker-1:${WORKER_METRICS_PORT}`]);
  assert.deepEqual(jobs.get('dptrain-relay'), [`relay:${RELAY_METRICS_PORT}`]);
  const am: string[] = cfg.alerting.alertmanagers.flatMap((a: any) => a.static_configs.flatMap((s: any) => s.targets));
  assert.deepEqual(am, ['alertmanager:9093']);
});

test('rules.yml uses only exported metrics and known labels', () => {
  const rules = yaml1('prometheus', 'rules.yml').groups.flatMap((g: any) => g.rules);
  const recorded = new Set<string>(rules.filter((r: any) => r.record).map((r: any) => r.record));
  assert.ok(recorded.has('dptrain:tokens_per_second:rate1m'));
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

test('alertmanager.yml: one route to a receiver that exists; amtool accepts it where installed', () => {
  const am = yaml1('alertmanager', 'alertmanager.yml');
  const receivers = new Set<string>(am.receivers.map((r: any) => r.name));
  assert.ok(receivers.has(am.route.receiver), `route receiver ${am.route.receiver}`);
  const walkRoutes = (r: any): void => {
    if (r.receiver) assert.ok(receivers.has(r.receiver), `receiver ${r.receiver}`);
    for (const c of r.routes ?? []) walkRoutes(c);
  };
  walkRoutes(am.route);
  assert.deepEqual(am.route.group_by, ['alertname', 'job', 'instance']);
  const alerts = new Set<string>(yaml1('prometheus', 'rules.yml').groups.flatMap((g: any) => g.rules).filter((r: any) => r.alert).map((r: any) => r.alert));
  for (const rule of am.inhibit_rules ?? []) {
    for (const m of [...rule.source_matchers, ...rule.target_matchers]) {
      const name = /^alertname="(\w+)"$/.exec(m)?.[1];
      assert.ok(name && alerts.has(name), `inhibit rule names an alert of rules.yml: ${m}`);
    }
  }
  const amtool = spawnSync('amtool', ['check-config', deployPath('alertmanager', 'alertmanager.yml')], { encoding: 'utf8' });
  assert.ok(!amtool.error, 'amtool is missing: apt-get install prometheus-alertmanager (.ci/run does)');
  assert.equal(amtool.status, 0, `amtool check-config:\n${amtool.stdout}${amtool.stderr}`);
});

// ---------------------------------------------------------------------------
// Grafana.

const DASHBOARD = JSON.parse(readFileSync(deployPath('grafana', 'dashboards', 'dptrain.json'), 'utf8'));
const PANELS: any[] = (DASHBOARD.panels as any[]).flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== 'row');
const panelExprs = (p: any): string[] => (p.targets ?? []).map((t: any) => t.expr);
const DS_VAR = '${datasource}';
const SELECTOR = '{job=~"$job",instance=~"$instance"}';
const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const occurrences = (text: string, re: RegExp): number => [...text.matchAll(re)].length;

test('dashboard imports anywhere: __inputs, a datasource variable, job and instance selectors', () => {
  assert.ok(DASHBOARD.schemaVersion >= 36 && DASHBOARD.schemaVersion <= 41, `schemaVersion ${DASHBOARD.schemaVersion}`);
  assert.ok(DASHBOARD.uid && DASHBOARD.title);
  const input = (DASHBOARD.__inputs ?? []).find((i: any) => i.type === 'datasource' && i.pluginId === 'prometheus');
  assert.ok(input, '__inputs: a Prometheus datasource input');
  const vars = new Map<string, any>((DASHBOARD.templating?.list ?? []).map((v: any) => [v.name, v]));
  const ds = vars.get('datasource');
  assert.equal(ds?.type, 'datasource');
  assert.equal(ds.query, 'prometheus');
  // The datasource chosen at import becomes the variable's default.
  assert.equal(ds.current?.value, `\${${input.name}}`);
  for (const name of ['job', 'instance']) {
    const v = vars.get(name);
    assert.equal(v?.type, 'query', `variable ${name}`);
    assert.equal(v.datasource?.uid, DS_VAR, `variable ${name}: datasource`);
    assert.equal(v.includeAll, true, `variable ${name}: All`);
    assert.equal(v.multi, true, `variable ${name}: several`);
    assert.match(v.definition, new RegExp(`^label_values\\(dptrain_info.*, ${name}\\)$`), `variable ${name}: query`);
  }
  assert.match(vars.get('instance').definition, /job=~"\$job"/, 'instance follows job');
  // No datasource is hard-coded anywhere: not in panels, not in targets.
  const text = JSON.stringify(DASHBOARD.panels);
  assert.ok(!/"uid":\s*"prometheus"/.test(text), 'no hard-coded datasource uid');
});

test('dashboard queries: exported metrics, $__rate_interval, increase() or rate() for counters, no fake zeros', () => {
  const ids = new Set<number>();
  for (const p of PANELS) {
    assert.ok(!ids.has(p.id), `duplicate panel id ${p.id}`);
    ids.add(p.id);
    assert.equal(p.datasource?.uid, DS_VAR, `${p.title}: panel datasource`);
    assert.ok(p.targets?.length > 0, `${p.title}: no targets`);
    for (const t of p.targets) {
      const where = `${p.title} / ${t.refId}`;
      assert.equal(typeof t.expr, 'string', `${where}: no expr`);
      assert.ok(t.expr.trim().length > 0, `${where}: empty expr`);
      assert.equal(t.datasource?.uid, DS_VAR, `${where}: datasource`);
      for (const w of t.expr.matchAll(/\[([^\]]*)\]/g)) assert.equal(w[1], '$__rate_interval', `${where}: window [${w[1]}]`);
      assert.ok(!/\bvector\(/.test(t.expr), `${where}: a made-up value (vector()) in ${t.expr}`);
      // Only-on-trouble filters would leave the panel empty on a healthy run.
      assert.ok(!/(==|!=|>=|<=|[<>])/.test(t.expr), `${where}: comparison filter in ${t.expr}`);
      const { metrics, labels } = parsePromql(t.expr.replace(/\$\w+/g, 'x'));
      assert.ok(metrics.size > 0, `${where}: no metric in ${t.expr}`);
      for (const m of metrics) {
        assert.ok(isKnownMetric(m), `${where}: unknown metric ${m}`);
        const token = new RegExp(`(?<![\\w:])${escapeRe(m)}(?![\\w:])`, 'g');
        // Every selector follows the job and instance variables.
        const selected = new RegExp(`(?<![\\w:])${escapeRe(m)}${escapeRe(SELECTOR)}`, 'g');
        assert.equal(occurrences(t.expr, selected), occurrences(t.expr, token), `${where}: ${m} without ${SELECTOR}`);
        // Counters are plotted as rates or increases, never raw.
        if (COUNTER_SERIES.has(m) || m.endsWith('_total')) {
          const counted = new RegExp(`\\b(?:rate|increase)\\(${escapeRe(m)}${escapeRe(SELECTOR)}\\[`, 'g');
          assert.equal(occurrences(t.expr, counted), occurrences(t.expr, token), `${where}: counter ${m} outside rate()/increase()`);
        }
      }
      for (const l of labels) assert.ok(KNOWN_LABELS.has(l), `${where}: unknown label ${l}`);
    }
  }
});

test('dashboard has the required panels', () => {
  const has = (re: RegExp, type?: string): boolean =>
    PANELS.some((p) => (!type || p.type === type) && panelExprs(p).some((e) => re.test(e)));
  const sel = escapeRe(SELECTOR);
  const rate = (m: string): RegExp => new RegExp(`rate\\(${m}${sel}\\[\\$__rate_interval\\]\\)`);
  const increase = (m: string): RegExp => new RegExp(`increase\\(${m}${sel}\\[\\$__rate_interval\\]\\)`);
  const required: Array<[string, RegExp, string?]> = [
    ['tokens/s total', rate('dptrain_tokens_total')],
    ['tokens/s per worker', new RegExp(`sum by \\(worker\\) \\(${rate('dptrain_worker_tokens_total').source}\\)`)],
    ['train perplexity', /dptrain_train_perplexity/, 'timeseries'],
    ['validation perplexity', /dptrain_validation_perplexity/, 'timeseries'],
    ['straggler wait per worker', /dptrain_worker_wait_seconds/],
    ['compute time per worker', /dptrain_worker_compute_seconds/],
    ['workers connected', /dptrain_workers_connected/, 'timeseries'],
    ['joins', increase('dptrain_worker_joins_total')],
    ['leaves', increase('dptrain_worker_leaves_total')],
    ['failures by reason', new RegExp(`sum by \\(reason\\) \\(${increase('dptrain_worker_failures_total').source}\\)`)],
    ['refused messages by code', new RegExp(`sum by \\(code\\) \\(${increase('dptrain_rejected_messages_total').source}\\)`)],
    ['checkpoint failures', increase('dptrain_checkpoint_failures_total')],
    ['seconds since the last checkpoint', /time\(\) - max\(dptrain_last_checkpoint_timestamp_seconds/, 'stat'],
    ['seconds since the last step', /time\(\) - max\(dptrain_last_step_timestamp_seconds/, 'stat'],
    ['gradient bytes/s', rate('dptrain_gradient_bytes_received_total')],
    ['gradient norm', /dptrain_gradient_norm/],
    ['learning rate', /dptrain_learning_rate/],
    ['epoch stat', /dptrain_epoch\b/, 'stat'],
    ['step stat', /dptrain_step\b/, 'stat'],
    ['live tensors of the workers', /dptrain_worker_tensors/],
  ];
  for (const q of ['0.5', '0.9', '0.99']) {
    required.push([`step time p${q}`, new RegExp(`histogram_quantile\\(${q.replace('.', '\\.')}, sum by \\(le\\) \\(${rate('dptrain_round_duration_seconds_bucket').source}\\)\\)`)]);
  }
  for (const [what, re, type] of required) assert.ok(has(re, type), `missing panel: ${what}`);
});

test('grafana provisioning points at the dashboard folder and the prometheus service', () => {
  const ds = yaml1('grafana', 'provisioning', 'datasources', 'prometheus.yml');
  const prom = ds.datasources.find((d: any) => d.type === 'prometheus');
  assert.equal(prom.url, 'http://prometheus:9090');
  assert.equal(prom.isDefault, true, 'the default datasource is what the datasource variable picks when provisioned');
  const prov = yaml1('grafana', 'provisioning', 'dashboards', 'dptrain.yml');
  assert.equal(prov.providers[0].type, 'file');
  assert.equal(prov.providers[0].options.path, '/var/lib/grafana/dashboards');
});

// ---------------------------------------------------------------------------
// Docker.

const DOCKERFILES = { cpu: 'Dockerfile.cpu', gpu: 'Dockerfile.gpu' } as const;

test('Dockerfiles: official Node base, npm ci + build, non-root, CLI entry point, ignore files', () => {
  for (const [kind, name] of Object.entries(DOCKERFILES)) {
    const text = readFileSync(deployPath('docker', name), 'utf8');
    assert.match(text, /npm ci\b/, `${name}: npm ci`);
    assert.match(text, /npm run build/, `${name}: npm run build`);
    // Which Node LTS is the Dockerfile's choice; that it is an official image is the test's.
    assert.match(text, /^ARG NODE_IMAGE=node:\S+$/m, `${name}: official Node image`);
    assert.match(text, /^USER\s+(?!0\b|root\b)\S+/m, `${name}: must run as a non-root user`);
    assert.match(text, /^ENTRYPOINT\s+\[.*"node",\s*"\/app\/dist\/cli\.js"\]/m, `${name}: entry point`);
    assert.match(text, /\/usr\/bin\/tini/, `${name}: tini (the Kubernetes command uses it)`);
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
/** Published ports as [host address, container port]. */
function publishedPorts(svc: any): Array<[string, number]> {
  return (svc.ports ?? []).map((p: any) => {
    if (typeof p === 'object') return [p.host_ip ?? '0.0.0.0', Number(p.target)];
    const parts = String(p).split(':');
    return [parts.length === 3 ? parts[0] : '0.0.0.0', Number(parts[parts.length - 1])];
  });
}
const flagOrEnv = (args: ParsedArgs, env: Map<string, string>, flag: string): string | undefined => {
  const v = args.flags.get(flag) ?? env.get(flag);
  return v === true ? 'true' : v;
};

test('compose: the file is valid against the Compose Specification schema', () => {
  const schema = JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'compose-spec', 'compose-spec.json'), 'utf8'));
  const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false });
  // The schema names its meta-schema by a URL Ajv does not know offline; it is draft-07, Ajv's own.
  const validate = ajv.compile({ ...schema, $schema: undefined });
  assert.ok(validate(COMPOSE), `docker-compose.yml: ${ajv.errorsText(validate.errors, { separator: '\n' })}`);
  // The schema catches what it is meant to: a misspelt key is refused.
  const compose = COMPOSE as { services: Record<string, object> };
  assert.equal(validate({ ...compose, services: { ...compose.services, coordinator: { ...compose.services.coordinator, restrat: 'always' } } }), false);
});

test('compose: every published port is bound to 127.0.0.1', () => {
  for (const [name, svc] of Object.entries<any>(COMPOSE.services)) {
    for (const [host, port] of publishedPorts(svc)) assert.equal(host, '127.0.0.1', `${name}: port ${port} is published on ${host}`);
  }
});

test('compose: coordinator resumes, restarts only on failure, reads the token from a 0600-able secret', () => {
  const svc = COMPOSE.services.coordinator;
  assert.equal(svc.image, IMAGES.cpu);
  assert.equal(svc.build.dockerfile, `deploy/docker/${DOCKERFILES.cpu}`);
  assert.ok(existsSync(join(deployPath(), svc.build.context, svc.build.dockerfile)));
  const args = checkArgs(svc.command, 'compose coordinator');
  const env = checkEnv(composeEnv(svc), args.command, 'compose coordinator');
  checkCoordinatorArgs(args, env, 'compose coordinator');
  assert.equal(svc.restart, 'on-failure', 'a finished run (exit 0) must stay finished');
  assert.deepEqual(publishedPorts(svc).map(([, p]) => p).sort(), [WS_PORT, COORDINATOR_METRICS_PORT]);
  assert.equal(flagOrEnv(args, env, 'token-file'), '/run/secrets/dptrain_token');
  assert.deepEqual(svc.secrets, ['dptrain_token']);
  const mounts = (svc.volumes as string[]).map((v) => v.split(':')[1]);
  assert.deepEqual(mounts.sort(), ['/checkpoints', '/data']);
  assert.match(svc.healthcheck.test.join(' '), new RegExp(`:${COORDINATOR_METRICS_PORT}/healthz`));
  // The instructions keep the token private to the container's uid.
  const text = readFileSync(deployPath('docker-compose.yml'), 'utf8');
  assert.ok(!/chmod\s+0?6?44/.test(text), 'the token file must not be world-readable');
  assert.match(text, /umask 077/);
  assert.match(text, /chown 10001/);
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
    const env = checkEnv(composeEnv(svc), args.command, `compose ${name}`);
    checkWorkerArgs(args, env, `ws://relay:${RELAY_PORT},ws://coordinator:${coordinatorPort}`, `compose ${name}`);
    assert.equal(flagOrEnv(args, env, 'token-file'), '/run/secrets/dptrain_token');
    assert.deepEqual(svc.secrets, ['dptrain_token']);
    assert.match(String(svc.restart), /^on-failure(:\d+)?$/, `${name}: a worker that exited 0 (run finished) must not restart`);
    assert.equal(svc.depends_on.coordinator.condition, 'service_healthy');
    assert.equal(svc.depends_on.relay.condition, 'service_healthy', `${name}: started once the relay listens, so that it joins the relay`);
    assert.match(svc.healthcheck.test.join(' '), new RegExp(`:${WORKER_METRICS_PORT}/readyz`));
    const devices = svc.deploy.resources.reservations.devices;
    assert.equal(devices.length, 1);
    assert.equal(devices[0].driver, 'nvidia');
    assert.deepEqual(devices[0].device_ids, [String(i)]);
    assert.deepEqual(devices[0].capabilities, ['gpu']);
  }
  assert.equal(COMPOSE.secrets.dptrain_token.file, './secrets/dptrain_token');
});

test('compose: a relay for the machine, joined by the workers, joining the coordinator', () => {
  const coordinator = checkArgs(COMPOSE.services.coordinator.command, 'compose coordinator');
  const svc = COMPOSE.services.relay;
  assert.ok(svc, 'compose service relay');
  assert.equal(svc.image, IMAGES.cpu, 'a relay needs no GPU');
  const args = checkArgs(svc.command, 'compose relay');
  const env = checkEnv(composeEnv(svc), args.command, 'compose relay');
  checkRelayArgs(args, env, `ws://coordinator:${Number(coordinator.flags.get('port') ?? WS_PORT)}`, 'compose relay');
  assert.equal(flagOrEnv(args, env, 'token-file'), '/run/secrets/dptrain_token');
  assert.deepEqual(svc.secrets, ['dptrain_token']);
  assert.deepEqual(publishedPorts(svc), [], 'only the workers beside it join it');
  assert.equal(svc.depends_on.coordinator.condition, 'service_healthy');
  assert.match(svc.healthcheck.test.join(' '), new RegExp(`:${RELAY_METRICS_PORT}/readyz`));
  assert.match(String(svc.restart), /^on-failure(:\d+)?$/, 'a relay that exited 0 (run finished) must not restart');
});

test('compose: prometheus, alertmanager and grafana', () => {
  const prom = yaml1('prometheus', 'prometheus.yml');
  const targets: string[] = [
    ...prom.scrape_configs.flatMap((j: any) => j.static_configs.flatMap((s: any) => s.targets)),
  ];
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
  assert.ok(publishedPorts(p).some(([, port]) => port === 9090));
  assert.ok(p.volumes.some((v: string) => v.startsWith('./prometheus:/etc/prometheus')));
  assert.ok(!p.command.some((a: string) => a.startsWith('--web.enable-lifecycle')), 'no lifecycle API (reload/shutdown over HTTP)');
  assert.ok(!p.command.some((a: string) => a.startsWith('--web.enable-admin-api')), 'no admin API');

  const a = COMPOSE.services.alertmanager;
  assert.match(a.image, /^prom\/alertmanager(:|$)/);
  const [amHost, amPort] = prom.alerting.alertmanagers[0].static_configs[0].targets[0].split(':');
  assert.equal(amHost, 'alertmanager');
  assert.ok(publishedPorts(a).some(([, port]) => port === Number(amPort)));
  assert.ok(a.volumes.some((v: string) => v.startsWith('./alertmanager:/etc/alertmanager')));
  assert.ok(a.command.includes('--config.file=/etc/alertmanager/alertmanager.yml'));
  assert.ok(a.command.includes('--log.level=debug'), 'the "log" receiver is debug logging of received alerts');

  const g = COMPOSE.services.grafana;
  assert.match(g.image, /^grafana\/grafana(:|$)/);
  const genv = composeEnv(g);
  assert.equal(genv.GF_SECURITY_ADMIN_PASSWORD, undefined, 'no admin password in the compose file');
  assert.equal(genv.GF_SECURITY_ADMIN_PASSWORD__FILE, '/run/secrets/grafana_admin_password', 'admin password from a secret file, not admin/admin');
  assert.deepEqual(g.secrets, ['grafana_admin_password']);
  assert.ok(g.volumes.some((v: string) => v.startsWith('./grafana/provisioning:/etc/grafana/provisioning')));
  assert.ok(g.volumes.some((v: string) => v.startsWith('./grafana/dashboards:/var/lib/grafana/dashboards')));
  const deps = Array.isArray(g.depends_on) ? g.depends_on : Object.keys(g.depends_on);
  assert.ok(deps.includes('prometheus'));
});

// ---------------------------------------------------------------------------
// Kubernetes.

const K8S_DIR = deployPath('k8s');
const KUSTOMIZATION = yaml1('k8s', 'kustomization.yaml');
const OPERATOR_KUSTOMIZATION = yaml1('k8s', 'operator', 'kustomization.yaml');
const manifestDocs = (dir: string): any[] =>
  readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml')
    .flatMap((f) => yamlDocs(join(dir, f)).map((d) => ({ ...d, __file: relative(K8S_DIR, join(dir, f)) })));
const K8S: any[] = [...manifestDocs(K8S_DIR), ...manifestDocs(join(K8S_DIR, 'operator'))];
const k8s = (kind: string, name: string): any => {
  const found = K8S.find((d) => d.kind === kind && d.metadata?.name === name);
  assert.ok(found, `k8s ${kind}/${name}`);
  return found;
};
function k8sEnv(c: any): Record<string, string> {
  return Object.fromEntries((c.env ?? []).map((e: any) => [e.name, e.value ?? '$(valueFrom)']));
}
/** Container port number for a probe/service targetPort (number or port name). */
function resolvePort(container: any, port: number | string): number {
  if (typeof port === 'number') return port;
  const p = (container.ports ?? []).find((x: any) => x.name === port);
  assert.ok(p, `no container port named ${port}`);
  return p.containerPort;
}
const GENERATED_SECRETS = new Set<string>((KUSTOMIZATION.secretGenerator ?? []).map((g: any) => g.name));

test('k8s: kustomizations list the manifests; all objects are in the namespace; the token Secret is generated', () => {
  for (const f of ['namespace.yaml', 'pvc.yaml', 'coordinator.yaml', 'workers.yaml', 'relays.yaml', 'pdb.yaml']) {
    assert.ok(KUSTOMIZATION.resources.includes(f), `kustomization.yaml lists ${f}`);
  }
  for (const f of KUSTOMIZATION.resources) assert.ok(existsSync(join(K8S_DIR, f)), f);
  for (const f of OPERATOR_KUSTOMIZATION.resources) assert.ok(existsSync(join(K8S_DIR, 'operator', f)), `operator/${f}`);
  assert.deepEqual([...OPERATOR_KUSTOMIZATION.resources].sort(), ['prometheusrule.yaml', 'servicemonitor.yaml']);
  const ns = k8s('Namespace', KUSTOMIZATION.namespace);
  assert.equal(OPERATOR_KUSTOMIZATION.namespace, ns.metadata.name);
  assert.equal(ns.metadata.labels['pod-security.kubernetes.io/enforce'], 'restricted');
  for (const d of K8S) {
    assert.ok(d.apiVersion && d.kind && d.metadata?.name, `${d.__file}: apiVersion/kind/name`);
    if (d.kind !== 'Namespace') assert.equal(d.metadata.namespace, ns.metadata.name, `${d.__file} ${d.kind}/${d.metadata.name}`);
  }
  // The token: generated from a git-ignored file, never a Secret in the repository.
  const gen = KUSTOMIZATION.secretGenerator.find((g: any) => g.name === 'dptrain-token');
  assert.deepEqual(gen.files, ['token=secrets/token']);
  assert.ok(!K8S.some((d) => d.kind === 'Secret'), 'no Secret manifest (a committed token is a known token)');
});

const JOBS = { coordinator: 'dptrain-coordinator', worker: 'dptrain-worker' } as const;

/** The pod-level and container-level hardening the "restricted" Pod Security Standard asks for, and more. */
function checkHardening(pod: any, c: any, where: string): void {
  const psc = pod.spec.securityContext;
  assert.equal(psc.runAsNonRoot, true, `${where}: runAsNonRoot`);
  assert.equal(psc.runAsUser, 10001, `${where}: the image's uid`);
  assert.equal(psc.seccompProfile?.type, 'RuntimeDefault', `${where}: seccompProfile RuntimeDefault`);
  const sc = c.securityContext;
  assert.equal(sc.allowPrivilegeEscalation, false, `${where}: allowPrivilegeEscalation`);
  assert.deepEqual(sc.capabilities.drop, ['ALL'], `${where}: drop ALL capabilities`);
  assert.equal(sc.readOnlyRootFilesystem, true, `${where}: read-only root filesystem`);
  const mounts = new Map<string, string>(c.volumeMounts.map((m: any) => [m.mountPath, m.name]));
  const volumes = new Map<string, any>(pod.spec.volumes.map((v: any) => [v.name, v]));
  assert.ok(volumes.get(mounts.get('/tmp')!)?.emptyDir, `${where}: an emptyDir on /tmp`);
  for (const v of volumes.values()) {
    if (v.persistentVolumeClaim) k8s('PersistentVolumeClaim', v.persistentVolumeClaim.claimName);
    if (v.secret) assert.ok(GENERATED_SECRETS.has(v.secret.secretName), `${where}: Secret ${v.secret.secretName} is generated`);
  }
}

/** The token reaches the process as a file from the generated Secret, never as an environment variable. */
function checkTokenFile(pod: any, c: any, args: ParsedArgs, env: Map<string, string>, where: string): void {
  assert.ok(!(c.env ?? []).some((e: any) => e.name === envVarFor('token')), `${where}: no token in the environment`);
  const tokenFile = flagOrEnv(args, env, 'token-file')!;
  const dir = tokenFile.slice(0, tokenFile.lastIndexOf('/'));
  const mount = c.volumeMounts.find((m: any) => m.mountPath === dir);
  assert.ok(mount?.readOnly, `${where}: ${dir} mounted read-only`);
  const secret = pod.spec.volumes.find((v: any) => v.name === mount.name)?.secret;
  assert.ok(secret && GENERATED_SECRETS.has(secret.secretName), `${where}: ${tokenFile} comes from the generated Secret`);
  const item = secret.items.find((i: any) => tokenFile.endsWith(`/${i.path}`));
  assert.equal(item?.key, 'token', `${where}: the Secret's key "token"`);
  // Readable by the pod's group (fsGroup), not by others.
  assert.equal(secret.defaultMode & 0o007, 0, `${where}: token file not world-readable`);
  assert.ok(secret.defaultMode & 0o040, `${where}: token file readable by fsGroup ${pod.spec.securityContext.fsGroup}`);
}

function checkJob(job: any, where: string): { pod: any; c: any } {
  assert.equal(job.apiVersion, 'batch/v1');
  assert.ok(Number.isInteger(job.spec.backoffLimit) && job.spec.backoffLimit > 0, `${where}: backoffLimit`);
  assert.ok(Number.isInteger(job.spec.ttlSecondsAfterFinished) && job.spec.ttlSecondsAfterFinished > 0, `${where}: ttlSecondsAfterFinished`);
  const pod = job.spec.template;
  assert.equal(pod.spec.restartPolicy, 'OnFailure', `${where}: restart on failure only; exit 0 = finished`);
  assert.equal(pod.spec.containers.length, 1);
  return { pod, c: pod.spec.containers[0] };
}

test('k8s: coordinator Job and Service', () => {
  const job = k8s('Job', JOBS.coordinator);
  const { pod, c } = checkJob(job, 'coordinator Job');
  assert.equal(job.spec.completions ?? 1, 1);
  assert.equal(job.spec.parallelism ?? 1, 1);
  assert.equal(pod.metadata.annotations['prometheus.io/scrape'], 'true');
  assert.equal(pod.metadata.annotations['prometheus.io/port'], String(COORDINATOR_METRICS_PORT));
  assert.equal(c.image, IMAGES.cpu);
  const args = checkArgs(c.args, 'k8s coordinator');
  const env = checkEnv(k8sEnv(c), args.command, 'k8s coordinator');
  checkCoordinatorArgs(args, env, 'k8s coordinator');
  assert.deepEqual((c.ports as any[]).map((p) => p.containerPort).sort(), [WS_PORT, COORDINATOR_METRICS_PORT]);
  assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  assert.equal(resolvePort(c, c.readinessProbe.httpGet.port), COORDINATOR_METRICS_PORT);
  assert.equal(c.livenessProbe.httpGet.path, '/healthz');
  assert.equal(resolvePort(c, c.livenessProbe.httpGet.port), COORDINATOR_METRICS_PORT);
  assert.equal(c.startupProbe.httpGet.path, '/healthz');
  checkHardening(pod, c, 'k8s coordinator');
  checkTokenFile(pod, c, args, env, 'k8s coordinator');
  // Checkpoints on a PVC that the Job does not own.
  const mounts = new Map<string, string>(c.volumeMounts.map((m: any) => [m.mountPath, m.name]));
  const ckpt = pod.spec.volumes.find((v: any) => v.name === mounts.get(flagOrEnv(args, env, 'checkpoint-dir')!));
  assert.ok(ckpt?.persistentVolumeClaim, 'checkpoint dir on a PVC');
  const pvc = k8s('PersistentVolumeClaim', ckpt.persistentVolumeClaim.claimName);
  assert.equal(pvc.metadata.ownerReferences, undefined, 'the checkpoint PVC outlives the Job');
  // The readiness meaning is written next to the probe, and true to /readyz.
  const text = readFileSync(join(K8S_DIR, 'coordinator.yaml'), 'utf8');
  assert.match(text, /Readiness = accepting workers/);

  const svc = k8s('Service', JOBS.coordinator);
  for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(pod.metadata.labels[k], v, `selector ${k}`);
  assert.notEqual(svc.spec.publishNotReadyAddresses, true, 'workers go only to a coordinator that accepts them');
  const svcPorts = (svc.spec.ports as any[]).map((p) => [p.port, resolvePort(c, p.targetPort ?? p.port)]);
  assert.deepEqual(svcPorts.sort(), [
    [WS_PORT, WS_PORT],
    [COORDINATOR_METRICS_PORT, COORDINATOR_METRICS_PORT],
  ]);
});

test('k8s: GPU workers as an Indexed Job with probes on their own port', () => {
  const job = k8s('Job', JOBS.worker);
  const { pod, c } = checkJob(job, 'worker Job');
  assert.equal(job.spec.completionMode, 'Indexed');
  assert.equal(job.spec.completions, 2);
  assert.equal(job.spec.parallelism, job.spec.completions, 'every worker runs at once');
  assert.equal(pod.metadata.annotations['prometheus.io/scrape'], 'true');
  assert.equal(pod.metadata.annotations['prometheus.io/port'], String(WORKER_METRICS_PORT));
  assert.equal(c.image, IMAGES.gpu);
  assert.equal(String(c.resources.limits['nvidia.com/gpu']), '1');
  const args = checkArgs(c.args, 'k8s worker');
  const env = checkEnv(k8sEnv(c), args.command, 'k8s worker');
  const svc = k8s('Service', JOBS.coordinator);
  assert.ok((svc.spec.ports as any[]).some((p) => p.port === WS_PORT));
  const relaySvc = k8s('Service', 'dptrain-relay');
  checkWorkerArgs(args, env, `ws://${relaySvc.metadata.name}:${RELAY_PORT},ws://${svc.metadata.name}:${WS_PORT}`, 'k8s worker');
  assert.deepEqual((c.ports as any[]).map((p) => p.containerPort), [WORKER_METRICS_PORT]);
  for (const [probe, path] of [['livenessProbe', '/healthz'], ['readinessProbe', '/readyz'], ['startupProbe', '/healthz']] as const) {
    assert.equal(c[probe]?.httpGet?.path, path, `worker ${probe}`);
    assert.equal(resolvePort(c, c[probe].httpGet.port), WORKER_METRICS_PORT, `worker ${probe} port`);
  }
  checkHardening(pod, c, 'k8s worker');
  checkTokenFile(pod, c, args, env, 'k8s worker');
  // A stable name per index.
  const index = (c.env as any[]).find((e) => e.name === 'JOB_INDEX');
  assert.equal(index?.valueFrom?.fieldRef?.fieldPath, "metadata.annotations['batch.kubernetes.io/job-completion-index']");
  assert.equal(env.get('name'), 'dptrain-worker-$(JOB_INDEX)');
});

test('k8s: a relay per node (DaemonSet) behind a node-local Service, on the GPU nodes, ready once welcomed', () => {
  const ds = k8s('DaemonSet', 'dptrain-relay');
  assert.equal(ds.apiVersion, 'apps/v1');
  const pod = ds.spec.template;
  for (const [k, v] of Object.entries(ds.spec.selector.matchLabels)) assert.equal(pod.metadata.labels[k], v, `selector ${k}`);
  assert.equal(pod.metadata.labels['app.kubernetes.io/component'], 'relay');
  assert.ok(pod.spec.tolerations.some((t: any) => t.key === 'nvidia.com/gpu' && t.operator === 'Exists'), 'runs on the GPU nodes, where the workers are');
  assert.equal(pod.spec.containers.length, 1);
  const c = pod.spec.containers[0];
  assert.equal(c.image, IMAGES.cpu);
  assert.ok(!c.resources?.limits?.['nvidia.com/gpu'], 'a relay takes no GPU');
  assert.ok(!(c.ports as any[]).some((p) => p.hostPort), 'no hostPort (the restricted Pod Security Standard forbids it)');
  const args = checkArgs(c.args, 'k8s relay');
  const env = checkEnv(k8sEnv(c), args.command, 'k8s relay');
  checkRelayArgs(args, env, `ws://${k8s('Service', JOBS.coordinator).metadata.name}:${WS_PORT}`, 'k8s relay');
  assert.equal(flagOrEnv(args, env, 'reconnect-grace'), '0', 'a DaemonSet pod always restarts: the relay waits for the next run instead of failing');
  assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  assert.equal(resolvePort(c, c.readinessProbe.httpGet.port), RELAY_METRICS_PORT);
  assert.equal(c.livenessProbe.httpGet.path, '/healthz');
  checkHardening(pod, c, 'k8s relay');
  checkTokenFile(pod, c, args, env, 'k8s relay');
  const svc = k8s('Service', 'dptrain-relay');
  assert.equal(svc.spec.internalTrafficPolicy, 'Local', "a worker reaches its own node's relay only");
  for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(pod.metadata.labels[k], v, `selector ${k}`);
  const svcPorts = (svc.spec.ports as any[]).map((p) => [p.port, resolvePort(c, p.targetPort ?? p.port)]);
  assert.deepEqual(svcPorts.sort(), [
    [RELAY_PORT, RELAY_PORT],
    [RELAY_METRICS_PORT, RELAY_METRICS_PORT],
  ]);
  // The reason for the pattern is written next to it.
  assert.match(readFileSync(join(K8S_DIR, 'relays.yaml'), 'utf8'), /Why a DaemonSet and not a sidecar/);
});

test('k8s: the PodDisruptionBudget covers the workers; ServiceMonitors select the Services by their metrics port', () => {
  const pdb = k8s('PodDisruptionBudget', 'dptrain-worker');
  const pod = k8s('Job', JOBS.worker).spec.template;
  for (const [k, v] of Object.entries(pdb.spec.selector.matchLabels)) assert.equal(pod.metadata.labels[k], v, `PDB selector ${k}`);
  // Pods of a Job (no scale subresource) allow only an integer minAvailable.
  assert.equal(pdb.spec.maxUnavailable, undefined);
  assert.ok(Number.isInteger(pdb.spec.minAvailable) && pdb.spec.minAvailable < k8s('Job', JOBS.worker).spec.completions, 'a drain can evict one worker');
  assert.ok(!K8S.some((d) => d.kind === 'PodDisruptionBudget' && d.spec.selector.matchLabels['app.kubernetes.io/component'] === 'coordinator'), 'no budget that blocks every drain');

  const monitors = K8S.filter((d) => d.kind === 'ServiceMonitor');
  assert.equal(monitors.length, 3);
  const services = K8S.filter((d) => d.kind === 'Service');
  const jobNames = new Set<string>();
  for (const m of monitors) {
    const matching = services.filter((s) =>
      Object.entries(m.spec.selector.matchLabels).every(([k, v]) => s.metadata.labels?.[k] === v),
    );
    assert.equal(matching.length, 1, `${m.metadata.name} selects exactly one Service`);
    jobNames.add(matching[0].metadata.name);
    const ports = (matching[0].spec.ports as any[]).map((p) => p.name);
    for (const e of m.spec.endpoints) assert.ok(ports.includes(e.port), `${m.metadata.name}: port ${e.port}`);
  }
  // The operator names the job after the Service: the job names the alerts expect.
  assert.deepEqual([...jobNames].sort(), ['dptrain-coordinator', 'dptrain-relay', 'dptrain-worker']);
});

/** The sh wrapper in a container's command, and the program it runs. */
function wrapperOf(c: any): { script: string; program: string[] } {
  assert.deepEqual(c.command.slice(0, 4), ['/usr/bin/tini', '--', '/bin/sh', '-c'], 'tini runs sh -c SCRIPT node /app/dist/cli.js');
  return { script: c.command[4], program: c.command.slice(5) };
}

function runWrapper(script: string, mode: string, term: boolean): Promise<{ code: number | null; marker: boolean }> {
  const dir = mkdtempSync(join(os.tmpdir(), 'dptrain-wrapper-'));
  const marker = join(dir, 'exited');
  // A stand-in for dptrain: prints "ready", then exits as told; on SIGTERM it takes a moment (a checkpoint) first.
  const program = `
    const [mode, marker] = process.argv.slice(1);
    const done = (code) => { require('fs').writeFileSync(marker, String(code)); process.exit(code); };
    process.on('SIGTERM', () => setTimeout(() => done(mode === 'fail-on-term' ? 1 : 0), 300));
    if (mode === 'exit0') done(0);
    if (mode === 'exit3') done(3);
    console.log('ready');
    setInterval(() => {}, 1000);
  `;
  const child = spawn('/bin/sh', ['-c', script, process.execPath, '-e', program, mode, marker], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`wrapper (${mode}) did not exit`)), 15_000);
    child.stdout!.on('data', (d) => {
      if (term && String(d).includes('ready')) child.kill('SIGTERM');
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      const exited = existsSync(marker);
      rmSync(dir, { recursive: true, force: true });
      resolve({ code, marker: exited });
    });
  });
}

test('k8s: the exit-code wrapper turns "exit 0 after SIGTERM" into 143 and passes every other exit through', async () => {
  const coordinator = wrapperOf(k8s('Job', JOBS.coordinator).spec.template.spec.containers[0]);
  const worker = wrapperOf(k8s('Job', JOBS.worker).spec.template.spec.containers[0]);
  assert.equal(worker.script, coordinator.script, 'one wrapper for both roles');
  for (const w of [coordinator, worker]) assert.deepEqual(w.program, ['node', '/app/dist/cli.js']);
  const script = coordinator.script;
  // Finished: 0 stays 0 (the Job completes). A failure passes through (the Job retries).
  assert.deepEqual(await runWrapper(script, 'exit0', false), { code: 0, marker: true });
  assert.deepEqual(await runWrapper(script, 'exit3', false), { code: 3, marker: true });
  // Stopped by SIGTERM (a drain): the wrapper waits for the process to finish its checkpoint, then exits 143.
  assert.deepEqual(await runWrapper(script, 'graceful', true), { code: 143, marker: true });
  // A failure during the stop stays a failure.
  assert.deepEqual(await runWrapper(script, 'fail-on-term', true), { code: 1, marker: true });
});

test('k8s: kustomize renders both kustomizations with a token file, and refuses without one', () => {
  const tool = ['kustomize', 'kubectl'].find((b) => !spawnSync(b, ['version', ...(b === 'kubectl' ? ['--client'] : [])], { encoding: 'utf8' }).error);
  assert.ok(tool, 'neither kustomize nor kubectl is installed (.ci/run installs kubectl)');
  const build = (dir: string) =>
    spawnSync(tool, tool === 'kubectl' ? ['kustomize', dir] : ['build', dir], { encoding: 'utf8', timeout: 60_000 });
  const tmp = mkdtempSync(join(os.tmpdir(), 'dptrain-kustomize-'));
  try {
    const copy = join(tmp, 'k8s');
    cpSync(K8S_DIR, copy, { recursive: true, filter: (src) => !src.split(/[\\/]/).includes('secrets') });
    const without = build(copy);
    assert.notEqual(without.status, 0, 'kustomize must refuse to render without deploy/k8s/secrets/token');
    assert.match(without.stderr, /secrets\/token/);

    const token = 'kustomize-test-token-0123456789';
    mkdirSync(join(copy, 'secrets'));
    writeFileSync(join(copy, 'secrets', 'token'), `${token}\n`, { mode: 0o600 });
    const out = build(copy);
    assert.equal(out.status, 0, `${tool} kustomize:\n${out.stderr}`);
    const docs = parseYamlDocs(out.stdout, 'rendered deploy/k8s');
    const kinds = docs.map((d) => `${d.kind}/${d.metadata.name.replace(/-[a-z0-9]{10}$/, '-<hash>')}`).sort();
    assert.deepEqual(kinds, [
      'DaemonSet/dptrain-relay',
      'Job/dptrain-coordinator',
      'Job/dptrain-worker',
      'Namespace/dptrain',
      'PersistentVolumeClaim/dptrain-checkpoints',
      'PersistentVolumeClaim/dptrain-data',
      'PodDisruptionBudget/dptrain-worker',
      'Secret/dptrain-token-<hash>',
      'Service/dptrain-coordinator',
      'Service/dptrain-relay',
      'Service/dptrain-worker',
    ]);
    const secret = docs.find((d) => d.kind === 'Secret');
    assert.equal(Buffer.from(secret.data.token, 'base64').toString(), `${token}\n`);
    for (const job of docs.filter((d) => d.kind === 'Job' || d.kind === 'DaemonSet')) {
      assert.equal(job.metadata.namespace, 'dptrain');
      const names = job.spec.template.spec.volumes.filter((v: any) => v.secret).map((v: any) => v.secret.secretName);
      assert.deepEqual(names, [secret.metadata.name], `${job.metadata.name} mounts the generated Secret`);
    }

    const operator = build(join(copy, 'operator'));
    assert.equal(operator.status, 0, `${tool} kustomize operator:\n${operator.stderr}`);
    const opDocs = parseYamlDocs(operator.stdout, 'rendered deploy/k8s/operator');
    assert.deepEqual(opDocs.map((d) => `${d.kind}/${d.metadata.name}`).sort(), [
      'PrometheusRule/dptrain',
      'ServiceMonitor/dptrain-coordinator',
      'ServiceMonitor/dptrain-relay',
      'ServiceMonitor/dptrain-worker',
    ]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
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
