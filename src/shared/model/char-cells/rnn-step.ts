/**
 * The RNN's training step on the wasm backend (char-cells/step.ts has the
 * maths and the contract; this is its fused path).
 *
 * The loops over time call the backend's own matMul and sigmoid directly
 * (kernels/wasm-calls.ts) and the gate arithmetic without the engine
 * (cellRows), into buffers made once per step and reused at every time step:
 * A_t, z_t, σ(z_t) forward; dh and dz_t backward. Going through tfjs, each
 * of those 175 calls was an engine dispatch, an allocation and a tensor;
 * without them the step took about 3% less (interleaved runs, 2 cores at
 * load 2), and the reused buffers stay in cache. The tensors over all steps
 * (As = [onehot(x_t), h_{t-1}, 1] stacked, Hs, dZ) are filled as the loops
 * go, by the same programs, not concatenated after them. The stacks are only
 * read by matMuls after their last write (the backend caches packed matMul
 * weights per second operand), and no buffer a matMul reads as its second
 * operand is rewritten.
 */
import * as tf from '@tensorflow/tfjs';
import type { TokenBatch } from '../descriptor.js';
import { toTimeMajor } from '../char-lstm/step.js';
import { blockOf, cellParamCount } from './params.js';
import type { CellStepParams, CellStepResult } from './step.js';
import { cellRows, readInto, rowBlock } from '../kernels/cell-gates.js';
import { wasmCalls } from '../kernels/wasm-calls.js';
import { softmaxCrossEntropy } from '../kernels/softmax-xent.js';
import { filledTensors, transposed } from '../host-tensors.js';

/** Rows of A = [onehot(ids), ·, 1] (·, V+H+1): the one-hot and constant columns; the first rows' h from `h0`. */
function oneHotRows(a: Float32Array, ids: ArrayLike<number>, V: number, H: number, h0: Float32Array): void {
  const R = V + H + 1;
  for (let r = 0, row = 0; r < ids.length; r++, row += R) {
    a.fill(0, row, row + V);
    a[row + ids[r]] = 1;
    a[row + V + H] = 1;
  }
  for (let r = 0; r < h0.length / H; r++) a.set(h0.subarray(r * H, r * H + H), r * R + V);
}

/** Forward + backward of the RNN on wasm; h0 and the params are not disposed. */
export function fusedRnnStep(p: CellStepParams, batch: TokenBatch, h0: tf.Tensor2D, gradOut?: Float32Array): CellStepResult {
  const { rows: B, numSteps: T } = batch;
  const { vocabSize: V, hidden: H } = p.dims;
  const R = V + H + 1;
  const xTm = toTimeMajor(batch.x, B, T);
  const h0v = h0.dataSync() as Float32Array;
  const out = tf.tidy(() => {
    // The stacks, and the loops' own buffers, rewritten step by step: A_t, z_t, σ(z_t); dh, dz_t.
    const [As, Hs, dZ, A0, A1, z, S, dhRec, dz] = filledTensors([[T * B, R], [T * B, H], [T * B, H], [B, R], [B, R], [B, H], [B, H], [B, H], [B, H]], [
      (a) => oneHotRows(a, xTm, V, H, h0v),
      () => {},
      () => {},
      (a) => oneHotRows(a, xTm.subarray(0, B), V, H, h0v),
      () => {},
      () => {},
      () => {},
      (d) => d.fill(0),
      () => {},
    ]);
    const call = wasmCalls();
    for (let t = 0; t < T; t++) {
      const [A, next] = t % 2 === 0 ? [A0, A1] : [A1, A0];
      call.matMul(A, p.wcat[0], z);
      call.sigmoid(z, S);
      cellRows('DptrainRnnHidden', [S, Hs, As], [next], H, V, t + 1 < T ? xTm.subarray((t + 1) * B, (t + 2) * B) : null, t);
    }
    const { lossSum, dLogits, dBias } = softmaxCrossEntropy(tf.matMul(Hs, p.whq) as tf.Tensor2D, p.bq, toTimeMajor(batch.y, B, T));
    const dWhq = tf.matMul(transposed(Hs), dLogits);
    // The output layer's share of every dh_t at once (T·B, H); the backward kernel reads row block t.
    const dOut = tf.matMul(dLogits, p.whqT);
    for (let t = T - 1; t >= 0; t--) {
      cellRows('DptrainRnnBackward', [dhRec, Hs, dOut, dZ], [dz], H, V, null, t);
      if (t > 0) call.matMul(dz, p.whT, dhRec);
    }
    // The weight gradient over all time steps: A^T dZ (V+H+1, H).
    const gates = tf.matMul(transposed(As), dZ);
    return { gates, dWhq, dBias, lossSum, h: rowBlock(Hs as tf.Tensor2D, (T - 1) * B, B) };
  });
  // Every value is written below: the gate block, W_hq and b_q.
  const grad = gradOut?.length === cellParamCount(p.dims) ? gradOut : new Float32Array(cellParamCount(p.dims));
  readInto(out.gates, grad, blockOf(p.dims, 'W_xh').offset);
  readInto(out.dWhq, grad, blockOf(p.dims, 'W_hq').offset);
  readInto(out.dBias, grad, blockOf(p.dims, 'b_q').offset);
  const lossSum = out.lossSum.dataSync()[0];
  tf.dispose([out.gates, out.dWhq, out.dBias, out.lossSum]);
  return { grad, lossSum, tokenCount: B * T, h: out.h };
}

