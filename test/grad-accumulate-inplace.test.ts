/**
 * The coordinator receives large frames into its gradient accumulator's
 * WebAssembly memory (GradAccumulator's frame region, via FrameScratch), so a
 * float32 gradient is checked and added where it arrived: the sums must be the
 * scratch path's bit for bit, and a refused frame must leave the sum as it was.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GradAccumulator } from '../src/shared/wire/accumulate.js';
import { encodeTensor } from '../src/shared/wire/tensor.js';
import { decodeWorkerMessage, encode, type GradsMsg } from '../src/shared/wire/protocol.js';
import { ErrorCodes } from '../src/shared/errors.js';

test('a float32 gradient received into the accumulator’s own memory is checked and added in place, bit for bit as through the scratch, all or nothing', (t) => {
  if (!new GradAccumulator(1).vectorised) {
    t.skip('no WebAssembly SIMD here: there is no frame region (frameBuffer gives null)');
    assert.equal(new GradAccumulator(4, [], 1024).frameBuffer(10), null);
    return;
  }
  for (const n of [1001, 1000, 3]) {
    const grads = [0, 1, 2].map((k) => Float32Array.from({ length: n }, (_, i) => Math.fround(Math.sin(i * 0.37 + k) * 10 ** ((i % 9) - 4))));
    const frames = grads.map((g, k) => encode({ type: 'grads', round: 1, tokenCount: 10, lossSum: 1, computeMs: 1, grads: encodeTensor(g, 'float32'), state: encodeTensor(new Float32Array(4).fill(k), 'float32') }));
    const inPlace = new GradAccumulator(n, [], 64 * 1024);
    const copied = new GradAccumulator(n);
    assert.equal(inPlace.frameBuffer(64 * 1024 + 1), null, 'no frame larger than the region');
    const sumA = inPlace.newSum();
    const sumB = copied.newSum();
    const limits = { paramCount: n, maxTokenCount: 10, stateCount: 4, gradsFinitenessChecked: true };
    const received = (frame: Uint8Array): GradsMsg => {
      const region = inPlace.frameBuffer(frame.byteLength)!;
      region.set(frame);
      const v = decodeWorkerMessage(Buffer.from(region.buffer, region.byteOffset, region.byteLength), limits);
      assert.ok(v.ok && v.msg.type === 'grads');
      // The gradient is a view into the region, where it arrived.
      assert.equal((v.msg as GradsMsg).grads.data.buffer, region.buffer);
      return v.msg as GradsMsg;
    };
    for (const f of frames) {
      const msg = received(f);
      assert.equal(inPlace.addInto(sumA, msg.grads), null);
      const v = decodeWorkerMessage(f, limits);
      assert.ok(v.ok && v.msg.type === 'grads');
      assert.equal(copied.addInto(sumB, (v.msg as GradsMsg).grads), null);
    }
    assert.deepEqual(sumA, sumB, `n = ${n}`);
    // A NaN in the body or in the tail: refused, the sum as it was.
    const before = sumA.slice();
    for (const at of [0, n - 1]) {
      const bad = grads[0].slice();
      bad[at] = NaN;
      const msg = received(encode({ type: 'grads', round: 1, tokenCount: 10, lossSum: 1, computeMs: 1, grads: encodeTensor(bad, 'float32') }));
      assert.equal(inPlace.addInto(sumA, msg.grads), ErrorCodes.ERR_NON_FINITE, `NaN at ${at} of ${n}`);
      assert.deepEqual(sumA, before);
    }
  }
});

test('frame slots: distinct regions of the module’s memory, held until released, and a gradient read into one is added in place', (t) => {
  if (!new GradAccumulator(1).vectorised) {
    t.skip('no WebAssembly SIMD here: there are no slots');
    return;
  }
  const n = 1001;
  const acc = new GradAccumulator(n, [], 64 * 1024, 0, 2);
  const ref = new GradAccumulator(n);
  const [s1, s2] = [acc.acquire(5000)!, acc.acquire(64 * 1024)!];
  assert.ok(s1 && s2, 'two slots');
  assert.equal(acc.acquire(10), null, 'none left');
  assert.equal(acc.frameBuffer(10)!.buffer, s1.buffer, 'in the module’s memory, with the frame region');
  const [a0, b0] = [s1.byteOffset, s2.byteOffset];
  assert.ok(Math.abs(a0 - b0) >= 64 * 1024 && a0 % 16 === 0 && b0 % 16 === 0, 'apart and aligned');
  assert.equal(new GradAccumulator(n, [], 64 * 1024, 0, 1).acquire(64 * 1024 + 1), null, 'no slot larger than a frame');
  const g = Float32Array.from({ length: n }, (_, i) => Math.fround(Math.cos(i) * 3));
  const frame = encode({ type: 'grads', round: 1, tokenCount: 10, lossSum: 1, computeMs: 1, grads: encodeTensor(g, 'float32') });
  acc.release(s2);
  const slot = acc.acquire(frame.byteLength)!;
  slot.set(frame);
  const v = decodeWorkerMessage(Buffer.from(slot.buffer, slot.byteOffset, slot.byteLength), { paramCount: n, maxTokenCount: 10, gradsFinitenessChecked: true });
  assert.ok(v.ok && v.msg.type === 'grads');
  const [sa, sb] = [acc.newSum(), ref.newSum()];
  assert.equal(acc.addInto(sa, (v.msg as GradsMsg).grads), null);
  assert.equal(ref.addInto(sb, encodeTensor(g, 'float32')), null);
  assert.deepEqual(sa, sb);
  acc.release(slot);
  acc.release(s1);
  assert.ok(acc.acquire(1) && acc.acquire(1) && acc.acquire(1) === null, 'both back, no more');
});
