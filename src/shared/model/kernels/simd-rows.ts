/**
 * Row-wise elementwise arithmetic compiled to WebAssembly SIMD, run over the
 * wasm backend's own memory: the gate kernels' inner loops (lstm-gates.ts,
 * cell-gates.ts) four float32 lanes an instruction instead of one float64
 * JavaScript operation.
 *
 * Why: V8 does not vectorise the kernels' JavaScript loops; at d2l sizes
 * (B = 32, H = 256) the LSTM's backward gate kernel took about 200 µs a call,
 * 18 ns an element, against about 11 µs for a whole backend multiply or add
 * of the same (B, H) (load 3, 2 cores). The backend exports its memory
 * (`wasm.asm.memory`), so a small module of ours can import it and work on
 * the tensors where they lie.
 *
 * A program is a list of bindings and outputs over operands, each operand a
 * column block of a row-major matrix: (byte address of its first element,
 * row stride in bytes). The compiled function loops over rows, and within a
 * row over the block's width four floats at a time: the width must be a
 * multiple of 4 (callers keep their JavaScript loops otherwise). Arithmetic is
 * float32 (the JavaScript loops compute in float64 and round on store: the two
 * differ in the last bits, and every worker on wasm runs the same code).
 * Where WebAssembly SIMD or the backend's memory is not available (a threaded
 * build's shared memory, an older engine), `simdRows` returns null.
 */
import { I32, instantiateRun, leb, runModule, SIMD, sleb, V128 } from '../../wasm-bytes.js';

/** An expression over four float32 lanes. */
export type Expr = { in: number } | { let: number } | { c: number } | { op: 'add' | 'sub' | 'mul' | 'div'; a: Expr; b: Expr } | { op: 'exp'; a: Expr };

export const input = (i: number): Expr => ({ in: i });
export const num = (c: number): Expr => ({ c });
export const add = (a: Expr, b: Expr): Expr => ({ op: 'add', a, b });
export const sub = (a: Expr, b: Expr): Expr => ({ op: 'sub', a, b });
export const mul = (a: Expr, ...bs: Expr[]): Expr => bs.reduce<Expr>((x, b) => ({ op: 'mul', a: x, b }), a);
export const div = (a: Expr, b: Expr): Expr => ({ op: 'div', a, b });
/** e^a in float32 lanes (f32x4Exp). */
export const exp = (a: Expr): Expr => ({ op: 'exp', a });
/** 1 / (1 + e^−a), from exp: the same lanes as the backend's sigmoid to a few float32 ulps. */
export const sigmoid = (a: Expr): Expr => div(num(1), add(num(1), exp(sub(num(0), a))));

export interface RowProgram {
  inputs: number;
  /** Values computed once per group of four lanes, referred to as { let: k } by later bindings and outputs. */
  lets: Expr[];
  /** One expression per output operand. */
  outputs: Expr[];
}

/** An operand: byte address of its element (0, 0) and its row stride in bytes. */
export type Operand = [address: number, strideBytes: number];

/** Runs the program over `rows` rows of `width` floats (a multiple of 4); operands are the inputs, then the outputs. */
export type RowKernel = (operands: Operand[], rows: number, width: number) => void;

/** v128.const of four float32 lanes v. */
export function f32x4Const(v: number): number[] {
  const b = new Uint8Array(new Float32Array([v, v, v, v]).buffer);
  return [SIMD, 0x0c, ...b];
}

/**
 * e^x of the v128 on the stack, left on the stack, in two scratch v128 locals: Cephes' expf
 * (x = n·ln 2 + r with ln 2 in two parts, |r| ≤ ln 2 / 2, e^r by a degree-7 polynomial), with
 * n rounded and 2^n built in the float's exponent bits by adding 1.5·2^23 + 127 (XNNPACK's
 * "magic bias"); relative error below 1e-7. x is first clamped to [−87.3, 88.3], where e^x
 * and 2^n are normal floats: below, e^x is 1.2e-38 rather than smaller (the softmax and
 * sigmoid callers add it to 1 or more); NaN stays NaN. Only IEEE float32 arithmetic and bit
 * moves: the same bits on every engine. `konst` pushes a constant (a local, where the
 * caller keeps its constants in locals, set once outside its loops).
 */
export function f32x4Exp(x: number, n: number, konst: (v: number) => number[] = f32x4Const): number[] {
  const get = (i: number) => [0x20, ...leb(i)];
  const set = (i: number) => [0x21, ...leb(i)];
  const [ADD, SUB, MUL, MIN, MAX] = [0xe4, 0xe5, 0xe6, 0xe8, 0xe9].map((c) => [SIMD, c, 0x01]);
  const magic = 12582912 + 127;
  const poly = [1.98756915e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1];
  return [
    ...konst(-87.3), ...MAX, ...konst(88.3), ...MIN, ...set(x),
    ...get(x), ...konst(Math.LOG2E), ...MUL, ...konst(magic), ...ADD, ...set(n), // t: n + 127 in its low bits
    ...get(x), ...get(n), ...konst(magic), ...SUB, ...set(n), // n
    ...get(n), ...konst(0.693359375), ...MUL, ...SUB, ...get(n), ...konst(-2.1219444e-4), ...MUL, ...SUB, ...set(x), // r
    ...konst(poly[0]),
    ...poly.slice(1).flatMap((c) => [...get(x), ...MUL, ...konst(c), ...ADD]),
    ...get(x), ...get(x), ...MUL, ...MUL, ...get(x), ...ADD, ...konst(1), ...ADD, // p(r)·r² + r + 1
    ...get(n), ...konst(magic), ...ADD, 0x41, 23, SIMD, 0xab, 0x01, ...MUL, // · 2^n: (n + 127) << 23
  ];
}

