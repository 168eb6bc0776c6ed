/**
 * Validation perplexity and text generation (d2l predict_ch8, plus temperature sampling).
 */
import * as tf from '@tensorflow/tfjs';
import type { ModelDims } from './params.js';
import { lstmForward, namedParams, type NamedParams } from './lstm-forward.js';
import { disposeState, zeroState, type LstmState } from './lstm-step.js';
import type { Vocab } from './vocab.js';
import { Rng } from './rng.js';

/**
 * Perplexity of `tokens` read as `streams` parallel streams in chunks of
 * `numSteps`, with state carried across chunks (as training reads them).
 */
export function perplexityOf(flat: Float32Array, dims: ModelDims, tokens: Int32Array, numSteps: number, streams = 32): number {
  const rows = Math.max(1, Math.min(streams, Math.floor((tokens.length - 1) / numSteps)));
  const len = Math.floor((tokens.length - 1) / rows);
  const chunks = Math.floor(len / numSteps);
  if (chunks === 0) return NaN;
  const p = namedParams(flat, dims);
  let state: LstmState = zeroState(rows, dims.hidden);
  let lossSum = 0;
  for (let k = 0; k < chunks; k++) {
    const xs = new Int32Array(rows * numSteps);
    const ys = new Int32Array(rows * numSteps);
    for (let t = 0; t < numSteps; t++) {
      for (let r = 0; r < rows; r++) {
        const pos = r * len + k * numSteps + t;
        xs[t * rows + r] = tokens[pos];
        ys[t * rows + r] = tokens[pos + 1];
      }
    }
    const out = tf.tidy(() => {
      const f = lstmForward(p, xs, numSteps, state, dims);
      const labels = tf.oneHot(tf.tensor1d(ys, 'int32'), dims.vocabSize).asType('float32');
      const loss = tf.neg(tf.sum(tf.mul(labels, tf.logSoftmax(f.logits))));
      return { loss, h: f.state.h, c: f.state.c };
    });
    lossSum += out.loss.dataSync()[0];
    out.loss.dispose();
    disposeState(state);
    state = { h: out.h, c: out.c };
  }
  disposeState(state);
  tf.dispose(Object.values(p));
  return Math.exp(lossSum / (rows * chunks * numSteps));
}

export interface PredictOptions {
  /** 0 = greedy (argmax), as d2l predict_ch8. */
  temperature?: number;
  seed?: number;
}

/** Warm the state up on the prefix, then generate `length` characters. */
export function predict(flat: Float32Array, dims: ModelDims, vocab: Vocab, prefix: string, length: number, opts: PredictOptions = {}): string {
  const temperature = opts.temperature ?? 0;
  const rng = new Rng(opts.seed ?? 0);
  const p: NamedParams = namedParams(flat, dims);
  const chars = [...(prefix.length > 0 ? prefix : ' ')];
  const outputs = [vocab.index(chars[0])];
  let state: LstmState = zeroState(1, dims.hidden);
  const stepOnce = (id: number): Float32Array => {
    const r = tf.tidy(() => {
      const f = lstmForward(p, Int32Array.of(id), 1, state, dims);
      return { logits: f.logits, h: f.state.h, c: f.state.c };
    });
    disposeState(state);
    state = { h: r.h, c: r.c };
    const logits = r.logits.dataSync() as Float32Array;
    r.logits.dispose();
    return logits;
  };
  for (const ch of chars.slice(1)) {
    stepOnce(outputs[outputs.length - 1]);
    outputs.push(vocab.index(ch));
  }
  for (let k = 0; k < length; k++) {
    const logits = stepOnce(outputs[outputs.length - 1]);
    outputs.push(temperature > 0 ? sample(logits, temperature, rng) : argmax(logits));
  }
  disposeState(state);
  tf.dispose(Object.values(p));
  return outputs.map((i) => vocab.token(i)).join('');
}

function argmax(v: Float32Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

function sample(logits: Float32Array, temperature: number, rng: Rng): number {
  let max = -Infinity;
  for (const l of logits) max = Math.max(max, l);
  const w = Array.from(logits, (l) => Math.exp((l - max) / temperature));
  const total = w.reduce((a, b) => a + b, 0);
  let u = rng.next() * total;
  for (let i = 0; i < w.length; i++) {
    u -= w[i];
    if (u <= 0) return i;
  }
  return w.length - 1;
}
