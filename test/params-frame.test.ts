/**
 * The params frame built in place (src/shared/wire/params-frame.ts) must read
 * exactly like encode()'s, for every wire dtype, and its buffer may be reused
 * only once every send of it has been written out.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeCoordinatorMessage, encode } from '../src/shared/wire/protocol.js';
import { ParamsFrames } from '../src/shared/wire/params-frame.js';
import { decodeTensor, encodeTensor, WIRE_DTYPES } from '../src/shared/wire/tensor.js';

const values = Float32Array.from({ length: 1001 }, (_, i) => (i % 7 === 0 ? -1 : 1) * Math.exp((i % 50) - 30) * (1 + i / 997));
values[3] = 0;
values[4] = -0;
values[5] = 65519;
values[6] = 1e-8;

test('a params frame built in place decodes to the same message as encode() gives, for every wire dtype and version', () => {
  const frames = new ParamsFrames();
  for (const dtype of WIRE_DTYPES) {
    for (const version of [0, 1, 127, 128, 65535, 65536, 2 ** 32 - 1]) {
      const { bytes, hold } = frames.build(version, values, dtype);
      hold()();
      const mine = decodeCoordinatorMessage(bytes, { paramCount: values.length });
      const theirs = decodeCoordinatorMessage(encode({ type: 'params', version, params: encodeTensor(values, dtype) }), { paramCount: values.length });
      assert.ok(mine.ok && theirs.ok && mine.msg.type === 'params' && theirs.msg.type === 'params', `${dtype} v${version}`);
      assert.equal(mine.msg.version, version);
      assert.equal(mine.msg.params.dtype, dtype);
      assert.deepEqual(Buffer.from(mine.msg.params.data), Buffer.from(theirs.msg.params.data), `${dtype} v${version}: the same value bytes`);
      assert.deepEqual(decodeTensor(mine.msg.params), decodeTensor(theirs.msg.params));
    }
  }
  assert.throws(() => frames.build(2 ** 32, values, 'float32'), /32 bits/);
});

test('a params frame is reused only when every send of it is done; one a socket still holds is left alone', () => {
  const frames = new ParamsFrames();
  const a = frames.build(1, values, 'float32');
  const doneA = [a.hold(), a.hold()];
  const copyA = Buffer.from(a.bytes);
  // Both sends of round 1 still pending: round 2 gets another buffer, and round 1's bytes stay as they were.
  const b = frames.build(2, values.map((v) => v + 1), 'float32');
  assert.notEqual(b.bytes.buffer, a.bytes.buffer);
  assert.deepEqual(a.bytes, copyA);
  doneA[0]();
  doneA[0](); // a second call changes nothing
  const doneB = b.hold();
  const c = frames.build(3, values, 'float32');
  assert.notEqual(c.bytes.buffer, a.bytes.buffer, 'one send of round 1 is still pending');
  assert.notEqual(c.bytes.buffer, b.bytes.buffer);
  doneA[1]();
  doneB();
  const d = frames.build(4, values, 'float32');
  assert.ok(d.bytes.buffer === a.bytes.buffer || d.bytes.buffer === b.bytes.buffer || d.bytes.buffer === c.bytes.buffer, 'a released buffer is reused');
  assert.equal(frames.allocated, 3);
  // Steady rounds whose sends complete allocate nothing more.
  for (let v = 5; v < 20; v++) frames.build(v, values, 'float32').hold()();
  assert.equal(frames.allocated, 3);
  // Another dtype gets its own buffer.
  frames.build(20, values, 'float16');
  assert.equal(frames.allocated, 4);
});
