/**
 * Training runs to a target, timed by wall clock, for the time-to-perplexity
 * and wire-format parts: the distributed trainer (an in-process coordinator
 * with worker processes) and the in-process reference loop (trainLocal) on
 * the same configuration, each with a train/validation perplexity per epoch.
 */
import { checkTrainConfig, resolveOptions, type TrainConfig } from '../../src/shared/config.js';
import { buildCorpus } from '../../src/shared/data/corpus.js';
import { loadCorpusText } from '../../src/shared/data/corpus-source.js';
import { perplexityOf } from '../../src/shared/model/evaluate.js';
import { modelOf, trainLocal, type EpochReport } from '../../src/shared/train/local-trainer.js';
import { COORDINATOR_OPTIONS } from '../../src/shared/options.js';
import { ensureTimeMachine, startCluster, sleep, type RoundRecord } from './cluster.js';
import { median } from './stats.js';
import type { BenchContext } from './types.js';

export interface EpochPoint {
  epoch: number;
  trainPerplexity: number;
  validationPerplexity?: number;
  /** Seconds since training began (first round / first step), at the end of this epoch. */
  elapsedSeconds: number;
}

export interface TrainRun {
  kind: 'distributed' | 'local';
  curve: EpochPoint[];
  /** First epoch whose train perplexity is <= the target, and when it ended. */
  reachedEpoch: number | null;
  reachedSeconds: number | null;
  /** Training wall time (from the first round or step to the end of the last epoch). */
  trainSeconds: number;
  /** Before training: coordinator start and workers joining, or building the corpus. */
  setupSeconds: number;
  stoppedBy: 'target' | 'epochs' | 'time-limit';
  steps: number;
  /** Distributed only. */
  gradientBytes?: number;
  parameterBytes?: number;
  roundMsMedian?: number;
  slowestComputeMsMedian?: number;
}

export interface RunSpec {
  /** Training options (camelCase), on top of the d2l defaults of the option table. */
  config: Record<string, unknown>;
  /** Stop at the end of the first epoch with train perplexity <= this (null: run all epochs). */
  target: number | null;
  /** Stop at the end of the first epoch past this many seconds of training. */
  timeLimitSeconds: number;
  /** Validation perplexity every this many epochs (and at the last). */
  evalEvery: number;
  log: (line: string) => void;
}

/**
 * The coordinator's option table resolved from explicit values only (no DPTRAIN_* environment), checked and
 * completed as the CLI does (the model from --cell and its stack flags, the tokenizer, local SGD's defaults).
 */
export function trainConfig(ctx: BenchContext, over: Record<string, unknown>): TrainConfig {
  const cfg = resolveOptions<TrainConfig>(COORDINATOR_OPTIONS, { corpus: 'timemachine', dataDir: ctx.dataDir, ...over }, {});
  checkTrainConfig(cfg);
  return cfg;
}

async function counter(c: { get(): Promise<{ values: { value: number }[] }> }): Promise<number> {
  return (await c.get()).values.reduce((a, v) => a + v.value, 0);
}

