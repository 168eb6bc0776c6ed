/**
 * Worker faults with real processes and signals on loopback: SIGKILL at random
 * moments over and over, SIGSTOP past the round deadline, and every worker gone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Coordinator, type RoundBreakdown } from '../src/coordinator/coordinator.js';
import { ErrorCodes } from '../src/shared/errors.js';
import { Rng } from '../src/shared/data/rng.js';
import { killAll, spawnWorker, tinyCoordinatorConfig, TOKEN, waitFor, type WorkerProc } from './support/cluster.js';
import { counter, recordAccepted } from './support/hostile.js';
import { within } from './support/processes.js';
import { testBackend } from './support/tf.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function coordinator(over: Record<string, unknown>, rounds: RoundBreakdown[] = []) {
  await testBackend();
  const logs: string[] = [];
  const cfg = tinyCoordinatorConfig({ epochs: 100_000, maxTokens: 1000, minWorkers: 1, ...over });
  const c = new Coordinator(cfg, TOKEN, { log: (l) => logs.push(l), progress: null, onRound: (b) => rounds.push(b) });
  await c.start();
  return { c, logs, url: `ws://127.0.0.1:${c.port}` };
}

/** Lets the run end on its own, a little after now: the workers then get 'training done' and exit 0. */
function finishSoon(c: Coordinator, epochs = 1): void {
  // The loop reads cfg.epochs before every round.
  (c.cfg as { epochs: number }).epochs = c.state.epoch + epochs;
}

function memberByName(c: Coordinator, name: string) {
  return c.membership.list().find((m) => m.info.name === name);
}

