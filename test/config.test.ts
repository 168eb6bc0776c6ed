import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { resolveCoordinatorConfig, resolveWorkerConfig, readToken, publicConfig } from '../src/shared/config.js';
import { COORDINATOR_OPTIONS, envVarFor } from '../src/shared/options.js';
import { isDptrainError } from '../src/shared/errors.js';
import { tmpDir } from './support/cluster.js';

function badConfig(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => isDptrainError(e, 'ERR_BAD_CONFIG') && re.test((e as Error).message));
}

test('defaults are the d2l hyperparameters', () => {
  const c = resolveCoordinatorConfig({}, {});
  assert.equal(c.batchSize, 32);
  assert.equal(c.numSteps, 35);
  assert.equal(c.hidden, 256);
  assert.equal(c.lr, 1);
  assert.equal(c.clip, 1);
  assert.equal(c.optimizer, 'sgd');
  assert.equal(c.maxTokens, 0); // the bundled corpus is used whole
  assert.equal(resolveCoordinatorConfig({ corpus: 'timemachine' }, {}).maxTokens, 10000); // d2l's cut belongs to the d2l setup
  assert.equal(c.epochs, 500);
});

test('precedence: flags > environment > config file > defaults, for YAML and JSON', () => {
  const dir = tmpDir();
  const yml = path.join(dir, 'c.yaml');
  fs.writeFileSync(yml, 'hidden: 64\nbatch-size: 16\nlr: 0.5\n');
  const json = path.join(dir, 'c.json');
  fs.writeFileSync(json, JSON.stringify({ numSteps: 7, optimizer: 'adam' }));
  const env = { DPTRAIN_BATCH_SIZE: '8', DPTRAIN_CONFIG: yml };
  const c = resolveCoordinatorConfig({ lr: 0.25 }, env);
  assert.equal(c.hidden, 64); // file
  assert.equal(c.batchSize, 8); // env over file
  assert.equal(c.lr, 0.25); // flag over file
  const j = resolveCoordinatorConfig({ config: json }, {});
  assert.equal(j.numSteps, 7);
  assert.equal(j.optimizer, 'adam');
});

test('unknown keys, wrong types and out-of-range values fail with one sentence', () => {
  const dir = tmpDir();
  const f = path.join(dir, 'c.yaml');
  fs.writeFileSync(f, 'hiden: 64\n');
  badConfig(() => resolveCoordinatorConfig({ config: f }, {}), /unknown option 'hiden'/);
  badConfig(() => resolveCoordinatorConfig({}, { DPTRAIN_HIDDEN: 'lots' }), /--hidden must be a number.*DPTRAIN_HIDDEN/);
  badConfig(() => resolveCoordinatorConfig({ batchSize: 2.5 }, {}), /integer/);
  badConfig(() => resolveCoordinatorConfig({ valFraction: 0.9 }, {}), /at most 0.5/);
  badConfig(() => resolveCoordinatorConfig({ partition: 'shuffled' }, {}), /sequential, random/);
  badConfig(() => resolveCoordinatorConfig({ resume: true }, {}), /--resume needs --checkpoint-dir/);
  badConfig(() => resolveCoordinatorConfig({ tlsCert: 'a.pem' }, {}), /go together/);
  badConfig(() => resolveCoordinatorConfig({ maxTokens: 100 }, {}), /less than one batch needs/);
  badConfig(() => resolveCoordinatorConfig({ config: path.join(dir, 'missing.yaml') }, {}), /cannot read config file/);
  fs.writeFileSync(f, '[1, 2');
  badConfig(() => resolveCoordinatorConfig({ config: f }, {}), /not valid YAML/);
  badConfig(() => resolveWorkerConfig({ coordinator: 'localhost:8765' }, {}), /ws:\/\/HOST:PORT/);
  badConfig(() => resolveWorkerConfig({ gpu: 0, backend: 'wasm' }, {}), /--gpu needs/);
});

test('the token comes from a flag, env or a file, and is kept out of printed config', () => {
  const dir = tmpDir();
  const f = path.join(dir, 'token');
  fs.writeFileSync(f, 's3cret\n');
  assert.equal(readToken(resolveWorkerConfig({ tokenFile: f }, {})), 's3cret');
  const c = resolveCoordinatorConfig({}, { DPTRAIN_TOKEN: 'from-env' });
  assert.equal(readToken(c), 'from-env');
  assert.ok(!JSON.stringify(publicConfig(c, COORDINATOR_OPTIONS)).includes('from-env'));
  badConfig(() => readToken({ token: 'a', tokenFile: f }), /either --token or --token-file/);
  assert.equal(envVarFor('metrics-port'), 'DPTRAIN_METRICS_PORT');
});
