/**
 * The coordinator's one-pass gradient sum (wire/accumulate.ts): what it adds
 * equals decoding the tensor and adding it, for every wire dtype, in SIMD and
 * in JavaScript; a refused reply (Inf or NaN anywhere, wrong sizes, bad row
 * ids) leaves the sum exactly as it was; row-sparse blocks land in their rows.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { GradAccumulator, type RowSparseBlock, type SparseRows } from '../src/shared/wire/accumulate.js';
import { decodeTensor, encodeTensor, WIRE_DTYPES, type WireDtype, type WireTensor } from '../src/shared/wire/tensor.js';
import { simdSum } from '../src/shared/wire/simd-sum.js';

/** 1,003 values: not a multiple of four, so the vector loops' tails run too. */
const n = 1003;
const values = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * 3);

/** The tensor's bytes at an odd offset inside a larger buffer, as a received frame holds them. */
function framed(t: WireTensor): WireTensor {
  const buf = new Uint8Array(t.data.byteLength + 3);
  buf.set(t.data, 1);
  return { dtype: t.dtype, length: t.length, data: buf.subarray(1, 1 + t.data.byteLength) };
}

function idBytes(ids: number[]): Uint8Array {
  const b = new Uint8Array(ids.length * 4);
  const dv = new DataView(b.buffer);
  ids.forEach((id, j) => dv.setInt32(j * 4, id, true));
  return b;
}

describe('GradAccumulator: dense gradients', () => {
  for (const dtype of WIRE_DTYPES) {
    it(`${dtype}: adds exactly what decodeTensor gives, into its own sum (SIMD) and into any other (JavaScript)`, () => {
      const t = framed(encodeTensor(values, dtype));
      const decoded = decodeTensor(t);
      const acc = new GradAccumulator(n);
      const own = acc.newSum();
      const other = new Float64Array(n);
      for (let i = 0; i < n; i++) own[i] = other[i] = i * 0.5;
      for (const sum of [own, other]) {
        assert.equal(acc.addInto(sum, t), null);
        assert.equal(acc.addInto(sum, t), null);
      }
      for (let i = 0; i < n; i++) {
        assert.equal(own[i], i * 0.5 + decoded[i] + decoded[i], `element ${i}`);
        assert.equal(other[i], own[i]);
      }
    });
    for (const bad of [NaN, Infinity, -Infinity]) {
      for (const [where, at] of [['start', 0], ['middle', 500], ['tail', n - 1]] as const) {
        it(`${dtype}: ${bad} at the ${where} is refused and leaves the sum untouched`, () => {
          const v = values.slice();
          v[at] = bad;
          const acc = new GradAccumulator(n);
          const sum = acc.newSum();
          assert.equal(acc.addInto(sum, framed(encodeTensor(values, dtype))), null);
          const after = sum.slice();
          assert.equal(acc.addInto(sum, framed(encodeTensor(v, dtype))), 'ERR_NON_FINITE');
          assert.deepEqual(sum, after);
        });
      }
    }
    it(`${dtype}: a wrong length, byte count or dtype is refused and leaves the sum untouched`, () => {
      const acc = new GradAccumulator(n);
      const sum = acc.newSum().fill(1);
      const t = encodeTensor(values, dtype);
      assert.equal(acc.addInto(new Float64Array(n + 1), t), 'ERR_BAD_TENSOR');
      assert.equal(acc.addInto(sum, { dtype, length: n - 1, data: t.data }), 'ERR_BAD_TENSOR');
      assert.equal(acc.addInto(sum, { dtype, length: n, data: t.data.subarray(1) }), 'ERR_BAD_TENSOR');
      assert.equal(acc.addInto(sum, { dtype: 'float64' as WireDtype, length: n, data: t.data }), 'ERR_BAD_TENSOR');
      assert.ok(sum.every((x) => x === 1));
    });
  }
  it('float16 values too large for half precision arrive as Infinity and are refused', () => {
    const v = values.slice();
    v[3] = 1e6;
    const acc = new GradAccumulator(n);
    const sum = acc.newSum();
    assert.equal(acc.addInto(sum, encodeTensor(v, 'float16')), 'ERR_NON_FINITE');
    assert.ok(sum.every((x) => x === 0));
  });
  it('newSum hands out the same zeroed array every round', () => {
    const acc = new GradAccumulator(n);
    const a = acc.newSum();
    acc.addInto(a, encodeTensor(values, 'float32'));
    const b = acc.newSum();
    assert.equal(a, b);
    assert.ok(b.every((x) => x === 0));
  });
});

