/**
 * Decoded values -> typed messages. Checks every field a peer sent (type,
 * range, size, finiteness) and rebuilds the message from known fields only;
 * answers with a stable error code instead of throwing.
 * (Over 350 lines: one validator per message type plus the field readers they
 * share, kept in one file so that every rule a peer's input meets is read in one place.)
 */
import { HOST_LITTLE_ENDIAN } from '../msgpack.js';
import { ErrorCodes, isDptrainError, type ErrorCode } from '../errors.js';
import { bytesPerElement, isWireDtype, tensorAllFinite, type WireTensor } from './tensor.js';
import { decode } from './frame.js';
import {
  LIMITS,
  MessageTypes,
  PROTOCOL_VERSION,
  type ByeMsg,
  type CoordinatorMessage,
  type CoordinatorMessageLimits,
  type ErrorMsg,
  type GradsMsg,
  type HelloMsg,
  type LeaveMsg,
  type ModelShape,
  type ParamsMsg,
  type PauseMsg,
  type StepMsg,
  type Validation,
  type WelcomeMsg,
  type WorkerInfo,
  type WorkerMessage,
  type WorkerMessageLimits,
} from './messages.js';

const BYE_REASONS: ReadonlySet<string> = new Set(['done', 'shutdown', 'rejected']);

// ---------------------------------------------------------------------------
// Validation

/** Thrown inside the validators only; the exported functions turn it into a Validation. */
class Reject {
  constructor(
    readonly code: ErrorCode,
    readonly message: string,
  ) {}
}

function reject(code: ErrorCode, message: string): never {
  throw new Reject(code, message);
}

type Obj = Record<string, unknown>;

function isObj(x: unknown): x is Obj {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !ArrayBuffer.isView(x);
}

function objField(o: Obj, key: string, where: string): Obj {
  const v = o[key];
  if (!isObj(v)) reject(ErrorCodes.ERR_BAD_MESSAGE, `${where}.${key} must be a map`);
  return v;
}

function strField(o: Obj, key: string, where: string, max: number, min = 0): string {
  const v = o[key];
  if (typeof v !== 'string') reject(ErrorCodes.ERR_BAD_MESSAGE, `${where}.${key} must be a string`);
  if (v.length > max) reject(ErrorCodes.ERR_BAD_MESSAGE, `${where}.${key} is longer than ${max} characters`);
  if (v.length < min) reject(ErrorCodes.ERR_BAD_MESSAGE, `${where}.${key} must not be empty`);
  return v;
}

// nil counts as absent so that peers whose msgpack libraries write nil for
// unset optionals are understood.
function optStrField(o: Obj, key: string, where: string, max: number): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  return strField(o, key, where, max);
}

function intField(o: Obj, key: string, where: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) {
    reject(ErrorCodes.ERR_BAD_MESSAGE, `${where}.${key} must be an integer`);
  }
  if (v < min || v > max) reject(ErrorCodes.ERR_BAD_MESSAGE, `${where}.${key} must be in [${min}, ${max}], got ${v}`);
  return v;
}

function numField(o: Obj, key: string, where: string, nonFiniteCode: ErrorCode = ErrorCodes.ERR_BAD_MESSAGE): number {
  const v = o[key];
  if (typeof v !== 'number') reject(ErrorCodes.ERR_BAD_MESSAGE, `${where}.${key} must be a number`);
  if (!Number.isFinite(v)) reject(nonFiniteCode, `${where}.${key} must be finite, got ${v}`);
  return v;
}

