/**
 * The relay's own hot path, in process: its reply built in place decodes to what
 * encode() gives, in every wire dtype, and steady rounds reuse its buffer; a
 * reply's gradient is added straight from the received frame, all or nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReplyFrames } from '../src/relay/reply-frame.js';
import { decodeWorkerMessage, encode } from '../src/shared/wire/protocol.js';
import { decodeTensor, encodeTensor, WIRE_DTYPES } from '../src/shared/wire/tensor.js';
import { GradAccumulator } from '../src/shared/wire/accumulate.js';
import { Round } from '../src/coordinator/round.js';
import { ErrorCodes } from '../src/shared/errors.js';

const P = 1001;
const W = 6;
const limits = { paramCount: P, maxTokenCount: 1e6, stateCount: 8 * W };

function sumOf(seed: number): Float64Array {
  return Float64Array.from({ length: P }, (_, i) => Math.sin(i * 0.37 + seed) * (i % 7 === 0 ? 1e3 : 1e-2) + 1e-9 * i);
}

test('the reply built in place decodes as encode() would, in every wire dtype, and reuses its buffer once written out', () => {
  for (const dtype of WIRE_DTYPES) {
    const frames = new ReplyFrames(dtype, P, 8 * W);
    for (const [round, streams] of [[7, 3], [8, 8], [70000, 1]]) {
      const sum = sumOf(round);
      const state = Float32Array.from({ length: streams * W }, (_, i) => i / 3 - round);
      const built = frames.build({ round, tokenCount: streams * 35, lossSum: 1234.5678 + round, computeMs: 12.25, sum, state });
      const want = encode({ type: 'grads', round, tokenCount: streams * 35, lossSum: 1234.5678 + round, computeMs: 12.25, grads: encodeTensor(Float32Array.from(sum), dtype), state: encodeTensor(state, 'float32') });
      const a = decodeWorkerMessage(built.bytes, limits);
      const b = decodeWorkerMessage(want, limits);
      assert.ok(a.ok && b.ok, 'both frames pass the parent validator');
      assert.equal(a.msg.type, 'grads');
      if (a.msg.type !== 'grads' || b.msg.type !== 'grads') return;
      assert.deepEqual([a.msg.round, a.msg.tokenCount, a.msg.lossSum, a.msg.computeMs], [b.msg.round, b.msg.tokenCount, b.msg.lossSum, b.msg.computeMs]);
      assert.equal(a.msg.grads.dtype, dtype);
      assert.deepEqual(Buffer.from(a.msg.grads.data), Buffer.from(b.msg.grads.data), `${dtype}: the gradient's bytes`);
      assert.deepEqual(decodeTensor(a.msg.state!), state);
      built.release();
    }
    assert.equal(frames.allocated, 1, `${dtype}: one buffer for rounds whose frames were written out`);
    // A frame the socket still holds is not overwritten: the next round gets another buffer.
    const held = frames.build({ round: 1, tokenCount: 35, lossSum: 1, computeMs: 1, sum: sumOf(1), state: new Float32Array(W) });
    const copy = Buffer.from(held.bytes);
    const next = frames.build({ round: 2, tokenCount: 70, lossSum: 2, computeMs: 2, sum: sumOf(2), state: new Float32Array(2 * W) });
    assert.deepEqual(Buffer.from(held.bytes), copy);
    assert.equal(frames.allocated, 2);
    held.release();
    next.release();
  }
});

test("a relay's round adds replies straight from their frames: the sum of the decoded gradients; a NaN or a short tensor leaves it as it was", () => {
  const acc = new GradAccumulator(P);
  const expected = new Map(['a', 'b', 'c'].map((id) => [id, { lo: 0, hi: 1, tokenCount: 35, stateLength: W }]));
  const round = new Round(1, expected, P, 60_000, undefined, acc);
  const grads = [sumOf(1), sumOf(2)].map((s) => Float32Array.from(s));
  const frame = (g: Float32Array) => {
    const v = decodeWorkerMessage(encode({ type: 'grads', round: 1, tokenCount: 35, lossSum: 1, computeMs: 1, grads: encodeTensor(g, 'float16'), state: encodeTensor(new Float32Array(W), 'float32') }), { ...limits, gradsFinitenessChecked: true });
    assert.ok(v.ok && v.msg.type === 'grads');
    return v.msg;
  };
  const reply = (id: string, g: Float32Array) => {
    const m = frame(g);
    return round.accept({ workerId: id, round: 1, tokenCount: 35, lossSum: 1, computeMs: 1, grad: m.grads, state: decodeTensor(m.state!) });
  };
  assert.equal(reply('a', grads[0]), null);
  const bad = grads[1].slice();
  bad[500] = NaN;
  assert.equal(reply('b', bad), ErrorCodes.ERR_NON_FINITE);
  assert.equal(reply('b', grads[1]), null);
  const short = frame(grads[0]);
  assert.equal(round.accept({ workerId: 'c', round: 1, tokenCount: 35, lossSum: 1, computeMs: 1, grad: { ...short.grads, length: P - 1, data: short.grads.data.subarray(2) } }), ErrorCodes.ERR_BAD_TENSOR);
  round.drop('c');
  return round.done.then((o) => {
    const want = grads.map((g) => decodeTensor(encodeTensor(g, 'float16')));
    for (let i = 0; i < P; i++) assert.equal(o.gradSum[i], want[0][i] + want[1][i]);
    assert.equal(o.tokens, 70);
  });
});
