/**
 * The wasm backend's own matMul and sigmoid called directly, into outputs
 * the caller made once and reuses: for the recurrent steps' loops over time.
 *
 * Why: through tfjs each call is an engine dispatch, an output allocated
 * (malloc) and registered, the operands reshaped and a tensor made and later
 * freed. For the RNN's 35 steps of a matMul and a sigmoid that came to about
 * 1 ms of the 5.7 ms the two took (interleaved, 2 cores at load 3.5), and the
 * reused outputs stay in cache. These are the same C functions the backend's
 * BatchMatMul and Sigmoid kernels call (XNNPACK underneath, the packed weights
 * cached per second operand as there), with the same arguments, so the
 * results are the same bits. As there: never rewrite a tensor that a matMul
 * has read as its second operand.
 */
import * as tf from '@tensorflow/tfjs';

interface WasmBackendLike {
  dataIdMap: { get(dataId: object): { id: number } };
  wasm: { cwrap(name: string, ret: null, args: string[]): (...args: unknown[]) => void };
}

export interface WasmCalls {
  /** out (m, n) = a (m, k) x b (k, n): float32 2-D wasm tensors. */
  matMul(a: tf.TensorInfo, b: tf.TensorInfo, out: tf.TensorInfo): void;
  /** out = σ(x), both of one shape. */
  sigmoid(x: tf.TensorInfo, out: tf.TensorInfo): void;
}

const made = new WeakMap<object, WasmCalls>();

/** The calls on the current backend (wasm only). */
export function wasmCalls(): WasmCalls {
  const backend = tf.backend() as unknown as WasmBackendLike;
  const known = made.get(backend);
  if (known) return known;
  const matMul = backend.wasm.cwrap('BatchMatMul', null, ['number', 'array', 'number', 'number', 'array', 'number', 'number', 'number', 'number']);
  const sigmoid = backend.wasm.cwrap('Sigmoid', null, ['number', 'number']);
  const id = (t: tf.TensorInfo) => backend.dataIdMap.get(t.dataId).id;
  const shape3 = (rows: number, cols: number) => new Uint8Array(new Int32Array([1, rows, cols]).buffer);
  const calls: WasmCalls = {
    matMul(a, b, out) {
      const [m, k] = a.shape;
      const n = b.shape[1];
      if (b.shape[0] !== k || out.shape[0] !== m || out.shape[1] !== n) throw new RangeError(`matMul: [${a.shape}] x [${b.shape}] into [${out.shape}]`);
      matMul(id(a), shape3(m, k), 3, id(b), shape3(k, n), 3, 0, 0, id(out));
    },
    sigmoid(x, out) {
      if (x.shape.join() !== out.shape.join()) throw new RangeError(`sigmoid: [${x.shape}] into [${out.shape}]`);
      sigmoid(id(x), id(out));
    },
  };
  made.set(backend, calls);
  return calls;
}
