/**
 * The order of batches over the whole run: epoch plans drawn from the data RNG,
 * and a position (epoch, batch, RNG state at the epoch's start) that a
 * checkpoint stores so that a resumed run sees exactly the same batches.
 */
import { planEpoch, type BatchPlan, type EpochPlan, type Partition } from './batches.js';
import { Rng, type RngState } from './rng.js';

export interface SchedulePosition {
  epoch: number;
  batchIndex: number;
  epochRngState: RngState;
}

export interface ScheduledBatch {
  epoch: number;
  batchIndex: number;
  batchesInEpoch: number;
  plan: BatchPlan;
}

export class Schedule {
  private epoch: number;
  private batchIndex: number;
  private epochRngState: RngState;
  private rng: Rng;
  private plan: EpochPlan;

  constructor(
    private readonly numTokens: number,
    private readonly batchSize: number,
    private readonly numSteps: number,
    private readonly partition: Partition,
    start: SchedulePosition | { seed: number },
  ) {
    if ('seed' in start) {
      // A stream of its own, so that data order does not depend on how many numbers parameter init drew.
      this.rng = new Rng(start.seed ^ 0x5eed);
      this.epoch = 0;
      this.batchIndex = 0;
    } else {
      this.rng = Rng.fromState(start.epochRngState);
      this.epoch = start.epoch;
      this.batchIndex = start.batchIndex;
    }
    this.epochRngState = this.rng.getState();
    this.plan = planEpoch(this.numTokens, this.batchSize, this.numSteps, this.partition, this.rng);
    if (this.batchIndex >= this.plan.batches.length) throw new RangeError(`batch ${this.batchIndex} is past the end of epoch ${this.epoch}`);
  }

  position(): SchedulePosition {
    return { epoch: this.epoch, batchIndex: this.batchIndex, epochRngState: this.epochRngState };
  }

  /** The data RNG's state now (after drawing the current epoch's plan). */
  rngState(): RngState {
    return this.rng.getState();
  }

  /** The batch at the current position (does not advance). */
  peek(): ScheduledBatch {
    return { epoch: this.epoch, batchIndex: this.batchIndex, batchesInEpoch: this.plan.batches.length, plan: this.plan.batches[this.batchIndex] };
  }

  /**
   * The next `n` batches from the current position, without moving: a local
   * SGD round's inner steps. Stops early at the start of epoch `stopEpoch`
   * (the end of training), so the last round of a run may be shorter.
   */
  ahead(n: number, stopEpoch: number): ScheduledBatch[] {
    const copy = Object.create(Schedule.prototype) as Schedule;
    Object.assign(copy, this, { rng: Rng.fromState(this.rng.getState()) });
    const out: ScheduledBatch[] = [];
    while (out.length < n && copy.epoch < stopEpoch) {
      out.push(copy.peek());
      copy.advance();
    }
    return out;
  }

  /** Move past the current batch; returns true when that ended an epoch. */
  advance(): boolean {
    this.batchIndex++;
    if (this.batchIndex < this.plan.batches.length) return false;
    this.epoch++;
    this.batchIndex = 0;
    this.epochRngState = this.rng.getState();
    this.plan = planEpoch(this.numTokens, this.batchSize, this.numSteps, this.partition, this.rng);
    return true;
  }
}
