/**
 * Deep recurrent stacks (d2l "Deep Recurrent Neural Networks") as model
 * descriptors stack-lstm, stack-gru and stack-rnn: `layers` layers of
 * `hidden` units, layer l reading layer l−1's hidden state, optional dropout
 * between layers, one-hot or embedded (`embedding` > 0) inputs, a dense output
 * layer on the last layer. One layer on one-hot inputs without dropout is the
 * char-X model (the config picks it: registry.ts modelNameFor).
 *
 * Carried state per stream: every layer's, [l0: h (c) | l1: h (c) | …].
 * Hyperparameters: hidden, layers, embedding, dropout, and the run's seed,
 * from which the dropout masks are drawn (dropout.ts).
 */
import * as tf from '@tensorflow/tfjs';
import type { ForwardSession, HyperRule, ModelDescriptor, ModelKind, TokenBatch, TrainStepper } from '../descriptor.js';
import { stackForward, stackNamedParams, type LayerState } from './forward.js';
import { buildStackLayersModel } from './layers.js';
import { initStackParams, layerStateWidth, stackLayout, stackParamCount, type StackCell, type StackDims } from './params.js';
import { disposeStackStepParams, makeStackStepParams, stackStep } from './step.js';

const TITLE: Record<StackCell, string> = { lstm: 'LSTM', gru: 'GRU', rnn: 'RNN' };

export interface StackHyper {
  hidden: number;
  layers: number;
  embedding: number;
  dropout: number;
  seed: number;
}

function descriptor(cell: StackCell, vocabSize: number, hp: StackHyper): ModelDescriptor {
  const dims: StackDims = { cell, vocabSize, hidden: hp.hidden, layers: hp.layers, embedding: hp.embedding };
  const H = hp.hidden;
  const extras = [hp.embedding > 0 ? `embedding ${hp.embedding}` : 'one-hot inputs', ...(hp.dropout > 0 ? [`dropout ${hp.dropout}`] : [])];
  return {
    name: `stack-${cell}`,
    hyper: { ...hp },
    vocabSize,
    blocks: stackLayout(dims),
    paramCount: stackParamCount(dims),
    stateWidth: hp.layers * layerStateWidth(dims),
    summary: `${hp.layers}-layer ${TITLE[cell]} hidden ${H}, ${extras.join(', ')}, vocabulary ${vocabSize}`,
    sizeFlags: `--hidden ${H} --layers ${hp.layers}${hp.embedding > 0 ? ` --embedding ${hp.embedding}` : ''} --cell ${cell}`,
    init: (rng) => initStackParams(dims, rng),
    stepper(params: Float32Array): TrainStepper {
      const sp = makeStackStepParams(params, dims, { dropout: hp.dropout, seed: hp.seed });
      return {
        step: (batch: TokenBatch, state: Float32Array) => stackStep(sp, batch, state),
        dispose: () => disposeStackStepParams(sp),
      };
    },
    forward(params: Float32Array, rows: number): ForwardSession {
      const p = stackNamedParams(params, dims);
      const zero = () => tf.zeros([rows, H]) as tf.Tensor2D;
      let state: LayerState[] = Array.from({ length: hp.layers }, () => (cell === 'lstm' ? { h: zero(), c: zero() } : { h: zero() }));
      const disposeState = () => tf.dispose(state.flatMap((s) => (s.c ? [s.h, s.c] : [s.h])));
      return {
        logits(xTimeMajor: Int32Array, numSteps: number) {
          const out = tf.tidy(() => {
            const f = stackForward(p, xTimeMajor, numSteps, state, dims);
            return { logits: f.logits, state: f.state.flatMap((s) => (s.c ? [s.h, s.c] : [s.h])) };
          });
          disposeState();
          const per = cell === 'lstm' ? 2 : 1;
          state = Array.from({ length: hp.layers }, (_, l) => (cell === 'lstm' ? { h: out.state[l * per] as tf.Tensor2D, c: out.state[l * per + 1] as tf.Tensor2D } : { h: out.state[l] as tf.Tensor2D }));
          return out.logits;
        },
        dispose() {
          disposeState();
          tf.dispose(Object.values(p));
        },
      };
    },
    layersModel: (params) => buildStackLayersModel(params, dims, hp.dropout),
  };
}

const RULES: Record<keyof StackHyper, HyperRule> = {
  hidden: { integer: true, min: 1 },
  layers: { integer: true, min: 1, max: 64 },
  embedding: { integer: true, min: 0 },
  dropout: { integer: false, min: 0, max: 1, belowMax: true },
  seed: { integer: true, min: 0, max: 4294967295 },
};

function kind(cell: StackCell): ModelKind {
  return {
    name: `stack-${cell}`,
    hyperKeys: Object.keys(RULES),
    hyperRules: RULES,
    create: (vocabSize, h) => descriptor(cell, vocabSize, { hidden: h.hidden, layers: h.layers, embedding: h.embedding, dropout: h.dropout, seed: h.seed }),
  };
}

export const stackLstm: ModelKind = kind('lstm');
export const stackGru: ModelKind = kind('gru');
export const stackRnn: ModelKind = kind('rnn');
