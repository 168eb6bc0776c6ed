/**
 * The coordinator's gradient sum: a reply's gradient is checked, decoded and
 * added into the round's float64 sum straight from the received frame, all or
 * nothing, with no allocation per reply.
 *
 * A reply's bytes are decoded once into a scratch buffer reused for every
 * reply (float32: one native copy; float16: a table lookup; bfloat16: a
 * shift), the scratch is checked for Inf and NaN, and only then added into
 * the sum; both loops run four values per instruction in WebAssembly SIMD
 * (simd-sum.ts), with the sum itself in the module's memory. A frame refused
 * halfway therefore leaves the sum as it was: adding as we go and subtracting
 * back would not (1e-30 + 1e30 - 1e30 is 0 in floating point).
 *
 * Row-sparse blocks (a one-hot input matrix, an embedding: only the rows of
 * tokens that occurred can be nonzero) may arrive as row ids plus those rows;
 * the dense tensor then holds every other block, in layout order.
 */
import { ErrorCodes, type ErrorCode } from '../errors.js';
import { bytesPerElement, getHalfTable, HOST_LITTLE_ENDIAN, isWireDtype, type WireTensor } from './tensor.js';
import { simdSum, type SimdSum } from './simd-sum.js';

/** A block of the flat parameter vector whose gradient is row-sparse: `rows` x `cols` values at `offset`. */
export interface RowSparseBlock {
  offset: number;
  rows: number;
  cols: number;
}

/** Rows of one row-sparse block: `ids` (int32 little-endian, strictly increasing) and their values, ids x cols. */
export interface SparseRows {
  /** Index into the model's list of row-sparse blocks. */
  block: number;
  ids: Uint8Array;
  values: WireTensor;
}

export class GradAccumulator {
  private readonly simd: SimdSum | null;
  private sum = new Float64Array(0);
  private f32 = new Float32Array(0);
  private u32 = new Uint32Array(0);
  private u8 = new Uint8Array(0);
  /** Byte addresses of the scratch and of the raw 16-bit values in the module's memory. */
  private scratchAt = 0;
  private rawAt = 0;
  private raw = new Uint8Array(0);
  private readonly ids: Int32Array;
  /** Received frames can land here, in the module's memory, so that a float32 gradient is checked and added where it lies. */
  private frameRegion: Uint8Array | null = null;
  /** Byte address of the region reserved for the parameter server (`hostRegion`), or -1. */
  private hostAt = -1;

  /**
   * `frameBytes`: reserve that much of the module's memory for received frames
   * (`frameBuffer`); a float32 gradient in such a frame is then checked and
   * added in place, without the copy into the scratch.
   * `hostBytes`: reserve that much more for the parameter server
   * (`hostRegion`, ParameterServer.moveInto), so that the round's sum is
   * averaged in this module, where it lies.
   */
  constructor(
    readonly paramCount: number,
    readonly sparseBlocks: readonly RowSparseBlock[] = [],
    frameBytes = 0,
    hostBytes = 0,
  ) {
    this.simd = HOST_LITTLE_ENDIAN ? simdSum() : null;
    this.ids = new Int32Array(sparseBlocks.reduce((a, b) => a + b.rows, 0));
    this.layout(paramCount, frameBytes, hostBytes);
  }

  /** The module and the byte address of the region the constructor reserved for `hostBytes`, or null (none asked, or no SIMD). */
  hostRegion(): { simd: SimdSum; at: number } | null {
    return this.simd && this.hostAt >= 0 ? { simd: this.simd, at: this.hostAt } : null;
  }

  /** A receive buffer of `n` bytes in the module's memory (see the constructor), or null where there is none that large. */
  frameBuffer(n: number): Uint8Array | null {
    return this.frameRegion && n <= this.frameRegion.byteLength ? this.frameRegion.subarray(0, n) : null;
  }

  /** Whether the sums run in WebAssembly SIMD (else in JavaScript). */
  get vectorised(): boolean {
    return this.simd !== null;
  }

