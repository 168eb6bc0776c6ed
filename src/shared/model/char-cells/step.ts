/**
 * One training step of the character RNN or GRU with a hand-derived backward
 * pass through time; the same contract and the same performance rules as the
 * LSTM's step (char-lstm/step.ts): sums not means, no column slicing, each
 * gate one matMul of A_t = [onehot(x_t), h_{t-1}, 1] with its contiguous
 * [W_xg; W_hg; b_g] block, tanh as 2·sigmoid(2z) − 1 with the block doubled,
 * the output layer's share of dh riding along in the recurrence matMul (in
 * the fused path one matMul for all steps, added by the kernels), and each
 * block's weight gradient one matMul over all time steps.
 *
 * RNN: h_t = tanh(z_t), z_t = A_t W_h.  Backward, with dh the total gradient of h_t:
 *   dz_t = dh ⊙ (1 − h_t²);  dh_{t-1} = [dz_t, dLogits_{t-1}] x [W_hh^T; W_hq^T].
 * GRU (reset before the recurrent matMul, as d2l):
 *   z = σ(A W_z), r = σ(A W_r), h~ = tanh(A' W_h) with A' = [onehot, r ⊙ h_{t-1}, 1],
 *   h_t = z ⊙ h_{t-1} + (1 − z) ⊙ h~.  Backward:
 *   da_h = dh ⊙ (1 − z)(1 − h~²);  d(r⊙h) = da_h W_hh^T;
 *   dz_z = dh ⊙ (h_{t-1} − h~) ⊙ z(1 − z);  dz_r = d(r⊙h) ⊙ h_{t-1} ⊙ r(1 − r);
 *   dh_{t-1} = dh ⊙ z + d(r⊙h) ⊙ r + [dz_z, dz_r, dLogits_{t-1}] x [W_hz^T; W_hr^T; W_hq^T].
 *
 * On the wasm backend the gate arithmetic is fused into a few kernels per
 * time step (kernels/cell-gates.ts; the GRU's z and r gates one matMul, the
 * gates' weight gradients from the recurrence matMul's inputs stacked over
 * time); elsewhere, or with setFusedCellGates(false), the step runs as ops.
 * There, the loops over time call the backend's matMul and sigmoid directly
 * and the gate arithmetic without the engine (kernels/wasm-calls.ts,
 * cellRows), into buffers reused at every step, so that each step's
 * intermediates stay in cache; the stacks over time are filled as the loops
 * go and transposed by the SIMD transpose (host-tensors.ts, transposed). The
 * RNN's fused path is rnn-step.ts.
 *
 * Shapes: B = rows, T = numSteps, H = hidden, V = vocab; tensors over all
 * steps are time-major (row t*B + r is stream r at time t).
 */
import * as tf from '@tensorflow/tfjs';
import type { TokenBatch } from '../descriptor.js';
import { toTimeMajor } from '../char-lstm/step.js';
import { blockOf, cellParamCount, CELL_GATES, viewOf, type CellDims } from './params.js';
import { cellRows, copyRowsInto, fusedCellGatesActive, readInto } from '../kernels/cell-gates.js';
import { wasmCalls } from '../kernels/wasm-calls.js';
import { fusedRnnStep } from './rnn-step.js';
import { softmaxCrossEntropy } from '../kernels/softmax-xent.js';
import { copyInto, doubleColumnsInPlace, filledTensors, transposed, transposedRowsInto, transposedTensor } from '../host-tensors.js';

export interface CellStepParams {
  dims: CellDims;
  /** Per gate, [W_xg; W_hg; b_g] (V+H+1, H); the tanh gate's block doubled. */
  wcat: tf.Tensor2D[];
  /** rnn: W_hh^T; gru: [W_hz^T; W_hr^T]. */
  whT: tf.Tensor2D;
  /** gru only: W_hh^T (H, H). */
  whhT: tf.Tensor2D | null;
  whq: tf.Tensor2D;
  bq: tf.Tensor1D;
  whqT: tf.Tensor2D;
}

