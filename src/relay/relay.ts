/**
 * A relay: to its parent (a coordinator or another relay) one member holding the
 * streams of all the workers under it; to those workers, a coordinator (same
 * protocol, token and flags). Each round it splits the streams it was given among
 * its workers in proportion to what each carries (membership.ts), forwards the
 * parameters' frame as it came (encoded once, by the root), adds each reply
 * into one reused float64 sum straight from its frame (round.ts with the root's
 * GradAccumulator) and sends one reply, built in place (reply-frame.ts), with
 * their token count, loss sum and the final state of every stream it was given.
 *
 * Joins, leaves and deaths under it are handled here: a worker that dies or
 * misses the relay's own deadline mid-round is left out of that round's reply
 * (fewer tokens; its streams return the state they started with), its streams
 * are re-split at the next round, and the parent hears of the new worker count
 * only between rounds (a 'capacity' message). With no worker left for a round,
 * the relay says so at once ('capacity' with the round) instead of replying.
 */
import { sliceSteps } from './local-steps.js';
import crypto from 'node:crypto';
import { CloseCodes, closeCodeFor, DptrainError, ErrorCodes, type ErrorCode } from '../shared/errors.js';
import { encode, type CapacityMsg, type GradsMsg, type HelloMsg, type ParamsMsg, type StepMsg, type WelcomeMsg, type WorkerMessage, type WorkerMessageLimits } from '../shared/wire/protocol.js';
import { decodeTensor, encodeTensor, tensorAllFinite } from '../shared/wire/tensor.js';
import { GradAccumulator } from '../shared/wire/accumulate.js';
import { urlHost } from '../shared/listen.js';
import { Membership, recordStepTime, stateBufferOf, type LeaveReason, type Member, type Peer } from '../coordinator/membership.js';
import { Round, type Expected, type RoundOutcome } from '../coordinator/round.js';
import { StreamTable } from '../coordinator/streams.js';
import { WsServer, type HelloResult } from '../coordinator/ws-server.js';
import { Upstream, type UpstreamExit, type UpstreamOptions } from './upstream.js';
import { ReplyFrames } from '../shared/wire/reply-frame.js';
import { RoundTimes } from './round-times.js';
import { relayServerOptions, STREAMS_UNKNOWN } from './server-options.js';
import type { RelayMetrics } from './metrics.js';

export interface RelayOptions {
  upstream: Omit<UpstreamOptions, 'capacity' | 'log'>;
  host: string;
  port: number;
  tls?: { certFile: string; keyFile: string };
  maxWorkers: number;
  helloTimeoutMs: number;
  heartbeatMs: number;
  /** The relay's own round deadline; 0 = derived (5x the median round, 2.5 s to 60 s: half the coordinator's default). */
  roundTimeoutMs: number;
  log: (line: string) => void;
  metrics?: RelayMetrics;
}


export class Relay {
  readonly membership: Membership;
  readonly upstream: Upstream;
  port = 0;
  rounds = 0;
  /** Set when the relay must stop for a reason of its own (the parent's model changed size). */
  fatal: DptrainError | null = null;
  private server: WsServer | null = null;
  private welcome: WelcomeMsg | null = null;
  private paramsFrame: Uint8Array | null = null;
  private table: StreamTable | null = null;
  private round: Round | null = null;
  /** The round before, kept to tell a duplicate reply from a late one after it ended. */
  private lastRound: Round | null = null;
  /** Bumped whenever the parent connection ends: a round begun on an older one is not answered. */
  private link = 0;
  private localRound = 0;
  private toldCapacity = -1;
  // The summing pass checks a reply's gradient for Inf and NaN; replies that are not summed are checked in onGrads.
  private readonly limits: WorkerMessageLimits = { paramCount: 0, maxTokenCount: 1, gradsFinitenessChecked: true };
  private readonly times: RoundTimes;
  /** Checks, decodes and adds each reply straight from its frame into one reused float64 sum, as the root does. */
  private acc: GradAccumulator | null = null;
  /** The reply up, built in place in a reused buffer. */
  private replies: ReplyFrames | null = null;
  private listeningWaiters: ((port: number) => void)[] = [];

  constructor(private readonly opts: RelayOptions) {
    this.membership = new Membership(opts.maxWorkers);
    this.times = new RoundTimes(opts.roundTimeoutMs);
    this.upstream = new Upstream(
      {
        ...opts.upstream,
        log: opts.log,
        capacity: () => (this.toldCapacity = this.membership.workers),
      },
      {
        onWelcome: (m) => this.onWelcome(m),
        onParams: (m, f) => this.onParams(m, f),
        onStep: (m) => void this.onStep(m),
        onPause: (r) => this.forwardPause(r),
        onLost: () => this.onUpstreamLost(),
      },
    );
  }