/** The module's bytes: one function `run`, importing memory `m.mem`. */
function moduleBytes(p: RowProgram, operands: number): Uint8Array<ArrayBuffer> {
  // params: (address, stride) per operand, then rows, width (bytes); locals: j, then v128 per input and let.
  const P = 2 * operands;
  const ROWS = P;
  const WIDTH = P + 1;
  const J = P + 2;
  const vIn = (i: number) => P + 3 + i;
  const vLet = (k: number) => P + 3 + p.inputs + k;
  const SCRATCH = P + 3 + p.inputs + p.lets.length; // two v128 locals for exp
  // Every constant in a v128 local of its own, set before the loops.
  const consts = new Map<number, number>();
  const konst = (v: number) => {
    const k = Math.fround(v);
    if (!consts.has(k)) consts.set(k, SCRATCH + 2 + consts.size);
    return get(consts.get(k)!);
  };
  const get = (i: number) => [0x20, ...leb(i)];
  const set = (i: number) => [0x21, ...leb(i)];
  const addr = (o: number) => [...get(2 * o), ...get(J), 0x6a];
  const expr = (e: Expr): number[] => {
    if ('in' in e) return get(vIn(e.in));
    if ('let' in e) return get(vLet(e.let));
    if ('c' in e) return konst(e.c);
    if (e.op === 'exp') return [...expr(e.a), ...f32x4Exp(SCRATCH, SCRATCH + 1, konst)];
    const code = { add: 0xe4, sub: 0xe5, mul: 0xe6, div: 0xe7 }[e.op];
    return [...expr(e.a), ...expr(e.b), SIMD, code, 0x01];
  };
  const inner = [
    ...Array.from({ length: p.inputs }, (_, i) => [...addr(i), SIMD, 0x00, 0x00, 0x00, ...set(vIn(i))]).flat(),
    ...p.lets.flatMap((e, k) => [...expr(e), ...set(vLet(k))]),
    ...p.outputs.flatMap((e, k) => [...addr(p.inputs + k), ...expr(e), SIMD, 0x0b, 0x00, 0x00]),
  ];
  const code = [
    ...[...consts].flatMap(([v, local]) => [...f32x4Const(v), ...set(local)]),
    0x02, 0x40, 0x03, 0x40, // block, loop (rows)
    ...get(ROWS), 0x45, 0x0d, 0x01, // rows == 0: out
    0x41, 0x00, ...set(J),
    0x02, 0x40, 0x03, 0x40, // block, loop (columns)
    ...get(J), ...get(WIDTH), 0x4f, 0x0d, 0x01, // j >= width: next row
    ...inner,
    ...get(J), 0x41, ...sleb(16), 0x6a, ...set(J),
    0x0c, 0x00, 0x0b, 0x0b, // br loop; end; end
    ...Array.from({ length: operands }, (_, o) => [...get(2 * o), ...get(2 * o + 1), 0x6a, ...set(2 * o)]).flat(),
    ...get(ROWS), 0x41, ...sleb(1), 0x6b, ...set(ROWS),
    0x0c, 0x00, 0x0b, 0x0b,
  ];
  const locals = [2, 1, I32, p.inputs + p.lets.length + 2 + consts.size, V128];
  return runModule(P + 2, [...locals, ...code, 0x0b]);
}

interface MemoryOwner {
  wasm?: { asm?: { memory?: unknown } };
}

/** The backend's memory where our modules can import it (not shared, SIMD available), else null. */
export function memoryOf(backend: unknown): WebAssembly.Memory | null {
  const m = (backend as MemoryOwner).wasm?.asm?.memory;
  if (typeof WebAssembly === 'undefined' || !(m instanceof WebAssembly.Memory)) return null;
  if (typeof SharedArrayBuffer !== 'undefined' && m.buffer instanceof SharedArrayBuffer) return null;
  return m;
}

const compiled = new WeakMap<object, Map<RowProgram, RowKernel | null>>();

/** The program compiled against the backend's memory (cached per backend and program), or null where that is not possible. */
export function simdRows(backend: unknown, p: RowProgram): RowKernel | null {
  let perBackend = compiled.get(backend as object);
  if (!perBackend) compiled.set(backend as object, (perBackend = new Map()));
  if (perBackend.has(p)) return perBackend.get(p)!;
  let kernel: RowKernel | null = null;
  const memory = memoryOf(backend);
  const operands = p.inputs + p.outputs.length;
  // Null where there is no WebAssembly SIMD: the callers' JavaScript loops.
  const run = memory && instantiateRun<(...args: number[]) => void>(moduleBytes(p, operands), memory);
  if (run) {
    kernel = (ops, rows, width) => {
      if (ops.length !== operands || width % 4 !== 0) throw new RangeError(`simdRows: ${ops.length} operands for ${operands}, width ${width}`);
      run(...ops.flat(), rows, width * 4);
    };
  }
  perBackend.set(p, kernel);
  return kernel;
}
