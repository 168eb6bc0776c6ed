/**
 * What the hand-written WebAssembly modules (wire/simd-sum.ts,
 * model/kernels/simd-rows.ts, model/kernels/simd-transpose.ts) share: the
 * binary format's integer encodings, sections and names, and the opcodes of
 * the value types and the SIMD prefix. They are written out byte by byte, so
 * the project needs no WebAssembly toolchain.
 */

/** The prefix of every SIMD instruction. */
export const SIMD = 0xfd;
/** Value types. */
export const V128 = 0x7b;
export const I32 = 0x7f;

/** Unsigned LEB128, as every length and index in a module is written. */
export function leb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

/** Signed LEB128 (i32.const's immediate). */
export function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) return [...out, b];
    out.push(b | 0x80);
  }
}

/** A section: its id, then its content's length and the content. */
export const section = (id: number, content: number[]): number[] => [id, ...leb(content.length), ...content];
/** An ASCII name (imports, exports). */
export const name = (s: string): number[] => [s.length, ...[...s].map((c) => c.charCodeAt(0))];
