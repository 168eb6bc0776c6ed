/**
 * The step's parameter tensors built straight from the flat parameter vector:
 * each derived copy (a gate block, the candidate's doubled block, transposes
 * side by side) is written in one pass over the host array into the tensor's
 * own memory, and uploaded once.
 *
 * Why: built from tfjs ops, a round's new parameters cost one upload per
 * block, then a kernel per doubling, per transpose and per concat, each with
 * a fresh output and a tidy around them; W_h was uploaded twice (in its gate
 * block and again to transpose it). On the wasm backend the values go
 * straight into a fresh output of the backend's memory (makeOutput, as the
 * custom kernels do), so nothing is copied twice; elsewhere into a new host
 * array that the backend takes. Every tensor is fresh: the wasm backend caches
 * packed matMul weights per tensor, so memory must never be rewritten in place.
 *
 * Values are bit for bit those of the ops: copies and transposes move float32
 * values, and 2·x is exact in float32 (overflow gives Inf either way).
 */
import * as tf from '@tensorflow/tfjs';
import { add, input, memoryOf, simdRows, type RowProgram } from './kernels/simd-rows.js';
import { simdTranspose } from './kernels/simd-transpose.js';

interface WasmBackendLike {
  dataIdMap: { get(dataId: object): { memoryOffset: number } };
  makeOutput(shape: number[], dtype: 'float32'): tf.TensorInfo;
  disposeData(dataId: object, force?: boolean): boolean;
  wasm: { HEAPF32: Float32Array };
}

/** What one output holds: row-major pieces, each written by one of the fills below. */
export type Fill = (out: Float32Array) => void;

const sizeOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** One float32 tensor per shape; `fills[k]` writes all of tensor k's values into the array it is given. */
export function filledTensors(shapes: number[][], fills: Fill[]): tf.Tensor[] {
  if (tf.getBackend() === 'wasm') {
    const backend = tf.backend() as unknown as WasmBackendLike;
    const infos = shapes.map((s) => backend.makeOutput(s, 'float32'));
    const heap = backend.wasm.HEAPF32; // after the allocations: the heap may have grown
    infos.forEach((t, k) => {
      const off = backend.dataIdMap.get(t.dataId).memoryOffset >>> 2;
      fills[k](heap.subarray(off, off + sizeOf(shapes[k])));
    });
    return infos.map((t) => tf.engine().makeTensorFromTensorInfo(t));
  }
  return shapes.map((s, k) => {
    const out = new Float32Array(sizeOf(s));
    fills[k](out);
    return tf.tensor(out, s);
  });
}

/** out[at..] = src, or 2·src. */
export function copyInto(out: Float32Array, src: Float32Array, at = 0, double = false): void {
  if (!double) {
    out.set(src, at);
    return;
  }
  for (let i = 0, n = src.length; i < n; i++) out[at + i] = 2 * src[i];
}

/**
 * src (rows, cols) row-major, transposed, written as rows rowAt..rowAt+cols of out (a matrix `rows` wide):
 * out[(rowAt + j) * rows + i] = src[i * cols + j]. Tiled, so that both sides stay in cache.
 */
export function transposeInto(out: Float32Array, src: Float32Array, rows: number, cols: number, rowAt = 0): void {
  const T = 16;
  for (let i0 = 0; i0 < rows; i0 += T) {
    const i1 = Math.min(rows, i0 + T);
    for (let j0 = 0; j0 < cols; j0 += T) {
      const j1 = Math.min(cols, j0 + T);
      for (let j = j0; j < j1; j++) {
        const o = (rowAt + j) * rows;
        for (let i = i0; i < i1; i++) out[o + i] = src[i * cols + j];
      }
    }
  }
}

/**
 * Blocks (rows, width_k) side by side as one (rows, Σ width_k) matrix, the ones marked doubled times 2:
 * out[r, col_k + c] = blocks[k][r, c].
 */
export function besideInto(out: Float32Array, blocks: Float32Array[], rows: number, widths: number[], doubled: boolean[]): void {
  const total = widths.reduce((a, b) => a + b, 0);
  let col = 0;
  blocks.forEach((b, k) => {
    const w = widths[k];
    const simd = doubled[k] ? doubler(out, w) : null;
    for (let r = 0; r < rows; r++) {
      const src = b.subarray(r * w, r * w + w);
      const at = r * total + col;
      if (doubled[k] && !simd) for (let c = 0; c < w; c++) out[at + c] = 2 * src[c];
      else out.set(src, at);
    }
    // x + x in float32 lanes: 2·x exactly, as the JavaScript loop.
    if (simd) simd([[out.byteOffset + 4 * col, 4 * total], [out.byteOffset + 4 * col, 4 * total]], rows, w);
    col += w;
  });
}

const DOUBLE: RowProgram = { inputs: 1, lets: [], outputs: [add(input(0), input(0))] };

/** A SIMD kernel that doubles values in place, where `out` lies in the wasm backend's memory and `width` allows it. */
function doubler(out: Float32Array, width: number) {
  if (width % 4 !== 0 || tf.getBackend() !== 'wasm') return null;
  const memory = memoryOf(tf.backend());
  return memory && out.buffer === memory.buffer ? simdRows(tf.backend(), DOUBLE) : null;
}

/**
 * Blocks (rows, cols) each, transposed and stacked: [b_0^T; b_1^T; ...] (k·cols, rows), which is the
 * transpose of the blocks side by side. On wasm with SIMD: each block is copied as it lies into a
 * scratch buffer of the backend's memory, which simd-transpose.ts transposes into its rows of the
 * output; elsewhere (or sizes not multiples of 4) a JavaScript loop.
 */
