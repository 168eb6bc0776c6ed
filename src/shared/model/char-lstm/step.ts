/**
 * One training step of the char-LSTM with a hand-derived backward pass through time.
 *
 * Pure: (params, batch, carried state) -> (gradient SUM, loss sum, token count, new state).
 * It returns sums, not means, so that shards of streams computed on different
 * workers add up to exactly the full batch's gradient.
 *
 * Why not tfjs autodiff: through 35 unrolled steps it records hundreds of small
 * kernels, and on the wasm backend matMul with a transpose flag is ~40x slower
 * than an explicit transpose + matMul, while slice/split/gather copy their whole
 * input. Here no tensor is ever sliced by columns: each gate is its own matMul
 * of A_t = [onehot(x_t), h_{t-1}, 1] (B, V+H+1) with [W_xg; W_hg; b_g]
 * (V+H+1, H), which is one contiguous block of the flat parameter vector, so
 * the bias needs no add in the forward pass and no sum in the backward pass:
 * each gate's whole gradient block is one matMul over all time steps, A^T dZ_g.
 *
 * Elementwise work is what is left to save once the matMuls are as few and as
 * large as the recurrence allows (see BENCHMARKS.md, part `step`):
 *  - tanh is 2·sigmoid(2x) − 1: on wasm a Tanh kernel costs several Sigmoids.
 *    The candidate gate's weights are doubled once per parameter version, so
 *    its activation is a plain sigmoid of the matMul;
 *  - the output layer's contribution to dh_t: in the fused path one matMul
 *    for all steps, dLogits W_hq^T, whose row blocks the backward kernel adds
 *    (so neither the recurrence matMul nor the weight gradients' carry V
 *    extra columns, and nothing is split: a split on wasm copies its whole
 *    input per piece); in the ops path it rides along in the recurrence
 *    matMul, [dZ_{t+1}, dLogits_t] x [W_h^T; W_hq^T];
 *  - the weight gradients are dZ^T A in the fused path: wasm's matMul packs
 *    its second operand afresh on every call unless that tensor is reused,
 *    and A (T·B, V+H+1) is a quarter of dZ (T·B, 4H);
 *  - the gates' derivative factors are computed in the forward pass from the
 *    values at hand, so the backward pass is a few multiplies per gate.
 *
 * On the wasm backend the four gates are one matMul per time step and the
 * gate arithmetic is a few custom kernels (kernels/lstm-gates.ts), which also
 * build the next A_t and the recurrence matMul's concatenated input;
 * elsewhere the same arithmetic runs as tfjs ops (opsTidy).
 *
 * Shapes: B = rows (streams in this shard), T = numSteps, H = hidden, V = vocab.
 * Tensors built over all steps are time-major: row t*B + r is stream r at time t.
 */
import * as tf from '@tensorflow/tfjs';
import { GATES, paramLayout, type ModelDims, type ParamName } from './params.js';
import { fusedGatesActive, lstmGatesBackward, lstmGatesForward, type GatesForward } from '../kernels/lstm-gates.js';
import { softmaxCrossEntropy } from '../kernels/softmax-xent.js';
import { besideInto, copyInto, doubleColumnsInPlace, filledTensors, transposed, transposedBlock, transposedRowsInto, transposedTensor } from '../host-tensors.js';

export interface Batch {
  /** Inputs, row-major (rows x numSteps). */
  x: Int32Array;
  /** Targets, row-major (rows x numSteps). */
  y: Int32Array;
  rows: number;
  numSteps: number;
}

export interface LstmState {
  h: tf.Tensor2D; // (B, H)
  c: tf.Tensor2D; // (B, H)
}

/** Tensors the step needs, made once per parameter version. */
export interface StepParams {
  dims: ModelDims;
  /**
   * Per gate i, f, o, c: [W_xg; W_hg; b_g] (V+H+1, H), straight from the flat
   * vector; the candidate gate's block is doubled (tanh(z) = 2·sigmoid(2z) − 1).
   * The ops path's; made from `wall` on first use where params made for the fused path meet the ops path.
   */
  wcat: tf.Tensor2D[] | null;
  /** The four blocks side by side (V+H+1, 4H): the fused path's one matMul per step; likewise made from `wcat` when needed. */
  wall: tf.Tensor2D | null;
  /** [W_hi^T; W_hf^T; W_ho^T; W_hc^T] (4H, H): dh_{t-1} = dZ_t x this + dLogits_{t-1} W_hq^T. */
  whT: tf.Tensor2D;
  whq: tf.Tensor2D; // (H, V)
  bq: tf.Tensor1D; // (V)
  whqT: tf.Tensor2D; // (V, H)
}

