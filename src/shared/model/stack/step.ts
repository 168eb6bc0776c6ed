/**
 * One training step of a deep stack (lstm, gru or rnn cells; one-hot or
 * embedded inputs; dropout between layers) with a hand-derived backward pass
 * through time and through the layers. Same contract and performance rules as
 * the single-layer steps (char-lstm/step.ts, char-cells/step.ts): sums not
 * means; each gate one matMul of A_t = [x_t, h_{t-1}, 1] with its contiguous
 * [W_xg; W_hg; b_g] block; tanh as 2·sigmoid(2z) − 1 with the block doubled;
 * each block's weight gradient one matMul over all time steps; no slicing of
 * big tensors (time-major tensors are cut into steps through JS: stepsOf).
 *
 * Through the layers (layer l's output h^l_t, masked by m^l_t, is layer l+1's
 * input x^{l+1}_t): once layer l+1's backward pass has every time step's gate
 * gradients dZ_g (T*B, H), the gradient of its input for all steps is one
 * matMul, dX = [dZ_1 … dZ_G] x [W_x1^T; …; W_xG^T], then dX ⊙ M^l is the
 * external gradient of h^l_t that layer l's recurrence adds at each step (the
 * top layer's is dLogits x W_hq^T). With an embedding, layer 0's dX is added
 * into the rows of W_emb of the tokens read (in JS: a scatter-add of T*B rows).
 * Embedding lookups are done in JS from the flat parameters, not by a gather.
 *
 * Per-cell recurrences, with dh the total gradient of h_t (external + from t+1):
 *   rnn:  dz = dh ⊙ (1 − h²);  dh_{t-1} += dz W_hh^T
 *   gru:  as char-cells/step.ts (reset before the recurrent matMul)
 *   lstm: as char-lstm/step.ts
 *
 * Shapes: B rows, T steps, H hidden, V vocabulary, E embedding, G gates;
 * tensors over all steps are time-major (row t*B + r is row r at time t).
 */
import * as tf from '@tensorflow/tfjs';
import type { TokenBatch } from '../descriptor.js';
import { toTimeMajor } from '../char-lstm/step.js';
import { dropoutMasks } from './dropout.js';
import { copyInto, filledTensors, transposedTensor } from '../host-tensors.js';
import { blockIn, EMBEDDING_BLOCK, inputWidth, layerStateWidth, STACK_GATES, stackLayout, stackParamCount, viewOf, type StackDims } from './params.js';

interface LayerStepParams {
  /** Per gate [W_xg; W_hg; b_g] (in+H+1, H); the tanh gate's block doubled. */
  wcat: tf.Tensor2D[];
  /** The recurrence's W_h^T: lstm [W_hi^T; W_hf^T; W_ho^T; W_hc^T], gru [W_hz^T; W_hr^T], rnn W_hh^T. */
  whT: tf.Tensor2D;
  /** gru only: W_hh^T. */
  whhT: tf.Tensor2D | null;
  /** [W_x1^T; …; W_xG^T] (G*H, in), where the input's gradient is needed (layers above 0, or an embedding). */
  wxT: tf.Tensor2D | null;
}

export interface StackStepParams {
  dims: StackDims;
  dropout: number;
  seed: number;
  layers: LayerStepParams[];
  whq: tf.Tensor2D;
  bq: tf.Tensor1D;
  whqT: tf.Tensor2D;
  /** A copy of W_emb (V*E), for lookups in JS; null with one-hot inputs. */
  emb: Float32Array | null;
}

