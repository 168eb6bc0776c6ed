/** The relay's side facing its workers: a coordinator's WebSocket server, sized from the parent's welcome. */
import { maxPayloadFor, type WelcomeMsg, type WorkerMessageLimits } from '../shared/wire/protocol.js';
import type { WsServerOptions } from '../coordinator/ws-server.js';
import type { RelayOptions } from './relay.js';

/** Streams assumed when a parent's welcome does not say (a coordinator older than relays). */
export const STREAMS_UNKNOWN = 4096;

export function relayServerOptions(o: RelayOptions, w: WelcomeMsg, limits: WorkerMessageLimits): WsServerOptions {
  const P = w.model.paramCount;
  const streams = w.streams ?? STREAMS_UNKNOWN;
  return {
    host: o.host,
    port: o.port,
    tls: o.tls,
    token: o.upstream.token,
    maxPayload: maxPayloadFor(P + streams * w.model.stateWidth, 0, 'float32'),
    maxConnections: o.maxWorkers + 16,
    helloTimeoutMs: o.helloTimeoutMs,
    heartbeatMs: o.heartbeatMs,
    maxBufferedBytes: 8 * P * 4 + w.tokens.byteLength,
    limits,
    log: o.log,
  };
}
