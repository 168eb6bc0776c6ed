/**
 * The LSTM's parameters as one flat Float32Array with a fixed layout: the
 * seeds' own list, in the seeds' order (d2l get_lstm_params):
 *   W_xi (V,H) W_hi (H,H) b_i (H)   input gate
 *   W_xf       W_hf       b_f       forget gate
 *   W_xo       W_ho       b_o       output gate
 *   W_xc       W_hc       b_c       candidate cell
 *   W_hq (H,V) b_q (V)              output layer
 * W_xg directly followed by W_hg means [W_xg; W_hg] is one contiguous (V+H, H)
 * matrix, so a gate is one matMul of [onehot(x_t), h_{t-1}] with it, and its
 * weight gradient is one matMul too: no slicing of tensors, which is what costs
 * most on the wasm backend.
 * The transport only ever sees the flat vector; the compute views it by name.
 */
import { Rng } from '../../data/rng.js';
import { initD2lParams, layoutSize } from '../descriptor.js';

export const GATES = ['i', 'f', 'o', 'c'] as const;
export type Gate = (typeof GATES)[number];
export const PARAM_NAMES = [
  'W_xi', 'W_hi', 'b_i',
  'W_xf', 'W_hf', 'b_f',
  'W_xo', 'W_ho', 'b_o',
  'W_xc', 'W_hc', 'b_c',
  'W_hq', 'b_q',
] as const;
export type ParamName = (typeof PARAM_NAMES)[number];

export interface ModelDims {
  vocabSize: number;
  hidden: number;
}

export interface ParamEntry {
  name: ParamName;
  shape: number[];
  offset: number;
  size: number;
  rowSparse?: true;
}

export function paramLayout({ vocabSize: V, hidden: H }: ModelDims): ParamEntry[] {
  let offset = 0;
  return PARAM_NAMES.map((name) => {
    const shape = name === 'W_hq' ? [H, V] : name === 'b_q' ? [V] : name.startsWith('W_x') ? [V, H] : name.startsWith('W_h') ? [H, H] : [H];
    const size = shape.reduce((a, b) => a * b, 1);
    // One-hot inputs: W_x*'s gradient has rows only for the tokens a batch holds.
    const entry: ParamEntry = name.startsWith('W_x') ? { name, shape, offset, size, rowSparse: true } : { name, shape, offset, size };
    offset += size;
    return entry;
  });
}

export function paramCount(dims: ModelDims): number {
  return layoutSize(paramLayout(dims));
}

/** normal(0, 0.01) weights and zero biases, as the d2l chapter's get_lstm_params. */
export function initParams(dims: ModelDims, rng: Rng): Float32Array {
  return initD2lParams(paramLayout(dims), rng);
}
