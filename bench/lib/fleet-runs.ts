/**
 * The fleet part's measured runs: an in-process coordinator (bench/lib/cluster.ts),
 * `dptrain relay` processes, and stand-in workers (bench/lib/fake-workers.ts, one
 * process per group) that answer each step a compute time after it arrived.
 * Records the round period, and the CPU time per round of the root (this
 * process), of each relay and of each stand-in process (/proc/PID/stat), so
 * that the model (fleet-model.ts) can be compared with the run piece by piece.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startCluster, waitUntil } from './cluster.js';
import type { FleetNode } from './fleet-model.js';
import { median } from './stats.js';
import type { BenchContext } from './types.js';
import { STEPS, STREAMS } from './fleet-terms.js';

/** Below a node: a stand-in process holding `standIns` connections, or a relay process with its own children. */
export type Layout = { standIns: number } | { relay: Layout[] };

export interface FleetRun {
  name: string;
  workers: number;
  computeMs: number;
  k: number;
  rounds: number;
  periodMs: number;
  tokensPerSecond: number;
  efficiency: number;
  /** CPU ms per round: the root (this process), each relay, each stand-in process, in tree order. */
  rootCpuMs: number;
  relayCpuMs: number[];
  standInCpuMs: number[];
  /** Medians over the measured rounds of the coordinator's RoundBreakdown, ms. */
  breakdown: Record<string, number>;
  load: number;
}

export function countLayout(l: readonly Layout[]): number {
  return l.reduce((n, x) => n + ('standIns' in x ? x.standIns : countLayout(x.relay)), 0);
}

/** The model's tree for a measured layout: the stand-ins of one process share its event loop. */
export function layoutTree(l: readonly Layout[]): FleetNode[] {
  let proc = 0;
  const walk = (xs: readonly Layout[]): FleetNode[] =>
    xs.flatMap((x): FleetNode[] => {
      if ('relay' in x) return [{ kind: 'relay', children: walk(x.relay) }];
      const cpu = `standins-${proc++}`;
      return Array.from({ length: x.standIns }, () => ({ kind: 'worker' as const, cpu }));
    });
  return walk(l);
}

/** utime + stime of a process, ms (clock ticks of 10 ms); null where /proc is missing. */
function procCpuMs(pid: number): number | null {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return ((Number(rest[11]) + Number(rest[12])) * 1000) / 100;
  } catch {
    return null;
  }
}

function child(ctx: BenchContext, token: string, args: string[]): { proc: ChildProcess; output: () => string } {
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DPTRAIN_')));
  env.DPTRAIN_TOKEN = token;
  const proc = spawn(process.execPath, ['--import', 'tsx', ...args], { cwd: ctx.repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const on = (d: Buffer) => {
    out += d.toString();
    if (out.length > 100_000) out = out.slice(-50_000);
  };
  proc.stdout!.on('data', on);
  proc.stderr!.on('data', on);
  return { proc, output: () => out };
}

/** One measured run of `layout` under a fresh coordinator: `warmup` rounds after every stand-in joined, then `rounds`. */
export async function measureLayout(ctx: BenchContext, name: string, layout: Layout[], computeMs: number, k: number, warmup: number, rounds: number): Promise<FleetRun> {
  const n = countLayout(layout);
  const load = os.loadavg()[0];
  let from = -1;
  const cpuAt: number[][] = [];
  const relays: ChildProcess[] = [];
  const standIns: ChildProcess[] = [];
  // Training starts once all N stand-ins are in (a relay counts its workers): none joins mid-run.
  const members = layout.length;
  const cluster = await startCluster(ctx, {
    workers: n,
    external: true,
    config: { maxTokens: 0, valFraction: 0, batchSize: STREAMS * n, numSteps: STEPS, hidden: 256, epochs: 1000, maxWorkers: Math.max(64, members), wireDtype: 'float32', syncEvery: k, roundTimeout: 30 },
    onRound: () => {
      if (from >= 0 && (cluster.rounds.length === from + warmup || cluster.rounds.length === from + warmup + rounds)) {
        cpuAt.push([...relays, ...standIns].map((p) => procCpuMs(p.pid!) ?? NaN));
      }
      if (from >= 0 && cluster.rounds.length === from + warmup + rounds) void cluster.stop();
    },
  });
  const procs: { proc: ChildProcess; output: () => string }[] = [];
  const fake = path.join('bench', 'lib', 'fake-workers.ts');
  let ready = 0;
  let groups = 0;
  const place = async (url: string, xs: Layout[], at: string): Promise<void> => {
    for (const [i, x] of xs.entries()) {
      if ('standIns' in x) {
        groups++;
        const s = child(ctx, cluster.token, [fake, url, String(x.standIns), `${at}-${i}`, String(computeMs)]);
        procs.push(s);
        standIns.push(s.proc);
        s.proc.stdout!.on('data', (d: Buffer) => {
          if (/^ready \d+/m.test(d.toString())) ready++;
        });
      } else {
        const r = child(ctx, cluster.token, ['src/cli.ts', 'relay', '--coordinator', url, '--host', '127.0.0.1', '--port', '0', '--metrics-port', '-1', '--name', `${at}-${i}`]);
        procs.push(r);
        relays.push(r.proc);
        await waitUntil(() => /^listening on ws:\/\/[^:]+:\d+/m.test(r.output()), 60_000, `relay ${at}-${i} listening; its output: ${r.output().slice(-500)}`);
        const port = /^listening on ws:\/\/[^:]+:(\d+)/m.exec(r.output())![1];
        await place(`ws://127.0.0.1:${port}`, x.relay, `${at}-${i}`);
      }
    }
  };
  try {
    await place(cluster.url, layout, 'r');
    await waitUntil(() => ready === groups, 120_000, `${groups} stand-in processes ready`);
    from = cluster.rounds.length;
    await waitUntil(() => cluster.rounds.length >= from + warmup + rounds, 120_000, `${warmup + rounds} rounds of ${name}`);
  } catch (e) {
    throw new Error(`${(e as Error).message}; output: ${procs.map((p) => p.output().slice(-400)).join(' | ')}`);
  } finally {
    await cluster.stop();
    for (const p of procs) if (p.proc.exitCode === null) p.proc.kill('SIGKILL');
  }
  const m = cluster.rounds.slice(from + warmup, from + warmup + rounds);
  const wall = m[m.length - 1].at - cluster.rounds[from + warmup - 1].at;
  const tokensPerSecond = (m.length * STREAMS * n * STEPS * k) / (wall / 1000);
  const perRound = cpuAt.length === 2 ? cpuAt[1].map((c, i) => (c - cpuAt[0][i]) / rounds) : [];
  return {
    name,
    workers: n,
    computeMs,
    k,
    rounds: m.length,
    periodMs: wall / m.length,
    tokensPerSecond,
    efficiency: tokensPerSecond / ((n * STREAMS * STEPS) / (computeMs / 1000)),
    rootCpuMs: median(m.map((r) => r.coordinatorCpuMs)),
    relayCpuMs: perRound.slice(0, relays.length),
    standInCpuMs: perRound.slice(relays.length),
    breakdown: Object.fromEntries((['encodeMs', 'sendMs', 'waitMs', 'decodeMs', 'sumMs', 'clipMs', 'optimizerMs', 'slowestComputeMs', 'totalMs'] as const).map((key) => [key, median(m.map((r) => r[key]))])),
    load,
  };
}