  /** Resolves with the port once the relay listens (after its parent's first welcome). */
  listening(): Promise<number> {
    return this.port > 0 ? Promise.resolve(this.port) : new Promise((r) => this.listeningWaiters.push(r));
  }

  /** Runs until the parent says the run is done, refuses the relay for good, or stop(). */
  async run(): Promise<UpstreamExit> {
    const exit = await this.upstream.run();
    this.round?.abort();
    await this.server?.close(exit === 'done' ? CloseCodes.TRAINING_DONE : CloseCodes.SHUTTING_DOWN, exit === 'done' ? 'training done' : 'relay shutting down');
    return exit;
  }

  stop(reason: string): void {
    this.upstream.stop(reason);
  }

  private onWelcome(msg: WelcomeMsg): void {
    const prev = this.welcome;
    if (prev && prev.model.paramCount !== msg.model.paramCount) {
      this.fatal = new DptrainError('ERR_RELAY_MODEL_CHANGED', `the coordinator now trains a model of ${msg.model.paramCount} parameters, this relay's port was sized for ${prev.model.paramCount}; restart the relay`);
      this.upstream.stop('model changed');
      return;
    }
    this.welcome = msg;
    const streams = msg.streams ?? STREAMS_UNKNOWN;
    const W = msg.model.stateWidth;
    this.limits.paramCount = msg.model.paramCount;
    this.limits.maxTokenCount = streams * msg.model.numSteps;
    this.limits.stateCount = streams * W;
    // A new parent (or the same one, restarted) hands every stream's state over again.
    this.table = new StreamTable(streams, W);
    this.replies = new ReplyFrames(msg.wireDtype, msg.model.paramCount, streams * W);
    // Ready (/readyz) once workers can join: on a first welcome, when the port is open.
    if (this.server) this.opts.metrics?.setUpstream(true);
    this.opts.log(`joined the coordinator as ${msg.workerId.slice(0, 8)}: ${msg.model.name}, ${msg.model.paramCount} parameters; carrying ${this.membership.workers} workers`);
    if (!this.server) void this.openServer(msg);
    else for (const m of this.membership.list()) this.sendWelcome(m);
    this.tellCapacity();
  }

  private async openServer(w: WelcomeMsg): Promise<void> {
    const o = this.opts;
    this.server = new WsServer(
      relayServerOptions(o, w, this.limits),
      {
        onHello: (msg, peer, remote) => this.onHello(msg, peer, remote),
        onMessage: (id, msg, bytes) => this.onMessage(id, msg, bytes),
        onClose: (id, reason) => this.onClose(id, reason),
        onReject: (code, remote) => this.onReject(code, remote),
      },
    );
    try {
      this.port = await this.server.listen();
    } catch (e) {
      this.fatal = e instanceof DptrainError ? e : new DptrainError('ERR_PORT_IN_USE', (e as Error).message);
      this.upstream.stop('cannot listen');
      return;
    }
    o.log(`listening on ${this.server.scheme}://${urlHost(o.host)}:${this.port} (max workers ${o.maxWorkers})`);
    this.opts.metrics?.setUpstream(this.upstream.connected);
    for (const r of this.listeningWaiters.splice(0)) r(this.port);
  }

  private sendWelcome(m: Member): void {
    const w = this.welcome!;
    // The relay knows no model layout, so its workers send dense gradients (no sparse rows); its reply up is dense too.
    const { sparseRows: _dense, ...forWorkers } = w;
    m.peer.send(encode({ ...forWorkers, workerId: m.id, heartbeatMs: this.opts.heartbeatMs }));
    if (!this.upstream.connected) m.peer.send(encode({ type: 'pause', reason: 'the relay is reconnecting to its coordinator', workers: this.membership.workers, minWorkers: 0 }));
  }

  private onHello(msg: HelloMsg, peer: Peer, remote: string): HelloResult {
    if (this.membership.full) return { ok: false, code: ErrorCodes.ERR_TOO_MANY_CONNECTIONS, message: `--max-workers ${this.opts.maxWorkers} reached` };
    const id = crypto.randomUUID();
    const m = this.membership.add(id, msg.info, peer, Date.now(), msg.capacity);
    this.sendWelcome(m);
    const i = msg.info;
    this.opts.log(`${m.relay ? `relay ${m.slot} (${m.capacity} workers)` : `worker ${m.slot}`} joined from ${remote} (${(i.name ?? `${i.host}:${i.pid}`).replace(/[\u0000-\u001f\u007f-\u009f]/g, '?')}); carrying ${this.membership.workers} workers`);
    this.opts.metrics?.membership(this.membership.workers, this.membership.size, 'join');
    this.tellCapacity();
    return { ok: true, id };
  }

