/**
 * The alerting rules: `promtool test rules` runs deploy/prometheus/rules.test.yml,
 * in which every alert of rules.yml has a case where it fires and one where it
 * does not; every alert says how long its condition must hold, how bad it is
 * and what it means; the PrometheusRule for Operator users carries exactly the
 * groups of rules.yml.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { repoRoot } from './support/cluster.js';

const PROMTOOL = process.env.DPTRAIN_TEST_PROMTOOL ?? 'promtool';
const PROMETHEUS_DIR = path.join(repoRoot, 'deploy', 'prometheus');
const read = (...p: string[]): any => YAML.parse(readFileSync(path.join(repoRoot, ...p), 'utf8'));

const RULES = read('deploy', 'prometheus', 'rules.yml');
const ALERTS: any[] = RULES.groups.flatMap((g: any) => g.rules).filter((r: any) => r.alert);
const UNIT_TESTS = read('deploy', 'prometheus', 'rules.test.yml');

test('promtool test rules: every case of rules.test.yml passes', () => {
  const r = spawnSync(PROMTOOL, ['test', 'rules', 'rules.test.yml'], { cwd: PROMETHEUS_DIR, encoding: 'utf8', timeout: 120_000 });
  assert.ok(!r.error, `promtool is required for this test (Debian/Ubuntu: apt-get install prometheus; .ci/run installs it): ${r.error?.message}`);
  assert.equal(r.status, 0, `promtool test rules:\n${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /SUCCESS/);
});

test('promtool test rules fails when an alert misfires (the unit tests can fail)', () => {
  // The old DptrainWorkerLost: any leave within 5 minutes, no `for:`. It fires on the clean scale-down case.
  const broken = structuredClone(RULES);
  const lost = broken.groups.flatMap((g: any) => g.rules).find((r: any) => r.alert === 'DptrainWorkerLost');
  lost.expr = 'sum by (job, instance) (increase(dptrain_worker_leaves_total[5m])) > 0';
  delete lost.for;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dptrain-rules-'));
  try {
    copyFileSync(path.join(PROMETHEUS_DIR, 'rules.test.yml'), path.join(dir, 'rules.test.yml'));
    writeFileSync(path.join(dir, 'rules.yml'), YAML.stringify(broken));
    const r = spawnSync(PROMTOOL, ['test', 'rules', 'rules.test.yml'], { cwd: dir, encoding: 'utf8', timeout: 120_000 });
    assert.notEqual(r.status, 0, 'a misfiring alert must fail the unit tests');
    const out = `${r.stdout}${r.stderr}`;
    assert.match(out, /alertname: DptrainWorkerLost/);
    assert.match(out, /clean scale-down/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('every alert has a firing and a not-firing unit test', () => {
  const cases = new Map<string, { fires: number; silent: number }>(ALERTS.map((a) => [a.alert, { fires: 0, silent: 0 }]));
  for (const t of UNIT_TESTS.tests) {
    for (const c of t.alert_rule_test ?? []) {
      const entry = cases.get(c.alertname);
      assert.ok(entry, `${t.name}: tests an alert that rules.yml does not have: ${c.alertname}`);
      if ((c.exp_alerts ?? []).length > 0) entry.fires++;
      else entry.silent++;
    }
  }
  for (const [name, { fires, silent }] of cases) {
    assert.ok(fires > 0, `${name}: no unit test where it fires`);
    assert.ok(silent > 0, `${name}: no unit test where it stays silent`);
  }
  // The cases the alerts were reworked for.
  const names = UNIT_TESTS.tests.map((t: any) => t.name);
  for (const n of ['paused below min-workers', 'clean scale-down', 'perplexity not finite', 'coordinator vanished', 'run finished, static targets', 'run finished, discovered targets']) {
    assert.ok(names.includes(n), `rules.test.yml: case "${n}"`);
  }
  assert.equal(UNIT_TESTS.rule_files.length, 1);
  assert.equal(UNIT_TESTS.rule_files[0], 'rules.yml');
});

test('every alert states how long, how bad, and what it means', () => {
  const required = [
    'DptrainNoProgress',
    'DptrainTrainingPaused',
    'DptrainWorkerLost',
    'DptrainRoundTimeouts',
    'DptrainStraggler',
    'DptrainPerplexityNotFinite',
    'DptrainValidationPerplexityRising',
    'DptrainCheckpointStale',
    'DptrainCheckpointFailing',
    'DptrainTargetDown',
    'DptrainCoordinatorMissing',
  ];
  assert.deepEqual(ALERTS.map((a) => a.alert).sort(), [...required].sort());
  for (const a of ALERTS) {
    assert.match(String(a.for), /^\d+[smh]$/, `${a.alert}: an explicit for:`);
    assert.ok(['warning', 'critical'].includes(a.labels?.severity), `${a.alert}: severity`);
    assert.ok(a.annotations?.summary && a.annotations?.description, `${a.alert}: summary and description`);
  }
  const byName = new Map(ALERTS.map((a) => [a.alert, a]));
  // Paused training is not "no progress"; +Inf is caught as well as NaN; a vanished target is caught.
  assert.match(byName.get('DptrainNoProgress').expr, /dptrain_training_paused/);
  assert.match(byName.get('DptrainPerplexityNotFinite').expr, /== Inf/);
  assert.match(byName.get('DptrainCoordinatorMissing').expr, /absent\(up\{job="dptrain-coordinator"\}\)/);
  assert.match(byName.get('DptrainCheckpointStale').expr, /dptrain_last_checkpoint_timestamp_seconds/);
  assert.match(byName.get('DptrainCheckpointFailing').expr, /dptrain_checkpoint_failures_total/);
});

test('the PrometheusRule for Operator users carries exactly the groups of rules.yml', () => {
  const docs = YAML.parseAllDocuments(readFileSync(path.join(repoRoot, 'deploy', 'k8s', 'operator', 'prometheusrule.yaml'), 'utf8')).map((d) => d.toJS());
  assert.equal(docs.length, 1);
  const rule = docs[0];
  assert.equal(rule.apiVersion, 'monitoring.coreos.com/v1');
  assert.equal(rule.kind, 'PrometheusRule');
  assert.equal(rule.metadata.namespace, 'dptrain');
  assert.deepEqual(rule.spec.groups, RULES.groups, 'copy the groups of deploy/prometheus/rules.yml into deploy/k8s/operator/prometheusrule.yaml');
});
