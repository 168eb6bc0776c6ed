/**
 * Validation perplexity and text generation (d2l predict_ch8, plus temperature sampling).
 */
import * as tf from '@tensorflow/tfjs';
import type { ModelDescriptor } from './descriptor.js';
import type { TextTokenizer } from '../data/tokenizer.js';
import { Rng } from '../data/rng.js';

/**
 * Perplexity of `tokens` read as `streams` parallel streams in chunks of
 * `numSteps`, with state carried across chunks (as training reads them).
 */
export function perplexityOf(flat: Float32Array, model: ModelDescriptor, tokens: Int32Array, numSteps: number, streams = 32): number {
  const rows = Math.max(1, Math.min(streams, Math.floor((tokens.length - 1) / numSteps)));
  const len = Math.floor((tokens.length - 1) / rows);
  const chunks = Math.floor(len / numSteps);
  if (chunks === 0) return NaN;
  const fw = model.forward(flat, rows);
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
    const logits = fw.logits(xs, numSteps);
    const loss = tf.tidy(() => {
      const labels = tf.oneHot(tf.tensor1d(ys, 'int32'), model.vocabSize).asType('float32');
      return tf.neg(tf.sum(tf.mul(labels, tf.logSoftmax(logits))));
    });
    logits.dispose();
    lossSum += loss.dataSync()[0];
    loss.dispose();
  }
  fw.dispose();
  return Math.exp(lossSum / (rows * chunks * numSteps));
}

export interface PredictOptions {
  /** 0 = greedy (argmax), as d2l predict_ch8. */
  temperature?: number;
  seed?: number;
}

/** Warm the state up on the prefix (text in the corpus's form: see TextTokenizer.preparePrompt), then generate `length` tokens. */
export function predict(flat: Float32Array, model: ModelDescriptor, tokenizer: TextTokenizer, prefix: string, length: number, opts: PredictOptions = {}): string {
  const temperature = opts.temperature ?? 0;
  const rng = new Rng(opts.seed ?? 0);
  const fw = model.forward(flat, 1);
  const ids = tokenizer.encode(prefix.length > 0 ? prefix : ' ');
  // A word prompt without words starts from <unk> (id 0); the tokenizer's preparePrompt says so.
  const prompt = ids.length > 0 ? ids : Int32Array.of(0);
  const outputs = [prompt[0]];
  const stepOnce = (id: number): Float32Array => {
    const t = fw.logits(Int32Array.of(id), 1);
    const logits = t.dataSync() as Float32Array;
    t.dispose();
    return logits;
  };
  for (const id of prompt.subarray(1)) {
    stepOnce(outputs[outputs.length - 1]);
    outputs.push(id);
  }
  for (let k = 0; k < length; k++) {
    const logits = stepOnce(outputs[outputs.length - 1]);
    outputs.push(temperature > 0 ? sample(logits, temperature, rng) : argmax(logits));
  }
  fw.dispose();
  return tokenizer.decode(outputs);
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