/** Written in one pass over `flat`, each tensor uploaded once, no tfjs op (host-tensors.ts; as makeStepParams). */
export function makeCellStepParams(flat: Float32Array, dims: CellDims): CellStepParams {
  const { vocabSize: V, hidden: H } = dims;
  const gates = CELL_GATES[dims.cell];
  const R = V + H + 1;
  const view = (name: string, len?: number) => viewOf(flat, blockOf(dims, name), len);
  const wasm = tf.getBackend() === 'wasm';
  const t = filledTensors([[H, V], [V], ...gates.map(() => [R, H])], [
    (o) => copyInto(o, view('W_hq')),
    (o) => copyInto(o, view('b_q')),
    ...gates.map((g) => (o: Float32Array) => copyInto(o, view(`W_x${g}`, R * H), 0, g === 'h' && !wasm)),
  ]);
  // On wasm the tanh gate's block is doubled where it lies, four lanes at a time.
  if (wasm) doubleColumnsInPlace(t[2 + gates.indexOf('h')] as tf.Tensor2D, 0, H);
  const whT = transposedTensor((dims.cell === 'rnn' ? ['h'] : ['z', 'r']).map((g) => view(`W_h${g}`)), H, H);
  const whhT = dims.cell === 'gru' ? transposedTensor([view('W_hh')], H, H) : null;
  const whqT = transposedTensor([view('W_hq')], H, V);
  return { dims, wcat: t.slice(2) as tf.Tensor2D[], whT, whhT, whq: t[0] as tf.Tensor2D, bq: t[1] as tf.Tensor1D, whqT };
}

export function disposeCellStepParams(p: CellStepParams): void {
  tf.dispose([...p.wcat, p.whT, p.whq, p.bq, p.whqT, ...(p.whhT ? [p.whhT] : [])]);
}

function oneHotAt(batch: TokenBatch, t: number, V: number): Float32Array {
  const out = new Float32Array(batch.rows * V);
  for (let r = 0; r < batch.rows; r++) out[r * V + batch.x[r * batch.numSteps + t]] = 1;
  return out;
}

function checkBatch(batch: TokenBatch, h0: tf.Tensor2D, dims: CellDims): void {
  const n = batch.rows * batch.numSteps;
  if (batch.x.length !== n || batch.y.length !== n) throw new RangeError(`batch holds ${batch.x.length}/${batch.y.length} ids, expected rows*numSteps = ${n}`);
  if (h0.shape[0] !== batch.rows || h0.shape[1] !== dims.hidden) throw new RangeError(`state is [${h0.shape}], expected [${batch.rows}, ${dims.hidden}]`);
  for (let k = 0; k < n; k++) {
    if (!(batch.x[k] >= 0 && batch.x[k] < dims.vocabSize && batch.y[k] >= 0 && batch.y[k] < dims.vocabSize)) {
      throw new RangeError(`token id out of range [0, ${dims.vocabSize}) at ${k}`);
    }
  }
}

export interface CellStepResult {
  grad: Float32Array;
  lossSum: number;
  tokenCount: number;
  /** Hidden state after the last step (B, H); the caller owns it. */
  h: tf.Tensor2D;
}

/** Forward + backward; h0 and the params are not disposed. */
export function cellStep(p: CellStepParams, batch: TokenBatch, h0: tf.Tensor2D, gradOut?: Float32Array): CellStepResult {
  checkBatch(batch, h0, p.dims);
  if (!fusedCellGatesActive()) return opsCellStep(p, batch, h0);
  return p.dims.cell === 'rnn' ? fusedRnnStep(p, batch, h0, gradOut) : fusedGruStep(p, batch, h0, gradOut);
}

