/**
 * Links that are slow or broken, through a userspace TCP fault proxy: a worker behind a link that
 * goes silent (half-open: no FIN, no RST) is dropped and training goes on; when the link heals it
 * rejoins by itself; a link with 200 ms of latency each way trains to the same parameters, only slower.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { killAll, relativeError, spawnWorker, startCoordinator, tinyCoordinatorConfig, waitFor, type WorkerProc } from './support/cluster.js';
import { FaultProxy } from './support/fault-proxy.js';

test('a worker behind a blackholed link is dropped, training goes on, and it rejoins once the link heals', async () => {
  const logs: string[] = [];
  const c = await startCoordinator(tinyCoordinatorConfig({ epochs: 100000, maxTokens: 1000, roundTimeout: 2, heartbeatInterval: 0.5 }), logs);
  const proxy = new FaultProxy({ host: '127.0.0.1', port: c.port });
  const procs: WorkerProc[] = [];
  let running: ReturnType<typeof c.run> | null = null;
  try {
    const proxied = `ws://127.0.0.1:${await proxy.listen()}`;
    procs.push(spawnWorker(`ws://127.0.0.1:${c.port}`, ['--name', 'direct']), spawnWorker(proxied, ['--name', 'behind-proxy', '--reconnect-grace', '120']));
    running = c.run();
    const behind = () => c.membership.list().find((m) => m.info.name === 'behind-proxy');
    await waitFor(() => c.membership.size === 2 && (behind()?.rounds ?? 0) >= 5, 60_000, 'both workers training');

    proxy.faults.blackhole = true;
    const cut = Date.now();
    await waitFor(() => !behind(), 15_000, 'the silent worker to be dropped');
    const droppedAfter = Date.now() - cut;
    assert.ok(logs.some((l) => /left \((timeout|protocol)\)|missed the round deadline/.test(l)), logs.slice(-10).join('\n'));
    const stepAtDrop = c.state.step;
    await waitFor(() => c.state.step >= stepAtDrop + 20, 20_000, 'training to go on with the other worker');
    await waitFor(() => /the coordinator has been silent/.test(procs[1].output()), 15_000, 'the worker to notice the silence');
    assert.equal(procs[1].child.exitCode, null, 'the worker behind the broken link keeps trying');

    proxy.faults.blackhole = false;
    const healed = Date.now();
    await waitFor(() => (behind()?.rounds ?? 0) >= 3, 90_000, 'the worker to rejoin after the link healed');
    const rejoinedAfter = Date.now() - healed;
    c.stop('test done');
    const summary = await running;
    assert.equal(summary.reason, 'stopped');
    assert.ok(c.server.params().every(Number.isFinite));
    console.log('reliability-counts', JSON.stringify({ test: 'blackhole', droppedAfterMs: droppedAfter, rejoinedAfterMs: rejoinedAfter, bytesDropped: proxy.dropped }));
  } finally {
    c.stop('test over');
    await running;
    killAll(procs);
    await proxy.close();
    await c.dispose();
  }
});

test('200 ms of latency each way: the same parameters as a direct link, only slower', async () => {
  const run = async (latencyMs: number) => {
    const c = await startCoordinator(tinyCoordinatorConfig({ epochs: 1, maxTokens: 600, batchSize: 4 }));
    const proxy = new FaultProxy({ host: '127.0.0.1', port: c.port });
    proxy.faults.latencyMs = latencyMs;
    const w = spawnWorker(`ws://127.0.0.1:${await proxy.listen()}`);
    try {
      const t0 = Date.now();
      const summary = await c.run();
      assert.equal(summary.reason, 'done');
      assert.equal((await w.exited).code, 0, w.output());
      return { params: c.server.params().slice(), steps: summary.steps, ms: Date.now() - t0 };
    } finally {
      killAll([w]);
      await proxy.close();
      await c.dispose();
    }
  };
  const direct = await run(0);
  const slow = await run(200);
  assert.equal(slow.steps, direct.steps);
  assert.equal(relativeError(slow.params, direct.params), 0);
  // Each round crosses the link twice each way (parameters and step out, the gradient back): at least 400 ms a round.
  assert.ok(slow.ms >= slow.steps * 400, `${slow.steps} rounds in ${slow.ms} ms`);
  console.log('reliability-counts', JSON.stringify({ test: 'latency', steps: slow.steps, directMs: direct.ms, slowMs: slow.ms }));
});
