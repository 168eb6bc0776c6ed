/**
 * Parameter and gradient vectors on the wire.
 *
 * A model's parameters travel as one flat float32 vector. Sending it as
 * float16 or bfloat16 halves every round's traffic at the cost of precision;
 * the coordinator picks one dtype per run and says which in `welcome`.
 * Bytes on the wire are always little-endian, whatever the host.
 */
import { DptrainError, ErrorCodes } from '../errors.js';

export type WireDtype = 'float32' | 'float16' | 'bfloat16';

export const WIRE_DTYPES: readonly WireDtype[] = Object.freeze(['float32', 'float16', 'bfloat16'] as const);

export interface WireTensor {
  dtype: WireDtype;
  /** Element count. */
  length: number;
  /** Little-endian bytes, `length * bytesPerElement(dtype)` of them. */
  data: Uint8Array;
}

// Typed-array views use host byte order, so every fast path that views bytes
// as wider words needs to know whether that matches the wire's.
export const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function isWireDtype(x: unknown): x is WireDtype {
  return x === 'float32' || x === 'float16' || x === 'bfloat16';
}

export function bytesPerElement(d: WireDtype): number {
  switch (d) {
    case 'float32':
      return 4;
    case 'float16':
    case 'bfloat16':
      return 2;
    default:
      throw new DptrainError(ErrorCodes.ERR_BAD_TENSOR, `unknown wire dtype ${JSON.stringify(d)}`);
  }
}

// One-element scratch views for the scalar helpers; a module-level pair avoids
// allocating per call.
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/**
 * float32 bits -> IEEE 754 binary16 bits, rounding to nearest even.
 * Integer-only: emulating the float add trick in float64 would round twice.
 */
function halfFromFloatBits(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  if (a >= 0x47800000) {
    // |x| >= 2^16 is past anything that rounds to 65504; NaN stays a quiet NaN.
    return sign | (a > 0x7f800000 ? 0x7e00 : 0x7c00);
  }
  if (a >= 0x38800000) {
    // Normal half (|x| >= 2^-14). Adding 0xfff plus the lowest kept bit rounds
    // half-to-even; a carry out of the mantissa bumps the exponent, which also
    // turns [65520, 65536) into infinity as IEEE requires.
    return sign | ((a - 0x38000000 + 0xfff + ((a >>> 13) & 1)) >>> 13);
  }
  if (a <= 0x33000000) {
    // |x| <= 2^-25: half of the smallest subnormal or less, which rounds to zero (ties to even).
    return sign;
  }
  // Subnormal half: value in units of 2^-24 is mantissa >> (126 - exponent).
  const shift = 126 - (a >>> 23);
  const m = (a & 0x7fffff) | 0x800000;
  let q = m >>> shift;
  const rem = m & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  if (rem > halfway || (rem === halfway && (q & 1) !== 0)) q++;
  // q may reach 0x400, which is exactly the bit pattern of the smallest normal.
  return sign | q;
}

function floatBitsFromHalf(h: number): number {
  const sign = (h & 0x8000) << 16;
  const e = (h >>> 10) & 0x1f;
  let m = h & 0x3ff;
  if (e === 0) {
    if (m === 0) return sign >>> 0;
    // Subnormal half: every one is a normal float32, so normalise.
    let e32 = 113;
    while ((m & 0x400) === 0) {
      m <<= 1;
      e32--;
    }
    return (sign | (e32 << 23) | ((m & 0x3ff) << 13)) >>> 0;
  }
  if (e === 31) return (sign | 0x7f800000 | (m << 13)) >>> 0;
  return (sign | ((e + 112) << 23) | (m << 13)) >>> 0;
}

function bfloatFromFloatBits(u: number): number {
  if ((u & 0x7fffffff) > 0x7f800000) {
    // Truncating a NaN whose payload sits in the low half would yield infinity.
    return (u >>> 16) | 0x0040;
  }
  return (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
}

// Decoding float16 is one table lookup per element; 256 KiB, built on first use.
let halfTable: Uint32Array | null = null;
export function getHalfTable(): Uint32Array {
  if (halfTable === null) {
    const t = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) t[h] = floatBitsFromHalf(h);
    halfTable = t;
  }
  return halfTable;
}

/** Scalar float -> binary16 bits (round to nearest even). */
export function float32ToFloat16Bits(x: number): number {
  scratchF32[0] = x;
  return halfFromFloatBits(scratchU32[0]);
}

/** binary16 bits -> float value. */
export function float16BitsToFloat32(h: number): number {
  scratchU32[0] = floatBitsFromHalf(h & 0xffff);
  return scratchF32[0];
}

/** Scalar float -> bfloat16 bits (round to nearest even). */
export function float32ToBfloat16Bits(x: number): number {
  scratchF32[0] = x;
  return bfloatFromFloatBits(scratchU32[0]);
}

/** bfloat16 bits -> float value. */
export function bfloat16BitsToFloat32(h: number): number {
  scratchU32[0] = (h & 0xffff) << 16;
  return scratchF32[0];
}

function swapBytes(bytes: Uint8Array, width: 2 | 4): void {
  for (let i = 0; i + width <= bytes.length; i += width) {
    if (width === 2) {
      const t = bytes[i];
      bytes[i] = bytes[i + 1];
      bytes[i + 1] = t;
    } else {
      let t = bytes[i];
      bytes[i] = bytes[i + 3];
      bytes[i + 3] = t;
      t = bytes[i + 1];
      bytes[i + 1] = bytes[i + 2];
      bytes[i + 2] = t;
    }
  }
}

