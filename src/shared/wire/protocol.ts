/**
 * The coordinator <-> worker wire protocol.
 *
 * Every WebSocket frame is one binary msgpack map with a string `type`.
 * Plain msgpack only (no msgpackr records or extensions), so a peer in any
 * language can speak it; typed arrays travel as `bin` holding little-endian
 * bytes. Whatever arrives is `unknown` until a validator has checked it, and
 * the validators answer with a stable error code instead of throwing.
 */
import { HOST_LITTLE_ENDIAN, plainPackr } from '../msgpack.js';
import { DptrainError, ErrorCodes, isDptrainError, type ErrorCode } from '../errors.js';
import { bytesPerElement, isWireDtype, tensorAllFinite, type WireDtype, type WireTensor } from './tensor.js';

/**
 * Bumped on any change a peer of the previous version would misread.
 * 2: welcome.model names the model (name, hyper, stateWidth) instead of giving
 * an LSTM's hidden size; the unread welcome.vocab, hello.resumeId and
 * step.epoch are gone.
 */
export const PROTOCOL_VERSION = 2;

export const MessageTypes = {
  // worker -> coordinator
  HELLO: 'hello',
  GRADS: 'grads',
  LEAVE: 'leave',
  // coordinator -> worker
  WELCOME: 'welcome',
  PARAMS: 'params',
  STEP: 'step',
  PAUSE: 'pause',
  BYE: 'bye',
  ERROR: 'error',
} as const;

export type MessageType = (typeof MessageTypes)[keyof typeof MessageTypes];

export const LIMITS = {
  /** hello.token */
  MAX_TOKEN_CHARS: 1024,
  /** reason / message fields */
  MAX_TEXT_CHARS: 1024,
  /** worker info fields, ids, vocabulary entries */
  MAX_NAME_CHARS: 256,
  /** error.code */
  MAX_CODE_CHARS: 64,
  /** token ids must fit in uint16 */
  MAX_VOCAB: 65536,
  /** nesting of maps/arrays in a frame; real messages use 2 */
  MAX_DEPTH: 8,
  /** msgpack values per frame; real messages hold a few dozen (typed arrays travel as one bin each) */
  MAX_VALUES: 1 << 17,
  /** hyperparameters of a model in welcome.model.hyper */
  MAX_HYPER: 32,
} as const;

export interface WorkerInfo {
  backend: string;
  device: string;
  host: string;
  pid: number;
  name?: string;
}

// worker -> coordinator

export interface HelloMsg {
  type: 'hello';
  version: number;
  token: string;
  info: WorkerInfo;
}

export interface GradsMsg {
  type: 'grads';
  round: number;
  tokenCount: number;
  lossSum: number;
  grads: WireTensor;
  computeMs: number;
  /** Final carried state of the worker's rows, (hi-lo) x model.stateWidth float32. */
  state?: WireTensor;
}

export interface LeaveMsg {
  type: 'leave';
  reason: string;
}

// coordinator -> worker

/** What a worker needs to build the model (src/shared/model/registry.ts) and check it against the coordinator's. */
export interface ModelShape {
  /** Registry name, e.g. 'char-lstm'. */
  name: string;
  /** Its hyperparameters by config key, e.g. { hidden: 256 }. */
  hyper: Record<string, number>;
  vocabSize: number;
  numSteps: number;
  /** Derived from the above; sent so that a worker whose model code differs says so instead of misreading the parameters. */
  paramCount: number;
  stateWidth: number;
}

export interface WelcomeMsg {
  type: 'welcome';
  version: number;
  workerId: string;
  model: ModelShape;
  /** training-split token ids: uint8 when tokenWidth is 1, uint16 little-endian when 2 */
  tokens: Uint8Array;
  tokenWidth: 1 | 2;
  wireDtype: WireDtype;
  /** The coordinator's ping interval: a worker that hears nothing for 3 of them reconnects. */
  heartbeatMs: number;
}

export interface ParamsMsg {
  type: 'params';
  /** parameter version = optimizer step */
  version: number;
  params: WireTensor;
}

export interface StepMsg {
  type: 'step';
  round: number;
  paramsVersion: number;
  /** stream range [lo, hi) */
  lo: number;
  hi: number;
  /** hi - lo entries: start position of each row in the token array */
  starts: Int32Array;
  /** hi - lo entries: 1 = start this stream from zero state */
  fresh: Uint8Array;
  /** Initial state of all rows, (hi-lo) x model.stateWidth float32, when the worker does not hold it (streams moved, resume). */
  state?: WireTensor;
}

export interface PauseMsg {
  type: 'pause';
  reason: string;
  workers: number;
  minWorkers: number;
}

