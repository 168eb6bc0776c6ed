/**
 * The coordinator's WebSocket endpoint: handshake, authentication, heartbeats
 * and limits. It turns frames into validated messages and hands them on; it
 * knows nothing of tensors or training. Nothing here throws inside a socket
 * handler: a bad frame gets an error code and, where it must, a close code.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import { listenOn } from '../shared/listen.js';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import { CloseCodes, closeCodeFor, ErrorCodes, type ErrorCode } from '../shared/errors.js';
import {
  decodeWorkerMessage,
  encode,
  type HelloMsg,
  type WorkerMessage,
  type WorkerMessageLimits,
} from '../shared/wire/protocol.js';
import type { LeaveReason, Peer } from './membership.js';
import { FrameScratch } from '../shared/frame-scratch.js';
import type { FrameSlots } from '../shared/direct-reads.js';

export interface WsServerOptions {
  host: string;
  port: number;
  tls?: { certFile: string; keyFile: string };
  token: string;
  maxPayload: number;
  /** All sockets, authenticated or not. */
  maxConnections: number;
  helloTimeoutMs: number;
  heartbeatMs: number;
  /** A peer whose unsent bytes exceed this is cut off (it stopped reading). */
  maxBufferedBytes: number;
  limits: WorkerMessageLimits;
  log: (line: string) => void;
  /** Where a large frame of n bytes may be received (see FrameScratch); absent or null: the server's own buffer. */
  receiveBuffer?: (n: number) => Uint8Array | null;
  /** Where a connection's socket may read a large frame (direct-reads.ts); absent: the connection's own buffer. */
  receiveSlots?: FrameSlots;
}

export type HelloResult = { ok: true; id: string } | { ok: false; code: ErrorCode; message: string };

export interface WsHandlers {
  /** Authenticated hello: register the worker and send its welcome. */
  onHello(msg: HelloMsg, peer: Peer, remote: string): HelloResult;
  /**
   * The message's byte fields (a gradient, a state) are views into a receive
   * buffer the next large frame overwrites (frame-scratch.ts): use or copy them
   * before returning.
   */
  onMessage(id: string, msg: WorkerMessage, bytes: number): void;
  onClose(id: string, reason: LeaveReason): void;
  onReject(code: ErrorCode, remote: string): void;
}

interface Conn {
  ws: WebSocket;
  remote: string;
  id: string | null;
  lastSeen: number;
  helloTimer: NodeJS.Timeout | null;
  /** Why we closed it, when we did. */
  reason: LeaveReason | null;
  /** handlers.onClose has run for it. */
  gone: boolean;
  /** Cuts off a peer that does not answer our close frame. */
  killTimer: NodeJS.Timeout | null;
}

function sha256(s: string): Buffer {
  return crypto.createHash('sha256').update(s, 'utf8').digest();
}

/** Constant-time: digests have equal length whatever the inputs. */
export function tokensEqual(given: string, expected: string): boolean {
  return crypto.timingSafeEqual(sha256(given), sha256(expected));
}

export class WsServer {
  private http: http.Server | https.Server;
  private wss: WebSocketServer;
  private conns = new Set<Conn>();
  private heartbeat: NodeJS.Timeout | null = null;
  private lastBeat = performance.now();
  private closing = false;
  /** Large frames of every connection are received into this one buffer. */
  readonly scratch: FrameScratch;

  constructor(
    private readonly opts: WsServerOptions,
    private readonly handlers: WsHandlers,
  ) {
    this.scratch = new FrameScratch(opts.receiveBuffer, opts.receiveSlots);
    this.http = opts.tls
      ? https.createServer({ cert: fs.readFileSync(opts.tls.certFile), key: fs.readFileSync(opts.tls.keyFile), handshakeTimeout: opts.helloTimeoutMs })
      : http.createServer();
    // Until the WebSocket upgrade (which resets the socket's timeout) a connection gets
    // the hello timeout too: Node's HTTP server would hold a socket that never sends a
    // byte open for good, outside the connection limit, which counts WebSockets only.
    this.http.on(opts.tls ? 'secureConnection' : 'connection', (socket: Socket) => {
      socket.setTimeout(opts.helloTimeoutMs, () => socket.destroy());
    });
    this.http.on('request', (_req, res) => {
      // No keep-alive: plain HTTP has nothing more to say here, and an idle kept-alive socket would outlive the hello timeout.
      res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' }).end('dptrain coordinator: connect with a WebSocket (worker join)\n');
    });
    this.wss = new WebSocketServer({ server: this.http, maxPayload: opts.maxPayload, perMessageDeflate: false });
    this.wss.on('connection', (ws, req) => this.onConnection(ws, `${req.socket.remoteAddress}:${req.socket.remotePort}`));
    this.wss.on('error', (e) => opts.log(`ws server error: ${e.message}`));
  }