describe('GradAccumulator: row-sparse blocks', () => {
  // [dense 10][block 0: 6 x 5 at 10][dense 7][block 1: 4 x 3 at 47][dense 3]
  const blocks: RowSparseBlock[] = [
    { offset: 10, rows: 6, cols: 5 },
    { offset: 47, rows: 4, cols: 3 },
  ];
  const total = 62;
  const full = Float32Array.from({ length: total }, (_, i) => i + 1);
  /** The vector with block 0 sent as rows 1 and 4 and block 1 as row 2 (the other rows zero). */
  function sparseOf(dtype: WireDtype): { grads: WireTensor; rows: SparseRows[]; dense: Float32Array } {
    const dense = new Float32Array(total);
    const keep = (b: RowSparseBlock, r: number) => dense.set(full.subarray(b.offset + r * b.cols, b.offset + (r + 1) * b.cols), b.offset + r * b.cols);
    dense.set(full.subarray(0, 10));
    dense.set(full.subarray(40, 47), 40);
    dense.set(full.subarray(59), 59);
    keep(blocks[0], 1);
    keep(blocks[0], 4);
    keep(blocks[1], 2);
    const rest = Float32Array.from([...full.subarray(0, 10), ...full.subarray(40, 47), ...full.subarray(59)]);
    const rows: SparseRows[] = [
      { block: 0, ids: idBytes([1, 4]), values: encodeTensor(Float32Array.from([...full.subarray(15, 20), ...full.subarray(30, 35)]), dtype) },
      { block: 1, ids: idBytes([2]), values: encodeTensor(full.slice(53, 56), dtype) },
    ];
    return { grads: encodeTensor(rest, dtype), rows, dense };
  }
  for (const dtype of WIRE_DTYPES) {
    it(`${dtype}: rows land where the dense vector has them; the sum equals the dense one's`, () => {
      const { grads, rows, dense } = sparseOf(dtype);
      const acc = new GradAccumulator(total, blocks);
      const sum = acc.newSum();
      assert.equal(acc.addInto(sum, grads, rows), null);
      const ref = new GradAccumulator(total, blocks);
      const refSum = ref.newSum();
      assert.equal(ref.addInto(refSum, encodeTensor(dense, dtype)), null);
      assert.deepEqual(sum, refSum);
    });
  }
  it('only one block as rows: the dense tensor holds every other block', () => {
    const { rows, dense } = sparseOf('float32');
    const rest = Float32Array.from([...full.subarray(0, 10), ...full.subarray(40)]);
    const d = dense.slice();
    d.set(full.subarray(47, 59), 47);
    const acc = new GradAccumulator(total, blocks);
    const sum = acc.newSum();
    assert.equal(acc.addInto(sum, encodeTensor(rest, 'float32'), [rows[0]]), null);
    assert.deepEqual([...sum], [...d]);
  });
  const refusals: [string, (r: SparseRows[]) => SparseRows[]][] = [
    ['row ids out of order', (r) => [{ ...r[0], ids: idBytes([4, 1]) }, r[1]]],
    ['a repeated row id', (r) => [{ ...r[0], ids: idBytes([1, 1]) }, r[1]]],
    ['a row id past the block', (r) => [r[0], { ...r[1], ids: idBytes([4]) }]],
    ['a negative row id', (r) => [r[0], { ...r[1], ids: idBytes([-1]) }]],
    ['ids that are not whole int32s', (r) => [{ ...r[0], ids: r[0].ids.subarray(1) }, r[1]]],
    ['values for fewer rows than ids', (r) => [{ ...r[0], ids: idBytes([1, 4, 5]) }, r[1]]],
    ['blocks out of order', (r) => [r[1], r[0]]],
    ['an unknown block', (r) => [r[0], { ...r[1], block: 2 }]],
    ['values of another dtype', (r) => [r[0], { ...r[1], values: encodeTensor(full.slice(53, 56), 'float16') }]],
    ['a NaN in the rows', (r) => [r[0], { ...r[1], values: encodeTensor(Float32Array.from([1, NaN, 2]), 'float32') }]],
    ['the dense part without the rows (sizes do not add up)', (r) => [r[0]]],
  ];
  for (const [what, change] of refusals) {
    it(`refused, sum untouched: ${what}`, () => {
      const { grads, rows } = sparseOf('float32');
      const acc = new GradAccumulator(total, blocks);
      const sum = acc.newSum();
      assert.equal(acc.addInto(sum, grads, rows), null);
      const after = sum.slice();
      const code = acc.addInto(sum, grads, change(rows));
      assert.ok(code === 'ERR_BAD_TENSOR' || code === 'ERR_NON_FINITE', `${what}: ${code}`);
      assert.deepEqual(sum, after);
    });
  }
});

describe('WebAssembly SIMD decoders', () => {
  it('float16 and bfloat16: every one of the 65,536 bit patterns decodes to the bits decodeTensor gives (NaN payloads included)', (t) => {
    const s = simdSum();
    if (!s) return t.skip('no WebAssembly SIMD here');
    const count = 65536;
    s.memory.grow(Math.ceil((count * 6) / 65536));
    const raw = new Uint16Array(s.memory.buffer, 0, count);
    for (let h = 0; h < count; h++) raw[h] = h;
    const bytes = new Uint8Array(raw.buffer, 0, count * 2).slice();
    for (const [dtype, fn] of [['float16', s.half], ['bfloat16', s.bfloat]] as const) {
      fn(count * 2, 0, count * 2);
      const got: Uint32Array = new Uint32Array(s.memory.buffer, count * 2, count);
      const want = new Uint32Array(decodeTensor({ dtype, length: count, data: bytes }).buffer);
      for (let h = 0; h < count; h++) if (got[h] !== want[h]) assert.fail(`${dtype} 0x${h.toString(16)}: 0x${got[h].toString(16)} vs 0x${want[h].toString(16)}`);
    }
  });
});
