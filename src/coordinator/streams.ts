/**
 * Who holds which stream, and the carried state of every stream.
 *
 * A stream is one row of the global batch. Its state (the model's stateWidth
 * values, opaque here) lives on the worker that computed it last; the
 * coordinator keeps a copy of every stream's state from the replies, so a
 * stream that moves to another worker (a join, a leave, a dropped worker) is
 * handed over with its state, and a checkpoint holds all of them.
 */
export class StreamTable {
  /** Worker id that computed stream s last (and so holds its state), or null. */
  private readonly owner: (string | null)[];
  /** batch x stateWidth: each stream's state after the last round that returned it. */
  readonly state: Float32Array;

  constructor(
    readonly streams: number,
    readonly stateWidth: number,
  ) {
    this.owner = new Array<string | null>(streams).fill(null);
    this.state = new Float32Array(streams * stateWidth);
  }

  /**
   * Gives streams [lo, hi) to a worker for the next round. `fresh[r]` = 1 when
   * the data order restarts stream lo+r from zero state; `state` is sent only
   * when the worker does not hold every non-fresh stream already (then it
   * holds all rows, zeros for fresh ones).
   */
  handOver(workerId: string, lo: number, hi: number, resetAll: boolean): { fresh: Uint8Array; state?: Float32Array } {
    const W = this.stateWidth;
    const rows = hi - lo;
    const fresh = new Uint8Array(rows);
    let needState = false;
    for (let s = lo; s < hi; s++) {
      if (resetAll) fresh[s - lo] = 1;
      else if (this.owner[s] !== workerId) needState = true;
    }
    let state: Float32Array | undefined;
    if (needState) {
      state = this.state.slice(lo * W, hi * W);
      for (let r = 0; r < rows; r++) if (fresh[r]) state.fill(0, r * W, (r + 1) * W);
    }
    for (let s = lo; s < hi; s++) this.owner[s] = workerId;
    return state ? { fresh, state } : { fresh };
  }

  /** The worker is gone (or dropped): whoever gets its streams next is sent their state. */
  release(workerId: string): void {
    for (let s = 0; s < this.owner.length; s++) if (this.owner[s] === workerId) this.owner[s] = null;
  }

  /** Streams [lo, hi) got new state from outside (a relay's parent sent it): nobody under us holds it. */
  forget(lo: number, hi: number): void {
    for (let s = lo; s < hi; s++) this.owner[s] = null;
  }

  /** The final state of streams lo.. a worker returned (its length was checked against the streams sent). */
  store(lo: number, state: Float32Array): void {
    this.state.set(state, lo * this.stateWidth);
  }

  /** State read from a checkpoint; nobody holds any stream yet. */
  restore(state: Float32Array): void {
    if (state.length !== this.state.length) throw new RangeError(`stream state holds ${state.length} values, expected ${this.state.length}`);
    this.state.set(state);
    this.owner.fill(null);
  }
}