test('SIGKILL at random moments, 10 times over: every round meets its deadline, streams move, nothing hangs', async () => {
  const ROUND_TIMEOUT_MS = 2000;
  const KILLS = 10;
  const rounds: RoundBreakdown[] = [];
  const rec = recordAccepted();
  const { c, logs, url } = await coordinator({ roundTimeout: ROUND_TIMEOUT_MS / 1000, heartbeatInterval: 0.5 }, rounds);
  const procs = new Map<string, WorkerProc>();
  const spawnNamed = (name: string) => procs.set(name, spawnWorker(url, ['--name', name])).get(name)!;
  // Every round's tokens, and every assignment's coverage of the streams.
  const appliedTokens: number[] = [];
  const apply = c.server.apply.bind(c.server);
  c.server.apply = (g, t) => {
    appliedTokens.push(t);
    return apply(g, t);
  };
  const coverage: string[] = [];
  const assign = c.membership.assign.bind(c.membership);
  c.membership.assign = (batchSize) => {
    const a = assign(batchSize);
    let next = 0;
    for (const { member, lo, hi } of a) {
      if (lo !== next || hi <= lo) coverage.push(`gap or overlap at ${lo}-${hi}`);
      if (!c.membership.get(member.id)) coverage.push(`streams ${lo}-${hi} given to a departed worker`);
      next = hi;
    }
    if (a.length > 0 && next !== batchSize) coverage.push(`streams ${next}-${batchSize} unassigned`);
    return a;
  };
  const rng = new Rng(424242);
  const phases = { beforeReply: 0, afterReply: 0 };
  const running = c.run();
  try {
    for (const name of ['a', 'b', 'c']) spawnNamed(name);
    await waitFor(() => c.membership.size === 3 && c.state.step >= 10, 30_000, 'three workers training');
    for (let k = 0; k < KILLS; k++) {
      // The replacement starts up while the victim still trains.
      const replacement = `r${k}`;
      spawnNamed(replacement);
      await sleep(rng.int(100, 500));
      // A round boundary, then 0-8 ms: with rounds of a few ms the kill lands before,
      // during or after the victim computes and sends its reply.
      const r0 = rounds.length;
      await waitFor(() => rounds.length > r0, 5000, 'a round');
      await sleep(rng.int(0, 8));
      const live = c.membership.list().filter((m) => m.info.name !== undefined && procs.has(m.info.name));
      const victim = live[rng.int(0, live.length - 1)];
      const replied = rec.accepted.some((a) => a.workerId === victim.id && a.roundId === c.state.round);
      phases[replied ? 'afterReply' : 'beforeReply']++;
      procs.get(victim.info.name!)!.child.kill('SIGKILL');
      await waitFor(() => !c.membership.get(victim.id), 3000, `worker ${victim.info.name} to be dropped`);
      await waitFor(() => memberByName(c, replacement) !== undefined, 30_000, `replacement ${replacement} to join`);
    }
    const stepAfterKills = c.state.step;
    await waitFor(() => c.state.step >= stepAfterKills + 30, 15_000, 'steps after the last kill');
    finishSoon(c);
    const summary = await within(running, 30_000, 'the run to finish');
    assert.equal(summary.reason, 'done');

    // Deadlines: a killed worker's socket closes at once, so no round even waited for its deadline.
    const slowest = Math.max(...rounds.map((b) => b.waitMs));
    assert.ok(slowest < ROUND_TIMEOUT_MS, `slowest round waited ${slowest.toFixed(0)} ms`);
    assert.equal(await counter(c, 'failures', 'timeout'), 0);
    assert.equal(await counter(c, 'failures', 'disconnect'), KILLS);
    // Streams: every assignment covered all of them with live workers; a round lost
    // tokens only when a kill hit it, and the rounds after the last kill are whole.
    assert.deepEqual(coverage, []);
    const full = c.cfg.batchSize * c.cfg.numSteps;
    const partial = appliedTokens.filter((t) => t < full).length;
    assert.ok(partial <= KILLS, `${partial} partial rounds for ${KILLS} kills`);
    assert.ok(appliedTokens.slice(-30).every((t) => t === full), 'rounds after the churn carry every stream');
    assert.ok(c.server.params().every(Number.isFinite));
    assert.ok(Number.isFinite(summary.finalTrainPerplexity));
    assert.equal(rounds.length, summary.steps, 'one applied round per step, none lost or doubled');
    // The survivors were told training is done and exited 0.
    const survivors = [...procs.values()].filter((p) => p.child.signalCode === null);
    assert.equal(survivors.length, 3);
    for (const p of survivors) assert.deepEqual(await within(p.exited, 10_000, 'a survivor to exit'), { code: 0, signal: null }, p.output());
    assert.ok(!logs.some((l) => /internal error/.test(l)));
    console.log(
      'reliability-counts',
      JSON.stringify({
        test: 'sigkill-churn',
        kills: KILLS,
        killPhases: phases,
        rounds: rounds.length,
        partialRounds: partial,
        slowestRoundMs: Math.round(slowest),
        roundTimeoutMs: ROUND_TIMEOUT_MS,
        steps: summary.steps,
        // Applied rounds against optimizer steps: a round summed but never applied, or applied twice, shows here.
        roundsLostOrDoubled: Math.abs(summary.steps - rounds.length),
      }),
    );
  } finally {
    killAll([...procs.values()]);
    rec.restore();
    c.stop('test over');
    c.stop('test over');
    await within(running, 15_000, 'the stopped run to return').catch(() => {});
    c.dispose();
  }
});

