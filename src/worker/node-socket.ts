/** The worker's WebSocket in Node: `ws`, with a zero masking key, no compression and an optional CA for wss://. */
import WebSocket from 'ws';
import fs from 'node:fs';
import { CloseCodes } from '../shared/errors.js';
import { WORKER_MAX_PAYLOAD } from '../shared/wire/protocol.js';
import { FrameScratch } from '../shared/frame-scratch.js';
import type { SocketFactory, WorkerSocket, WorkerSocketEvents } from './socket.js';

export interface NodeSocketOptions {
  /** PEM file of a CA to trust for wss://. */
  ca?: string;
  /** Largest frame accepted from the coordinator (the welcome carries the corpus). */
  maxPayload?: number;
}

const zeroMask = (mask: Buffer): void => {
  mask.fill(0);
};

export function nodeSockets(opts: NodeSocketOptions = {}): SocketFactory {
  return {
    seesPings: true,
    open(url: string, ev: WorkerSocketEvents): WorkerSocket {
      const ws = new WebSocket(url, {
        maxPayload: opts.maxPayload ?? WORKER_MAX_PAYLOAD,
        perMessageDeflate: false,
        handshakeTimeout: 10_000,
        // A zero masking key: ws then skips masking here and unmasking on the
        // coordinator, a byte-by-byte JavaScript loop over every 1.2 MB gradient
        // on each side without the optional bufferutil (BENCHMARKS.md, part
        // scaling). Masking guards proxies against script-chosen payloads in
        // browsers; a worker's frames carry its own gradients.
        generateMask: zeroMask,
        ...(opts.ca ? { ca: fs.readFileSync(opts.ca) } : {}),
      });
      ws.binaryType = 'nodebuffer';
      ws.on('unexpected-response', (_req, res) => {
        // A proxy between us and a coordinator that is restarting answers 502-504: worth retrying. Anything else is not dptrain.
        const status = res.statusCode ?? 0;
        if (status < 502 || status > 504) {
          ev.onFatal(
            'ERR_NOT_A_COORDINATOR',
            `${url} answered HTTP ${status} instead of a WebSocket upgrade: not a dptrain coordinator (is it the metrics port? workers join the coordinator's --port, default 8765)`,
          );
        }
        res.resume();
        ws.terminate();
      });
      ws.on('ping', () => ev.onAlive());
      ws.on('open', () => {
        // ws's receiver exists from the upgrade on: the parameters then arrive into one reused buffer
        // (the worker client copies what it keeps out of every message before it returns).
        new FrameScratch().attach(ws);
        ev.onOpen();
      });
      ws.on('message', (data: Buffer, isBinary) => {
        if (isBinary) ev.onMessage(data);
        else ev.onAlive();
      });
      ws.on('error', (e: Error & { code?: string }) => {
        if (e.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
          ev.onFatal('ERR_PAYLOAD_TOO_LARGE', `the coordinator sent a message larger than this worker accepts (${e.message}); the model is too large for one WebSocket frame`);
        } else ev.onError(e.message);
      });
      ws.on('close', (code, reason) => ev.onClose(code, reason.toString()));
      return {
        get isOpen() {
          return ws.readyState === WebSocket.OPEN;
        },
        // ws calls back once the socket has written the frame (or with an error when it never will).
        send: (data, sent) => ws.send(data, sent ? () => sent() : undefined),
        close: (code, reason) => {
          ws.close(code, reason);
          if (code === CloseCodes.NORMAL) setTimeout(() => ws.terminate(), 1000).unref();
        },
        terminate: () => ws.terminate(),
      };
    },
  };
}
