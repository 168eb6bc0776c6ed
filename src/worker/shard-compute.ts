/**
 * The worker's compute: gradients on its shard of streams. It knows token ids
 * and the model descriptor, never sockets: the connection loop hands it plain arrays.
 *
 * It keeps the carried state of the streams it computed last, so in the
 * steady state no state crosses the wire; a stream it did not hold arrives with
 * its state from the coordinator (or starts from zero when the data order says so).
 * What a stream's state holds is the model's business: here it is stateWidth floats.
 */
import { gatherRows } from '../shared/data/batches.js';
import { rowSparseBlocks, type ModelDescriptor, type TrainStepper } from '../shared/model/descriptor.js';
import { bytesPerElement, encodeTensor, type WireDtype, type WireTensor } from '../shared/wire/tensor.js';
import type { SparseRows } from '../shared/wire/accumulate.js';
import type { LocalSteps } from '../shared/wire/messages.js';
import { InnerLoop } from '../shared/train/local-sgd.js';

export interface ShardTask {
  paramsVersion: number;
  lo: number;
  hi: number;
  starts: Int32Array;
  /** 1 = start this stream from zero state. */
  fresh: Uint8Array;
  /** Optional initial state for all rows: (hi-lo) x stateWidth. */
  state?: Float32Array;
}

export interface ShardResult {
  grad: Float32Array;
  lossSum: number;
  tokenCount: number;
  /** Final state of the rows, (hi-lo) x stateWidth. */
  state: Float32Array;
  computeMs: number;
  /** The batch's input token ids (rows x numSteps): the rows of a row-sparse block that can be nonzero. Absent for a local SGD round, whose change is sent dense. */
  inputs?: Int32Array;
}

/**
 * A gradient for the wire: each row-sparse block (one-hot input weights, an
 * embedding) goes as (row ids, rows) of the tokens that occurred among the
 * inputs when that is fewer bytes than the whole block; the other rows are
 * exactly zero, so the coordinator's sum is the same either way. Rows cost a
 * copy of the rest of the gradient, so they are sent only where they save at
 * least an eighth of its bytes: a word model's embedding, not the two or three
 * characters a batch of a character model lacks (0.2 ms a step for 1%).
 */
export function encodeGradient(model: ModelDescriptor, grad: Float32Array, inputs: Int32Array, dtype: WireDtype, sparse: boolean): { grads: WireTensor; rows?: SparseRows[] } {
  const blocks = sparse ? rowSparseBlocks(model.blocks) : [];
  if (blocks.length === 0) return { grads: encodeTensor(grad, dtype) };
  const seen = new Uint8Array(model.vocabSize);
  for (let i = 0; i < inputs.length; i++) seen[inputs[i]] = 1;
  const w = bytesPerElement(dtype);
  const rows: SparseRows[] = [];
  const sent: { offset: number; size: number }[] = [];
  const chosen = blocks.map((b) => {
    const ids: number[] = [];
    for (let id = 0; id < Math.min(b.rows, seen.length); id++) if (seen[id]) ids.push(id);
    const saved = b.rows * b.cols * w - ids.length * (4 + b.cols * w);
    return { ids, saved };
  });
  if (chosen.reduce((a, c) => a + Math.max(0, c.saved), 0) * 8 < grad.length * w) return { grads: encodeTensor(grad, dtype) };
  blocks.forEach((b, index) => {
    const { ids, saved } = chosen[index];
    if (saved <= 0) return;
    const values = new Float32Array(ids.length * b.cols);
    ids.forEach((id, j) => values.set(grad.subarray(b.offset + id * b.cols, b.offset + (id + 1) * b.cols), j * b.cols));
    const idBytes = new Uint8Array(ids.length * 4);
    const dv = new DataView(idBytes.buffer);
    ids.forEach((id, j) => dv.setInt32(j * 4, id, true));
    rows.push({ block: index, ids: idBytes, values: encodeTensor(values, dtype) });
    sent.push({ offset: b.offset, size: b.rows * b.cols });
  });
  if (rows.length === 0) return { grads: encodeTensor(grad, dtype) };
  const dense = new Float32Array(grad.length - sent.reduce((a, s) => a + s.size, 0));
  let at = 0;
  let from = 0;
  for (const s of [...sent, { offset: grad.length, size: 0 }]) {
    dense.set(grad.subarray(from, s.offset), at);
    at += s.offset - from;
    from = s.offset + s.size;
  }
  return { grads: encodeTensor(dense, dtype), rows };
}

export class ShardComputer {
  private params: { version: number; stepper: TrainStepper; flat: Float32Array } | null = null;
  /** Bumped by new parameters and reset(): a local SGD round in flight sees it and is abandoned. */
  private generation = 0;
  /** stream index -> its state (stateWidth values) after the last step that computed it here. */
  private held = new Map<number, Float32Array>();
  /** The stepper of the previous parameters, freed by releaseRetired() (see there). */
  private retired: TrainStepper | null = null;

  constructor(
    readonly model: ModelDescriptor,
    readonly numSteps: number,
    private readonly tokens: Int32Array,
  ) {}

  /** `flat` is read now and by a local SGD round as it starts (which copies it); the caller may reuse it for the next parameters. */
  setParams(version: number, flat: Float32Array): void {
    if (this.params) this.retire(this.params.stepper);
    this.params = { version, stepper: this.model.stepper(flat), flat };
    this.generation++;
  }

  /**
   * The previous parameters' step tensors are kept until releaseRetired(): freeing them (and the backend's
   * packed weights cached for them) took 0.3 ms between the parameters' arrival and the step, while once the
   * step's reply has gone out the worker only waits. At most one stepper waits so.
   */
  private retire(stepper: TrainStepper): void {
    this.retired?.dispose();
    this.retired = stepper;
  }