/** The GRU on wasm: fused gate kernels; the weight gradients assembled on the host. */
function fusedGruStep(p: CellStepParams, batch: TokenBatch, h0: tf.Tensor2D, gradOut?: Float32Array): CellStepResult {
  const dims = p.dims;
  const { rows: B, numSteps: T } = batch;
  const { vocabSize: V, hidden: H } = dims;
  const xTm = toTimeMajor(batch.x, B, T);
  const idsAt = (t: number) => (t < T ? xTm.subarray(t * B, t * B + B) : null);
  const out = tf.tidy(() => {
    let A = tf.concat([tf.tensor2d(oneHotAt(batch, 0, V), [B, V]), h0, tf.ones([B, 1])], 1);
    const wzr = tf.concat([p.wcat[0], p.wcat[1]], 1);
    // As for the RNN (rnn-step.ts): the backend's matMul and sigmoid called directly, the gate
    // arithmetic without the engine, into buffers reused at every step; what the backward pass
    // reads (S, Sh, h) into tensors of their own; what the weight gradients read copied into
    // its stack over time (row block t) while in cache, not concatenated after the loop.
    const call = wasmCalls();
    const R = V + H + 1;
    const fresh = (cols: number) => filledTensors([[B, cols]], [() => {}])[0];
    const none = () => {};
    const [zr, zh, drh, rec, dhRec, Ah, A0, A1, da, cat, dh, direct] = filledTensors(
      [[B, 2 * H], [B, H], [B, H], [B, H], [B, H], [B, R], [B, R], [B, R], [B, H], [B, 2 * H], [B, H], [B, H]],
      [none, none, none, none, (d) => d.fill(0), none, none, none, none, none, none, none],
    );
    const [As, Ahs, Hs, das, cats] = filledTensors([[T * B, R], [T * B, R], [T * B, H], [T * B, H], [T * B, 2 * H]], [none, none, none, none, none]);
    let h: tf.Tensor = h0;
    const saved: { S: tf.Tensor; Sh: tf.Tensor; hp: tf.Tensor }[] = [];
    for (let t = 0; t < T; t++) {
      copyRowsInto(A, As, t * B);
      call.matMul(A, wzr, zr);
      const S = fresh(2 * H);
      call.sigmoid(zr, S);
      cellRows('DptrainGruReset', [S, h], [Ah], H, V, idsAt(t));
      copyRowsInto(Ah, Ahs, t * B);
      call.matMul(Ah, p.wcat[2], zh);
      const Sh = fresh(H);
      call.sigmoid(zh, Sh);
      const next = [fresh(H), t % 2 === 0 ? A0 : A1];
      cellRows('DptrainGruHidden', [S, Sh, h], next, H, V, idsAt(t + 1));
      saved.push({ S, Sh, hp: h });
      [h, A] = next;
      copyRowsInto(h, Hs, t * B);
    }
    const { lossSum, dLogits, dBias } = softmaxCrossEntropy(tf.matMul(Hs, p.whq) as tf.Tensor2D, p.bq, toTimeMajor(batch.y, B, T));
    const dWhq = tf.matMul(transposed(Hs), dLogits);
    // The output layer's share of every dh_t at once (T·B, H); the kernels read row block t.
    const dOut = tf.matMul(dLogits, p.whqT);
    for (let t = T - 1; t >= 0; t--) {
      const { S, Sh, hp } = saved[t];
      cellRows('DptrainGruBackward1', [S, Sh, dhRec, dOut], [da, dh], H, V, null, t);
      copyRowsInto(da, das, t * B);
      call.matMul(da, p.whhT!, drh);
      cellRows('DptrainGruBackward2', [dh, drh, S, Sh, hp], [cat, direct], H, V);
      copyRowsInto(cat, cats, t * B);
      if (t > 0) {
        call.matMul(cat, p.whT, rec);
        cellRows('DptrainAdd', [direct, rec], [dhRec], H, V);
      }
    }
    // The gates' weight gradients over all time steps. The z and r gates': [dZ_z, dZ_r]^T A
    // (2H, V+H+1), transposed so that the operand wasm packs afresh on every call is A, not
    // the wider dZ; the h gate's: A'^T dA_h (V+H+1, H).
    const gates = tf.matMul(transposed(cats), As);
    const hGate = tf.matMul(transposed(Ahs), das);
    return { gates, hGate, dWhq, dBias, lossSum, h: h as tf.Tensor2D };
  });
  // Every value is written below: the z and r gate blocks, the h gate's, W_hq and b_q.
  const grad = gradOut?.length === cellParamCount(dims) ? gradOut : new Float32Array(cellParamCount(dims));
  ['z', 'r'].forEach((g, k) => transposedRowsInto(out.gates as tf.Tensor2D, k * H, H, grad, blockOf(dims, `W_x${g}`).offset));
  readInto(out.hGate, grad, blockOf(dims, 'W_xh').offset);
  readInto(out.dWhq, grad, blockOf(dims, 'W_hq').offset);
  readInto(out.dBias, grad, blockOf(dims, 'b_q').offset);
  const lossSum = out.lossSum.dataSync()[0];
  tf.dispose([out.gates, out.hGate, out.dWhq, out.dBias, out.lossSum]);
  return { grad, lossSum, tokenCount: B * T, h: out.h };
}