  private layout(n: number, frameBytes: number, hostBytes: number): void {
    if (this.simd) {
      // [sum: n float64][scratch: n float32][raw: n 16-bit values][frames][host], 16-byte aligned; the memory never grows after this.
      this.scratchAt = Math.ceil((n * 8) / 16) * 16;
      this.rawAt = this.scratchAt + Math.ceil((n * 4 + 16) / 16) * 16;
      const frameAt = this.rawAt + Math.ceil((n * 2 + 16) / 16) * 16;
      const hostAt = frameAt + Math.ceil((frameBytes + 16) / 16) * 16;
      const need = hostAt + hostBytes + 16;
      if (hostBytes > 0) this.hostAt = hostAt;
      const mem = this.simd.memory;
      if (mem.buffer.byteLength < need) mem.grow(Math.ceil((need - mem.buffer.byteLength) / 65536));
      this.sum = new Float64Array(mem.buffer, 0, n);
      this.f32 = new Float32Array(mem.buffer, this.scratchAt, n);
      this.raw = new Uint8Array(mem.buffer, this.rawAt, n * 2);
      if (frameBytes > 0) this.frameRegion = new Uint8Array(mem.buffer, frameAt, frameBytes);
    } else {
      this.sum = new Float64Array(n);
      this.f32 = new Float32Array(n);
    }
    this.u32 = new Uint32Array(this.f32.buffer, this.f32.byteOffset, n);
    this.u8 = new Uint8Array(this.f32.buffer, this.f32.byteOffset, n * 4);
  }

  /**
   * The sum for the next round, zeroed. It is the same array every time: the
   * caller must be done with the previous round's sum.
   */
  newSum(): Float64Array {
    this.sum.fill(0);
    return this.sum;
  }

  /**
   * Adds a reply's gradient into `sum` and returns null, or returns why not
   * and leaves `sum` untouched: ERR_BAD_TENSOR (dtype, lengths, byte counts,
   * row ids) or ERR_NON_FINITE.
   */
  addInto(sum: Float64Array, grads: WireTensor, rows: readonly SparseRows[] = []): ErrorCode | null {
    const n = this.paramCount;
    if (sum.length !== n || !isWireDtype(grads.dtype)) return ErrorCodes.ERR_BAD_TENSOR;
    const dtype = grads.dtype;
    const width = bytesPerElement(dtype);
    // Shapes first: which blocks came as rows, and how many values in all.
    let denseLength = n;
    let values = 0;
    let idAt = 0;
    let prev = -1;
    for (const r of rows) {
      const b = this.sparseBlocks[r.block];
      if (!b || r.block <= prev) return ErrorCodes.ERR_BAD_TENSOR;
      prev = r.block;
      const k = r.ids.byteLength / 4;
      if (!Number.isInteger(k) || k > b.rows || r.values.dtype !== dtype || r.values.length !== k * b.cols || r.values.data.byteLength !== k * b.cols * width) {
        return ErrorCodes.ERR_BAD_TENSOR;
      }
      if (!readIds(r.ids, k, b.rows, this.ids, idAt)) return ErrorCodes.ERR_BAD_TENSOR;
      idAt += k;
      denseLength -= b.rows * b.cols;
      values += k * b.cols;
    }
    if (grads.length !== denseLength || !(grads.data instanceof Uint8Array) || grads.data.byteLength !== denseLength * width) return ErrorCodes.ERR_BAD_TENSOR;
    if (rows.length === 0 && dtype === 'float32' && this.simd && sum === this.sum && grads.data.buffer === this.simd.memory.buffer) return this.addInPlace(grads.data, n);
    // Decode everything into the scratch, then check it, then add it.
    this.decode(grads, 0);
    let at = denseLength;
    for (const r of rows) {
      this.decode(r.values, at);
      at += r.values.length;
    }
    if (!this.allFinite(denseLength + values)) return ErrorCodes.ERR_NON_FINITE;
    // Dense: the stretches between the blocks that came as rows.
    let src = 0;
    let dst = 0;
    for (const r of rows) {
      const b = this.sparseBlocks[r.block];
      this.addRange(sum, dst, src, b.offset - dst);
      src += b.offset - dst;
      dst = b.offset + b.rows * b.cols;
    }
    this.addRange(sum, dst, src, n - dst);
    // Rows: their values follow the dense part in the scratch.
    src = denseLength;
    idAt = 0;
    for (const r of rows) {
      const b = this.sparseBlocks[r.block];
      const k = r.ids.byteLength / 4;
      for (let j = 0; j < k; j++) this.addRange(sum, b.offset + this.ids[idAt + j] * b.cols, src + j * b.cols, b.cols);
      idAt += k;
      src += k * b.cols;
    }
    return null;
  }

