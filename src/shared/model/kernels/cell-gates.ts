/**
 * Fused gate kernels for the RNN and GRU steps on the wasm backend (the
 * LSTM's are in lstm-gates.ts, which explains the approach): elementwise
 * JavaScript over the wasm heap, one kernel where the step had several ops,
 * each also building the next matMul's concatenated input. Sigmoids stay
 * with the backend. Row by row, so shards of streams add up to the full batch.
 *
 * On by default where H is a multiple of 4 and WebAssembly SIMD can work on
 * the backend's memory (simd-rows.ts): then each kernel's arithmetic is a SIMD
 * program and the JavaScript loops below only serve other widths. The
 * JavaScript-only version did not pay (in three interleaved runs on a busy
 * machine 4% slower to 5% faster than the ops step, when it was off by
 * default); with SIMD and the changes of the steps (no split of the output
 * layer's gradient, the GRU's z/r weight gradients as dZ^T A), the fused step
 * was the faster one for both cells in interleaved runs (BENCHMARKS.md, part
 * `models`, rows "fused gate kernels off"). setFusedCellGates(false) gives the
 * ops path, the one every other backend runs. `cellRows` runs the same
 * arithmetic without the engine, into outputs the caller reuses (rnn-step.ts).
 *
 *  - `DptrainRnnHidden` (S = σ(2 z)): h = 2S − 1 into row block `step` of
 *    the stack Hs (T·B, H), A_{t+1} = [onehot, h, 1], and h into the h columns
 *    of row block `step` + 1 of the stack As (T·B, V+H+1); the stacks are
 *    inputs written in place;
 *  - `DptrainRnnBackward`: dz = dh ⊙ (1 − h²) (h from Hs), dh the recurrence's
 *    share plus the output layer's (one (T·B, H) matMul for all steps, its row
 *    block `step`), into its output and row block `step` of the stack dZ;
 *  - `DptrainGruReset` (S_zr = [σ(z_z), σ(z_r)]): A'_t = [onehot(x_t), r ⊙ h_{t-1}, 1];
 *  - `DptrainGruHidden` (S_h = σ(2 z_h)): h~ = 2S_h − 1, h = h~ + z ⊙ (h_{t-1} − h~), A_{t+1};
 *  - `DptrainGruBackward1`: dh (the recurrence's share plus the output
 *    layer's, as for the RNN) and da_h = dh ⊙ (1 − z)(1 − h~²);
 *  - `DptrainGruBackward2` (drh = da_h W_hh^T): [dz_z, dz_r] and dh ⊙ z + drh ⊙ r.
 */
import * as tf from '@tensorflow/tfjs';
import { add, input, mul, num, simdRows, sub, type Expr, type Operand, type RowProgram } from './simd-rows.js';

interface WasmBackendLike {
  dataIdMap: { get(dataId: object): { memoryOffset: number } };
  makeOutput(shape: number[], dtype: 'float32'): tf.TensorInfo;
  wasm: { HEAPF32: Float32Array };
}

let enabled = true;

/** Use the fused RNN/GRU kernels on wasm (on by default: see above), or not. */
export function setFusedCellGates(on: boolean): void {
  enabled = on;
}

export function fusedCellGatesActive(): boolean {
  return enabled && tf.getBackend() === 'wasm';
}

type Body = (ins: Float32Array[], outs: Float32Array[], B: number, H: number, V: number, ids: ArrayLike<number> | null, step: number) => void;
type At = (t: tf.TensorInfo, column?: number, row?: number) => Operand;

/**
 * The same arithmetic as a SIMD program (simd-rows.ts), used where H is a multiple of 4:
 * its operands (inputs, then outputs) as column blocks; `aOut`, an output A = [onehot, h, 1]
 * whose one-hot and constant columns JavaScript writes.
 */
interface Simd {
  program: RowProgram;
  operands: (at: At, ins: tf.TensorInfo[], outs: tf.TensorInfo[], B: number, H: number, V: number, step: number) => Operand[];
  aOut?: number;
}

interface RowsDef {
  outWidths: (H: number, V: number) => number[];
  body: Body;
  simd?: Simd;
}

