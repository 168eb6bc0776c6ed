/**
 * Relays that fail: one killed mid-run (training goes on; its workers, started with
 * `--coordinator RELAY,ROOT`, move to the root), one behind a link that goes silent
 * (its streams move to the other members within the heartbeat, nothing waits for
 * it, and it comes back with its workers once the link heals), a worker dying
 * under a relay mid-run (the relay re-splits its streams; the root never loses the
 * relay), and a worker frozen under a relay (the relay's deadline, within the
 * root's, drops the worker, not the relay).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { killAll, spawnWorker, startCoordinator, tinyCoordinatorConfig, waitFor, type WorkerProc } from './support/cluster.js';
import { spawnRelay, type RelayProc } from './support/relay.js';
import { FaultProxy } from './support/fault-proxy.js';

const byName = (c: { membership: { list(): { info: { name?: string }; rounds: number; relay: boolean; capacity: number }[] } }, name: string) => c.membership.list().find((m) => m.info.name === name);

test('a relay killed mid-run: training goes on, and its workers reconnect to the next address (the root)', async () => {
  const logs: string[] = [];
  const c = await startCoordinator(tinyCoordinatorConfig({ epochs: 100000, maxTokens: 1000, roundTimeout: 5 }), logs);
  const root = `ws://127.0.0.1:${c.port}`;
  const procs: WorkerProc[] = [];
  let relay: RelayProc | null = null;
  let running: ReturnType<typeof c.run> | null = null;
  try {
    relay = spawnRelay(root, ['--name', 'relay']);
    const relayUrl = `ws://127.0.0.1:${await relay.port()}`;
    procs.push(spawnWorker(root, ['--name', 'direct']));
    for (const name of ['under-1', 'under-2']) procs.push(spawnWorker(`${relayUrl},${root}`, ['--name', name, '--reconnect-grace', '120']));
    running = c.run();
    await waitFor(() => (byName(c, 'relay')?.capacity ?? 0) === 2 && (byName(c, 'relay')?.rounds ?? 0) >= 5 && (byName(c, 'direct')?.rounds ?? 0) >= 1, 60_000, 'the relay training with its 2 workers, beside the direct one');
    assert.equal(c.membership.workers, 3);

    relay.kill('SIGKILL');
    const stepAtKill = c.state.step;
    await waitFor(() => !byName(c, 'relay'), 15_000, 'the root to drop the dead relay');
    await waitFor(() => (byName(c, 'under-1')?.rounds ?? 0) >= 2 && (byName(c, 'under-2')?.rounds ?? 0) >= 2, 60_000, "the relay's workers to train at the root");
    assert.ok(c.state.step >= stepAtKill + 4, `steps went on: ${stepAtKill} -> ${c.state.step}`);
    assert.equal(c.membership.size, 3);
    for (const p of procs) assert.equal(p.child.exitCode, null, p.output());
    c.stop('test done');
    assert.equal((await running).reason, 'stopped');
    assert.ok(c.server.params().every(Number.isFinite));
  } finally {
    c.stop('test over');
    // Not running yet (a failure before run()): run() after stop() closes the server at once.
    await (running ?? c.run());
    killAll(procs);
    relay?.kill('SIGKILL');
    await c.dispose();
  }
});

test("a relay behind a blackholed link: its workers' streams move to the other members, nothing waits forever, and it comes back after the link heals", async () => {
  const logs: string[] = [];
  const c = await startCoordinator(tinyCoordinatorConfig({ epochs: 100000, maxTokens: 1000, roundTimeout: 2, heartbeatInterval: 0.5 }), logs);
  const proxy = new FaultProxy({ host: '127.0.0.1', port: c.port });
  const procs: WorkerProc[] = [];
  let relay: RelayProc | null = null;
  let running: ReturnType<typeof c.run> | null = null;
  try {
    relay = spawnRelay(`ws://127.0.0.1:${await proxy.listen()}`, ['--name', 'relay', '--reconnect-grace', '120']);
    const relayUrl = `ws://127.0.0.1:${await relay.port()}`;
    procs.push(spawnWorker(`ws://127.0.0.1:${c.port}`, ['--name', 'direct']));
    for (const name of ['under-1', 'under-2']) procs.push(spawnWorker(relayUrl, ['--name', name, '--reconnect-grace', '120']));
    running = c.run();
    await waitFor(() => (byName(c, 'relay')?.capacity ?? 0) === 2 && (byName(c, 'relay')?.rounds ?? 0) >= 5, 60_000, 'the relay training with its 2 workers');

    proxy.faults.blackhole = true;
    const cut = Date.now();
    await waitFor(() => !byName(c, 'relay'), 15_000, 'the silent relay to be dropped');
    const droppedAfter = Date.now() - cut;
    const stepAtDrop = c.state.step;
    await waitFor(() => c.state.step >= stepAtDrop + 20, 30_000, 'training to go on without the relay');
    // Every stream went to the member that is left.
    const a = c.membership.assign(c.cfg.batchSize);
    assert.deepEqual(a.map((x) => [x.member.info.name, x.lo, x.hi]), [['direct', 0, c.cfg.batchSize]]);
    await waitFor(() => /the coordinator has been silent/.test(relay!.output()), 15_000, 'the relay to notice the silence');
    assert.equal(relay.exitCode(), null, 'the relay keeps trying');
    for (const p of procs) assert.equal(p.child.exitCode, null, 'the workers keep going');

    proxy.faults.blackhole = false;
    const healed = Date.now();
    await waitFor(() => (byName(c, 'relay')?.capacity ?? 0) === 2 && (byName(c, 'relay')?.rounds ?? 0) >= 3, 90_000, 'the relay and its workers back after the link healed');
    const backAfter = Date.now() - healed;
    c.stop('test done');
    assert.equal((await running).reason, 'stopped');
    assert.ok(c.server.params().every(Number.isFinite));
    console.log('reliability-counts', JSON.stringify({ test: 'relay-blackhole', droppedAfterMs: droppedAfter, backAfterMs: backAfter, bytesDropped: proxy.dropped }));
  } finally {
    c.stop('test over');
    // Not running yet (a failure before run()): run() after stop() closes the server at once.
    await (running ?? c.run());
    killAll(procs);
    relay?.kill('SIGKILL');
    await proxy.close();
    await c.dispose();
  }
});

test('a worker killed under a relay: the relay answers without it, re-splits its streams, and the root keeps the relay', async () => {
  const logs: string[] = [];
  const c = await startCoordinator(tinyCoordinatorConfig({ epochs: 100000, maxTokens: 1000, roundTimeout: 10 }), logs);
  const procs: WorkerProc[] = [];
  let relay: RelayProc | null = null;
  let running: ReturnType<typeof c.run> | null = null;
  try {
    relay = spawnRelay(`ws://127.0.0.1:${c.port}`, ['--name', 'relay']);
    const relayUrl = `ws://127.0.0.1:${await relay.port()}`;
    for (const name of ['under-1', 'under-2']) procs.push(spawnWorker(relayUrl, ['--name', name]));
    running = c.run();
    await waitFor(() => (byName(c, 'relay')?.capacity ?? 0) === 2 && (byName(c, 'relay')?.rounds ?? 0) >= 5, 60_000, 'the relay training with its 2 workers');
    procs[0].child.kill('SIGKILL');
    await waitFor(() => byName(c, 'relay')?.capacity === 1, 15_000, 'the relay to report 1 worker');
    const rounds = byName(c, 'relay')!.rounds;
    await waitFor(() => (byName(c, 'relay')?.rounds ?? 0) >= rounds + 10, 30_000, 'the relay to go on with 1 worker');
    assert.ok(!logs.some((l) => /relay w\d left/.test(l)), 'the root never lost the relay');
    assert.match(relay.output(), /worker w\d left \(disconnect\); carrying 1 workers/);
    c.stop('test done');
    assert.equal((await running).reason, 'stopped');
    assert.ok(c.server.params().every(Number.isFinite));
  } finally {
    c.stop('test over');
    // Not running yet (a failure before run()): run() after stop() closes the server at once.
    await (running ?? c.run());
    killAll(procs);
    relay?.kill('SIGKILL');
    await c.dispose();
  }
});

test("a worker frozen under a relay: the relay's deadline (3/4 of the root's) drops the worker, and the root keeps the relay", async () => {
  const logs: string[] = [];
  const c = await startCoordinator(tinyCoordinatorConfig({ epochs: 100000, maxTokens: 1000, roundTimeout: 2, heartbeatInterval: 30 }), logs);
  const procs: WorkerProc[] = [];
  let relay: RelayProc | null = null;
  let running: ReturnType<typeof c.run> | null = null;
  try {
    // Heartbeats slower than the deadline: the deadline is what catches the frozen worker. The relay's
    // own deadline would be 2.5 s at least; the root's 2 s, sent with each step, makes it 1.5 s.
    relay = spawnRelay(`ws://127.0.0.1:${c.port}`, ['--name', 'relay', '--heartbeat-interval', '30']);
    const relayUrl = `ws://127.0.0.1:${await relay.port()}`;
    for (const name of ['under-1', 'under-2']) procs.push(spawnWorker(relayUrl, ['--name', name]));
    running = c.run();
    await waitFor(() => (byName(c, 'relay')?.capacity ?? 0) === 2 && (byName(c, 'relay')?.rounds ?? 0) >= 5, 60_000, 'the relay training with its 2 workers');
    procs[0].child.kill('SIGSTOP');
    await waitFor(() => /missed the relay's round deadline/.test(relay!.output()), 20_000, 'the relay to drop the frozen worker');
    const rounds = byName(c, 'relay')!.rounds;
    await waitFor(() => (byName(c, 'relay')?.rounds ?? 0) >= rounds + 5, 30_000, 'the relay to go on with the other worker');
    assert.ok(!logs.some((l) => /relay w\d left|missed the round deadline/.test(l)), `the root never dropped the relay:\n${logs.slice(-10).join('\n')}`);
    procs[0].child.kill('SIGKILL');
    c.stop('test done');
    assert.equal((await running).reason, 'stopped');
  } finally {
    c.stop('test over');
    // Not running yet (a failure before run()): run() after stop() closes the server at once.
    await (running ?? c.run());
    killAll(procs);
    relay?.kill('SIGKILL');
    await c.dispose();
  }
});