export interface ByeMsg {
  type: 'bye';
  reason: 'done' | 'shutdown' | 'rejected';
  message: string;
}

export interface ErrorMsg {
  type: 'error';
  /** an ErrorCode; kept as string so codes added by a newer peer still parse */
  code: string;
  message: string;
}

export type WorkerMessage = HelloMsg | GradsMsg | LeaveMsg;
export type CoordinatorMessage = WelcomeMsg | ParamsMsg | StepMsg | PauseMsg | ByeMsg | ErrorMsg;
export type Message = WorkerMessage | CoordinatorMessage;

export type Validation<T> = { ok: true; msg: T } | { ok: false; code: ErrorCode; message: string };

export interface WorkerMessageLimits {
  /** exact element count of a gradient */
  paramCount: number;
  /** largest tokenCount a worker may claim for one round */
  maxTokenCount: number;
  /** largest carried-state tensor a worker may return (batch x stateWidth) */
  stateCount?: number;
}

export interface CoordinatorMessageLimits {
  /** when known (after welcome), the exact element count of params */
  paramCount?: number;
}

const BYE_REASONS: ReadonlySet<string> = new Set(['done', 'shutdown', 'rejected']);
// The decoder refuses extensions, so nothing here may produce one.
const packr = plainPackr({ copyBuffers: false });

// ---------------------------------------------------------------------------
// Encoding

function bytesView(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function int32ToWire(a: Int32Array): Uint8Array {
  if (HOST_LITTLE_ENDIAN) return bytesView(a);
  const out = new Uint8Array(a.length * 4);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < a.length; i++) dv.setInt32(i * 4, a[i], true);
  return out;
}

function tensorToWire(t: WireTensor): Record<string, unknown> {
  return { dtype: t.dtype, length: t.length, data: bytesView(t.data) };
}

// Fields are copied one by one so a message object carrying extra properties
// (or undefined optionals) puts exactly the protocol's fields on the wire.
function toWire(msg: Message): Record<string, unknown> {
  switch (msg.type) {
    case 'hello': {
      const info: Record<string, unknown> = {
        backend: msg.info.backend,
        device: msg.info.device,
        host: msg.info.host,
        pid: msg.info.pid,
      };
      if (msg.info.name !== undefined) info.name = msg.info.name;
      return { type: msg.type, version: msg.version, token: msg.token, info };
    }
    case 'grads':
      return {
        type: msg.type,
        round: msg.round,
        tokenCount: msg.tokenCount,
        lossSum: msg.lossSum,
        computeMs: msg.computeMs,
        grads: tensorToWire(msg.grads),
        ...(msg.state ? { state: tensorToWire(msg.state) } : {}),
      };
    case 'leave':
      return { type: msg.type, reason: msg.reason };
    case 'welcome':
      return {
        type: msg.type,
        version: msg.version,
        workerId: msg.workerId,
        model: {
          name: msg.model.name,
          hyper: { ...msg.model.hyper },
          vocabSize: msg.model.vocabSize,
          numSteps: msg.model.numSteps,
          paramCount: msg.model.paramCount,
          stateWidth: msg.model.stateWidth,
        },
        tokenWidth: msg.tokenWidth,
        wireDtype: msg.wireDtype,
        heartbeatMs: msg.heartbeatMs,
        tokens: bytesView(msg.tokens),
      };
    case 'params':
      return { type: msg.type, version: msg.version, params: tensorToWire(msg.params) };
    case 'step':
      return {
        type: msg.type,
        round: msg.round,
        paramsVersion: msg.paramsVersion,
        lo: msg.lo,
        hi: msg.hi,
        starts: int32ToWire(msg.starts),
        fresh: bytesView(msg.fresh),
        ...(msg.state ? { state: tensorToWire(msg.state) } : {}),
      };
    case 'pause':
      return { type: msg.type, reason: msg.reason, workers: msg.workers, minWorkers: msg.minWorkers };
    case 'bye':
      return { type: msg.type, reason: msg.reason, message: msg.message };
    case 'error':
      return { type: msg.type, code: msg.code, message: msg.message };
    default: {
      const t: unknown = (msg as { type?: unknown }).type;
      throw new DptrainError(ErrorCodes.ERR_UNKNOWN_TYPE, `cannot encode message of type ${JSON.stringify(t)}`);
    }
  }
}

/**
 * Encodes without validating: the receiver validates. The result does not
 * alias the message's arrays, so one encoded `params` frame can be sent to
 * every worker while the next round's parameters are computed.
 */
export function encode(msg: Message): Buffer {
  return packr.pack(toWire(msg));
}

// ---------------------------------------------------------------------------
// Decoding

function malformed(message: string): DptrainError {
  return new DptrainError(ErrorCodes.ERR_MALFORMED, message);
}