/**
 * float32 is a view over `values` (no copy), so the caller must not reuse
 * `values` until the encoded frame has been built.
 */
export function encodeTensor(values: Float32Array, dtype: WireDtype): WireTensor {
  const n = values.length;
  if (dtype === 'float32') {
    if (HOST_LITTLE_ENDIAN) {
      return { dtype, length: n, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
    }
    const data = new Uint8Array(values.byteLength);
    data.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    swapBytes(data, 4);
    return { dtype, length: n, data };
  }
  bytesPerElement(dtype); // throws for an unknown dtype
  const data = new Uint8Array(n * 2);
  encodeTensorInto(values, dtype, data);
  return { dtype, length: n, data };
}

/**
 * Writes `values` in `dtype`'s wire bytes into `out` (exactly `values.length`
 * times the dtype's width), as encodeTensor would: for a frame built in place.
 */
export function encodeTensorInto(values: Float32Array, dtype: WireDtype, out: Uint8Array): void {
  const n = values.length;
  if (out.byteLength !== n * bytesPerElement(dtype)) {
    throw new DptrainError(ErrorCodes.ERR_BAD_TENSOR, `${n} ${dtype} values need ${n * bytesPerElement(dtype)} bytes, the output has ${out.byteLength}`);
  }
  if (dtype === 'float32') {
    out.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    if (!HOST_LITTLE_ENDIAN) swapBytes(out, 4);
    return;
  }
  const bits = new Uint32Array(values.buffer, values.byteOffset, n);
  if (HOST_LITTLE_ENDIAN && out.byteOffset % 2 === 0) {
    const o = new Uint16Array(out.buffer, out.byteOffset, n);
    if (dtype === 'float16') halfInto(bits, o);
    else bfloatInto(bits, o);
    return;
  }
  for (let i = 0, j = 0; i < n; i++, j += 2) {
    const h = dtype === 'float16' ? halfFromFloatBits(bits[i]) : bfloatFromFloatBits(bits[i]);
    out[j] = h & 0xff;
    out[j + 1] = h >>> 8;
  }
}

function halfInto(bits: Uint32Array, out: Uint16Array): void {
  for (let i = 0; i < out.length; i++) out[i] = halfFromFloatBits(bits[i]);
}

function bfloatInto(bits: Uint32Array, out: Uint16Array): void {
  for (let i = 0; i < out.length; i++) out[i] = bfloatFromFloatBits(bits[i]);
}

/**
 * Always copies: the bytes usually come from msgpackr as a Buffer slice of the
 * received frame, at an arbitrary (possibly odd) byteOffset, so they can't be
 * viewed as floats directly, and copying also lets the frame be collected.
 */
export function decodeTensor(t: WireTensor, out?: Float32Array): Float32Array {
  const n = t.length;
  if (!isWireDtype(t.dtype)) {
    throw new DptrainError(ErrorCodes.ERR_BAD_TENSOR, `unknown wire dtype ${JSON.stringify(t.dtype)}`);
  }
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new DptrainError(ErrorCodes.ERR_BAD_TENSOR, `tensor length must be a non-negative integer, got ${n}`);
  }
  const data = t.data;
  if (!(data instanceof Uint8Array) || data.byteLength !== n * bytesPerElement(t.dtype)) {
    throw new DptrainError(
      ErrorCodes.ERR_BAD_TENSOR,
      `tensor of ${n} ${t.dtype} needs ${n * bytesPerElement(t.dtype)} bytes, got ${data instanceof Uint8Array ? data.byteLength : typeof data}`,
    );
  }
  if (out === undefined) {
    out = new Float32Array(n);
  } else if (out.length !== n) {
    throw new DptrainError(ErrorCodes.ERR_BAD_TENSOR, `output has ${out.length} elements, tensor has ${n}`);
  }
  if (t.dtype === 'float32') {
    const dst = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
    dst.set(data);
    if (!HOST_LITTLE_ENDIAN) swapBytes(dst, 4);
    return out;
  }
  // Float32Array offsets are always multiples of 4, so this view is legal.
  const o = new Uint32Array(out.buffer, out.byteOffset, n);
  if (t.dtype === 'float16') {
    const table = getHalfTable();
    for (let i = 0, j = 0; i < n; i++, j += 2) o[i] = table[data[j] | (data[j + 1] << 8)];
  } else {
    for (let i = 0, j = 0; i < n; i++, j += 2) o[i] = (data[j] << 16) | (data[j + 1] << 24);
  }
  return out;
}

export function allFinite(values: Float32Array): boolean {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    // NaN - NaN and Inf - Inf are both NaN; finite - itself is 0.
    if (v - v !== 0) return false;
  }
  return true;
}

/**
 * Finiteness straight from the wire bytes (exponent field all ones means
 * Inf or NaN), so validating a gradient allocates nothing. Assumes the byte
 * length was already checked.
 */
export function tensorAllFinite(t: WireTensor): boolean {
  const d = t.data;
  const n = t.length;
  if (t.dtype === 'float32') {
    for (let j = 0, end = n * 4; j < end; j += 4) {
      if ((d[j + 3] & 0x7f) === 0x7f && (d[j + 2] & 0x80) !== 0) return false;
    }
  } else if (t.dtype === 'float16') {
    for (let j = 1, end = n * 2; j < end; j += 2) {
      if ((d[j] & 0x7c) === 0x7c) return false;
    }
  } else {
    for (let j = 0, end = n * 2; j < end; j += 2) {
      if ((d[j + 1] & 0x7f) === 0x7f && (d[j] & 0x80) !== 0) return false;
    }
  }
  return true;
}
