/**
 * SIGTERM a real coordinator process mid-run, --resume it, and end at the
 * same parameters as an uninterrupted run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readCheckpoint } from '../src/shared/store/checkpoint.js';
import { corpusFile, relativeError, tmpDir, waitFor } from './support/cluster.js';
import { startCoordinatorProc } from './support/processes.js';

const coordinator = (args: string[]) => startCoordinatorProc(args);

async function resumeMatches(extra: string[]): Promise<number> {
  const corpus = corpusFile();
  const common = [...extra, '--corpus', corpus, '--max-tokens', '3000', '--batch-size', '6', '--num-steps', '5', '--hidden', '16', '--epochs', '12', '--port', '0', '--metrics-port', '-1', '--host', '127.0.0.1', '--spawn', '2', '--min-workers', '2', '--backend', 'cpu', '--worker-backend', 'cpu', '--log-every', '1', '--sample-every', '0', '--checkpoint-every', '0'];

  const full = tmpDir();
  const a = coordinator([...common, '--checkpoint-dir', full]);
  assert.equal((await a.exited).code, 0, a.output());

  const part = tmpDir();
  const b = coordinator([...common, '--checkpoint-dir', part]);
  await waitFor(() => /epoch 3\/12/.test(b.output()), 60_000, 'three epochs');
  b.child.kill('SIGTERM');
  assert.equal((await b.exited).code, 0, b.output());
  assert.match(b.output(), /stopped at step \d+/);
  const mid = await readCheckpoint(part);
  const expectedSteps = (await readCheckpoint(full)).step;
  assert.ok(mid.step > 0 && mid.step < expectedSteps, `stopped at step ${mid.step} of ${expectedSteps}`);

  const c = coordinator([...common, '--checkpoint-dir', part, '--resume']);
  assert.equal((await c.exited).code, 0, c.output());
  assert.match(c.output(), new RegExp(`resume: step ${mid.step}`));

  const want = await readCheckpoint(full);
  const got = await readCheckpoint(part);
  assert.equal(got.step, want.step);
  const rel = relativeError(got.params, want.params);
  assert.ok(rel <= 1e-6, `resumed parameters differ: relative error ${rel.toExponential(2)}`);
  return rel;
}

test('SIGTERM writes a checkpoint and exits 0; --resume continues to the same parameters as an uninterrupted run', async () => {
  await resumeMatches([]);
});

test('--cell gru: SIGTERM and --resume continue to the same parameters as an uninterrupted run', async () => {
  const rel = await resumeMatches(['--cell', 'gru']);
  console.log(`gru: relative error of resumed parameters ${rel.toExponential(2)}`);
});
