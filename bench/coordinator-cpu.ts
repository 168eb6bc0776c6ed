/**
 * Coordinator CPU per gradient, the old path against the one-pass path, in
 * one process, interleaved: `node --import tsx bench/coordinator-cpu.ts [reps]`.
 *
 * before: validate the grads message with the finiteness pass over the bytes,
 *         decode the tensor into a scratch, add the scratch into a float64 sum
 *         in JavaScript (the coordinator until the one-pass sum);
 * after:  validate without that pass, then GradAccumulator.addInto (decode into
 *         its scratch, check it and add it in WebAssembly SIMD, all or nothing).
 * Both decode the returned stream state (16 streams x 2 x 256 float32) as the
 * coordinator does. The model is the benchmarks' LSTM, H=256, V=28 (299,036
 * parameters, 1.20 MB in float32). Prints medians per dtype, the traffic one
 * core could absorb at that rate, and the 1-minute load average; `--json` prints the rows as JSON too.
 */
import os from 'node:os';
import { decodeWorkerMessage, encode } from '../src/shared/wire/protocol.js';
import { decodeTensor, encodeTensor, WIRE_DTYPES } from '../src/shared/wire/tensor.js';
import { GradAccumulator } from '../src/shared/wire/accumulate.js';
import { paramCount } from '../src/shared/model/char-lstm/params.js';
import { median } from './lib/stats.js';

export interface CpuRow {
  dtype: string;
  frameBytes: number;
  /** Medians of wall time per reply. */
  beforeMs: number;
  afterMs: number;
  /** This process's CPU time per reply (mean): what the work cost whatever else ran on the machine. */
  beforeCpuMs: number;
  afterCpuMs: number;
  /** Of CPU time. */
  speedup: number;
  /** Gradient bytes per second one core absorbs on the one-pass path. */
  afterBytesPerSecond: number;
  load1: number;
}

