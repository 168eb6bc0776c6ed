/**
 * The RNN's and GRU's fused gate kernels (src/shared/model/kernels/cell-gates.ts;
 * on by default there) run on the wasm backend only: these tests select it and switch them on and off, and compare
 * the fused step with the ops step, shard by shard, and count tensors.
 * (test/cell-step.test.ts checks either path against autodiff, on the backend
 * DPTRAIN_TEST_BACKEND names.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../src/shared/backend.js';
import { initCellParams, type CellDims, type CellName } from '../src/shared/model/char-cells/params.js';
import { cellStep, makeCellStepParams, disposeCellStepParams } from '../src/shared/model/char-cells/step.js';
import { fusedCellGatesActive, setFusedCellGates } from '../src/shared/model/kernels/cell-gates.js';
import type { TokenBatch } from '../src/shared/model/descriptor.js';
import { Rng } from '../src/shared/data/rng.js';

let wasm: Promise<unknown> | null = null;
const useWasm = () => (wasm ??= selectBackend({ backend: 'wasm', log: () => {} }));

function randomBatch(rng: Rng, rows: number, numSteps: number, V: number): TokenBatch {
  const ids = () => new Int32Array(rows * numSteps).map(() => rng.int(0, V - 1));
  return { x: ids(), y: ids(), rows, numSteps };
}

function stepWith(fused: boolean, flat: Float32Array, dims: CellDims, batch: TokenBatch, h0: Float32Array) {
  setFusedCellGates(fused);
  const sp = makeCellStepParams(flat, dims);
  const h = tf.tensor2d(h0, [batch.rows, dims.hidden]);
  try {
    assert.equal(fusedCellGatesActive(), fused);
    const r = cellStep(sp, batch, h);
    const out = { grad: r.grad, lossSum: r.lossSum, h: r.h.dataSync().slice() };
    r.h.dispose();
    return out;
  } finally {
    h.dispose();
    disposeCellStepParams(sp);
    setFusedCellGates(true);
  }
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);

for (const cell of ['rnn', 'gru'] as CellName[]) {
  // hidden 5: the kernels' JavaScript loops; hidden 8 (a multiple of 4): their WebAssembly SIMD programs (simd-rows.ts).
  for (const hidden of [5, 8]) {
    test(`wasm ${cell}, hidden ${hidden}: the fused step equals the ops step (1e-5 of the largest gradient) and its shards add up to the full batch`, async () => {
      await useWasm();
      const dims: CellDims = { cell, vocabSize: 6, hidden };
      const rng = new Rng(11);
      const flat = initCellParams(dims, rng).map(() => 0.5 * rng.normal());
      const rows = 4;
      const T = 5;
      const batch = randomBatch(rng, rows, T, dims.vocabSize);
      const h0 = Float32Array.from({ length: rows * dims.hidden }, () => 0.5 * rng.normal());
      const fused = stepWith(true, flat, dims, batch, h0);
      const ops = stepWith(false, flat, dims, batch, h0);
      const scale = maxAbs(ops.grad);
      assert.ok(scale > 0);
      assert.ok(maxDiff(fused.grad, ops.grad) <= 1e-5 * scale, `fused vs ops: ${maxDiff(fused.grad, ops.grad)} (largest ${scale})`);
      assert.ok(Math.abs(fused.lossSum - ops.lossSum) <= 1e-5 * Math.abs(ops.lossSum));
      assert.ok(maxDiff(fused.h, ops.h) <= 1e-6);
      const H = dims.hidden;
      const shard = (r0: number, r1: number) =>
        stepWith(true, flat, dims, { x: batch.x.slice(r0 * T, r1 * T), y: batch.y.slice(r0 * T, r1 * T), rows: r1 - r0, numSteps: T }, h0.slice(r0 * H, r1 * H));
      const a = shard(0, 1);
      const b = shard(1, rows);
      assert.ok(maxDiff(a.grad.map((v, i) => v + b.grad[i]), fused.grad) <= 1e-5 * scale);
      assert.deepEqual(Array.from(fused.h), [...a.h, ...b.h]);
    });
  }

  test(`wasm ${cell}: the fused step leaks no tensors`, async () => {
    await useWasm();
    setFusedCellGates(true);
    const dims: CellDims = { cell, vocabSize: 6, hidden: 4 };
    const rng = new Rng(2);
    const sp = makeCellStepParams(initCellParams(dims, rng), dims);
    let h = tf.zeros([2, 4]) as tf.Tensor2D;
    let after1 = -1;
    for (let i = 1; i <= 50; i++) {
      const r = cellStep(sp, randomBatch(rng, 2, 5, dims.vocabSize), h);
      h.dispose();
      h = r.h;
      if (i === 1) after1 = tf.memory().numTensors;
    }
    assert.ok(fusedCellGatesActive());
    assert.equal(tf.memory().numTensors, after1);
    h.dispose();
    disposeCellStepParams(sp);
  });
}
