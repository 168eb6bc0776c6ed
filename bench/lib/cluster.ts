/**
 * Helpers for the parts that run the distributed trainer: an in-process
 * coordinator (so that every round's RoundBreakdown reaches the benchmark)
 * with real worker processes of the CLI (`worker join`) on loopback, and a
 * wait for the machine to go quiet before throughput is measured.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Coordinator, type RoundBreakdown, type RunSummary } from '../../src/coordinator/coordinator.js';
import { resolveCoordinatorConfig, type CoordinatorConfig } from '../../src/shared/config.js';
import type { BenchContext } from './types.js';

/**
 * The Time Machine in the data dir. Where it is missing but a shared copy sits
 * next to the repository (../shared/data), that copy is put where a download
 * would land; otherwise loading it downloads it.
 */
export function ensureTimeMachine(ctx: BenchContext): string {
  const target = path.join(ctx.dataDir, 'timemachine.txt');
  if (fs.existsSync(target)) return 'the Time Machine file from the data dir';
  const shared = path.resolve(ctx.repoRoot, '..', 'shared', 'data', 'timemachine.txt');
  if (fs.existsSync(shared)) {
    fs.mkdirSync(ctx.dataDir, { recursive: true });
    fs.copyFileSync(shared, target);
    fs.chmodSync(target, 0o644); // the shared copy may be read-only; a cache file is replaceable
    return 'the Time Machine file from the data dir (copied there from ../shared/data)';
  }
  return 'the Time Machine file, downloaded into the data dir';
}

/** Flags of every part that waits for a quiet machine before measuring (see waitForQuiet). */
export const LOAD_FLAGS = {
  'load-threshold': { type: 'number', default: 0.7, describe: 'wait for the 1-minute load average to fall below this before measuring' },
  'load-wait': { type: 'number', default: 300, describe: 'longest wait for the load to fall, seconds' },
} as const;

export interface QuietResult {
  /** 1-minute load average when measuring began. */
  load: number;
  loadAverage: number[];
  waitedSeconds: number;
  /** The load fell below the threshold before the wait ran out. */
  quiet: boolean;
  threshold: number;
}

/**
 * Wait, polling every 5 s, until the 1-minute load average is below
 * `threshold`, for at most `maxSeconds`; then go on whatever it is and say so.
 */
export async function waitForQuiet(ctx: BenchContext, threshold: number, maxSeconds: number): Promise<QuietResult> {
  const t0 = performance.now();
  let warned = false;
  for (;;) {
    const la = os.loadavg();
    const waited = (performance.now() - t0) / 1000;
    if (la[0] < threshold || waited >= maxSeconds) {
      const r = { load: round2(la[0]), loadAverage: la.map(round2), waitedSeconds: Math.round(waited), quiet: la[0] < threshold, threshold };
      ctx.log(r.quiet ? `load ${r.load} < ${threshold} after ${r.waitedSeconds} s: measuring` : `load still ${r.load} after ${r.waitedSeconds} s (threshold ${threshold}): measuring anyway`);
      return r;
    }
    if (!warned) ctx.log(`load average ${la[0].toFixed(2)} >= ${threshold}: waiting up to ${maxSeconds} s for the machine to go quiet`);
    warned = true;
    await sleep(5000);
  }
}

export const round2 = (x: number) => Math.round(x * 100) / 100;
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One applied round as the benchmark saw it. */
export interface RoundRecord extends RoundBreakdown {
  /** performance.now() when onRound fired (after the optimizer step). */
  at: number;
  /** Epoch the round belonged to, and tokens it trained on. */
  epoch: number;
  tokens: number;
  /** CPU time of this process (the coordinator) since the previous round, ms. */
  coordinatorCpuMs: number;
}

export interface WorkerProcess {
  child: ChildProcess;
  name: string;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Port of the worker's own /metrics, once it has printed it (when started with metrics). */
  metricsPort(): number | null;
}

