/**
 * Checkpoints that cannot be written: the coordinator says so in one line with
 * the error code, training goes on with its state intact, and the checkpoint
 * already on disk stays whole. Root ignores permissions, so the writes are
 * made to fail with a directory where the temp file goes (EISDIR). A checkpoint
 * directory that can never be created (its parent is a regular file) is refused
 * before the run starts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Coordinator } from '../src/coordinator/coordinator.js';
import { CHECKPOINT_FILE, readCheckpoint } from '../src/shared/store/checkpoint.js';
import { isDptrainError } from '../src/shared/errors.js';
import { corpusFile, killAll, relativeError, spawnWorker, tinyCoordinatorConfig, tmpDir, TOKEN, waitFor, type WorkerProc } from './support/cluster.js';
import { within } from './support/processes.js';
import { testBackend } from './support/tf.js';

const EVERY = 5;
const BLOCK_AT = 21;
const UNBLOCK_AT = 56;

interface Run {
  c: Coordinator;
  logs: string[];
  worker: WorkerProc;
  summary: Awaited<ReturnType<Coordinator['run']>>;
  params: Float32Array;
}

async function trainOnce(corpus: string, checkpointDir: string, onStep?: (step: number) => void): Promise<Run> {
  const logs: string[] = [];
  // One worker and a fixed seed: the run is deterministic, so runs with and without faults must agree exactly.
  const cfg = tinyCoordinatorConfig({ corpus, epochs: 3, maxTokens: 1000, checkpointDir, checkpointEvery: EVERY });
  const c = new Coordinator(cfg, TOKEN, { log: (l) => logs.push(l), progress: null, onRound: () => onStep?.(c.state.step) });
  await c.start();
  const worker = spawnWorker(`ws://127.0.0.1:${c.port}`);
  try {
    const summary = await within(c.run(), 60_000, 'the run to finish');
    await waitFor(() => worker.child.exitCode !== null, 10_000, 'the worker to exit after training');
    return { c, logs, worker, summary, params: c.server.params().slice() };
  } finally {
    killAll([worker]);
    c.dispose();
  }
}

test('checkpoint writes that fail: one clear line each, training goes on, the last good checkpoint stays whole, no state lost', async () => {
  await testBackend();
  const corpus = corpusFile();
  const clean = tmpDir();
  const faulty = tmpDir();
  const blocker = path.join(faulty, `.${CHECKPOINT_FILE}.tmp-${process.pid}`);
  let onDiskWhileBlocked: Buffer | null = null;
  const notADir = path.join(tmpDir(), 'regular-file');
  fs.writeFileSync(notADir, 'not a directory');

  const [reference, interrupted] = await Promise.all([
    trainOnce(corpus, clean),
    trainOnce(corpus, faulty, (step) => {
      // Synchronous, between the optimizer step and the checkpoint that follows it.
      if (step === BLOCK_AT) fs.mkdirSync(blocker);
      if (step === UNBLOCK_AT) {
        onDiskWhileBlocked = fs.readFileSync(path.join(faulty, CHECKPOINT_FILE));
        fs.rmdirSync(blocker);
      }
    }),
  ]);

  // While blocked: one line per failed checkpoint, naming the directory, the reason and the code.
  const failures = interrupted.logs.filter((l) => l.startsWith('checkpoint failed:'));
  const expectedFailures = Math.floor((UNBLOCK_AT - 1) / EVERY) - Math.floor((BLOCK_AT - 1) / EVERY);
  assert.equal(failures.length, expectedFailures, interrupted.logs.join('\n'));
  for (const l of failures) assert.match(l, new RegExp(`^checkpoint failed: Could not write a checkpoint to ${faulty}: .*\\(EISDIR\\)\\. \\(ERR_CHECKPOINT_WRITE\\)$`));
  // The checkpoint on disk during the outage was the last good one, whole.
  assert.ok(onDiskWhileBlocked, 'the outage ended during the run');
  const snapshot = tmpDir();
  fs.writeFileSync(path.join(snapshot, CHECKPOINT_FILE), onDiskWhileBlocked);
  const lastGood = await readCheckpoint(snapshot);
  assert.equal(lastGood.step, Math.floor(BLOCK_AT / EVERY) * EVERY);

  // Training went on through the outage, to the same parameters as the run without one.
  assert.equal(interrupted.summary.reason, 'done');
  assert.equal(interrupted.summary.steps, reference.summary.steps);
  assert.ok(reference.params.every(Number.isFinite));
  assert.equal(relativeError(interrupted.params, reference.params), 0, 'a failed checkpoint changed the training state');
  // Once writable again, the final checkpoint is the final state.
  const final = await readCheckpoint(faulty);
  assert.equal(final.step, interrupted.summary.steps);
  assert.equal(relativeError(final.params, interrupted.params), 0);

  // A directory that can never be created is refused before anything starts, not discovered write after write.
  const refused = new Coordinator(tinyCoordinatorConfig({ corpus, checkpointDir: path.join(notADir, 'checkpoints') }), TOKEN, { log: () => {}, progress: null });
  await assert.rejects(refused.start(), (e) => isDptrainError(e, 'ERR_CHECKPOINT_DIR') && /a part of its path is a file/.test(e.message));
  await refused.dispose();
  for (const r of [reference, interrupted]) assert.deepEqual(await within(r.worker.exited, 10_000, 'the worker to exit'), { code: 0, signal: null });

  console.log(
    'reliability-counts',
    JSON.stringify({
      test: 'checkpoint-write-failures',
      failedWrites: failures.length,
      steps: interrupted.summary.steps,
      // Parameters that end anywhere else than in the run without failures.
      parametersLost: interrupted.params.reduce((n, v, i) => n + (v === reference.params[i] ? 0 : 1), 0),
    }),
  );
});
