/**
 * The connection loop's view of a WebSocket, so that one loop (worker-client.ts)
 * runs over Node's `ws` (node-socket.ts) and over a browser's WebSocket
 * (src/browser/browser-socket.ts). Only binary frames reach onMessage.
 */
import type { ErrorCode } from '../shared/errors.js';

export interface WorkerSocketEvents {
  onOpen(): void;
  onMessage(data: Uint8Array): void;
  /** A ping from the coordinator (only where the socket can see them). */
  onAlive(): void;
  onError(message: string): void;
  /** A refusal that reconnecting cannot help (not a coordinator, a frame too large); a close follows. */
  onFatal(code: ErrorCode, message: string): void;
  onClose(code: number, reason: string): void;
}

export interface WorkerSocket {
  readonly isOpen: boolean;
  /** `sent`, when given, may run once the socket has written `data` out and no longer holds it (never, where it cannot tell). */
  send(data: Uint8Array, sent?: () => void): void;
  close(code: number, reason: string): void;
  /** Drop the connection now (a silent coordinator). */
  terminate(): void;
}

export interface SocketFactory {
  open(url: string, events: WorkerSocketEvents): WorkerSocket;
  /**
   * Whether onAlive reports the coordinator's pings. A browser answers pings
   * out of sight of the page, so there the heartbeat watchdog stays off and a
   * dead link is noticed by the browser's own close.
   */
  readonly seesPings: boolean;
}
