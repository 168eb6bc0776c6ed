import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tf, testBackend } from './support/tf.js';
import { layerStateWidth, stackLayout, type StackCell, type StackDims } from '../src/shared/model/stack/params.js';
import { disposeStackStepParams, makeStackStepParams, stackStep } from '../src/shared/model/stack/step.js';
import { stackForward, stackNamedParams, type LayerState } from '../src/shared/model/stack/forward.js';
import { dropoutMasks } from '../src/shared/model/stack/dropout.js';
import { toTimeMajor } from '../src/shared/model/char-lstm/step.js';
import { createModel } from '../src/shared/model/registry.js';
import type { TokenBatch } from '../src/shared/model/descriptor.js';
import { Rng } from '../src/shared/data/rng.js';

function randomBatch(rng: Rng, rows: number, numSteps: number, V: number, step = 0): TokenBatch {
  const x = new Int32Array(rows * numSteps).map(() => rng.int(0, V - 1));
  const y = new Int32Array(rows * numSteps).map(() => rng.int(0, V - 1));
  return { x, y, rows, numSteps, streams: Int32Array.from({ length: rows }, (_, r) => 10 + 3 * r), step };
}

/** The flat carried state (rows x L*S) as per-layer tensors. */
function layerStates(state: Float32Array, rows: number, dims: StackDims): LayerState[] {
  const S = layerStateWidth(dims);
  const W = dims.layers * S;
  const H = dims.hidden;
  const part = (l: number, off: number) => {
    const a = new Float32Array(rows * H);
    for (let r = 0; r < rows; r++) a.set(state.subarray(r * W + l * S + off, r * W + l * S + off + H), r * H);
    return tf.tensor2d(a, [rows, H]);
  };
  return Array.from({ length: dims.layers }, (_, l) => (dims.cell === 'lstm' ? { h: part(l, 0), c: part(l, H) } : { h: part(l, 0) }));
}

interface Case {
  cell: StackCell;
  layers: number;
  embedding: number;
  dropout: number;
}

const CASES: Case[] = [];
for (const cell of ['lstm', 'gru', 'rnn'] as StackCell[]) {
  CASES.push({ cell, layers: 2, embedding: 0, dropout: 0 });
  CASES.push({ cell, layers: 2, embedding: 3, dropout: 0 });
  CASES.push({ cell, layers: 3, embedding: 3, dropout: 0.4 });
}

