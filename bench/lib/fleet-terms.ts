/**
 * The fleet model's terms (bench/lib/fleet-model.ts), measured on this machine
 * when the part runs, by compute time (the smaller of wall clock and this
 * process's CPU time, per batch; the median over batches), with the code the
 * root, the relay and the worker run today, so that a faster coordinator is
 * picked up by the next run:
 *
 * - sockets: a WebSocket server in this process and a peer in its own process
 *   (bench/lib/socket-peer.ts) on loopback: this end's cost to send one
 *   parameters frame (until the peer acknowledged it), and to receive one grads
 *   frame (the ws frame assembly included). On loopback the kernel's receive
 *   work largely runs in the sender's context, so a send here costs a little more
 *   and a receive a little less than between two machines; their sum is what a
 *   round pays.
 * - root, per reply: the socket receive, then what coordinator.ts does with it:
 *   decode and validate the grads message, decode the state, Round.accept with
 *   the received tensor (the one-pass check-decode-add).
 * - relay, per reply: the socket receive, then what relay.ts does: validate
 *   (finiteness left to the sum), decode the state, Round.accept with the
 *   received tensor (the root's one-pass check-decode-add, its own sum).
 * - root, fixed per round: bench/coordinator-cpu.ts criticalPath (mean, norm,
 *   clip and the SGD step; read the parameters; encode the params message);
 *   under local SGD the outer optimizer (outerOptimizerConfig's default) instead.
 * - relay forward: its float64 sum written into its reply frame (built in
 *   place, reply-frame.ts), one send.
 * - worker: receive and decode the parameters and build its stepper (what
 *   WorkerClient and ShardComputer.setParams do); encode the reply
 *   (encodeGradient, the message) and send it; per inner step of local SGD, the
 *   inner optimizer (ParameterServer.apply, params()) and the stepper built on the
 *   new parameters; at the end, the parameter change.
 */
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { decodeCoordinatorMessage, decodeWorkerMessage, encode } from '../../src/shared/wire/protocol.js';
import { decodeTensor, encodeTensor } from '../../src/shared/wire/tensor.js';
import { GradAccumulator } from '../../src/shared/wire/accumulate.js';
import { ReplyFrames } from '../../src/shared/wire/reply-frame.js';
import { Round } from '../../src/coordinator/round.js';
import { createModel } from '../../src/shared/model/registry.js';
import { ParameterServer } from '../../src/shared/train/param-server.js';
import { encodeGradient } from '../../src/worker/shard-compute.js';
import { Rng } from '../../src/shared/data/rng.js';
import { criticalPath } from '../coordinator-cpu.js';
import { outerOptimizerConfig } from '../../src/shared/train/outer-optimizer.js';
import type { FleetTerms } from './fleet-model.js';
import { median } from './stats.js';

export const HIDDEN = 256;
export const VOCAB = 28;
export const STREAMS = 32;
export const STEPS = 35;

/** Compute time of one batch of work: min(wall, this process's CPU). */
async function computeMs(f: () => Promise<void> | void): Promise<number> {
  const c = process.cpuUsage();
  const t = performance.now();
  await f();
  const wall = performance.now() - t;
  const d = process.cpuUsage(c);
  return Math.min(wall, (d.user + d.system) / 1000);
}

export interface MeasuredTerms {
  /** Terms of a fleet of real workers on their own machines. */
  fleet: FleetTerms;
  /** The same with the stand-ins of the measured runs: they receive the parameters without decoding and send a precomputed reply. */
  standIn: FleetTerms['worker'];
  /** The pieces, ms each. */
  pieces: Record<string, number>;
  /** 1-minute load average before and after measuring. */
  load: [number, number];
}

/** A connection to a socket peer process; closes with the peer. */
async function withPeer<T>(repoRoot: string, use: (ws: WebSocket, next: () => Promise<{ binary: Buffer | null; text: string | null }>) => Promise<T>): Promise<T> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 1 << 30 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const port = (wss.address() as { port: number }).port;
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DPTRAIN_')));
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'bench', 'lib', 'socket-peer.ts'), `ws://127.0.0.1:${port}`], { cwd: repoRoot, env, stdio: ['ignore', 'inherit', 'inherit'] });
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  try {
    const ws = await new Promise<WebSocket>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('the socket peer did not connect within 30 s')), 30_000);
      wss.once('connection', (s) => {
        clearTimeout(t);
        resolve(s);
      });
    });
    ws.binaryType = 'nodebuffer';
    const waiting: ((m: { binary: Buffer | null; text: string | null }) => void)[] = [];
    ws.on('message', (data: Buffer, isBinary: boolean) => waiting.shift()?.(isBinary ? { binary: data, text: null } : { binary: null, text: data.toString() }));
    const next = () => new Promise<{ binary: Buffer | null; text: string | null }>((r) => waiting.push(r));
    return await use(ws, next);
  } finally {
    for (const c of wss.clients) c.close();
    wss.close();
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }
}

