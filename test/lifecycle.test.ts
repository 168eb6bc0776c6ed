/**
 * A run's lifecycle with real processes, as an orchestrator drives it: a coordinator stopped and
 * started again mid-run (a rollout, a drain) keeps its workers, which rejoin and finish at the same
 * parameters as an uninterrupted run; a finished run started again trains nothing; workers exit 0
 * only when the run is finished, and notice a coordinator that froze.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { readCheckpoint } from '../src/shared/store/checkpoint.js';
import { corpusFile, relativeError, tmpDir, TOKEN, waitFor } from './support/cluster.js';
import { dptrain, freePort, NO_STACK, type Proc } from './support/proc.js';

const ENV = { DPTRAIN_TOKEN: TOKEN };
const corpus = corpusFile();
const TRAIN = ['--corpus', corpus, '--max-tokens', '3000', '--batch-size', '6', '--num-steps', '5', '--hidden', '16', '--epochs', '8', '--min-workers', '2', '--backend', 'cpu', '--log-every', '1', '--sample-every', '0', '--checkpoint-every', '0', '--metrics-port', '-1', '--host', '127.0.0.1'];

function worker(port: number, name: string): Proc {
  return dptrain(['worker', 'join', '--coordinator', `ws://127.0.0.1:${port}`, '--backend', 'cpu', '--name', name, '--reconnect-grace', '60'], ENV);
}

test('coordinator SIGTERMed mid-run and started again: workers stay, rejoin, and the run ends at the parameters of an uninterrupted one; a finished run is not trained again', async () => {
  const full = tmpDir();
  const a = dptrain(['coordinator', 'start', ...TRAIN, '--port', '0', '--spawn', '2', '--worker-backend', 'cpu', '--checkpoint-dir', full], ENV);
  assert.equal((await a.exited).code, 0, a.output());
  const want = await readCheckpoint(full);

  const dir = tmpDir();
  const port = await freePort();
  const args = ['coordinator', 'start', ...TRAIN, '--port', String(port), '--checkpoint-dir', dir, '--resume'];
  const first = dptrain(args, ENV);
  await waitFor(() => /listening on/.test(first.output()), 60_000, 'the coordinator');
  const workers = [worker(port, 'w-a'), worker(port, 'w-b')];
  try {
    await waitFor(() => /epoch 3\/8/.test(first.output()), 120_000, 'three epochs');
    first.kill('SIGTERM');
    assert.equal((await first.exited).code, 0, first.output());
    const mid = await readCheckpoint(dir);
    assert.ok(mid.step > 0 && mid.step < want.step, `stopped at step ${mid.step} of ${want.step}`);
    // The coordinator is away: the workers wait for it instead of exiting.
    await waitFor(() => workers.every((w) => /the coordinator is going away .*reconnecting for up to 60 s/.test(w.output())), 20_000, 'both workers to say they will reconnect');
    await new Promise((r) => setTimeout(r, 1000));
    for (const w of workers) assert.equal(w.exitCode(), null, `a worker exited while its coordinator restarted:\n${w.output()}`);

    const second = dptrain(args, ENV);
    assert.equal((await second.exited).code, 0, second.output());
    assert.match(second.output(), new RegExp(`resume: step ${mid.step}`));
    assert.match(second.output(), /done: \d+ steps/);
    for (const w of workers) {
      const { code } = await w.exited;
      assert.equal(code, 0, w.output());
      assert.match(w.output(), /joined as .*joined as /s, 'each worker joined both coordinators');
    }
    const got = await readCheckpoint(dir);
    assert.equal(got.step, want.step);
    const rel = relativeError(got.params, want.params);
    assert.ok(rel <= 1e-5, `parameters after the restart differ from the uninterrupted run: ${rel.toExponential(2)}`);

    // The orchestrator starts the finished coordinator again: it says so and exits 0 at once, without training.
    const before = crypto.createHash('sha256').update(fs.readFileSync(path.join(dir, 'checkpoint.dpt'))).digest('hex');
    const third = dptrain(args, ENV);
    assert.equal((await third.exited).code, 0, third.output());
    assert.match(third.output(), /already finished .*nothing to do/);
    assert.doesNotMatch(third.output(), /listening on/);
    assert.equal(crypto.createHash('sha256').update(fs.readFileSync(path.join(dir, 'checkpoint.dpt'))).digest('hex'), before);
  } finally {
    for (const w of workers) w.kill('SIGKILL');
  }
});

test('a worker notices a frozen coordinator by its missing heartbeats, and gives up after --reconnect-grace', async () => {
  const port = await freePort();
  const coord = dptrain(['coordinator', 'start', ...TRAIN, '--port', String(port), '--heartbeat-interval', '0.3'], ENV);
  await waitFor(() => /listening on/.test(coord.output()), 60_000, 'the coordinator');
  const w = dptrain(['worker', 'join', '--coordinator', `ws://127.0.0.1:${port}`, '--backend', 'cpu', '--reconnect-grace', '3'], ENV);
  try {
    await waitFor(() => /joined as/.test(w.output()), 60_000, 'the worker to join');
    coord.kill('SIGSTOP');
    await waitFor(() => /the coordinator has been silent for \d+\.\d s/.test(w.output()), 10_000, 'the worker to notice the silence');
    const { code } = await w.exited;
    assert.equal(code, 1, w.output());
    assert.match(w.output(), /no coordinator at .* \(--reconnect-grace 3\).*\(ERR_COORDINATOR_GONE\)/s);
    assert.doesNotMatch(w.output(), NO_STACK);
  } finally {
    coord.kill('SIGCONT');
    coord.kill('SIGKILL');
    w.kill('SIGKILL');
  }
});