/** Spawn `worker join` from the sources (the same program the CLI runs), with the token in the environment. */
export function spawnWorker(ctx: BenchContext, url: string, token: string, name: string, opts: { backend: string; metrics?: boolean; nodeFlags?: string[] }): WorkerProcess {
  const cli = path.join(ctx.repoRoot, 'src', 'cli.ts');
  const args = [...(opts.nodeFlags ?? []), '--import', 'tsx', cli, 'worker', 'join', '--coordinator', url, '--backend', opts.backend, '--name', name, '--max-retries', '3'];
  if (opts.metrics) args.push('--metrics-host', '127.0.0.1', '--metrics-port', '0');
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DPTRAIN_')));
  env.DPTRAIN_TOKEN = token;
  const child = spawn(process.execPath, args, { cwd: ctx.repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let port: number | null = null;
  const onData = (d: Buffer) => {
    out += d.toString();
    if (out.length > 200_000) out = out.slice(-100_000);
    if (port === null) {
      const m = /worker metrics on http:\/\/[^:]+:(\d+)\/metrics/.exec(out);
      if (m) port = Number(m[1]);
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on('exit', (code, signal) => r({ code, signal })));
  return { child, name, output: () => out, exited, metricsPort: () => port };
}

export interface ClusterOptions {
  /** Coordinator options (camelCase), on top of the bench defaults below. */
  config: Record<string, unknown>;
  /** Worker processes to start; training waits for this many (--min-workers). */
  workers: number;
  /** Start no worker processes: the caller connects `workers` itself to `url` with `token`. */
  external?: boolean;
  /** Worker backend (default: the bench's backend). */
  workerBackend?: string;
  /** Start workers with their own /metrics on a free port. */
  workerMetrics?: boolean;
  /** Flags for the workers' node (before the script). */
  workerNodeFlags?: string[];
  /** Called after every applied round, after the record is stored. */
  onRound?: (r: RoundRecord, c: Coordinator) => void;
  /** Offer the workers row-sparse gradients (default true, as the CLI does). */
  sparseRows?: boolean;
  /** Coordinator log lines go here (default: dropped, except errors). */
  log?: (line: string) => void;
}

export interface Cluster {
  coordinator: Coordinator;
  url: string;
  token: string;
  cfg: CoordinatorConfig;
  workers: WorkerProcess[];
  rounds: RoundRecord[];
  /** Resolves when the coordinator's run() returns. */
  done: Promise<RunSummary>;
  /** When the first round started (all workers had joined). */
  startedAt(): number | null;
  /** Stop after the round in flight (if still running), wait for the workers to exit. */
  stop(): Promise<RunSummary>;
}

/**
 * Start an in-process coordinator on a free loopback port and `workers` worker
 * processes; training starts when all of them have joined (--min-workers).
 */
export async function startCluster(ctx: BenchContext, opts: ClusterOptions): Promise<Cluster> {
  ensureTimeMachine(ctx);
  const cfg = resolveCoordinatorConfig(
    {
      corpus: 'timemachine',
      dataDir: ctx.dataDir,
      host: '127.0.0.1',
      port: 0,
      metricsPort: -1,
      logEvery: 1_000_000,
      sampleEvery: 0,
      minWorkers: opts.workers,
      maxWorkers: Math.max(opts.workers, 64),
      heartbeatInterval: 30,
      ...opts.config,
    },
    {},
  );
  const token = crypto.randomBytes(18).toString('base64url');
  const rounds: RoundRecord[] = [];
  let cpuMark = process.cpuUsage();
  let started: number | null = null;
  const log = opts.log ?? ((l: string) => {
    if (/error|fail|refused|dropping|missed/i.test(l)) ctx.log(`coordinator: ${l}`);
  });
  let c: Coordinator;
  c = new Coordinator(cfg, token, {
    log,
    progress: null,
    backend: ctx.backend,
    sparseRows: opts.sparseRows,
    onRound: (b) => {
      const cpu = process.cpuUsage(cpuMark);
      cpuMark = process.cpuUsage();
      const o = c.state;
      const rec: RoundRecord = { ...b, at: performance.now(), epoch: o.epoch, tokens: cfg.numSteps * cfg.batchSize, coordinatorCpuMs: (cpu.user + cpu.system) / 1000 };
      started ??= rec.at - b.totalMs;
      rounds.push(rec);
      opts.onRound?.(rec, c);
    },
  });
  await c.start();
  const url = `ws://127.0.0.1:${c.port}`;
  const workers = Array.from({ length: opts.external ? 0 : opts.workers }, (_, k) => spawnWorker(ctx, url, token, `bench-${k}`, { backend: opts.workerBackend ?? ctx.backend.name, metrics: opts.workerMetrics, nodeFlags: opts.workerNodeFlags }));
  const done = c.run();
  let stopped: Promise<RunSummary> | null = null;
  const stop = () =>
    (stopped ??= (async () => {
      c.stop('benchmark done');
      const summary = await done;
      await Promise.all(
        workers.map(async (w) => {
          const t = setTimeout(() => w.child.kill('SIGKILL'), 10_000);
          if (w.child.exitCode === null && w.child.signalCode === null) await w.exited;
          clearTimeout(t);
        }),
      );
      c.dispose();
      return summary;
    })());
  return { coordinator: c, url, token, cfg, workers, rounds, done, startedAt: () => started, stop };
}

/** Resolves when `pred` holds (checked every 20 ms), or rejects after `timeoutMs`. */
export async function waitUntil(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const t0 = performance.now();
  while (!pred()) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`);
    await sleep(20);
  }
}

/** Prometheus text format -> value of the first sample of `name` (no labels needed). */
export function promValue(text: string, name: string): number | null {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+|NaN)$`, 'm').exec(text);
  return m ? Number(m[1]) : null;
}

export async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  return res.text();
}
