/**
 * What the hand-written WebAssembly modules (wire/simd-sum.ts and the
 * kernels in model/kernels/: simd-rows.ts, simd-transpose.ts,
 * simd-softmax.ts) share: the binary format's integer encodings, sections
 * and names, the opcodes of the value types and the SIMD prefix, and the
 * kernels' common shape (one function `run` over an imported memory). They
 * are written out byte by byte, so the project needs no WebAssembly
 * toolchain.
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

/**
 * A module of one exported function `run`, taking `params` i32 arguments and
 * returning nothing, over a memory it imports as `m.mem`; `body` is the
 * function's locals and code (with its final `end`).
 */
export function runModule(params: number, body: number[]): Uint8Array<ArrayBuffer> {
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, ...leb(params), ...Array<number>(params).fill(I32), 0]),
    ...section(2, [1, ...name('m'), ...name('mem'), 0x02, 0x00, 0x00]),
    ...section(3, [1, 0]),
    ...section(7, [1, ...name('run'), 0x00, 0]),
    ...section(10, [1, ...leb(body.length), ...body]),
  ]);
}

/** A runModule's `run`, instantiated over `memory`; null where the engine refuses the module (no WebAssembly SIMD). */
export function instantiateRun<F>(bytes: Uint8Array<ArrayBuffer>, memory: WebAssembly.Memory): F | null {
  try {
    return new WebAssembly.Instance(new WebAssembly.Module(bytes), { m: { mem: memory } }).exports.run as F;
  } catch {
    return null;
  }
}
