/**
 * Part `fanin`: how much gradient traffic one coordinator aggregates. Light
 * stand-in workers (bench/lib/fake-workers.ts: one process, many WebSocket
 * connections, the real handshake, a precomputed gradient of the real size
 * as every reply) answer as fast as they can, so the round time is the
 * coordinator's own cost plus the transfers: 1, 2, 4, ... 32 workers, one
 * fresh coordinator each (--max-workers N), global batch 64.
 *
 * Then, on paper: where one coordinator stops scaling on 10 and 100 Gbit/s
 * links, for this model and a 10x larger one, and what comes after.
 */
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { paramCount } from '../src/shared/model/char-lstm/params.js';
import { round2, startCluster, waitForQuiet, waitUntil, type RoundRecord, LOAD_FLAGS } from './lib/cluster.js';
import { bytes, fmt, median, pct, quantile, sig, sum, table } from './lib/stats.js';
import type { BenchContext, BenchPart, Section } from './lib/types.js';
import { measureWirePath } from './lib/wirepath.js';
import fs from 'node:fs';
import { CpuProfiler, type ProfileRow } from './lib/cpuprofile.js';

interface FanRun {
  workers: number;
  streamsPerWorker: number;
  measuredRounds: number;
  wallSeconds: number;
  roundMsMedian: number;
  roundMsP90: number;
  periodMsMedian: number;
  gradientBytes: number;
  parameterBytes: number;
  gradientBytesPerRound: number;
  gradientBytesPerSecond: number;
  parameterBytesPerSecond: number;
  coordinatorCpuMsPerRound: number;
  breakdown: Record<string, number>;
  load: number;
}

async function counter(c: { get(): Promise<{ values: { value: number }[] }> }): Promise<number> {
  return (await c.get()).values.reduce((a, v) => a + v.value, 0);
}

