/**
 * The worker's WebSocket in a browser tab. The browser answers the
 * coordinator's pings itself and never shows them to the page (seesPings:
 * false), chooses the masking key, and has no frame size limit to set.
 */
import type { SocketFactory, WorkerSocket, WorkerSocketEvents } from '../worker/socket.js';

export function browserSockets(): SocketFactory {
  return {
    seesPings: false,
    open(url: string, ev: WorkerSocketEvents): WorkerSocket {
      const ws = new WebSocket(url);
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => ev.onOpen();
      ws.onmessage = (e: MessageEvent) => {
        if (e.data instanceof ArrayBuffer) ev.onMessage(new Uint8Array(e.data));
        else ev.onAlive();
      };
      // The browser gives no reason for a failed connection (a refused port, a TLS error): the close that follows says 1006.
      ws.onerror = () => ev.onError(`cannot reach ${url}`);
      ws.onclose = (e: CloseEvent) => ev.onClose(e.code, e.reason);
      return {
        get isOpen() {
          return ws.readyState === WebSocket.OPEN;
        },
        // The browser copies the bytes as send() is called (the WebSocket standard), so the caller's
        // buffer is free again at once: the worker's reply frame is reused from round to round.
        send: (data, sent) => {
          ws.send(data);
          sent?.();
        },
        close: (code, reason) => ws.close(code, reason),
        terminate: () => ws.close(),
      };
    },
  };
}
