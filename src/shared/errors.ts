/**
 * Every error a user or a peer can see has a stable code, listed here once
 * and documented in the README ("Error codes"). Codes never change meaning;
 * new ones are only added.
 */
export const ErrorCodes = {
  // Configuration and command line (exit code 2).
  ERR_BAD_CONFIG: 'ERR_BAD_CONFIG',
  ERR_CORPUS_NOT_FOUND: 'ERR_CORPUS_NOT_FOUND',
  ERR_CORPUS_DOWNLOAD: 'ERR_CORPUS_DOWNLOAD',
  ERR_CORPUS_CHECKSUM: 'ERR_CORPUS_CHECKSUM',
  ERR_CORPUS_EMPTY: 'ERR_CORPUS_EMPTY',
  ERR_CORPUS_BINARY: 'ERR_CORPUS_BINARY',
  ERR_CORPUS_TOO_SMALL: 'ERR_CORPUS_TOO_SMALL',
  ERR_CORPUS_TOO_LARGE: 'ERR_CORPUS_TOO_LARGE',
  ERR_CORPUS_ENCODING: 'ERR_CORPUS_ENCODING',
  ERR_EXPORT_PATH: 'ERR_EXPORT_PATH',
  ERR_EXPORT_EXISTS: 'ERR_EXPORT_EXISTS',
  ERR_BACKEND_UNAVAILABLE: 'ERR_BACKEND_UNAVAILABLE',
  // Wire protocol (the offending socket is closed with the matching close code).
  ERR_MALFORMED: 'ERR_MALFORMED',
  ERR_BAD_MESSAGE: 'ERR_BAD_MESSAGE',
  ERR_UNKNOWN_TYPE: 'ERR_UNKNOWN_TYPE',
  ERR_VERSION_MISMATCH: 'ERR_VERSION_MISMATCH',
  ERR_BAD_TOKEN: 'ERR_BAD_TOKEN',
  ERR_NOT_AUTHENTICATED: 'ERR_NOT_AUTHENTICATED',
  ERR_HELLO_TIMEOUT: 'ERR_HELLO_TIMEOUT',
  ERR_TOO_MANY_CONNECTIONS: 'ERR_TOO_MANY_CONNECTIONS',
  ERR_PAYLOAD_TOO_LARGE: 'ERR_PAYLOAD_TOO_LARGE',
  ERR_HEARTBEAT_TIMEOUT: 'ERR_HEARTBEAT_TIMEOUT',
  ERR_BAD_TENSOR: 'ERR_BAD_TENSOR',
  ERR_NON_FINITE: 'ERR_NON_FINITE',
  ERR_STALE_ROUND: 'ERR_STALE_ROUND',
  ERR_FUTURE_ROUND: 'ERR_FUTURE_ROUND',
  ERR_DUPLICATE_REPLY: 'ERR_DUPLICATE_REPLY',
  ERR_ROUND_TIMEOUT: 'ERR_ROUND_TIMEOUT',
  ERR_SLOW_CONSUMER: 'ERR_SLOW_CONSUMER',
  ERR_SHUTTING_DOWN: 'ERR_SHUTTING_DOWN',
  // Checkpoints.
  ERR_CHECKPOINT_NOT_FOUND: 'ERR_CHECKPOINT_NOT_FOUND',
  ERR_CHECKPOINT_CORRUPT: 'ERR_CHECKPOINT_CORRUPT',
  ERR_CHECKPOINT_MISMATCH: 'ERR_CHECKPOINT_MISMATCH',
  ERR_CHECKPOINT_WRITE: 'ERR_CHECKPOINT_WRITE',
  ERR_EXPORT_WRITE: 'ERR_EXPORT_WRITE',
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

/**
 * WebSocket close codes (4000-4999 is the private range of RFC 6455).
 * 1009 (message too big) is sent by `ws` itself when a frame exceeds maxPayload.
 */
export const CloseCodes = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  MESSAGE_TOO_BIG: 1009,
  BAD_TOKEN: 4001,
  VERSION_MISMATCH: 4002,
  MALFORMED: 4003,
  NOT_AUTHENTICATED: 4004,
  HELLO_TIMEOUT: 4005,
  TOO_MANY_CONNECTIONS: 4006,
  HEARTBEAT_TIMEOUT: 4007,
  BAD_MESSAGE: 4008,
  SLOW_CONSUMER: 4009,
  SHUTTING_DOWN: 4011,
  TRAINING_DONE: 4012,
} as const;

export class DptrainError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DptrainError';
    this.code = code;
  }
}

export function isDptrainError(e: unknown, code?: ErrorCode): e is DptrainError {
  return e instanceof DptrainError && (code === undefined || e.code === code);
}
