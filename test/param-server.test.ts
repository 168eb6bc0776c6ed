/**
 * The parameter server's SGD runs in JavaScript (the coordinator's critical
 * path): it must be tfjs's SGD bit for bit, clipping included, and keep the
 * iteration count a checkpoint stores.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { ParameterServer } from '../src/shared/train/param-server.js';
import { createModel } from '../src/shared/model/registry.js';
import { Rng } from '../src/shared/data/rng.js';
import { testBackend } from './support/tf.js';
import { simdSum } from '../src/shared/wire/simd-sum.js';
import { GradAccumulator } from '../src/shared/wire/accumulate.js';

test('SGD in JavaScript equals tfjs SGD bit for bit over steps with and without clipping; iterations counted', async () => {
  await testBackend();
  const model = createModel('char-lstm', 11, { hidden: 6 });
  const rng = new Rng(3);
  const init = model.init(rng);
  const lr = 0.7;
  const clip = 0.05;
  const server = new ParameterServer(model, init, { optimizer: 'sgd', lr, clip });
  const v = tf.variable(tf.tensor1d(init));
  const opt = tf.train.sgd(lr);
  let clipped = 0;
  for (let step = 0; step < 6; step++) {
    // Large steps get clipped, small ones do not.
    const scale = step % 2 === 0 ? 10 : 1e-4;
    const sum = Float64Array.from({ length: model.paramCount }, () => scale * rng.normal());
    const before = server.params();
    const snapshot = before.slice();
    const r = server.apply(sum, 7);
    assert.deepEqual(before, snapshot, 'params() handed out before a step stays as it was');
    if (r.scale !== 1) clipped++;
    // The reference: the same mean and clip, then tfjs's optimizer.
    const mean = new Float32Array(model.paramCount);
    for (let i = 0; i < mean.length; i++) mean[i] = sum[i] / 7;
    if (r.scale !== 1) for (let i = 0; i < mean.length; i++) mean[i] *= r.scale;
    const g = tf.tensor1d(mean);
    opt.applyGradients([{ name: v.name, tensor: g }]);
    g.dispose();
    assert.deepEqual(server.params(), v.dataSync() as Float32Array, `step ${step}`);
  }
  assert.ok(clipped >= 2 && clipped <= 4, `${clipped} of 6 steps clipped`);
  const state = await server.optimizerState();
  assert.deepEqual(state.map((s) => [s.name, [...s.values]]), [['iter', [6]]]);
  // And a restored server continues from the same parameters and count.
  const again = new ParameterServer(model, init, { optimizer: 'sgd', lr, clip });
  again.setParams(server.params());
  await again.loadOptimizerState(state);
  assert.deepEqual(again.params(), server.params());
  assert.deepEqual((await again.optimizerState()).map((s) => [...s.values]), [[6]]);
  server.dispose();
  again.dispose();
  v.dispose();
  opt.dispose();
});

test('the SGD step in WebAssembly SIMD and in JavaScript (no SIMD) give the same parameters bit for bit, clipped or not', () => {
  const model = createModel('char-lstm', 11, { hidden: 6 });
  const rng = new Rng(5);
  const init = model.init(rng);
  const simd = new ParameterServer(model, init, { optimizer: 'sgd', lr: 0.3, clip: 0.05 });
  const was = process.env.DPTRAIN_NO_SIMD;
  process.env.DPTRAIN_NO_SIMD = '1';
  let plain: ParameterServer;
  try {
    plain = new ParameterServer(model, init, { optimizer: 'sgd', lr: 0.3, clip: 0.05 });
  } finally {
    if (was === undefined) delete process.env.DPTRAIN_NO_SIMD;
    else process.env.DPTRAIN_NO_SIMD = was;
  }
  // 509 values: 127 groups of four and a tail of one.
  assert.equal(model.paramCount % 4, 1);
  const scales = new Set<number>();
  for (let step = 0; step < 6; step++) {
    const sum = Float64Array.from({ length: model.paramCount }, () => (step % 2 === 0 ? 10 : 1e-4) * rng.normal());
    const a = simd.apply(sum, 7);
    const b = plain.apply(sum, 7);
    assert.equal(a.scale, b.scale);
    scales.add(a.scale === 1 ? 1 : 0);
    assert.deepEqual(simd.params(), plain.params(), `step ${step}`);
  }
  assert.deepEqual([...scales].sort(), [0, 1], 'some steps clipped, some not');
  simd.dispose();
  plain.dispose();
});

/** The mean and squared norm as the JavaScript loop computes them: fround(s / t), squares summed in order. */
function meanSqRef(sum: Float64Array, tokens: number): { mean: Float32Array; sq: number } {
  const mean = new Float32Array(sum.length);
  let sq = 0;
  for (let i = 0; i < sum.length; i++) {
    mean[i] = Math.fround(sum[i] / tokens);
    sq += mean[i] * mean[i];
  }
  return { mean, sq };
}