export async function runDistributed(ctx: BenchContext, spec: RunSpec & { workers: number }): Promise<TrainRun> {
  const t0 = performance.now();
  const curve: EpochPoint[] = [];
  let reachedEpoch: number | null = null;
  let reachedSeconds: number | null = null;
  let stoppedBy: TrainRun['stoppedBy'] = 'epochs';
  let firstStart: number | null = null;
  let seen = 0;
  let lastRoundAt = 0;
  const cluster = await startCluster(ctx, {
    workers: spec.workers,
    config: { ...spec.config, logEvery: spec.evalEvery },
    onRound: (r: RoundRecord) => {
      firstStart ??= r.at - r.totalMs;
      lastRoundAt = r.at;
      // endEpoch runs right after this callback: look at the history on the next turn.
      setImmediate(check);
    },
  });
  const c = cluster.coordinator;
  const epochs = cluster.cfg.epochs;
  const check = () => {
    const h = c.history;
    while (seen < h.length) {
      const e = h[seen++];
      const elapsed = (lastRoundAt - firstStart!) / 1000;
      curve.push({ epoch: e.epoch, trainPerplexity: e.trainPerplexity, validationPerplexity: e.validationPerplexity, elapsedSeconds: elapsed });
      if (e.epoch % 25 === 0 || e.epoch === 1) spec.log(`distributed epoch ${e.epoch}: train perplexity ${e.trainPerplexity.toFixed(3)}${e.validationPerplexity !== undefined ? `, validation ${e.validationPerplexity.toFixed(3)}` : ''}, ${elapsed.toFixed(0)} s`);
      if (reachedEpoch === null && spec.target !== null && e.trainPerplexity <= spec.target) {
        reachedEpoch = e.epoch;
        reachedSeconds = elapsed;
        stoppedBy = 'target';
        void cluster.stop();
      } else if (elapsed > spec.timeLimitSeconds && e.epoch < epochs && reachedEpoch === null) {
        stoppedBy = 'time-limit';
        void cluster.stop();
      }
    }
  };
  let finished = false;
  const summary = await Promise.race([
    cluster.done.finally(() => (finished = true)),
    (async (): Promise<never> => {
      // Workers that never join must not hang the part.
      while (!finished) {
        await sleep(500);
        if (firstStart === null && (performance.now() - t0) / 1000 > 120) {
          await cluster.stop();
          throw new Error(`the workers did not join within 120 s: ${cluster.workers.map((w) => w.output().slice(-300)).join(' | ')}`);
        }
      }
      return new Promise<never>(() => undefined);
    })(),
  ]);
  await cluster.stop();
  check();
  const gradientBytes = await counter(c.metrics.gradBytes);
  const parameterBytes = await counter(c.metrics.paramBytes);
  const measured = cluster.rounds.slice(Math.min(5, cluster.rounds.length - 1));
  const last = curve[curve.length - 1];
  return {
    kind: 'distributed',
    curve,
    reachedEpoch,
    reachedSeconds,
    trainSeconds: last ? last.elapsedSeconds : 0,
    setupSeconds: ((firstStart ?? performance.now()) - t0) / 1000,
    stoppedBy,
    steps: summary.steps,
    gradientBytes,
    parameterBytes,
    roundMsMedian: median(measured.map((r) => r.totalMs)),
    slowestComputeMsMedian: median(measured.map((r) => r.slowestComputeMs)),
  };
}

class Stop extends Error {}

export async function runLocal(ctx: BenchContext, spec: RunSpec): Promise<TrainRun> {
  const t0 = performance.now();
  ensureTimeMachine(ctx);
  const cfg = trainConfig(ctx, spec.config);
  const text = await loadCorpusText(cfg.corpus, { dataDir: ctx.dataDir, onWarning: (m) => spec.log(m) });
  const corpus = buildCorpus(text.text, { maxTokens: cfg.maxTokens, valFraction: cfg.valFraction });
  const dims = modelOf(cfg, corpus);
  const curve: EpochPoint[] = [];
  let reachedEpoch: number | null = null;
  let reachedSeconds: number | null = null;
  let stoppedBy: TrainRun['stoppedBy'] = 'epochs';
  let steps = 0;
  const start = performance.now();
  let trainMs = 0;
  const onEpoch = (r: EpochReport, s: { params(): Float32Array }) => {
    // The validation pass is timed as training time, as it is in the distributed run (the coordinator evaluates between rounds).
    const epoch = r.epoch + 1;
    steps = r.step;
    let validationPerplexity: number | undefined;
    if (epoch % spec.evalEvery === 0 || epoch === cfg.epochs || epoch === 1) {
      if (corpus.validation.length > cfg.numSteps + 1) validationPerplexity = perplexityOf(s.params(), dims, corpus.validation, cfg.numSteps, cfg.batchSize);
    }
    trainMs = performance.now() - start;
    const elapsed = trainMs / 1000;
    curve.push({ epoch, trainPerplexity: r.trainPerplexity, validationPerplexity, elapsedSeconds: elapsed });
    if (epoch % 25 === 0 || epoch === 1) spec.log(`local epoch ${epoch}: train perplexity ${r.trainPerplexity.toFixed(3)}${validationPerplexity !== undefined ? `, validation ${validationPerplexity.toFixed(3)}` : ''}, ${elapsed.toFixed(0)} s`);
    if (spec.target !== null && r.trainPerplexity <= spec.target) {
      reachedEpoch = epoch;
      reachedSeconds = elapsed;
      stoppedBy = 'target';
      throw new Stop();
    }
    if (elapsed > spec.timeLimitSeconds && epoch < cfg.epochs) {
      stoppedBy = 'time-limit';
      throw new Stop();
    }
  };
  try {
    // trainLocal has no stop hook; throwing out of the callback ends the run between steps.
    trainLocal(cfg, corpus, { onEpoch }).server.dispose();
  } catch (e) {
    if (!(e instanceof Stop)) throw e;
  }
  return { kind: 'local', curve, reachedEpoch, reachedSeconds, trainSeconds: trainMs / 1000, setupSeconds: (start - t0) / 1000, stoppedBy, steps };
}
