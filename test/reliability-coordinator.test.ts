/**
 * The coordinator process killed with SIGKILL mid-run, again and again, while
 * it checkpoints every step; then stopped with SIGTERM. External workers with
 * default retries find it again on the same port by themselves.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { readCheckpoint, CHECKPOINT_FILE } from '../src/shared/store/checkpoint.js';
import { Rng } from '../src/shared/data/rng.js';
import { corpusFile, killAll, spawnWorker, tmpDir, TOKEN, waitFor, type WorkerProc } from './support/cluster.js';
import { freePort, scrape, startCoordinatorProc, within, type CoordinatorProc } from './support/processes.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function killWhenWriting(coord: CoordinatorProc, dir: string): Promise<void> {
  const tmp = `.${CHECKPOINT_FILE}.tmp-${coord.child.pid}`;
  const watcher = fs.watch(dir);
  try {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no checkpoint write seen within 10 s')), 10_000);
      watcher.on('change', (_event, name) => {
        if (name !== tmp) return;
        coord.child.kill('SIGKILL');
        clearTimeout(t);
        resolve();
      });
    });
  } finally {
    watcher.close();
  }
}

/** Polls the coordinator's /metrics until dptrain_step reaches target. */
async function untilStep(metricsPort: number, target: number, context: () => string, timeoutMs = 60_000): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const step = await scrape(metricsPort, 'dptrain_step');
    if (step >= target) return step;
    if (Date.now() - t0 > timeoutMs) throw new Error(`step ${step}, not ${target}, after ${timeoutMs} ms\n${context()}`);
    await sleep(20);
  }
}

test('coordinator SIGKILLed 4 times, mostly mid-checkpoint: the checkpoint always reads back whole, --resume loses at most the step being written, workers come back by themselves; SIGTERM ends it cleanly', async () => {
  const KILLS = 4;
  const dir = tmpDir();
  const port = await freePort();
  const args = [
    '--corpus', corpusFile(), '--max-tokens', '1000', '--batch-size', '6', '--num-steps', '5', '--hidden', '16', '--epochs', '100000',
    '--host', '127.0.0.1', '--port', String(port), '--metrics-host', '127.0.0.1', '--metrics-port', '0', '--backend', 'cpu',
    '--checkpoint-dir', dir, '--checkpoint-every', '1', '--min-workers', '2', '--heartbeat-interval', '1', '--log-every', '100000', '--sample-every', '0',
  ];
  const env = { DPTRAIN_TOKEN: TOKEN };
  const rng = new Rng(99);
  const coordinators: CoordinatorProc[] = [];
  const workers: WorkerProc[] = [];
  const kills: { stepSeen: number; checkpointStep: number; tempFileLeft: boolean }[] = [];
  try {
    let coord = startCoordinatorProc(args, env);
    coordinators.push(coord);
    assert.equal(await coord.listening(), port);
    const url = `ws://127.0.0.1:${port}`;
    // Default --max-retries: retry forever with backoff.
    workers.push(spawnWorker(url, ['--name', 'w-a']), spawnWorker(url, ['--name', 'w-b']));
    let resumedFrom = 0;
    for (let k = 0; k < KILLS; k++) {
      const mport = await coord.metricsPort();
      const target = resumedFrom + rng.int(30, 80);
      await untilStep(mport, target, () => `${coord.output()}\n${workers.map((w) => w.output()).join('\n')}`);
      const stepSeen = await scrape(mport, 'dptrain_step');
      if (k === 0) {
        await sleep(rng.int(0, 15));
        coord.child.kill('SIGKILL');
      } else {
        // The moment a checkpoint's temp file appears: killed in the middle of writing it.
        await killWhenWriting(coord, dir);
      }
      assert.equal((await within(coord.exited, 10_000, 'the killed coordinator to exit')).signal, 'SIGKILL');
      // Its temp file still there means it died in the middle of writing a checkpoint.
      const tempFileLeft = fs.existsSync(path.join(dir, `.${CHECKPOINT_FILE}.tmp-${coord.child.pid}`));
      // Whole: readCheckpoint checks the magic, the length and the SHA-256.
      const ck = await readCheckpoint(dir);
      assert.ok(ck.step >= stepSeen - 1, `checkpoint at step ${ck.step}, the coordinator had reached ${stepSeen}`);
      assert.ok(ck.params.every(Number.isFinite));
      kills.push({ stepSeen, checkpointStep: ck.step, tempFileLeft });

      const deadPid = coord.child.pid;
      coord = startCoordinatorProc([...args, '--resume'], env);
      coordinators.push(coord);
      assert.equal(await coord.listening(), port);
      assert.match(coord.output(), new RegExp(`resume: step ${ck.step},`));
      // A partial write of the dead process is cleaned up, not left to pile up crash after crash.
      assert.ok(!fs.existsSync(path.join(dir, `.${CHECKPOINT_FILE}.tmp-${deadPid}`)), 'temp file of the killed coordinator removed');
      resumedFrom = ck.step;
    }
    // Both workers find the last coordinator by themselves and training goes on.
    const mport = await coord.metricsPort();
    await waitFor(() => (coord.output().match(/joined from/g) ?? []).length >= 2, 60_000, 'both workers to rejoin');
    await untilStep(mport, resumedFrom + 20, () => coord.output());

    coord.child.kill('SIGTERM');
    assert.deepEqual(await within(coord.exited, 30_000, 'the coordinator to stop'), { code: 0, signal: null }, coord.output());
    const stoppedAt = Number(/stopped at step (\d+)/.exec(coord.output())?.[1]);
    const final = await readCheckpoint(dir);
    assert.equal(final.step, stoppedAt, 'the final checkpoint holds the last step');
    // Told the coordinator is going away (4011: a restart, a rollout), the workers wait to reconnect; stopped themselves, they exit 0.
    await waitFor(() => workers.every((w) => /the coordinator is going away/.test(w.output())), 10_000, 'both workers to say they will reconnect');
    for (const w of workers) {
      assert.equal(w.child.exitCode, null, w.output());
      w.child.kill('SIGTERM');
    }
    for (const w of workers) assert.deepEqual(await within(w.exited, 10_000, 'the worker to exit'), { code: 0, signal: null }, w.output());
    for (const w of workers) {
      assert.equal((w.output().match(/joined as/g) ?? []).length, KILLS + 1, w.output());
      assert.ok((w.output().match(/reconnecting to ws:/g) ?? []).length >= KILLS);
    }
    console.log(
      'reliability-counts',
      JSON.stringify({
        test: 'coordinator-sigkill',
        kills: KILLS,
        killsWithTempFileLeft: kills.filter((x) => x.tempFileLeft).length,
        stepsLostPerKill: kills.map((x) => Math.max(0, x.stepSeen - x.checkpointStep)),
        checkpointsReadBackWhole: kills.length + 1,
        finalStep: final.step,
      }),
    );
  } finally {
    for (const c of coordinators) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
    killAll(workers);
  }
});
