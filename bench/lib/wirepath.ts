/**
 * The non-compute work of one round, piece by piece, timed in this process:
 * what the coordinator and a worker do with the parameter and gradient
 * messages of a real-sized model. The scaling and fan-in parts use it to
 * say where a round's time goes besides the workers' compute.
 */
import * as tf from '@tensorflow/tfjs';
import { decodeCoordinatorMessage, decodeWorkerMessage, encode, ReusedFrames, type GradsMsg } from '../../src/shared/wire/protocol.js';
import { decodeTensor, encodeTensor, type WireDtype } from '../../src/shared/wire/tensor.js';
import { ReplyFrames } from '../../src/shared/wire/reply-frame.js';
import { GradAccumulator } from '../../src/shared/wire/accumulate.js';
import { ParamsFrames } from '../../src/shared/wire/params-frame.js';
import { disposeStepParams, makeStepParams } from '../../src/shared/model/char-lstm/step.js';
import { initParams, paramCount, type ModelDims } from '../../src/shared/model/char-lstm/params.js';
import { createModel } from '../../src/shared/model/registry.js';
import { ParameterServer } from '../../src/shared/train/param-server.js';
import { Rng } from '../../src/shared/data/rng.js';
import { computeMs, measure, median } from './stats.js';

export interface WirePathStep {
  key: string;
  where: 'coordinator' | 'worker';
  what: string;
  ms: number;
  /** Not part of a round any more (kept to show what it would cost). */
  skipped?: boolean;
}

/** ws's JavaScript fallback for (un)masking a client frame (no bufferutil installed): one XOR per byte. */
function jsMask(buf: Uint8Array, mask: Uint8Array): void {
  for (let i = 0; i < buf.length; i++) buf[i] ^= mask[i & 3];
}

/**
 * Median compute time (min of wall and CPU time) of each piece of the wire
 * path for a model of `dims`, a worker holding `rows` streams, over `reps` repetitions.
 */
export function measureWirePath(dims: ModelDims, rows: number, dtype: WireDtype = 'float32', reps = 15): WirePathStep[] {
  const n = paramCount(dims);
  const H = dims.hidden;
  const rng = new Rng(7);
  const params = initParams(dims, rng);
  const grad = Float32Array.from({ length: n }, () => 1e-3 * rng.normal());
  const state = Float32Array.from({ length: rows * 2 * H }, () => 0.1 * rng.normal());
  const limits = { paramCount: n, maxTokenCount: rows * 35, stateCount: rows * 2 * H, gradsFinitenessChecked: true };
  const server = new ParameterServer(createModel('char-lstm', dims.vocabSize, { hidden: dims.hidden }), params, { optimizer: 'sgd', lr: 1, clip: 1 });
  // As the coordinator does: the parameter server moved into the accumulator's memory, where the sum lies.
  const acc = new GradAccumulator(n, [], 0, server.simdBytes);
  const host = acc.hostRegion();
  if (host) server.moveInto(host.simd, host.at);
  const sum64 = acc.newSum();
  const mask = new Uint8Array([0x12, 0x34, 0x56, 0x78]);
  const gradWire = encodeTensor(grad, dtype);
  const stateWire = encodeTensor(state, 'float32');
  const gradsMsg = (): GradsMsg => ({ type: 'grads', round: 1, tokenCount: rows * 35, lossSum: 1, computeMs: 1, grads: encodeTensor(grad, dtype), state: encodeTensor(state, 'float32') });
  const paramsFrame = encode({ type: 'params', version: 1, params: encodeTensor(params, dtype) });
  const gradsFrame = encode(gradsMsg());
  const paramsFrames = new ParamsFrames();
  const paramsOut = new Float32Array(n);
  const stateOut = new Float32Array(state.length);
  const gradFrames = new ReusedFrames();
  const replyFrames = new ReplyFrames(dtype, n, 0);
  // Null where the worker encodes instead (another dtype than float32).
  const inPlace = replyFrames.claim(state.length);
  inPlace?.release();
  const steps: { key: string; where: WirePathStep['where']; what: string; f: () => void; skipped?: boolean }[] = [
    // As the coordinator does: into a reused frame, released as the sockets release it.
    { key: 'encodeParams', where: 'coordinator', what: 'read the parameters and encode the params message (in place, into a reused frame)', f: () => paramsFrames.build(1, server.params(), dtype).hold()() },
    // As the worker does: into the array it decodes every round's parameters into.
    { key: 'workerDecodeParams', where: 'worker', what: 'decode and validate the params message, decode the tensor (into a reused array)', f: () => {
      const v = decodeCoordinatorMessage(paramsFrame, { paramCount: n });
      if (v.ok && v.msg.type === 'params') decodeTensor(v.msg.params, paramsOut);
    } },
    { key: 'workerUpload', where: 'worker', what: 'upload the parameters into the step tensors (makeStepParams)', f: () => disposeStepParams(makeStepParams(params, dims)) },
    // As the worker does: float32 in the frame its step wrote the gradient into (reply-frame.ts claim and seal:
    // the header fields and the state); another dtype encoded into the buffer its previous, sent frame used.
    inPlace
      ? { key: 'workerEncodeGrads', where: 'worker', what: 'finish the grads message around the gradient the step wrote into it (header fields and stream state)', f: () => {
          const slot = replyFrames.claim(state.length)!;
          slot.seal({ round: 1, tokenCount: rows * 35, lossSum: 1, computeMs: 1, grad: slot.grad, state }).release();
        } }
      : { key: 'workerEncodeGrads', where: 'worker', what: 'encode the grads message (gradient and stream state; into a reused buffer)', f: () => gradFrames.encode(gradsMsg()).sent() },
    { key: 'mask', where: 'worker', what: 'mask the grads frame with a random key, byte by byte (skipped: workers send a zero masking key)', f: () => jsMask(gradsFrame, mask), skipped: true },
    { key: 'unmask', where: 'coordinator', what: 'unmask it again (skipped likewise)', f: () => jsMask(gradsFrame, mask), skipped: true },
    { key: 'decodeGrads', where: 'coordinator', what: 'decode and validate the grads message (structure, sizes; finiteness is left to the sum)', f: () => void decodeWorkerMessage(gradsFrame, limits) },
    { key: 'decodeTensor', where: 'coordinator', what: "decode the returned stream state (into the member's reused array)", f: () => void decodeTensor(stateWire, stateOut) },
    { key: 'sum', where: 'coordinator', what: 'one pass: decode the gradient from the frame, check it for Inf/NaN, add it into the float64 sum (WebAssembly SIMD)', f: () => {
      if (acc.addInto(sum64, gradWire) !== null) throw new Error('refused');
    } },
    { key: 'apply', where: 'coordinator', what: 'mean, norm and the unclipped SGD step (one WebAssembly SIMD pass where the sum lies; a step the norm clips takes a second pass)', f: () => void server.apply(sum64, 1e6) },
  ];
  const samples = new Map<string, number[]>(steps.map((s) => [s.key, []]));
  for (let r = 0; r < reps + 2; r++) {
    for (const s of steps) {
      const ms = computeMs(measure(s.f));
      if (r >= 2) samples.get(s.key)!.push(ms);
    }
  }
  server.dispose();
  void tf; // the optimizer step runs on the current tfjs backend
  return steps.map((s) => ({ key: s.key, where: s.where, what: s.what, ms: median(samples.get(s.key)!), ...(s.skipped ? { skipped: true } : {}) }));
}
