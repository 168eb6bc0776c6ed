/**
 * The worker's connection loop: connect, hello, then answer each step with the
 * gradient sum of its shard; reconnect with exponential backoff when the
 * connection is lost. The compute (ShardComputer) never sees the socket.
 */
import { CloseCodes, finalRefusalFor, type ErrorCode } from '../shared/errors.js';
import { decodeCoordinatorMessage, encode, ReusedFrames, tokensFromWire, PROTOCOL_VERSION, type CoordinatorMessage, type LocalSteps, type StepMsg, type WorkerInfo } from '../shared/wire/protocol.js';
import { decodeTensor, encodeTensor, type WireDtype } from '../shared/wire/tensor.js';
import { encodeGradient, ShardComputer, type ShardResult } from './shard-compute.js';
import { ReplyFrames } from '../shared/wire/reply-frame.js';
import { createModel } from '../shared/model/registry.js';
import type { WorkerMetrics } from './metrics.js';
import { AddressRotation, reconnectPlan } from '../shared/addresses.js';
import type { SocketFactory, WorkerSocket } from './socket.js';

export interface WorkerClientOptions {
  /** A coordinator's or a relay's URL, or several separated by commas: a failed connection moves on to the next. */
  url: string;
  token: string;
  info: WorkerInfo;
  /** The WebSocket: Node's `ws` (node-socket.ts) or a browser's (src/browser/browser-socket.ts). */
  sockets: SocketFactory;
  /** Retries after failed attempts in a row before giving up; 0 = no limit. */
  maxRetries: number;
  /** Seconds without a coordinator before giving up; 0 = never. */
  reconnectGrace?: number;
  /** For tests: the clock. */
  now?: () => number;
  log: (line: string) => void;
  metrics?: Pick<WorkerMetrics, 'setReady' | 'observeStep'>;
}

/**
 * done: the run finished (close 4012). stopped: this worker was told to stop (a signal).
 * rejected: refused for good (token, version, not a coordinator, a frame too large).
 * gave-up: no coordinator for --reconnect-grace seconds or --max-retries attempts.
 * A coordinator that goes away (close 4011: a restart, a rollout, a drain) is not an exit: the worker reconnects.
 */
export type WorkerExit = 'done' | 'rejected' | 'gave-up' | 'stopped';

/** setImmediate where there is one (Node); a zero timeout in a browser. */
const afterPendingReads: (f: () => void) => void = typeof setImmediate === 'function' ? (f) => setImmediate(f) : (f) => setTimeout(f, 0);

export class WorkerClient {
  private ws: WorkerSocket | null = null;
  private computer: ShardComputer | null = null;
  private wireDtype: WireDtype = 'float32';
  /** Whether the coordinator takes row-sparse blocks as rows (its welcome says so). */
  private sparseRows = false;
  private stopped = false;
  private exit: WorkerExit | null = null;
  private wakeSleep: (() => void) | null = null;
  workerId: string | null = null;
  rounds = 0;
  /** The parameters, decoded into the same array every round. */
  private paramsBuffer: Float32Array | null = null;
  /** The gradient's frame, reused from round to round once the socket has written it out. */
  private readonly gradFrames = new ReusedFrames();
  /** The same frame built in place: a dense float32 gradient is written there by the step itself. */
  private replyFrames: ReplyFrames | null = null;
  /** Why the worker stopped trying, for the exit message, and its code when it was refused. */
  reason = '';
  refusal: ErrorCode | null = null;
  private lastHeard = 0;
  private heartbeatMs = 0;

  private readonly addresses: AddressRotation;

  constructor(private readonly opts: WorkerClientOptions) {
    this.addresses = new AddressRotation(opts.url);
  }