export interface StepResult {
  /** Gradient sum over all rows and steps, in the flat parameter layout. */
  grad: Float32Array;
  lossSum: number;
  tokenCount: number;
  state: LstmState;
}

/**
 * Every tensor is written in one pass over `flat` and uploaded once (host-tensors.ts), no tfjs op.
 * Fused path (wasm): the gate blocks go side by side into `wall` as they are; W_h^T is transposed
 * out of wall's W_h rows (SIMD, no second copy of W_h), then the candidate's block is doubled in place.
 */
export function makeStepParams(flat: Float32Array, dims: ModelDims): StepParams {
  const { vocabSize: V, hidden: H } = dims;
  const at = new Map(paramLayout(dims).map((p) => [p.name, p]));
  const view = (n: ParamName, len: number) => flat.subarray(at.get(n)!.offset, at.get(n)!.offset + len);
  const R = V + H + 1;
  const blocks = GATES.map((g) => view(`W_x${g}` as ParamName, R * H));
  const fused = fusedGatesActive();
  const whRows = () => transposedTensor(GATES.map((g) => view(`W_h${g}` as ParamName, H * H)), H, H);
  const t = filledTensors([[H, V], [V], ...(fused ? [[R, 4 * H]] : GATES.map(() => [R, H]))], [
    (o) => copyInto(o, view('W_hq', H * V)),
    (o) => copyInto(o, view('b_q', V)),
    ...(fused ? [(o: Float32Array) => besideInto(o, blocks, R, [H, H, H, H], [false, false, false, false])] : blocks.map((b, k) => (o: Float32Array) => copyInto(o, b, 0, GATES[k] === 'c'))),
  ]);
  const [whq, bq] = t as [tf.Tensor2D, tf.Tensor1D];
  const gates = t.slice(2) as tf.Tensor2D[];
  const whT = (fused ? transposedBlock(gates[0], V, H, 0, 4 * H) : null) ?? whRows();
  if (fused) doubleColumnsInPlace(gates[0], 3 * H, H);
  const whqT = transposedTensor([view('W_hq', H * V)], H, V);
  return { dims, whT, whq, bq, whqT, wall: fused ? gates[0] : null, wcat: fused ? null : gates };
}

/** The form of the gate blocks the other path needs (the same values), kept with the params: made for one path, run on the other. */
function gateTensors(p: StepParams, fused: boolean): void {
  if (fused && !p.wall) p.wall = tf.concat(p.wcat!, 1) as tf.Tensor2D;
  if (!fused && !p.wcat) p.wcat = tf.split(p.wall!, 4, 1) as tf.Tensor2D[];
}

export function disposeStepParams(p: StepParams): void {
  tf.dispose([...(p.wcat ?? []), ...(p.wall ? [p.wall] : []), p.whT, p.whq, p.bq, p.whqT]);
}

export function zeroState(rows: number, hidden: number): LstmState {
  return { h: tf.zeros([rows, hidden]), c: tf.zeros([rows, hidden]) };
}

export function disposeState(s: LstmState): void {
  s.h.dispose();
  s.c.dispose();
}

/** (rows x T) row-major -> time-major flat indices. */
export function toTimeMajor(ids: Int32Array, rows: number, numSteps: number): Int32Array {
  const out = new Int32Array(rows * numSteps);
  for (let r = 0; r < rows; r++) {
    for (let t = 0; t < numSteps; t++) out[t * rows + r] = ids[r * numSteps + t];
  }
  return out;
}

/** One-hot rows (B, V) of the inputs at time t. */
function oneHotAt(batch: Batch, t: number, V: number): Float32Array {
  const out = new Float32Array(batch.rows * V);
  for (let r = 0; r < batch.rows; r++) out[r * V + batch.x[r * batch.numSteps + t]] = 1;
  return out;
}

