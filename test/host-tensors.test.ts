/**
 * The step tensors written straight from the flat parameters (host-tensors.ts, kernels/simd-transpose.ts)
 * hold exactly the values the tfjs ops they replace produce, on wasm (SIMD transpose into the backend's
 * memory) and on cpu (JavaScript), for sizes that are and are not multiples of 4; and a step built on
 * them gives the same gradient bits as one built on the ops' tensors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../src/shared/backend.js';
import { besideInto, filledTensors, transposedBlock, transposedRowsInto, transposedTensor } from '../src/shared/model/host-tensors.js';
import { disposeStepParams, lstmStep, makeStepParams, zeroState, disposeState, type StepParams } from '../src/shared/model/char-lstm/step.js';
import { GATES, initParams, paramLayout } from '../src/shared/model/char-lstm/params.js';
import { Rng } from '../src/shared/data/rng.js';

const sameBits = (a: tf.Tensor, b: tf.Tensor) => {
  assert.deepEqual(a.shape, b.shape);
  const x = new Uint32Array((a.dataSync() as Float32Array).slice().buffer);
  const y = new Uint32Array((b.dataSync() as Float32Array).slice().buffer);
  assert.ok(x.every((v, i) => v === y[i]), 'values differ');
};

function randomBlocks(k: number, n: number, seed: number): Float32Array[] {
  const rng = new Rng(seed);
  return Array.from({ length: k }, () => Float32Array.from({ length: n }, () => rng.normal() * 1e3));
}

for (const backend of ['wasm', 'cpu'] as const) {
  test(`${backend}: transposedTensor equals tf.concat of tf.transposes, bit for bit (4x4 tiles and ragged sizes)`, async () => {
    await selectBackend({ backend, log: () => {} });
    // 68x100 spans several 32x32 tiles of the SIMD transpose, with partial tiles on both edges.
    for (const [k, rows, cols] of [[4, 16, 12], [1, 8, 28], [2, 5, 7], [3, 12, 6], [2, 68, 100]]) {
      const blocks = randomBlocks(k, rows * cols, rows + cols);
      const before = tf.memory().numTensors;
      const got = transposedTensor(blocks, rows, cols);
      assert.equal(tf.memory().numTensors, before + 1, 'the scratch buffer is freed');
      const want = tf.tidy(() => tf.concat(blocks.map((b) => tf.transpose(tf.tensor2d(b, [rows, cols]))), 0));
      sameBits(got, want);
      tf.dispose([got, want]);
    }
  });

  test(`${backend}: transposedBlock equals tf.transpose of the block, bit for bit, ragged widths included (wasm; null elsewhere)`, async () => {
    await selectBackend({ backend, log: () => {} });
    const [rows, cols] = [12, 15];
    const src = tf.tensor2d(randomBlocks(1, rows * cols, 3)[0], [rows, cols]);
    for (const [r0, n, c0, m] of [[0, 12, 0, 15], [4, 8, 2, 13], [0, 4, 1, 4], [8, 4, 0, 7]]) {
      const got = transposedBlock(src, r0, n, c0, m);
      if (backend !== 'wasm') {
        assert.equal(got, null);
        continue;
      }
      const want = tf.tidy(() => tf.transpose(tf.slice(src, [r0, c0], [n, m])));
      sameBits(got!, want);
      tf.dispose([got!, want]);
    }
    assert.equal(transposedBlock(src, 0, 6, 0, 8), null, 'rows not a multiple of 4');
    src.dispose();
  });

  test(`${backend}: transposedRowsInto writes a block of rows transposed where the flat layout keeps it, bit for bit`, async () => {
    await selectBackend({ backend, log: () => {} });
    // A GRU-like (2H, V+H+1) gate gradient: rows in tiles and partial tiles, a row width that is not a multiple of 4.
    const [rows, R] = [72, 45];
    const g = randomBlocks(1, rows * R, 5)[0];
    const src = tf.tensor2d(g, [rows, R]);
    const before = tf.memory().numTensors;
    const out = new Float32Array(3 + rows * R).fill(7);
    transposedRowsInto(src, 0, 36, out, 3);
    transposedRowsInto(src, 36, 36, out, 3 + 36 * R);
    assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
    assert.deepEqual([...out.subarray(0, 3)], [7, 7, 7], 'nothing written before base');
    for (const [r0, base] of [[0, 3], [36, 3 + 36 * R]]) {
      for (let a = 0; a < R; a++) for (let j = 0; j < 36; j++) assert.equal(out[base + a * 36 + j], Math.fround(g[(r0 + j) * R + a]));
    }
    src.dispose();
  });

  test(`${backend}: besideInto with a doubled block equals tf.concat of the blocks, one times 2 (SIMD and ragged widths)`, async () => {
    await selectBackend({ backend, log: () => {} });
    for (const w of [6, 8]) {
      const blocks = randomBlocks(3, 5 * w, w);
      const [got] = filledTensors([[5, 3 * w]], [(o) => besideInto(o, blocks, 5, [w, w, w], [false, true, false])]);
      const want = tf.tidy(() => tf.concat(blocks.map((b, k) => (k === 1 ? tf.mul(tf.tensor2d(b, [5, w]), tf.scalar(2)) : tf.tensor2d(b, [5, w]))), 1));
      sameBits(got, want);
      tf.dispose([got, want]);
    }
  });

  test(`${backend}: makeStepParams gives the ops' tensors, and a step on them the same gradient bits`, async () => {
    await selectBackend({ backend, log: () => {} });
    const dims = { vocabSize: 12, hidden: 8 };
    const { vocabSize: V, hidden: H } = dims;
    const flat = initParams(dims, new Rng(4));
    for (let i = 0; i < flat.length; i++) flat[i] += 0.1 * Math.sin(i);
    const at = new Map(paramLayout(dims).map((p) => [p.name, p.offset]));
    const view = (n: string, len: number) => flat.subarray(at.get(n as never)!, at.get(n as never)! + len);
    const ref: StepParams = tf.tidy(() => {
      const block = (g: string) => tf.tensor2d(view(`W_x${g}`, (V + H + 1) * H), [V + H + 1, H]);
      const wcat = GATES.map((g) => (g === 'c' ? tf.mul(block(g), tf.scalar(2)) : block(g))) as tf.Tensor2D[];
      const whq = tf.tensor2d(view('W_hq', H * V), [H, V]);
      const whT = tf.concat(GATES.map((g) => tf.transpose(tf.tensor2d(view(`W_h${g}`, H * H), [H, H]))), 0) as tf.Tensor2D;
      return { dims, wcat, wall: tf.concat(wcat, 1) as tf.Tensor2D, whT, whq, bq: tf.tensor1d(view('b_q', V)), whqT: tf.transpose(whq) as tf.Tensor2D };
    });
    const p = makeStepParams(flat, dims);
    for (const key of ['whT', 'whq', 'bq', 'whqT'] as const) sameBits(p[key], ref[key]);
    if (p.wall) sameBits(p.wall, ref.wall!);
    else p.wcat!.forEach((w, k) => sameBits(w, ref.wcat![k]));
    const rng = new Rng(9);
    const ids = () => Int32Array.from({ length: 3 * 5 }, () => rng.int(0, V - 1));
    const batch = { x: ids(), y: ids(), rows: 3, numSteps: 5 };
    const s0 = zeroState(3, H);
    const a = lstmStep(p, batch, s0);
    const b = lstmStep(ref, batch, s0);
    assert.deepEqual(new Uint32Array(a.grad.buffer), new Uint32Array(b.grad.buffer));
    assert.equal(a.lossSum, b.lossSum);
    disposeStepParams(p);
    disposeStepParams(ref);
    [s0, a.state, b.state].forEach(disposeState);
  });
}
