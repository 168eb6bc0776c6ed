/**
 * What the coordinator needs from its network and its clock, so that the
 * round loop, membership and pausing can run in-process in a test with a fake
 * transport and a hand-driven clock (the real ones: WsServer and `realClock`).
 */
import type { WsHandlers, WsServerOptions } from './ws-server.js';

/** Accepts workers and hands their authenticated messages to the handlers. */
export interface Transport {
  /** 'ws' or 'wss', for the listening line. */
  readonly scheme: string;
  /** Open sockets, authenticated or not. */
  readonly connectionCount: number;
  /** Starts accepting; resolves with the port. */
  listen(): Promise<number>;
  /** Closes every connection with `code` and stops accepting. */
  close(code?: number, reason?: string): Promise<void>;
}

export type TransportFactory = (opts: WsServerOptions, handlers: WsHandlers) => Transport;

/** Time as the round deadline sees it. */
export interface Clock {
  /** Milliseconds, monotonic. */
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};