test('the SIMD mean equals Math.fround(sum / tokens) bit for bit, ties and float32 subnormals included; the norm to 1e-12; the step as sgdStep', (t) => {
  const simd = simdSum();
  if (!simd) return t.skip('no WebAssembly SIMD here');
  const rng = new Rng(9);
  const n = 4096;
  simd.memory.grow(1);
  const special = [0, 1 + 2 ** -24, 1 + 3 * 2 ** -24, -(1 + 2 ** -24), 2 ** -140, 3 * 2 ** -150, 2 ** -126 * (1 - 2 ** -25), 3.4028235677973366e38, 1e300, -5e-324];
  const sum = new Float64Array(simd.memory.buffer, 0, n);
  const [mean, p, next] = [1, 2, 3].map((k) => new Float32Array(simd.memory.buffer, n * 4 + k * n * 4, n));
  for (let i = 0; i < n; i++) p[i] = rng.normal();
  const c = Math.fround(-0.3);
  for (const tokens of [1, 3, 7, 2240, 1_000_003, 0.1]) {
    for (let i = 0; i < n; i++) sum[i] = i < special.length ? special[i] : rng.normal() * 10 ** Math.floor(rng.next() * 12 - 6);
    const sq = simd.meanSqStep(mean.byteOffset, 0, n * 8, tokens, next.byteOffset, p.byteOffset, c);
    const ref = meanSqRef(sum, tokens);
    for (let i = 0; i < n; i++) {
      assert.ok(Object.is(mean[i], ref.mean[i]), `tokens ${tokens}, value ${i}: ${sum[i]} -> ${mean[i]}, want ${ref.mean[i]}`);
      assert.ok(Object.is(next[i], Math.fround(Math.fround(c * ref.mean[i]) + p[i])), `tokens ${tokens}, step ${i}`);
    }
    if (Number.isFinite(ref.sq)) assert.ok(Math.abs(sq - ref.sq) <= 1e-12 * ref.sq, `tokens ${tokens}: norm^2 ${sq} vs ${ref.sq}`);
    else assert.equal(sq, ref.sq);
  }
});

test('a server moved into the gradient accumulator\'s memory averages the sum there and steps as tfjs would with its norm, clipped or not, at any length', (t) => {
  if (!simdSum()) return t.skip('no WebAssembly SIMD here');
  const rng = new Rng(11);
  const clipped = new Set<boolean>();
  for (const hidden of [6, 7, 9]) {
    const model = createModel('char-lstm', 11, { hidden });
    const init = model.init(rng);
    const cfg = { optimizer: 'sgd' as const, lr: 0.3, clip: 20 };
    const moved = new ParameterServer(model, init, cfg);
    const acc = new GradAccumulator(model.paramCount, [], 100, moved.simdBytes);
    const host = acc.hostRegion();
    assert.ok(host);
    moved.moveInto(host.simd, host.at);
    const want = init.slice();
    const c = Math.fround(-cfg.lr);
    for (const [tokens, size] of [[7, 0.1], [3, 10], [2240, 1], [5, 0.01]]) {
      const sum = acc.newSum();
      for (let i = 0; i < sum.length; i++) sum[i] = rng.normal() * tokens * size;
      const ref = meanSqRef(sum, tokens);
      const r = moved.apply(sum, tokens);
      assert.ok(Math.abs(r.gradNorm - Math.sqrt(ref.sq)) <= 1e-12 * r.gradNorm, `norm ${r.gradNorm} vs ${Math.sqrt(ref.sq)}`);
      assert.equal(r.scale, r.gradNorm > cfg.clip ? cfg.clip / r.gradNorm : 1);
      clipped.add(r.scale !== 1);
      // tfjs's SGD on the mean (clipped as `g *= scale` rounds it), with the norm the server found.
      for (let i = 0; i < want.length; i++) {
        const g = r.scale === 1 ? ref.mean[i] : Math.fround(ref.mean[i] * r.scale);
        want[i] = Math.fround(Math.fround(c * g) + want[i]);
      }
      assert.deepEqual(moved.params(), want, `${model.paramCount} parameters, ${tokens} tokens, scale ${r.scale}`);
    }
    moved.dispose();
  }
  assert.deepEqual([...clipped].sort(), [false, true], 'some steps clipped, some not');
});