function checkBatch(batch: Batch, state: LstmState, dims: ModelDims): void {
  const n = batch.rows * batch.numSteps;
  if (batch.x.length !== n || batch.y.length !== n) {
    throw new RangeError(`batch holds ${batch.x.length}/${batch.y.length} ids, expected rows*numSteps = ${n}`);
  }
  if (state.h.shape[0] !== batch.rows || state.h.shape[1] !== dims.hidden) {
    throw new RangeError(`state is [${state.h.shape}], expected [${batch.rows}, ${dims.hidden}]`);
  }
  for (let k = 0; k < n; k++) {
    if (!(batch.x[k] >= 0 && batch.x[k] < dims.vocabSize && batch.y[k] >= 0 && batch.y[k] < dims.vocabSize)) {
      throw new RangeError(`token id out of range [0, ${dims.vocabSize}) at ${k}`);
    }
  }
}

/**
 * Forward + backward. The caller owns the returned state tensors; the input
 * state and the params are not disposed.
 */
export function lstmStep(p: StepParams, batch: Batch, state: LstmState, gradOut?: Float32Array): StepResult {
  checkBatch(batch, state, p.dims);
  const fused = fusedGatesActive();
  // The lazily built gate tensors belong to the params, not to the step's tidy.
  gateTensors(p, fused);
  const out = fused ? fusedTidy(p, batch, state) : opsTidy(p, batch, state);
  // dataSync hands back an array the tensor no longer needs once disposed (a
  // copy on wasm and tensorflow, the cpu backend's own buffer, which it drops).
  const grad = out.gates ? fusedFlatGrad(p.dims, out.gates, out.grad, gradOut) : (out.grad.dataSync() as Float32Array);
  const lossSum = out.lossSum.dataSync()[0];
  tf.dispose([out.grad, out.lossSum, ...(out.gates ? [out.gates] : [])]);
  return { grad, lossSum, tokenCount: batch.rows * batch.numSteps, state: { h: out.h, c: out.c } };
}

interface TidyOut {
  /** The flat gradient (ops path), or only [dW_hq, db_q] (fused path). */
  grad: tf.Tensor;
  /** Fused path: [dZ_i, dZ_f, dZ_o, dZ_c]^T A (4H, V+H+1). */
  gates?: tf.Tensor;
  lossSum: tf.Tensor;
  h: tf.Tensor2D;
  c: tf.Tensor2D;
}

/** The output layer over all steps at once: loss sum, dW_hq, db_q and dLogits per step. */
function outputLayer(p: StepParams, batch: Batch, hs: tf.Tensor[]) {
  const { rows: B, numSteps: T } = batch;
  const V = p.dims.vocabSize;
  const Hs = tf.concat(hs, 0); // (T*B, H)
  const logp = tf.logSoftmax(tf.add(tf.matMul(Hs, p.whq), p.bq));
  const yOneHot = tf.oneHot(tf.tensor1d(toTimeMajor(batch.y, B, T), 'int32'), V).asType('float32');
  const lossSum = tf.neg(tf.sum(tf.mul(yOneHot, logp)));
  // d(sum of -log p_y)/d logits = softmax - onehot(y)
  const dLogits = tf.sub(tf.exp(logp), yOneHot); // (T*B, V)
  const dWhq = tf.matMul(tf.transpose(Hs), dLogits);
  const dbq = tf.sum(dLogits, 0);
  return { lossSum, dWhq, dbq, dLogits };
}

/** [dW_xg; dW_hg; db_g] per gate (one matMul over all steps each), then dW_hq and db_q: the flat layout. */
function flatGrad(As: tf.Tensor[], dz: tf.Tensor[][], dWhq: tf.Tensor, dbq: tf.Tensor): tf.Tensor {
  const AT = tf.transpose(tf.concat(As, 0)); // (V+H+1, T*B)
  const parts: tf.Tensor[] = [];
  for (let k = 0; k < 4; k++) parts.push(tf.reshape(tf.matMul(AT, tf.concat(dz[k], 0)), [-1]));
  parts.push(tf.reshape(dWhq, [-1]), dbq);
  return tf.concat(parts, 0);
}

