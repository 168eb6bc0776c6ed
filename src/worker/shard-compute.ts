/**
 * The worker's compute: gradients on its shard of streams. It knows tensors and
 * token ids, never sockets: the connection loop hands it plain arrays.
 *
 * It keeps the carried LSTM state of the streams it computed last, so in the
 * steady state no state crosses the wire; a stream it did not hold arrives with
 * its state from the coordinator (or starts from zero when the data order says so).
 */
import { gatherRows } from '../shared/batches.js';
import { disposeState, disposeStepParams, lstmStep, makeStepParams, type StepParams } from '../shared/lstm-step.js';
import { paramCount, type ModelDims } from '../shared/params.js';
import * as tf from '@tensorflow/tfjs';

export interface ShardTask {
  paramsVersion: number;
  lo: number;
  hi: number;
  starts: Int32Array;
  /** 1 = start this stream from zero state. */
  fresh: Uint8Array;
  /** Optional initial state for all rows: (hi-lo) x 2H, h then c per row. */
  state?: Float32Array;
}

export interface ShardResult {
  grad: Float32Array;
  lossSum: number;
  tokenCount: number;
  /** Final state of the rows, (hi-lo) x 2H, h then c per row. */
  state: Float32Array;
  computeMs: number;
}

export class ShardComputer {
  private params: { version: number; sp: StepParams } | null = null;
  /** stream index -> [h | c] (2H) after the last step that computed it here. */
  private held = new Map<number, Float32Array>();

  constructor(
    readonly dims: ModelDims,
    readonly numSteps: number,
    private readonly tokens: Int32Array,
  ) {}

  setParams(version: number, flat: Float32Array): void {
    if (this.params) disposeStepParams(this.params.sp);
    this.params = { version, sp: makeStepParams(flat, this.dims) };
  }

  get paramCount(): number {
    return paramCount(this.dims);
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
    const H = this.dims.hidden;
    const maxStart = this.tokens.length - this.numSteps - 1;
    for (const s of task.starts) {
      if (!(s >= 0 && s <= maxStart)) throw new RangeError(`row start ${s} outside the token array [0, ${maxStart}]`);
    }
    const init = new Float32Array(rows * 2 * H);
    if (task.state) {
      if (task.state.length !== init.length) throw new RangeError(`state holds ${task.state.length} values, expected ${init.length}`);
      init.set(task.state);
    } else {
      for (let r = 0; r < rows; r++) {
        const held = this.held.get(task.lo + r);
        if (task.fresh[r] === 0 && held) init.set(held, r * 2 * H);
      }
    }
    const h0 = new Float32Array(rows * H);
    const c0 = new Float32Array(rows * H);
    for (let r = 0; r < rows; r++) {
      h0.set(init.subarray(r * 2 * H, r * 2 * H + H), r * H);
      c0.set(init.subarray(r * 2 * H + H, (r + 1) * 2 * H), r * H);
    }
    const state = { h: tf.tensor2d(h0, [rows, H]), c: tf.tensor2d(c0, [rows, H]) };
    const { x, y } = gatherRows(this.tokens, task.starts, this.numSteps);
    const r = lstmStep(this.params.sp, { x, y, rows, numSteps: this.numSteps }, state);
    disposeState(state);
    const h1 = r.state.h.dataSync();
    const c1 = r.state.c.dataSync();
    disposeState(r.state);
    const out = new Float32Array(rows * 2 * H);
    this.held.clear();
    for (let i = 0; i < rows; i++) {
      out.set(h1.subarray(i * H, (i + 1) * H), i * 2 * H);
      out.set(c1.subarray(i * H, (i + 1) * H), i * 2 * H + H);
      this.held.set(task.lo + i, out.slice(i * 2 * H, (i + 1) * 2 * H));
    }
    return { grad: r.grad, lossSum: r.lossSum, tokenCount: r.tokenCount, state: out, computeMs: performance.now() - t0 };
  }

  dispose(): void {
    if (this.params) disposeStepParams(this.params.sp);
    this.params = null;
    this.held.clear();
  }
}