export function makeStackStepParams(flat: Float32Array, dims: StackDims, o: { dropout: number; seed: number }): StackStepParams {
  const blocks = stackLayout(dims);
  if (flat.length !== stackParamCount(dims)) throw new RangeError(`params hold ${flat.length} values, the stack needs ${stackParamCount(dims)}`);
  const { vocabSize: V, hidden: H } = dims;
  const gates = STACK_GATES[dims.cell];
  const tanhGate = gates[gates.length - 1];
  // Written in one pass over `flat`, each tensor uploaded once, no tfjs op (host-tensors.ts; as makeStepParams).
  const view = (name: string, len?: number) => viewOf(flat, blockIn(blocks, name), len);
  const layers = Array.from({ length: dims.layers }, (_, l): LayerStepParams => {
    const I = inputWidth(dims, l);
    const wcat = filledTensors(
      gates.map(() => [I + H + 1, H]),
      gates.map((g) => (o: Float32Array) => copyInto(o, view(`W_x${g}_l${l}`, (I + H + 1) * H), 0, g === tanhGate)),
    ) as tf.Tensor2D[];
    const recT = (gs: readonly string[]) => transposedTensor(gs.map((g) => view(`W_h${g}_l${l}`, H * H)), H, H);
    const whT = recT(dims.cell === 'gru' ? ['z', 'r'] : gates);
    const whhT = dims.cell === 'gru' ? recT(['h']) : null;
    const needsDx = l > 0 || dims.embedding > 0;
    const wxT = needsDx ? transposedTensor(gates.map((g) => view(`W_x${g}_l${l}`, I * H)), I, H) : null;
    return { wcat, whT, whhT, wxT };
  });
  const [whq, bq] = filledTensors([[H, V], [V]], [(o) => copyInto(o, view('W_hq')), (o) => copyInto(o, view('b_q'))]) as [tf.Tensor2D, tf.Tensor1D];
  const whqT = transposedTensor([view('W_hq')], H, V);
  const emb = dims.embedding > 0 ? viewOf(flat, blockIn(blocks, EMBEDDING_BLOCK)).slice() : null;
  return { dims, dropout: o.dropout, seed: o.seed, layers, whq, bq, whqT, emb };
}

export function disposeStackStepParams(p: StackStepParams): void {
  for (const l of p.layers) tf.dispose([...l.wcat, l.whT, ...(l.whhT ? [l.whhT] : []), ...(l.wxT ? [l.wxT] : [])]);
  tf.dispose([p.whq, p.bq, p.whqT]);
}

/** Layer 0's input at time t: one-hot rows (B, V) or embedding rows (B, E), built in JS. */
function inputAt(p: StackStepParams, batch: TokenBatch, t: number): tf.Tensor2D {
  const { rows: B, numSteps: T } = batch;
  const V = p.dims.vocabSize;
  if (!p.emb) {
    const out = new Float32Array(B * V);
    for (let r = 0; r < B; r++) out[r * V + batch.x[r * T + t]] = 1;
    return tf.tensor2d(out, [B, V]);
  }
  const E = p.dims.embedding;
  const out = new Float32Array(B * E);
  for (let r = 0; r < B; r++) {
    const id = batch.x[r * T + t];
    out.set(p.emb.subarray(id * E, (id + 1) * E), r * E);
  }
  return tf.tensor2d(out, [B, E]);
}

function checkBatch(batch: TokenBatch, state: Float32Array, p: StackStepParams): void {
  const dims = p.dims;
  const n = batch.rows * batch.numSteps;
  if (batch.x.length !== n || batch.y.length !== n) throw new RangeError(`batch holds ${batch.x.length}/${batch.y.length} ids, expected rows*numSteps = ${n}`);
  const width = dims.layers * layerStateWidth(dims);
  if (state.length !== batch.rows * width) throw new RangeError(`state holds ${state.length} values, expected ${batch.rows} x ${width}`);
  for (let k = 0; k < n; k++) {
    if (!(batch.x[k] >= 0 && batch.x[k] < dims.vocabSize && batch.y[k] >= 0 && batch.y[k] < dims.vocabSize)) {
      throw new RangeError(`token id out of range [0, ${dims.vocabSize}) at ${k}`);
    }
  }
  if (p.dropout > 0) {
    if (!batch.streams || batch.streams.length !== batch.rows || batch.step === undefined) {
      throw new RangeError('a step with dropout needs the global stream id of every row and the step number (TokenBatch.streams, .step)');
    }
  }
}

/**
 * A time-major (T*B, n) tensor as T tensors (B, n). On wasm, slice and split
 * copy about 30× slower than a round trip through JS (measured: splitting
 * (1120, 256) into 35 took 28 ms of CPU, reading it out and making 35 tensors
 * 0.4 ms). Call inside tf.tidy.
 */
