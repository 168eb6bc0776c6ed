/**
 * Part `slowlink`: synchronous training against local SGD (--sync-every K,
 * DiLoCo) over slow links. Two worker processes each reach the coordinator
 * through their own userspace TCP fault proxy (test/support/fault-proxy.ts)
 * with 100 ms of latency each way and a 100 Mbit/s cap; the d2l setup (The
 * Time Machine, first 10,000 tokens, batch 32, 35 steps, hidden 256, SGD lr 1,
 * clip 1). The synchronous run (K = 1) trains a fixed number of epochs; its
 * final validation perplexity is the target that the local SGD runs (K = 8,
 * 32; the outer optimizer's defaults, Nesterov lr 0.7 momentum 0.9) train to,
 * and the figure is the wall time to reach it.
 */
import os from 'node:os';
import { FaultProxy } from '../test/support/fault-proxy.js';
import { spawnWorker, startCluster, sleep, type Cluster, type RoundRecord } from './lib/cluster.js';
import { fmt, median, table } from './lib/stats.js';
import type { BenchContext, BenchPart, Section } from './lib/types.js';

interface Point {
  epoch: number;
  step: number;
  trainPerplexity: number;
  validationPerplexity?: number;
  elapsedSeconds: number;
}

interface Run {
  syncEvery: number;
  curve: Point[];
  /** Seconds from the first round to the end of the epoch whose validation perplexity first reached the target. */
  reachedSeconds: number | null;
  reachedEpoch: number | null;
  /** Optimizer steps and rounds when it was reached (or at the end). */
  reachedStep: number;
  reachedRound: number;
  trainSeconds: number;
  steps: number;
  rounds: number;
  gradientBytes: number;
  parameterBytes: number;
  roundMsMedian: number;
  slowestComputeMsMedian: number;
  stoppedBy: 'target' | 'epochs' | 'time-limit';
  load: number[];
}

async function counter(c: { get(): Promise<{ values: { value: number }[] }> }): Promise<number> {
  return (await c.get()).values[0]?.value ?? 0;
}

const round2 = (x: number) => Math.round(x * 100) / 100;

async function runOne(ctx: BenchContext, syncEvery: number, epochs: number, target: number | null, timeLimit: number): Promise<Run> {
  const latencyMs = ctx.flag<number>('latency-ms');
  const bytesPerSecond = (ctx.flag<number>('mbit') * 1e6) / 8;
  const load = os.loadavg().map(round2);
  let lastRoundAt = 0;
  let seen = 0;
  const curve: Point[] = [];
  let reachedSeconds: number | null = null;
  let reachedEpoch: number | null = null;
  let reachedStep = 0;
  let reachedRound = 0;
  let stoppedBy: Run['stoppedBy'] = 'epochs';
  let cluster: Cluster | null = null;
  const check = () => {
    const c = cluster!.coordinator;
    const start = cluster!.startedAt() ?? lastRoundAt;
    while (seen < c.history.length) {
      const e = c.history[seen++];
      const elapsed = (lastRoundAt - start) / 1000;
      curve.push({ epoch: e.epoch, step: e.step, trainPerplexity: e.trainPerplexity, validationPerplexity: e.validationPerplexity, elapsedSeconds: elapsed });
      if (e.epoch % 10 === 0 || e.epoch === 1) ctx.log(`K=${syncEvery} epoch ${e.epoch}: train ${e.trainPerplexity.toFixed(2)}, validation ${e.validationPerplexity?.toFixed(2)}, ${elapsed.toFixed(0)} s`);
      if (reachedSeconds === null && target !== null && e.validationPerplexity !== undefined && e.validationPerplexity <= target) {
        reachedSeconds = elapsed;
        // Epochs trained when the round that reached it ended (epochs ending inside that round share its validation).
        reachedEpoch = c.state.epoch;
        reachedStep = c.state.step;
        reachedRound = c.server.version;
        stoppedBy = 'target';
        void cluster!.stop();
      } else if (elapsed > timeLimit && reachedSeconds === null && stoppedBy === 'epochs') {
        stoppedBy = 'time-limit';
        void cluster!.stop();
      }
    }
  };
  const local = syncEvery > 1 ? { syncEvery } : {};
  cluster = await startCluster(ctx, {
    workers: 2,
    external: true,
    config: { maxTokens: 10000, valFraction: 0.1, batchSize: 32, numSteps: 35, hidden: 256, optimizer: 'sgd', lr: 1, clip: 1, partition: 'sequential', seed: 0, epochs, logEvery: 1, ...local },
    onRound: (r: RoundRecord) => {
      lastRoundAt = r.at;
      setImmediate(check);
    },
  });
  const proxies: FaultProxy[] = [];
  const workers = [];
  try {
    for (let k = 0; k < 2; k++) {
      const p = new FaultProxy({ host: '127.0.0.1', port: cluster.coordinator.port });
      p.faults.latencyMs = latencyMs;
      p.faults.bytesPerSecond = bytesPerSecond;
      proxies.push(p);
      const port = await p.listen();
      workers.push(spawnWorker(ctx, `ws://127.0.0.1:${port}`, cluster.token, `slowlink-${k}`, { backend: ctx.backend.name }));
    }
    const t0 = performance.now();
    let finished = false;
    await Promise.race([
      cluster.done.finally(() => (finished = true)),
      (async () => {
        while (!finished) {
          await sleep(500);
          if (cluster!.startedAt() === null && (performance.now() - t0) / 1000 > 120) throw new Error(`the workers did not join within 120 s: ${workers.map((w) => w.output().slice(-300)).join(' | ')}`);
        }
      })(),
    ]);
    check();
    const c = cluster.coordinator;
    const rounds = cluster.rounds.slice(Math.min(3, cluster.rounds.length - 1));
    return {
      syncEvery,
      curve,
      reachedSeconds,
      reachedEpoch,
      reachedStep: reachedEpoch === null ? c.state.step : reachedStep,
      reachedRound: reachedEpoch === null ? c.server.version : reachedRound,
      trainSeconds: curve.at(-1)?.elapsedSeconds ?? 0,
      steps: c.state.step,
      rounds: await counter(c.metrics.rounds),
      gradientBytes: await counter(c.metrics.gradBytes),
      parameterBytes: await counter(c.metrics.paramBytes),
      roundMsMedian: median(rounds.map((r) => r.totalMs)),
      slowestComputeMsMedian: median(rounds.map((r) => r.slowestComputeMs)),
      stoppedBy,
      load,
    };
  } finally {
    await cluster.stop();
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    for (const p of proxies) await p.close();
  }
}

