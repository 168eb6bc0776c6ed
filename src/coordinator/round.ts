/**
 * One synchronous round: a table of pending replies with a deadline and a
 * settled guard (the shape of prom-client's cluster aggregation). It resolves
 * when every expected worker replied or left, or when the deadline passes;
 * never later. Replies are summed into a float64 gradient as they arrive.
 */
import { ErrorCodes, type ErrorCode } from '../shared/errors.js';
import { realClock, type Clock } from './transport.js';
import { GradAccumulator, type SparseRows } from '../shared/wire/accumulate.js';
import type { WireTensor } from '../shared/wire/tensor.js';

export interface Reply {
  workerId: string;
  round: number;
  tokenCount: number;
  lossSum: number;
  computeMs: number;
  /** Decoded values, or the tensor as received: then it is checked, decoded and summed in one pass, all or nothing. */
  grad: Float32Array | WireTensor;
  /** Row-sparse blocks sent as rows (with a received tensor only); `grad` then holds the other blocks. */
  rows?: readonly SparseRows[];
  state?: Float32Array;
}

export interface Expected {
  lo: number;
  hi: number;
  tokenCount: number;
  /** Values a returned state must hold: (hi - lo) x the model's stateWidth. A state of another length is refused, not dropped. */
  stateLength?: number;
  /** A relay's reply may cover fewer tokens (a worker under it died mid-round); the state still covers every stream. */
  partial?: boolean;
}

export interface RoundOutcome {
  round: number;
  /** Workers whose gradients were summed. */
  replied: string[];
  /** Workers that missed the deadline. */
  late: string[];
  /** Workers that left during the round. */
  gone: string[];
  gradSum: Float64Array;
  tokens: number;
  lossSum: number;
  /** Per worker: compute time it reported, and how long its reply waited for the round's last one. */
  computeMs: Map<string, number>;
  waitMs: Map<string, number>;
  /** Tokens each worker's summed gradient covered. */
  tokensBy: Map<string, number>;
  /** Final stream states reported, by worker. */
  states: Map<string, { lo: number; state: Float32Array }>;
  durationMs: number;
  timedOut: boolean;
}

export class Round {
  readonly done: Promise<RoundOutcome>;
  private resolve!: (o: RoundOutcome) => void;
  private settled = false;
  private readonly pending: Map<string, Expected>;
  private readonly arrivedAt = new Map<string, number>();
  private readonly replied: string[] = [];
  private readonly gone: string[] = [];
  private readonly computeMs = new Map<string, number>();
  private readonly tokensBy = new Map<string, number>();
  private readonly states = new Map<string, { lo: number; state: Float32Array }>();
  private readonly gradSum: Float64Array;
  private tokens = 0;
  private lossSum = 0;
  private readonly timer: unknown;
  private readonly t0: number;

  constructor(
    readonly id: number,
    expected: Map<string, Expected>,
    paramCount: number,
    deadlineMs: number,
    private readonly clock: Clock = realClock,
    /** Sums received tensors; its reused sum becomes this round's (the previous round's sum must be applied by then). */
    private acc?: GradAccumulator,
  ) {
    this.pending = new Map(expected);
    this.gradSum = acc && acc.paramCount === paramCount ? acc.newSum() : new Float64Array(paramCount);
    this.t0 = clock.now();
    this.done = new Promise((r) => (this.resolve = r));
    this.timer = clock.setTimeout(() => this.finish(true), deadlineMs);
    if (this.pending.size === 0) this.finish(false);
  }

  get isSettled(): boolean {
    return this.settled;
  }

  /** Classify a reply's round number against this round, before decoding its payload. */
  check(workerId: string, round: number): ErrorCode | null {
    if (round < this.id) return ErrorCodes.ERR_STALE_ROUND;
    if (round > this.id) return ErrorCodes.ERR_FUTURE_ROUND;
    if (this.replied.includes(workerId)) return ErrorCodes.ERR_DUPLICATE_REPLY;
    if (this.settled) return ErrorCodes.ERR_STALE_ROUND;
    if (!this.pending.has(workerId)) return ErrorCodes.ERR_STALE_ROUND;
    return null;
  }

  /**
   * Classify a reply that the round in flight (or none) called stale: a second reply
   * to this round, once it ended, is still a duplicate, not a late reply.
   */
  reclassify(workerId: string, round: number, code: ErrorCode): ErrorCode {
    return code === ErrorCodes.ERR_STALE_ROUND && round === this.id && this.replied.includes(workerId) ? ErrorCodes.ERR_DUPLICATE_REPLY : code;
  }

  /** Sum a reply in. Returns an error code instead when it does not belong to this round. */
  accept(r: Reply): ErrorCode | null {
    const bad = this.check(r.workerId, r.round);
    if (bad) return bad;
    const exp = this.pending.get(r.workerId)!;
    if (exp.partial ? r.tokenCount > exp.tokenCount : r.tokenCount !== exp.tokenCount) return ErrorCodes.ERR_BAD_MESSAGE;
    if (r.state && exp.stateLength !== undefined && r.state.length !== exp.stateLength) return ErrorCodes.ERR_BAD_TENSOR;
    if (r.grad instanceof Float32Array) {
      if (r.grad.length !== this.gradSum.length || r.rows) return ErrorCodes.ERR_BAD_TENSOR;
      const g = this.gradSum;
      const x = r.grad;
      for (let i = 0; i < g.length; i++) g[i] += x[i];
    } else {
      this.acc ??= new GradAccumulator(this.gradSum.length);
      // All or nothing: a refused frame leaves the sum as it was.
      const bad = this.acc.addInto(this.gradSum, r.grad, r.rows);
      if (bad) return bad;
    }
    this.tokens += r.tokenCount;
    this.lossSum += r.lossSum;
    this.computeMs.set(r.workerId, r.computeMs);
    this.tokensBy.set(r.workerId, r.tokenCount);
    if (r.state) this.states.set(r.workerId, { lo: exp.lo, state: r.state });
    this.arrivedAt.set(r.workerId, this.clock.now());
    this.pending.delete(r.workerId);
    this.replied.push(r.workerId);
    if (this.pending.size === 0) this.finish(false);
    return null;
  }

  /** The worker left: stop waiting for it. */
  drop(workerId: string): void {
    if (this.settled || !this.pending.delete(workerId)) return;
    this.gone.push(workerId);
    if (this.pending.size === 0) this.finish(false);
  }

  /** Abandon the round now (shutdown); whatever arrived is returned. */
  abort(): void {
    this.finish(true);
  }

  private finish(timedOut: boolean): void {
    if (this.settled) return;
    this.settled = true;
    this.clock.clearTimeout(this.timer);
    const end = this.clock.now();
    const last = Math.max(0, ...this.arrivedAt.values());
    const waitMs = new Map<string, number>();
    for (const [id, t] of this.arrivedAt) waitMs.set(id, Math.max(0, last - t));
    this.resolve({
      round: this.id,
      replied: this.replied,
      late: [...this.pending.keys()],
      gone: this.gone,
      gradSum: this.gradSum,
      tokens: this.tokens,
      lossSum: this.lossSum,
      computeMs: this.computeMs,
      waitMs,
      tokensBy: this.tokensBy,
      states: this.states,
      durationMs: end - this.t0,
      timedOut: timedOut && this.pending.size > 0,
    });
  }
}
