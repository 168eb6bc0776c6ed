/**
 * A worker's gradient frame is encoded into a buffer reused from round to
 * round (ReusedFrames in src/shared/wire/encode.ts): the bytes must be
 * encode()'s, a buffer must not be reused while its frame is in flight, and
 * no other message may be written into a buffer that will be reused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encode, ReusedFrames, type GradsMsg } from '../src/shared/wire/protocol.js';
import { encodeTensor } from '../src/shared/wire/tensor.js';

function grads(round: number, n: number): GradsMsg {
  const g = Float32Array.from({ length: n }, (_, i) => Math.sin(i + round));
  return { type: 'grads', round, tokenCount: 70, lossSum: 1.5, computeMs: 3, grads: encodeTensor(g, 'float32'), state: encodeTensor(new Float32Array(24).fill(round), 'float32') };
}

test('reused gradient frames are byte for byte encode()’s, and a buffer is reused only after its frame was sent', () => {
  const frames = new ReusedFrames();
  const n = 300_000;
  const a = frames.encode(grads(1, n));
  assert.deepEqual(Buffer.from(a.bytes), Buffer.from(encode(grads(1, n))));
  const aCopy = Buffer.from(a.bytes);
  // Round 2 while round 1's frame is still in flight: another buffer; round 1's bytes stay.
  const b = frames.encode(grads(2, n));
  assert.notEqual(b.bytes.buffer, a.bytes.buffer);
  assert.deepEqual(Buffer.from(a.bytes), aCopy);
  a.sent();
  a.sent();
  b.sent();
  // Other messages in between are never written into the spare buffer.
  const small = [encode({ type: 'leave', reason: 'x' }), encode({ type: 'capacity', capacity: 3 })];
  for (const s of small) assert.notEqual(s.buffer, a.bytes.buffer);
  const c = frames.encode(grads(3, n));
  assert.equal(c.bytes.buffer, a.bytes.buffer, 'the sent frame’s buffer is reused');
  assert.deepEqual(Buffer.from(c.bytes), Buffer.from(encode(grads(3, n))));
  assert.deepEqual(small.map((s) => Buffer.from(s)), [encode({ type: 'leave', reason: 'x' }), encode({ type: 'capacity', capacity: 3 })]);
  // Steady rounds whose frames are sent allocate nothing more.
  c.sent();
  const before = frames.allocated;
  for (let r = 4; r < 10; r++) frames.encode(grads(r, n)).sent();
  assert.equal(frames.allocated, before);
  // A frame never reported sent (a socket that cannot tell) is never reused.
  const d = frames.encode(grads(10, n));
  const e = frames.encode(grads(11, n));
  assert.notEqual(d.bytes.buffer, e.bytes.buffer);
});
