/**
 * Metrics and console reporting as observers of the round loop: the loop
 * tells what happened (a worker's round, an applied step, the end of an
 * epoch); this turns it into Prometheus series, the status page's per-round
 * series, the TTY progress line and the per-epoch log line. Nothing here
 * changes training.
 */
import type { CoordinatorMetrics } from './metrics.js';
import type { ConsoleReporter } from './console-report.js';
import type { RoundSeries } from './round-series.js';

export interface AppliedRound {
  /** Optimizer steps so far, and this round's (more than one with local SGD). */
  step: number;
  innerSteps?: number;
  epoch: number;
  epochs: number;
  /** The batch just applied (1-based) and the epoch's batch count, for the progress line. */
  batch: number;
  batches: number;
  lossSum: number;
  tokens: number;
  /** The part of lossSum and tokens that belongs to the epoch in progress, when the round runs past its end (local SGD). */
  epochShare?: { lossSum: number; tokens: number };
  durationMs: number;
  gradNorm: number;
  workers: number;
}

export class RunObserver {
  private epochLoss = 0;
  private epochTokens = 0;
  private intervalTokens = 0;
  private intervalStart = performance.now();

  constructor(
    private readonly metrics: CoordinatorMetrics,
    private readonly report: ConsoleReporter,
    private readonly series: RoundSeries,
  ) {}

  /** Training (re)starts now: throughput counts from here. */
  start(): void {
    this.intervalStart = performance.now();
  }

  /** One worker's share of a round: its compute time, how long its reply waited for the last one, the tokens its gradient covered. */
  workerRound(slot: string, computeMs: number, waitMs: number, tokens: number): void {
    this.metrics.workerCompute.observe({ worker: slot }, computeMs / 1000);
    this.metrics.workerWait.observe({ worker: slot }, waitMs / 1000);
    this.metrics.workerTokens.inc({ worker: slot }, tokens);
  }

  roundApplied(r: AppliedRound): void {
    const meanLoss = r.lossSum / r.tokens;
    this.addToEpoch(r.epochShare ?? r);
    this.intervalTokens += r.tokens;
    const m = this.metrics;
    m.tokens.inc(r.tokens);
    m.steps.inc(r.innerSteps ?? 1);
    m.rounds.inc();
    m.step.set(r.step);
    m.trainLoss.set(meanLoss);
    m.trainPerplexity.set(Math.exp(this.epochLoss / this.epochTokens));
    m.gradNorm.set(r.gradNorm);
    m.roundDuration.observe(r.durationMs / 1000);
    m.lastStep.set(Date.now() / 1000);
    m.epoch.set(r.epoch);
    this.series.add({ step: r.step, epoch: r.epoch, loss: meanLoss, tokens: r.tokens, durationMs: r.durationMs });
    this.report.progress(r.epoch, r.epochs, r.batch, r.batches, Math.exp(this.epochLoss / this.epochTokens), this.tokensPerSecond(), r.workers);
  }

  /** Loss and tokens of the epoch in progress (the rest of a round that ran past an epoch's end). */
  addToEpoch(share: { lossSum: number; tokens: number }): void {
    this.epochLoss += share.lossSum;
    this.epochTokens += share.tokens;
  }

  /** The epoch's training perplexity; its sums start again from zero. */
  endEpoch(): number {
    const ppl = Math.exp(this.epochLoss / this.epochTokens);
    this.epochLoss = 0;
    this.epochTokens = 0;
    return ppl;
  }

  /** Tokens per second since the last logged epoch (or the start). */
  tokensPerSecond(): number {
    return this.intervalTokens / Math.max((performance.now() - this.intervalStart) / 1000, 1e-9);
  }

  /** An epoch line was logged: throughput counts from here again. */
  restartInterval(): void {
    this.intervalTokens = 0;
    this.intervalStart = performance.now();
  }
}
