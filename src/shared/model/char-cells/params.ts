/**
 * Parameters of the character RNN and GRU of d2l ("Recurrent Neural Networks
 * from Scratch", "Gated Recurrent Units") as one flat Float32Array, in d2l's
 * get_params order:
 *   rnn: W_xh (V,H) W_hh (H,H) b_h (H)                      hidden state
 *   gru: W_xz W_hz b_z | W_xr W_hr b_r | W_xh W_hh b_h      update, reset, candidate
 *   both: W_hq (H,V) b_q (V)                                output layer
 * As in the LSTM's layout, W_xg, W_hg and b_g of a gate are contiguous, so
 * [W_xg; W_hg; b_g] is one (V+H+1, H) matrix: one matMul per gate forward and
 * one per gate for its whole weight gradient, with no column slicing.
 */
import type { Rng } from '../../data/rng.js';
import { initD2lParams, layoutSize, type ParamBlock } from '../descriptor.js';

export type CellName = 'rnn' | 'gru';

/** Gates of each cell, in layout order; 'h' is the hidden state (rnn) or the candidate (gru). */
export const CELL_GATES: Record<CellName, readonly string[]> = { rnn: ['h'], gru: ['z', 'r', 'h'] };

export interface CellDims {
  cell: CellName;
  vocabSize: number;
  hidden: number;
}

export function cellLayout({ cell, vocabSize: V, hidden: H }: CellDims): ParamBlock[] {
  const out: ParamBlock[] = [];
  let offset = 0;
  const add = (name: string, shape: number[]) => {
    const size = shape.reduce((a, b) => a * b, 1);
    // One-hot inputs: W_x*'s gradient has rows only for the tokens a batch holds.
    out.push(name.startsWith('W_x') ? { name, shape, offset, size, rowSparse: true } : { name, shape, offset, size });
    offset += size;
  };
  for (const g of CELL_GATES[cell]) {
    add(`W_x${g}`, [V, H]);
    add(`W_h${g}`, [H, H]);
    add(`b_${g}`, [H]);
  }
  add('W_hq', [H, V]);
  add('b_q', [V]);
  return out;
}

export function cellParamCount(dims: CellDims): number {
  return layoutSize(cellLayout(dims));
}

/** normal(0, 0.01) weights and zero biases, as d2l's get_params. */
export function initCellParams(dims: CellDims, rng: Rng): Float32Array {
  return initD2lParams(cellLayout(dims), rng);
}

/** The block by name (throws on a name the layout lacks). */
export function blockOf(dims: CellDims, name: string): ParamBlock {
  const b = cellLayout(dims).find((p) => p.name === name);
  if (!b) throw new RangeError(`no parameter ${name} in the ${dims.cell} layout`);
  return b;
}

export function viewOf(flat: Float32Array, b: ParamBlock, len = b.size): Float32Array {
  return flat.subarray(b.offset, b.offset + len);
}