  get scheme(): 'ws' | 'wss' {
    return this.opts.tls ? 'wss' : 'ws';
  }

  async listen(): Promise<number> {
    const port = await listenOn(this.http, this.opts.host, this.opts.port, { port: '--port', host: '--host' });
    this.lastBeat = performance.now();
    this.heartbeat = setInterval(() => this.beat(), this.opts.heartbeatMs);
    return port;
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  private onConnection(ws: WebSocket, remote: string): void {
    const conn: Conn = { ws, remote, id: null, lastSeen: performance.now(), helloTimer: null, reason: null, gone: false, killTimer: null };
    if (this.closing) {
      ws.close(CloseCodes.SHUTTING_DOWN, ErrorCodes.ERR_SHUTTING_DOWN);
      return;
    }
    if (this.conns.size >= this.opts.maxConnections) {
      this.reject(conn, ErrorCodes.ERR_TOO_MANY_CONNECTIONS, `connection limit (${this.opts.maxConnections}) reached`);
      return;
    }
    this.conns.add(conn);
    this.scratch.attach(ws);
    conn.helloTimer = setTimeout(() => {
      this.reject(conn, ErrorCodes.ERR_HELLO_TIMEOUT, `no hello within ${this.opts.helloTimeoutMs} ms`);
    }, this.opts.helloTimeoutMs);
    ws.on('message', (data, isBinary) => this.onFrame(conn, data, isBinary));
    ws.on('pong', () => {
      conn.lastSeen = performance.now();
    });
    ws.on('error', (e) => {
      // ws closes the socket itself after an error (e.g. 1009 over maxPayload); note why.
      if ((e as { code?: string }).code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
        conn.reason ??= 'protocol';
        this.handlers.onReject(ErrorCodes.ERR_PAYLOAD_TOO_LARGE, remote);
      }
    });
    ws.on('close', () => this.onSocketClose(conn));
  }

  private onFrame(conn: Conn, data: RawData, isBinary: boolean): void {
    try {
      conn.lastSeen = performance.now();
      if (conn.reason !== null) {
        // Closing: nothing more is applied. A gradient from a worker dropped at a
        // round deadline is the late reply the README promises to count.
        if (conn.reason === 'timeout' && conn.id !== null && isBinary) {
          const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
          const v = decodeWorkerMessage(bytes, this.opts.limits);
          if (v.ok && v.msg.type === 'grads') this.handlers.onReject(ErrorCodes.ERR_STALE_ROUND, conn.remote);
        }
        return;
      }
      if (!isBinary) {
        this.reject(conn, ErrorCodes.ERR_MALFORMED, 'text frames are not part of the protocol');
        return;
      }
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      const v = decodeWorkerMessage(bytes, this.opts.limits);
      if (!v.ok) {
        if (conn.id === null) this.reject(conn, v.code, v.message);
        else this.protocolError(conn, v.code, v.message);
        return;
      }
      const msg = v.msg;
      if (conn.id === null) {
        if (msg.type !== 'hello') {
          this.reject(conn, ErrorCodes.ERR_NOT_AUTHENTICATED, `'${msg.type}' before hello`);
          return;
        }
        if (!tokensEqual(msg.token, this.opts.token)) {
          this.reject(conn, ErrorCodes.ERR_BAD_TOKEN, 'wrong token');
          return;
        }
        clearTimeout(conn.helloTimer!);
        conn.helloTimer = null;
        const peer = this.peerOf(conn);
        const r = this.handlers.onHello(msg, peer, conn.remote);
        if (!r.ok) {
          this.reject(conn, r.code, r.message);
          return;
        }
        conn.id = r.id;
        return;
      }
      if (msg.type === 'hello') {
        this.protocolError(conn, ErrorCodes.ERR_BAD_MESSAGE, 'second hello on one connection');
        return;
      }
      if (msg.type === 'leave') {
        // Gone now: a worker that says it is leaving must not be given streams
        // while it gets round to closing its socket.
        conn.reason = 'leave';
        this.handlers.onMessage(conn.id, msg, bytes.byteLength);
        this.closeConn(conn, CloseCodes.NORMAL, 'leaving');
        return;
      }
      this.handlers.onMessage(conn.id, msg, bytes.byteLength);
    } catch (e) {
      this.opts.log(`internal error handling a frame from ${conn.remote}: ${(e as Error).stack ?? e}`);
      this.protocolError(conn, ErrorCodes.ERR_BAD_MESSAGE, 'message could not be handled');
    }
  }

  private peerOf(conn: Conn): Peer {
    return {
      send: (bytes, sent) => {
        if (conn.ws.readyState !== conn.ws.OPEN) return sent?.();
        if (conn.ws.bufferedAmount > this.opts.maxBufferedBytes) {
          this.protocolError(conn, ErrorCodes.ERR_SLOW_CONSUMER, `peer is not reading (${conn.ws.bufferedAmount} bytes queued)`, 'timeout');
          return sent?.();
        }
        // ws calls back when the socket has written the frame, or with an error when it never will.
        if (sent) conn.ws.send(bytes, () => sent());
        else conn.ws.send(bytes);
      },
      close: (code, reason) => {
        conn.reason ??=
          code === CloseCodes.SHUTTING_DOWN || code === CloseCodes.TRAINING_DONE ? 'shutdown' : code === CloseCodes.HEARTBEAT_TIMEOUT ? 'timeout' : 'protocol';
        this.closeConn(conn, code, reason);
      },
      bufferedAmount: () => conn.ws.bufferedAmount,
    };
  }

  /** Refuse a socket: error message, then close with the code's close code. */
  private reject(conn: Conn, code: ErrorCode, message: string): void {
    this.handlers.onReject(code, conn.remote);
    conn.reason ??= 'protocol';
    this.sendError(conn, code, message);
    this.closeConn(conn, closeCodeFor(code), code);
  }

  /** An authenticated worker broke the protocol. Stale or duplicate replies are only answered. */
  protocolError(conn: Conn, code: ErrorCode, message: string, reason: LeaveReason = 'protocol'): void {
    this.handlers.onReject(code, conn.remote);
    this.sendError(conn, code, message);
    conn.reason ??= reason;
    this.closeConn(conn, closeCodeFor(code), code);
  }

  private sendError(conn: Conn, code: ErrorCode, message: string): void {
    if (conn.ws.readyState === conn.ws.OPEN) conn.ws.send(encode({ type: 'error', code, message: message.slice(0, 1000) }));
  }

  private closeConn(conn: Conn, code: number, reason: string): void {
    if (conn.helloTimer) clearTimeout(conn.helloTimer);
    conn.helloTimer = null;
    // The worker leaves membership (and the round in flight) now, not when the
    // close handshake ends: a frozen or non-reading peer never answers it, and
    // until the 2 s terminate below it would be handed streams it cannot train.
    this.notifyGone(conn);
    try {
      conn.ws.close(code, reason.slice(0, 120));
    } catch {
      conn.ws.terminate();
    }
    // A peer that never answers the close handshake is cut off. Cleared on close,
    // so a burst of short-lived hostile connections is not kept alive for 2 s each.
    conn.killTimer ??= setTimeout(() => conn.ws.terminate(), 2000).unref();
  }

  private onSocketClose(conn: Conn): void {
    if (conn.helloTimer) clearTimeout(conn.helloTimer);
    if (conn.killTimer) clearTimeout(conn.killTimer);
    this.conns.delete(conn);
    this.notifyGone(conn);
  }

  private notifyGone(conn: Conn): void {
    if (conn.id === null || conn.gone) return;
    conn.gone = true;
    try {
      this.handlers.onClose(conn.id, conn.reason ?? 'disconnect');
    } catch (e) {
      this.opts.log(`internal error on close of ${conn.id}: ${(e as Error).stack ?? e}`);
    }
  }

  /** ws's heartbeat recipe, with a guard: a timer that fired late (the event loop was busy) judges nobody. */
  private beat(): void {
    const now = performance.now();
    const late = now - this.lastBeat > 1.5 * this.opts.heartbeatMs;
    this.lastBeat = now;
    for (const conn of this.conns) {
      if (conn.id === null) continue;
      if (late) conn.lastSeen = Math.max(conn.lastSeen, now - this.opts.heartbeatMs);
      if (now - conn.lastSeen > 2 * this.opts.heartbeatMs) {
        // One that is already being closed was counted under the reason it was closed for.
        if (conn.reason === null) this.handlers.onReject(ErrorCodes.ERR_HEARTBEAT_TIMEOUT, conn.remote);
        conn.reason ??= 'timeout';
        conn.ws.terminate();
        continue;
      }
      try {
        conn.ws.ping();
      } catch {
        // The close handler deals with a dead socket.
      }
    }
  }

  /** Tell every connection to go, then stop listening. */
  async close(code: number = CloseCodes.SHUTTING_DOWN, reason = 'shutting down'): Promise<void> {
    this.closing = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    for (const conn of this.conns) {
      conn.reason ??= 'shutdown';
      this.closeConn(conn, code, reason);
    }
    const deadline = Date.now() + 3000;
    while (this.conns.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const conn of this.conns) conn.ws.terminate();
    await new Promise<void>((r) => this.wss.close(() => r()));
    await new Promise<void>((r) => this.http.close(() => r()));
  }
}
