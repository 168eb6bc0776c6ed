/**
 * What the rest of dptrain knows about a model, and nothing more.
 *
 * The coordinator, the wire protocol, the worker and the checkpoint see the
 * parameters as one flat Float32Array of `paramCount` values and the carried
 * state of a stream as `stateWidth` values; only the model's own files know
 * what is inside. A model is a file in this folder (a ModelKind) plus one line
 * in registry.ts.
 */
import type * as tf from '@tensorflow/tfjs';
import type { Rng } from '../data/rng.js';

/** A named block of the flat parameter vector (the optimizer keeps one variable per block). */
export interface ParamBlock {
  name: string;
  shape: number[];
  offset: number;
  size: number;
  /**
   * A (vocabulary, n) matrix indexed by input token id (one-hot input weights,
   * an embedding): only the rows of tokens that occur as inputs in a batch get
   * a nonzero gradient, so a worker may send just those rows.
   */
  rowSparse?: true;
}

/** The row-sparse blocks of a layout as the wire needs them: offset, rows, columns. */
export function rowSparseBlocks(blocks: readonly ParamBlock[]): { offset: number; rows: number; cols: number }[] {
  return blocks.filter((b) => b.rowSparse === true && b.shape.length === 2).map((b) => ({ offset: b.offset, rows: b.shape[0], cols: b.shape[1] }));
}

/** The length of the flat vector a layout describes. */
export function layoutSize(blocks: readonly ParamBlock[]): number {
  const last = blocks.at(-1);
  return last ? last.offset + last.size : 0;
}

/** d2l's initialisation: normal(0, 0.01) weights, zero biases (blocks named b_*), drawn block by block in layout order. */
export function initD2lParams(blocks: readonly ParamBlock[], rng: Rng): Float32Array {
  const flat = new Float32Array(layoutSize(blocks));
  for (const p of blocks) {
    if (p.name.startsWith('b_')) continue;
    for (let i = p.offset; i < p.offset + p.size; i++) flat[i] = 0.01 * rng.normal();
  }
  return flat;
}

/** Token ids of a batch, row-major (rows x numSteps): inputs x and targets y. */
export interface TokenBatch {
  x: Int32Array;
  y: Int32Array;
  rows: number;
  numSteps: number;
  /**
   * Where the batch sits in the run, for randomness inside a step (dropout
   * masks are a function of the run's seed, the step and the global stream id
   * of each row, so N workers draw what one process draws): the global stream
   * index of each row and the optimizer step (= the parameters' version).
   * Models without randomness ignore them.
   */
  streams?: Int32Array;
  step?: number;
}

export interface TrainStepResult {
  /** Gradient SUM over all rows and steps, in the flat parameter layout. */
  grad: Float32Array;
  lossSum: number;
  tokenCount: number;
  /** Carried state after the batch, rows x stateWidth. */
  state: Float32Array;
}

/** The training step for one parameter version: (batch, carried state) -> sums and new state. */
export interface TrainStepper {
  /**
   * `state` is rows x stateWidth (zeros for a fresh stream). `gradOut` (paramCount values), where given, is
   * an array the step may write the gradient into, every value, and return as `grad` instead of a fresh
   * one (the worker passes the gradient's place in its reply frame); callers read `grad` either way.
   */
  step(batch: TokenBatch, state: Float32Array, gradOut?: Float32Array): TrainStepResult;
  dispose(): void;
}

/** The forward pass over `rows` parallel streams, carrying their state from call to call (evaluation, generation). */
export interface ForwardSession {
  /** Logits (numSteps * rows, vocabSize) for time-major inputs; the caller disposes the tensor. */
  logits(xTimeMajor: Int32Array, numSteps: number): tf.Tensor2D;
  dispose(): void;
}

export interface ModelDescriptor {
  /** Registry name, e.g. 'char-lstm'. */
  readonly name: string;
  /** Hyperparameters by their config key (e.g. { hidden: 256 }): with `name` and the vocabulary size they determine the model. */
  readonly hyper: Readonly<Record<string, number>>;
  readonly vocabSize: number;
  readonly blocks: readonly ParamBlock[];
  readonly paramCount: number;
  /** Float32 values of carried state per stream (0 for a model without state). */
  readonly stateWidth: number;
  /** One line for logs: 'LSTM hidden 256, vocabulary 28'. */
  readonly summary: string;
  /** The flags that size it, for messages: '--hidden 256'. */
  readonly sizeFlags: string;
  /** Fresh parameters from the run's RNG. */
  init(rng: Rng): Float32Array;
  stepper(params: Float32Array): TrainStepper;
  forward(params: Float32Array, rows: number): ForwardSession;
  /** The trained model as a TF.js Layers model (one-hot in, softmax out); the caller disposes it. */
  layersModel(params: Float32Array): tf.LayersModel;
}

/** What values a hyperparameter may take (bounds inclusive unless `belowMax`). */
export interface HyperRule {
  integer: boolean;
  min: number;
  max?: number;
  /** The value must be strictly below `max` (a dropout probability below 1). */
  belowMax?: boolean;
}

/** A registry entry: how to build a descriptor from a vocabulary size and the run's config. */
export interface ModelKind {
  readonly name: string;
  /** Config keys (camelCase) holding its hyperparameters; each a positive integer unless `hyperRules` says otherwise. */
  readonly hyperKeys: readonly string[];
  readonly hyperRules?: Readonly<Record<string, HyperRule>>;
  create(vocabSize: number, hyper: Readonly<Record<string, number>>): ModelDescriptor;
}
