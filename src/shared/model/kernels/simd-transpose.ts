/**
 * A float32 matrix transpose in WebAssembly SIMD over the wasm backend's
 * memory: 4x4 tiles, each four loads, eight shuffles and four stores.
 *
 * Why: a round's new parameters need W_h and W_hq transposed (the step's
 * backward matMuls take them so; a matMul with a transpose flag is far slower
 * on wasm). As tfjs Transpose kernels, or as a JavaScript loop, that took about
 * 0.6 ms for the LSTM's four 256x256 blocks (load 3, 2 cores), most of the
 * worker's cost of taking up new parameters. Written out like simd-rows.ts
 * (no toolchain); where SIMD or the backend's memory is missing, null.
 *
 * The module walks one block row by row; the exported kernel hands it blocks
 * of 32x32 (TILE). Over a whole 256x1024 block, each 64-byte line of the
 * output was written 16 bytes at a time in four sweeps a line apart, far
 * enough for it to leave the L1 cache in between (and the input's rows lie
 * 4 kB apart, the stride that aliases in L1): 0.30 ms. In tiles whose input
 * and output both stay in L1 it takes 0.04 ms (same values, load 2).
 */
import { I32, instantiateRun, runModule, SIMD, V128 } from '../../wasm-bytes.js';

/** i8x16.shuffle picking float32 lanes (0..3 of the first operand, 4..7 of the second). */
const shuffle = (lanes: number[]) => [SIMD, 0x0d, ...lanes.flatMap((l) => [4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3])];

/**
 * run(src, srcStride, dst, dstStride, rows, cols): dst[j][i] = src[i][j] for a (rows, cols) block,
 * addresses and strides in bytes, rows and cols multiples of 4.
 */
function moduleBytes(): Uint8Array<ArrayBuffer> {
  const [SRC, SS, DST, DS, ROWS, COLS, S, D, J] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const A = 9; // v128 locals A..A+7: four rows, then four half-transposed pairs
  const get = (i: number) => [0x20, i];
  const set = (i: number) => [0x21, i];
  const load = (addr: number[]) => [...addr, SIMD, 0x00, 0x00, 0x00];
  const rowAt = (k: number) => (k === 0 ? get(S) : [...get(S), ...get(SS), 0x41, k, 0x6c, 0x6a]);
  const colAt = (k: number) => (k === 0 ? get(D) : [...get(D), ...get(DS), 0x41, k, 0x6c, 0x6a]);
  const pair = (x: number, y: number, lanes: number[]) => [...get(x), ...get(y), ...shuffle(lanes)];
  const inner = [
    ...[0, 1, 2, 3].flatMap((k) => [...load(rowAt(k)), ...set(A + k)]),
    ...pair(A, A + 1, [0, 4, 1, 5]), ...set(A + 4),
    ...pair(A, A + 1, [2, 6, 3, 7]), ...set(A + 5),
    ...pair(A + 2, A + 3, [0, 4, 1, 5]), ...set(A + 6),
    ...pair(A + 2, A + 3, [2, 6, 3, 7]), ...set(A + 7),
    ...colAt(0), ...pair(A + 4, A + 6, [0, 1, 4, 5]), SIMD, 0x0b, 0x00, 0x00,
    ...colAt(1), ...pair(A + 4, A + 6, [2, 3, 6, 7]), SIMD, 0x0b, 0x00, 0x00,
    ...colAt(2), ...pair(A + 5, A + 7, [0, 1, 4, 5]), SIMD, 0x0b, 0x00, 0x00,
    ...colAt(3), ...pair(A + 5, A + 7, [2, 3, 6, 7]), SIMD, 0x0b, 0x00, 0x00,
  ];
  const code = [
    0x02, 0x40, 0x03, 0x40, // block, loop (groups of four rows)
    ...get(ROWS), 0x45, 0x0d, 0x01,
    ...get(SRC), ...set(S), ...get(DST), ...set(D), ...get(COLS), ...set(J),
    0x02, 0x40, 0x03, 0x40, // block, loop (groups of four columns)
    ...get(J), 0x45, 0x0d, 0x01,
    ...inner,
    ...get(S), 0x41, 16, 0x6a, ...set(S),
    ...colAt(4), ...set(D),
    ...get(J), 0x41, 4, 0x6b, ...set(J),
    0x0c, 0x00, 0x0b, 0x0b,
    ...get(SRC), ...get(SS), 0x41, 4, 0x6c, 0x6a, ...set(SRC),
    ...get(DST), 0x41, 16, 0x6a, ...set(DST),
    ...get(ROWS), 0x41, 4, 0x6b, ...set(ROWS),
    0x0c, 0x00, 0x0b, 0x0b,
  ];
  return runModule(6, [2, 3, I32, 8, V128, ...code, 0x0b]);
}

/** (src, srcStride, dst, dstStride, rows, cols), byte addresses and strides, rows and cols multiples of 4. */
export type TransposeKernel = (src: number, srcStride: number, dst: number, dstStride: number, rows: number, cols: number) => void;

const compiled = new WeakMap<WebAssembly.Memory, TransposeKernel | null>();

/** The transpose compiled against `memory` (cached), or null where WebAssembly SIMD is missing. */
export function simdTranspose(memory: WebAssembly.Memory): TransposeKernel | null {
  if (compiled.has(memory)) return compiled.get(memory)!;
  const run = instantiateRun<TransposeKernel>(moduleBytes(), memory);
  const kernel = run && tiled(run);
  compiled.set(memory, kernel);
  return kernel;
}

/** Side of the square tiles the kernel is run on: a tile's 32 input and 32 output rows of 128 bytes fit in L1 together. */
const TILE = 32;

/** `run` over TILE x TILE tiles of the block (the last ones smaller, still multiples of 4). */
function tiled(run: TransposeKernel): TransposeKernel {
  return (src, srcStride, dst, dstStride, rows, cols) => {
    for (let i = 0; i < rows; i += TILE) {
      const r = Math.min(TILE, rows - i);
      for (let j = 0; j < cols; j += TILE) {
        run(src + i * srcStride + 4 * j, srcStride, dst + j * dstStride + 4 * i, dstStride, r, Math.min(TILE, cols - j));
      }
    }
  };
}