export function coordinatorCpu(reps = 200): CpuRow[] {
  const n = paramCount({ vocabSize: 28, hidden: 256 });
  const rows = 16;
  const grad = Float32Array.from({ length: n }, (_, i) => 1e-3 * Math.sin(i));
  const state = Float32Array.from({ length: rows * 2 * 256 }, (_, i) => 0.1 * Math.cos(i));
  const baseLimits = { paramCount: n, maxTokenCount: rows * 35, stateCount: rows * 2 * 256 };
  const out: CpuRow[] = [];
  for (const dtype of WIRE_DTYPES) {
    const frame = encode({ type: 'grads', round: 1, tokenCount: rows * 35, lossSum: 1, computeMs: 1, grads: encodeTensor(grad, dtype), state: encodeTensor(state, 'float32') });
    const oldSum = new Float64Array(n);
    const scratch = new Float32Array(n);
    const acc = new GradAccumulator(n);
    const sum = acc.newSum();
    const before = (): void => {
      const v = decodeWorkerMessage(frame, baseLimits);
      if (!v.ok || v.msg.type !== 'grads') throw new Error('bad frame');
      const g = decodeTensor(v.msg.grads, scratch);
      decodeTensor(v.msg.state!);
      for (let i = 0; i < n; i++) oldSum[i] += g[i];
    };
    const after = (): void => {
      const v = decodeWorkerMessage(frame, { ...baseLimits, gradsFinitenessChecked: true });
      if (!v.ok || v.msg.type !== 'grads') throw new Error('bad frame');
      decodeTensor(v.msg.state!);
      if (acc.addInto(sum, v.msg.grads, v.msg.rows) !== null) throw new Error('refused');
    };
    for (let k = 0; k < 30; k++) {
      before();
      after();
    }
    const a: number[] = [];
    const b: number[] = [];
    const cpu = { a: 0, b: 0 };
    const time = (f: () => void, into: number[]): void => {
      const c = process.cpuUsage();
      const t = performance.now();
      f();
      into.push(performance.now() - t);
      const d = process.cpuUsage(c);
      cpu[into === a ? 'a' : 'b'] += (d.user + d.system) / 1000;
    };
    // Alternating which goes first, so that neither always finds its data in cache.
    for (let k = 0; k < reps; k++) {
      if (k % 2 === 0) {
        time(before, a);
        time(after, b);
      } else {
        time(after, b);
        time(before, a);
      }
    }
    const afterCpuMs = cpu.b / reps;
    const beforeCpuMs = cpu.a / reps;
    out.push({ dtype, frameBytes: frame.byteLength, beforeMs: median(a), afterMs: median(b), beforeCpuMs, afterCpuMs, speedup: beforeCpuMs / afterCpuMs, afterBytesPerSecond: frame.byteLength / (Math.min(afterCpuMs, median(b)) / 1000), load1: os.loadavg()[0] });
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}` && !process.argv.includes('--sparse') && !process.argv.includes('--critical')) {
  const rows = coordinatorCpu(Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 200));
  for (const r of rows) {
    console.log(
      `${r.dtype}: ${(r.frameBytes / 1e6).toFixed(2)} MB frame, CPU before ${r.beforeCpuMs.toFixed(3)} ms, after ${r.afterCpuMs.toFixed(3)} ms (${r.speedup.toFixed(2)}x, ${(r.afterBytesPerSecond / 1e9).toFixed(2)} GB/s on one core); wall medians ${r.beforeMs.toFixed(3)} / ${r.afterMs.toFixed(3)} ms; load ${r.load1.toFixed(2)}`,
    );
  }
  if (process.argv.includes('--json')) console.log(JSON.stringify(rows));
}

export interface SparseRow {
  vocab: number;
  workers: number;
  streamsPerWorker: number;
  distinctInputsPerWorker: number;
  denseBytesPerRound: number;
  sparseBytesPerRound: number;
  denseSumMs: number;
  sparseSumMs: number;
}

/**
 * Bytes per round with and without sparse rows for a word-sized vocabulary:
 * the LSTM (H=256) over a generated vocabulary of `vocab` tokens drawn with
 * Zipf frequencies (s = 1, as words are), global batch 32 x 35 split over the
 * workers; each worker's gradient is random where it can be nonzero and zero
 * in the W_x rows of tokens its batch did not hold, encoded as the worker does
 * (encodeGradient) with and without rows; the coordinator CPU to add one
 * reply each way (median of `reps`).
 */
export async function sparseRowBytes(vocab = 5000, workerCounts = [1, 2, 8], reps = 20): Promise<SparseRow[]> {
  const { createModel } = await import('../src/shared/model/registry.js');
  const { rowSparseBlocks } = await import('../src/shared/model/descriptor.js');
  const { encodeGradient } = await import('../src/worker/shard-compute.js');
  const { Rng } = await import('../src/shared/data/rng.js');
  const model = createModel('char-lstm', vocab, { hidden: 256 });
  const blocks = rowSparseBlocks(model.blocks);
  const rng = new Rng(3);
  const cdf = new Float64Array(vocab);
  for (let i = 0, acc = 0; i < vocab; i++) cdf[i] = acc += 1 / (i + 1);
  const draw = (): number => {
    const u = rng.next() * cdf[vocab - 1];
    let lo = 0;
    let hi = vocab - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  const base = Float32Array.from({ length: model.paramCount }, () => 1e-3 * rng.normal());
  const out: SparseRow[] = [];
  for (const workers of workerCounts) {
    const rows = 32 / workers;
    let dense = 0;
    let sparse = 0;
    let distinct = 0;
    const acc = new GradAccumulator(model.paramCount, blocks);
    const sum = acc.newSum();
    const denseMs: number[] = [];
    const sparseMs: number[] = [];
    for (let w = 0; w < workers; w++) {
      const inputs = Int32Array.from({ length: rows * 35 }, draw);
      const seen = new Set(inputs);
      distinct += seen.size;
      const grad = base.slice();
      for (const b of blocks) for (let r = 0; r < b.rows; r++) if (!seen.has(r)) grad.fill(0, b.offset + r * b.cols, b.offset + (r + 1) * b.cols);
      const frame = (useRows: boolean) => encode({ type: 'grads', round: 1, tokenCount: rows * 35, lossSum: 1, computeMs: 1, ...encodeGradient(model, grad, inputs, 'float32', useRows) });
      const d = frame(false);
      const s = frame(true);
      dense += d.byteLength;
      sparse += s.byteLength;
      if (w === 0) {
        const limits = { paramCount: model.paramCount, maxTokenCount: 32 * 35, rowSparse: blocks, gradsFinitenessChecked: true };
        for (let k = 0; k < reps + 3; k++) {
          for (const [f, into] of [[d, denseMs], [s, sparseMs]] as const) {
            const t = performance.now();
            const v = decodeWorkerMessage(f, limits);
            if (!v.ok || v.msg.type !== 'grads' || acc.addInto(sum, v.msg.grads, v.msg.rows) !== null) throw new Error('refused');
            if (k >= 3) into.push(performance.now() - t);
          }
        }
      }
    }
    out.push({ vocab, workers, streamsPerWorker: rows, distinctInputsPerWorker: distinct / workers, denseBytesPerRound: dense, sparseBytesPerRound: sparse, denseSumMs: median(denseMs), sparseSumMs: median(sparseMs) });
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}` && process.argv.includes('--sparse')) {
  for (const r of await sparseRowBytes()) {
    console.log(
      `vocabulary ${r.vocab}, ${r.workers} workers x ${r.streamsPerWorker} streams: ${r.distinctInputsPerWorker.toFixed(0)} distinct inputs per worker; gradient bytes per round ${(r.denseBytesPerRound / 1e6).toFixed(2)} MB dense, ${(r.sparseBytesPerRound / 1e6).toFixed(2)} MB with rows (${((100 * r.sparseBytesPerRound) / r.denseBytesPerRound).toFixed(1)}%); coordinator per reply ${r.denseSumMs.toFixed(2)} ms dense, ${r.sparseSumMs.toFixed(2)} ms with rows; load ${os.loadavg()[0].toFixed(2)}`,
    );
  }
}

