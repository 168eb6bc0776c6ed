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
import type { ModelDescriptor, TrainStepper } from '../shared/model/descriptor.js';

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
}

export class ShardComputer {
  private params: { version: number; stepper: TrainStepper } | null = null;
  /** stream index -> its state (stateWidth values) after the last step that computed it here. */
  private held = new Map<number, Float32Array>();

  constructor(
    readonly model: ModelDescriptor,
    readonly numSteps: number,
    private readonly tokens: Int32Array,
  ) {}

  setParams(version: number, flat: Float32Array): void {
    if (this.params) this.params.stepper.dispose();
    this.params = { version, stepper: this.model.stepper(flat) };
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
  }

  compute(task: ShardTask): ShardResult {
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
    const r = this.params.stepper.step({ x, y, rows, numSteps: this.numSteps, streams, step: task.paramsVersion }, init);
    this.held.clear();
    for (let i = 0; i < rows; i++) this.held.set(task.lo + i, r.state.slice(i * W, (i + 1) * W));
    return { grad: r.grad, lossSum: r.lossSum, tokenCount: r.tokenCount, state: r.state, computeMs: performance.now() - t0 };
  }

  dispose(): void {
    if (this.params) this.params.stepper.dispose();
    this.params = null;
    this.held.clear();
  }
}
