import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isDptrainError } from '../src/shared/errors.js';
import { Rng } from '../src/shared/data/rng.js';
import {
  WIRE_DTYPES,
  allFinite,
  bfloat16BitsToFloat32,
  bytesPerElement,
  decodeTensor,
  encodeTensor,
  float16BitsToFloat32,
  float32ToBfloat16Bits,
  float32ToFloat16Bits,
  isWireDtype,
  tensorAllFinite,
  type WireTensor,
} from '../src/shared/wire/tensor.js';

function randomValues(n: number, seed: number, scale = 1): Float32Array {
  const rng = new Rng(seed);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = rng.normal() * scale;
  return v;
}

/** Same bytes, placed at an odd offset of a larger Buffer, as msgpackr can hand them out. */
function unaligned(t: WireTensor): WireTensor {
  const buf = Buffer.alloc(t.data.byteLength + 3);
  buf.set(t.data, 1);
  return { ...t, data: buf.subarray(1, 1 + t.data.byteLength) };
}

describe('dtypes', () => {
  it('lists the three wire dtypes with their widths', () => {
    assert.deepEqual([...WIRE_DTYPES], ['float32', 'float16', 'bfloat16']);
    assert.equal(bytesPerElement('float32'), 4);
    assert.equal(bytesPerElement('float16'), 2);
    assert.equal(bytesPerElement('bfloat16'), 2);
    assert.ok(isWireDtype('float16'));
    assert.ok(!isWireDtype('float64'));
    assert.ok(!isWireDtype(undefined));
    assert.throws(() => bytesPerElement('int8' as never), (e) => isDptrainError(e, 'ERR_BAD_TENSOR'));
  });
});

describe('float32 on the wire', () => {
  it('encodes as a view over the same memory', () => {
    const v = randomValues(100, 1);
    const t = encodeTensor(v, 'float32');
    assert.equal(t.length, 100);
    assert.equal(t.data.byteLength, 400);
    assert.equal(t.data.buffer, v.buffer);
  });

  it('is little-endian', () => {
    const t = encodeTensor(new Float32Array([1]), 'float32');
    assert.deepEqual([...t.data], [0x00, 0x00, 0x80, 0x3f]);
  });

  it('round-trips bit-exactly, including from an unaligned Buffer', () => {
    const v = randomValues(1001, 2);
    v[3] = -0;
    v[4] = 3.4028234663852886e38;
    v[5] = 1e-45;
    const out = decodeTensor(unaligned(encodeTensor(v, 'float32')));
    assert.equal(out.byteOffset % 4, 0);
    assert.deepEqual(new Uint32Array(out.buffer), new Uint32Array(v.buffer));
  });

  it('decodes into a caller-supplied array and copies rather than aliasing', () => {
    const v = randomValues(10, 3);
    const t = encodeTensor(v, 'float32');
    const out = new Float32Array(10);
    assert.equal(decodeTensor(t, out), out);
    assert.deepEqual(out, v);
    v[0] = 42;
    assert.notEqual(out[0], 42);
  });
});

