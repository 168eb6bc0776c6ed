/**
 * Parameters of a deep recurrent stack (d2l "Deep Recurrent Neural Networks")
 * as one flat Float32Array:
 *   W_emb (V,E)                              only with --embedding E > 0; row k = token id k
 *   per layer l = 0..L-1, per gate g of the cell (suffix _l<l>, as PyTorch's weight_ih_l0):
 *     W_xg_l (in_l,H) W_hg_l (H,H) b_g_l (H)  in_0 = E (or V, one-hot), in_l = H above
 *   W_hq (H,V) b_q (V)                       output layer on the last layer
 * Gates in each cell's own order: lstm i, f, o, c (as char-lstm); gru z, r, h;
 * rnn h. As in the single-layer models, W_xg, W_hg and b_g of a gate are
 * contiguous, so [W_xg; W_hg; b_g] is one (in+H+1, H) matrix: one matMul per
 * gate forward and one per gate for its whole weight gradient.
 */
import type { Rng } from '../../data/rng.js';
import { initD2lParams, layoutSize, type ParamBlock } from '../descriptor.js';

export type StackCell = 'lstm' | 'gru' | 'rnn';

/** Gates in layout order; the last one is the tanh gate (candidate cell, candidate state, or the RNN's state). */
export const STACK_GATES: Record<StackCell, readonly string[]> = { lstm: ['i', 'f', 'o', 'c'], gru: ['z', 'r', 'h'], rnn: ['h'] };

/** Name of the embedding block: its rows are token ids (a row-sparse gradient can send only the rows of the tokens seen). */
export const EMBEDDING_BLOCK = 'W_emb';

export interface StackDims {
  cell: StackCell;
  vocabSize: number;
  hidden: number;
  layers: number;
  /** 0 = one-hot inputs. */
  embedding: number;
}

/** Width of layer l's input. */
export function inputWidth(d: StackDims, l: number): number {
  return l > 0 ? d.hidden : d.embedding > 0 ? d.embedding : d.vocabSize;
}

/** Carried state of one layer of one stream: [h] or, for the LSTM, [h | c]. */
export function layerStateWidth(d: StackDims): number {
  return d.cell === 'lstm' ? 2 * d.hidden : d.hidden;
}

export function stackLayout(d: StackDims): ParamBlock[] {
  const { vocabSize: V, hidden: H } = d;
  const out: ParamBlock[] = [];
  let offset = 0;
  const add = (name: string, shape: number[]) => {
    const size = shape.reduce((a, b) => a * b, 1);
    out.push({ name, shape, offset, size });
    offset += size;
  };
  if (d.embedding > 0) add(EMBEDDING_BLOCK, [V, d.embedding]);
  for (let l = 0; l < d.layers; l++) {
    for (const g of STACK_GATES[d.cell]) {
      add(`W_x${g}_l${l}`, [inputWidth(d, l), H]);
      add(`W_h${g}_l${l}`, [H, H]);
      add(`b_${g}_l${l}`, [H]);
    }
  }
  add('W_hq', [H, V]);
  add('b_q', [V]);
  return out;
}

export function stackParamCount(d: StackDims): number {
  return layoutSize(stackLayout(d));
}

/** d2l's normal(0, 0.01) weights (the embedding too) and zero biases. */
export function initStackParams(d: StackDims, rng: Rng): Float32Array {
  return initD2lParams(stackLayout(d), rng);
}

export function blockIn(blocks: readonly ParamBlock[], name: string): ParamBlock {
  const b = blocks.find((p) => p.name === name);
  if (!b) throw new RangeError(`no parameter ${name} in this stack's layout`);
  return b;
}

export function viewOf(flat: Float32Array, b: ParamBlock, len = b.size): Float32Array {
  return flat.subarray(b.offset, b.offset + len);
}
