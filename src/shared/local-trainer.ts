/**
 * The in-process training loop: the single-process reference that the
 * distributed trainer must match, and the baseline of the benchmarks.
 * Same data schedule, same step, same ParameterServer as the coordinator.
 */
import { gatherRows } from './batches.js';
import type { TrainConfig } from './config.js';
import type { Corpus } from './corpus.js';
import { disposeState, disposeStepParams, lstmStep, makeStepParams, zeroState, type LstmState } from './lstm-step.js';
import { initParams, type ModelDims } from './params.js';
import { ParameterServer } from './param-server.js';
import { Rng } from './rng.js';
import { Schedule } from './schedule.js';

export interface EpochReport {
  epoch: number;
  step: number;
  trainLoss: number;
  trainPerplexity: number;
  tokens: number;
  seconds: number;
  tokensPerSecond: number;
}

export interface LocalRunOptions {
  /** Stop after this many optimizer steps (for equivalence tests). */
  maxSteps?: number;
  onEpoch?: (r: EpochReport, server: ParameterServer) => void;
}

export function modelDims(cfg: TrainConfig, corpus: Corpus): ModelDims {
  return { vocabSize: corpus.vocab.size, hidden: cfg.hidden };
}

/** Fresh parameters for a run: normal(0, 0.01) from the run's seed. */
export function initialParams(cfg: TrainConfig, dims: ModelDims): Float32Array {
  return initParams(dims, new Rng(cfg.seed));
}

export function trainLocal(cfg: TrainConfig, corpus: Corpus, opts: LocalRunOptions = {}): { server: ParameterServer; history: EpochReport[] } {
  const dims = modelDims(cfg, corpus);
  const server = new ParameterServer(dims, initialParams(cfg, dims), cfg);
  const schedule = new Schedule(corpus.train.length, cfg.batchSize, cfg.numSteps, cfg.partition, { seed: cfg.seed });
  const history: EpochReport[] = [];
  let state: LstmState | null = null;
  let lossSum = 0;
  let tokens = 0;
  let t0 = performance.now();
  while (schedule.peek().epoch < cfg.epochs && (opts.maxSteps === undefined || server.version < opts.maxSteps)) {
    const { plan, epoch } = schedule.peek();
    if (plan.resetState || state === null) {
      if (state) disposeState(state);
      state = zeroState(cfg.batchSize, cfg.hidden);
    }
    const { x, y } = gatherRows(corpus.train, plan.starts, cfg.numSteps);
    const sp = makeStepParams(server.params(), dims);
    const r = lstmStep(sp, { x, y, rows: cfg.batchSize, numSteps: cfg.numSteps }, state);
    disposeStepParams(sp);
    disposeState(state);
    state = r.state;
    server.apply(r.grad, r.tokenCount);
    lossSum += r.lossSum;
    tokens += r.tokenCount;
    if (schedule.advance()) {
      const seconds = (performance.now() - t0) / 1000;
      const report = { epoch, step: server.version, trainLoss: lossSum / tokens, trainPerplexity: Math.exp(lossSum / tokens), tokens, seconds, tokensPerSecond: tokens / seconds };
      history.push(report);
      opts.onEpoch?.(report, server);
      lossSum = 0;
      tokens = 0;
      t0 = performance.now();
    }
  }
  if (state) disposeState(state);
  return { server, history };
}
