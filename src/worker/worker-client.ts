/**
 * The worker's connection loop: connect, hello, then answer each step with the
 * gradient sum of its shard; reconnect with exponential backoff when the
 * connection is lost. The compute (ShardComputer) never sees the socket.
 */
import WebSocket from 'ws';
import fs from 'node:fs';
import { CloseCodes } from '../shared/errors.js';
import { decodeCoordinatorMessage, encode, tokensFromWire, PROTOCOL_VERSION, type CoordinatorMessage, type WorkerInfo } from '../shared/protocol.js';
import { decodeTensor, encodeTensor, type WireDtype } from '../shared/wire-tensor.js';
import { ShardComputer } from './shard-compute.js';
import type { WorkerMetrics } from './metrics.js';

export interface WorkerClientOptions {
  url: string;
  token: string;
  info: WorkerInfo;
  /** PEM file of a CA to trust for wss://. */
  ca?: string;
  /** Consecutive failed attempts before giving up; 0 = never. */
  maxRetries: number;
  log: (line: string) => void;
  metrics?: WorkerMetrics;
  /** Largest frame accepted from the coordinator (the welcome carries the corpus). */
  maxPayload?: number;
}

export type WorkerExit = 'done' | 'shutdown' | 'rejected' | 'gave-up' | 'stopped';

const zeroMask = (mask: Buffer): void => {
  mask.fill(0);
};

/** Close codes after which reconnecting cannot help. */
const FATAL = new Set<number>([CloseCodes.BAD_TOKEN, CloseCodes.VERSION_MISMATCH]);

export class WorkerClient {
  private ws: WebSocket | null = null;
  private computer: ShardComputer | null = null;
  private wireDtype: WireDtype = 'float32';
  private stopped = false;
  private exit: WorkerExit | null = null;
  private wakeSleep: (() => void) | null = null;
  workerId: string | null = null;
  rounds = 0;

  constructor(private readonly opts: WorkerClientOptions) {}

  async run(): Promise<WorkerExit> {
    let failures = 0;
    while (!this.stopped) {
      const welcomed = await this.connectOnce();
      if (this.exit) return this.exit;
      if (this.stopped) return 'stopped';
      failures = welcomed ? 1 : failures + 1;
      if (this.opts.maxRetries > 0 && failures > this.opts.maxRetries) {
        this.opts.log(`giving up after ${failures - 1} failed attempts to reach ${this.opts.url}`);
        return 'gave-up';
      }
      const delay = Math.min(30_000, 250 * 2 ** Math.min(failures, 7)) * (0.75 + 0.5 * Math.random());
      this.opts.log(`reconnecting to ${this.opts.url} in ${(delay / 1000).toFixed(1)} s`);
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
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(encode({ type: 'leave', reason }));
      ws.close(CloseCodes.NORMAL, 'leaving');
      setTimeout(() => ws.terminate(), 1000).unref();
    }
  }

  /** One connection's life. Resolves true if it got a welcome. */
  private connectOnce(): Promise<boolean> {
    return new Promise((resolve) => {
      let welcomed = false;
      const ws = new WebSocket(this.opts.url, {
        maxPayload: this.opts.maxPayload ?? 1 << 30,
        perMessageDeflate: false,
        handshakeTimeout: 10_000,
        // A zero masking key: ws then skips masking here and unmasking on the
        // coordinator, a byte-by-byte JavaScript loop over every 1.2 MB gradient
        // on each side without the optional bufferutil (BENCHMARKS.md, part
        // scaling). Masking guards proxies against script-chosen payloads in
        // browsers; a worker's frames carry its own gradients.
        generateMask: zeroMask,
        ...(this.opts.ca ? { ca: fs.readFileSync(this.opts.ca) } : {}),
      });
      this.ws = ws;
      ws.binaryType = 'nodebuffer';
      ws.on('open', () => {
        ws.send(encode({ type: 'hello', version: PROTOCOL_VERSION, token: this.opts.token, info: this.opts.info, ...(this.workerId ? { resumeId: this.workerId } : {}) }));
      });
      ws.on('message', (data: Buffer, isBinary) => {
        if (!isBinary) return;
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
      });
      ws.on('error', (e) => this.opts.log(`connection error: ${e.message}`));
      ws.on('close', (code, reasonBuf) => {
        const reason = reasonBuf.toString();
        this.ws = null;
        this.computer?.reset();
        if (code === CloseCodes.TRAINING_DONE) this.exit ??= 'done';
        else if (code === CloseCodes.SHUTTING_DOWN) this.exit ??= 'shutdown';
        else if (FATAL.has(code)) {
          this.opts.log(`refused by the coordinator: ${reason || code}`);
          this.exit ??= 'rejected';
        } else if (!this.stopped) this.opts.log(`connection closed (${code}${reason ? ` ${reason}` : ''})`);
        resolve(welcomed);
      });
    });
  }

  private onMessage(ws: WebSocket, msg: CoordinatorMessage): void {
    switch (msg.type) {
      case 'welcome': {
        this.workerId = msg.workerId;
        this.wireDtype = msg.wireDtype;
        const tokens = tokensFromWire(msg.tokens, msg.tokenWidth, msg.model.vocabSize);
        this.computer?.dispose();
        this.computer = new ShardComputer({ vocabSize: msg.model.vocabSize, hidden: msg.model.hidden }, msg.model.numSteps, tokens);
        this.opts.log(`joined as ${msg.workerId.slice(0, 8)}: model hidden ${msg.model.hidden}, vocabulary ${msg.model.vocabSize}, ${tokens.length} tokens`);
        return;
      }
      case 'params':
        this.computer!.setParams(msg.version, decodeTensor(msg.params));
        return;
      case 'step': {
        const c = this.computer;
        if (!c) throw new Error('step before welcome');
        const r = c.compute({
          paramsVersion: msg.paramsVersion,
          lo: msg.lo,
          hi: msg.hi,
          starts: msg.starts,
          fresh: msg.fresh,
          state: msg.state ? decodeTensor(msg.state) : undefined,
        });
        ws.send(
          encode({
            type: 'grads',
            round: msg.round,
            tokenCount: r.tokenCount,
            lossSum: r.lossSum,
            computeMs: r.computeMs,
            grads: encodeTensor(r.grad, this.wireDtype),
            state: encodeTensor(r.state, 'float32'),
          }),
        );
        this.rounds++;
        this.opts.metrics?.observeStep(r.computeMs / 1000, r.tokenCount);
        return;
      }
      case 'pause':
        this.opts.log(`paused by the coordinator: ${msg.reason}`);
        return;
      case 'bye':
        this.exit ??= msg.reason === 'done' ? 'done' : msg.reason === 'shutdown' ? 'shutdown' : 'rejected';
        this.opts.log(`coordinator says bye (${msg.reason}): ${msg.message}`);
        return;
      case 'error':
        this.opts.log(`coordinator error ${msg.code}: ${msg.message}`);
        return;
    }
  }
}
