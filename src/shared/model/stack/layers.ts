/**
 * A stack as a TF.js Layers model, loadable with plain `tf.loadLayersModel`:
 * [embedding] → L × (lstm | gru | simpleRNN, returnSequences) → per-step dense
 * softmax. Inputs: token ids (batch, time) with an embedding, else one-hot
 * (batch, time, V) as the single-layer exports.
 *
 * Each layer maps exactly as in the single-layer exports: lstm fuses the gates
 * in tfjs's order i, f, c, o (ours is i, f, o, c); gru in z, r, h with the
 * reset gate before the recurrent matMul, as d2l (tfjs refuses resetAfter);
 * simpleRNN is tanh(x W_xh + h W_hh + b_h). The embedding layer is a plain
 * row lookup of W_emb. Dropout between layers is exported as tfjs `dropout`
 * layers: identity in inference, and at training time (if someone fine-tunes
 * the export) a fresh mask per element and time step as ours; what tfjs cannot
 * express is where our masks come from (a hash of seed, step, stream, layer),
 * so a fine-tuned export draws other masks.
 */
import * as tf from '@tensorflow/tfjs';
import { blockIn, EMBEDDING_BLOCK, inputWidth, STACK_GATES, stackLayout, stackParamCount, viewOf, type StackDims } from './params.js';

/** Gate order of tfjs-layers' fused weights per cell. */
const TFJS_GATES: Record<StackDims['cell'], readonly string[]> = { lstm: ['i', 'f', 'c', 'o'], gru: ['z', 'r', 'h'], rnn: ['h'] };

function fusedLayer(flat: Float32Array, dims: StackDims, l: number): tf.Tensor[] {
  const blocks = stackLayout(dims);
  const H = dims.hidden;
  const gates = TFJS_GATES[dims.cell];
  const G = gates.length;
  const fuse = (prefix: 'W_x' | 'W_h', rows: number) => {
    const out = new Float32Array(rows * G * H);
    gates.forEach((g, k) => {
      const w = viewOf(flat, blockIn(blocks, `${prefix}${g}_l${l}`));
      for (let r = 0; r < rows; r++) out.set(w.subarray(r * H, (r + 1) * H), r * G * H + k * H);
    });
    return out;
  };
  const bias = new Float32Array(G * H);
  gates.forEach((g, k) => bias.set(viewOf(flat, blockIn(blocks, `b_${g}_l${l}`)), k * H));
  const I = inputWidth(dims, l);
  return [tf.tensor2d(fuse('W_x', I), [I, G * H]), tf.tensor2d(fuse('W_h', H), [H, G * H]), tf.tensor1d(bias)];
}

export function buildStackLayersModel(flat: Float32Array, dims: StackDims, dropout: number): tf.LayersModel {
  const { vocabSize: V, hidden: H, cell } = dims;
  if (flat.length !== stackParamCount(dims)) throw new RangeError(`params hold ${flat.length} values, the stack needs ${stackParamCount(dims)}`);
  if (STACK_GATES[cell].length !== TFJS_GATES[cell].length) throw new Error(`gate lists of ${cell} disagree`);
  const blocks = stackLayout(dims);
  const model = tf.sequential({ name: `dptrain_stack_${cell}` });
  const weighted: [tf.layers.Layer, tf.Tensor[]][] = [];
  if (dims.embedding > 0) {
    const emb = tf.layers.embedding({ name: 'embedding', inputDim: V, outputDim: dims.embedding, inputShape: [null] });
    model.add(emb);
    weighted.push([emb, [tf.tensor2d(viewOf(flat, blockIn(blocks, EMBEDDING_BLOCK)), [V, dims.embedding])]]);
  }
  for (let l = 0; l < dims.layers; l++) {
    const common = { name: `${cell}_${l}`, units: H, returnSequences: true, activation: 'tanh' as const, useBias: true, ...(l === 0 && dims.embedding === 0 ? { inputShape: [null, V] } : {}) };
    const layer =
      cell === 'rnn'
        ? tf.layers.simpleRNN(common)
        : cell === 'gru'
          ? tf.layers.gru({ ...common, recurrentActivation: 'sigmoid' })
          : tf.layers.lstm({ ...common, recurrentActivation: 'sigmoid', unitForgetBias: false });
    model.add(layer);
    weighted.push([layer, fusedLayer(flat, dims, l)]);
    if (dropout > 0 && l < dims.layers - 1) model.add(tf.layers.dropout({ name: `dropout_${l}`, rate: dropout }));
  }
  const dense = tf.layers.dense({ name: 'output_dense', units: V, activation: 'softmax' });
  model.add(tf.layers.timeDistributed({ name: 'output', layer: dense }));
  weighted.push([model.layers[model.layers.length - 1], [tf.tensor2d(viewOf(flat, blockIn(blocks, 'W_hq')), [H, V]), tf.tensor1d(viewOf(flat, blockIn(blocks, 'b_q')))]]);
  try {
    for (const [layer, w] of weighted) layer.setWeights(w);
  } finally {
    tf.dispose(weighted.flatMap(([, w]) => w));
  }
  return model;
}