export interface CriticalRow {
  what: string;
  beforeCpuMs: number;
  afterCpuMs: number;
}

/**
 * The coordinator's work between the last reply and the next step message,
 * before and after, interleaved, CPU time per round (mean of `reps`), on the
 * current tfjs backend: mean and norm of the float64 sum (clip when over),
 * the SGD step, reading the parameters, encoding the params message.
 * before: tfjs's SGD on one variable per block, then reading the blocks back
 * (as ParameterServer did); after: ParameterServer.apply (SGD in JavaScript
 * on the flat parameters) and params().
 */
export async function criticalPath(reps = 100): Promise<CriticalRow[]> {
  const tf = await import('@tensorflow/tfjs');
  const { createModel } = await import('../src/shared/model/registry.js');
  const { ParameterServer } = await import('../src/shared/train/param-server.js');
  const { Rng } = await import('../src/shared/data/rng.js');
  const model = createModel('char-lstm', 28, { hidden: 256 });
  const init = model.init(new Rng(1));
  const n = model.paramCount;
  const sum = Float64Array.from({ length: n }, (_, i) => 1e-2 * Math.sin(i));
  const server = new ParameterServer(model, init, { optimizer: 'sgd', lr: 1, clip: 1 });
  const vars = model.blocks.map((b) => tf.variable(tf.tensor1d(init.subarray(b.offset, b.offset + b.size))));
  const opt = tf.train.sgd(1);
  const mean = new Float32Array(n);
  const flat = new Float32Array(n);
  const cpu = { before: [0, 0, 0], after: [0, 0, 0] };
  const lap = (into: number[], k: number, c: NodeJS.CpuUsage): NodeJS.CpuUsage => {
    const d = process.cpuUsage(c);
    into[k] += (d.user + d.system) / 1000;
    return process.cpuUsage();
  };
  const before = (into: number[]): void => {
    let c = process.cpuUsage();
    let sq = 0;
    for (let i = 0; i < n; i++) {
      mean[i] = sum[i] / 1120;
      sq += mean[i] * mean[i];
    }
    const norm = Math.sqrt(sq);
    if (norm > 1) for (let i = 0; i < n; i++) mean[i] *= 1 / norm;
    const grads = model.blocks.map((b, k) => ({ name: vars[k].name, tensor: tf.tensor1d(mean.subarray(b.offset, b.offset + b.size)) }));
    opt.applyGradients(grads);
    tf.dispose(grads.map((g) => g.tensor));
    c = lap(into, 0, c);
    model.blocks.forEach((b, k) => flat.set(vars[k].dataSync() as Float32Array, b.offset));
    c = lap(into, 1, c);
    encode({ type: 'params', version: 1, params: encodeTensor(flat, 'float32') });
    lap(into, 2, c);
  };
  const after = (into: number[]): void => {
    let c = process.cpuUsage();
    server.apply(sum, 1120);
    c = lap(into, 0, c);
    const p = server.params();
    c = lap(into, 1, c);
    encode({ type: 'params', version: 1, params: encodeTensor(p, 'float32') });
    lap(into, 2, c);
  };
  for (let k = 0; k < 20; k++) {
    before([0, 0, 0]);
    after([0, 0, 0]);
  }
  for (let k = 0; k < reps; k++) {
    if (k % 2 === 0) {
      before(cpu.before);
      after(cpu.after);
    } else {
      after(cpu.after);
      before(cpu.before);
    }
  }
  server.dispose();
  tf.dispose(vars);
  opt.dispose();
  return ['mean, norm, clip and the SGD step', 'read the parameters', 'encode the params message'].map((what, k) => ({ what, beforeCpuMs: cpu.before[k] / reps, afterCpuMs: cpu.after[k] / reps }));
}

if (import.meta.url === `file://${process.argv[1]}` && process.argv.includes('--critical')) {
  const { selectBackend } = await import('../src/shared/backend.js');
  const be = await selectBackend({ backend: 'wasm', log: () => {} });
  for (const r of await criticalPath()) console.log(`${be.name}: ${r.what}: CPU before ${r.beforeCpuMs.toFixed(3)} ms, after ${r.afterCpuMs.toFixed(3)} ms; load ${os.loadavg()[0].toFixed(2)}`);
}