describe('float16', () => {
  const cases: Array<[number, number]> = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [65504, 0x7bff],
    [-65504, 0xfbff],
    [6.103515625e-5, 0x0400], // 2^-14, smallest normal
    [6.097555160522461e-5, 0x03ff], // largest subnormal
    [5.960464477539063e-8, 0x0001], // 2^-24, smallest subnormal
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [1e6, 0x7c00],
    [65520, 0x7c00], // tie between 65504 and 2^16: rounds to even, which is infinity
    [65519.99, 0x7bff],
    [1e-9, 0x0000],
    [2 ** -25, 0x0000], // tie between 0 and 2^-24: even is 0
    [2 ** -25 * 1.0000001, 0x0001],
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 subnormal units: even is 2
    [1 + 2 ** -11, 0x3c00], // tie: 1 has an even mantissa
    [1 + 3 * 2 ** -11, 0x3c02], // tie: up to the even neighbour
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just past the tie
    [2047, 0x67ff],
    [2049, 0x6800], // tie: 2048 is even
    [2051, 0x6802], // tie: 2052 is even
  ];

  for (const [x, bits] of cases) {
    it(`encodes ${x} as 0x${bits.toString(16).padStart(4, '0')}`, () => {
      assert.equal(float32ToFloat16Bits(x), bits);
      const t = encodeTensor(new Float32Array([x]), 'float16');
      assert.deepEqual([...t.data], [bits & 0xff, bits >>> 8]);
    });
  }

  it('keeps NaN a NaN (both signs)', () => {
    const h = float32ToFloat16Bits(NaN);
    assert.equal(h & 0x7c00, 0x7c00);
    assert.notEqual(h & 0x03ff, 0);
    assert.ok(Number.isNaN(float16BitsToFloat32(h)));
    const neg = new Float32Array(new Uint32Array([0xffc00001]).buffer);
    assert.ok(Number.isNaN(decodeTensor(encodeTensor(neg, 'float16'))[0]));
    // A NaN whose payload sits only in the bits float16 drops must not become infinity.
    const lowPayload = new Float32Array(new Uint32Array([0x7f800001]).buffer);
    assert.ok(Number.isNaN(decodeTensor(encodeTensor(lowPayload, 'float16'))[0]));
  });

  it('decodes every one of the 65536 bit patterns back to itself', () => {
    const bits = new Uint16Array(65536);
    for (let h = 0; h < 65536; h++) bits[h] = h;
    const t: WireTensor = { dtype: 'float16', length: 65536, data: new Uint8Array(bits.buffer) };
    const values = decodeTensor(t);
    assert.equal(values[0x3c00], 1);
    assert.equal(values[0x0001], 2 ** -24);
    assert.equal(values[0x03ff], 1023 * 2 ** -24);
    assert.equal(values[0x7bff], 65504);
    assert.equal(values[0xfc00], -Infinity);
    const back = new Uint16Array(encodeTensor(values, 'float16').data.buffer);
    for (let h = 0; h < 65536; h++) {
      const isNaN16 = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (isNaN16) assert.ok(Number.isNaN(values[h]));
      else if (back[h] !== h) assert.fail(`0x${h.toString(16)} came back as 0x${back[h].toString(16)}`);
    }
  });

  it('stays within 2^-11 relative error over the normal range', () => {
    const rng = new Rng(7);
    const v = new Float32Array(20000);
    for (let i = 0; i < v.length; i++) {
      const mag = 2 ** (rng.next() * 29.9 - 14); // [2^-14, ~2^15.9)
      v[i] = (rng.next() < 0.5 ? -1 : 1) * mag;
    }
    const out = decodeTensor(encodeTensor(v, 'float16'));
    for (let i = 0; i < v.length; i++) {
      const rel = Math.abs(out[i] - v[i]) / Math.abs(v[i]);
      if (rel > 2 ** -11) assert.fail(`${v[i]} -> ${out[i]}: relative error ${rel}`);
    }
  });

  it('has absolute error at most 2^-25 in the subnormal range', () => {
    const rng = new Rng(8);
    const v = new Float32Array(5000);
    for (let i = 0; i < v.length; i++) v[i] = (rng.next() * 2 - 1) * 2 ** -14;
    const out = decodeTensor(encodeTensor(v, 'float16'));
    for (let i = 0; i < v.length; i++) assert.ok(Math.abs(out[i] - v[i]) <= 2 ** -25, `${v[i]} -> ${out[i]}`);
  });

  it('decodes from an unaligned Buffer and into a supplied array', () => {
    const v = randomValues(999, 9);
    const expected = decodeTensor(encodeTensor(v, 'float16'));
    const out = new Float32Array(999);
    decodeTensor(unaligned(encodeTensor(v, 'float16')), out);
    assert.deepEqual(out, expected);
  });
});

