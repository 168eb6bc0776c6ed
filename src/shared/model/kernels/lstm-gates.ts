/**
 * Fused gate kernels for the LSTM step on the wasm backend.
 *
 * The hand-derived step (char-lstm/step.ts) spends most of what it does not
 * spend in matMuls on small elementwise kernels, each with a fixed cost of
 * dispatch. The wasm backend keeps every tensor's data in its heap, so one
 * time step's gate arithmetic can be a single custom kernel (tf.registerKernel)
 * written in JavaScript over that heap:
 *
 *  - forward: the four gates are one matMul (B, 4H) and one backend sigmoid;
 *    `DptrainLstmCell` makes c_t (and 2 c_t for the backend's sigmoid, which
 *    gives tanh(c_t) = 2·σ(2 c_t) − 1), `DptrainLstmHidden` makes h_t and the
 *    next step's matMul input A_{t+1} = [onehot(x_{t+1}), h_t, 1];
 *  - backward (`DptrainLstmBackward`): from dh_t (the recurrence matMul's
 *    result plus the output layer's share, computed for all steps at once),
 *    dc_{t+1} and what the forward kept (the sigmoids, c_{t-1}), the
 *    recurrence matMul's input [dz_i, dz_f, dz_o, dz_c] and dc_t's share for
 *    step t−1.
 *
 * Transcendentals stay with the backend: in JavaScript an exp costs ~14 ns
 * and a tanh ~20 ns an element, several times the backend's SIMD sigmoid; a
 * first version that computed them in one kernel per time step (the gates
 * still four matMuls) took 118 ms a step at d2l sizes against the ops path's
 * 106 ms (load 0.5). This one (one gate matMul, sigmoids on the backend) took
 * 93 ms against the ops path's 103 ms at load 2.8; in part `models` on a much
 * busier machine (load 12 to 28) it was 10% and 2% faster and once 4% slower.
 * Its JavaScript loops cost about 18 ns an element (the backward kernel about
 * 200 µs a call at B = 32, H = 256), so where H is a multiple of 4 the same
 * arithmetic now runs as WebAssembly SIMD programs over the backend's memory
 * (simd-rows.ts; the backward kernel about 60 µs a call, load 3 to 7).
 *
 * Elementwise and row by row, so a shard of streams computes exactly what the
 * same rows compute in the full batch. The JavaScript loops compute in float64
 * and round to float32 on store, the SIMD programs in float32: neither is
 * bitwise the ops path, but every wasm worker runs the same code for the same
 * H. Other backends keep the ops path: `fusedGatesActive()` says which.
 */
import * as tf from '@tensorflow/tfjs';
import { add, input, mul, num, simdRows, sub, type Expr, type Operand, type RowProgram } from './simd-rows.js';

const CELL = 'DptrainLstmCell';
const HIDDEN = 'DptrainLstmHidden';
const BACKWARD = 'DptrainLstmBackward';

/** What the kernels use of the wasm backend (duck-typed: no import of the backend package here). */
interface WasmBackendLike {
  dataIdMap: { get(dataId: object): { memoryOffset: number } };
  makeOutput(shape: number[], dtype: 'float32'): tf.TensorInfo;
  wasm: { HEAPF32: Float32Array };
}

interface KernelArgs {
  inputs: tf.NamedTensorInfoMap;
  backend: unknown;
  attrs?: tf.NamedAttrMap;
}

let enabled = true;

/** Turn the fused paths (this file's and cell-gates.ts's) off, or on again, for comparisons; on by default where the backend allows it. */
export function setFusedGates(on: boolean): void {
  enabled = on;
}

/** Whether the step uses the fused kernels now: the wasm backend is active and the kernels are not switched off. */
export function fusedGatesActive(): boolean {
  return enabled && tf.getBackend() === 'wasm';
}

