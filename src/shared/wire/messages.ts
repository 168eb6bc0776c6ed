/**
 * The coordinator <-> worker wire protocol: its version, message types and limits.
 *
 * Every WebSocket frame is one binary msgpack map with a string `type`.
 * Plain msgpack only (no msgpackr records or extensions), so a peer in any
 * language can speak it; typed arrays travel as `bin` holding little-endian
 * bytes. Whatever arrives is `unknown` until a validator (validate.ts) has
 * checked it, and the validators answer with a stable error code instead of throwing.
 */
import type { ErrorCode } from '../errors.js';
import type { WireDtype, WireTensor } from './tensor.js';
import type { RowSparseBlock, SparseRows } from './accumulate.js';

/**
 * Bumped on any change a peer of the previous version would misread.
 * 2: welcome.model names the model (name, hyper, stateWidth) instead of giving
 * an LSTM's hidden size; the unread welcome.vocab, hello.resumeId and
 * step.epoch are gone.
 * 3: step.local (local SGD: inner steps, and the reply is a parameter change).
 */
export const PROTOCOL_VERSION = 3;

export const MessageTypes = {
  // worker -> coordinator
  HELLO: 'hello',
  GRADS: 'grads',
  LEAVE: 'leave',
  /** A relay's worker count changed (or it holds nothing for a round): see CapacityMsg. */
  CAPACITY: 'capacity',
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
  /** inner steps of a local SGD round, less one (step.local.resets; --sync-every's maximum) */
  MAX_INNER_STEPS: 4096,
  /** workers a relay may say it carries (hello.capacity, capacity.capacity) */
  MAX_CAPACITY: 1 << 20,
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
  /**
   * Sent by a relay only: how many workers it carries. Its parent gives it streams
   * in proportion (a worker counts 1) and accepts a reply covering fewer tokens than
   * it was given (a worker under it died mid-round). Absent: a worker.
   */
  capacity?: number;
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
  /**
   * Row-sparse blocks sent as (row ids, rows), in ascending block order; `grads`
   * then holds every other block, in layout order. Absent: `grads` is the whole vector.
   */
  rows?: SparseRows[];
}

/**
 * From a relay, between its rounds: the workers it carries now (the parent applies it
 * at its next round). With `round`, also: it holds no work for that round (its last
 * worker left), so the parent stops waiting for it and hands its streams' state on.
 */
export interface CapacityMsg {
  type: 'capacity';
  capacity: number;
  round?: number;
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
  /** The global batch (number of streams): a relay sizes its stream table and its limits by it. Workers ignore it. */
  streams?: number;
  /** The coordinator takes row-sparse blocks as (row ids, rows) in `grads.rows`; absent: send every gradient dense. */
  sparseRows?: boolean;
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
  /**
   * Local SGD (--sync-every K > 1): the worker takes one inner step on `starts`, then one on each further batch
   * here, each followed by its own optimizer step, and replies with (params - its params) x tokens in `grads`.
   */
  local?: LocalSteps;
  /** The round's deadline, ms from sending: a relay answers well within it (without its late workers). Workers ignore it. */
  deadlineMs?: number;
}

export interface LocalSteps {
  /** (steps - 1) x (hi - lo) row starts: inner steps 2..steps, each laid out like `starts`. */
  starts: Int32Array;
  /** steps - 1 entries: 1 = every stream starts that inner step from zero state. */
  resets: Uint8Array;
  /** The inner optimizer. */
  optimizer: 'sgd' | 'adam';
  lr: number;
  clip: number;
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

export type WorkerMessage = HelloMsg | GradsMsg | LeaveMsg | CapacityMsg;
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
  /** the model's row-sparse blocks, which a gradient may send as rows; none: no `rows` accepted */
  rowSparse?: readonly RowSparseBlock[];
  /**
   * The receiver checks the gradient's values for Inf and NaN itself, in the
   * pass that decodes and sums them (GradAccumulator), so the validator skips
   * that pass over the bytes; every other check still happens here.
   */
  gradsFinitenessChecked?: boolean;
}

export interface CoordinatorMessageLimits {
  /** when known (after welcome), the exact element count of params */
  paramCount?: number;
}