export function transposedTensor(blocks: Float32Array[], rows: number, cols: number): tf.Tensor2D {
  const width = blocks.length * cols;
  const shape = [width, rows];
  const kernel = tf.getBackend() === 'wasm' && rows % 4 === 0 && cols % 4 === 0 ? transposeKernel() : null;
  if (!kernel) return filledTensors([shape], [(o) => blocks.forEach((b, k) => transposeInto(o, b, rows, cols, k * cols))])[0] as tf.Tensor2D;
  const backend = tf.backend() as unknown as WasmBackendLike;
  const n = rows * cols;
  const scratch = backend.makeOutput([blocks.length * n], 'float32');
  const out = backend.makeOutput(shape, 'float32');
  const heap = backend.wasm.HEAPF32; // after the allocations: the heap may have grown
  const src = backend.dataIdMap.get(scratch.dataId).memoryOffset;
  const dst = backend.dataIdMap.get(out.dataId).memoryOffset;
  blocks.forEach((b, k) => {
    heap.set(b, (src >>> 2) + k * n);
    kernel(src + 4 * k * n, 4 * cols, dst + 4 * k * n, 4 * rows, rows, cols);
  });
  backend.disposeData(scratch.dataId, true);
  return tf.engine().makeTensorFromTensorInfo(out) as tf.Tensor2D;
}

function transposeKernel() {
  const memory = memoryOf(tf.backend());
  return memory ? simdTranspose(memory) : null;
}

/**
 * wasm with SIMD only (else null): a new (cols, rows) tensor, the transpose of `src`'s block of rows
 * [rowFrom, rowFrom + rows) and columns [colFrom, colFrom + cols), read where it lies (no scratch copy).
 * `rows` must be a multiple of 4; columns past the last multiple of 4 are moved by a JavaScript loop.
 */
export function transposedBlock(src: tf.Tensor2D, rowFrom: number, rows: number, colFrom: number, cols: number): tf.Tensor2D | null {
  const kernel = tf.getBackend() === 'wasm' && rows % 4 === 0 && cols >= 4 ? transposeKernel() : null;
  if (!kernel) return null;
  const backend = tf.backend() as unknown as WasmBackendLike;
  const W = src.shape[1];
  const out = backend.makeOutput([cols, rows], 'float32');
  const from = backend.dataIdMap.get(src.dataId).memoryOffset + 4 * (rowFrom * W + colFrom);
  const to = backend.dataIdMap.get(out.dataId).memoryOffset;
  const c4 = cols - (cols % 4);
  kernel(from, 4 * W, to, 4 * rows, rows, c4);
  if (c4 < cols) {
    const heap = backend.wasm.HEAPF32; // after the allocation: the heap may have grown
    for (let j = c4; j < cols; j++) {
      for (let i = 0, s = (from >>> 2) + j, d = (to >>> 2) + j * rows; i < rows; i++, s += W, d++) heap[d] = heap[s];
    }
  }
  return tf.engine().makeTensorFromTensorInfo(out) as tf.Tensor2D;
}

/** x^T (x 2-D): by the SIMD transpose where the sizes allow it (transposedBlock), else the Transpose kernel. */
export function transposed(x: tf.Tensor): tf.Tensor2D {
  const [rows, cols] = x.shape;
  return transposedBlock(x as tf.Tensor2D, 0, rows, 0, cols) ?? (tf.transpose(x) as tf.Tensor2D);
}

/**
 * Doubles columns [colFrom, colFrom + cols) of a wasm tensor in place. Only for a tensor just
 * written by filledTensors that no kernel has used yet (the wasm backend caches packed matMul
 * weights per tensor: memory rewritten after a matMul read it would leave them stale).
 */
export function doubleColumnsInPlace(t: tf.Tensor2D, colFrom: number, cols: number): void {
  if (tf.getBackend() !== 'wasm') throw new Error('doubleColumnsInPlace: wasm tensors only');
  const backend = tf.backend() as unknown as WasmBackendLike;
  const [rows, W] = t.shape;
  const off = backend.dataIdMap.get(t.dataId).memoryOffset;
  const heap = backend.wasm.HEAPF32;
  const simd = doubler(heap, cols);
  if (simd) {
    simd([[off + 4 * colFrom, 4 * W], [off + 4 * colFrom, 4 * W]], rows, cols);
    return;
  }
  for (let r = 0; r < rows; r++) {
    const at = (off >>> 2) + r * W + colFrom;
    for (let c = 0; c < cols; c++) heap[at + c] = 2 * heap[at + c];
  }
}

/**
 * Rows [rowFrom, rowFrom + rows) of a 2-D tensor (·, R), transposed, into a contiguous (R, rows) block of `out`
 * at `base`: a gradient block the step computed transposed, written where the flat layout keeps it. On wasm
 * with SIMD the tiled transpose runs in the backend's memory and one copy reads it out (a gate's 285x256
 * block: about 0.03 ms, where a JavaScript loop over the read-back tensor took 0.18); elsewhere a loop.
 */
export function transposedRowsInto(t: tf.Tensor2D, rowFrom: number, rows: number, out: Float32Array, base: number): void {
  const R = t.shape[1];
  const block = transposedBlock(t, rowFrom, rows, 0, R);
  if (block) {
    const backend = tf.backend() as unknown as WasmBackendLike;
    const off = backend.dataIdMap.get(block.dataId).memoryOffset >>> 2;
    out.set(backend.wasm.HEAPF32.subarray(off, off + R * rows), base);
    block.dispose();
    return;
  }
  const G = t.dataSync() as Float32Array;
  for (let j = 0; j < rows; j++) {
    const src = (rowFrom + j) * R;
    for (let a = 0, d = base + j; a < R; a++, d += rows) out[d] = G[src + a];
  }
}
