/**
 * The output layer's loss kernel on wasm (src/shared/model/kernels/softmax-xent.ts) with its
 * softmax in WebAssembly SIMD (simd-softmax.ts): against a float64 reference, for widths with
 * and without a remainder past the last multiple of 4, and row by row the same bits as in a
 * larger batch.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../src/shared/backend.js';
import { softmaxCrossEntropy } from '../src/shared/model/kernels/softmax-xent.js';
import { simdSoftmax } from '../src/shared/model/kernels/simd-softmax.js';
import { Rng } from '../src/shared/data/rng.js';

function reference(z: Float32Array, b: Float32Array, y: Int32Array, V: number) {
  const N = y.length;
  const d = new Float64Array(N * V);
  const db = new Float64Array(V);
  let loss = 0;
  for (let r = 0; r < N; r++) {
    const x = Array.from({ length: V }, (_, v) => z[r * V + v] + b[v]);
    const m = Math.max(...x);
    const s = x.reduce((a, v) => a + Math.exp(v - m), 0);
    loss += Math.log(s) - (x[y[r]] - m);
    for (let v = 0; v < V; v++) {
      d[r * V + v] = Math.exp(x[v] - m) / s - (v === y[r] ? 1 : 0);
      db[v] += d[r * V + v];
    }
  }
  return { loss, d, db };
}

test('wasm: the loss kernel (SIMD softmax) matches float64 to float32 precision, any width, rows independent', async () => {
  await selectBackend({ backend: 'wasm', log: () => {} });
  assert.ok(simdSoftmax(tf.backend()), 'Node 20 has WebAssembly SIMD and the backend exports its memory');
  const rng = new Rng(5);
  for (const V of [1, 3, 4, 6, 8, 13, 28]) {
    const N = 9;
    const z = Float32Array.from({ length: N * V }, () => 4 * rng.normal());
    z[0] = 95; // far outside exp's float32 range before the max is taken off
    const b = Float32Array.from({ length: V }, () => rng.normal());
    const y = Int32Array.from({ length: N }, () => rng.int(0, V - 1));
    const ref = reference(z, b, y, V);
    const run = (rows: number) => {
      const ins = [tf.tensor2d(z.subarray(0, rows * V), [rows, V]), tf.tensor1d(b)] as const;
      const out = softmaxCrossEntropy(ins[0], ins[1], y.subarray(0, rows));
      const r = { loss: out.lossSum.dataSync()[0], d: out.dLogits.dataSync().slice(), db: out.dBias.dataSync().slice() };
      tf.dispose([...ins, out.lossSum, out.dLogits, out.dBias]);
      return r;
    };
    const got = run(N);
    assert.ok(Math.abs(got.loss - ref.loss) <= 1e-6 * Math.abs(ref.loss) + 1e-6, `V ${V}: loss ${got.loss} vs ${ref.loss}`);
    for (let i = 0; i < N * V; i++) assert.ok(Math.abs(got.d[i] - ref.d[i]) <= 3e-7, `V ${V}: dLogits[${i}] ${got.d[i]} vs ${ref.d[i]}`);
    for (let v = 0; v < V; v++) assert.ok(Math.abs(got.db[v] - ref.db[v]) <= 1e-6, `V ${V}: dBias[${v}]`);
    assert.deepEqual(Array.from(run(4).d), Array.from(got.d.subarray(0, 4 * V)), `V ${V}: a shard's rows are the full batch's`);
  }
});