  async run(): Promise<WorkerExit> {
    const now = this.opts.now ?? Date.now;
    const graceMs = (this.opts.reconnectGrace ?? 0) * 1000;
    let failures = 0;
    let since = now();
    while (!this.stopped) {
      const welcomed = await this.connectOnce();
      if (this.exit) return this.exit;
      if (this.stopped) return 'stopped';
      if (welcomed) since = now();
      failures = welcomed ? 1 : failures + 1;
      this.addresses.advance();
      const plan = reconnectPlan({ failures, maxRetries: this.opts.maxRetries, awayMs: now() - since, graceMs, addresses: this.addresses });
      if ('giveUp' in plan) {
        this.reason = plan.giveUp;
        this.opts.log(`giving up: ${this.reason}`);
        return 'gave-up';
      }
      const delay = plan.delayMs;
      this.opts.log(`reconnecting to ${this.addresses.current} in ${(delay / 1000).toFixed(1)} s`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, delay);
        this.wakeSleep = () => {
          clearTimeout(t);
          r();
        };
      });
      this.wakeSleep = null;
    }
    return this.exit ?? 'stopped';
  }

  /** Leave cleanly: tell the coordinator, close, stop reconnecting. */
  stop(reason = 'worker stopping'): void {
    this.stopped = true;
    this.exit ??= 'stopped';
    this.wakeSleep?.();
    const ws = this.ws;
    if (ws && ws.isOpen) {
      ws.send(encode({ type: 'leave', reason }));
      ws.close(CloseCodes.NORMAL, 'leaving');
    }
  }

  /** One connection's life. Resolves true if it got a welcome. */
  private connectOnce(): Promise<boolean> {
    return new Promise((resolve) => {
      let welcomed = false;
      let fatal: { code: ErrorCode; message: string } | null = null;
      let watchdog: ReturnType<typeof setInterval> | undefined;
      const heard = () => {
        this.lastHeard = performance.now();
      };
      const ws: WorkerSocket = this.opts.sockets.open(this.addresses.current, {
        onFatal: (code, message) => {
          fatal ??= { code, message };
        },
        onAlive: heard,
        onOpen: () => {
          heard();
          ws.send(encode({ type: 'hello', version: PROTOCOL_VERSION, token: this.opts.token, info: this.opts.info }));
        },
        onMessage: (data) => {
          heard();
          const v = decodeCoordinatorMessage(data, this.computer ? { paramCount: this.computer.paramCount } : undefined);
          if (!v.ok) {
            this.opts.log(`bad message from coordinator: ${v.code}: ${v.message}`);
            ws.close(CloseCodes.BAD_MESSAGE, v.code);
            return;
          }
          try {
            if (v.msg.type === 'welcome') welcomed = true;
            this.onMessage(ws, v.msg);
          } catch (e) {
            this.opts.log(`cannot handle '${v.msg.type}': ${(e as Error).message}`);
            ws.close(CloseCodes.BAD_MESSAGE, 'worker error');
          }
        },
        onError: (message) => {
          if (!fatal) this.opts.log(`connection error: ${message}`);
        },
        onClose: (code, reason) => {
          clearInterval(watchdog);
          this.ws = null;
          this.opts.metrics?.setReady(false);
          this.computer?.reset();
          if (fatal) {
            this.reason = fatal.message;
            this.refusal = fatal.code;
            this.exit ??= 'rejected';
          } else if (code === CloseCodes.TRAINING_DONE) this.exit ??= 'done';
          else if (code === CloseCodes.SHUTTING_DOWN) {
            if (!this.stopped) this.opts.log(`the coordinator is going away (a restart, a rollout or a drain); reconnecting${this.opts.reconnectGrace ? ` for up to ${this.opts.reconnectGrace} s` : ''}`);
          } else if (finalRefusalFor(code)) {
            this.reason = `refused by the coordinator: ${reason || code}`;
            this.refusal = finalRefusalFor(code);
            this.exit ??= 'rejected';
          } else if (!this.stopped) this.opts.log(`connection closed (${code}${reason ? ` ${reason}` : ''})`);
          resolve(welcomed);
        },
      });
      this.ws = ws;
      watchdog = setInterval(() => this.checkHeartbeat(ws), 1000);
      (watchdog as { unref?: () => void }).unref?.();
    });
  }

  /**
   * The coordinator pings every heartbeatMs; silence for three intervals means it is frozen or the link is
   * half-open. The verdict waits for setImmediate, which runs after pending socket reads: a long step of our
   * own delays our timers and the pings alike, and must not count as the coordinator's silence.
   */
  private checkHeartbeat(ws: WorkerSocket): void {
    if (this.heartbeatMs <= 0 || !this.opts.sockets.seesPings || !ws.isOpen) return;
    const limit = 3 * this.heartbeatMs;
    if (performance.now() - this.lastHeard <= limit) return;
    afterPendingReads(() => {
      const silent = performance.now() - this.lastHeard;
      if (silent <= limit || !ws.isOpen) return;
      this.opts.log(`the coordinator has been silent for ${(silent / 1000).toFixed(1)} s (no heartbeat for 3 intervals); reconnecting`);
      ws.terminate();
    });
  }

  /** A local SGD round: its inner steps yield to the event loop, so heartbeats and a close are heard meanwhile. */
  private localRound(ws: WorkerSocket, c: ShardComputer, msg: StepMsg, local: LocalSteps): void {
    const { round } = msg;
    const task = { paramsVersion: msg.paramsVersion, lo: msg.lo, hi: msg.hi, starts: msg.starts, fresh: msg.fresh, state: msg.state ? decodeTensor(msg.state) : undefined };
    c.computeLocal(task, local, () => new Promise((r) => afterPendingReads(() => r()))).then(
      (r) => {
        if (!r || this.ws !== ws || !ws.isOpen) return;
        const frame = this.gradFrames.encode({
          type: 'grads',
          round,
          tokenCount: r.tokenCount,
          lossSum: r.lossSum,
          computeMs: r.computeMs,
          grads: encodeTensor(r.grad, this.wireDtype),
          state: encodeTensor(r.state, 'float32'),
        });
        ws.send(frame.bytes, frame.sent);
        c.releaseRetired();
        this.rounds++;
        // The worker's step metrics count inner steps, each the round's mean.
        const n = 1 + local.resets.length;
        for (let k = 0; k < n; k++) this.opts.metrics?.observeStep(r.computeMs / 1000 / n, r.tokenCount / n);
      },
      (e: unknown) => {
        this.opts.log(`cannot handle 'step': ${(e as Error).message}`);
        ws.close(CloseCodes.BAD_MESSAGE, 'worker error');
      },
    );
  }

  private onMessage(ws: WorkerSocket, msg: CoordinatorMessage): void {
    switch (msg.type) {
      case 'welcome': {
        this.workerId = msg.workerId;
        this.wireDtype = msg.wireDtype;
        this.sparseRows = msg.sparseRows === true;
        this.heartbeatMs = msg.heartbeatMs;
        const tokens = tokensFromWire(msg.tokens, msg.tokenWidth, msg.model.vocabSize);
        this.computer?.dispose();
        const model = createModel(msg.model.name, msg.model.vocabSize, msg.model.hyper);
        if (model.paramCount !== msg.model.paramCount || model.stateWidth !== msg.model.stateWidth) {
          throw new Error(`this worker builds ${msg.model.name} with ${model.paramCount} parameters and state width ${model.stateWidth}, the coordinator says ${msg.model.paramCount} and ${msg.model.stateWidth}: the two run different versions of the model`);
        }
        this.computer = new ShardComputer(model, msg.model.numSteps, tokens);
        this.replyFrames = new ReplyFrames(msg.wireDtype, model.paramCount, 0);
        this.opts.metrics?.setReady(true);
        this.opts.log(`joined as ${msg.workerId.slice(0, 8)}: model ${model.summary}, ${tokens.length} tokens`);
        return;
      }
      case 'params':
        // Into the same array every round (no megabyte allocated per round): the computer builds its step
        // tensors from it at once, and what keeps it longer (a local SGD round) copies it as it starts.
        if (this.paramsBuffer?.length !== msg.params.length) this.paramsBuffer = new Float32Array(msg.params.length);
        this.computer!.setParams(msg.version, decodeTensor(msg.params, this.paramsBuffer));
        return;
      case 'step': {
        const c = this.computer;
        if (!c) throw new Error('step before welcome');
        if (msg.local) {
          this.localRound(ws, c, msg, msg.local);
          return;
        }
        // The step writes its gradient into the reply's frame where it can (float32 on the wire).
        const slot = this.replyFrames?.claim((msg.hi - msg.lo) * c.model.stateWidth) ?? null;
        let r: ShardResult;
        try {
          r = c.compute(
            {
              paramsVersion: msg.paramsVersion,
              lo: msg.lo,
              hi: msg.hi,
              starts: msg.starts,
              fresh: msg.fresh,
              state: msg.state ? decodeTensor(msg.state) : undefined,
            },
            slot?.grad,
          );
        } catch (e) {
          slot?.release();
          throw e;
        }
        const gradient = encodeGradient(c.model, r.grad, r.inputs ?? new Int32Array(0), this.wireDtype, this.sparseRows && r.inputs !== undefined);
        let frame: { bytes: Uint8Array; sent: () => void };
        if (slot && !gradient.rows) {
          const built = slot.seal({ round: msg.round, tokenCount: r.tokenCount, lossSum: r.lossSum, computeMs: r.computeMs, grad: r.grad, state: r.state });
          frame = { bytes: built.bytes, sent: built.release };
        } else {
          frame = this.gradFrames.encode({
            type: 'grads',
            round: msg.round,
            tokenCount: r.tokenCount,
            lossSum: r.lossSum,
            computeMs: r.computeMs,
            ...gradient,
            state: encodeTensor(r.state, 'float32'),
          });
          // Sparse rows were copied out of the claimed frame, which is free again.
          slot?.release();
        }
        ws.send(frame.bytes, frame.sent);
        c.releaseRetired();
        this.rounds++;
        this.opts.metrics?.observeStep(r.computeMs / 1000, r.tokenCount);
        return;
      }
      case 'pause':
        this.opts.log(`paused by the coordinator: ${msg.reason}`);
        return;
      case 'bye':
        // 'shutdown' is the coordinator going away for now: the close that follows makes us reconnect.
        if (msg.reason !== 'shutdown') this.exit ??= msg.reason === 'done' ? 'done' : 'rejected';
        this.opts.log(`coordinator says bye (${msg.reason}): ${msg.message}`);
        return;
      case 'error':
        this.opts.log(`coordinator error ${msg.code}: ${msg.message}`);
        return;
    }
  }
}
