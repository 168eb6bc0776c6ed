/**
 * Who is training: a registry of workers with a membership epoch that is
 * bumped on every join, leave and change of a relay's worker count (Horovod's
 * rendezvous counter), bounded metric slots ("w0".."wN-1"), and the
 * assignment of streams to members in proportion to the workers each carries
 * (a worker 1, a relay the workers under it). A relay uses the same class for
 * the workers under it.
 */
import type { WorkerInfo } from '../shared/wire/protocol.js';
import { splitStreams } from '../shared/data/batches.js';

/** What membership needs of a connection; the WebSocket server provides it. */
export interface Peer {
  /** `sent`, when given, runs once the bytes have been written out, or will not be (a closed or cut-off peer). */
  send(bytes: Uint8Array, sent?: () => void): void;
  close(code: number, reason: string): void;
  /** Bytes queued but not yet written to the socket. */
  bufferedAmount(): number;
}

export interface Member {
  id: string;
  /** Bounded metric label, reused after the worker leaves. */
  slot: string;
  /** Join order; streams are assigned in this order. */
  seq: number;
  info: WorkerInfo;
  peer: Peer;
  /** Workers this member carries: 1 for a worker, the workers under it for a relay (0 while it has none). */
  capacity: number;
  /** It said hello with a capacity: a relay, whose reply may cover fewer tokens than it was given. */
  relay: boolean;
  joinedAt: number;
  lastStepMs?: number;
  lastWaitMs?: number;
  /** The last STEP_WINDOW compute times (ms), oldest first: one slow step must not stand for the worker. */
  recentStepMs: number[];
  lastSeen: number;
  rounds: number;
  tokens: number;
  /** The array its replies' stream states are decoded into, reused from round to round (see stateBufferOf). */
  stateBuffer?: Float32Array;
}

/**
 * The member's array for the stream states of its reply, reused from round to round. A fresh 64 kB
 * array per reply cost 0.2 ms on the round's critical path (page faults of new memory, measured
 * in place), against 0.01 ms for the copy into a warm one. It holds the states until the member's
 * next reply is decoded; a round's end (or the relay's reply) reads them before the next round starts.
 */
export function stateBufferOf(m: Pick<Member, 'stateBuffer'>, length: number): Float32Array {
  if (m.stateBuffer?.length !== length) m.stateBuffer = new Float32Array(length);
  return m.stateBuffer;
}

/** How many recent step times a member keeps for its median. */
export const STEP_WINDOW = 20;

/** Records one round's compute time of a member (last and recent window). */
export function recordStepTime(m: Pick<Member, 'lastStepMs' | 'recentStepMs'>, ms: number): void {
  m.lastStepMs = ms;
  m.recentStepMs.push(ms);
  if (m.recentStepMs.length > STEP_WINDOW) m.recentStepMs.shift();
}

/** Median of the member's recent step times; undefined before its first round. */
export function medianStepMs(m: Pick<Member, 'recentStepMs'>): number | undefined {
  const v = [...m.recentStepMs].sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const k = v.length >> 1;
  return v.length % 2 === 1 ? v[k] : (v[k - 1] + v[k]) / 2;
}

export type LeaveReason = 'leave' | 'disconnect' | 'timeout' | 'protocol' | 'shutdown';

export class Membership {
  epoch = 0;
  private members = new Map<string, Member>();
  private seq = 0;
  private readonly slots: boolean[];
  private listeners: (() => void)[] = [];

  constructor(readonly maxWorkers: number) {
    this.slots = new Array(maxWorkers).fill(false);
  }

  get size(): number {
    return this.members.size;
  }

  /** Workers carried by all members (a relay counts its workers). */
  get workers(): number {
    let n = 0;
    for (const m of this.members.values()) n += m.capacity;
    return n;
  }

  get full(): boolean {
    return this.members.size >= this.maxWorkers;
  }

  /** `capacity` is a relay's hello.capacity; undefined for a worker. */
  add(id: string, info: WorkerInfo, peer: Peer, now: number, capacity?: number): Member {
    const k = this.slots.indexOf(false);
    if (k < 0) throw new Error('membership is full');
    this.slots[k] = true;
    const m: Member = { id, slot: `w${k}`, seq: this.seq++, info, peer, capacity: capacity ?? 1, relay: capacity !== undefined, joinedAt: now, lastSeen: now, rounds: 0, tokens: 0, recentStepMs: [] };
    this.members.set(id, m);
    this.changed();
    return m;
  }

  remove(id: string): Member | undefined {
    const m = this.members.get(id);
    if (!m) return undefined;
    this.members.delete(id);
    this.slots[Number(m.slot.slice(1))] = false;
    this.changed();
    return m;
  }

  get(id: string): Member | undefined {
    return this.members.get(id);
  }

  /** Members in join order. */
  list(): Member[] {
    return [...this.members.values()].sort((a, b) => a.seq - b.seq);
  }

  /** A relay's worker count changed: the next assign() gives it streams in proportion. */
  setCapacity(id: string, capacity: number): void {
    const m = this.members.get(id);
    if (!m || m.capacity === capacity) return;
    m.capacity = capacity;
    this.changed();
  }

  /**
   * Contiguous ranges of the streams [offset, offset + streams), in join order, in
   * proportion to what each member carries: the streams are split over the carried
   * workers as over that many plain workers, and a member gets its workers' shares.
   * At most `streams` workers get streams; members carrying none get nothing.
   */
  assign(streams: number, offset = 0): { member: Member; lo: number; hi: number }[] {
    const ms = this.list().filter((m) => m.capacity > 0);
    const total = ms.reduce((n, m) => n + m.capacity, 0);
    if (total === 0) return [];
    const parts = Math.min(total, streams);
    const chunks = splitStreams(streams, parts);
    const out: { member: Member; lo: number; hi: number }[] = [];
    let v = 0;
    for (const m of ms) {
      if (v >= parts) break;
      const last = Math.min(v + m.capacity, parts) - 1;
      out.push({ member: m, lo: offset + chunks[v][0], hi: offset + chunks[last][1] });
      v += m.capacity;
    }
    return out;
  }

  /** Resolves on the next join or leave. */
  onChange(fn: () => void): () => void {
    this.listeners.push(fn);
    return () => {
      this.listeners = this.listeners.filter((l) => l !== fn);
    };
  }

  private changed(): void {
    this.epoch++;
    for (const l of [...this.listeners]) l();
  }
}