/** Runs a definition over given inputs and outputs (wasm tensors; the first input's rows give B). */
function runRows(def: RowsDef, backend: WasmBackendLike, list: tf.TensorInfo[], outs: tf.TensorInfo[], H: number, V: number, ids: ArrayLike<number> | null, step: number): void {
  const B = list[0].shape[0];
  const heap = backend.wasm.HEAPF32; // after the allocations: the heap may have grown
  const view = (t: tf.TensorInfo) => {
    const off = backend.dataIdMap.get(t.dataId).memoryOffset >>> 2;
    return heap.subarray(off, off + t.shape.reduce((a, b) => a * b, 1));
  };
  const simd = def.simd;
  const kernel = simd && H % 4 === 0 ? simdRows(backend, simd.program) : null;
  if (kernel && simd) {
    if (simd.aOut !== undefined) {
      const a = view(outs[simd.aOut]);
      for (let r = 0; r < B; r++) writeA(a, r, H, V, ids);
    }
    const at: At = (t, column = 0, row = 0) => [backend.dataIdMap.get(t.dataId).memoryOffset + 4 * (row * t.shape[1] + column), 4 * t.shape[1]];
    kernel(simd.operands(at, list, outs, B, H, V, step), B, H);
    return;
  }
  def.body(list.map(view), outs.map(view), B, H, V, ids, step);
}

/** A kernel over float32 inputs whose first input's shape gives B, with outputs of the given widths. */
function heapKernel(outWidths: (H: number, V: number) => number[], body: Body, simd?: Simd): RowsDef {
  return { outWidths, body, simd };
}

function kernelFunc(def: RowsDef): tf.KernelFunc {
  return (({ inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: WasmBackendLike; attrs: tf.NamedAttrMap }) => {
    const list = Object.values(inputs) as tf.TensorInfo[];
    const [H, V] = [attrs.hidden as number, attrs.vocab as number];
    const outs = def.outWidths(H, V).map((w) => backend.makeOutput([list[0].shape[0], w], 'float32'));
    runRows(def, backend, list, outs, H, V, (attrs.ids as ArrayLike<number> | null) ?? null, (attrs.step as number | undefined) ?? 0);
    return outs;
  }) as unknown as tf.KernelFunc;
}

const twice = (e: Expr) => sub(mul(num(2), e), num(1)); // 2x − 1: tanh from a sigmoid of the doubled argument

/** Row r of an A = [onehot(ids), h, 1] output (B, V+H+1), h from `hOf`. */
function writeA(a: Float32Array, r: number, H: number, V: number, ids: ArrayLike<number> | null): number {
  const row = r * (V + H + 1);
  a.fill(0, row, row + V);
  if (ids) a[row + ids[r]] = 1;
  a[row + V + H] = 1;
  return row + V;
}

