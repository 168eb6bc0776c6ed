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
 * of A_t = [onehot(x_t), h_{t-1}] (B, V+H) with [W_xg; W_hg] (V+H, H), and each
 * gate's weight gradient is one matMul over all time steps, A^T dZ_g.
 *
 * Shapes: B = rows (streams in this shard), T = numSteps, H = hidden, V = vocab.
 * Tensors built over all steps are time-major: row t*B + r is stream r at time t.
 */
import * as tf from '@tensorflow/tfjs';
import { GATES, paramLayout, type ModelDims, type ParamName } from './params.js';

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
  /** Per gate i, f, o, c: [W_xg; W_hg] (V+H, H) and b_g (H). */
  wcat: tf.Tensor2D[];
  bias: tf.Tensor1D[];
  /** [W_hi^T; W_hf^T; W_ho^T; W_hc^T] (4H, H): dh_{t-1} = dZ_t (B,4H) x this. */
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

export function makeStepParams(flat: Float32Array, dims: ModelDims): StepParams {
  const { vocabSize: V, hidden: H } = dims;
  const at = new Map(paramLayout(dims).map((p) => [p.name, p]));
  const view = (n: ParamName, len: number) => flat.subarray(at.get(n)!.offset, at.get(n)!.offset + len);
  const t = tf.tidy(() => {
    const wcat = GATES.map((g) => tf.tensor2d(view(`W_x${g}` as ParamName, (V + H) * H), [V + H, H]));
    const bias = GATES.map((g) => tf.tensor1d(view(`b_${g}` as ParamName, H)));
    const whT = tf.concat(GATES.map((g) => tf.transpose(tf.tensor2d(view(`W_h${g}` as ParamName, H * H), [H, H]))), 0) as tf.Tensor2D;
    const whq = tf.tensor2d(view('W_hq', H * V), [H, V]);
    const bq = tf.tensor1d(view('b_q', V));
    return { wcat, bias, whT, whq, bq, whqT: tf.transpose(whq) as tf.Tensor2D };
  });
  return { dims, ...t };
}

export function disposeStepParams(p: StepParams): void {
  tf.dispose([...p.wcat, ...p.bias, p.whT, p.whq, p.bq, p.whqT]);
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
export function lstmStep(p: StepParams, batch: Batch, state: LstmState): StepResult {
  const dims = p.dims;
  checkBatch(batch, state, dims);
  const { rows: B, numSteps: T } = batch;
  const V = dims.vocabSize;

  const out = tf.tidy(() => {
    let h: tf.Tensor = state.h;
    let c: tf.Tensor = state.c;
    const As: tf.Tensor[] = []; // [onehot(x_t), h_{t-1}]  (B, V+H)
    const cPrev: tf.Tensor[] = [];
    const gi: tf.Tensor[] = [];
    const gf: tf.Tensor[] = [];
    const go: tf.Tensor[] = [];
    const gc: tf.Tensor[] = [];
    const tcs: tf.Tensor[] = [];
    const hs: tf.Tensor[] = [];
    for (let t = 0; t < T; t++) {
      const A = tf.concat([tf.tensor2d(oneHotAt(batch, t, V), [B, V]), h], 1);
      const z = (k: number) => tf.add(tf.matMul(A, p.wcat[k]), p.bias[k]);
      const i = tf.sigmoid(z(0));
      const f = tf.sigmoid(z(1));
      const o = tf.sigmoid(z(2));
      const g = tf.tanh(z(3));
      As.push(A);
      cPrev.push(c);
      c = tf.add(tf.mul(f, c), tf.mul(i, g));
      const tc = tf.tanh(c);
      h = tf.mul(o, tc);
      gi.push(i);
      gf.push(f);
      go.push(o);
      gc.push(g);
      tcs.push(tc);
      hs.push(h);
    }

    // Output layer over all steps at once.
    const Hs = tf.concat(hs, 0); // (T*B, H)
    const logp = tf.logSoftmax(tf.add(tf.matMul(Hs, p.whq), p.bq));
    const yOneHot = tf.oneHot(tf.tensor1d(toTimeMajor(batch.y, B, T), 'int32'), V).asType('float32');
    const lossSum = tf.neg(tf.sum(tf.mul(yOneHot, logp)));
    // d(sum of -log p_y)/d logits = softmax - onehot(y)
    const dLogits = tf.sub(tf.exp(logp), yOneHot); // (T*B, V)
    const dWhq = tf.matMul(tf.transpose(Hs), dLogits);
    const dbq = tf.sum(dLogits, 0);
    const dLogitsT = tf.split(dLogits, T, 0); // small (B, V) pieces: cheap to split

    const one = tf.scalar(1);
    const dz: tf.Tensor[][] = [[], [], [], []];
    let dhNext: tf.Tensor | null = null;
    let dcNext: tf.Tensor | null = null;
    for (let t = T - 1; t >= 0; t--) {
      const i = gi[t], f = gf[t], o = go[t], g = gc[t], tc = tcs[t];
      const dhOut = tf.matMul(dLogitsT[t], p.whqT);
      const dh: tf.Tensor = dhNext ? tf.add(dhOut, dhNext) : dhOut;
      const dcFromH = tf.mul(tf.mul(dh, o), tf.sub(one, tf.square(tc)));
      const dc: tf.Tensor = dcNext ? tf.add(dcFromH, dcNext) : dcFromH;
      const dzi = tf.mul(tf.mul(dc, g), tf.mul(i, tf.sub(one, i)));
      const dzf = tf.mul(tf.mul(dc, cPrev[t]), tf.mul(f, tf.sub(one, f)));
      const dzo = tf.mul(tf.mul(dh, tc), tf.mul(o, tf.sub(one, o)));
      const dzc = tf.mul(tf.mul(dc, i), tf.sub(one, tf.square(g)));
      dz[0][t] = dzi;
      dz[1][t] = dzf;
      dz[2][t] = dzo;
      dz[3][t] = dzc;
      dcNext = tf.mul(dc, f);
      if (t > 0) dhNext = tf.matMul(tf.concat([dzi, dzf, dzo, dzc], 1), p.whT);
    }

    const AT = tf.transpose(tf.concat(As, 0)); // (V+H, T*B)
    const parts: tf.Tensor[] = [];
    for (let k = 0; k < 4; k++) {
      const dZ = tf.concat(dz[k], 0); // (T*B, H)
      parts.push(tf.reshape(tf.matMul(AT, dZ), [-1]), tf.sum(dZ, 0)); // [dW_xg; dW_hg], db_g
    }
    parts.push(tf.reshape(dWhq, [-1]), dbq);
    return { grad: tf.concat(parts, 0), lossSum, h: h as tf.Tensor2D, c: c as tf.Tensor2D };
  });

  const grad = out.grad.dataSync() as Float32Array;
  const lossSum = out.lossSum.dataSync()[0];
  tf.dispose([out.grad, out.lossSum]);
  return { grad: new Float32Array(grad), lossSum, tokenCount: B * T, state: { h: out.h, c: out.c } };
}
