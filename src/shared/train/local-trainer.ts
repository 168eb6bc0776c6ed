/**
 * The in-process training loop: the single-process reference that the
 * distributed trainer must match, and the baseline of the benchmarks.
 * Same data schedule, same step, same ParameterServer as the coordinator.
 */
import { gatherRows } from '../data/batches.js';
import type { TrainConfig } from '../config.js';
import type { Corpus } from '../data/corpus.js';
import type { ModelDescriptor } from '../model/descriptor.js';
import { modelFromConfig } from '../model/registry.js';
import { ParameterServer } from './param-server.js';
import { Rng } from '../data/rng.js';
import { Schedule } from '../data/schedule.js';

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

/** The model the config names, for the corpus's vocabulary. */
export function modelOf(cfg: Pick<TrainConfig, 'model' | 'hidden'> & Partial<TrainConfig>, corpus: Corpus): ModelDescriptor {
  return modelFromConfig(cfg, corpus.vocab.size);
}

/** Fresh parameters for a run, from the run's seed (the char-LSTM: normal(0, 0.01) weights, zero biases). */
export function initialParams(cfg: Pick<TrainConfig, 'seed'>, model: ModelDescriptor): Float32Array {
  return model.init(new Rng(cfg.seed));
}

export function trainLocal(cfg: TrainConfig, corpus: Corpus, opts: LocalRunOptions = {}): { server: ParameterServer; history: EpochReport[] } {
  const model = modelOf(cfg, corpus);
  const server = new ParameterServer(model, initialParams(cfg, model), cfg);
  const schedule = new Schedule(corpus.train.length, cfg.batchSize, cfg.numSteps, cfg.partition, { seed: cfg.seed });
  const history: EpochReport[] = [];
  let state: Float32Array | null = null;
  let lossSum = 0;
  let tokens = 0;
  let t0 = performance.now();
  while (schedule.peek().epoch < cfg.epochs && (opts.maxSteps === undefined || server.version < opts.maxSteps)) {
    const { plan, epoch } = schedule.peek();
    if (plan.resetState || state === null) state = new Float32Array(cfg.batchSize * model.stateWidth);
    const { x, y } = gatherRows(corpus.train, plan.starts, cfg.numSteps);
    const stepper = model.stepper(server.params());
    // Row r is stream r; the step number is the parameters' version, as a worker's paramsVersion.
    const streams = Int32Array.from({ length: cfg.batchSize }, (_, r) => r);
    const r = stepper.step({ x, y, rows: cfg.batchSize, numSteps: cfg.numSteps, streams, step: server.version }, state);
    stepper.dispose();
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
  return { server, history };
}
