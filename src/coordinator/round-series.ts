/**
 * Per-round points for the status page's charts: `history` gains an entry
 * only every --log-every epochs, too coarse to watch a run live.
 *
 * Bounded without forgetting the start of the run: when the buffer is full,
 * every other point is dropped and from then on only every `stride`-th round
 * is kept, so a run of any length is drawn from its first step to now in at
 * most `capacity` points. Smoothing happens on every round, before thinning,
 * so a kept point summarises the rounds around it rather than being one noisy
 * sample.
 */

export interface SeriesPoint {
  step: number;
  /** 0-based epoch the round belonged to. */
  epoch: number;
  /** Unix time, ms. */
  time: number;
  /** Mean cross-entropy of this round's tokens. */
  loss: number;
  /** exp of the exponentially smoothed loss (about the last 10 rounds). */
  perplexity: number;
  /** Tokens per second over about the last `tpsWindowMs`, wall clock between rounds. */
  tokensPerSecond: number;
}

export interface RoundInput {
  step: number;
  epoch: number;
  loss: number;
  tokens: number;
  /** The round's own wall time; the rate of a first round (nothing before it to measure from). */
  durationMs: number;
}

export interface SeriesView {
  /** Bumped whenever points were dropped: a client holding an older generation must start over. */
  generation: number;
  stride: number;
  capacity: number;
  points: SeriesPoint[];
  /** The newest round, also when it falls between kept points. */
  latest: SeriesPoint | null;
}

export class RoundSeries {
  private points: SeriesPoint[] = [];
  private newest: SeriesPoint | null = null;
  private rounds = 0;
  private stride = 1;
  private generation = 0;
  private lossEma = 0;
  private lossWeight = 0;
  private tpsEma = 0;
  private tpsWeight = 0;
  private lastMono = NaN;

  constructor(
    readonly capacity = 2000,
    private readonly lossDecay = 0.9,
    private readonly tpsWindowMs = 5000,
  ) {
    if (capacity < 2) throw new RangeError('capacity must be at least 2');
  }

  add(r: RoundInput, wallMs = Date.now(), monoMs = performance.now()): SeriesPoint {
    // Bias-corrected EMAs (as Adam's moments) so the first points are not pulled towards 0.
    this.lossEma = this.lossDecay * this.lossEma + (1 - this.lossDecay) * r.loss;
    this.lossWeight = this.lossDecay * this.lossWeight + (1 - this.lossDecay);
    const dt = Number.isFinite(this.lastMono) ? monoMs - this.lastMono : 0;
    this.lastMono = monoMs;
    const spanMs = dt > 0 ? dt : Math.max(r.durationMs, 1e-3);
    const rate = (r.tokens * 1000) / spanMs;
    // Time-based decay: after a pause one slow point does not outweigh seconds of steady rounds.
    const a = 1 - Math.exp(-spanMs / this.tpsWindowMs);
    this.tpsEma = (1 - a) * this.tpsEma + a * rate;
    this.tpsWeight = (1 - a) * this.tpsWeight + a;
    const p: SeriesPoint = {
      step: r.step,
      epoch: r.epoch,
      time: wallMs,
      loss: r.loss,
      perplexity: Math.exp(this.lossEma / this.lossWeight),
      tokensPerSecond: this.tpsEma / this.tpsWeight,
    };
    this.newest = p;
    if (this.rounds++ % this.stride === 0) {
      this.points.push(p);
      if (this.points.length >= this.capacity) {
        // Kept points sit at round indices 0, s, 2s, ...; keeping the even ones leaves multiples of 2s.
        this.points = this.points.filter((_, i) => i % 2 === 0);
        this.stride *= 2;
        this.generation++;
      }
    }
    return p;
  }

  get length(): number {
    return this.points.length;
  }

  /**
   * The kept points; with `generation` equal to the current one, only those
   * after step `since`, so a page polling every second receives a few points
   * rather than the whole run each time.
   */
  view(since?: number, generation?: number): SeriesView {
    const incremental = generation === this.generation && since !== undefined && Number.isFinite(since);
    let points = this.points;
    if (incremental) {
      let i = points.length;
      while (i > 0 && points[i - 1].step > since) i--;
      points = points.slice(i);
    } else {
      points = points.slice();
    }
    return { generation: this.generation, stride: this.stride, capacity: this.capacity, points, latest: this.newest };
  }
}

/**
 * Thins an append-only log in place the way RoundSeries thins its points: the
 * coordinator's `history` (one entry per --log-every epochs) is sent whole on
 * every /status.json poll and saved in every checkpoint, so it must stay
 * bounded however long the run. Kept entries are evenly spaced from the first
 * one on (every `stride`-th, the stride doubling whenever `capacity` is
 * reached); the newest entry is always the log's last, also when it falls
 * between kept ones (it is replaced by the next push).
 *
 * Entries already in the log at the first push (a resumed run's history) are
 * adopted as if kept at stride 1, and thinned with the rest.
 */
export class LogThinning {
  private offered = 0;
  private stride = 1;
  /** The log's last entry is the newest one, not on the stride. */
  private provisional = false;
  private adopted = false;

  constructor(readonly capacity = 256) {
    if (capacity < 3) throw new RangeError('capacity must be at least 3');
  }

  push<T>(log: T[], entry: T): void {
    if (!this.adopted) {
      this.adopted = true;
      this.offered = log.length;
    }
    if (this.provisional) {
      log.pop();
      this.provisional = false;
    }
    log.push(entry);
    if (this.offered++ % this.stride !== 0) {
      this.provisional = true;
      return;
    }
    while (log.length >= this.capacity) {
      // Kept entries sit at offsets 0, s, 2s, ...: keeping the even ones leaves multiples of 2s.
      let w = 0;
      for (let i = 0; i < log.length; i += 2) log[w++] = log[i];
      log.length = w;
      this.stride *= 2;
    }
    // The newest entry fell on an odd offset and was dropped: keep it as the provisional last one.
    if (log.at(-1) !== entry) {
      log.push(entry);
      this.provisional = true;
    }
  }

  /** Every `stride`-th entry is kept (1 until the log first fills up). */
  get currentStride(): number {
    return this.stride;
  }
}