test('SIGSTOP past the round deadline: dropped, training goes on, after SIGCONT it rejoins and its late reply is discarded', async () => {
  const rec = recordAccepted();
  const { c, logs, url } = await coordinator({ roundTimeout: 1, heartbeatInterval: 1 });
  const frozen = spawnWorker(url, ['--name', 'frozen']);
  const steady = spawnWorker(url, ['--name', 'steady']);
  const running = c.run();
  try {
    await waitFor(() => c.membership.size === 2 && c.state.step >= 10, 30_000, 'two workers training');
    const frozenId = memberByName(c, 'frozen')!.id;
    const stale0 = await counter(c, 'rejected', ErrorCodes.ERR_STALE_ROUND);
    const timeouts0 = await counter(c, 'failures', 'timeout');
    frozen.child.kill('SIGSTOP');
    const stepAtStop = c.state.step;
    // Past the 1 s deadline, before the 2 s after it when an unanswered close is cut off:
    // the frozen worker wakes while its connection is closing and its late reply arrives.
    await sleep(1500);
    assert.equal(c.membership.get(frozenId), undefined, 'the frozen worker was dropped');
    const droppedAtRound = c.state.round;
    assert.equal((await counter(c, 'failures', 'timeout')) - timeouts0, 1);
    assert.ok(logs.some((l) => /missed the round deadline/.test(l)));
    assert.ok(c.state.step > stepAtStop + 5, `only ${c.state.step - stepAtStop} steps while it was frozen`);
    frozen.child.kill('SIGCONT');
    const stepsWhileFrozen = c.state.step - stepAtStop;

    await waitFor(() => (memberByName(c, 'frozen')?.rounds ?? 0) >= 3, 15_000, 'the frozen worker to rejoin and train');
    assert.notEqual(memberByName(c, 'frozen')!.id, frozenId, 'it rejoined as a new member');
    assert.match(frozen.output(), /connection closed \(4007 ERR_ROUND_TIMEOUT\)/);
    assert.match(frozen.output(), /reconnecting to ws:/);
    const stale = (await counter(c, 'rejected', ErrorCodes.ERR_STALE_ROUND)) - stale0;
    assert.ok(stale >= 1, 'its late reply was counted');
    const lateSummed = rec.accepted.filter((a) => a.workerId === frozenId && a.roundId >= droppedAtRound);
    assert.deepEqual(lateSummed, [], 'nothing it sent after the drop was summed');
    assert.ok(rec.accepted.every((a) => a.round === a.roundId));

    finishSoon(c);
    const summary = await within(running, 30_000, 'the run to finish');
    assert.equal(summary.reason, 'done');
    assert.ok(c.server.params().every(Number.isFinite));
    assert.deepEqual(await within(frozen.exited, 10_000, 'the frozen worker to exit'), { code: 0, signal: null }, frozen.output());
    assert.deepEqual(await within(steady.exited, 10_000, 'the steady worker to exit'), { code: 0, signal: null }, steady.output());
    console.log('reliability-counts', JSON.stringify({ test: 'sigstop', stopMs: 1500, roundTimeoutMs: 1000, lateRepliesDiscarded: stale, stepsWhileFrozen, steps: summary.steps }));
  } finally {
    frozen.child.kill('SIGCONT');
    killAll([frozen, steady]);
    rec.restore();
    c.stop('test over');
    c.stop('test over');
    await within(running, 15_000, 'the stopped run to return').catch(() => {});
    c.dispose();
  }
});

test('every worker gone: training pauses without spinning, does not exit, and resumes when a worker joins', async () => {
  const { c, logs, url } = await coordinator({ heartbeatInterval: 1 });
  const procs = [spawnWorker(url), spawnWorker(url)];
  const running = c.run();
  let settled = false;
  void running.then(() => (settled = true));
  try {
    await waitFor(() => c.membership.size === 2 && c.state.step >= 10, 30_000, 'two workers training');
    killAll(procs);
    await waitFor(() => c.state.paused, 5000, 'training to pause');
    assert.equal((await c.metrics.paused.get()).values[0].value, 1);
    const stepWhilePaused = c.state.step;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await sleep(2000);
    const cpu = process.cpuUsage(cpu0);
    const cpuShare = (cpu.user + cpu.system) / 1000 / (performance.now() - t0);
    assert.ok(cpuShare < 0.2, `coordinator used ${(cpuShare * 100).toFixed(1)}% of a core while paused`);
    assert.equal(c.state.step, stepWhilePaused);
    assert.equal(settled, false, 'run() returned while paused');
    assert.ok(logs.some((l) => /paused: 0 of 1 workers connected/.test(l)));

    procs.push(spawnWorker(url));
    await waitFor(() => c.state.step >= stepWhilePaused + 10, 30_000, 'training to resume');
    assert.equal(c.state.paused, false);
    assert.equal((await c.metrics.paused.get()).values[0].value, 0);
    assert.ok(logs.some((l) => /resumed with 1 workers/.test(l)));
    finishSoon(c);
    assert.equal((await within(running, 30_000, 'the run to finish')).reason, 'done');
    assert.deepEqual(await within(procs[2].exited, 10_000, 'the worker to exit'), { code: 0, signal: null });
    console.log('reliability-counts', JSON.stringify({ test: 'all-workers-gone', pausedCpuPercent: Math.round(cpuShare * 1000) / 10, stepsWhilePaused: 0 }));
  } finally {
    killAll(procs);
    c.stop('test over');
    c.stop('test over');
    await within(running, 15_000, 'the stopped run to return').catch(() => {});
    c.dispose();
  }
});
