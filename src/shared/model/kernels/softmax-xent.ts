/**
 * The output layer's loss and its gradient in one custom kernel on the wasm
 * backend, for the char cells' fused steps: from the logits before the bias
 * z (N, V), the bias b (V) and the targets, the loss sum Σ −log softmax(z + b)_y,
 * dLogits = softmax(z + b) − onehot(y) (N, V) and its column sums (the bias's
 * gradient). As tfjs ops this is about fifteen kernels (add, logSoftmax's
 * max, sub, exp, sum, log, sub, the one-hot, a cast, mul, sum, neg, exp, sub,
 * sum), each with a fixed cost; here it is one pass over the rows: the
 * softmax in WebAssembly SIMD where the backend allows it (simd-softmax.ts,
 * float32, a third of the time of Math.exp's float64 loop at 1,120 x 28), the
 * loss and the bias's gradient summed in float64; elsewhere all in float64,
 * rounded to float32 on store. Row by row, so a shard of streams computes what
 * the same rows compute in the full batch (the sums over rows aside, which
 * the caller adds up as it does every gradient).
 */
import * as tf from '@tensorflow/tfjs';
import { simdSoftmax, type SoftmaxKernel } from './simd-softmax.js';

const NAME = 'DptrainSoftmaxXent';

interface WasmBackendLike {
  dataIdMap: { get(dataId: object): { memoryOffset: number } };
  makeOutput(shape: number[], dtype: 'float32'): tf.TensorInfo;
  disposeData(dataId: object, force?: boolean): boolean;
  wasm: { HEAPF32: Float32Array };
}

/**
 * The same with the softmax in WebAssembly SIMD (simd-softmax.ts, float32): from each row's
 * max m and sum s, the loss −log(e_y / s) = log s − (z_y + b_y − m) in float64, then
 * d_y = e_y / s − 1, and the bias's gradient summed in float64 as in the JavaScript loop.
 */
function simdKernel(run: SoftmaxKernel, backend: WasmBackendLike, z: tf.TensorInfo, b: tf.TensorInfo, y: ArrayLike<number>): tf.TensorInfo[] {
  const [N, V] = z.shape;
  const outs = [backend.makeOutput([N, V], 'float32'), backend.makeOutput([1], 'float32'), backend.makeOutput([V], 'float32')];
  const stats = backend.makeOutput([N, 2], 'float32');
  const offset = (t: tf.TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
  run(offset(z), offset(b), offset(outs[0]), offset(stats), N, V);
  const heap = backend.wasm.HEAPF32; // after the allocations: the heap may have grown
  const view = (t: tf.TensorInfo, n: number) => heap.subarray(offset(t) >>> 2, (offset(t) >>> 2) + n);
  const [Z, B, D, S] = [view(z, N * V), view(b, V), view(outs[0], N * V), view(stats, 2 * N)];
  const db = new Float64Array(V);
  let loss = 0;
  for (let r = 0, row = 0; r < N; r++, row += V) {
    const t = y[r];
    loss += Math.log(S[2 * r + 1]) - (Math.fround(Z[row + t] + B[t]) - S[2 * r]);
    D[row + t] -= 1;
    for (let v = 0; v < V; v++) db[v] += D[row + v];
  }
  view(outs[1], 1)[0] = loss;
  view(outs[2], V).set(db);
  backend.disposeData(stats.dataId, true);
  return outs;
}

function kernel({ inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: WasmBackendLike; attrs: tf.NamedAttrMap }): tf.TensorInfo[] {
  const { z, b } = inputs as Record<string, tf.TensorInfo>;
  const [N, V] = z.shape;
  const y = attrs.targets as unknown as ArrayLike<number>;
  const run = simdSoftmax(backend);
  if (run) return simdKernel(run, backend, z, b, y);
  const outs = [backend.makeOutput([N, V], 'float32'), backend.makeOutput([1], 'float32'), backend.makeOutput([V], 'float32')];
  const heap = backend.wasm.HEAPF32; // after the allocations: the heap may have grown
  const view = (t: tf.TensorInfo, n: number) => {
    const off = backend.dataIdMap.get(t.dataId).memoryOffset >>> 2;
    return heap.subarray(off, off + n);
  };
  const Z = view(z, N * V);
  const B = view(b, V);
  const [D, L, DB] = [view(outs[0], N * V), view(outs[1], 1), view(outs[2], V)];
  const x = new Float64Array(V);
  const db = new Float64Array(V);
  let loss = 0;
  for (let r = 0; r < N; r++) {
    const row = r * V;
    let max = -Infinity;
    for (let v = 0; v < V; v++) {
      const a = Z[row + v] + B[v];
      x[v] = a;
      if (a > max) max = a;
    }
    let sum = 0;
    for (let v = 0; v < V; v++) sum += x[v] = Math.exp(x[v] - max);
    const t = y[r];
    loss += Math.log(sum) - (Z[row + t] + B[t] - max);
    x[t] -= sum; // d_t = e_t / sum − 1
    const inv = 1 / sum;
    for (let v = 0; v < V; v++) {
      const d = x[v] * inv;
      D[row + v] = d;
      db[v] += d;
    }
  }
  L[0] = loss;
  DB.set(db);
  return outs;
}

let registered = false;

/**
 * Loss sum, dLogits and the bias's gradient of the output layer over all steps
 * (wasm backend only): z = H W_hq (N, V) before the bias, targets time-major.
 */
export function softmaxCrossEntropy(z: tf.Tensor2D, bias: tf.Tensor1D, targets: Int32Array): { lossSum: tf.Tensor; dLogits: tf.Tensor2D; dBias: tf.Tensor1D } {
  if (!registered) {
    registered = true;
    if (!tf.getKernel(NAME, 'wasm')) tf.registerKernel({ kernelName: NAME, backendName: 'wasm', kernelFunc: kernel as unknown as tf.KernelFunc });
  }
  const [dLogits, lossSum, dBias] = tf.engine().runKernel(NAME, { z, b: bias }, { targets } as unknown as tf.NamedAttrMap) as tf.Tensor[];
  return { lossSum, dLogits: dLogits as tf.Tensor2D, dBias: dBias as tf.Tensor1D };
}