  /**
   * A dense float32 gradient that arrived in the module's memory: checked and
   * added where it lies (four values at a time, at any alignment); only the
   * last n mod 4 values go through the scratch.
   */
  private addInPlace(data: Uint8Array, n: number): ErrorCode | null {
    const simd = this.simd!;
    const whole = n & ~3;
    const at = data.byteOffset;
    const tail = n - whole;
    if (tail > 0) this.u8.set(data.subarray(whole * 4, n * 4));
    if (simd.check(at, at + whole * 4) !== 0 || !finiteFrom(this.u32, 0, tail)) return ErrorCodes.ERR_NON_FINITE;
    simd.add(0, at, at + whole * 4);
    addFloat32(this.sum, whole, this.f32, 0, tail);
    return null;
  }

  private decode(t: WireTensor, at: number): void {
    const d = t.data;
    const n = t.length;
    if (t.dtype === 'float32') {
      const dst = this.u8.subarray(at * 4, (at + n) * 4);
      dst.set(d);
      if (!HOST_LITTLE_ENDIAN) {
        const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
        for (let i = 0; i < n; i++) this.f32[at + i] = dv.getFloat32(i * 4, true);
      }
      return;
    }
    let done = 0;
    if (this.simd) {
      // Copy the bytes in (native), decode whole groups of four in the module, the tail here.
      done = n & ~3;
      this.raw.set(d.subarray(0, done * 2));
      (t.dtype === 'float16' ? this.simd.half : this.simd.bfloat)(this.scratchAt + at * 4, this.rawAt, this.rawAt + done * 2);
    }
    if (t.dtype === 'float16') decodeHalf(d, this.u32, at, n, done);
    else decodeBfloat(d, this.u32, at, n, done);
  }

  private allFinite(n: number): boolean {
    const whole = n & ~3;
    if (this.simd) {
      if (this.simd.check(this.scratchAt, this.scratchAt + whole * 4) !== 0) return false;
    } else if (!finiteFrom(this.u32, 0, whole)) return false;
    return finiteFrom(this.u32, whole, n);
  }

  private addRange(sum: Float64Array, dst: number, src: number, len: number): void {
    if (len <= 0) return;
    let done = 0;
    if (this.simd && sum === this.sum) {
      done = len & ~3;
      const s = this.scratchAt + src * 4;
      this.simd.add(dst * 8, s, s + done * 4);
    }
    addFloat32(sum, dst + done, this.f32, src + done, len - done);
  }
}

/** Row ids as sent: int32 little-endian, strictly increasing, each in [0, rows). */
export function rowIdsValid(bytes: Uint8Array, rows: number): boolean {
  const k = bytes.byteLength / 4;
  return Number.isInteger(k) && k <= rows && readIds(bytes, k, rows, null, 0);
}

// One small monomorphic function per loop, so that V8 optimises each on its own.

function readIds(bytes: Uint8Array, k: number, rows: number, out: Int32Array | null, at: number): boolean {
  let prev = -1;
  for (let j = 0, p = 0; j < k; j++, p += 4) {
    const id = bytes[p] | (bytes[p + 1] << 8) | (bytes[p + 2] << 16) | (bytes[p + 3] << 24);
    if (id <= prev || id >= rows) return false;
    if (out) out[at + j] = id;
    prev = id;
  }
  return true;
}

function decodeHalf(d: Uint8Array, u: Uint32Array, at: number, n: number, from: number): void {
  const table = getHalfTable();
  for (let i = from, j = from * 2; i < n; i++, j += 2) u[at + i] = table[d[j] | (d[j + 1] << 8)];
}

function decodeBfloat(d: Uint8Array, u: Uint32Array, at: number, n: number, from: number): void {
  for (let i = from, j = from * 2; i < n; i++, j += 2) u[at + i] = (d[j] << 16) | (d[j + 1] << 24);
}

function finiteFrom(u: Uint32Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if ((u[i] & 0x7f800000) === 0x7f800000) return false;
  return true;
}

function addFloat32(sum: Float64Array, dst: number, f: Float32Array, src: number, len: number): void {
  for (let i = 0; i < len; i++) sum[dst + i] += f[src + i];
}