function binField(o: Obj, key: string, where: string): Uint8Array {
  const v = o[key];
  if (!(v instanceof Uint8Array)) reject(ErrorCodes.ERR_BAD_MESSAGE, `${where}.${key} must be binary`);
  // Hand out plain Uint8Array views, not msgpackr's Buffer slices.
  return v.constructor === Uint8Array ? v : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

function tensorField(o: Obj, key: string, where: string, expectedLength: number | undefined): WireTensor {
  const v = o[key];
  const at = `${where}.${key}`;
  if (v === undefined || v === null) reject(ErrorCodes.ERR_BAD_MESSAGE, `${at} is missing`);
  if (!isObj(v)) reject(ErrorCodes.ERR_BAD_TENSOR, `${at} must be a map`);
  const dtype = v.dtype;
  if (!isWireDtype(dtype)) {
    const shown = typeof dtype === 'string' ? JSON.stringify(dtype.slice(0, 40)) : typeof dtype;
    reject(ErrorCodes.ERR_BAD_TENSOR, `${at}.dtype ${shown} is not a wire dtype`);
  }
  const length = v.length;
  if (typeof length !== 'number' || !Number.isSafeInteger(length) || length < 0) {
    reject(ErrorCodes.ERR_BAD_TENSOR, `${at}.length must be a non-negative integer`);
  }
  if (expectedLength !== undefined && length !== expectedLength) {
    reject(ErrorCodes.ERR_BAD_TENSOR, `${at} has ${length} elements, expected ${expectedLength}`);
  }
  const data = v.data;
  if (!(data instanceof Uint8Array)) reject(ErrorCodes.ERR_BAD_TENSOR, `${at}.data must be binary`);
  const want = length * bytesPerElement(dtype);
  if (data.byteLength !== want) {
    reject(ErrorCodes.ERR_BAD_TENSOR, `${at}: ${length} ${dtype} values need ${want} bytes, got ${data.byteLength}`);
  }
  const view = data.constructor === Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return { dtype, length, data: view };
}

function versionField(o: Obj, where: string): number {
  const v = o.version;
  if (v !== PROTOCOL_VERSION) {
    reject(
      ErrorCodes.ERR_VERSION_MISMATCH,
      `${where}: protocol version ${typeof v === 'number' ? v : JSON.stringify(typeof v)} is not supported (this side speaks ${PROTOCOL_VERSION})`,
    );
  }
  return PROTOCOL_VERSION;
}

function validateHello(o: Obj): HelloMsg {
  const w = 'hello';
  // Checked first: a peer of another version may shape every other field differently.
  const version = versionField(o, w);
  const token = strField(o, 'token', w, LIMITS.MAX_TOKEN_CHARS);
  const i = objField(o, 'info', w);
  const info: WorkerInfo = {
    backend: strField(i, 'backend', 'hello.info', LIMITS.MAX_NAME_CHARS),
    device: strField(i, 'device', 'hello.info', LIMITS.MAX_NAME_CHARS),
    host: strField(i, 'host', 'hello.info', LIMITS.MAX_NAME_CHARS),
    pid: intField(i, 'pid', 'hello.info', 0),
  };
  const name = optStrField(i, 'name', 'hello.info', LIMITS.MAX_NAME_CHARS);
  if (name !== undefined) info.name = name;
  return { type: 'hello', version, token, info };
}

function validateGrads(o: Obj, limits: WorkerMessageLimits): GradsMsg {
  const w = 'grads';
  const round = intField(o, 'round', w, 0);
  const tokenCount = intField(o, 'tokenCount', w, 1, limits.maxTokenCount);
  const lossSum = numField(o, 'lossSum', w, ErrorCodes.ERR_NON_FINITE);
  const computeMs = numField(o, 'computeMs', w);
  if (computeMs < 0) reject(ErrorCodes.ERR_BAD_MESSAGE, `${w}.computeMs must not be negative`);
  const grads = tensorField(o, 'grads', w, limits.paramCount);
  if (!tensorAllFinite(grads)) reject(ErrorCodes.ERR_NON_FINITE, `${w}.grads contains NaN or Infinity`);
  const msg: GradsMsg = { type: 'grads', round, tokenCount, lossSum, grads, computeMs };
  if (o.state !== undefined && o.state !== null) {
    const state = tensorField(o, 'state', w, undefined);
    if (state.dtype !== 'float32') reject(ErrorCodes.ERR_BAD_TENSOR, `${w}.state must be float32`);
    if (limits.stateCount !== undefined && state.length > limits.stateCount) reject(ErrorCodes.ERR_BAD_TENSOR, `${w}.state has ${state.length} elements, at most ${limits.stateCount} allowed`);
    if (!tensorAllFinite(state)) reject(ErrorCodes.ERR_NON_FINITE, `${w}.state contains NaN or Infinity`);
    msg.state = state;
  }
  return msg;
}

function validateLeave(o: Obj): LeaveMsg {
  return { type: 'leave', reason: strField(o, 'reason', 'leave', LIMITS.MAX_TEXT_CHARS) };
}

function validateWelcome(o: Obj): WelcomeMsg {
  const w = 'welcome';
  const version = versionField(o, w);
  const workerId = strField(o, 'workerId', w, LIMITS.MAX_NAME_CHARS, 1);
  const m = objField(o, 'model', w);
  const h = objField(m, 'hyper', 'welcome.model');
  const keys = Object.keys(h);
  if (keys.length > LIMITS.MAX_HYPER) reject(ErrorCodes.ERR_BAD_MESSAGE, `welcome.model.hyper has ${keys.length} entries, at most ${LIMITS.MAX_HYPER} allowed`);
  const hyper: Record<string, number> = {};
  for (const k of keys) {
    if (k === '__proto__') reject(ErrorCodes.ERR_BAD_MESSAGE, 'welcome.model.hyper has a key __proto__');
    if (k.length > LIMITS.MAX_NAME_CHARS) reject(ErrorCodes.ERR_BAD_MESSAGE, `welcome.model.hyper has a key longer than ${LIMITS.MAX_NAME_CHARS} characters`);
    // Which values a hyperparameter takes is the model's rule (model/registry.ts), checked when the worker builds it.
    hyper[k] = numField(h, k, 'welcome.model.hyper');
    if (hyper[k] < 0) reject(ErrorCodes.ERR_BAD_MESSAGE, `welcome.model.hyper.${k} must not be negative, got ${hyper[k]}`);
  }
  const model: ModelShape = {
    name: strField(m, 'name', 'welcome.model', LIMITS.MAX_NAME_CHARS, 1),
    hyper,
    vocabSize: intField(m, 'vocabSize', 'welcome.model', 1, LIMITS.MAX_VOCAB),
    numSteps: intField(m, 'numSteps', 'welcome.model', 1),
    paramCount: intField(m, 'paramCount', 'welcome.model', 1),
    stateWidth: intField(m, 'stateWidth', 'welcome.model', 0),
  };
  const tokenWidth = o.tokenWidth;
  if (tokenWidth !== 1 && tokenWidth !== 2) reject(ErrorCodes.ERR_BAD_MESSAGE, `${w}.tokenWidth must be 1 or 2`);
  if (tokenWidth === 1 && model.vocabSize > 256) {
    reject(ErrorCodes.ERR_BAD_MESSAGE, `${w}.tokenWidth 1 cannot hold ${model.vocabSize} token ids`);
  }
  const tokens = binField(o, 'tokens', w);
  if (tokens.byteLength % tokenWidth !== 0) {
    reject(ErrorCodes.ERR_BAD_MESSAGE, `${w}.tokens has ${tokens.byteLength} bytes, not a multiple of ${tokenWidth}`);
  }
  const wireDtype = o.wireDtype;
  if (!isWireDtype(wireDtype)) reject(ErrorCodes.ERR_BAD_MESSAGE, `${w}.wireDtype is not a wire dtype`);
  const heartbeatMs = intField(o, 'heartbeatMs', w, 1);
  return { type: 'welcome', version, workerId, model, tokens, tokenWidth, wireDtype, heartbeatMs };
}

function validateParams(o: Obj, limits: CoordinatorMessageLimits | undefined): ParamsMsg {
  const version = intField(o, 'version', 'params', 0);
  const params = tensorField(o, 'params', 'params', limits?.paramCount);
  return { type: 'params', version, params };
}

function validateStep(o: Obj): StepMsg {
  const w = 'step';
  const round = intField(o, 'round', w, 0);
  const paramsVersion = intField(o, 'paramsVersion', w, 0);
  const lo = intField(o, 'lo', w, 0);
  const hi = intField(o, 'hi', w, 0);
  if (hi <= lo) reject(ErrorCodes.ERR_BAD_MESSAGE, `${w}: empty range lo=${lo} hi=${hi}`);
  const rows = hi - lo;
  // Both arrays are checked against the byte lengths that actually arrived
  // before anything is allocated, so a huge hi - lo costs nothing.
  let starts: Int32Array;
  const s = o.starts;
  if (s instanceof Int32Array) {
    if (s.length !== rows) reject(ErrorCodes.ERR_BAD_MESSAGE, `${w}.starts has ${s.length} entries, expected ${rows}`);
    starts = s.slice();
  } else {
    const bytes = binField(o, 'starts', w);
    if (bytes.byteLength !== rows * 4) {
      reject(ErrorCodes.ERR_BAD_MESSAGE, `${w}.starts has ${bytes.byteLength} bytes, expected ${rows * 4}`);
    }
    // Copy into a fresh, aligned buffer: the frame slice may sit at any offset.
    starts = new Int32Array(rows);
    new Uint8Array(starts.buffer).set(bytes);
    if (!HOST_LITTLE_ENDIAN) {
      const dv = new DataView(starts.buffer);
      for (let k = 0; k < rows; k++) starts[k] = dv.getInt32(k * 4, true);
    }
  }
  for (let k = 0; k < rows; k++) {
    if (starts[k] < 0) reject(ErrorCodes.ERR_BAD_MESSAGE, `${w}.starts[${k}] is negative`);
  }
  const f = binField(o, 'fresh', w);
  if (f.byteLength !== rows) reject(ErrorCodes.ERR_BAD_MESSAGE, `${w}.fresh has ${f.byteLength} entries, expected ${rows}`);
  const fresh = f.slice();
  for (let k = 0; k < rows; k++) {
    if (fresh[k] > 1) reject(ErrorCodes.ERR_BAD_MESSAGE, `${w}.fresh[${k}] must be 0 or 1`);
  }
  const msg: StepMsg = { type: 'step', round, paramsVersion, lo, hi, starts, fresh };
  if (o.state !== undefined && o.state !== null) {
    const state = tensorField(o, 'state', w, undefined);
    if (state.dtype !== 'float32') reject(ErrorCodes.ERR_BAD_TENSOR, `${w}.state must be float32`);
    if (state.length % rows !== 0 || state.length % 2 !== 0) reject(ErrorCodes.ERR_BAD_TENSOR, `${w}.state has ${state.length} elements, not rows x 2H for ${rows} rows`);
    msg.state = state;
  }
  return msg;
}

function validatePause(o: Obj): PauseMsg {
  const w = 'pause';
  return {
    type: 'pause',
    reason: strField(o, 'reason', w, LIMITS.MAX_TEXT_CHARS),
    workers: intField(o, 'workers', w, 0),
    minWorkers: intField(o, 'minWorkers', w, 0),
  };
}

function validateBye(o: Obj): ByeMsg {
  const reason = o.reason;
  if (typeof reason !== 'string' || !BYE_REASONS.has(reason)) {
    reject(ErrorCodes.ERR_BAD_MESSAGE, `bye.reason must be one of ${[...BYE_REASONS].join(', ')}`);
  }
  return { type: 'bye', reason: reason as ByeMsg['reason'], message: strField(o, 'message', 'bye', LIMITS.MAX_TEXT_CHARS) };
}

function validateError(o: Obj): ErrorMsg {
  return {
    type: 'error',
    code: strField(o, 'code', 'error', LIMITS.MAX_CODE_CHARS, 1),
    message: strField(o, 'message', 'error', LIMITS.MAX_TEXT_CHARS),
  };
}

const WORKER_TYPES: ReadonlySet<string> = new Set([MessageTypes.HELLO, MessageTypes.GRADS, MessageTypes.LEAVE]);
const COORDINATOR_TYPES: ReadonlySet<string> = new Set([
  MessageTypes.WELCOME,
  MessageTypes.PARAMS,
  MessageTypes.STEP,
  MessageTypes.PAUSE,
  MessageTypes.BYE,
  MessageTypes.ERROR,
]);

function messageType(x: unknown, accepted: ReadonlySet<string>, direction: string): { o: Obj; type: string } {
  if (!isObj(x)) reject(ErrorCodes.ERR_BAD_MESSAGE, 'message must be a map');
  const type = x.type;
  if (typeof type !== 'string') reject(ErrorCodes.ERR_BAD_MESSAGE, 'message.type must be a string');
  if (!accepted.has(type)) {
    reject(ErrorCodes.ERR_UNKNOWN_TYPE, `${JSON.stringify(type.slice(0, 40))} is not a ${direction} message type`);
  }
  return { o: x, type };
}

function run<T>(f: () => T): Validation<T> {
  try {
    return { ok: true, msg: f() };
  } catch (e) {
    if (e instanceof Reject) return { ok: false, code: e.code, message: e.message };
    if (isDptrainError(e)) return { ok: false, code: e.code, message: e.message };
    // Only reachable with exotic input (a getter that throws, say); still a bad message, never a crash.
    return { ok: false, code: ErrorCodes.ERR_BAD_MESSAGE, message: `invalid message: ${(e as Error)?.message ?? String(e)}` };
  }
}

/** Checks what a coordinator received. Never throws; unknown extra fields are ignored and dropped. */
export function validateWorkerMessage(x: unknown, limits: WorkerMessageLimits): Validation<WorkerMessage> {
  return run((): WorkerMessage => {
    const { o, type } = messageType(x, WORKER_TYPES, 'worker');
    switch (type) {
      case 'hello':
        return validateHello(o);
      case 'grads':
        return validateGrads(o, limits);
      default:
        return validateLeave(o);
    }
  });
}

/** Checks what a worker received. Never throws; unknown extra fields are ignored and dropped. */
export function validateCoordinatorMessage(x: unknown, limits?: CoordinatorMessageLimits): Validation<CoordinatorMessage> {
  return run((): CoordinatorMessage => {
    const { o, type } = messageType(x, COORDINATOR_TYPES, 'coordinator');
    switch (type) {
      case 'welcome':
        return validateWelcome(o);
      case 'params':
        return validateParams(o, limits);
      case 'step':
        return validateStep(o);
      case 'pause':
        return validatePause(o);
      case 'bye':
        return validateBye(o);
      default:
        return validateError(o);
    }
  });
}

export function decodeWorkerMessage(bytes: Uint8Array, limits: WorkerMessageLimits): Validation<WorkerMessage> {
  let x: unknown;
  try {
    x = decode(bytes);
  } catch (e) {
    return { ok: false, code: isDptrainError(e) ? e.code : ErrorCodes.ERR_MALFORMED, message: (e as Error)?.message ?? String(e) };
  }
  return validateWorkerMessage(x, limits);
}

export function decodeCoordinatorMessage(bytes: Uint8Array, limits?: CoordinatorMessageLimits): Validation<CoordinatorMessage> {
  let x: unknown;
  try {
    x = decode(bytes);
  } catch (e) {
    return { ok: false, code: isDptrainError(e) ? e.code : ErrorCodes.ERR_MALFORMED, message: (e as Error)?.message ?? String(e) };
  }
  return validateCoordinatorMessage(x, limits);
}

