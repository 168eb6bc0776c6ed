/**
 * Local SGD's inner loop (--sync-every K, DiLoCo): from the round's
 * parameters θ a shard of streams takes K optimizer steps on its own, on K
 * consecutive batches of the schedule, and reports its change as a
 * token-weighted sum (θ - θ_local) · tokens in the shape of a gradient sum, so
 * the coordinator (and anything between, a relay) only adds such sums.
 *
 * The inner optimizer is the run's --optimizer, --lr and --clip (clipping
 * applies here, to each inner step's mean gradient over the shard's tokens),
 * through the same ParameterServer as synchronous training. Its state (Adam's
 * moments) starts afresh every round: nothing of it lives outside the round,
 * so a worker that dies or joins loses nothing and --resume at a round
 * boundary is exact.
 *
 * The worker runs it one step at a time (it yields between steps so that its
 * socket stays alive); `trainLocalSgd` is the in-process reference the
 * distributed run is compared with.
 */
import { gatherRows, splitStreams } from '../data/batches.js';
import type { TrainConfig } from '../config.js';
import type { Corpus } from '../data/corpus.js';
import type { ModelDescriptor, TrainStepper } from '../model/descriptor.js';
import { Schedule } from '../data/schedule.js';
import { ParameterServer, type OptimizerConfig } from './param-server.js';
import { initialParams, modelOf } from './local-trainer.js';
import { outerOptimizerConfig } from './outer-optimizer.js';

export interface InnerBatch {
  /** Row starts of this shard's streams for this inner step. */
  starts: ArrayLike<number>;
  /** Every stream starts this step from zero state (a new sequential epoch, or the random partition). */
  reset: boolean;
}

/**
 * Randomness inside a step (dropout) is a function of the step number: inner step k of the round that
 * started from parameter version v is step v x INNER_STEP_STRIDE + k, the same on a worker and in the
 * reference loop (--sync-every is at most 4096).
 */
export const INNER_STEP_STRIDE = 8192;

export interface InnerResult {
  /** (θ - θ_local) · tokenCount, float32: the shard's share of the outer gradient sum. */
  deltaSum: Float32Array;
  lossSum: number;
  tokenCount: number;
  /** Final state of the rows, rows x stateWidth. */
  state: Float32Array;
  steps: number;
}

export class InnerLoop {
  private readonly server: ParameterServer;
  private readonly start: Float32Array;
  private state: Float32Array;
  private lossSum = 0;
  private tokenCount = 0;
  steps = 0;

  /**
   * `start` (the parameters of version `version`) is copied; `init` is the state of streams [lo, lo + rows)
   * before the first step (rows x stateWidth).
   */
  constructor(
    private readonly model: ModelDescriptor,
    start: Float32Array,
    private readonly version: number,
    private readonly lo: number,
    init: Float32Array,
    cfg: OptimizerConfig,
    private readonly tokens: Int32Array,
    private readonly numSteps: number,
    /** A stepper already built on `start` (the worker's, made when the parameters arrived): the first step uses it and leaves it to its owner. */
    private readonly first?: TrainStepper,
  ) {
    this.start = start.slice();
    this.state = init;
    this.server = new ParameterServer(model, this.start, { optimizer: cfg.optimizer, lr: cfg.lr, clip: cfg.clip });
  }

  /** One inner step: gradient sum of the shard's rows, then the inner optimizer's step on its mean. */
  step(b: InnerBatch): void {
    const rows = b.starts.length;
    if (b.reset) this.state = new Float32Array(rows * this.model.stateWidth);
    const { x, y } = gatherRows(this.tokens, b.starts, this.numSteps);
    const streams = Int32Array.from({ length: rows }, (_, i) => this.lo + i);
    const step = this.version * INNER_STEP_STRIDE + this.steps;
    // Each further step's parameters are new: the model builds its tensors on them afresh (a backend
    // may cache what it derives from a tensor, e.g. wasm's packed matMul weights, so none is rewritten).
    const stepper = this.steps === 0 && this.first ? this.first : this.model.stepper(this.server.params());
    try {
      const r = stepper.step({ x, y, rows, numSteps: this.numSteps, streams, step }, this.state);
      this.server.apply(r.grad, r.tokenCount);
      this.state = r.state;
      this.lossSum += r.lossSum;
      this.tokenCount += r.tokenCount;
      this.steps++;
    } finally {
      if (stepper !== this.first) stepper.dispose();
    }
  }

  /** The shard's result; frees the inner optimizer. */
  finish(): InnerResult {
    const end = this.server.params();
    const deltaSum = new Float32Array(end.length);
    const t = this.tokenCount;
    for (let i = 0; i < end.length; i++) deltaSum[i] = (this.start[i] - end[i]) * t;
    this.dispose();
    return { deltaSum, lossSum: this.lossSum, tokenCount: t, state: this.state, steps: this.steps };
  }

  dispose(): void {
    this.server.dispose();
  }
}

/**
 * The in-process reference of a local SGD run with `shards` fixed workers
 * (streams split as the coordinator splits them): the same rounds, the same
 * inner loops, the same outer step. Returns the outer ParameterServer.
 */
export function trainLocalSgd(cfg: TrainConfig, corpus: Corpus, shards: number, opts: { maxRounds?: number } = {}): { server: ParameterServer; steps: number } {
  const model = modelOf(cfg, corpus);
  const server = new ParameterServer(model, initialParams(cfg, model), outerOptimizerConfig(cfg));
  const schedule = new Schedule(corpus.train.length, cfg.batchSize, cfg.numSteps, cfg.partition, { seed: cfg.seed });
  const W = model.stateWidth;
  const state = new Float32Array(cfg.batchSize * W);
  const ranges = splitStreams(cfg.batchSize, shards);
  let steps = 0;
  while (schedule.peek().epoch < cfg.epochs && (opts.maxRounds === undefined || server.version < opts.maxRounds)) {
    const batches = schedule.ahead(cfg.syncEvery, cfg.epochs);
    const sum = new Float64Array(model.paramCount);
    let tokens = 0;
    for (const [lo, hi] of ranges) {
      const init = batches[0].plan.resetState ? new Float32Array((hi - lo) * W) : state.slice(lo * W, hi * W);
      const loop = new InnerLoop(model, server.params(), server.version, lo, init, cfg, corpus.train, cfg.numSteps);
      batches.forEach((b, k) => loop.step({ starts: b.plan.starts.subarray(lo, hi), reset: k > 0 && b.plan.resetState }));
      const r = loop.finish();
      for (let i = 0; i < sum.length; i++) sum[i] += r.deltaSum[i];
      tokens += r.tokenCount;
      state.set(r.state, lo * W);
    }
    server.apply(sum, tokens);
    for (const _ of batches) schedule.advance();
    steps += batches.length;
  }
  return { server, steps };
}