function stepsOf(x: tf.Tensor, T: number): tf.Tensor[] {
  const [rows, n] = x.shape;
  const B = rows / T;
  const d = x.dataSync() as Float32Array;
  return Array.from({ length: T }, (_, t) => tf.tensor2d(d.subarray(t * B * n, (t + 1) * B * n), [B, n]));
}

/** What one layer's forward pass keeps for its backward pass. */
interface LayerCache {
  As: tf.Tensor[]; // [x_t, h_{t-1}, 1]
  Ahs: tf.Tensor[]; // gru: [x_t, r ⊙ h_{t-1}, 1]
  hs: tf.Tensor[];
  k: tf.Tensor[][]; // per step factors, by cell (see layerForward)
  h: tf.Tensor;
  c: tf.Tensor | null;
}

/** Forward through one layer over all steps. Call inside tf.tidy. */
function layerForward(lp: LayerStepParams, cell: StackDims['cell'], xs: tf.Tensor[], h0: tf.Tensor, c0: tf.Tensor | null): LayerCache {
  const B = h0.shape[0];
  const one = tf.scalar(1);
  const ones = tf.ones([B, 1]);
  let h = h0;
  let c = c0;
  const cache: LayerCache = { As: [], Ahs: [], hs: [], k: [[], [], [], [], [], []], h, c };
  const k = cache.k;
  for (const x of xs) {
    const A = tf.concat([x, h, ones], 1);
    cache.As.push(A);
    if (cell === 'rnn') {
      const s = tf.sigmoid(tf.matMul(A, lp.wcat[0]));
      h = tf.sub(tf.add(s, s), one);
      k[0].push(tf.sub(one, tf.square(h))); // dh -> dz
    } else if (cell === 'gru') {
      const z = tf.sigmoid(tf.matMul(A, lp.wcat[0]));
      const r = tf.sigmoid(tf.matMul(A, lp.wcat[1]));
      const Ah = tf.concat([x, tf.mul(r, h), ones], 1);
      cache.Ahs.push(Ah);
      const s = tf.sigmoid(tf.matMul(Ah, lp.wcat[2]));
      const hTilde = tf.sub(tf.add(s, s), one);
      const oneMinusZ = tf.sub(one, z);
      k[0].push(tf.sub(oneMinusZ, tf.mul(oneMinusZ, tf.square(hTilde)))); // dh -> dz_h
      k[1].push(tf.mul(tf.sub(h, hTilde), tf.sub(z, tf.square(z)))); // dh -> dz_z
      k[2].push(tf.mul(h, tf.sub(r, tf.square(r)))); // d(r⊙h) -> dz_r
      k[3].push(z);
      k[4].push(r);
      h = tf.add(hTilde, tf.mul(z, tf.sub(h, hTilde)));
    } else {
      const i = tf.sigmoid(tf.matMul(A, lp.wcat[0]));
      const f = tf.sigmoid(tf.matMul(A, lp.wcat[1]));
      const o = tf.sigmoid(tf.matMul(A, lp.wcat[2]));
      const sc = tf.sigmoid(tf.matMul(A, lp.wcat[3]));
      const g = tf.sub(tf.add(sc, sc), one);
      k[1].push(tf.mul(g, tf.sub(i, tf.square(i)))); // dc -> dz_i
      k[2].push(tf.mul(c!, tf.sub(f, tf.square(f)))); // dc -> dz_f
      k[4].push(tf.sub(i, tf.mul(i, tf.square(g)))); // dc -> dz_c
      c = tf.add(tf.mul(f, c!), tf.mul(i, g));
      const s2 = tf.sigmoid(tf.add(c, c));
      const tc = tf.sub(tf.add(s2, s2), one);
      k[0].push(tf.sub(o, tf.mul(o, tf.square(tc)))); // dh -> dc
      k[3].push(tf.mul(tc, tf.sub(o, tf.square(o)))); // dh -> dz_o
      k[5].push(f); // dc_t -> dc_{t-1}
      h = tf.mul(o, tc);
    }
    cache.hs.push(h);
  }
  cache.h = h;
  cache.c = c;
  return cache;
}

