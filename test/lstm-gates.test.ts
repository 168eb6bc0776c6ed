/**
 * The fused gate kernels of the LSTM step (src/shared/model/kernels/lstm-gates.ts)
 * run on the wasm backend only: these tests select it themselves, whatever
 * DPTRAIN_TEST_BACKEND says, and compare the fused step with the ops step and
 * with tfjs autodiff.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../src/shared/backend.js';
import { initParams, paramLayout, PARAM_NAMES, type ModelDims } from '../src/shared/model/char-lstm/params.js';
import { lstmStep, makeStepParams, disposeStepParams, disposeState, type Batch, type LstmState } from '../src/shared/model/char-lstm/step.js';
import { lossSumOf, namedParams } from '../src/shared/model/char-lstm/forward.js';
import { fusedGatesActive, setFusedGates } from '../src/shared/model/kernels/lstm-gates.js';
import { Rng } from '../src/shared/data/rng.js';

let wasm: Promise<unknown> | null = null;
const useWasm = () => (wasm ??= selectBackend({ backend: 'wasm', log: () => {} }));

function randomBatch(rng: Rng, rows: number, numSteps: number, V: number): Batch {
  const ids = () => new Int32Array(rows * numSteps).map(() => rng.int(0, V - 1));
  return { x: ids(), y: ids(), rows, numSteps };
}

function randomState(rng: Rng, rows: number, H: number): LstmState {
  const m = () => tf.tensor2d(Array.from({ length: rows * H }, () => rng.normal() * 0.5), [rows, H]);
  return { h: m(), c: m() };
}

function relError(a: ArrayLike<number>, r: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let j = 0; j < a.length; j++) {
    num += (a[j] - r[j]) ** 2;
    den += r[j] ** 2;
  }
  return Math.sqrt(num / den);
}

function stepWith(fused: boolean, flat: Float32Array, dims: ModelDims, batch: Batch, state: LstmState) {
  setFusedGates(fused);
  const sp = makeStepParams(flat, dims);
  try {
    assert.equal(fusedGatesActive(), fused);
    const r = lstmStep(sp, batch, state);
    const out = { grad: r.grad, lossSum: r.lossSum, h: r.state.h.dataSync().slice(), c: r.state.c.dataSync().slice() };
    disposeState(r.state);
    return out;
  } finally {
    disposeStepParams(sp);
    setFusedGates(true);
  }
}

// hidden 5: the kernels' JavaScript loops; hidden 8 (a multiple of 4): their WebAssembly SIMD programs (simd-rows.ts).
for (const hidden of [5, 8]) {
  test(`wasm, hidden ${hidden}: the fused step matches tfjs autodiff (relative error <= 1e-4 per parameter) and the ops step (<= 1e-5)`, async () => {
    await useWasm();
    const dims: ModelDims = { vocabSize: 7, hidden };
    const rng = new Rng(42);
    for (let trial = 0; trial < 3; trial++) {
      const flat = initParams(dims, rng).map(() => 0.5 * rng.normal());
      const rows = 3;
      const batch = randomBatch(rng, rows, 6, dims.vocabSize);
      const state = randomState(rng, rows, dims.hidden);
      const fused = stepWith(true, flat, dims, batch, state);
      const ops = stepWith(false, flat, dims, batch, state);
      const named = namedParams(flat, dims);
      const auto = tf.grads((...ps: tf.Tensor[]) => lossSumOf(Object.fromEntries(PARAM_NAMES.map((n, i) => [n, ps[i]])) as typeof named, batch, state, dims))(PARAM_NAMES.map((n) => named[n]));
      for (const [k, p] of paramLayout(dims).entries()) {
        const a = fused.grad.subarray(p.offset, p.offset + p.size);
        const rel = relError(a, auto[k].dataSync());
        assert.ok(rel <= 1e-4, `${p.name}: fused vs autodiff, relative error ${rel.toExponential(2)}`);
        const relOps = relError(a, ops.grad.subarray(p.offset, p.offset + p.size));
        assert.ok(relOps <= 1e-5, `${p.name}: fused vs ops, relative error ${relOps.toExponential(2)}`);
      }
      assert.ok(Math.abs(fused.lossSum - ops.lossSum) <= 1e-5 * Math.abs(ops.lossSum));
      assert.ok(relError(fused.h, ops.h) <= 1e-5 && relError(fused.c, ops.c) <= 1e-5, 'carried state differs');
      tf.dispose([...auto, ...Object.values(named)]);
      disposeState(state);
    }
  });
}

test('wasm: the fused step over two shards of streams adds up to the full batch (N workers equal one process)', async () => {
  await useWasm();
  const dims: ModelDims = { vocabSize: 6, hidden: 4 };
  const rng = new Rng(7);
  const flat = initParams(dims, rng).map(() => 0.4 * rng.normal());
  const rows = 4;
  const T = 5;
  const batch = randomBatch(rng, rows, T, dims.vocabSize);
  const state = randomState(rng, rows, dims.hidden);
  const full = stepWith(true, flat, dims, batch, state);
  const shard = (r0: number, r1: number) => {
    const sub: Batch = { x: batch.x.slice(r0 * T, r1 * T), y: batch.y.slice(r0 * T, r1 * T), rows: r1 - r0, numSteps: T };
    const H = dims.hidden;
    const s: LstmState = { h: tf.tensor2d(state.h.dataSync().slice(r0 * H, r1 * H), [r1 - r0, H]), c: tf.tensor2d(state.c.dataSync().slice(r0 * H, r1 * H), [r1 - r0, H]) };
    const out = stepWith(true, flat, dims, sub, s);
    disposeState(s);
    return out;
  };
  const a = shard(0, 1);
  const b = shard(1, rows);
  const sum = a.grad.map((v, i) => v + b.grad[i]);
  let maxDiff = 0;
  for (let i = 0; i < sum.length; i++) maxDiff = Math.max(maxDiff, Math.abs(sum[i] - full.grad[i]));
  assert.ok(maxDiff <= 1e-5, `max |shards - full| = ${maxDiff}`);
  assert.deepEqual(Array.from(full.h), [...a.h, ...b.h]);
  disposeState(state);
});

test('wasm: the fused step leaks no tensors', async () => {
  await useWasm();
  const dims: ModelDims = { vocabSize: 6, hidden: 4 };
  const rng = new Rng(1);
  const sp = makeStepParams(initParams(dims, rng), dims);
  let state: LstmState = { h: tf.zeros([2, 4]), c: tf.zeros([2, 4]) };
  let after1 = -1;
  for (let i = 1; i <= 100; i++) {
    const r = lstmStep(sp, randomBatch(rng, 2, 5, dims.vocabSize), state);
    disposeState(state);
    state = r.state;
    if (i === 1) after1 = tf.memory().numTensors;
  }
  assert.ok(fusedGatesActive());
  assert.equal(tf.memory().numTensors, after1);
  disposeState(state);
  disposeStepParams(sp);
});
