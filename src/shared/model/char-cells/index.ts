/**
 * The character RNN and GRU of d2l as model descriptors: one hidden layer of
 * `hidden` units, one-hot inputs, a dense output layer. Carried state per
 * stream: h, `hidden` values.
 */
import * as tf from '@tensorflow/tfjs';
import type { ForwardSession, ModelDescriptor, ModelKind, TokenBatch, TrainStepper } from '../descriptor.js';
import { cellForward, cellNamedParams } from './forward.js';
import { buildCellLayersModel } from './layers.js';
import { cellLayout, cellParamCount, initCellParams, type CellName, type CellDims } from './params.js';
import { cellStep, disposeCellStepParams, makeCellStepParams } from './step.js';

const TITLE: Record<CellName, string> = { rnn: 'RNN', gru: 'GRU' };

function descriptor(dims: CellDims): ModelDescriptor {
  const H = dims.hidden;
  return {
    name: `char-${dims.cell}`,
    hyper: { hidden: H },
    vocabSize: dims.vocabSize,
    blocks: cellLayout(dims),
    paramCount: cellParamCount(dims),
    stateWidth: H,
    summary: `${TITLE[dims.cell]} hidden ${H}, vocabulary ${dims.vocabSize}`,
    sizeFlags: `--cell ${dims.cell} --hidden ${H}`,
    init: (rng) => initCellParams(dims, rng),
    stepper(params: Float32Array): TrainStepper {
      const sp = makeCellStepParams(params, dims);
      return {
        step(batch: TokenBatch, state: Float32Array, gradOut?: Float32Array) {
          const rows = batch.rows;
          if (state.length !== rows * H) throw new RangeError(`state holds ${state.length} values, expected ${rows * H}`);
          const h0 = tf.tensor2d(state, [rows, H]);
          try {
            const r = cellStep(sp, batch, h0, gradOut);
            const out = r.h.dataSync().slice() as Float32Array;
            r.h.dispose();
            return { grad: r.grad, lossSum: r.lossSum, tokenCount: r.tokenCount, state: out };
          } finally {
            h0.dispose();
          }
        },
        dispose: () => disposeCellStepParams(sp),
      };
    },
    forward(params: Float32Array, rows: number): ForwardSession {
      const p = cellNamedParams(params, dims);
      let h = tf.zeros([rows, H]) as tf.Tensor2D;
      return {
        logits(xTimeMajor: Int32Array, numSteps: number) {
          const out = tf.tidy(() => cellForward(p, xTimeMajor, numSteps, h, dims));
          h.dispose();
          h = out.h;
          return out.logits;
        },
        dispose() {
          h.dispose();
          tf.dispose(Object.values(p));
        },
      };
    },
    layersModel: (params) => buildCellLayersModel(params, dims),
  };
}

function kind(cell: CellName): ModelKind {
  return { name: `char-${cell}`, hyperKeys: ['hidden'], create: (vocabSize, hyper) => descriptor({ cell, vocabSize, hidden: hyper.hidden }) };
}

export const charRnn: ModelKind = kind('rnn');
export const charGru: ModelKind = kind('gru');