/** The flat gradient from the fused path's transposed gate gradients (4H, V+H+1) and [dW_hq, db_q]. */
function fusedFlatGrad(dims: ModelDims, gates: tf.Tensor, rest: tf.Tensor, out?: Float32Array): Float32Array {
  const layout = paramLayout(dims);
  const n = layout.at(-1)!.offset + layout.at(-1)!.size;
  // Every value is written below: the four gate blocks, then W_hq and b_q.
  const grad = out?.length === n ? out : new Float32Array(n);
  // [W_xg; W_hg; b_g] is one (V+H+1, H) block starting at W_xg; gates holds its transpose at rows kH..kH+H.
  GATES.forEach((g, k) => transposedRowsInto(gates as tf.Tensor2D, k * dims.hidden, dims.hidden, grad, layout.find((b) => b.name === `W_x${g}`)!.offset));
  grad.set(rest.dataSync() as Float32Array, layout.find((b) => b.name === 'W_hq')!.offset);
  return grad;
}

function idsAt(batch: Batch, t: number): number[] {
  return Array.from({ length: batch.rows }, (_, r) => batch.x[r * batch.numSteps + t]);
}

/** The step with the fused gate kernels (wasm backend). */
function fusedTidy(p: StepParams, batch: Batch, state: LstmState): TidyOut {
  const { rows: B, numSteps: T } = batch;
  const V = p.dims.vocabSize;
  return tf.tidy(() => {
    let A = tf.concat([tf.tensor2d(oneHotAt(batch, 0, V), [B, V]), state.h, tf.ones([B, 1])], 1) as tf.Tensor2D;
    const wall = p.wall!; // (V+H+1, 4H): all four gates in one matMul
    let c = state.c;
    let h = state.h;
    const As: tf.Tensor[] = [];
    const hs: tf.Tensor[] = [];
    const saved: GatesForward[] = [];
    for (let t = 0; t < T; t++) {
      const g = lstmGatesForward(tf.matMul(A, wall) as tf.Tensor2D, c, V, t + 1 < T ? idsAt(batch, t + 1) : null);
      As.push(A);
      hs.push(g.h);
      saved.push(g.saved);
      A = g.aNext;
      c = g.c;
      h = g.h;
    }
    // The output layer over all steps: loss and dLogits in one kernel.
    const Hs = tf.concat(hs, 0);
    const { lossSum, dLogits, dBias: dbq } = softmaxCrossEntropy(tf.matMul(Hs, p.whq) as tf.Tensor2D, p.bq, toTimeMajor(batch.y, B, T));
    const dWhq = tf.matMul(transposed(Hs), dLogits);
    // The output layer's share of every dh_t at once: dLogits_t W_hq^T (T·B, H).
    const dOut = tf.matMul(dLogits, p.whqT) as tf.Tensor2D;
    const cats: tf.Tensor[] = [];
    let dhRec: tf.Tensor2D | null = null;
    let dc = tf.zeros([B, p.dims.hidden]) as tf.Tensor2D;
    for (let t = T - 1; t >= 0; t--) {
      const b = lstmGatesBackward(dhRec, dOut, t, dc, saved[t]);
      cats[t] = b.cat;
      dc = b.dcPrev;
      if (t > 0) dhRec = tf.matMul(b.cat, p.whT) as tf.Tensor2D;
    }
    // All four gates' weight gradients in one matMul over all time steps, transposed:
    // [dZ_i, dZ_f, dZ_o, dZ_c]^T A (4H, V+H+1). On wasm the matMul's second operand is
    // packed afresh on every call, and A (T·B, V+H+1) is a quarter of dZ's size.
    const gates = tf.matMul(transposed(tf.concat(cats, 0)), tf.concat(As, 0));
    return { grad: tf.concat([tf.reshape(dWhq, [-1]), dbq], 0), gates, lossSum, h, c };
  });
}