export const slowlinkPart: BenchPart = {
  name: 'slowlink',
  title: 'Slow links: synchronous training vs local SGD (--sync-every 8, 32), 2 workers behind 100 ms and 100 Mbit/s each',
  summary: 'd2l setup over 2 fault-proxied links (latency, bandwidth cap): wall time to the synchronous run\u2019s final validation perplexity for K = 1, 8, 32',
  flags: {
    'sync-epochs': { type: 'number', default: 30, describe: 'epochs of the synchronous run, whose final validation perplexity is the target (d2l: 500; shortened to keep the part to minutes)' },
    'sync-every': { type: 'string', default: '8,32', describe: 'the local SGD runs: values of --sync-every, comma-separated' },
    'latency-ms': { type: 'number', default: 100, describe: 'added one-way latency of each worker\u2019s link, ms' },
    mbit: { type: 'number', default: 100, describe: 'bandwidth cap of each worker\u2019s link, each way, Mbit/s' },
    'time-limit': { type: 'number', default: 240, describe: 'seconds of training after which a local SGD run stops without reaching the target' },
  },

  async run(ctx: BenchContext): Promise<Section> {
    const syncEpochs = ctx.flag<number>('sync-epochs');
    const ks = String(ctx.flag<string>('sync-every')).split(',').map(Number).filter((k) => Number.isInteger(k) && k > 1);
    const latencyMs = ctx.flag<number>('latency-ms');
    const mbit = ctx.flag<number>('mbit');
    const sync = await runOne(ctx, 1, syncEpochs, null, Infinity);
    const target = sync.curve.at(-1)?.validationPerplexity;
    if (target === undefined) throw new Error('the synchronous run reported no validation perplexity');
    ctx.log(`synchronous: ${syncEpochs} epochs in ${sync.trainSeconds.toFixed(0)} s, final validation perplexity ${target.toFixed(3)}`);
    const runs = [sync];
    for (const k of ks) runs.push(await runOne(ctx, k, 100 * syncEpochs, target, ctx.flag<number>('time-limit')));
    const syncSeconds = sync.trainSeconds;

    const md: string[] = [];
    md.push(
      `Setup: the d2l setup (The Time Machine, first 10,000 tokens, the last 10% held out; batch 32, 35 steps, hidden 256, SGD lr 1, clip 1, sequential partition, seed 0), ` +
        `an in-process coordinator and 2 \`worker join\` processes (16 streams each) on loopback, **each worker behind its own userspace TCP fault proxy with ${latencyMs} ms of added latency each way and a ${mbit} Mbit/s cap each way** ` +
        `(a round trip of the 1.2 MB parameters and the 1.2 MB reply costs ≥ ${fmt(2 * latencyMs + (2 * 1.2e6 * 8) / (mbit * 1e3), 0)} ms on the link alone). ` +
        `The synchronous run (K = 1) trains **${syncEpochs} epochs** (d2l trains 500; shortened to keep this part to minutes: at ${fmt(sync.roundMsMedian, 0)} ms a round, 500 epochs would take ${fmt((500 * 8 * sync.roundMsMedian) / 60000, 0)} min) ` +
        `and its final validation perplexity, **${target.toFixed(3)}**, is the target. The local SGD runs (\`--sync-every K\`: each worker takes K inner SGD steps with lr 1 and clipping at 1 on its own 16 streams, ` +
        `then the coordinator applies the outer Nesterov step, lr 0.7, momentum 0.9, the defaults) train until a validation perplexity, taken after every epoch (for an epoch that ends inside a round, with the round's parameters), is at or below it. ` +
        `Wall time is from the first round to the end of that round. The runs ran one after the other; the 1-minute load average before each is in the table (the machine is shared).`,
    );
    md.push('');
    md.push(
      table(
        ['run', 'wall time to validation perplexity ≤ target', 'vs synchronous', 'epochs', 'optimizer steps', 'rounds (synchronisations)', 'round (median)', 'slower worker\u2019s compute per round (median)', 'bytes over the links', 'load before'],
        runs.map((r) => {
          const t = r.syncEvery === 1 ? syncSeconds : r.reachedSeconds;
          const epochs = r.syncEvery === 1 ? syncEpochs : r.reachedEpoch;
          return [
            r.syncEvery === 1 ? 'synchronous (K = 1)' : `local SGD, K = ${r.syncEvery}`,
            t === null ? `not reached in ${fmt(r.trainSeconds, 0)} s (${r.stoppedBy})` : `**${fmt(t, 1)} s**`,
            t === null ? '' : r.syncEvery === 1 ? '1' : `**${fmt(t / syncSeconds, 2)}×**`,
            epochs ?? r.curve.at(-1)?.epoch ?? 0,
            fmt(r.reachedStep),
            fmt(r.reachedRound),
            `${fmt(r.roundMsMedian, 0)} ms`,
            `${fmt(r.slowestComputeMsMedian, 0)} ms`,
            `${fmt((r.gradientBytes + r.parameterBytes) / 1e6, 0)} MB`,
            r.load[0].toFixed(2),
          ];
        }),
      ),
    );
    md.push('');
    const rows: string[][] = [];
    const byEpoch = (r: Run, e: number) => r.curve.find((p) => p.epoch === e);
    const marks = [1, 5, 10, 15, 20, 25, 30, 40, 50, 60].filter((e) => runs.some((r) => byEpoch(r, e)?.validationPerplexity !== undefined));
    for (const e of marks) rows.push([String(e), ...runs.map((r) => {
      const p = byEpoch(r, e);
      return p?.validationPerplexity !== undefined ? `${p.validationPerplexity.toFixed(2)} / ${fmt(p.elapsedSeconds, 0)} s` : '';
    })]);
    md.push(table(['epoch', ...runs.map((r) => (r.syncEvery === 1 ? 'K = 1: validation perplexity / elapsed' : `K = ${r.syncEvery}`))], rows));
    md.push('');
    const best = runs.slice(1).filter((r) => r.reachedSeconds !== null).sort((a, b) => a.reachedSeconds! - b.reachedSeconds!)[0];
    const syncRound = sync.roundMsMedian;
    md.push(
      `- **Target (local SGD ≤ 1/3 of the synchronous wall time): ${best ? `${best.reachedSeconds! / syncSeconds <= 1 / 3 ? 'met' : 'not met'}; best K = ${best.syncEvery}, ${fmt(best.reachedSeconds!, 1)} s against ${fmt(syncSeconds, 1)} s (${fmt(best.reachedSeconds! / syncSeconds, 2)}×)` : 'not met: no local SGD run reached the target'}.**`,
    );
    md.push(
      `- Where a synchronous round's ${fmt(syncRound, 0)} ms went: the slower worker computed for ${fmt(sync.slowestComputeMsMedian, 0)} ms of it; the rest is the exchange over the links ` +
        `(≥ ${fmt(2 * latencyMs + (2 * 1.2e6 * 8) / (mbit * 1e3), 0)} ms of latency and transfer for the 1.2 MB each way) and the coordinator. Local SGD pays that exchange once per K batches instead of once per batch: ` +
        runs.slice(1).map((r) => `K = ${r.syncEvery} moved ${fmt((r.gradientBytes + r.parameterBytes) / 1e6, 0)} MB over the links`).join(', ') +
        ` against ${fmt((sync.gradientBytes + sync.parameterBytes) / 1e6, 0)} MB for the synchronous run.`,
    );
    md.push(
      `- It also needed fewer epochs: the outer Nesterov step (lr 0.7, momentum 0.9) moves further along the averaged change than one SGD step would (in a steady direction up to lr / (1 − momentum) = 7× it), ` +
        `so the local SGD runs reached the synchronous run's ${syncEpochs}-epoch validation perplexity in ${runs.slice(1).map((r) => `${r.reachedEpoch ?? '–'} (K = ${r.syncEvery})`).join(' and ')} epochs.`,
    );
    md.push(
      `- The machine was shared (load average ${runs.map((r) => r.load[0].toFixed(1)).join(', ')} before the runs, on 2 cores): the workers' compute per batch was inflated by it, which makes the synchronous run less link-bound than it would be on an idle machine, where the exchange is the larger part of its round.`,
    );
    return {
      markdown: md.join('\n'),
      result: { latencyMs, mbit, syncEpochs, target, runs },
    };
  },
};