/** Backward through one layer: per gate (layout order), per step, dZ (B, H). `ext[t]` is the gradient reaching h_t from above. */
function layerBackward(lp: LayerStepParams, cell: StackDims['cell'], cache: LayerCache, ext: tf.Tensor[]): tf.Tensor[][] {
  const T = ext.length;
  const k = cache.k;
  const dz: tf.Tensor[][] = STACK_GATES[cell].map(() => new Array<tf.Tensor>(T));
  let dh: tf.Tensor = ext[T - 1];
  let dcNext: tf.Tensor | null = null;
  for (let t = T - 1; t >= 0; t--) {
    let rec: tf.Tensor | null = null; // gradient of h_{t-1} through step t
    if (cell === 'rnn') {
      const dza = tf.mul(dh, k[0][t]);
      dz[0][t] = dza;
      if (t > 0) rec = tf.matMul(dza, lp.whT);
    } else if (cell === 'gru') {
      const dza = tf.mul(dh, k[0][t]);
      const dzz = tf.mul(dh, k[1][t]);
      const drh = tf.matMul(dza, lp.whhT!);
      const dzr = tf.mul(drh, k[2][t]);
      dz[0][t] = dzz;
      dz[1][t] = dzr;
      dz[2][t] = dza;
      if (t > 0) rec = tf.add(tf.add(tf.mul(dh, k[3][t]), tf.mul(drh, k[4][t])), tf.matMul(tf.concat([dzz, dzr], 1), lp.whT));
    } else {
      const dcFromH = tf.mul(dh, k[0][t]);
      const dc: tf.Tensor = dcNext ? tf.add(dcFromH, dcNext) : dcFromH;
      dz[0][t] = tf.mul(dc, k[1][t]);
      dz[1][t] = tf.mul(dc, k[2][t]);
      dz[2][t] = tf.mul(dh, k[3][t]);
      dz[3][t] = tf.mul(dc, k[4][t]);
      if (t > 0) {
        dcNext = tf.mul(dc, k[5][t]);
        rec = tf.matMul(tf.concat([dz[0][t], dz[1][t], dz[2][t], dz[3][t]], 1), lp.whT);
      }
    }
    if (rec) dh = tf.add(rec, ext[t - 1]);
  }
  // The first step's dh_{-1} is not needed: the carried state is a constant of this batch.
  return dz;
}

export interface StackStepResult {
  grad: Float32Array;
  lossSum: number;
  tokenCount: number;
  /** Carried state after the batch, rows x (layers x layer state width). */
  state: Float32Array;
}

