/**
 * A relay's connection to its parent (a coordinator or another relay): the same
 * handshake, heartbeat watchdog, backoff and address rotation as a worker's
 * (worker/worker-client.ts), but the messages go to the relay instead of a
 * shard compute. The hello carries the relay's capacity (the workers under it).
 */
import WebSocket from 'ws';
import fs from 'node:fs';
import { CloseCodes, finalRefusalFor, type ErrorCode } from '../shared/errors.js';
import { AddressRotation, reconnectPlan } from '../shared/addresses.js';
import { decodeCoordinatorMessage, encode, PROTOCOL_VERSION, WORKER_MAX_PAYLOAD, type CoordinatorMessage, type ParamsMsg, type StepMsg, type WelcomeMsg, type WorkerInfo, type WorkerMessage } from '../shared/wire/protocol.js';

export interface UpstreamHandlers {
  /** Welcomed by the parent (again, after a reconnect). */
  onWelcome(msg: WelcomeMsg): void;
  /** The parameters, with the frame's bytes: forwarded to the workers as they came. */
  onParams(msg: ParamsMsg, frame: Uint8Array): void;
  onStep(msg: StepMsg): void;
  onPause(reason: string): void;
  /** The connection ended (whatever the cause); a reconnect follows unless run() returns. */
  onLost(): void;
}

export interface UpstreamOptions {
  /** One URL or several separated by commas. */
  url: string;
  token: string;
  info: WorkerInfo;
  ca?: string;
  maxRetries: number;
  reconnectGrace: number;
  log: (line: string) => void;
  /** The relay's capacity now, for each hello. */
  capacity: () => number;
}

/** As WorkerExit: done (the run finished), rejected (refused for good), gave-up, stopped (a signal). */
export type UpstreamExit = 'done' | 'rejected' | 'gave-up' | 'stopped';

export class Upstream {
  private ws: WebSocket | null = null;
  private stopped = false;
  private exit: UpstreamExit | null = null;
  private wakeSleep: (() => void) | null = null;
  private readonly addresses: AddressRotation;
  private lastHeard = 0;
  private heartbeatMs = 0;
  private paramCount: number | undefined;
  reason = '';
  refusal: ErrorCode | null = null;

  constructor(
    private readonly opts: UpstreamOptions,
    private readonly handlers: UpstreamHandlers,
  ) {
    this.addresses = new AddressRotation(opts.url);
  }

  /** The connection loop is ending (run done, refused, stopped): no reconnect follows. */
  get ending(): boolean {
    return this.exit !== null || this.stopped;
  }

  /** Welcomed and connected now. */
  get connected(): boolean {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.heartbeatMs > 0;
  }

  /** Sends if connected; a message for a connection that is gone is dropped (the parent dropped us too). */
  send(msg: WorkerMessage): void {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(encode(msg));
  }

  /** Sends a frame the caller reuses: `written` runs once the socket has written it out, failed, or was not open. */
  sendFrame(bytes: Uint8Array, written: () => void): void {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return written();
    this.ws.send(bytes, () => written());
  }

