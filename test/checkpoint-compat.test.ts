/**
 * Checkpoints written before models had names still load, resume and generate.
 *
 * test/fixtures/checkpoint-before-models/ was made by dptrain before the model
 * descriptor existed (protocol version 1): `coordinator start --spawn 1
 * --corpus corpus.txt --hidden 4 --batch-size 2 --num-steps 5 --epochs 1
 * --optimizer adam --lr 0.01 --checkpoint-dir ck` wrote checkpoint.dpt, and
 * the same run resumed to --epochs 2 wrote after-epoch-2.dpt. Neither holds a
 * `model` field: the model follows from config.hidden.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CHECKPOINT_FILE, checkpointModel, readCheckpoint } from '../src/shared/store/checkpoint.js';
import { spawn } from 'node:child_process';
import { cliPath, relativeError, tmpDir } from './support/cluster.js';

const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'checkpoint-before-models');

/** `dptrain ARGS` run in `cwd` (the config records the corpus path as given, so the resume must see the same relative path). */
function dptrainIn(cwd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DPTRAIN_')));
  const child = spawn(process.execPath, ['--import', 'tsx', cliPath, ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, out })));
}

function copyFixture(): string {
  const dir = tmpDir();
  fs.copyFileSync(path.join(FIXTURE, 'corpus.txt'), path.join(dir, 'corpus.txt'));
  // The local workers a --spawn coordinator starts load tsx from their working directory.
  fs.symlinkSync(path.join(path.dirname(cliPath), '..', 'node_modules'), path.join(dir, 'node_modules'));
  fs.mkdirSync(path.join(dir, 'ck'));
  fs.copyFileSync(path.join(FIXTURE, CHECKPOINT_FILE), path.join(dir, 'ck', CHECKPOINT_FILE));
  return dir;
}

test('a checkpoint from before models had names reads as the char-LSTM its config describes', async () => {
  const ck = await readCheckpoint(FIXTURE);
  assert.equal(ck.model, undefined, 'the fixture predates the model field');
  assert.equal(ck.config.model, undefined);
  const model = checkpointModel(ck);
  assert.equal(model.name, 'char-lstm');
  assert.deepEqual(model.hyper, { hidden: 4 });
  assert.equal(model.paramCount, ck.params.length);
  assert.equal(ck.streamState?.length, 2 * model.stateWidth, 'batch 2 x [h|c]');
});

test('it resumes to the parameters the old code reached, and the new checkpoint names its model', async () => {
  const dir = copyFixture();
  const { code, out } = await dptrainIn(
    dir,
    ['coordinator', 'start', '--spawn', '1', '--corpus', 'corpus.txt', '--hidden', '4', '--batch-size', '2', '--num-steps', '5', '--epochs', '2',
      '--optimizer', 'adam', '--lr', '0.01', '--checkpoint-every', '0', '--checkpoint-dir', 'ck', '--resume', '--metrics-port', '-1', '--port', '0',
      '--host', '127.0.0.1', '--sample-every', '0'],
  );
  assert.equal(code, 0, out);
  assert.match(out, /resume: step 321, epoch 1, batch 0/);
  assert.match(out, /done: 641 steps, 2 epochs/);
  const now = await readCheckpoint(path.join(dir, 'ck'));
  const expected = await readFixtureFile('after-epoch-2.dpt');
  assert.equal(now.step, expected.step);
  // Within rounding, as every equivalence in these tests: the step's arithmetic has changed since the fixture was
  // written (gate kernels in float32 SIMD, other matMul orders), and 320 Adam steps carry those last-bit differences.
  const rel = relativeError(now.params, expected.params);
  assert.ok(rel <= 1e-5, `parameters differ from the old code's: relative error ${rel.toExponential(2)}`);
  assert.deepEqual(now.model, { name: 'char-lstm', hyper: { hidden: 4 } });
  assert.equal(now.config.model, 'char-lstm');
});

test('generate reads it', async () => {
  const dir = copyFixture();
  const { code, out } = await dptrainIn(dir, ['generate', '--checkpoint', 'ck', '--prefix', 'time traveller', '--length', '30', '--temperature', '0.6', '--seed', '5']);
  assert.equal(code, 0, out);
  const line = out.split('\n').find((l) => l.startsWith('time traveller')) ?? out;
  assert.equal(line.length, 'time traveller'.length + 30);
  assert.ok(line.startsWith('time traveller'), line);
});

/** after-epoch-2.dpt is a checkpoint file under another name: read it through a directory of its own. */
async function readFixtureFile(name: string) {
  const dir = tmpDir();
  fs.copyFileSync(path.join(FIXTURE, name), path.join(dir, CHECKPOINT_FILE));
  return readCheckpoint(dir);
}