/** Forward + backward for a batch and its carried state (rows x stateWidth); the params are not disposed. */
export function stackStep(p: StackStepParams, batch: TokenBatch, state: Float32Array): StackStepResult {
  checkBatch(batch, state, p);
  const dims = p.dims;
  const { rows: B, numSteps: T } = batch;
  const { vocabSize: V, hidden: H, layers: L, cell } = dims;
  const S = layerStateWidth(dims);
  const W = L * S;
  const lstm = cell === 'lstm';

  // Per layer, h0 and c0 (B, H) out of the rows' [l0: h (c) | l1: h (c) | …].
  const part = (l: number, off: number) => {
    const a = new Float32Array(B * H);
    for (let r = 0; r < B; r++) a.set(state.subarray(r * W + l * S + off, r * W + l * S + off + H), r * H);
    return a;
  };
  const masks: (Float32Array | null)[] = Array.from({ length: L }, (_, l) =>
    p.dropout > 0 && l < L - 1 ? dropoutMasks({ seed: p.seed, step: batch.step!, layer: l }, batch.streams!, T, H, p.dropout) : null,
  );

  const out = tf.tidy(() => {
    let xs: tf.Tensor[] = Array.from({ length: T }, (_, t) => inputAt(p, batch, t));
    const caches: LayerCache[] = [];
    const maskT: (tf.Tensor | null)[] = [];
    for (let l = 0; l < L; l++) {
      const h0 = tf.tensor2d(part(l, 0), [B, H]);
      const c0 = lstm ? tf.tensor2d(part(l, H), [B, H]) : null;
      const cache = layerForward(p.layers[l], cell, xs, h0, c0);
      caches.push(cache);
      const m = masks[l];
      maskT.push(m ? tf.tensor2d(m, [T * B, H]) : null);
      xs = m ? cache.hs.map((h, t) => tf.mul(h, tf.tensor2d(m.subarray(t * B * H, (t + 1) * B * H), [B, H]))) : cache.hs;
    }

    const Hs = tf.concat(xs, 0); // the last layer's outputs (T*B, H), no dropout after the last layer
    const logp = tf.logSoftmax(tf.add(tf.matMul(Hs, p.whq), p.bq));
    const yOneHot = tf.oneHot(tf.tensor1d(toTimeMajor(batch.y, B, T), 'int32'), V).asType('float32');
    const lossSum = tf.neg(tf.sum(tf.mul(yOneHot, logp)));
    const dLogits = tf.sub(tf.exp(logp), yOneHot);
    const dWhq = tf.matMul(tf.transpose(Hs), dLogits);
    const dbq = tf.sum(dLogits, 0);

    let ext = stepsOf(tf.matMul(dLogits, p.whqT), T);
    const layerGrads: tf.Tensor[][] = new Array(L);
    const dX0: tf.Tensor[] = []; // with an embedding: layer 0's input gradient
    for (let l = L - 1; l >= 0; l--) {
      const lp = p.layers[l];
      const dz = layerBackward(lp, cell, caches[l], ext);
      const DZ = dz.map((perStep) => tf.concat(perStep, 0)); // per gate (T*B, H)
      const AT = tf.transpose(tf.concat(caches[l].As, 0)); // (in+H+1, T*B)
      const AhT = cell === 'gru' ? tf.transpose(tf.concat(caches[l].Ahs, 0)) : null;
      layerGrads[l] = DZ.map((d, k) => tf.reshape(tf.matMul(cell === 'gru' && k === 2 ? AhT! : AT, d), [-1]));
      if (lp.wxT) {
        const dX = tf.matMul(DZ.length === 1 ? DZ[0] : tf.concat(DZ, 1), lp.wxT); // (T*B, in)
        if (l > 0) {
          const m = maskT[l - 1];
          ext = stepsOf(m ? tf.mul(dX, m) : dX, T);
        } else dX0.push(dX);
      }
    }
    const grad = tf.concat([...layerGrads.flat(), tf.reshape(dWhq, [-1]), dbq], 0);
    const finals = caches.flatMap((c) => (lstm ? [c.h, c.c!] : [c.h]));
    return { grad, lossSum, dX0, finals };
  });

  const dense = out.grad.dataSync() as Float32Array;
  const lossSum = out.lossSum.dataSync()[0];
  let grad = dense;
  if (p.emb && out.dX0.length === 1) {
    // W_emb comes first in the layout: its gradient is layer 0's input gradient added into the rows of the tokens read.
    const E = dims.embedding;
    grad = new Float32Array(V * E + dense.length);
    grad.set(dense, V * E);
    const dX = out.dX0[0].dataSync() as Float32Array; // time-major (T*B, E)
    for (let t = 0; t < T; t++) {
      for (let r = 0; r < B; r++) {
        const id = batch.x[r * T + t];
        const src = (t * B + r) * E;
        const dst = id * E;
        for (let j = 0; j < E; j++) grad[dst + j] += dX[src + j];
      }
    }
  }
  const next = new Float32Array(B * W);
  out.finals.forEach((f, k) => {
    const d = f.dataSync();
    const off = lstm ? Math.floor(k / 2) * S + (k % 2) * H : k * S;
    for (let r = 0; r < B; r++) next.set(d.subarray(r * H, (r + 1) * H), r * W + off);
  });
  tf.dispose([out.grad, out.lossSum, ...out.dX0, ...out.finals]);
  return { grad, lossSum, tokenCount: B * T, state: next };
}