/** Output tensors of a kernel and float32 views of every input and output, taken after all allocations (the heap may grow). */
function allocate(backend: WasmBackendLike, inputs: tf.TensorInfo[], shapes: number[][]) {
  const outs = shapes.map((s) => backend.makeOutput(s, 'float32'));
  const heap = backend.wasm.HEAPF32;
  const view = (t: tf.TensorInfo) => {
    const off = backend.dataIdMap.get(t.dataId).memoryOffset >>> 2;
    return heap.subarray(off, off + t.shape.reduce((a, b) => a * b, 1));
  };
  const at = (t: tf.TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
  return { outs, ins: inputs.map(view), outViews: outs.map(view), at: (t: tf.TensorInfo, column = 0, row = 0): Operand => [at(t) + 4 * (row * t.shape[1] + column), 4 * t.shape[1]] };
}

const twice = (e: Expr) => sub(mul(num(2), e), num(1)); // 2x − 1: tanh from a sigmoid of the doubled argument
/** The kernels' arithmetic as SIMD programs (simd-rows.ts); the JavaScript loops below are the same arithmetic. */
const CELL_SIMD: RowProgram = (() => {
  const [si, sf, sc, c0] = [0, 1, 2, 3].map(input);
  return { inputs: 4, lets: [add(mul(sf, c0), mul(si, twice(sc)))], outputs: [{ let: 0 }, add({ let: 0 }, { let: 0 })] };
})();
const HIDDEN_SIMD: RowProgram = { inputs: 2, lets: [mul(input(0), twice(input(1)))], outputs: [{ let: 0 }, { let: 0 }] };
const backwardSimd = (rec: boolean): RowProgram => {
  const [dcn, si, sf, so, sc, c0, s2, dOut, dRec] = [0, 1, 2, 3, 4, 5, 6, 7, 8].map(input);
  const [g, tc, d, dc] = [0, 1, 2, 3].map((k) => ({ let: k }));
  return {
    inputs: rec ? 9 : 8,
    lets: [twice(sc), twice(s2), rec ? add(dRec, dOut) : dOut, add(mul(d, sub(so, mul(so, tc, tc))), dcn)],
    outputs: [mul(dc, sf), mul(dc, g, sub(si, mul(si, si))), mul(dc, c0, sub(sf, mul(sf, sf))), mul(d, tc, sub(so, mul(so, so))), mul(dc, sub(si, mul(si, g, g)))],
  };
};
const BACKWARD_SIMD = [backwardSimd(false), backwardSimd(true)];

/** c_t = f ⊙ c_{t-1} + i ⊙ g from the gates' sigmoids S = [σ(z_i), σ(z_f), σ(z_o), σ(2 z_c)] (B, 4H); also 2 c_t. */
function cellKernel({ inputs, backend }: KernelArgs): tf.TensorInfo[] {
  const { s, c } = inputs as Record<string, tf.TensorInfo>;
  const [B, H] = c.shape;
  const { outs, ins, outViews, at } = allocate(backend as WasmBackendLike, [s, c], [[B, H], [B, H]]);
  const simd = H % 4 === 0 ? simdRows(backend, CELL_SIMD) : null;
  if (simd) {
    simd([at(s, 0), at(s, H), at(s, 3 * H), at(c), at(outs[0]), at(outs[1])], B, H);
    return outs;
  }
  const [S, C0] = ins;
  const [cOut, c2] = outViews;
  for (let r = 0; r < B; r++) {
    const row = 4 * H * r;
    for (let j = 0, k = r * H; j < H; j++, k++) {
      const cn = S[row + H + j] * C0[k] + S[row + j] * (2 * S[row + 3 * H + j] - 1);
      cOut[k] = cn;
      c2[k] = cn + cn;
    }
  }
  return outs;
}

/** h_t = o ⊙ tanh(c_t) from S and s2 = σ(2 c_t), and the next step's A_{t+1} = [onehot(ids), h_t, 1]. */
function hiddenKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const { s, s2 } = inputs as Record<string, tf.TensorInfo>;
  const [B, H] = s2.shape;
  const V = attrs!.vocab as number;
  const next = attrs!.nextIds as number[] | null;
  const { outs, ins, outViews, at } = allocate(backend as WasmBackendLike, [s, s2], [[B, H], [B, V + H + 1]]);
  const [S, S2] = ins;
  const [hOut, aNext] = outViews;
  const W = V + H + 1;
  const simd = H % 4 === 0 ? simdRows(backend, HIDDEN_SIMD) : null;
  if (simd) {
    for (let r = 0; r < B; r++) {
      aNext.fill(0, r * W, r * W + V);
      if (next) aNext[r * W + next[r]] = 1;
      aNext[r * W + V + H] = 1;
    }
    simd([at(s, 2 * H), at(s2), at(outs[0]), at(outs[1], V)], B, H);
    return outs;
  }
  for (let r = 0; r < B; r++) {
    const rowA = r * W;
    const row = 4 * H * r;
    aNext.fill(0, rowA, rowA + V);
    if (next) aNext[rowA + next[r]] = 1;
    aNext[rowA + V + H] = 1;
    for (let j = 0, k = r * H; j < H; j++, k++) {
      const h = S[row + 2 * H + j] * (2 * S2[k] - 1);
      hOut[k] = h;
      aNext[rowA + V + j] = h;
    }
  }
  return outs;
}

/**
 * Backward through one time step's gates: from dh_t (the recurrence's part,
 * absent at the last step, plus row block `step` of dOut = dLogits W_hq^T, the
 * output layer's part for all steps at once), dc_{t+1} (the part of dc_t that
 * flows back from step t+1), S, c_{t-1} and s2: the gates' dz (with respect to
 * the undoubled pre-activations) [dz_i, dz_f, dz_o, dz_c] (B, 4H), the
 * recurrence matMul's input (the step also stacks these over time for the
 * weight gradients), and dc_{t-1}'s share f ⊙ dc_t.
 */
function backwardKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const { dcNext, s, c, s2, dOut, dhRec } = inputs as Record<string, tf.TensorInfo>;
  const [B, H] = dcNext.shape;
  const base = (attrs!.step as number) * B * H;
  const list = [dcNext, s, c, s2, dOut, ...(dhRec ? [dhRec] : [])];
  const { outs, ins, outViews, at } = allocate(backend as WasmBackendLike, list, [[B, H], [B, 4 * H]]);
  const simd = H % 4 === 0 ? simdRows(backend, BACKWARD_SIMD[dhRec ? 1 : 0]) : null;
  if (simd) {
    const step = attrs!.step as number;
    const [dcPrevT, catT] = outs;
    const ops = [at(dcNext), at(s, 0), at(s, H), at(s, 2 * H), at(s, 3 * H), at(c), at(s2), at(dOut, 0, step * B), ...(dhRec ? [at(dhRec)] : [])];
    simd([...ops, at(dcPrevT), at(catT, 0), at(catT, H), at(catT, 2 * H), at(catT, 3 * H)], B, H);
    return outs;
  }
  const [DCN, S, C0, S2, DO] = ins;
  const DR = dhRec ? ins[5] : null;
  const [dcPrev, cat] = outViews;
  const W = 4 * H;
  for (let r = 0; r < B; r++) {
    const row = r * W;
    for (let j = 0, k = r * H; j < H; j++, k++) {
      const i = S[row + j];
      const f = S[row + H + j];
      const o = S[row + 2 * H + j];
      const g = 2 * S[row + 3 * H + j] - 1;
      const tc = 2 * S2[k] - 1;
      const d = DR ? DR[k] + DO[base + k] : DO[base + k];
      const dc = d * (o - o * tc * tc) + DCN[k];
      dcPrev[k] = dc * f;
      cat[row + j] = dc * g * (i - i * i);
      cat[row + H + j] = dc * C0[k] * (f - f * f);
      cat[row + 2 * H + j] = d * tc * (o - o * o);
      cat[row + 3 * H + j] = dc * (i - i * g * g);
    }
  }
  return outs;
}

let registered = false;

function register(): void {
  if (registered) return;
  registered = true;
  for (const [kernelName, f] of [
    [CELL, cellKernel],
    [HIDDEN, hiddenKernel],
    [BACKWARD, backwardKernel],
  ] as const) {
    if (!tf.getKernel(kernelName, 'wasm')) tf.registerKernel({ kernelName, backendName: 'wasm', kernelFunc: f as unknown as tf.KernelFunc });
  }
}

/** What the backward pass needs of one time step. */
export interface GatesForward {
  /** [σ(z_i), σ(z_f), σ(z_o), σ(2 z_c)] (B, 4H). */
  s: tf.Tensor2D;
  /** c_{t-1} (B, H). */
  cPrev: tf.Tensor2D;
  /** σ(2 c_t) (B, H): tanh(c_t) = 2 s2 − 1. */
  s2: tf.Tensor2D;
}

/**
 * One time step forward from the gates' pre-activations z = A_t [W_i, W_f, W_o, 2 W_c] (B, 4H):
 * two sigmoids on the backend and two fused kernels. Wasm backend only.
 */
export function lstmGatesForward(z: tf.Tensor2D, cPrev: tf.Tensor2D, vocab: number, nextIds: number[] | null): { c: tf.Tensor2D; h: tf.Tensor2D; aNext: tf.Tensor2D; saved: GatesForward } {
  register();
  const s = tf.sigmoid(z) as tf.Tensor2D;
  const [c, c2] = tf.engine().runKernel(CELL, { s, c: cPrev }, {}) as tf.Tensor2D[];
  const s2 = tf.sigmoid(c2) as tf.Tensor2D;
  c2.dispose();
  const [h, aNext] = tf.engine().runKernel(HIDDEN, { s, s2 }, { vocab, nextIds } as unknown as tf.NamedAttrMap) as tf.Tensor2D[];
  return { c, h, aNext, saved: { s, cPrev, s2 } };
}

export interface GatesBackward {
  dcPrev: tf.Tensor2D;
  /** [dz_i, dz_f, dz_o, dz_c] (B, 4H). */
  cat: tf.Tensor2D;
}

/**
 * One time step's backward gate arithmetic, one kernel. dOut: dLogits W_hq^T
 * over all steps (T·B, H), of which rows [step·B, step·B + B) are this one's;
 * dhRec: dZ_{t+1} W_h^T (null at the last step). Wasm backend only.
 */
export function lstmGatesBackward(dhRec: tf.Tensor2D | null, dOut: tf.Tensor2D, step: number, dcNext: tf.Tensor2D, saved: GatesForward): GatesBackward {
  register();
  const inputs = { dcNext, s: saved.s, c: saved.cPrev, s2: saved.s2, dOut, ...(dhRec ? { dhRec } : {}) };
  const [dcPrev, cat] = tf.engine().runKernel(BACKWARD, inputs, { step }) as tf.Tensor2D[];
  return { dcPrev, cat };
}
