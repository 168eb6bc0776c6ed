/** Workers join and die mid-run; training goes on to the end. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { killAll, spawnWorker, startCoordinator, tinyCoordinatorConfig, waitFor, type WorkerProc } from './support/cluster.js';

test('a third worker joins mid-run and gets streams; a worker SIGKILLed mid-round is dropped and training finishes', async () => {
  const logs: string[] = [];
  // Enough epochs that the run outlasts a worker process start-up.
  const cfg = tinyCoordinatorConfig({ minWorkers: 1, epochs: 150, maxTokens: 1000, roundTimeout: 5 });
  const c = await startCoordinator(cfg, logs);
  const procs: WorkerProc[] = [];
  try {
    const url = `ws://127.0.0.1:${c.port}`;
    procs.push(spawnWorker(url), spawnWorker(url));
    const running = c.run();
    // The first epoch's perplexity is the baseline the end of the run must beat: wait for it, do not assume it.
    await waitFor(() => c.membership.size === 2 && c.state.step > 20 && c.history.length > 0, 30_000, 'two workers through the first epoch');
    const lossAtStart = c.history[0].trainPerplexity;
    assert.ok(Number.isFinite(lossAtStart), `first epoch's perplexity ${lossAtStart}`);

    procs.push(spawnWorker(url, ['--name', 'late-joiner']));
    await waitFor(() => c.membership.list().some((m) => m.info.name === 'late-joiner' && m.rounds >= 3), 30_000, 'the third worker to compute rounds');
    assert.equal(c.membership.size, 3);
    const stepBeforeKill = c.state.step;

    // SIGKILL while rounds are in flight: the round in progress must not wait for the dead worker.
    procs[0].child.kill('SIGKILL');
    await waitFor(() => c.membership.size === 2, 5_000, 'the killed worker to be dropped');
    await waitFor(() => c.state.step > stepBeforeKill + 20, 10_000, 'training to go on after the kill');

    const summary = await running;
    assert.equal(summary.reason, 'done');
    assert.equal(summary.epochs, cfg.epochs);
    const final = c.history.at(-1)!.trainPerplexity;
    assert.ok(Number.isFinite(final), `final perplexity ${final}`);
    assert.ok(final < lossAtStart, `final perplexity ${final} not below the first epoch's ${lossAtStart}`);
    assert.ok(c.server.params().every(Number.isFinite));
    const failures = (await c.metrics.failures.get()).values.reduce((a, v) => a + v.value, 0);
    assert.ok(failures >= 1, 'the kill is counted as a failure');
    assert.ok(logs.some((l) => /left \(disconnect\)/.test(l)), logs.join('\n'));
  } finally {
    killAll(procs);
    c.dispose();
  }
});