describe('bfloat16', () => {
  const cases: Array<[number, number]> = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3f80],
    [-2, 0xc000],
    [Infinity, 0x7f80],
    [-Infinity, 0xff80],
    [3.4028234663852886e38, 0x7f80], // float32 max rounds past bfloat16's max
    [1 + 2 ** -8, 0x3f80], // tie: even stays at 1
    [1 + 3 * 2 ** -8, 0x3f82], // tie: up to even
    [1 + 2 ** -8 + 2 ** -20, 0x3f81],
    [1e-40, 0x0001], // float32 subnormal 0x000116c2: bfloat16 shares the layout, so it rounds like any other
  ];

  for (const [x, bits] of cases) {
    it(`encodes ${x} as 0x${bits.toString(16).padStart(4, '0')}`, () => {
      assert.equal(float32ToBfloat16Bits(x), bits);
      const t = encodeTensor(new Float32Array([x]), 'bfloat16');
      assert.deepEqual([...t.data], [bits & 0xff, bits >>> 8]);
    });
  }

  it('decodes by widening the bits', () => {
    assert.equal(bfloat16BitsToFloat32(0x3f80), 1);
    assert.equal(bfloat16BitsToFloat32(0xc0a0), -5);
    assert.equal(bfloat16BitsToFloat32(0x7f7f), 3.3895313892515355e38);
    assert.equal(bfloat16BitsToFloat32(0x0001), 2 ** -133);
  });

  it('keeps NaN a NaN, even with a payload only in the dropped bits', () => {
    const nans = new Float32Array(new Uint32Array([0x7fc00000, 0x7f800001, 0xff800001]).buffer);
    const out = decodeTensor(encodeTensor(nans, 'bfloat16'));
    for (const x of out) assert.ok(Number.isNaN(x));
  });

  it('stays within 2^-8 relative error over the normal range', () => {
    const rng = new Rng(10);
    const v = new Float32Array(20000);
    for (let i = 0; i < v.length; i++) {
      const mag = 2 ** (rng.next() * 250 - 125);
      v[i] = (rng.next() < 0.5 ? -1 : 1) * mag;
    }
    const out = decodeTensor(encodeTensor(v, 'bfloat16'));
    for (let i = 0; i < v.length; i++) {
      const rel = Math.abs(out[i] - v[i]) / Math.abs(v[i]);
      if (rel > 2 ** -8) assert.fail(`${v[i]} -> ${out[i]}: relative error ${rel}`);
    }
  });

  it('round-trips bfloat16-representable values exactly from an unaligned Buffer', () => {
    const v = randomValues(777, 11);
    const once = decodeTensor(encodeTensor(v, 'bfloat16'));
    const twice = decodeTensor(unaligned(encodeTensor(once, 'bfloat16')));
    assert.deepEqual(twice, once);
  });
});

describe('decodeTensor checks', () => {
  const bad = (t: WireTensor, out?: Float32Array): void => {
    assert.throws(() => decodeTensor(t, out), (e) => isDptrainError(e, 'ERR_BAD_TENSOR'));
  };

  it('rejects a byte length that does not match', () => {
    bad({ dtype: 'float32', length: 3, data: new Uint8Array(11) });
    bad({ dtype: 'float16', length: 3, data: new Uint8Array(12) });
    bad({ dtype: 'bfloat16', length: 3, data: new Uint8Array(5) });
  });

  it('rejects an unknown dtype, a bad length and a wrong-sized output', () => {
    bad({ dtype: 'float64' as never, length: 1, data: new Uint8Array(8) });
    bad({ dtype: 'float32', length: -1, data: new Uint8Array(0) });
    bad({ dtype: 'float32', length: 1.5, data: new Uint8Array(6) });
    bad({ dtype: 'float32', length: 2, data: new Uint8Array(8) }, new Float32Array(3));
  });

  it('handles empty tensors', () => {
    for (const d of WIRE_DTYPES) assert.equal(decodeTensor(encodeTensor(new Float32Array(0), d)).length, 0);
  });
});

describe('finiteness', () => {
  it('allFinite spots NaN and both infinities', () => {
    assert.ok(allFinite(new Float32Array([0, -0, 1, 3.4e38, 1e-45])));
    assert.ok(!allFinite(new Float32Array([0, NaN])));
    assert.ok(!allFinite(new Float32Array([Infinity, 0])));
    assert.ok(!allFinite(new Float32Array([0, -Infinity, 0])));
    assert.ok(allFinite(new Float32Array(0)));
  });

  it('tensorAllFinite agrees with decoding, for every dtype', () => {
    const v = randomValues(257, 12, 100);
    for (const d of WIRE_DTYPES) {
      assert.ok(tensorAllFinite(encodeTensor(v, d)), d);
      for (const special of [NaN, Infinity, -Infinity]) {
        for (const at of [0, 128, 256]) {
          const w = v.slice();
          w[at] = special;
          const t = unaligned(encodeTensor(w, d));
          assert.equal(tensorAllFinite(t), false, `${d} ${special} at ${at}`);
          assert.equal(allFinite(decodeTensor(t)), false);
        }
      }
    }
    // Finite in float32 but past float16's range: the 16-bit tensor is not finite.
    const big = encodeTensor(new Float32Array([1e5]), 'float16');
    assert.equal(tensorAllFinite(big), false);
  });
});
