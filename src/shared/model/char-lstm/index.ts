/**
 * The character-level LSTM of d2l chapter 9.5 as a model descriptor: one
 * hidden layer of `hidden` units, one-hot inputs, a dense output layer.
 * Carried state per stream: [h | c], 2 x hidden values.
 */
import * as tf from '@tensorflow/tfjs';
import type { ForwardSession, ModelDescriptor, ModelKind, TokenBatch, TrainStepper } from '../descriptor.js';
import { lstmForward, namedParams } from './forward.js';
import { buildLayersModel } from './layers.js';
import { initParams, paramCount, paramLayout, type ModelDims } from './params.js';
import { disposeState, disposeStepParams, lstmStep, makeStepParams, zeroState, type LstmState } from './step.js';

/** rows x 2H ([h | c] per row) -> tensors (B, H). */
function stateToTensors(flat: Float32Array, rows: number, H: number): LstmState {
  const h0 = new Float32Array(rows * H);
  const c0 = new Float32Array(rows * H);
  for (let r = 0; r < rows; r++) {
    h0.set(flat.subarray(r * 2 * H, r * 2 * H + H), r * H);
    c0.set(flat.subarray(r * 2 * H + H, (r + 1) * 2 * H), r * H);
  }
  return { h: tf.tensor2d(h0, [rows, H]), c: tf.tensor2d(c0, [rows, H]) };
}

function tensorsToState(s: LstmState, rows: number, H: number): Float32Array {
  const h1 = s.h.dataSync();
  const c1 = s.c.dataSync();
  const out = new Float32Array(rows * 2 * H);
  for (let i = 0; i < rows; i++) {
    out.set(h1.subarray(i * H, (i + 1) * H), i * 2 * H);
    out.set(c1.subarray(i * H, (i + 1) * H), i * 2 * H + H);
  }
  return out;
}

function descriptor(dims: ModelDims): ModelDescriptor {
  const H = dims.hidden;
  const blocks = paramLayout(dims);
  return {
    name: 'char-lstm',
    hyper: { hidden: H },
    vocabSize: dims.vocabSize,
    blocks,
    paramCount: paramCount(dims),
    stateWidth: 2 * H,
    summary: `LSTM hidden ${H}, vocabulary ${dims.vocabSize}`,
    sizeFlags: `--hidden ${H}`,
    init: (rng) => initParams(dims, rng),
    stepper(params: Float32Array): TrainStepper {
      const sp = makeStepParams(params, dims);
      return {
        step(batch: TokenBatch, state: Float32Array, gradOut?: Float32Array) {
          const rows = batch.rows;
          if (state.length !== rows * 2 * H) throw new RangeError(`state holds ${state.length} values, expected ${rows * 2 * H}`);
          const s0 = stateToTensors(state, rows, H);
          const r = lstmStep(sp, batch, s0, gradOut);
          disposeState(s0);
          const out = tensorsToState(r.state, rows, H);
          disposeState(r.state);
          return { grad: r.grad, lossSum: r.lossSum, tokenCount: r.tokenCount, state: out };
        },
        dispose: () => disposeStepParams(sp),
      };
    },
    forward(params: Float32Array, rows: number): ForwardSession {
      const p = namedParams(params, dims);
      let state = zeroState(rows, H);
      return {
        logits(xTimeMajor: Int32Array, numSteps: number) {
          const out = tf.tidy(() => {
            const f = lstmForward(p, xTimeMajor, numSteps, state, dims);
            return { logits: f.logits, h: f.state.h, c: f.state.c };
          });
          disposeState(state);
          state = { h: out.h, c: out.c };
          return out.logits;
        },
        dispose() {
          disposeState(state);
          tf.dispose(Object.values(p));
        },
      };
    },
    layersModel: (params) => buildLayersModel(params, dims),
  };
}

export const charLstm: ModelKind = {
  name: 'char-lstm',
  hyperKeys: ['hidden'],
  create: (vocabSize, hyper) => descriptor({ vocabSize, hidden: hyper.hidden }),
};