/** The step as tfjs ops (every backend but wasm). */
function opsTidy(p: StepParams, batch: Batch, state: LstmState): TidyOut {
  const { rows: B, numSteps: T } = batch;
  const V = p.dims.vocabSize;
  return tf.tidy(() => {
    const one = tf.scalar(1);
    const ones = tf.ones([B, 1]);
    let h: tf.Tensor = state.h;
    let c: tf.Tensor = state.c;
    const As: tf.Tensor[] = []; // [onehot(x_t), h_{t-1}, 1]  (B, V+H+1)
    const hs: tf.Tensor[] = [];
    // Per step, what the backward pass multiplies by (all (B, H)):
    const kc: tf.Tensor[] = []; // o ⊙ (1 − tanh(c)²): dh -> dc
    const ki: tf.Tensor[] = []; // g ⊙ i(1−i): dc -> dz_i
    const kf: tf.Tensor[] = []; // c_{t-1} ⊙ f(1−f): dc -> dz_f
    const ko: tf.Tensor[] = []; // tanh(c) ⊙ o(1−o): dh -> dz_o
    const kg: tf.Tensor[] = []; // i ⊙ (1−g²): dc -> dz_c
    const fs: tf.Tensor[] = []; // f: dc_t -> dc_{t-1}
    for (let t = 0; t < T; t++) {
      const A = tf.concat([tf.tensor2d(oneHotAt(batch, t, V), [B, V]), h, ones], 1);
      const i = tf.sigmoid(tf.matMul(A, p.wcat![0]));
      const f = tf.sigmoid(tf.matMul(A, p.wcat![1]));
      const o = tf.sigmoid(tf.matMul(A, p.wcat![2]));
      const sc = tf.sigmoid(tf.matMul(A, p.wcat![3]));
      const g = tf.sub(tf.add(sc, sc), one); // tanh(z_c)
      // x(1−x) as x − x², and y(1−x²) as y − y·x²: same-shape kernels, cheaper than a broadcast scalar.
      ki.push(tf.mul(g, tf.sub(i, tf.square(i))));
      kf.push(tf.mul(c, tf.sub(f, tf.square(f))));
      kg.push(tf.sub(i, tf.mul(i, tf.square(g))));
      c = tf.add(tf.mul(f, c), tf.mul(i, g));
      const s2 = tf.sigmoid(tf.add(c, c));
      const tc = tf.sub(tf.add(s2, s2), one); // tanh(c)
      kc.push(tf.sub(o, tf.mul(o, tf.square(tc))));
      ko.push(tf.mul(tc, tf.sub(o, tf.square(o))));
      h = tf.mul(o, tc);
      As.push(A);
      fs.push(f);
      hs.push(h);
    }

    const { lossSum, dWhq, dbq, dLogits } = outputLayer(p, batch, hs);
    // Here the output layer's share of dh_t rides along in the recurrence matMul:
    // [dZ_{t+1}, dLogits_t] x [W_h^T; W_hq^T]. (On wasm a split copies its whole input per
    // piece, so the small dLogits is what gets split.)
    const dLogitsT = tf.split(dLogits, T, 0);
    const whOutT = tf.concat([p.whT, p.whqT], 0);
    const dz: tf.Tensor[][] = [[], [], [], []];
    let dh: tf.Tensor = tf.matMul(dLogitsT[T - 1], p.whqT);
    let dcNext: tf.Tensor | null = null;
    for (let t = T - 1; t >= 0; t--) {
      const dcFromH = tf.mul(dh, kc[t]);
      const dc: tf.Tensor = dcNext ? tf.add(dcFromH, dcNext) : dcFromH;
      const dzi = tf.mul(dc, ki[t]);
      const dzf = tf.mul(dc, kf[t]);
      const dzo = tf.mul(dh, ko[t]);
      const dzc = tf.mul(dc, kg[t]);
      dz[0][t] = dzi;
      dz[1][t] = dzf;
      dz[2][t] = dzo;
      dz[3][t] = dzc;
      if (t > 0) {
        dcNext = tf.mul(dc, fs[t]);
        dh = tf.matMul(tf.concat([dzi, dzf, dzo, dzc, dLogitsT[t - 1]], 1), whOutT);
      }
    }
    return { grad: flatGrad(As, dz, dWhq, dbq), lossSum, h: h as tf.Tensor2D, c: c as tf.Tensor2D };
  });
}
