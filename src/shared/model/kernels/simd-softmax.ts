/**
 * The softmax of the output layer's rows in WebAssembly SIMD over the wasm
 * backend's memory, for the loss kernel (softmax-xent.ts): per row of the
 * logits z (N, V) and the bias b (V), its max m = max(z + b), e = exp(z + b − m)
 * by simd-rows.ts's float32 exp, their sum s, and e / s written out; m and s
 * stored per row, from which the caller takes the loss.
 *
 * Why: with Math.exp (float64, one element at a time) the loss kernel took
 * about 0.5 ms of the RNN's 20 ms step (V = 28 columns of 1,120 rows), as much
 * as two of its per-step matMuls; most of it the exponentials. Four float32
 * lanes at a time, the columns past the last multiple of 4 one at a time
 * (each through the same four-lane exp), so any V works. Row by row and in
 * a fixed order, so a shard of rows computes the same bits as the full batch.
 * Written out like simd-rows.ts (no toolchain); null where SIMD or the
 * backend's memory is missing.
 */
import { I32, instantiateRun, leb, runModule, sleb, SIMD, V128 } from '../../wasm-bytes.js';
import { f32x4Const, f32x4Exp, memoryOf } from './simd-rows.js';

const F32 = 0x7d;

/** run(z, b, out, stats, rows, V): byte addresses; stats gets (m, s) per row as two float32. */
function moduleBytes(): Uint8Array<ArrayBuffer> {
  const [Z, BIAS, OUT, ST, ROWS, VCOUNT] = [0, 1, 2, 3, 4, 5];
  const [J, V4, VB] = [6, 7, 8]; // i32: column byte offset, bytes in whole vectors, bytes in a row
  const [M, SUM, TMP] = [9, 10, 11]; // f32
  const [ACC, T, X, N] = [12, 13, 14, 15]; // v128: accumulator, splat, exp's scratch
  const get = (i: number) => [0x20, ...leb(i)];
  const set = (i: number) => [0x21, ...leb(i)];
  const [ADD, SUB, DIV, MAX] = [0xe4, 0xe5, 0xe7, 0xe9].map((c) => [SIMD, c, 0x01]);
  const at = (base: number) => [...get(base), ...get(J), 0x6a];
  const load = (base: number) => [...at(base), SIMD, 0x00, 0x00, 0x00];
  const store = [SIMD, 0x0b, 0x00, 0x00];
  const loadF = (base: number) => [...at(base), 0x2a, 0x02, 0x00];
  const storeF = (offset = 0) => [0x38, 0x02, offset];
  const lane = (v: number, l: number) => [...get(v), SIMD, 0x1f, l];
  const splat = [SIMD, 0x13];
  const [fADD, fSUB, fDIV, fMAX] = [0x92, 0x93, 0x95, 0x97];
  // for (j = from; j < to; j += step) body
  const loop = (from: number[], to: number, step: number, body: number[]) => [
    ...from, ...set(J),
    0x02, 0x40, 0x03, 0x40,
    ...get(J), ...get(to), 0x4f, 0x0d, 0x01,
    ...body,
    ...get(J), 0x41, step, 0x6a, ...set(J),
    0x0c, 0x00, 0x0b, 0x0b,
  ];
  const zb = [...load(Z), ...load(BIAS), ...ADD];
  const zbF = [...loadF(Z), ...loadF(BIAS), fADD];
  const exp = f32x4Exp(X, N);
  const zero = [0x41, 0];
  const row = [
    // m: lanes, then across them, then the columns past the last multiple of 4
    ...f32x4Const(-Infinity), ...set(ACC),
    ...loop(zero, V4, 16, [...get(ACC), ...zb, ...MAX, ...set(ACC)]),
    ...lane(ACC, 0), ...lane(ACC, 1), fMAX, ...lane(ACC, 2), ...lane(ACC, 3), fMAX, fMAX, ...set(M),
    ...loop(get(V4), VB, 4, [...get(M), ...zbF, fMAX, ...set(M)]),
    // e = exp(z + b − m) into out, and s
    ...get(M), ...splat, ...set(T),
    ...f32x4Const(0), ...set(ACC),
    ...loop(zero, V4, 16, [...at(OUT), ...zb, ...get(T), ...SUB, ...exp, ...set(X), ...get(X), ...store, ...get(ACC), ...get(X), ...ADD, ...set(ACC)]),
    ...lane(ACC, 0), ...lane(ACC, 1), fADD, ...lane(ACC, 2), ...lane(ACC, 3), fADD, fADD, ...set(SUM),
    ...loop(get(V4), VB, 4, [...at(OUT), ...zbF, ...get(M), fSUB, ...splat, ...exp, SIMD, 0x1f, 0, 0x22, ...leb(TMP), ...storeF(), ...get(SUM), ...get(TMP), fADD, ...set(SUM)]),
    // e / s
    ...get(SUM), ...splat, ...set(T),
    ...loop(zero, V4, 16, [...at(OUT), ...load(OUT), ...get(T), ...DIV, ...store]),
    ...loop(get(V4), VB, 4, [...at(OUT), ...loadF(OUT), ...get(SUM), fDIV, ...storeF()]),
    ...get(ST), ...get(M), ...storeF(0), ...get(ST), ...get(SUM), ...storeF(4),
    ...[Z, OUT].flatMap((p) => [...get(p), ...get(VB), 0x6a, ...set(p)]),
    ...get(ST), 0x41, 8, 0x6a, ...set(ST),
    ...get(ROWS), 0x41, 1, 0x6b, ...set(ROWS),
  ];
  const code = [
    ...get(VCOUNT), 0x41, 2, 0x74, ...set(VB),
    ...get(VCOUNT), 0x41, ...sleb(-4), 0x71, 0x41, 2, 0x74, ...set(V4), // (V & ~3) << 2
    0x02, 0x40, 0x03, 0x40,
    ...get(ROWS), 0x45, 0x0d, 0x01,
    ...row,
    0x0c, 0x00, 0x0b, 0x0b,
  ];
  return runModule(6, [3, 3, I32, 3, F32, 4, V128, ...code, 0x0b]);
}

/** (z, b, out, stats, rows, V): byte addresses. */
export type SoftmaxKernel = (z: number, b: number, out: number, stats: number, rows: number, V: number) => void;

const compiled = new WeakMap<WebAssembly.Memory, SoftmaxKernel | null>();

/** The softmax rows compiled against the backend's memory (cached), or null where that is not possible. */
export function simdSoftmax(backend: unknown): SoftmaxKernel | null {
  const memory = memoryOf(backend);
  if (!memory) return null;
  if (compiled.has(memory)) return compiled.get(memory)!;
  // Null where there is no WebAssembly SIMD: the caller's JavaScript loop.
  const kernel = instantiateRun<SoftmaxKernel>(moduleBytes(), memory);
  compiled.set(memory, kernel);
  return kernel;
}