  /** Frees the previous parameters' step tensors: the connection loop calls it once a step's reply is sent. */
  releaseRetired(): void {
    this.retired?.dispose();
    this.retired = null;
  }

  get paramCount(): number {
    return this.model.paramCount;
  }

  get paramsVersion(): number | null {
    return this.params?.version ?? null;
  }

  /** Forget carried state (e.g. after a reconnect: the coordinator re-sends what matters). */
  reset(): void {
    this.held.clear();
    this.generation++;
  }

  /** `gradOut`: where the step may write the gradient (TrainStepper.step); the result's `grad` says where it is. */
  compute(task: ShardTask, gradOut?: Float32Array): ShardResult {
    const t0 = performance.now();
    if (!this.params || this.params.version !== task.paramsVersion) {
      throw new Error(`step needs parameters v${task.paramsVersion}, have ${this.params ? `v${this.params.version}` : 'none'}`);
    }
    const rows = task.hi - task.lo;
    const W = this.model.stateWidth;
    const maxStart = this.tokens.length - this.numSteps - 1;
    for (const s of task.starts) {
      if (!(s >= 0 && s <= maxStart)) throw new RangeError(`row start ${s} outside the token array [0, ${maxStart}]`);
    }
    const init = new Float32Array(rows * W);
    if (task.state) {
      if (task.state.length !== init.length) throw new RangeError(`state holds ${task.state.length} values, expected ${init.length}`);
      init.set(task.state);
    } else {
      for (let r = 0; r < rows; r++) {
        const held = this.held.get(task.lo + r);
        if (task.fresh[r] === 0 && held) init.set(held, r * W);
      }
    }
    const { x, y } = gatherRows(this.tokens, task.starts, this.numSteps);
    // Global stream ids and the step: what randomness inside a step (dropout) is a function of, as in one process.
    const streams = Int32Array.from({ length: rows }, (_, i) => task.lo + i);
    const r = this.params.stepper.step({ x, y, rows, numSteps: this.numSteps, streams, step: task.paramsVersion }, init, gradOut);
    this.held.clear();
    for (let i = 0; i < rows; i++) this.held.set(task.lo + i, r.state.slice(i * W, (i + 1) * W));
    return { grad: r.grad, lossSum: r.lossSum, tokenCount: r.tokenCount, state: r.state, computeMs: performance.now() - t0, inputs: x };
  }

  /**
   * A local SGD round (src/shared/train/local-sgd.ts): inner steps on `task.starts`, then on each batch of
   * `local`, with `pause()` awaited between steps (the socket's heartbeats need the event loop). `grad` is the
   * token-weighted parameter change. Null when new parameters or a reset came meanwhile: the round is over.
   */
  async computeLocal(task: ShardTask, local: LocalSteps, pause: () => Promise<void>): Promise<ShardResult | null> {
    const t0 = performance.now();
    const params = this.paramsFor(task);
    const rows = task.hi - task.lo;
    const W = this.model.stateWidth;
    this.checkStarts(local.starts);
    const generation = this.generation;
    // The first inner step runs on the parameters as they arrived: the stepper built for them then serves it.
    const loop = new InnerLoop(this.model, params.flat, task.paramsVersion, task.lo, this.initialState(task), local, this.tokens, this.numSteps, params.stepper);
    try {
      loop.step({ starts: task.starts, reset: false });
      for (let k = 0; k < local.resets.length; k++) {
        await pause();
        if (this.generation !== generation) {
          loop.dispose();
          return null;
        }
        loop.step({ starts: local.starts.subarray(k * rows, (k + 1) * rows), reset: local.resets[k] === 1 });
      }
    } catch (e) {
      loop.dispose();
      throw e;
    }
    const r = loop.finish();
    this.held.clear();
    for (let i = 0; i < rows; i++) this.held.set(task.lo + i, r.state.slice(i * W, (i + 1) * W));
    return { grad: r.deltaSum, lossSum: r.lossSum, tokenCount: r.tokenCount, state: r.state, computeMs: performance.now() - t0 };
  }

  private paramsFor(task: ShardTask): { version: number; stepper: TrainStepper; flat: Float32Array } {
    if (!this.params || this.params.version !== task.paramsVersion) {
      throw new Error(`step needs parameters v${task.paramsVersion}, have ${this.params ? `v${this.params.version}` : 'none'}`);
    }
    this.checkStarts(task.starts);
    return this.params;
  }

  private checkStarts(starts: Int32Array): void {
    const maxStart = this.tokens.length - this.numSteps - 1;
    for (const s of starts) {
      if (!(s >= 0 && s <= maxStart)) throw new RangeError(`row start ${s} outside the token array [0, ${maxStart}]`);
    }
  }

  /** The rows' state before the first step: sent, held here from the last step, or zero (as compute() does). */
  private initialState(task: ShardTask): Float32Array {
    const rows = task.hi - task.lo;
    const W = this.model.stateWidth;
    const init = new Float32Array(rows * W);
    if (task.state) {
      if (task.state.length !== init.length) throw new RangeError(`state holds ${task.state.length} values, expected ${init.length}`);
      init.set(task.state);
    } else {
      for (let r = 0; r < rows; r++) {
        const held = this.held.get(task.lo + r);
        if (task.fresh[r] === 0 && held) init.set(held, r * W);
      }
    }
    return init;
  }

  dispose(): void {
    this.releaseRetired();
    if (this.params) this.params.stepper.dispose();
    this.params = null;
    this.held.clear();
  }
}
