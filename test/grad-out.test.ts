/**
 * A stepper given `gradOut` (the worker passes the gradient's place in its reply
 * frame) writes every value of the gradient there: the same bits as the step
 * that allocates its own array, whatever the array held before. On wasm, where
 * the fused steps take it; any stepper may ignore it and return its own array.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { selectBackend } from '../src/shared/backend.js';
import { createModel } from '../src/shared/model/registry.js';
import type { TokenBatch } from '../src/shared/model/descriptor.js';
import { Rng } from '../src/shared/data/rng.js';

const V = 9;
const H = 8;

function batch(rng: Rng, rows: number, numSteps: number): TokenBatch {
  const ids = () => new Int32Array(rows * numSteps).map(() => rng.int(0, V - 1));
  return { x: ids(), y: ids(), rows, numSteps, streams: Int32Array.from({ length: rows }, (_, i) => i), step: 1 };
}

for (const [name, hyper] of [
  ['char-lstm', { hidden: H }],
  ['char-gru', { hidden: H }],
  ['char-rnn', { hidden: H }],
  ['stack-lstm', { hidden: H, layers: 2, embedding: 4, dropout: 0, seed: 0 }],
] as const) {
  test(`${name}: the gradient written into gradOut (filled with NaN before) equals the step's own array, bit for bit`, async () => {
    await selectBackend({ backend: 'wasm', log: () => {} });
    const model = createModel(name, V, hyper);
    const rng = new Rng(7);
    const stepper = model.stepper(model.init(rng));
    try {
      const b = batch(rng, 4, 5);
      const state = new Float32Array(4 * model.stateWidth).map(() => rng.normal() * 0.1);
      const own = stepper.step(b, state.slice());
      const out = new Float32Array(model.paramCount).fill(NaN);
      const into = stepper.step(b, state.slice(), out);
      assert.equal(into.grad.length, model.paramCount);
      assert.deepEqual(new Uint32Array(into.grad.buffer, into.grad.byteOffset, into.grad.length), new Uint32Array(own.grad.buffer, own.grad.byteOffset, own.grad.length));
      assert.equal(into.lossSum, own.lossSum);
      assert.deepEqual(into.state, own.state);
      // The fused single-layer steps take the array; the stack returns its own.
      if (name.startsWith('char-')) assert.equal(into.grad, out, 'written in place');
    } finally {
      stepper.dispose();
    }
  });
}