/** Every backend but wasm: the step as tfjs ops. */
function opsCellStep(p: CellStepParams, batch: TokenBatch, h0: tf.Tensor2D): CellStepResult {
  const dims = p.dims;
  const { rows: B, numSteps: T } = batch;
  const V = dims.vocabSize;
  const gru = dims.cell === 'gru';

  const out = tf.tidy(() => {
    const one = tf.scalar(1);
    const ones = tf.ones([B, 1]);
    let h: tf.Tensor = h0;
    const As: tf.Tensor[] = []; // [onehot, h_{t-1}, 1]
    const Ahs: tf.Tensor[] = []; // gru: [onehot, r ⊙ h_{t-1}, 1]
    const hs: tf.Tensor[] = [];
    const ka: tf.Tensor[] = []; // dh -> dz of the tanh gate
    const kz: tf.Tensor[] = []; // gru: dh -> dz_z
    const kr: tf.Tensor[] = []; // gru: d(r⊙h) -> dz_r
    const zs: tf.Tensor[] = [];
    const rs: tf.Tensor[] = [];
    for (let t = 0; t < T; t++) {
      const x = tf.tensor2d(oneHotAt(batch, t, V), [B, V]);
      const A = tf.concat([x, h, ones], 1);
      As.push(A);
      if (!gru) {
        const s = tf.sigmoid(tf.matMul(A, p.wcat[0]));
        h = tf.sub(tf.add(s, s), one);
        ka.push(tf.sub(one, tf.square(h)));
      } else {
        const z = tf.sigmoid(tf.matMul(A, p.wcat[0]));
        const r = tf.sigmoid(tf.matMul(A, p.wcat[1]));
        const Ah = tf.concat([x, tf.mul(r, h), ones], 1);
        Ahs.push(Ah);
        const s = tf.sigmoid(tf.matMul(Ah, p.wcat[2]));
        const hTilde = tf.sub(tf.add(s, s), one);
        const oneMinusZ = tf.sub(one, z);
        ka.push(tf.sub(oneMinusZ, tf.mul(oneMinusZ, tf.square(hTilde))));
        kz.push(tf.mul(tf.sub(h, hTilde), tf.sub(z, tf.square(z))));
        kr.push(tf.mul(h, tf.sub(r, tf.square(r))));
        zs.push(z);
        rs.push(r);
        h = tf.add(hTilde, tf.mul(z, tf.sub(h, hTilde)));
      }
      hs.push(h);
    }

    const Hs = tf.concat(hs, 0); // (T*B, H)
    const logp = tf.logSoftmax(tf.add(tf.matMul(Hs, p.whq), p.bq));
    const yOneHot = tf.oneHot(tf.tensor1d(toTimeMajor(batch.y, B, T), 'int32'), V).asType('float32');
    const lossSum = tf.neg(tf.sum(tf.mul(yOneHot, logp)));
    const dLogits = tf.sub(tf.exp(logp), yOneHot);
    const dWhq = tf.matMul(tf.transpose(Hs), dLogits);
    const dbq = tf.sum(dLogits, 0);
    // The output layer's share of dh_t rides along in the recurrence matMul (the small dLogits
    // is what gets split: on wasm a split copies its whole input per piece).
    const dLogitsT = tf.split(dLogits, T, 0);
    const whOutT = tf.concat([p.whT, p.whqT], 0);

    const gates = CELL_GATES[dims.cell].length;
    const dz: tf.Tensor[][] = Array.from({ length: gates }, () => []);
    let dh: tf.Tensor = tf.matMul(dLogitsT[T - 1], p.whqT);
    for (let t = T - 1; t >= 0; t--) {
      if (!gru) {
        const dza = tf.mul(dh, ka[t]);
        dz[0][t] = dza;
        if (t > 0) dh = tf.matMul(tf.concat([dza, dLogitsT[t - 1]], 1), whOutT);
      } else {
        const dza = tf.mul(dh, ka[t]);
        const dzz = tf.mul(dh, kz[t]);
        const drh = tf.matMul(dza, p.whhT!);
        const dzr = tf.mul(drh, kr[t]);
        dz[0][t] = dzz;
        dz[1][t] = dzr;
        dz[2][t] = dza;
        if (t > 0) {
          const direct = tf.add(tf.mul(dh, zs[t]), tf.mul(drh, rs[t]));
          dh = tf.add(direct, tf.matMul(tf.concat([dzz, dzr, dLogitsT[t - 1]], 1), whOutT));
        }
      }
    }
    // The first step's dh_{-1} is not needed: the carried state is a constant of this batch.

    const AT = tf.transpose(tf.concat(As, 0)); // (V+H+1, T*B)
    const parts: tf.Tensor[] = [];
    for (let k = 0; k < gates; k++) {
      const Ak = gru && k === 2 ? tf.transpose(tf.concat(Ahs, 0)) : AT;
      parts.push(tf.reshape(tf.matMul(Ak, tf.concat(dz[k], 0)), [-1]));
    }
    parts.push(tf.reshape(dWhq, [-1]), dbq);
    return { grad: tf.concat(parts, 0), lossSum, h: h as tf.Tensor2D };
  });

  const grad = out.grad.dataSync() as Float32Array;
  const lossSum = out.lossSum.dataSync()[0];
  tf.dispose([out.grad, out.lossSum]);
  return { grad, lossSum, tokenCount: B * T, h: out.h };
}
