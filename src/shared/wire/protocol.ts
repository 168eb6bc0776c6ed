/**
 * The coordinator <-> worker wire protocol, in one import: messages.ts (version,
 * types, limits), encode.ts, frame.ts (scan, decode, frame size), validate.ts
 * and tokens.ts. Nothing here imports tfjs or a socket.
 */
export * from './messages.js';
export { encode, ReusedFrames } from './encode.js';
export { decode, maxPayloadFor, WORKER_MAX_PAYLOAD } from './frame.js';
export { decodeCoordinatorMessage, decodeWorkerMessage, validateCoordinatorMessage, validateWorkerMessage } from './validate.js';
export { tokensFromWire, tokensToWire } from './tokens.js';