const KERNELS: Record<string, RowsDef> = {
  DptrainRnnHidden: heapKernel(
    (H, V) => [V + H + 1],
    ([S, Hs, As], [a], B, H, V, ids, step) => {
      const R = V + H + 1;
      const last = (step + 1) * B * R >= As.length;
      for (let r = 0; r < B; r++) {
        const at = writeA(a, r, H, V, ids);
        const hs = (step * B + r) * H;
        const next = ((step + 1) * B + r) * R + V;
        for (let j = 0, k = r * H; j < H; j++, k++) {
          const h = 2 * S[k] - 1;
          a[at + j] = Hs[hs + j] = h;
          if (!last) As[next + j] = h;
        }
      }
    },
    {
      program: { inputs: 1, lets: [twice(input(0))], outputs: [{ let: 0 }, { let: 0 }, { let: 0 }] },
      // The last step has no next row block in As: its third operand repeats the second.
      operands: (at, [S, Hs, As], [a], B, H, V, step) => [at(S), at(Hs, 0, step * B), at(a, V), (step + 1) * B < As.shape[0] ? at(As, V, (step + 1) * B) : at(a, V)],
      aOut: 0,
    },
  ),
  DptrainRnnBackward: heapKernel(
    (H) => [H],
    ([dhRec, Hs, dOut, dZ], [dz], B, H, V, ids, step) => {
      const base = step * B * H;
      for (let k = 0; k < B * H; k++) {
        const d = dhRec[k] + dOut[base + k];
        const h = Hs[base + k];
        dz[k] = dZ[base + k] = d - d * h * h;
      }
    },
    {
      program: { inputs: 3, lets: [add(input(0), input(2)), sub({ let: 0 }, mul({ let: 0 }, input(1), input(1)))], outputs: [{ let: 1 }, { let: 1 }] },
      operands: (at, [dhRec, Hs, dOut, dZ], [dz], B, H, V, step) => [at(dhRec), at(Hs, 0, step * B), at(dOut, 0, step * B), at(dz), at(dZ, 0, step * B)],
    },
  ),
  DptrainGruReset: heapKernel(
    (H, V) => [V + H + 1],
    ([S, hp], [a], B, H, V, ids) => {
      for (let r = 0; r < B; r++) {
        const at = writeA(a, r, H, V, ids);
        for (let j = 0, k = r * H; j < H; j++, k++) a[at + j] = S[2 * H * r + H + j] * hp[k];
      }
    },
    { program: { inputs: 2, lets: [], outputs: [mul(input(0), input(1))] }, operands: (at, [S, hp], [a], B, H, V) => [at(S, H), at(hp), at(a, V)], aOut: 0 },
  ),
  DptrainGruHidden: heapKernel(
    (H, V) => [H, V + H + 1],
    ([S, Sh, hp], [h, a], B, H, V, ids) => {
      for (let r = 0; r < B; r++) {
        const at = writeA(a, r, H, V, ids);
        for (let j = 0, k = r * H; j < H; j++, k++) {
          const ht = 2 * Sh[k] - 1;
          a[at + j] = h[k] = ht + S[2 * H * r + j] * (hp[k] - ht);
        }
      }
    },
    {
      program: { inputs: 3, lets: [twice(input(1)), add({ let: 0 }, mul(input(0), sub(input(2), { let: 0 })))], outputs: [{ let: 1 }, { let: 1 }] },
      operands: (at, [S, Sh, hp], [h, a], B, H, V) => [at(S), at(Sh), at(hp), at(h), at(a, V)],
      aOut: 1,
    },
  ),
  DptrainGruBackward1: heapKernel(
    (H) => [H, H],
    ([S, Sh, dhRec, dOut], [da, dh], B, H, V, ids, step) => {
      const base = step * B * H;
      for (let r = 0; r < B; r++) {
        for (let j = 0, k = r * H; j < H; j++, k++) {
          const d = dhRec[k] + dOut[base + k];
          const ht = 2 * Sh[k] - 1;
          const omz = 1 - S[2 * H * r + j];
          dh[k] = d;
          da[k] = d * (omz - omz * ht * ht);
        }
      }
    },
    {
      // lets: d, h~, 1 − z
      program: { inputs: 4, lets: [add(input(2), input(3)), twice(input(1)), sub(num(1), input(0))], outputs: [mul({ let: 0 }, sub({ let: 2 }, mul({ let: 2 }, { let: 1 }, { let: 1 }))), { let: 0 }] },
      operands: (at, [S, Sh, dhRec, dOut], [da, dh], B, H, V, step) => [at(S), at(Sh), at(dhRec), at(dOut, 0, step * B), at(da), at(dh)],
    },
  ),
  DptrainGruBackward2: heapKernel(
    (H) => [2 * H, H],
    ([dh, drh, S, Sh, hp], [cat, direct], B, H) => {
      for (let r = 0; r < B; r++) {
        const row = r * 2 * H;
        for (let j = 0, k = r * H; j < H; j++, k++) {
          const z = S[2 * H * r + j];
          const rr = S[2 * H * r + H + j];
          const ht = 2 * Sh[k] - 1;
          cat[row + j] = dh[k] * (hp[k] - ht) * (z - z * z);
          cat[row + H + j] = drh[k] * hp[k] * (rr - rr * rr);
          direct[k] = dh[k] * z + drh[k] * rr;
        }
      }
    },
    {
      program: (() => {
        const [dh, drh, z, rr, sh, hp] = [0, 1, 2, 3, 4, 5].map(input);
        const outputs = [mul(dh, sub(hp, { let: 0 }), sub(z, mul(z, z))), mul(drh, hp, sub(rr, mul(rr, rr))), add(mul(dh, z), mul(drh, rr))];
        return { inputs: 6, lets: [twice(sh)], outputs };
      })(),
      operands: (at, [dh, drh, S, Sh, hp], [cat, direct], B, H) => [at(dh), at(drh), at(S), at(S, H), at(Sh), at(hp), at(cat), at(cat, H), at(direct)],
    },
  ),
  // a + b, for the GRU's dh_{t-1} = (dh ⊙ z + drh ⊙ r) + [dz_z, dz_r] x [W_hz^T; W_hr^T] (rnn-step.ts's loops call it without the engine).
  DptrainAdd: heapKernel(
    (H) => [H],
    ([a, b], [sum], B, H) => {
      for (let k = 0; k < B * H; k++) sum[k] = a[k] + b[k];
    },
    { program: { inputs: 2, lets: [], outputs: [add(input(0), input(1))] }, operands: (at, [a, b], [sum]) => [at(a), at(b), at(sum)] },
  ),
};