/**
 * Walks the msgpack structure without building anything, before msgpackr
 * sees the frame. It bounds what decoding can allocate (values, nesting) by
 * limits rather than by counts a hostile header claims, refuses every
 * extension type (never sent; msgpackr would otherwise build Dates, Errors,
 * records...), requires string map keys and a map at the top, and rejects
 * truncated frames and trailing bytes.
 */
function scanFrame(b: Uint8Array): void {
  const end = b.length;
  if (end === 0) throw malformed('empty frame');
  const first = b[0];
  if (!((first >= 0x80 && first <= 0x8f) || first === 0xde || first === 0xdf)) {
    throw malformed('frame is not a msgpack map');
  }
  // Per open container: values still to read, and whether it is a map
  // (in which case an even count left means the next value is a key).
  const left: number[] = [];
  const isMap: boolean[] = [];
  let pos = 0;
  let values = 0;
  const need = (k: number): void => {
    if (k > end - pos) throw malformed('truncated frame');
  };
  const open = (n: number, map: boolean): void => {
    // Every value takes at least one byte, so no honest header claims more than the bytes left.
    if (n > end - pos) throw malformed('truncated frame');
    if (n === 0) return;
    if (left.length >= LIMITS.MAX_DEPTH) throw malformed(`nesting deeper than ${LIMITS.MAX_DEPTH}`);
    left.push(n);
    isMap.push(map);
  };
  do {
    need(1);
    const t = b[pos++];
    const depth = left.length;
    if (depth > 0) {
      const key = isMap[depth - 1] && left[depth - 1] % 2 === 0;
      if (key && !((t >= 0xa0 && t <= 0xbf) || (t >= 0xd9 && t <= 0xdb))) throw malformed('map key is not a string');
      left[depth - 1]--;
    }
    if (++values > LIMITS.MAX_VALUES) throw malformed(`more than ${LIMITS.MAX_VALUES} values in one frame`);
    if (t <= 0x7f || t >= 0xe0) {
      // fixint
    } else if (t <= 0x8f) {
      open((t & 0x0f) * 2, true);
    } else if (t <= 0x9f) {
      open(t & 0x0f, false);
    } else if (t <= 0xbf) {
      need(t & 0x1f);
      pos += t & 0x1f;
    } else {
      switch (t) {
        case 0xc0: // nil
        case 0xc2: // false
        case 0xc3: // true
          break;
        case 0xc4: // bin 8
        case 0xd9: {
          // str 8
          need(1);
          const n = b[pos];
          pos += 1;
          need(n);
          pos += n;
          break;
        }
        case 0xc5: // bin 16
        case 0xda: {
          // str 16
          need(2);
          const n = (b[pos] << 8) | b[pos + 1];
          pos += 2;
          need(n);
          pos += n;
          break;
        }
        case 0xc6: // bin 32
        case 0xdb: {
          // str 32
          need(4);
          const n = readU32(b, pos);
          pos += 4;
          need(n);
          pos += n;
          break;
        }
        case 0xcc:
        case 0xd0:
          need(1);
          pos += 1;
          break;
        case 0xcd:
        case 0xd1:
          need(2);
          pos += 2;
          break;
        case 0xca:
        case 0xce:
        case 0xd2:
          need(4);
          pos += 4;
          break;
        case 0xcb:
        case 0xcf:
        case 0xd3:
          need(8);
          pos += 8;
          break;
        case 0xdc: {
          need(2);
          const n = (b[pos] << 8) | b[pos + 1];
          pos += 2;
          open(n, false);
          break;
        }
        case 0xdd: {
          need(4);
          const n = readU32(b, pos);
          pos += 4;
          open(n, false);
          break;
        }
        case 0xde: {
          need(2);
          const n = (b[pos] << 8) | b[pos + 1];
          pos += 2;
          open(n * 2, true);
          break;
        }
        case 0xdf: {
          need(4);
          const n = readU32(b, pos);
          pos += 4;
          open(n * 2, true);
          break;
        }
        default:
          // 0xc1 (never used) and the ext family 0xc7-0xc9, 0xd4-0xd8.
          throw malformed(`msgpack type 0x${t.toString(16)} is not allowed`);
      }
    }
    while (left.length > 0 && left[left.length - 1] === 0) {
      left.pop();
      isMap.pop();
    }
  } while (left.length > 0);
  if (pos !== end) throw malformed(`${end - pos} trailing bytes after the message`);
}

function readU32(b: Uint8Array, pos: number): number {
  return ((b[pos] << 24) >>> 0) + ((b[pos + 1] << 16) | (b[pos + 2] << 8) | b[pos + 3]);
}