  async run(): Promise<UpstreamExit> {
    const graceMs = this.opts.reconnectGrace * 1000;
    let failures = 0;
    let since = Date.now();
    while (!this.stopped) {
      const welcomed = await this.connectOnce();
      this.handlers.onLost();
      if (this.exit) return this.exit;
      if (this.stopped) return 'stopped';
      if (welcomed) since = Date.now();
      failures = welcomed ? 1 : failures + 1;
      this.addresses.advance();
      const plan = reconnectPlan({ failures, maxRetries: this.opts.maxRetries, awayMs: Date.now() - since, graceMs, addresses: this.addresses });
      if ('giveUp' in plan) {
        this.reason = plan.giveUp;
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

  /** Leave cleanly and stop reconnecting. */
  stop(reason = 'relay stopping'): void {
    this.stopped = true;
    this.exit ??= 'stopped';
    this.wakeSleep?.();
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(encode({ type: 'leave', reason }));
      ws.close(CloseCodes.NORMAL, 'leaving');
      setTimeout(() => ws.terminate(), 1000).unref();
    } else ws?.terminate();
  }

  private connectOnce(): Promise<boolean> {
    return new Promise((resolve) => {
      let welcomed = false;
      const url = this.addresses.current;
      const ws = new WebSocket(url, {
        maxPayload: WORKER_MAX_PAYLOAD,
        perMessageDeflate: false,
        handshakeTimeout: 10_000,
        // As the worker's (worker-client.ts): the relay's frames carry its own sums, no masking needed.
        generateMask: (mask: Buffer) => void mask.fill(0),
        ...(this.opts.ca ? { ca: fs.readFileSync(this.opts.ca) } : {}),
      });
      this.ws = ws;
      this.heartbeatMs = 0;
      ws.binaryType = 'nodebuffer';
      let fatal: { code: ErrorCode; message: string } | null = null;
      const watchdog = setInterval(() => this.checkHeartbeat(ws), 500);
      watchdog.unref();
      ws.on('unexpected-response', (_req, res) => {
        const status = res.statusCode ?? 0;
        if (status < 502 || status > 504) fatal = { code: 'ERR_NOT_A_COORDINATOR', message: `${url} answered HTTP ${status} instead of a WebSocket upgrade: not a dptrain coordinator or relay` };
        res.resume();
        ws.terminate();
      });
      ws.on('ping', () => (this.lastHeard = performance.now()));
      ws.on('open', () => {
        this.lastHeard = performance.now();
        ws.send(encode({ type: 'hello', version: PROTOCOL_VERSION, token: this.opts.token, info: this.opts.info, capacity: this.opts.capacity() }));
      });
      ws.on('message', (data: Buffer, isBinary) => {
        this.lastHeard = performance.now();
        if (!isBinary) return;
        const v = decodeCoordinatorMessage(data, this.paramCount !== undefined ? { paramCount: this.paramCount } : undefined);
        if (!v.ok) {
          this.opts.log(`bad message from the coordinator: ${v.code}: ${v.message}`);
          ws.close(CloseCodes.BAD_MESSAGE, v.code);
          return;
        }
        try {
          if (v.msg.type === 'welcome') welcomed = true;
          this.onMessage(v.msg, data);
        } catch (e) {
          this.opts.log(`cannot handle '${v.msg.type}': ${(e as Error).message}`);
          ws.close(CloseCodes.BAD_MESSAGE, 'relay error');
        }
      });
      ws.on('error', (e: Error) => {
        if (!fatal) this.opts.log(`upstream connection error: ${e.message}`);
      });
      ws.on('close', (code, reasonBuf) => {
        clearInterval(watchdog);
        this.ws = null;
        this.heartbeatMs = 0;
        const reason = reasonBuf.toString();
        if (fatal) {
          this.reason = fatal.message;
          this.refusal = fatal.code;
          this.exit ??= 'rejected';
        } else if (code === CloseCodes.TRAINING_DONE) this.exit ??= 'done';
        else if (finalRefusalFor(code)) {
          this.reason = `refused by the coordinator: ${reason || code}`;
          this.refusal = finalRefusalFor(code);
          this.exit ??= 'rejected';
        } else if (!this.stopped) this.opts.log(`upstream connection closed (${code}${reason ? ` ${reason}` : ''})`);
        resolve(welcomed);
      });
    });
  }

  /** Silence for three of the parent's heartbeat intervals: a frozen parent or a half-open link. */
  private checkHeartbeat(ws: WebSocket): void {
    if (this.heartbeatMs <= 0 || ws.readyState !== WebSocket.OPEN) return;
    const limit = 3 * this.heartbeatMs;
    if (performance.now() - this.lastHeard <= limit) return;
    setImmediate(() => {
      const silent = performance.now() - this.lastHeard;
      if (silent <= limit || ws.readyState !== WebSocket.OPEN) return;
      this.opts.log(`the coordinator has been silent for ${(silent / 1000).toFixed(1)} s (no heartbeat for 3 intervals); reconnecting`);
      ws.terminate();
    });
  }

  private onMessage(msg: CoordinatorMessage, frame: Uint8Array): void {
    switch (msg.type) {
      case 'welcome':
        this.heartbeatMs = msg.heartbeatMs;
        this.paramCount = msg.model.paramCount;
        this.handlers.onWelcome(msg);
        return;
      case 'params':
        this.handlers.onParams(msg, frame);
        return;
      case 'step':
        this.handlers.onStep(msg);
        return;
      case 'pause':
        this.handlers.onPause(msg.reason);
        return;
      case 'bye':
        if (msg.reason !== 'shutdown') this.exit ??= msg.reason === 'done' ? 'done' : 'rejected';
        this.opts.log(`coordinator says bye (${msg.reason}): ${msg.message}`);
        return;
      case 'error':
        this.opts.log(`coordinator error ${msg.code}: ${msg.message}`);
        return;
    }
  }
}
