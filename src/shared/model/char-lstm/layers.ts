/**
 * The char-LSTM as a TF.js Layers model: one-hot sequences (batch, time, V)
 * in, per-step softmax out, so the result loads with plain
 * `tf.loadLayersModel` and no dptrain code.
 *
 * Our flat layout keeps one matrix per gate in the order i, f, o, c; a Keras /
 * tfjs-layers LSTM wants the gates side by side in kernel (V, 4H), recurrent
 * kernel (H, 4H) and bias (4H), in the order i, f, c, o (see LSTMCell.call in
 * tfjs-layers: z is split into i, f, candidate, o).
 */
import * as tf from '@tensorflow/tfjs';
import { paramCount, paramLayout, type ModelDims, type ParamName } from './params.js';

/** Gate order of tfjs-layers' fused LSTM weights. */
const KERAS_GATES = ['i', 'f', 'c', 'o'] as const;

function fusedWeights(flat: Float32Array, dims: ModelDims) {
  const { vocabSize: V, hidden: H } = dims;
  const at = new Map(paramLayout(dims).map((p) => [p.name, p]));
  const view = (n: ParamName) => {
    const p = at.get(n)!;
    return flat.subarray(p.offset, p.offset + p.size);
  };
  // Gate block k of a fused (rows, 4H) matrix is columns [kH, (k+1)H).
  const fuse = (prefix: 'W_x' | 'W_h', rows: number) => {
    const out = new Float32Array(rows * 4 * H);
    KERAS_GATES.forEach((g, k) => {
      const w = view(`${prefix}${g}` as ParamName);
      for (let r = 0; r < rows; r++) out.set(w.subarray(r * H, (r + 1) * H), r * 4 * H + k * H);
    });
    return out;
  };
  const bias = new Float32Array(4 * H);
  KERAS_GATES.forEach((g, k) => bias.set(view(`b_${g}` as ParamName), k * H));
  return { kernel: fuse('W_x', V), recurrentKernel: fuse('W_h', H), bias, whq: view('W_hq'), bq: view('b_q') };
}

/** The Sequential model with our weights set; the caller owns (and disposes) it. */
export function buildLayersModel(flat: Float32Array, dims: ModelDims): tf.LayersModel {
  const { vocabSize: V, hidden: H } = dims;
  if (flat.length !== paramCount(dims)) {
    throw new RangeError(`params hold ${flat.length} values but vocab size ${V} and hidden ${H} need ${paramCount(dims)}`);
  }
  const w = fusedWeights(flat, dims);
  const model = tf.sequential({ name: 'dptrain_char_lstm' });
  // Fixed layer names keep the weight names in model.json stable, whatever
  // else this process has built before.
  model.add(
    tf.layers.lstm({
      name: 'lstm',
      units: H,
      inputShape: [null, V],
      returnSequences: true,
      activation: 'tanh',
      recurrentActivation: 'sigmoid',
      unitForgetBias: false,
      useBias: true,
    }),
  );
  model.add(
    tf.layers.timeDistributed({
      name: 'output',
      layer: tf.layers.dense({ name: 'output_dense', units: V, activation: 'softmax' }),
    }),
  );
  const lstmWeights = [tf.tensor2d(w.kernel, [V, 4 * H]), tf.tensor2d(w.recurrentKernel, [H, 4 * H]), tf.tensor1d(w.bias)];
  const denseWeights = [tf.tensor2d(w.whq, [H, V]), tf.tensor1d(w.bq)];
  try {
    model.layers[0].setWeights(lstmWeights);
    model.layers[1].setWeights(denseWeights);
  } finally {
    tf.dispose([...lstmWeights, ...denseWeights]);
  }
  return model;
}

