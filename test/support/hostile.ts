/**
 * Shared set-up of the hostile-input tests: a coordinator training two honest
 * worker processes, a record of every reply the rounds accepted, and memory
 * readings taken after a full garbage collection.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import type { Coordinator } from '../../src/coordinator/coordinator.js';
import { Round, type Reply } from '../../src/coordinator/round.js';
import { decodeTensor } from '../../src/shared/wire/tensor.js';
import { within } from './processes.js';
import { spawnWorker, startCoordinator, tinyCoordinatorConfig, waitFor, type WorkerProc } from './cluster.js';

export interface Accepted {
  workerId: string;
  round: number;
  roundId: number;
  tokens: number;
  allFinite: boolean;
}

/**
 * Records every reply a Round sums in. Wrapping the prototype sees replies
 * from every path into a round, so a test can prove whose gradients were applied.
 */
export function recordAccepted(): { accepted: Accepted[]; restore: () => void } {
  const accepted: Accepted[] = [];
  const original = Round.prototype.accept;
  Round.prototype.accept = function (this: Round, r: Reply) {
    const bad = original.call(this, r);
    // A tensor as received is decoded again here, only to record what was summed.
    const finite = (t: Reply['grad']): boolean => (t instanceof Float32Array ? t : decodeTensor(t)).every(Number.isFinite);
    if (bad === null) accepted.push({ workerId: r.workerId, round: r.round, roundId: this.id, tokens: r.tokenCount, allFinite: finite(r.grad) && (r.rows ?? []).every((x) => finite(x.values)) });
    return bad;
  };
  return { accepted, restore: () => void (Round.prototype.accept = original) };
}

let gcFn: (() => void) | null = null;

/** Heap in use after a full collection, so growth means retained memory, not garbage. */
export function heapAfterGc(): { heapUsed: number; rss: number } {
  if (!gcFn) {
    v8.setFlagsFromString('--expose-gc');
    gcFn = vm.runInNewContext('gc') as () => void;
  }
  gcFn();
  gcFn();
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, rss: m.rss };
}

export async function counter(c: Coordinator, name: 'rejected' | 'failures', label: string): Promise<number> {
  const key = name === 'rejected' ? 'code' : 'reason';
  return (await c.metrics[name].get()).values.filter((v) => (v.labels as Record<string, unknown>)[key] === label).reduce((a, v) => a + v.value, 0);
}

export async function rejectedByCode(c: Coordinator): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await c.metrics.rejected.get()).values) if (v.value > 0) out[String(v.labels.code)] = v.value;
  return out;
}

export async function tokensTotal(c: Coordinator): Promise<number> {
  return (await c.metrics.tokens.get()).values.reduce((a, v) => a + v.value, 0);
}

export interface HonestCluster {
  c: Coordinator;
  url: string;
  logs: string[];
  workers: WorkerProc[];
  honestIds: string[];
  running: ReturnType<Coordinator['run']>;
  /** Waits until n more optimizer steps were applied. */
  progresses(n: number, timeoutMs: number, what: string): Promise<void>;
  /** Kills the workers and stops the run; every reply a round accepted has been applied when it resolves. Idempotent. */
  shutdown(): Promise<void>;
}

export async function honestCluster(over: Record<string, unknown>): Promise<HonestCluster> {
  const logs: string[] = [];
  const cfg = tinyCoordinatorConfig({ epochs: 100_000, maxTokens: 1000, ...over });
  const c = await startCoordinator(cfg, logs);
  const url = `ws://127.0.0.1:${c.port}`;
  const workers = [spawnWorker(url, ['--name', 'honest-0']), spawnWorker(url, ['--name', 'honest-1'])];
  const running = c.run();
  let stopped: Promise<void> | null = null;
  const shutdown = () => (stopped ??= stopAll());
  const stopAll = async () => {
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    c.stop('test over');
    c.stop('test over');
    await within(running, 15_000, 'the stopped run to return');
  };
  try {
    await waitFor(() => c.membership.size === 2 && c.state.step >= 5, 30_000, 'two honest workers training');
  } catch (e) {
    await shutdown();
    c.dispose();
    throw new Error(`${(e as Error).message}\n${workers.map((w) => w.output()).join('\n')}`);
  }
  const honestIds = c.membership.list().map((m) => m.id);
  return {
    c,
    url,
    logs,
    workers,
    honestIds,
    running,
    progresses: async (n, timeoutMs, what) => {
      const s = c.state.step;
      await waitFor(() => c.state.step >= s + n, timeoutMs, `${n} more steps (${what})`);
    },
    shutdown,
  };
}
