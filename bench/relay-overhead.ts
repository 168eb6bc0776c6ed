/**
 * What a relay changes for the coordinator, and what it costs a round:
 * N stand-in workers (bench/lib/fake-workers.ts: real handshake, real-sized
 * gradients, no compute) joined to the coordinator directly, against the same
 * N split over R relays (`dptrain relay` processes). Measured per round, median
 * after a warm-up: gradient bytes the coordinator received, its time decoding
 * and summing them (RoundBreakdown decodeMs + sumMs), its CPU time, and the
 * round's wall time. Configurations run in A B B A order in one process.
 *
 *   node --import tsx bench/relay-overhead.ts [--workers 8] [--relays 2] [--rounds 40] [--hidden 256]
 *
 * Prints a Markdown table with the load average at each run. Shares one
 * machine with its stand-ins and relays: on a small machine the wall times
 * include their CPU.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Coordinator, type RoundBreakdown } from '../src/coordinator/coordinator.js';
import { resolveCoordinatorConfig } from '../src/shared/config.js';
import { selectBackend } from '../src/shared/backend.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: flags } = parseArgs({
  options: {
    workers: { type: 'string', default: '8' },
    relays: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '40' },
    warmup: { type: 'string', default: '10' },
    hidden: { type: 'string', default: '256' },
  },
});
const N = Number(flags.workers);
const R = Number(flags.relays);
const ROUNDS = Number(flags.rounds);
const WARMUP = Number(flags.warmup);
const TOKEN = 'relay-bench-token-0123456789';

const median = (xs: number[]) => {
  const v = [...xs].sort((a, b) => a - b);
  return v.length % 2 ? v[v.length >> 1] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
};

function child(args: string[]): { proc: ChildProcess; output: () => string } {
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DPTRAIN_')));
  env.DPTRAIN_TOKEN = TOKEN;
  const proc = spawn(process.execPath, ['--import', 'tsx', ...args], { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  return { proc, output: () => out };
}

async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Result {
  config: string;
  load: number;
  members: number;
  gradBytesPerRound: number;
  decodeSumMs: number;
  cpuMsPerRound: number;
  roundMs: number;
}

async function measure(relays: number): Promise<Result> {
  const load = os.loadavg()[0];
  const cfg = resolveCoordinatorConfig(
    { corpus: 'mobydick', maxTokens: 200_000, valFraction: 0, batchSize: 32, numSteps: 35, hidden: Number(flags.hidden), epochs: 1000, host: '127.0.0.1', port: 0, metricsPort: -1, logEvery: 1_000_000, sampleEvery: 0, minWorkers: N, heartbeatInterval: 30, roundTimeout: 120 },
    {},
  );
  const records: (RoundBreakdown & { cpuMs: number; grad: number })[] = [];
  let cpuMark = process.cpuUsage();
  let gradMark = 0;
  const c: Coordinator = new Coordinator(cfg, TOKEN, {
    log: (l) => /error|refused|dropping|missed/i.test(l) && console.error(`coordinator: ${l}`),
    progress: null,
    onRound: (b) => {
      const cpu = process.cpuUsage(cpuMark);
      cpuMark = process.cpuUsage();
      void c.metrics.gradBytes.get().then((g) => {
        const v = g.values[0]?.value ?? 0;
        records.push({ ...b, cpuMs: (cpu.user + cpu.system) / 1000, grad: v - gradMark });
        gradMark = v;
      });
    },
  });
  await c.start();
  const root = `ws://127.0.0.1:${c.port}`;
  const procs: { proc: ChildProcess; output: () => string }[] = [];
  const fake = path.join('bench', 'lib', 'fake-workers.ts');
  const running = c.run();
  try {
    if (relays === 0) procs.push(child([fake, root, String(N), 'direct']));
    else {
      for (let k = 0; k < relays; k++) {
        const r = child(['src/cli.ts', 'relay', '--coordinator', root, '--host', '127.0.0.1', '--port', '0', '--metrics-port', '-1', '--name', `relay-${k}`]);
        procs.push(r);
        await until(() => /^listening on ws:\/\/[^:]+:\d+/m.test(r.output()), 60_000, `relay ${k}`);
        const port = /^listening on ws:\/\/[^:]+:(\d+)/m.exec(r.output())![1];
        procs.push(child([fake, `ws://127.0.0.1:${port}`, String(N / relays), `under-${k}`]));
      }
    }
    await until(() => records.length >= WARMUP + ROUNDS, 600_000, `${WARMUP + ROUNDS} rounds`);
  } finally {
    c.stop('bench done');
    await running;
    for (const p of procs) p.proc.kill('SIGKILL');
    c.dispose();
  }
  const m = records.slice(WARMUP, WARMUP + ROUNDS);
  return {
    config: relays === 0 ? `${N} workers direct` : `${relays} relays x ${N / relays} workers`,
    load,
    members: m[0].workers,
    gradBytesPerRound: median(m.map((r) => r.grad)),
    decodeSumMs: median(m.map((r) => r.decodeMs + r.sumMs)),
    cpuMsPerRound: median(m.map((r) => r.cpuMs)),
    roundMs: median(m.map((r) => r.totalMs)),
  };
}

await selectBackend({ backend: 'auto', log: () => {} });
const results: Result[] = [];
for (const relays of [0, R, R, 0]) {
  const r = await measure(relays);
  console.error(JSON.stringify(r));
  results.push(r);
}
const f = (x: number, d = 2) => x.toFixed(d);
console.log(`${N} stand-in workers, char-LSTM hidden ${flags.hidden} (float32 gradients), batch 32 x 35; median of ${ROUNDS} rounds after ${WARMUP}; ${os.cpus().length} cores`);
console.log('| configuration | 1-min load | members at the coordinator | gradient MB received per round | coordinator decode + sum, ms/round | coordinator CPU, ms/round | round wall time, ms |');
console.log('|---|---|---|---|---|---|---|');
for (const r of results) console.log(`| ${r.config} | ${f(r.load, 1)} | ${r.members} | ${f(r.gradBytesPerRound / 1e6)} | ${f(r.decodeSumMs)} | ${f(r.cpuMsPerRound, 1)} | ${f(r.roundMs, 1)} |`);
process.exit(0);
