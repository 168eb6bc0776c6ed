import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tf, testBackend } from './support/tf.js';
import { initParams, paramLayout, PARAM_NAMES, type ModelDims } from '../src/shared/model/char-lstm/params.js';
import { lstmStep, makeStepParams, disposeStepParams, zeroState, disposeState, type Batch } from '../src/shared/model/char-lstm/step.js';
import { lossSumOf, namedParams } from '../src/shared/model/char-lstm/forward.js';
import { Rng } from '../src/shared/data/rng.js';

function randomBatch(rng: Rng, rows: number, numSteps: number, V: number): Batch {
  const x = new Int32Array(rows * numSteps).map(() => rng.int(0, V - 1));
  const y = new Int32Array(rows * numSteps).map(() => rng.int(0, V - 1));
  return { x, y, rows, numSteps };
}

test('hand-derived BPTT matches tfjs autodiff (relative error <= 1e-4 for every parameter)', async () => {
  await testBackend();
  const dims: ModelDims = { vocabSize: 7, hidden: 5 };
  const rng = new Rng(42);
  for (let trial = 0; trial < 3; trial++) {
    // Large random parameters and state, so no gate sits in its linear regime.
    const flat = initParams(dims, rng).map(() => 0.5 * rng.normal());
    const rows = 3;
    const batch = randomBatch(rng, rows, 6, dims.vocabSize);
    const state = {
      h: tf.tensor2d(Array.from({ length: rows * dims.hidden }, () => rng.normal() * 0.5), [rows, dims.hidden]),
      c: tf.tensor2d(Array.from({ length: rows * dims.hidden }, () => rng.normal() * 0.5), [rows, dims.hidden]),
    };
    const sp = makeStepParams(flat, dims);
    const ours = lstmStep(sp, batch, state);
    const named = namedParams(flat, dims);
    const auto = tf.grads((...ps: tf.Tensor[]) => {
      const p = Object.fromEntries(PARAM_NAMES.map((n, i) => [n, ps[i]])) as typeof named;
      return lossSumOf(p, batch, state, dims);
    })(PARAM_NAMES.map((n) => named[n]));
    const refLoss = lossSumOf(named, batch, state, dims).dataSync()[0];
    assert.ok(Math.abs(ours.lossSum - refLoss) <= 1e-5 * Math.abs(refLoss), `loss ${ours.lossSum} vs ${refLoss}`);
    for (const [k, p] of paramLayout(dims).entries()) {
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
      assert.ok(rel <= 1e-4, `${p.name}: relative error ${rel.toExponential(2)}`);
    }
    assert.equal(ours.tokenCount, 18);
    tf.dispose([...auto, ...Object.values(named)]);
    disposeStepParams(sp);
    disposeState(ours.state);
    disposeState(state);
  }
});

test('the carried state is the state after the last step', async () => {
  await testBackend();
  const dims: ModelDims = { vocabSize: 5, hidden: 4 };
  const rng = new Rng(3);
  const flat = initParams(dims, rng).map(() => 0.3 * rng.normal());
  const batch = randomBatch(rng, 2, 4, dims.vocabSize);
  const sp = makeStepParams(flat, dims);
  const s0 = zeroState(2, 4);
  const r = lstmStep(sp, batch, s0);
  const named = namedParams(flat, dims);
  const { lstmForward } = await import('../src/shared/model/char-lstm/forward.js');
  const { toTimeMajor } = await import('../src/shared/model/char-lstm/step.js');
  const ref = lstmForward(named, toTimeMajor(batch.x, 2, 4), 4, s0, dims);
  assert.deepEqual(Array.from(r.state.h.dataSync()).map((v) => v.toFixed(5)), Array.from(ref.state.h.dataSync()).map((v) => v.toFixed(5)));
  assert.deepEqual(Array.from(r.state.c.dataSync()).map((v) => v.toFixed(5)), Array.from(ref.state.c.dataSync()).map((v) => v.toFixed(5)));
});

test('a step leaks no tensors: numTensors after step 300 equals after step 1', async () => {
  await testBackend();
  const dims: ModelDims = { vocabSize: 6, hidden: 4 };
  const rng = new Rng(1);
  const sp = makeStepParams(initParams(dims, rng), dims);
  let state = zeroState(2, dims.hidden);
  let after1 = -1;
  for (let i = 1; i <= 300; i++) {
    const r = lstmStep(sp, randomBatch(rng, 2, 5, dims.vocabSize), state);
    disposeState(state);
    state = r.state;
    if (i === 1) after1 = tf.memory().numTensors;
  }
  assert.equal(tf.memory().numTensors, after1);
  disposeState(state);
  disposeStepParams(sp);
});
