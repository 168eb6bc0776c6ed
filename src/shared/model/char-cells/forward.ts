/**
 * The RNN's and GRU's forward pass with plain tfjs ops, by parameter name:
 * evaluation, generation, and the autodiff reference the hand-derived
 * backward passes (step.ts) are checked against.
 */
import * as tf from '@tensorflow/tfjs';
import { cellLayout, type CellDims } from './params.js';

export type CellParams = Record<string, tf.Tensor>;

export function cellNamedParams(flat: Float32Array, dims: CellDims): CellParams {
  const out: CellParams = {};
  for (const p of cellLayout(dims)) out[p.name] = tf.tensor(flat.subarray(p.offset, p.offset + p.size), p.shape);
  return out;
}

/** logits (T*B, V) time-major and the final hidden state (B, H). Call inside tf.tidy. */
export function cellForward(p: CellParams, xTimeMajor: Int32Array, numSteps: number, h0: tf.Tensor2D, dims: CellDims): { logits: tf.Tensor2D; h: tf.Tensor2D } {
  const x = tf.split(tf.oneHot(tf.tensor1d(xTimeMajor, 'int32'), dims.vocabSize).asType('float32'), numSteps, 0);
  let h: tf.Tensor = h0;
  const hs: tf.Tensor[] = [];
  const pre = (xt: tf.Tensor, hin: tf.Tensor, g: string) => tf.add(tf.add(tf.matMul(xt, p[`W_x${g}`]), tf.matMul(hin, p[`W_h${g}`])), p[`b_${g}`]);
  for (let t = 0; t < numSteps; t++) {
    if (dims.cell === 'rnn') {
      h = tf.tanh(pre(x[t], h, 'h'));
    } else {
      const z = tf.sigmoid(pre(x[t], h, 'z'));
      const r = tf.sigmoid(pre(x[t], h, 'r'));
      const hTilde = tf.tanh(pre(x[t], tf.mul(r, h), 'h'));
      h = tf.add(tf.mul(z, h), tf.mul(tf.sub(1, z), hTilde));
    }
    hs.push(h);
  }
  const logits = tf.add(tf.matMul(tf.concat(hs, 0), p.W_hq), p.b_q) as tf.Tensor2D;
  return { logits, h: h as tf.Tensor2D };
}
