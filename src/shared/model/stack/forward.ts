/**
 * The stack's forward pass with plain tfjs ops, by parameter name:
 * evaluation, generation, and the autodiff reference the hand-derived
 * backward pass (step.ts) is checked against (with its dropout masks given).
 */
import * as tf from '@tensorflow/tfjs';
import { EMBEDDING_BLOCK, stackLayout, type StackDims } from './params.js';

export type StackParams = Record<string, tf.Tensor>;

/** One layer's carried state: h (B, H), and c for the LSTM. */
export interface LayerState {
  h: tf.Tensor2D;
  c?: tf.Tensor2D;
}

export function stackNamedParams(flat: Float32Array, dims: StackDims): StackParams {
  const out: StackParams = {};
  for (const p of stackLayout(dims)) out[p.name] = tf.tensor(flat.subarray(p.offset, p.offset + p.size), p.shape);
  return out;
}

/** Layer 0's inputs for time-major ids: embedding rows or one-hot, (T*B, in). */
export function stackInputs(p: StackParams, xTimeMajor: Int32Array, dims: StackDims): tf.Tensor2D {
  const ids = tf.tensor1d(xTimeMajor, 'int32');
  return (dims.embedding > 0 ? tf.gather(p[EMBEDDING_BLOCK], ids) : tf.oneHot(ids, dims.vocabSize).asType('float32')) as tf.Tensor2D;
}

/**
 * logits (T*B, V) time-major and every layer's final state. `masks[l]`, when
 * given, multiplies layer l's output (time-major (T*B, H)) before layer l+1
 * reads it: training's dropout, fixed. Call inside tf.tidy.
 */
export function stackForward(
  p: StackParams,
  xTimeMajor: Int32Array,
  numSteps: number,
  state: readonly LayerState[],
  dims: StackDims,
  masks?: readonly (tf.Tensor2D | null)[],
): { logits: tf.Tensor2D; state: LayerState[] } {
  let xs = tf.split(stackInputs(p, xTimeMajor, dims), numSteps, 0);
  const out: LayerState[] = [];
  for (let l = 0; l < dims.layers; l++) {
    const w = (name: string) => p[`${name}_l${l}`];
    const pre = (xt: tf.Tensor, hin: tf.Tensor, g: string) => tf.add(tf.add(tf.matMul(xt, w(`W_x${g}`)), tf.matMul(hin, w(`W_h${g}`))), w(`b_${g}`));
    let h: tf.Tensor = state[l].h;
    let c: tf.Tensor | undefined = state[l].c;
    const hs: tf.Tensor[] = [];
    for (let t = 0; t < numSteps; t++) {
      const x = xs[t];
      if (dims.cell === 'rnn') {
        h = tf.tanh(pre(x, h, 'h'));
      } else if (dims.cell === 'gru') {
        const z = tf.sigmoid(pre(x, h, 'z'));
        const r = tf.sigmoid(pre(x, h, 'r'));
        const hTilde = tf.tanh(pre(x, tf.mul(r, h), 'h'));
        h = tf.add(tf.mul(z, h), tf.mul(tf.sub(1, z), hTilde));
      } else {
        const i = tf.sigmoid(pre(x, h, 'i'));
        const f = tf.sigmoid(pre(x, h, 'f'));
        const o = tf.sigmoid(pre(x, h, 'o'));
        const cTilde = tf.tanh(pre(x, h, 'c'));
        c = tf.add(tf.mul(f, c!), tf.mul(i, cTilde));
        h = tf.mul(o, tf.tanh(c));
      }
      hs.push(h);
    }
    out.push(dims.cell === 'lstm' ? { h: h as tf.Tensor2D, c: c as tf.Tensor2D } : { h: h as tf.Tensor2D });
    const mask = masks?.[l];
    xs = mask ? tf.split(tf.mul(tf.concat(hs, 0), mask), numSteps, 0) : hs;
  }
  const logits = tf.add(tf.matMul(tf.concat(xs, 0), p.W_hq), p.b_q) as tf.Tensor2D;
  return { logits, state: out };
}
