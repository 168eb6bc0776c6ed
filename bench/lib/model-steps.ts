/**
 * One training step of each cell, three ways, for part `models`: the model's
 * own (hand-derived) stepper, the same cell differentiated by tfjs autodiff
 * (tf.grads of its forward pass, gradients copied to the host as the stepper
 * does), and a matMul roofline; plus a kernel profile of the hand step
 * (matMul share vs the rest) and, on wasm, the step with its fused gate
 * kernels switched off (see CellBench.variant).
 */
import * as tf from '@tensorflow/tfjs';
import { lossSumOf, namedParams } from '../../src/shared/model/char-lstm/forward.js';
import { toTimeMajor } from '../../src/shared/model/char-lstm/step.js';
import { cellForward, cellNamedParams } from '../../src/shared/model/char-cells/forward.js';
import { createModel } from '../../src/shared/model/registry.js';
import type { ModelDescriptor, TokenBatch } from '../../src/shared/model/descriptor.js';
import { fusedGatesActive, setFusedGates } from '../../src/shared/model/kernels/lstm-gates.js';
import { setFusedCellGates } from '../../src/shared/model/kernels/cell-gates.js';
import { Rng } from '../../src/shared/data/rng.js';
import { computeMs, measure, median, type Sample } from './stats.js';

export const CELL_GATES = { rnn: 1, gru: 3, lstm: 4 } as const;
export type Cell = keyof typeof CELL_GATES;

export interface StepShape {
  B: number;
  T: number;
  V: number;
  H: number;
}

/**
 * MatMul FLOPs (a multiply-add is 2) of a cell with G gate blocks, per token.
 * Inference: the gates 2·G·(V+H)·H and the output layer 2·H·V. A training
 * step adds the backward pass: the weight gradients of the gates
 * 2·G·(V+H)·H, the recurrence dh_{t-1} 2·G·H·H, and the output layer's dW and
 * dh 2·2·H·V. Elementwise work (a few dozen FLOPs per hidden unit) is left out.
 */
export function flopsPerToken(cell: Cell, V: number, H: number) {
  const G = CELL_GATES[cell];
  const inference = 2 * G * (V + H) * H + 2 * H * V;
  const training = inference + 2 * G * (V + H) * H + 2 * G * H * H + 4 * H * V;
  return { inference, training };
}

export function randomBatch(rows: number, numSteps: number, V: number, seed: number): TokenBatch {
  const rng = new Rng(seed);
  const ids = () => Int32Array.from({ length: rows * numSteps }, () => Math.min(V - 1, Math.floor(rng.next() * V)));
  return { x: ids(), y: ids(), rows, numSteps };
}

export interface CellBench {
  cell: Cell;
  model: ModelDescriptor;
  hand(): void;
  /** On wasm: the step with its fused gate kernels off (the ops path every other backend runs). */
  variant: { label: string; run: () => void } | null;
  autodiff(): Float32Array[];
  dispose(): void;
}

export function cellBench(cell: Cell, shape: StepShape): CellBench {
  const { B, T, V, H } = shape;
  const model = createModel(`char-${cell}`, V, { hidden: H });
  const flat = model.init(new Rng(0));
  const batch = randomBatch(B, T, V, 1);
  let state: Float32Array = new Float32Array(B * model.stateWidth);
  const hand = () => {
    // What trainLocal does per step: a stepper for the parameter version, the step, the state back.
    const s = model.stepper(flat);
    state = s.step(batch, state).state;
    s.dispose();
  };
  const toggle = (set: (on: boolean) => void, on: boolean) => () => {
    set(on);
    try {
      hand();
    } finally {
      set(!on);
    }
  };
  const variant = !fusedGatesActive()
    ? null
    : { label: 'fused gate kernels off', run: toggle(cell === 'lstm' ? setFusedGates : setFusedCellGates, false) };

  let named: Record<string, tf.Tensor>;
  let loss: (p: Record<string, tf.Tensor>) => tf.Scalar;
  const h0 = tf.zeros([B, H]) as tf.Tensor2D;
  if (cell === 'lstm') {
    const dims = { vocabSize: V, hidden: H };
    const np = namedParams(flat, dims);
    named = np;
    loss = (p) => lossSumOf(p as typeof np, batch, { h: h0, c: h0 }, dims);
  } else {
    const dims = { cell, vocabSize: V, hidden: H };
    named = cellNamedParams(flat, dims);
    const yTm = toTimeMajor(batch.y, B, T);
    loss = (p) => {
      const { logits } = cellForward(p, toTimeMajor(batch.x, B, T), T, h0, dims);
      const labels = tf.oneHot(tf.tensor1d(yTm, 'int32'), V).asType('float32');
      return tf.neg(tf.sum(tf.mul(labels, tf.logSoftmax(logits)))) as tf.Scalar;
    };
  }
  const names = Object.keys(named);
  const gradFn = tf.grads((...ts: tf.Tensor[]) => loss(Object.fromEntries(names.map((n, k) => [n, ts[k]]))));
  const autodiff = () => {
    const gs = gradFn(names.map((n) => named[n]));
    const host = gs.map((g) => g.dataSync() as Float32Array);
    tf.dispose(gs);
    return host;
  };
  return {
    cell,
    model,
    hand,
    variant,
    autodiff,
    dispose: () => tf.dispose([h0, ...Object.values(named)]),
  };
}

/**
 * Kernel time of f, matMuls vs everything else, averaged over `runs` profiled
 * calls. Each kernel is timed by compute time, min(wall clock, process CPU
 * time), less what timing an empty function reports (as part \`step\` does), so
 * that other processes on a shared machine do not inflate it: meaningful where
 * kernels run on the calling thread (wasm, cpu).
 */
export async function kernelSplit(f: () => void, runs = 3) {
  const overheadMs = median(Array.from({ length: 2001 }, () => computeMs(measure(() => {}))));
  const backend = tf.backend() as unknown as { time(g: () => void): Promise<{ kernelMs: number }> };
  const own = Object.prototype.hasOwnProperty.call(backend, 'time');
  const original = backend.time;
  backend.time = async (g: () => void) => ({ kernelMs: Math.max(0, computeMs(measure(g)) - overheadMs) });
  let calls = 0;
  let matMulCalls = 0;
  let matMulMs = 0;
  let otherMs = 0;
  try {
    for (let r = 0; r < runs; r++) {
      const info = await tf.profile(f);
      for (const k of info.kernels) {
        const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
        calls++;
        if (/MatMul/.test(k.name)) {
          matMulMs += ms;
          matMulCalls++;
        } else otherMs += ms;
      }
    }
  } finally {
    if (own) backend.time = original;
    else delete (backend as { time?: unknown }).time;
  }
  return { calls: calls / runs, matMulCalls: matMulCalls / runs, matMulMs: matMulMs / runs, otherMs: otherMs / runs };
}

/** Time per matMul of [m,k]x[k,n], in blocks of `reps` calls. */
export function matMulProbe(m: number, k: number, n: number, reps = 8) {
  const a = tf.randomNormal([m, k]) as tf.Tensor2D;
  const b = tf.randomNormal([k, n]) as tf.Tensor2D;
  return {
    flops: 2 * m * k * n,
    sample(): Sample {
      const s = measure(() => {
        for (let r = 0; r < reps; r++) {
          const c = tf.matMul(a, b);
          if (r === reps - 1) c.dataSync();
          c.dispose();
        }
      });
      return { wallMs: s.wallMs / reps, cpuMs: s.cpuMs / reps };
    },
    dispose: () => tf.dispose([a, b]),
  };
}