/** Measure every term; `batches` batches of `per` messages for each socket term, interleaved. */
export async function measureTerms(repoRoot: string, opts: { batches?: number; per?: number; reps?: number } = {}): Promise<MeasuredTerms> {
  const batches = opts.batches ?? 11;
  const per = opts.per ?? 16;
  const reps = opts.reps ?? 30;
  const load0 = os.loadavg()[0];
  const model = createModel('char-lstm', VOCAB, { hidden: HIDDEN });
  const n = model.paramCount;
  const rng = new Rng(5);
  const params = model.init(rng);
  const grad = Float32Array.from({ length: n }, () => 1e-3 * rng.normal());
  const state = new Float32Array(STREAMS * model.stateWidth);
  const tokenCount = STREAMS * STEPS;
  const inputs = Int32Array.from({ length: tokenCount }, (_, i) => i % VOCAB);
  const paramsFrame = encode({ type: 'params', version: 1, params: encodeTensor(params, 'float32') });
  const encodeReply = () => encode({ type: 'grads', round: 1, tokenCount, lossSum: 1, computeMs: 1, ...encodeGradient(model, grad, inputs, 'float32', false), state: encodeTensor(state, 'float32') });
  const gradsFrame = encodeReply();
  const limits = { paramCount: n, maxTokenCount: tokenCount * 8, stateCount: STREAMS * model.stateWidth };

  // What the root and a relay do with one reply, on a round of `per` expected replies.
  const acc = new GradAccumulator(n);
  const expected = new Map(Array.from({ length: per }, (_, i) => [`w${i}`, { lo: 0, hi: STREAMS, tokenCount, stateLength: state.length }]));
  let rootRound = new Round(1, expected, n, 1e6, undefined, acc);
  const relayAcc = new GradAccumulator(n);
  let relayRound = new Round(1, expected, n, 1e6, undefined, relayAcc);
  let seen = 0;
  const rootAdd = (frame: Buffer): void => {
    const v = decodeWorkerMessage(frame, { ...limits, gradsFinitenessChecked: true });
    if (!v.ok || v.msg.type !== 'grads') throw new Error('bad grads frame');
    const st = v.msg.state ? decodeTensor(v.msg.state) : undefined;
    if (rootRound.accept({ workerId: `w${seen++ % per}`, round: 1, tokenCount, lossSum: 1, computeMs: 1, grad: v.msg.grads, rows: v.msg.rows, state: st }) !== null) throw new Error('refused');
  };
  const relayAdd = (frame: Buffer): void => {
    // As the root: the one-pass check-decode-add straight from the frame (src/relay/relay.ts).
    const v = decodeWorkerMessage(frame, { ...limits, gradsFinitenessChecked: true });
    if (!v.ok || v.msg.type !== 'grads') throw new Error('bad grads frame');
    const st = v.msg.state ? decodeTensor(v.msg.state) : undefined;
    if (relayRound.accept({ workerId: `w${seen++ % per}`, round: 1, tokenCount, lossSum: 1, computeMs: 1, grad: v.msg.grads, state: st }) !== null) throw new Error('refused');
  };
  let stepper = model.stepper(params);
  const workerParams = (frame: Buffer): void => {
    const v = decodeCoordinatorMessage(frame, { paramCount: n });
    if (!v.ok || v.msg.type !== 'params') throw new Error('bad params frame');
    stepper.dispose();
    stepper = model.stepper(decodeTensor(v.msg.params));
  };
  const relayParams = (frame: Buffer): void => {
    const v = decodeCoordinatorMessage(frame, { paramCount: n });
    if (!v.ok || v.msg.type !== 'params') throw new Error('bad params frame');
  };

  const pieces: Record<string, number[]> = {};
  const add = (k: string, ms: number) => (pieces[k] ??= []).push(ms);

  await withPeer(repoRoot, async (ws, next) => {
    ws.send('keep');
    ws.send(gradsFrame);
    const sendFrames = async (frame: Uint8Array | (() => Uint8Array)): Promise<number> =>
      computeMs(async () => {
        for (let i = 0; i < per; i++) ws.send(typeof frame === 'function' ? frame() : frame);
        ws.send('ack');
        await next();
      });
    const receiveFrames = (onFrame: ((b: Buffer) => void) | null): Promise<number> =>
      computeMs(async () => {
        const got = Array.from({ length: per }, () => next());
        ws.send(`send ${per}`);
        for (const g of got) {
          const m = await g;
          if (!m.binary) throw new Error(`socket peer sent text: ${m.text}`);
          onFrame?.(m.binary);
        }
      });
    // The peer sends grads frames; to exercise receiving parameters it is told to keep a params frame in between.
    const keep = async (frame: Uint8Array) => {
      ws.send('keep');
      ws.send(frame);
      ws.send('ack');
      await next();
    };
    const resetRounds = (): void => {
      seen = 0;
      rootRound.abort();
      rootRound = new Round(1, expected, n, 1e6, undefined, acc);
      relayRound.abort();
      relayRound = new Round(1, expected, n, 1e6, undefined, relayAcc);
    };
    const phases: [string, () => Promise<number>][] = [
      ['send a parameters frame', () => sendFrames(paramsFrame)],
      ['send a grads frame', () => sendFrames(gradsFrame)],
      ['encode and send a reply (worker)', () => sendFrames(encodeReply)],
      ['receive a grads frame', async () => (await keep(gradsFrame), receiveFrames(null))],
      ['root: receive and add a reply', async () => (await keep(gradsFrame), resetRounds(), receiveFrames(rootAdd))],
      ['relay: receive and add a reply', async () => (await keep(gradsFrame), resetRounds(), receiveFrames(relayAdd))],
      ['receive a parameters frame', async () => (await keep(paramsFrame), receiveFrames(null))],
      ['worker: receive and decode the parameters, build the stepper', async () => (await keep(paramsFrame), receiveFrames(workerParams))],
      ['relay: receive the parameters', async () => (await keep(paramsFrame), receiveFrames(relayParams))],
    ];
    // Each batch in another order (seeded), so that no piece always follows the same one: garbage
    // collection lands on whoever runs next, and is part of every piece's cost on average.
    const order = new Rng(17);
    for (let b = -1; b < batches; b++) {
      const idx = phases.map((_, j) => j);
      for (let j = idx.length - 1; j > 0; j--) {
        const r = Math.floor(order.next() * (j + 1));
        [idx[j], idx[r]] = [idx[r], idx[j]];
      }
      for (const j of idx) {
        const [name, run] = phases[j];
        const ms = await run();
        if (b >= 0) add(name, ms / per);
      }
    }
  });
  rootRound.abort();
  relayRound.abort();
  stepper.dispose();

  // The relay's forward: the float64 sum written into its reply frame, built in place (its send is a send of one frame).
  const sum = Float64Array.from(grad);
  const replies = new ReplyFrames('float32', n, state.length);
  // Local SGD on the worker: the inner optimizer and the stepper on its new parameters, per inner step; the change at the end.
  const inner = new ParameterServer(model, params, { optimizer: 'sgd', lr: 1, clip: 1 });
  const start = params.slice();
  const delta = new Float32Array(n);
  for (let r = -3; r < reps; r++) {
    const f = await computeMs(() => {
      replies.build({ round: 1, tokenCount, lossSum: 1, computeMs: 1, sum, state }).release();
    });
    const i = await computeMs(() => {
      inner.apply(grad, tokenCount);
      model.stepper(inner.params()).dispose();
    });
    const d = await computeMs(() => {
      const end = inner.params();
      for (let j = 0; j < n; j++) delta[j] = (start[j] - end[j]) * tokenCount;
    });
    if (r >= 0) {
      add('relay: write its sum into its reply frame', f);
      add('worker: inner optimizer step and stepper (local SGD)', i);
      add('worker: parameter change (local SGD)', d);
    }
  }
  inner.dispose();
  // The root under local SGD: the outer optimizer (the default, Nesterov through tfjs) on the averaged change, then the parameters' frame.
  const outer = new ParameterServer(model, params, outerOptimizerConfig({ syncEvery: 8 }));
  const change = Float64Array.from(grad, (g) => g * tokenCount);
  for (let r = -3; r < reps; r++) {
    const o = await computeMs(() => {
      outer.apply(change, tokenCount);
      encode({ type: 'params', version: 1, params: encodeTensor(outer.params(), 'float32') });
    });
    if (r >= 0) add('root: outer optimizer step, read and encode the parameters (local SGD)', o);
  }
  outer.dispose();
  const crit = await criticalPath(reps);
  const fixedMs = crit.reduce((a, c) => a + c.afterCpuMs, 0);
  const p = Object.fromEntries(Object.entries(pieces).map(([k, v]) => [k, median(v)]));
  p['root: mean, clip, optimizer, read and encode the parameters'] = fixedMs;
  const send = p['send a parameters frame'];
  const fleet: FleetTerms = {
    bytes: paramsFrame.byteLength,
    root: { fixedMs, fixedLocalMs: p['root: outer optimizer step, read and encode the parameters (local SGD)'], sendMs: send, recvMs: p['root: receive and add a reply'] },
    relay: { paramsMs: p['relay: receive the parameters'], sendMs: send, recvMs: p['relay: receive and add a reply'], forwardMs: p['relay: write its sum into its reply frame'] + send },
    worker: {
      paramsMs: p['worker: receive and decode the parameters, build the stepper'],
      replyMs: p['encode and send a reply (worker)'],
      innerStepMs: p['worker: inner optimizer step and stepper (local SGD)'],
      deltaMs: p['worker: parameter change (local SGD)'],
    },
  };
  // Stand-ins: the parameters frame is received and dropped; the reply is precomputed and sent.
  const standIn = { paramsMs: p['receive a parameters frame'], replyMs: p['send a grads frame'], innerStepMs: 0, deltaMs: 0 };
  return { fleet, standIn, pieces: p, load: [load0, os.loadavg()[0]] };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { selectBackend } = await import('../../src/shared/backend.js');
  await selectBackend({ backend: 'wasm', log: () => {} });
  const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
  const t = await measureTerms(root);
  for (const [k, v] of Object.entries(t.pieces)) console.log(`${k}: ${v.toFixed(3)} ms`);
  console.log(JSON.stringify({ fleet: t.fleet, standIn: t.standIn, load: t.load }));
  process.exit(0);
}