async function measureFanIn(ctx: BenchContext, n: number, batch: number, warmup: number, rounds: number, dtype: string, profiler?: CpuProfiler): Promise<FanRun> {
  let atWarm: Promise<[number, number]> | null = null;
  let atEnd: Promise<[number, number]> | null = null;
  const total = warmup + rounds;
  const load = os.loadavg()[0];
  const cluster = await startCluster(ctx, {
    workers: n,
    external: true,
    config: { maxTokens: 0, valFraction: 0, batchSize: batch, numSteps: 35, hidden: 256, epochs: 1000, maxWorkers: n, wireDtype: dtype },
    onRound: (_r, c) => {
      const k = cluster.rounds.length;
      const snap = async (): Promise<[number, number]> => [await counter(c.metrics.gradBytes), await counter(c.metrics.paramBytes)];
      if (k === warmup) {
        atWarm = snap();
        void profiler?.start();
      }
      if (k === total) {
        atEnd = snap();
        void cluster.stop();
      }
    },
  });
  const script = path.join(ctx.repoRoot, 'bench', 'lib', 'fake-workers.ts');
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DPTRAIN_')));
  env.DPTRAIN_TOKEN = cluster.token;
  const child = spawn(process.execPath, ['--import', 'tsx', script, cluster.url, String(n), 'fanin'], { cwd: ctx.repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  try {
    await waitUntil(() => cluster.rounds.length >= total, 300_000, `${total} rounds with ${n} stand-in workers`);
  } catch (e) {
    child.kill('SIGKILL');
    await cluster.stop();
    throw new Error(`${(e as Error).message}; stand-in output: ${out.slice(-1000)}`);
  }
  const [g0, p0] = await atWarm!;
  const [g1, p1] = await atEnd!;
  await cluster.stop();
  const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(t);
  const measured: RoundRecord[] = cluster.rounds.slice(warmup, total);
  const first = cluster.rounds[warmup - 1];
  const wallSeconds = (measured[measured.length - 1].at - first.at) / 1000;
  const periods = measured.map((r, k) => r.at - (k === 0 ? first.at : measured[k - 1].at));
  const keys = ['encodeMs', 'sendMs', 'waitMs', 'decodeMs', 'sumMs', 'clipMs', 'optimizerMs'] as const;
  return {
    workers: n,
    streamsPerWorker: batch / n,
    measuredRounds: measured.length,
    wallSeconds,
    roundMsMedian: median(measured.map((r) => r.totalMs)),
    roundMsP90: quantile(measured.map((r) => r.totalMs), 0.9),
    periodMsMedian: median(periods),
    gradientBytes: g1 - g0,
    parameterBytes: p1 - p0,
    gradientBytesPerRound: (g1 - g0) / measured.length,
    gradientBytesPerSecond: (g1 - g0) / wallSeconds,
    parameterBytesPerSecond: (p1 - p0) / wallSeconds,
    coordinatorCpuMsPerRound: median(measured.map((r) => r.coordinatorCpuMs)),
    breakdown: Object.fromEntries(keys.map((k) => [k, median(measured.map((r) => r[k]))])),
    load,
  };
}

/** Least-squares line y = a + b x. */
function fitLine(xs: number[], ys: number[]): { a: number; b: number } {
  const n = xs.length;
  const mx = sum(xs) / n;
  const my = sum(ys) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
  }
  const b = sxy / sxx;
  return { a: my - b * mx, b };
}

/** The step part's compute time per step (32 streams), if it has run. */
function stepMs(ctx: BenchContext): number | null {
  try {
    const j = JSON.parse(fs.readFileSync(path.join(ctx.repoRoot, 'bench', 'results', 'step.json'), 'utf8'));
    return j.result.hand.computeMedianMs as number;
  } catch {
    return null;
  }
}

export const faninPart: BenchPart = {
  name: 'fanin',
  title: 'Coordinator fan-in: gradient traffic through one coordinator, 1 to 32 workers',
  summary: 'many light stand-in workers with precomputed real-size gradients: gradient bytes/s and round time vs workers; where one coordinator stops scaling',
  flags: {
    workers: { type: 'string', default: '1,2,4,8,16,32', describe: 'worker counts to measure' },
    'fanin-batch': { type: 'number', default: 64, describe: 'global batch (streams), at least the largest worker count' },
    'fanin-rounds': { type: 'number', default: 40, describe: 'measured rounds per worker count' },
    'fanin-warmup': { type: 'number', default: 5, describe: 'rounds before measuring' },
    'fanin-dtype': { type: 'string', default: 'float32', describe: 'wire dtype (float32, float16, bfloat16)' },
    'fanin-profile': { type: 'boolean', default: true, describe: 'run the largest worker count once more under the V8 CPU profiler and list where the coordinator spends its time' },
    ...LOAD_FLAGS,
  },

  async run(ctx: BenchContext): Promise<Section> {
    const counts = ctx.flag<string>('workers').split(',').map((s) => Number(s.trim())).filter((x) => Number.isInteger(x) && x > 0);
    const batch = Math.max(ctx.flag<number>('fanin-batch'), ...counts);
    const rounds = Math.max(10, Math.round(ctx.flag<number>('fanin-rounds')));
    const warmup = Math.max(2, Math.round(ctx.flag<number>('fanin-warmup')));
    const dtype = ctx.flag<string>('fanin-dtype');
    const quiet = await waitForQuiet(ctx, ctx.flag<number>('load-threshold'), ctx.flag<number>('load-wait'));
    const runs: FanRun[] = [];
    for (const n of counts) {
      const r = await measureFanIn(ctx, n, batch, warmup, rounds, dtype);
      ctx.log(`${n} workers: round ${fmt(r.roundMsMedian, 1)} ms, ${bytes(r.gradientBytesPerSecond)}/s of gradients, coordinator CPU ${fmt(r.coordinatorCpuMsPerRound, 1)} ms/round, load ${r.load.toFixed(2)}`);
      runs.push(r);
    }
    const loadEnd = os.loadavg()[0];
    // The largest count once more under the V8 profiler (this process is the coordinator): where its CPU goes.
    let profile: { totalMs: number; rows: ProfileRow[]; workers: number; roundMs: number } | null = null;
    if (ctx.flag<boolean>('fanin-profile')) {
      const profiler = new CpuProfiler();
      const n = Math.max(...counts);
      const r = await measureFanIn(ctx, n, batch, warmup, rounds, dtype, profiler);
      profile = { ...(await profiler.stop(ctx.repoRoot, 14)), workers: n, roundMs: r.roundMsMedian };
    }
    const dims = { vocabSize: 28, hidden: 256 };
    const P = paramCount(dims);
    const wire = measureWirePath(dims, batch / Math.max(...counts));

    // ---- numbers
    const fit = fitLine(runs.map((r) => r.workers), runs.map((r) => r.roundMsMedian));
    const perWorkerMs = fit.b;
    const best = runs.reduce((a, r) => (r.gradientBytesPerSecond > a.gradientBytesPerSecond ? r : a), runs[0]);
    const big = runs[runs.length - 1];
    const msPerWorker = runs.map((r) => r.roundMsMedian / r.workers);
    const gradBytesPerWorker = big.gradientBytesPerRound / big.workers;
    // Linear or better: the time per worker does not grow with the worker count.
    const linear = msPerWorker[msPerWorker.length - 1] <= msPerWorker[Math.min(1, msPerWorker.length - 1)] * 1.1;
    const computeMs = stepMs(ctx) ?? 71;

    // ---- report
    const md: string[] = [];
    md.push(
      `Setup: one coordinator in the benchmark process (backend ${ctx.backend.name}), H=256, V=28: ${fmt(P)} parameters, so a gradient is ${bytes(P * 4)} in float32; ` +
        `global batch ${batch} streams split over the workers; wire dtype ${dtype}. The workers are stand-ins (\`bench/lib/fake-workers.ts\`): one process holds all N connections, each does the real handshake ` +
        `(hello with the token, welcome) and answers every step at once with a precomputed gradient of the real size plus its streams' state (a real grads message, unmasked as the worker client sends it; ` +
        `encoded once per round and shared by the connections, and the parameter frames are not decoded, to keep the stand-ins' share of the ${os.cpus().length} cores small), so a round is ` +
        `the coordinator's own work plus the transfers and nothing else. ${warmup} warm-up and ${rounds} measured rounds per worker count, a fresh coordinator with \`--max-workers N\` each. ` +
        `Gradient bytes are the coordinator's \`dptrain_gradient_bytes_received_total\` over the measured rounds (msgpack frames: gradient, state and header), over their wall time. ` +
        `Load: ${quiet.quiet ? `the 1-minute load average was ${quiet.load} when measuring began` : `**still ${quiet.load} after waiting ${quiet.waitedSeconds} s**`}, ${round2(loadEnd)} at the end. ` +
        `The stand-ins share the machine's ${os.cpus().length} cores with the coordinator.`,
    );
    md.push('');
    md.push(
      table(
        ['workers', 'streams each', 'round ms (median)', 'round ms (p90)', 'ms per worker', 'gradient bytes / round', 'gradient traffic', 'parameter traffic', 'coordinator CPU ms / round'],
        runs.map((r, k) => [r.workers, r.streamsPerWorker, fmt(r.roundMsMedian, 1), fmt(r.roundMsP90, 1), fmt(msPerWorker[k], 2), bytes(r.gradientBytesPerRound), `**${bytes(r.gradientBytesPerSecond)}/s**`, `${bytes(r.parameterBytesPerSecond)}/s`, fmt(r.coordinatorCpuMsPerRound, 1)]),
      ),
    );
    md.push('');
    md.push(
      `- **peak gradient traffic through one coordinator: ${bytes(best.gradientBytesPerSecond)}/s** (${best.workers} workers; ${bytes(big.gradientBytesPerSecond)}/s at ${big.workers}), target ≥ 1 GB/s${best.gradientBytesPerSecond >= 1e9 ? ': met' : `: **missed** (${pct(best.gradientBytesPerSecond / 1e9, 0)} of it)`}. ` +
        `The coordinator also sends the same volume of parameters (${bytes(best.parameterBytesPerSecond)}/s at ${best.workers} workers).`,
    );
    md.push(
      `- **round time vs workers:** a straight-line fit gives ${fmt(fit.a, 1)} ms + ${fmt(perWorkerMs, 2)} ms per worker; the time per worker goes from ${fmt(msPerWorker[0], 2)} ms (1 worker) to ${fmt(msPerWorker[msPerWorker.length - 1], 2)} ms (${big.workers}): ` +
        `${linear ? 'linear or better, as the target asks' : '**worse than linear**'}.`,
    );
    md.push('');
    md.push(`**Per-worker cost on the coordinator** (medians per round at ${big.workers} workers, ms): ${Object.entries(big.breakdown).map(([k, v]) => `${k.replace(/Ms$/, '')} ${fmt(v, 1)}`).join(', ')}. The pieces, timed one by one in this process for one worker's messages:`);
    md.push('');
    md.push(table(['where', 'piece', 'ms'], wire.filter((s) => s.where === 'coordinator' && !s.skipped).map((s) => [s.where, s.what, fmt(s.ms, 2)]), ['l', 'l', 'r']));
    md.push('');
    if (profile) {
      md.push(
        `**CPU profile of the coordinator** with ${profile.workers} workers (a separate run under the V8 sampling profiler, ${rounds} rounds, ${fmt(profile.roundMs, 1)} ms per round; self time by function, ${fmt(profile.totalMs, 0)} ms of samples outside idle):`,
      );
      md.push('');
      md.push(table(['function', 'where', 'ms', 'share'], profile.rows.map((r) => [`\`${r.fn}\``, r.where, fmt(r.ms, 0), pct(r.share, 1)]), ['l', 'l', 'r', 'r']));
      md.push('');
    }

    // ---- on paper
    const G = P * 4; // float32 gradient (and parameter message) bytes per worker per round
    const cpuMs = perWorkerMs; // measured coordinator time per worker per round (loopback, this machine)
    const sumMs = wire.find((s) => s.key === 'sum')!.ms;
    const applyMs = wire.find((s) => s.key === 'apply')!.ms;
    const LATENCY_MS = 0.05; // one message's latency on a LAN, assumed
    const FANOUT = 8;
    const NS = [8, 32, 128];
    const links = [
      { name: '10 Gbit/s', bytesPerSec: 10e9 / 8 },
      { name: '100 Gbit/s', bytesPerSec: 100e9 / 8 },
    ];
    const scenarios = [
      { model: 'this model', scale: 1 },
      { model: '10× larger', scale: 10 },
    ];
    interface PaperRow { model: string; link: string; gradientBytes: number; linkMs: number; cpuMs: number; computeMs: number; star: number[]; tree: number[]; ring: number[]; n90: number }
    const paper: PaperRow[] = [];
    for (const sc of scenarios) {
      for (const l of links) {
        const bytesPer = G * sc.scale;
        const linkMs = (bytesPer / l.bytesPerSec) * 1000;
        const cpu = cpuMs * sc.scale;
        const compute = computeMs * sc.scale;
        const per = Math.max(linkMs, cpu);
        const eff = (overhead: number) => compute / (compute + overhead);
        const levels = (n: number) => Math.max(1, Math.ceil(Math.log(n) / Math.log(FANOUT) - 1e-9));
        paper.push({
          model: sc.model,
          link: l.name,
          gradientBytes: bytesPer,
          linkMs,
          cpuMs: cpu,
          computeMs: compute,
          // Star: the coordinator handles N workers' messages one after another.
          star: NS.map((n) => eff(n * per)),
          // Tree: every node handles at most FANOUT children, one level after another.
          tree: NS.map((n) => eff(levels(n) * Math.min(n, FANOUT) * per)),
          // Ring: 2(N-1)/N of a gradient each way per worker, 2(N-1) message latencies, and every worker adds and steps itself.
          ring: NS.map((n) => eff(((2 * (n - 1)) / n) * linkMs + 2 * (n - 1) * LATENCY_MS + (sumMs + applyMs) * sc.scale)),
          n90: compute / (9 * per),
        });
      }
    }
    const pc = (x: number) => pct(x, 0);
    md.push(`### Where one coordinator stops scaling`);
    md.push('');
    md.push(
      `Per round, each worker sends its gradient (${bytes(G)} in float32 for this model) and receives the parameters (the same size), so the coordinator's link carries N of each per round, ` +
        `and its CPU spends about ${fmt(cpuMs, 2)} ms per worker (the slope above, on loopback on this machine: sending the parameters, receiving, checking, decoding and adding a gradient). ` +
        `Meanwhile a worker computes its shard: ${fmt(computeMs, 0)} ms for 32 streams at the step part's rate. Rounds are synchronous, so a round takes the compute plus N times the larger of the link time and the CPU time per worker, ` +
        `and N workers run at compute / (compute + N · per-worker time) of the ideal speed-up: 90% while N ≤ compute / (9 · per-worker time). ` +
        `A 10× larger model has 10× the bytes and, at the same rate per byte, 10× the coordinator's CPU time per worker; its compute per step grows 10× too (it is proportional to the parameters times the tokens). ` +
        `The table gives the efficiency at 8, 32 and 128 workers for the star (this design), a tree of sub-coordinators with ${FANOUT} children each, and a ring all-reduce between the workers ` +
        `(assuming ${fmt(LATENCY_MS * 1000, 0)} µs per message and, for the ring, each worker adding the gradient pieces (${fmt(sumMs, 2)} ms) and stepping the optimizer (${fmt(applyMs, 2)} ms) itself).`,
    );
    md.push('');
    md.push(
      table(
        ['model', 'link', 'bytes per worker per round, each way', 'link ms per worker', 'coordinator CPU ms per worker', 'compute ms per round', 'star: N at 90%', 'star 8 / 32 / 128', `tree (${FANOUT} per node) 8 / 32 / 128`, 'ring 8 / 32 / 128'],
        paper.map((r) => [r.model, r.link, bytes(r.gradientBytes), fmt(r.linkMs, 2), fmt(r.cpuMs, 2), fmt(r.computeMs, 0), fmt(Math.floor(r.n90), 0), r.star.map(pc).join(' / '), r.tree.map(pc).join(' / '), r.ring.map(pc).join(' / ')]),
      ),
    );
    md.push('');
    const a10 = paper[0];
    const a100 = paper[1];
    md.push(
      `So with this model and 32 streams per worker one coordinator keeps about ${fmt(Math.floor(a10.n90), 0)} workers at 90% efficiency, on either link: ${a10.cpuMs > a10.linkMs ? 'its CPU, not the link, is the limit' : 'the 10 Gbit/s link is the limit'} ` +
        `(${fmt(a10.cpuMs, 2)} ms of CPU against ${fmt(a10.linkMs, 2)} ms on 10 Gbit/s and ${fmt(a100.linkMs, 2)} ms on 100 Gbit/s per worker), and it is at ${pc(a10.star[1])} with 32 workers. ` +
        `The ratio of compute to traffic does not depend on the model's size, so the 10× model gives the same picture; more streams per worker (a larger global batch) raise the compute per round and every limit with it. Past that point:`,
    );
    md.push('');
    md.push(
      `- **Hierarchical aggregation** (what this design extends to): sub-coordinators, each serving up to ${FANOUT} workers exactly as the coordinator does now, forward one summed gradient and token count to their parent and relay the parameters back; ` +
        `a sub-coordinator is a worker to its parent, so the protocol, the deadlines and the stream hand-over carry over, and the root stays the one place for checkpoints and membership. ` +
        `Each level adds ${FANOUT} workers' worth of time instead of N: ${pc(a10.tree[1])} instead of ${pc(a10.star[1])} at 32 workers and ${pc(a10.tree[2])} instead of ${pc(a10.star[2])} at 128 (10 Gbit/s, this model).`,
    );
    md.push(
      `- **Ring all-reduce between workers:** each worker sends and receives 2·(N−1)/N of a gradient per round whatever N is (at most ${bytes(2 * G)}: ${fmt(((2 * G) / links[0].bytesPerSec) * 1000, 1)} ms on 10 Gbit/s, ${fmt(((2 * G) / links[1].bytesPerSec) * 1000, 2)} ms on 100 Gbit/s for this model), ` +
        `so bandwidth never limits it; its 2·(N−1) message hops do (${pc(a10.ring[1])} at 32 and ${pc(a10.ring[2])} at 128 workers). Every worker then holds the optimizer state and applies the step itself, ` +
        `the coordinator keeps membership, data assignment and checkpoints, and workers must reach each other, not only the coordinator: more moving parts than the tree, for large N.`,
    );
    md.push('');

    return {
      markdown: md.join('\n'),
      result: { quiet, loadEnd, batch, dtype, warmup, rounds, runs, fit, profile, gradientBytesPerWorkerPerRound: gradBytesPerWorker, peakGradientBytesPerSecond: best.gradientBytesPerSecond, linear, wirePath: wire, onPaper: { computeMs, cpuMsPerWorker: cpuMs, latencyMs: LATENCY_MS, fanout: FANOUT, workerCounts: NS, rows: paper } },
    };
  },
};
