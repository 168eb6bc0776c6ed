/**
 * Forward pass with plain tfjs ops, by parameter name. Used for evaluation,
 * prediction, the TF.js export check, and as the autodiff reference that the
 * hand-derived backward pass of lstm-step.ts is checked against.
 */
import * as tf from '@tensorflow/tfjs';
import { paramLayout, type ModelDims, type ParamName } from './params.js';
import type { Batch, LstmState } from './step.js';
import { toTimeMajor } from './step.js';

export type NamedParams = Record<ParamName, tf.Tensor>;

export function namedParams(flat: Float32Array, dims: ModelDims): NamedParams {
  const out = {} as NamedParams;
  for (const p of paramLayout(dims)) out[p.name] = tf.tensor(flat.subarray(p.offset, p.offset + p.size), p.shape);
  return out;
}

/** logits (T*B, V) time-major, and the final state. Call inside tf.tidy. */
export function lstmForward(
  p: NamedParams,
  xTimeMajor: Int32Array,
  numSteps: number,
  state: LstmState,
  dims: ModelDims,
): { logits: tf.Tensor2D; state: LstmState } {
  const V = dims.vocabSize;
  const x = tf.split(tf.oneHot(tf.tensor1d(xTimeMajor, 'int32'), V).asType('float32'), numSteps, 0);
  let h: tf.Tensor = state.h;
  let c: tf.Tensor = state.c;
  const hs: tf.Tensor[] = [];
  const gate = (xt: tf.Tensor, g: string) =>
    tf.add(tf.add(tf.matMul(xt, p[`W_x${g}` as ParamName]), tf.matMul(h, p[`W_h${g}` as ParamName])), p[`b_${g}` as ParamName]);
  for (let t = 0; t < numSteps; t++) {
    const i = tf.sigmoid(gate(x[t], 'i'));
    const f = tf.sigmoid(gate(x[t], 'f'));
    const o = tf.sigmoid(gate(x[t], 'o'));
    const cTilde = tf.tanh(gate(x[t], 'c'));
    c = tf.add(tf.mul(f, c), tf.mul(i, cTilde));
    h = tf.mul(o, tf.tanh(c));
    hs.push(h);
  }
  const logits = tf.add(tf.matMul(tf.concat(hs, 0), p.W_hq), p.b_q) as tf.Tensor2D;
  return { logits, state: { h: h as tf.Tensor2D, c: c as tf.Tensor2D } };
}

/** Sum of token cross-entropies of a batch, as a scalar tensor (differentiable). */
export function lossSumOf(p: NamedParams, batch: Batch, state: LstmState, dims: ModelDims): tf.Scalar {
  const xs = toTimeMajor(batch.x, batch.rows, batch.numSteps);
  const ys = toTimeMajor(batch.y, batch.rows, batch.numSteps);
  const { logits } = lstmForward(p, xs, batch.numSteps, state, dims);
  const labels = tf.oneHot(tf.tensor1d(ys, 'int32'), dims.vocabSize).asType('float32');
  return tf.neg(tf.sum(tf.mul(labels, tf.logSoftmax(logits)))) as tf.Scalar;
}