let registered = false;

/** Run one of this file's kernels (registering them on first use). Wasm backend only. */
export function cellKernel(name: keyof typeof KERNELS, inputs: Record<string, tf.Tensor>, hidden: number, vocab: number, ids: ArrayLike<number> | null = null, step = 0): tf.Tensor2D[] {
  if (!registered) {
    registered = true;
    for (const [kernelName, def] of Object.entries(KERNELS)) if (!tf.getKernel(kernelName, 'wasm')) tf.registerKernel({ kernelName, backendName: 'wasm', kernelFunc: kernelFunc(def) });
  }
  return tf.engine().runKernel(name, inputs, { hidden, vocab, ids, step } as unknown as tf.NamedAttrMap) as tf.Tensor2D[];
}

/**
 * The same arithmetic without the engine, into outputs the caller made (and may reuse from
 * step to step): for loops that call the backend directly (wasm-calls.ts).
 */
export function cellRows(name: keyof typeof KERNELS, inputs: tf.Tensor[], outputs: tf.Tensor[], hidden: number, vocab: number, ids: ArrayLike<number> | null = null, step = 0): void {
  runRows(KERNELS[name], tf.backend() as unknown as WasmBackendLike, inputs, outputs, hidden, vocab, ids, step);
}

/** out[at..] = a wasm tensor's values, copied once (dataSync copies them out of wasm memory first). */
export function readInto(x: tf.Tensor, out: Float32Array, at: number): void {
  const backend = tf.backend() as unknown as WasmBackendLike;
  const from = backend.dataIdMap.get(x.dataId).memoryOffset >>> 2;
  out.set(backend.wasm.HEAPF32.subarray(from, from + x.size), at);
}

/** x (rows, W) into rows [row0, row0 + rows) of dst (·, W), one copy within wasm memory: a step's block of a stack over time. */
export function copyRowsInto(x: tf.Tensor, dst: tf.Tensor, row0: number): void {
  const backend = tf.backend() as unknown as WasmBackendLike;
  const from = backend.dataIdMap.get(x.dataId).memoryOffset >>> 2;
  const to = (backend.dataIdMap.get(dst.dataId).memoryOffset >>> 2) + row0 * x.shape[1]!;
  backend.wasm.HEAPF32.copyWithin(to, from, from + x.size);
}

/**
 * Rows [row0, row0 + rows) of a wasm tensor as a new tensor, one copy within the backend's
 * memory (the backend's Slice reads its whole input out of memory first).
 */
export function rowBlock(x: tf.Tensor2D, row0: number, rows: number): tf.Tensor2D {
  const backend = tf.backend() as unknown as WasmBackendLike;
  const W = x.shape[1];
  const out = backend.makeOutput([rows, W], 'float32');
  const from = backend.dataIdMap.get(x.dataId).memoryOffset >>> 2;
  const heap = backend.wasm.HEAPF32; // after the allocation: the heap may have grown
  heap.copyWithin(backend.dataIdMap.get(out.dataId).memoryOffset >>> 2, from + row0 * W, from + (row0 + rows) * W);
  return tf.engine().makeTensorFromTensorInfo(out) as tf.Tensor2D;
}

/** Copy columns [c0, c0 + width) of a row-major (rows, W) matrix into a contiguous (rows, width) block of `out` at `base`. */
export function scatterColumns(G: Float32Array, rows: number, W: number, c0: number, width: number, out: Float32Array, base: number): void {
  for (let a = 0; a < rows; a++) out.set(G.subarray(a * W + c0, a * W + c0 + width), base + a * width);
}
