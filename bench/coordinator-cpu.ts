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
  beforeMs: number;
  afterMs: number;
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
    const time = (f: () => void, into: number[]): void => {
      const t = performance.now();
      f();
      into.push(performance.now() - t);
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
    const afterMs = median(b);
    out.push({ dtype, frameBytes: frame.byteLength, beforeMs: median(a), afterMs, speedup: median(a) / afterMs, afterBytesPerSecond: frame.byteLength / (afterMs / 1000), load1: os.loadavg()[0] });
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const rows = coordinatorCpu(Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 200));
  for (const r of rows) {
    console.log(
      `${r.dtype}: ${(r.frameBytes / 1e6).toFixed(2)} MB frame, before ${r.beforeMs.toFixed(3)} ms, after ${r.afterMs.toFixed(3)} ms (${r.speedup.toFixed(2)}x, ${(r.afterBytesPerSecond / 1e9).toFixed(2)} GB/s on one core), load ${r.load1.toFixed(2)}`,
    );
  }
  if (process.argv.includes('--json')) console.log(JSON.stringify(rows));
}