  private onMessage(id: string, msg: WorkerMessage, bytes: number): void {
    const m = this.membership.get(id);
    if (!m) return;
    m.lastSeen = Date.now();
    if (msg.type === 'grads') this.onGrads(m, msg, bytes);
    else if (msg.type === 'capacity') this.onCapacity(m, msg);
  }

  private onGrads(m: Member, msg: GradsMsg, bytes: number): void {
    this.opts.metrics?.gradBytes.inc(bytes);
    const round = this.round;
    const checked = round ? round.check(m.id, msg.round) : ErrorCodes.ERR_STALE_ROUND;
    const early = checked && this.lastRound ? this.lastRound.reclassify(m.id, msg.round, checked) : checked;
    if (early || !round) {
      // A reply that is not summed still gets the finiteness check the summing pass would give it.
      if (!tensorAllFinite(msg.grads) || (msg.rows ?? []).some((r) => !tensorAllFinite(r.values))) return this.refuse(m, msg, ErrorCodes.ERR_NON_FINITE);
      return this.onReject(early ?? ErrorCodes.ERR_STALE_ROUND, m.slot);
    }
    const state = msg.state ? decodeTensor(msg.state, stateBufferOf(m, msg.state.length)) : undefined;
    const bad = round.accept({ workerId: m.id, round: msg.round, tokenCount: msg.tokenCount, lossSum: msg.lossSum, computeMs: msg.computeMs, grad: msg.grads, rows: msg.rows, state });
    if (bad) this.refuse(m, msg, bad);
  }

  private refuse(m: Member, msg: GradsMsg, bad: ErrorCode): void {
    this.onReject(bad, m.slot);
    if (bad !== ErrorCodes.ERR_BAD_MESSAGE && bad !== ErrorCodes.ERR_BAD_TENSOR && bad !== ErrorCodes.ERR_NON_FINITE) return;
    m.peer.send(encode({ type: 'error', code: bad, message: bad === ErrorCodes.ERR_NON_FINITE ? 'grads.grads contains NaN or Infinity' : `reply for round ${msg.round} does not match the streams it was given` }));
    m.peer.close(closeCodeFor(bad), bad);
  }

  private onCapacity(m: Member, msg: CapacityMsg): void {
    if (!m.relay) {
      m.peer.send(encode({ type: 'error', code: ErrorCodes.ERR_BAD_MESSAGE, message: "'capacity' comes from relays only" }));
      m.peer.close(closeCodeFor(ErrorCodes.ERR_BAD_MESSAGE), ErrorCodes.ERR_BAD_MESSAGE);
      return;
    }
    this.membership.setCapacity(m.id, msg.capacity);
    if (msg.round !== undefined && this.round?.id === msg.round) this.round.drop(m.id);
    this.opts.metrics?.membership(this.membership.workers, this.membership.size);
    this.tellCapacity();
  }

  private onClose(id: string, reason: LeaveReason): void {
    const m = this.membership.remove(id);
    if (!m) return;
    this.round?.drop(id);
    this.table?.release(id);
    this.opts.metrics?.membership(this.membership.workers, this.membership.size, reason === 'leave' || reason === 'shutdown' ? 'leave' : reason === 'protocol' ? 'protocol' : reason === 'timeout' ? 'timeout' : 'disconnect');
    this.opts.log(`${m.relay ? 'relay' : 'worker'} ${m.slot} left (${reason}); carrying ${this.membership.workers} workers`);
    this.tellCapacity();
  }

  private onReject(code: ErrorCode, who: string): void {
    this.opts.metrics?.rejected.inc({ code });
    if (code !== ErrorCodes.ERR_STALE_ROUND) this.opts.log(`refused ${who}: ${code}`);
  }

  /** Between rounds only: the parent must see the worker count change at a round boundary. */
  private tellCapacity(): void {
    if (this.round || !this.upstream.connected) return;
    const c = this.membership.workers;
    if (c === this.toldCapacity) return;
    this.upstream.send({ type: 'capacity', capacity: c });
    this.toldCapacity = c;
  }

  private onParams(_msg: ParamsMsg, frame: Uint8Array): void {
    this.paramsFrame = frame;
  }

  private forwardPause(reason: string): void {
    for (const m of this.membership.list()) m.peer.send(encode({ type: 'pause', reason, workers: this.membership.workers, minWorkers: 0 }));
  }

  private onUpstreamLost(): void {
    this.link++;
    this.opts.metrics?.setUpstream(false);
    // The round's reply has nowhere to go: drop it; the workers' replies to it are stale.
    this.round?.abort();
    if (this.welcome && !this.upstream.ending) this.forwardPause('the relay lost its coordinator; reconnecting');
  }

