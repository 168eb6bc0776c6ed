import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tf, testBackend } from './support/tf.js';
import { cellLayout, initCellParams, type CellDims, type CellName } from '../src/shared/model/char-cells/params.js';
import { cellStep, makeCellStepParams, disposeCellStepParams } from '../src/shared/model/char-cells/step.js';
import { cellForward, cellNamedParams } from '../src/shared/model/char-cells/forward.js';
import { toTimeMajor } from '../src/shared/model/char-lstm/step.js';
import type { TokenBatch } from '../src/shared/model/descriptor.js';
import { Rng } from '../src/shared/data/rng.js';

function randomBatch(rng: Rng, rows: number, numSteps: number, V: number): TokenBatch {
  const x = new Int32Array(rows * numSteps).map(() => rng.int(0, V - 1));
  const y = new Int32Array(rows * numSteps).map(() => rng.int(0, V - 1));
  return { x, y, rows, numSteps };
}

function lossSumOf(p: Record<string, tf.Tensor>, batch: TokenBatch, h0: tf.Tensor2D, dims: CellDims): tf.Scalar {
  const { logits } = cellForward(p, toTimeMajor(batch.x, batch.rows, batch.numSteps), batch.numSteps, h0, dims);
  const labels = tf.oneHot(tf.tensor1d(toTimeMajor(batch.y, batch.rows, batch.numSteps), 'int32'), dims.vocabSize).asType('float32');
  return tf.neg(tf.sum(tf.mul(labels, tf.logSoftmax(logits)))) as tf.Scalar;
}

for (const cell of ['rnn', 'gru'] as CellName[]) {
  test(`${cell}: hand-derived BPTT matches tfjs autodiff (relative error <= 1e-4 for every parameter block)`, async () => {
    await testBackend();
    const dims: CellDims = { cell, vocabSize: 7, hidden: 5 };
    const rng = new Rng(42);
    let worst = 0;
    for (let trial = 0; trial < 3; trial++) {
      const flat = initCellParams(dims, rng).map(() => 0.5 * rng.normal());
      const rows = 3;
      const batch = randomBatch(rng, rows, 6, dims.vocabSize);
      const h0 = tf.tensor2d(Array.from({ length: rows * dims.hidden }, () => rng.normal() * 0.5), [rows, dims.hidden]);
      const sp = makeCellStepParams(flat, dims);
      const ours = cellStep(sp, batch, h0);
      const named = cellNamedParams(flat, dims);
      const names = cellLayout(dims).map((b) => b.name);
      const auto = tf.grads((...ps: tf.Tensor[]) => lossSumOf(Object.fromEntries(names.map((n, i) => [n, ps[i]])), batch, h0, dims))(names.map((n) => named[n]));
      const refLoss = tf.tidy(() => lossSumOf(named, batch, h0, dims).dataSync()[0]);
      assert.ok(Math.abs(ours.lossSum - refLoss) <= 1e-5 * Math.abs(refLoss), `loss ${ours.lossSum} vs ${refLoss}`);
      const refH = tf.tidy(() => cellForward(named, toTimeMajor(batch.x, rows, 6), 6, h0, dims).h.dataSync());
      const gotH = ours.h.dataSync();
      for (let j = 0; j < refH.length; j++) assert.ok(Math.abs(gotH[j] - refH[j]) <= 1e-5, `state ${j}: ${gotH[j]} vs ${refH[j]}`);
      for (const [k, p] of cellLayout(dims).entries()) {
        const a = ours.grad.subarray(p.offset, p.offset + p.size);
        const r = auto[k].dataSync();
        let num = 0;
        let den = 0;
        for (let j = 0; j < a.length; j++) {
          num += (a[j] - r[j]) ** 2;
          den += r[j] ** 2;
        }
        assert.ok(den > 0, `${p.name}: autodiff gradient is all zero`);
        const rel = Math.sqrt(num / den);
        worst = Math.max(worst, rel);
        assert.ok(rel <= 1e-4, `${p.name}: relative error ${rel.toExponential(2)}`);
      }
      assert.equal(ours.tokenCount, 18);
      tf.dispose([...auto, ...Object.values(named), ours.h, h0]);
      disposeCellStepParams(sp);
    }
    console.log(`${cell}: worst relative error of a parameter block ${worst.toExponential(2)}`);
  });

  test(`${cell}: a step leaks no tensors: numTensors after step 300 equals after step 1`, async () => {
    await testBackend();
    const dims: CellDims = { cell, vocabSize: 6, hidden: 4 };
    const rng = new Rng(1);
    const sp = makeCellStepParams(initCellParams(dims, rng), dims);
    let h = tf.zeros([2, dims.hidden]) as tf.Tensor2D;
    let after1 = -1;
    for (let i = 1; i <= 300; i++) {
      const r = cellStep(sp, randomBatch(rng, 2, 5, dims.vocabSize), h);
      h.dispose();
      h = r.h;
      if (i === 1) after1 = tf.memory().numTensors;
    }
    assert.equal(tf.memory().numTensors, after1);
    h.dispose();
    disposeCellStepParams(sp);
  });
}
