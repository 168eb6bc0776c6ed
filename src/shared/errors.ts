/**
 * Every error a user or a peer can see has a stable code, listed here once
 * with its exit code and its WebSocket close code, and documented in the
 * README ("Error codes"). Codes never change meaning; new ones are only added
 * (one line in ERRORS below). The CLI's exit status, the coordinator's close
 * codes and the worker's reading of them all derive from this table.
 */

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

/** What an error code means outside the process that raised it. */
export interface ErrorSpec {
  /** Exit code of a command that fails with it: 2 = the user gave something that cannot work, 1 = a runtime failure. */
  exit: 1 | 2;
  /**
   * WebSocket close code of a connection ended by it. Codes that are not about
   * the wire (configuration, corpus, checkpoint, port) can only end a
   * connection by the coordinator failing: it is going away (1001).
   */
  close: number;
  /** A worker refused with it stops (exit 1) instead of reconnecting: retrying cannot help. */
  final?: true;
}

/** Every code in one table: its exit code and its close code. The README's "Error codes" table lists each (test/readme.test.ts). */
const ERRORS = {
  // Configuration and command line (exit code 2).
  ERR_BAD_CONFIG: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_CORPUS_NOT_FOUND: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_CORPUS_DOWNLOAD: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_CORPUS_CHECKSUM: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_CORPUS_EMPTY: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_CORPUS_BINARY: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_CORPUS_TOO_SMALL: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_CORPUS_TOO_LARGE: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_CORPUS_ENCODING: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_EXPORT_PATH: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_EXPORT_EXISTS: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_BACKEND_UNAVAILABLE: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_PORT_IN_USE: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_MODEL_TOO_LARGE: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_NOT_A_COORDINATOR: { exit: 2, close: CloseCodes.GOING_AWAY },
  // Wire protocol (the offending socket is closed with the matching close code).
  ERR_MALFORMED: { exit: 1, close: CloseCodes.MALFORMED },
  ERR_BAD_MESSAGE: { exit: 1, close: CloseCodes.BAD_MESSAGE },
  ERR_UNKNOWN_TYPE: { exit: 1, close: CloseCodes.BAD_MESSAGE },
  ERR_VERSION_MISMATCH: { exit: 1, close: CloseCodes.VERSION_MISMATCH, final: true },
  ERR_BAD_TOKEN: { exit: 1, close: CloseCodes.BAD_TOKEN, final: true },
  ERR_NOT_AUTHENTICATED: { exit: 1, close: CloseCodes.NOT_AUTHENTICATED },
  ERR_HELLO_TIMEOUT: { exit: 1, close: CloseCodes.HELLO_TIMEOUT },
  ERR_TOO_MANY_CONNECTIONS: { exit: 1, close: CloseCodes.TOO_MANY_CONNECTIONS },
  ERR_PAYLOAD_TOO_LARGE: { exit: 1, close: CloseCodes.MESSAGE_TOO_BIG },
  ERR_HEARTBEAT_TIMEOUT: { exit: 1, close: CloseCodes.HEARTBEAT_TIMEOUT },
  ERR_BAD_TENSOR: { exit: 1, close: CloseCodes.BAD_MESSAGE },
  ERR_NON_FINITE: { exit: 1, close: CloseCodes.BAD_MESSAGE },
  ERR_STALE_ROUND: { exit: 1, close: CloseCodes.BAD_MESSAGE },
  ERR_FUTURE_ROUND: { exit: 1, close: CloseCodes.BAD_MESSAGE },
  ERR_DUPLICATE_REPLY: { exit: 1, close: CloseCodes.BAD_MESSAGE },
  ERR_ROUND_TIMEOUT: { exit: 1, close: CloseCodes.HEARTBEAT_TIMEOUT },
  ERR_SLOW_CONSUMER: { exit: 1, close: CloseCodes.SLOW_CONSUMER },
  ERR_SHUTTING_DOWN: { exit: 1, close: CloseCodes.SHUTTING_DOWN },
  // Checkpoints.
  ERR_CHECKPOINT_NOT_FOUND: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_CHECKPOINT_CORRUPT: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_CHECKPOINT_MISMATCH: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_CHECKPOINT_WRITE: { exit: 1, close: CloseCodes.GOING_AWAY },
  ERR_CHECKPOINT_DIR: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_CHECKPOINT_EXISTS: { exit: 2, close: CloseCodes.GOING_AWAY },
  ERR_CHECKPOINT_LOCKED: { exit: 2, close: CloseCodes.GOING_AWAY },
  // Runs that end badly (exit code 1).
  ERR_WORKERS_EXITED: { exit: 1, close: CloseCodes.GOING_AWAY },
  ERR_COORDINATOR_GONE: { exit: 1, close: CloseCodes.GOING_AWAY },
  ERR_RELAY_MODEL_CHANGED: { exit: 1, close: CloseCodes.GOING_AWAY },
  ERR_EXPORT_WRITE: { exit: 1, close: CloseCodes.GOING_AWAY },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** Each code as a value, for `ErrorCodes.ERR_BAD_CONFIG`. */
export const ErrorCodes = Object.freeze(Object.fromEntries(Object.keys(ERRORS).map((k) => [k, k]))) as { readonly [K in ErrorCode]: K };

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERRORS, code);
}

export function errorSpec(code: ErrorCode): ErrorSpec {
  return ERRORS[code];
}

export function exitCodeFor(code: ErrorCode): 1 | 2 {
  return ERRORS[code].exit;
}

export function closeCodeFor(code: ErrorCode): number {
  return ERRORS[code].close;
}

/** The code a worker reports when the coordinator closed its connection with a final close code (bad token, other version); null for any other. */
export function finalRefusalFor(closeCode: number): ErrorCode | null {
  for (const [code, spec] of Object.entries(ERRORS) as [ErrorCode, ErrorSpec][]) if (spec.final && spec.close === closeCode) return code;
  return null;
}

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
