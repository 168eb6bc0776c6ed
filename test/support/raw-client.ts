/**
 * A WebSocket peer that is not our worker: it sends whatever bytes a test
 * gives it and records what the coordinator answers, for hostile-input tests.
 */
import net from 'node:net';
import tls from 'node:tls';
import WebSocket from 'ws';
import { Packr } from 'msgpackr';
import { decode, encode, PROTOCOL_VERSION } from '../../src/shared/wire/protocol.js';
import { TOKEN } from './cluster.js';

export const INFO = { backend: 'cpu', device: 'cpu', host: 'raw-client', pid: 1 };

// The protocol's own settings (plain msgpack), for maps encode() would refuse to build.
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false, encodeUndefinedAsNil: true });

/** Any value as one plain msgpack frame. */
export function pack(value: unknown): Buffer {
  return packr.pack(value);
}

export function helloFrame(token: string = TOKEN, over: Record<string, unknown> = {}): Buffer {
  return pack({ type: 'hello', version: PROTOCOL_VERSION, token, info: INFO, ...over });
}

export interface GradsSpec {
  round: number;
  tokenCount: number;
  length: number;
  lossSum?: number;
  dtype?: string;
  /** Every element (float32). */
  fill?: number;
  /** Raw bytes instead of `length` float32 values of `fill`. */
  data?: Uint8Array;
}

export function gradsFrame(g: GradsSpec): Buffer {
  const data = g.data ?? new Uint8Array(new Float32Array(g.length).fill(g.fill ?? 0).buffer);
  return encode({
    type: 'grads',
    round: g.round,
    tokenCount: g.tokenCount,
    lossSum: g.lossSum ?? 0,
    computeMs: 1,
    grads: { dtype: (g.dtype ?? 'float32') as 'float32', length: g.length, data },
  });
}

export interface Closed {
  code: number;
  reason: string;
}

export class RawClient {
  readonly ws: WebSocket;
  readonly messages: Record<string, unknown>[] = [];
  /** Frames that did not decode (never expected from the coordinator). */
  undecodable = 0;
  closed: Closed | null = null;
  error: Error | null = null;
  readonly opened: Promise<boolean>;
  private readonly closedP: Promise<Closed>;
  private listeners: (() => void)[] = [];

  constructor(url: string, options: WebSocket.ClientOptions = {}) {
    this.ws = new WebSocket(url, { perMessageDeflate: false, ...options });
    this.ws.binaryType = 'nodebuffer';
    this.opened = new Promise((resolve) => {
      this.ws.once('open', () => resolve(true));
      this.ws.once('close', () => resolve(false));
    });
    this.closedP = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closed = { code, reason: reason.toString() };
        resolve(this.closed);
        this.notify();
      });
    });
    this.ws.on('message', (d: Buffer) => {
      try {
        this.messages.push(decode(d) as Record<string, unknown>);
      } catch {
        this.undecodable++;
      }
      this.notify();
    });
    this.ws.on('error', (e) => {
      this.error = e;
    });
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }

  /** Resolves when pred holds (checked on every message and on close), rejects after timeoutMs. */
  until(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!pred()) return false;
        done();
        resolve();
        return true;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`raw client: no ${what} within ${timeoutMs} ms (closed: ${JSON.stringify(this.closed)}, messages: ${this.types().join(',')})`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.listeners = this.listeners.filter((l) => l !== listener);
      };
      const listener = () => void check();
      this.listeners.push(listener);
      check();
    });
  }

  types(): string[] {
    return this.messages.map((m) => String(m.type));
  }

  /** Error codes the coordinator sent. */
  errorCodes(): string[] {
    return this.messages.filter((m) => m.type === 'error').map((m) => String(m.code));
  }

  send(frame: Uint8Array | string): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(frame);
  }

  /** Authenticates and waits for the welcome. */
  async join(timeoutMs = 5000): Promise<Record<string, unknown>> {
    if (!(await this.opened)) throw new Error(`raw client: connection refused (${JSON.stringify(this.closed)})`);
    this.send(helloFrame());
    await this.until(() => this.messages.some((m) => m.type === 'welcome') || this.closed !== null, timeoutMs, 'welcome');
    const w = this.messages.find((m) => m.type === 'welcome');
    if (!w) throw new Error(`raw client: closed before welcome (${JSON.stringify(this.closed)}, errors ${this.errorCodes().join(',')})`);
    return w;
  }

  waitClose(timeoutMs: number): Promise<Closed> {
    return Promise.race([
      this.closedP,
      new Promise<Closed>((_, reject) => {
        const t = setTimeout(() => reject(new Error(`raw client: not closed within ${timeoutMs} ms (messages: ${this.types().join(',')})`)), timeoutMs);
        void this.closedP.then(() => clearTimeout(t));
      }),
    ]);
  }

  /**
   * Resolves once the coordinator has handled every frame sent so far: it answers
   * a ping only after the frames before it, and not at all once it has closed.
   */
  barrier(timeoutMs = 5000): Promise<'pong' | 'closed'> {
    if (this.ws.readyState !== WebSocket.OPEN) return this.waitClose(timeoutMs).then(() => 'closed');
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`raw client: no pong or close within ${timeoutMs} ms`));
      }, timeoutMs);
      const onPong = () => {
        cleanup();
        resolve('pong');
      };
      const onClose = () => {
        cleanup();
        resolve('closed');
      };
      const cleanup = () => {
        clearTimeout(timer);
        this.ws.off('pong', onPong);
        this.ws.off('close', onClose);
      };
      this.ws.on('pong', onPong);
      this.ws.on('close', onClose);
      try {
        this.ws.ping();
      } catch {
        onClose();
      }
    });
  }

  /** Stop reading: the coordinator's writes pile up in the kernel, then in its send buffer. */
  pauseReading(): void {
    (this.ws as unknown as { _socket: { pause(): void } })._socket.pause();
  }

  close(): void {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
  }
}

/**
 * Opens a TCP (or TLS) connection, optionally writes some bytes, then says
 * nothing more. Resolves with how long the coordinator took to close it, or
 * Infinity if it was still open after giveUpMs.
 */
export function tcpIdle(port: number, options: { data?: string; tls?: tls.ConnectionOptions; giveUpMs: number }): Promise<number> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const onConnect = () => {
      if (options.data !== undefined) s.write(options.data);
    };
    const s: net.Socket = options.tls ? tls.connect({ port, host: '127.0.0.1', ...options.tls }, onConnect) : net.connect(port, '127.0.0.1', onConnect);
    const timer = setTimeout(() => {
      s.destroy();
      resolve(Infinity);
    }, options.giveUpMs);
    s.on('error', () => {});
    s.on('data', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve(performance.now() - t0);
    });
  });
}
