/**
 * The WebAssembly SIMD row programs the gate kernels use (src/shared/model/kernels/simd-rows.ts),
 * run over the wasm backend's memory: column blocks, row strides and the arithmetic against the
 * same expressions in JavaScript.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../src/shared/backend.js';
import { add, input, mul, num, simdRows, sub, type RowProgram } from '../src/shared/model/kernels/simd-rows.js';

test('wasm: a row program reads and writes column blocks of row-major tensors in place, in float32', async () => {
  await selectBackend({ backend: 'wasm', log: () => {} });
  const backend = tf.backend() as unknown as { dataIdMap: { get(id: object): { memoryOffset: number } } };
  // out0 = (a + b)·2 over a's columns 4..11 and all of b; out1 = a − b·b into columns 8..15 of a wider output.
  const prog: RowProgram = { inputs: 2, lets: [add(input(0), input(1))], outputs: [mul({ let: 0 }, num(2)), sub(input(0), mul(input(1), input(1)))] };
  const kernel = simdRows(tf.backend(), prog);
  assert.ok(kernel, 'Node 20 has WebAssembly SIMD and the backend exports its memory');
  assert.equal(simdRows(tf.backend(), prog), kernel, 'compiled once per program');
  const rows = 3;
  const a = tf.tensor2d(Float32Array.from({ length: rows * 12 }, (_, i) => i / 7 - 2), [rows, 12]);
  const b = tf.tensor2d(Float32Array.from({ length: rows * 8 }, (_, i) => 1.5 - i / 5), [rows, 8]);
  const out0 = tf.buffer([rows, 8]).toTensor(); // fresh tensors the kernel may overwrite
  const out1 = tf.buffer([rows, 16]).toTensor();
  const at = (t: tf.Tensor, column = 0): [number, number] => [backend.dataIdMap.get(t.dataId).memoryOffset + 4 * column, 4 * t.shape[1]!];
  kernel([at(a, 4), at(b), at(out0), at(out1, 8)], rows, 8);
  const A = a.dataSync();
  const B = b.dataSync();
  const O0 = out0.dataSync();
  const O1 = out1.dataSync();
  const f = Math.fround;
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < 8; j++) {
      const x = A[r * 12 + 4 + j];
      const y = B[r * 8 + j];
      assert.equal(O0[r * 8 + j], f(f(x + y) * 2));
      assert.equal(O1[r * 16 + 8 + j], f(x - f(y * y)));
      assert.equal(O1[r * 16 + j], 0, 'columns outside the block untouched');
    }
  }
  tf.dispose([a, b, out0, out1]);
});
