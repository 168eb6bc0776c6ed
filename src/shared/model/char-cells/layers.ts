/**
 * The RNN or GRU as a TF.js Layers model (one-hot (batch, time, V) in,
 * per-step softmax out), loadable with plain `tf.loadLayersModel`.
 *
 * tfjs-layers expresses both of d2l's equations exactly:
 *  - simpleRNN: h = tanh(x·kernel + h·recurrentKernel + bias): kernel = W_xh,
 *    recurrentKernel = W_hh, bias = b_h;
 *  - gru: GRUCell.call (tfjs-layers src/layers/recurrent.ts) applies the reset
 *    gate before the recurrent matMul, hh = tanh(x_h + (r ⊙ h)·rk_h) (it
 *    refuses resetAfter = true), and h = z ⊙ h + (1 − z) ⊙ hh, as d2l. Its
 *    fused weights are side by side in the order z, r, h: kernel (V, 3H),
 *    recurrentKernel (H, 3H), bias (3H). Its default recurrent activation is
 *    hardSigmoid, so sigmoid is set explicitly.
 */
import * as tf from '@tensorflow/tfjs';
import { blockOf, CELL_GATES, cellParamCount, viewOf, type CellDims } from './params.js';

function fused(flat: Float32Array, dims: CellDims) {
  const { vocabSize: V, hidden: H } = dims;
  const gates = CELL_GATES[dims.cell]; // already tfjs's order: z, r, h
  const G = gates.length;
  const fuse = (prefix: 'W_x' | 'W_h', rows: number) => {
    const out = new Float32Array(rows * G * H);
    gates.forEach((g, k) => {
      const w = viewOf(flat, blockOf(dims, `${prefix}${g}`));
      for (let r = 0; r < rows; r++) out.set(w.subarray(r * H, (r + 1) * H), r * G * H + k * H);
    });
    return out;
  };
  const bias = new Float32Array(G * H);
  gates.forEach((g, k) => bias.set(viewOf(flat, blockOf(dims, `b_${g}`)), k * H));
  return { kernel: fuse('W_x', V), recurrentKernel: fuse('W_h', H), bias, G };
}

export function buildCellLayersModel(flat: Float32Array, dims: CellDims): tf.LayersModel {
  const { vocabSize: V, hidden: H } = dims;
  if (flat.length !== cellParamCount(dims)) {
    throw new RangeError(`params hold ${flat.length} values but a ${dims.cell} with vocab size ${V} and hidden ${H} needs ${cellParamCount(dims)}`);
  }
  const w = fused(flat, dims);
  const model = tf.sequential({ name: `dptrain_char_${dims.cell}` });
  const common = { name: dims.cell, units: H, inputShape: [null, V], returnSequences: true, activation: 'tanh' as const, useBias: true };
  model.add(dims.cell === 'rnn' ? tf.layers.simpleRNN(common) : tf.layers.gru({ ...common, recurrentActivation: 'sigmoid' }));
  model.add(tf.layers.timeDistributed({ name: 'output', layer: tf.layers.dense({ name: 'output_dense', units: V, activation: 'softmax' }) }));
  const recWeights = [tf.tensor2d(w.kernel, [V, w.G * H]), tf.tensor2d(w.recurrentKernel, [H, w.G * H]), tf.tensor1d(w.bias)];
  const denseWeights = [tf.tensor2d(viewOf(flat, blockOf(dims, 'W_hq')), [H, V]), tf.tensor1d(viewOf(flat, blockOf(dims, 'b_q')))];
  try {
    model.layers[0].setWeights(recWeights);
    model.layers[1].setWeights(denseWeights);
  } finally {
    tf.dispose([...recWeights, ...denseWeights]);
  }
  return model;
}