for (const c of CASES) {
  const label = `${c.cell}, ${c.layers} layers, ${c.embedding > 0 ? `embedding ${c.embedding}` : 'one-hot'}${c.dropout > 0 ? `, dropout ${c.dropout} (masks fixed)` : ''}`;
  test(`stack ${label}: hand-derived backward matches tfjs autodiff (relative error <= 1e-4 for every parameter block)`, async () => {
    await testBackend();
    const dims: StackDims = { cell: c.cell, vocabSize: 7, hidden: 5, layers: c.layers, embedding: c.embedding };
    const seed = 99;
    const rng = new Rng(42);
    const rows = 3;
    const T = 6;
    let worst = 0;
    for (let trial = 0; trial < 2; trial++) {
      const blocks = stackLayout(dims);
      const count = blocks.at(-1)!.offset + blocks.at(-1)!.size;
      const flat = new Float32Array(count).map(() => 0.5 * rng.normal());
      const batch = randomBatch(rng, rows, T, dims.vocabSize, 17 + trial);
      const state = new Float32Array(rows * dims.layers * layerStateWidth(dims)).map(() => 0.5 * rng.normal());
      const sp = makeStackStepParams(flat, dims, { dropout: c.dropout, seed });
      const ours = stackStep(sp, batch, state);

      const s0 = layerStates(state, rows, dims);
      const masks = Array.from({ length: dims.layers }, (_, l) =>
        c.dropout > 0 && l < dims.layers - 1 ? tf.tensor2d(dropoutMasks({ seed, step: batch.step!, layer: l }, batch.streams!, T, dims.hidden, c.dropout), [T * rows, dims.hidden]) : null,
      );
      const xs = toTimeMajor(batch.x, rows, T);
      const labels = tf.oneHot(tf.tensor1d(toTimeMajor(batch.y, rows, T), 'int32'), dims.vocabSize).asType('float32');
      const lossOf = (p: Record<string, tf.Tensor>) => tf.neg(tf.sum(tf.mul(labels, tf.logSoftmax(stackForward(p, xs, T, s0, dims, masks).logits)))) as tf.Scalar;
      const named = stackNamedParams(flat, dims);
      const names = blocks.map((b) => b.name);
      const auto = tf.grads((...ps: tf.Tensor[]) => lossOf(Object.fromEntries(names.map((n, i) => [n, ps[i]]))))(names.map((n) => named[n]));
      const refLoss = tf.tidy(() => lossOf(named).dataSync()[0]);
      assert.ok(Math.abs(ours.lossSum - refLoss) <= 1e-5 * Math.abs(refLoss), `loss ${ours.lossSum} vs ${refLoss}`);

      // The carried state: every layer's, in the flat layout.
      const ref = tf.tidy(() => stackForward(named, xs, T, s0, dims, masks).state.map((s) => [s.h.arraySync(), s.c?.arraySync()]));
      const S = layerStateWidth(dims);
      for (let l = 0; l < dims.layers; l++) {
        for (let r = 0; r < rows; r++) {
          for (let j = 0; j < dims.hidden; j++) {
            const at = r * dims.layers * S + l * S;
            assert.ok(Math.abs(ours.state[at + j] - ref[l][0]![r][j]) <= 1e-5, `h of layer ${l}`);
            if (c.cell === 'lstm') assert.ok(Math.abs(ours.state[at + dims.hidden + j] - ref[l][1]![r][j]) <= 1e-5, `c of layer ${l}`);
          }
        }
      }
      for (const [k, p] of blocks.entries()) {
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
      assert.equal(ours.grad.length, count);
      assert.equal(ours.tokenCount, rows * T);
      tf.dispose([...auto, ...Object.values(named), ...s0.flatMap((s) => (s.c ? [s.h, s.c] : [s.h])), labels, ...masks.filter((m) => m !== null)]);
      disposeStackStepParams(sp);
    }
    console.log(`stack ${label}: worst relative error of a parameter block ${worst.toExponential(2)}`);
  });
}

for (const cell of ['lstm', 'gru', 'rnn'] as StackCell[]) {
  test(`stack ${cell} (2 layers, embedding, dropout): a step leaks no tensors: numTensors after step 200 equals after step 1`, async () => {
    await testBackend();
    const model = createModel(`stack-${cell}`, 6, { hidden: 4, layers: 2, embedding: 3, dropout: 0.3, seed: 1 });
    const rng = new Rng(1);
    const stepper = model.stepper(model.init(rng));
    let state: Float32Array = new Float32Array(2 * model.stateWidth);
    let after1 = -1;
    for (let i = 1; i <= 200; i++) {
      state = stepper.step(randomBatch(rng, 2, 5, 6, i), state).state;
      if (i === 1) after1 = tf.memory().numTensors;
    }
    assert.equal(tf.memory().numTensors, after1);
    stepper.dispose();
  });
}

test('dropout masks are a function of (seed, step, stream, layer, time): a shard of streams draws the rows one process draws', () => {
  const all = Int32Array.from({ length: 8 }, (_, r) => r);
  const T = 4;
  const H = 16;
  const p = 0.3;
  const full = dropoutMasks({ seed: 5, step: 7, layer: 1 }, all, T, H, p);
  const shard = dropoutMasks({ seed: 5, step: 7, layer: 1 }, all.subarray(5, 8), T, H, p);
  for (let t = 0; t < T; t++) {
    for (let r = 0; r < 3; r++) {
      assert.deepEqual(shard.subarray((t * 3 + r) * H, (t * 3 + r + 1) * H), full.subarray((t * 8 + 5 + r) * H, (t * 8 + 6 + r) * H));
    }
  }
  assert.deepEqual(dropoutMasks({ seed: 5, step: 7, layer: 1 }, all, T, H, p), full, 'same inputs, same masks');
  for (const other of [{ seed: 6, step: 7, layer: 1 }, { seed: 5, step: 8, layer: 1 }, { seed: 5, step: 7, layer: 0 }]) {
    assert.notDeepEqual(dropoutMasks(other, all, T, H, p), full, JSON.stringify(other));
  }
  // Kept units are scaled by 1/(1-p); about p of them are dropped.
  const big = dropoutMasks({ seed: 1, step: 0, layer: 0 }, Int32Array.from({ length: 64 }, (_, r) => r), 35, 64, p);
  const dropped = big.filter((v) => v === 0).length / big.length;
  assert.ok(big.every((v) => v === 0 || Math.abs(v - 1 / (1 - p)) < 1e-6));
  assert.ok(Math.abs(dropped - p) < 0.01, `dropped ${dropped}`);
});

test('a stack step with dropout refuses a batch without stream ids and step', async () => {
  await testBackend();
  const model = createModel('stack-gru', 6, { hidden: 4, layers: 2, embedding: 0, dropout: 0.5, seed: 0 });
  const stepper = model.stepper(model.init(new Rng(0)));
  const b = randomBatch(new Rng(0), 2, 3, 6);
  assert.throws(() => stepper.step({ x: b.x, y: b.y, rows: 2, numSteps: 3 }, new Float32Array(2 * model.stateWidth)), /stream id/);
  stepper.dispose();
});

test('stack hyperparameters: dropout is a probability below 1, embedding may be 0, layers a positive integer', () => {
  const ok = { hidden: 4, layers: 2, embedding: 0, dropout: 0.25, seed: 3 };
  assert.equal(createModel('stack-lstm', 6, ok).stateWidth, 16);
  assert.throws(() => createModel('stack-lstm', 6, { ...ok, dropout: 1 }), /dropout must be a number from 0 to below 1/);
  assert.throws(() => createModel('stack-lstm', 6, { ...ok, layers: 0 }), /layers must be an integer from 1 to 64/);
  assert.throws(() => createModel('stack-lstm', 6, { ...ok, embedding: 1.5 }), /embedding must be an integer/);
  assert.throws(() => createModel('char-lstm', 6, { hidden: 0 }), /hidden must be an integer from 1 or more/);
});