  private async onStep(msg: StepMsg): Promise<void> {
    const w = this.welcome;
    const table = this.table;
    if (!w || !table || !this.paramsFrame) throw new Error('step before welcome and parameters');
    if (msg.hi > table.streams) throw new Error(`step for streams up to ${msg.hi}, the welcome said ${table.streams}`);
    this.round?.abort();
    const W = w.model.stateWidth;
    const { lo, hi } = msg;
    if (msg.state) {
      // The parent handed these streams over: none of our workers holds their state.
      table.store(lo, decodeTensor(msg.state));
      table.forget(lo, hi);
    }
    const assignment = this.membership.assign(hi - lo, lo);
    if (assignment.length === 0) {
      this.upstream.send({ type: 'capacity', capacity: this.membership.workers, round: msg.round });
      this.toldCapacity = this.membership.workers;
      return;
    }
    const link = this.link;
    const resetAll = msg.fresh.length > 0 && msg.fresh.every((f) => f === 1);
    const id = ++this.localRound;
    // Well within the parent's deadline: late workers are left out, the relay itself is not.
    const deadlineMs = Math.max(1, Math.floor(msg.deadlineMs ? Math.min(this.times.deadlineMs(), 0.75 * msg.deadlineMs) : this.times.deadlineMs()));
    const expected = new Map<string, Expected>();
    // Local SGD (--sync-every K): K inner steps a round; each further step's row starts are laid out like `starts`.
    const steps = 1 + (msg.local?.resets.length ?? 0);
    // The welcome does not say --sync-every: a local SGD round's replies carry its inner steps' tokens.
    this.limits.maxTokenCount = table.streams * w.model.numSteps * steps;
    for (const { member, lo: a, hi: b } of assignment) {
      const { fresh, state } = table.handOver(member.id, a, b, resetAll);
      const local = msg.local ? { ...msg.local, starts: sliceSteps(msg.local.starts, steps - 1, hi - lo, a - lo, b - lo) } : undefined;
      const step = encode({ type: 'step', round: id, paramsVersion: msg.paramsVersion, lo: a, hi: b, starts: msg.starts.slice(a - lo, b - lo), fresh, ...(state ? { state: encodeTensor(state, 'float32') } : {}), ...(local ? { local } : {}), ...(member.relay ? { deadlineMs } : {}) });
      member.peer.send(this.paramsFrame);
      member.peer.send(step);
      expected.set(member.id, { lo: a, hi: b, tokenCount: (b - a) * w.model.numSteps * steps, stateLength: (b - a) * W, partial: member.relay });
    }
    if (this.acc?.paramCount !== w.model.paramCount) this.acc = new GradAccumulator(w.model.paramCount);
    const round = new Round(id, expected, w.model.paramCount, deadlineMs, undefined, this.acc);
    this.round = round;
    for (const mid of expected.keys()) if (!this.membership.get(mid)) round.drop(mid);
    const o = await round.done;
    // A round the parent superseded (a newer step arrived) shares its reused sum with the newer round: no reply.
    const superseded = this.round !== round;
    this.lastRound = round;
    if (!superseded) this.round = null;
    this.finish(o, msg, superseded ? -1 : link);
    this.tellCapacity();
  }

  private finish(o: RoundOutcome, msg: StepMsg, link: number): void {
    const table = this.table!;
    const w = this.welcome!;
    for (const id of o.late) {
      const m = this.membership.get(id);
      table.release(id);
      if (!m || link !== this.link) continue;
      this.opts.log(`worker ${m.slot} missed the relay's round deadline (${Math.round(o.durationMs)} ms); dropping it`);
      m.peer.close(CloseCodes.HEARTBEAT_TIMEOUT, ErrorCodes.ERR_ROUND_TIMEOUT);
    }
    for (const id of o.gone) table.release(id);
    for (const [id, { lo, state }] of o.states) {
      table.store(lo, state);
      const m = this.membership.get(id);
      if (m) {
        m.rounds++;
        const ms = o.computeMs.get(id);
        if (ms !== undefined) recordStepTime(m, ms);
      }
    }
    if (link !== this.link) return;
    this.times.record(o.durationMs);
    if (o.tokens === 0) {
      this.upstream.send({ type: 'capacity', capacity: this.membership.workers, round: msg.round });
      this.toldCapacity = this.membership.workers;
      return;
    }
    // Streams whose worker left mid-round return the state they started with, as the parent would keep it.
    const state = table.state.subarray(msg.lo * w.model.stateWidth, msg.hi * w.model.stateWidth);
    const reply = this.replies!.build({ round: msg.round, tokenCount: o.tokens, lossSum: o.lossSum, computeMs: o.durationMs, sum: o.gradSum, state });
    this.upstream.sendFrame(reply.bytes, reply.release);
    this.rounds++;
    this.opts.metrics?.roundDone(o.durationMs / 1000, o.tokens);
  }
}