/** One frame -> plain object with `bin` fields as Uint8Array views into `bytes`. */
export function decode(bytes: Uint8Array): unknown {
  if (!(bytes instanceof Uint8Array)) throw malformed('frame is not binary');
  scanFrame(bytes);
  let value: unknown;
  try {
    value = packr.unpack(bytes);
  } catch (e) {
    throw new DptrainError(ErrorCodes.ERR_MALFORMED, `undecodable msgpack: ${(e as Error)?.message ?? String(e)}`, { cause: e });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value) || ArrayBuffer.isView(value)) {
    throw malformed('frame is not a msgpack map');
  }
  return value;
}

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
    hyper[k] = intField(h, k, 'welcome.model.hyper', 1);
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

// ---------------------------------------------------------------------------
// Token ids

function checkVocabSize(vocabSize: number): void {
  if (!Number.isSafeInteger(vocabSize) || vocabSize < 1 || vocabSize > LIMITS.MAX_VOCAB) {
    throw new DptrainError(ErrorCodes.ERR_BAD_MESSAGE, `vocabulary size must be an integer in [1, ${LIMITS.MAX_VOCAB}], got ${vocabSize}`);
  }
}

/** One byte per id when the vocabulary fits, else two (little-endian). */
export function tokensToWire(ids: Int32Array, vocabSize: number): { tokens: Uint8Array; tokenWidth: 1 | 2 } {
  checkVocabSize(vocabSize);
  const n = ids.length;
  for (let i = 0; i < n; i++) {
    const id = ids[i];
    if (id < 0 || id >= vocabSize) {
      throw new DptrainError(ErrorCodes.ERR_BAD_MESSAGE, `token id ${id} at ${i} is outside a vocabulary of ${vocabSize}`);
    }
  }
  if (vocabSize <= 256) {
    const tokens = new Uint8Array(n);
    tokens.set(ids);
    return { tokens, tokenWidth: 1 };
  }
  const tokens = new Uint8Array(n * 2);
  for (let i = 0, j = 0; i < n; i++, j += 2) {
    const id = ids[i];
    tokens[j] = id & 0xff;
    tokens[j + 1] = id >>> 8;
  }
  return { tokens, tokenWidth: 2 };
}

/** Throws ERR_BAD_MESSAGE unless every id is below vocabSize. */
export function tokensFromWire(tokens: Uint8Array, width: 1 | 2, vocabSize: number): Int32Array {
  checkVocabSize(vocabSize);
  if (width !== 1 && width !== 2) {
    throw new DptrainError(ErrorCodes.ERR_BAD_MESSAGE, `token width must be 1 or 2, got ${String(width)}`);
  }
  if (tokens.byteLength % width !== 0) {
    throw new DptrainError(ErrorCodes.ERR_BAD_MESSAGE, `${tokens.byteLength} token bytes is not a multiple of ${width}`);
  }
  const n = tokens.byteLength / width;
  const ids = new Int32Array(n);
  if (width === 1) {
    ids.set(tokens);
  } else {
    for (let i = 0, j = 0; i < n; i++, j += 2) ids[i] = tokens[j] | (tokens[j + 1] << 8);
  }
  for (let i = 0; i < n; i++) {
    if (ids[i] >= vocabSize) {
      throw new DptrainError(ErrorCodes.ERR_BAD_MESSAGE, `token id ${ids[i]} at ${i} is outside a vocabulary of ${vocabSize}`);
    }
  }
  return ids;
}

// ---------------------------------------------------------------------------
// Frame size

/** Headroom for msgpack framing, strings and a character-level vocabulary. */
const PAYLOAD_SLACK = 64 * 1024;

/** The largest frame a worker accepts from its coordinator (the welcome carries the corpus, a step the parameters). */
export const WORKER_MAX_PAYLOAD = 1 << 30;

/**
 * A generous bound on the largest legitimate frame, for ws's maxPayload: the
 * welcome (tokens counted at two bytes each) or a params/grads frame (counted
 * at four bytes per value, so a peer that sends float32 whatever the run's
 * dtype still fits). `dtype` is checked but does not shrink the bound.
 * A coordinator, which never receives a welcome, can pass trainTokens = 0.
 */
export function maxPayloadFor(paramCount: number, trainTokens: number, dtype: WireDtype): number {
  if (!Number.isSafeInteger(paramCount) || paramCount < 0 || !Number.isSafeInteger(trainTokens) || trainTokens < 0) {
    throw new DptrainError(ErrorCodes.ERR_BAD_CONFIG, `maxPayloadFor: counts must be non-negative integers (${paramCount}, ${trainTokens})`);
  }
  const tensorBytes = paramCount * Math.max(4, bytesPerElement(dtype));
  return Math.max(trainTokens * 2, tensorBytes) + PAYLOAD_SLACK;
}
