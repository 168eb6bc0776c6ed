/**
 * The checkpoint file format: everything needed to resume a run exactly
 * (parameters, optimizer slots, data RNG position, the config it ran with).
 *
 * File layout, all integers little-endian:
 *   'DPTC' | format u32 | payload length u32 | payload (msgpack) | SHA-256 of everything before it
 * The checksum covers the header too, so a flipped bit anywhere, a truncation
 * or trailing bytes are all caught before msgpack sees the payload.
 * Float arrays travel as `bin` holding little-endian float32 bytes.
 */
import { createHash } from 'node:crypto';
import { HOST_LITTLE_ENDIAN, plainPackr } from '../msgpack.js';
import { createModel, modelFromConfig } from '../model/registry.js';
import type { ModelDescriptor } from '../model/descriptor.js';
import { PREPROCESS_CHOICES, type Preprocess } from '../data/corpus.js';
import { createTokenizer, DEFAULT_TOKENIZER, TOKENIZER_NAMES, type TextTokenizer } from '../data/tokenizer.js';
import { Vocab } from '../data/vocab.js';

export const CHECKPOINT_FORMAT = 1;
export const CHECKPOINT_FILE = 'checkpoint.dpt';
export const CHECKPOINT_PREV_FILE = 'checkpoint.prev.dpt';

export type RngState4 = [number, number, number, number];

export interface OptimizerSlot {
  name: string;
  values: Float32Array;
  shape: number[];
}

export interface HistoryEntry {
  step: number;
  epoch: number;
  trainPerplexity: number;
  validationPerplexity?: number;
  tokensPerSecond?: number;
}

export interface CheckpointData {
  format: number;
  /** ISO time. */
  createdAt: string;
  /** Optimizer steps applied. */
  step: number;
  /** Epoch index in progress. */
  epoch: number;
  /** Next batch within that epoch. */
  batchIndex: number;
  /** Data RNG state at the start of `epoch`; the epoch plan is regenerated from it. */
  epochRngState: RngState4;
  /** Data RNG state now. */
  rngState: RngState4;
  params: Float32Array;
  optimizer: { name: string; state: OptimizerSlot[] };
  vocab: string[];
  /**
   * How text became the ids of `vocab`: the tokenizer (--tokens), d2l's
   * min_freq and the preprocessing. Checkpoints written before word tokens
   * lack it: theirs follows from `config` (char, min-freq 0); see checkpointTokenizer.
   */
  tokenizer?: TokenizerField;
  corpusSha1: string;
  /** The effective training config (JSON-safe values). */
  config: Record<string, unknown>;
  history?: HistoryEntry[];
  /** Carried state of every stream (batchSize x the model's stateWidth), so a resumed sequential run continues exactly. */
  streamState?: Float32Array;
  /**
   * The model's registry name and hyperparameters. Checkpoints written before
   * models had names lack it: their model follows from `config` (a char-LSTM
   * of config.hidden units); see checkpointModel.
   */
  model?: { name: string; hyper: Record<string, number> };
}

export interface TokenizerField {
  kind: string;
  minFreq: number;
  preprocess: Preprocess;
}

/** The tokenizer a config describes (old configs: char, min-freq 0, d2l). */
export function tokenizerField(config: Record<string, unknown>): TokenizerField {
  const kind = typeof config.tokenizer === 'string' ? config.tokenizer : DEFAULT_TOKENIZER;
  const m = config.minFreq;
  const p = config.preprocess;
  return {
    kind,
    minFreq: typeof m === 'number' && Number.isSafeInteger(m) && m >= 0 ? m : 0,
    preprocess: typeof p === 'string' && (PREPROCESS_CHOICES as readonly string[]).includes(p) ? (p as Preprocess) : 'd2l',
  };
}

/** The tokenizer of a checkpoint: its `tokenizer` field, or for older checkpoints the one its config describes. */
export function checkpointTokenizer(ck: Pick<CheckpointData, 'tokenizer' | 'config' | 'vocab'>): TextTokenizer {
  const t = ck.tokenizer ?? tokenizerField(ck.config);
  return createTokenizer(t.kind, Vocab.fromList([...ck.vocab]), t.preprocess, t.minFreq);
}

/** The model a checkpoint holds: its `model` field, or for older checkpoints the one its config describes. */
export function checkpointModel(ck: Pick<CheckpointData, 'model' | 'config' | 'vocab'>): ModelDescriptor {
  return ck.model ? createModel(ck.model.name, ck.vocab.length, ck.model.hyper) : modelFromConfig(ck.config, ck.vocab.length);
}

const MAGIC = Uint8Array.from([0x44, 0x50, 0x54, 0x43]); // 'DPTC'
const HEADER_BYTES = 12;
const DIGEST_BYTES = 32;
const packr = plainPackr({ int64AsType: 'number' });

// ---------------------------------------------------------------------------
// Encoding

function f32ToBytes(a: Float32Array): Uint8Array {
  if (HOST_LITTLE_ENDIAN) return new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
  const out = new Uint8Array(a.length * 4);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < a.length; i++) dv.setFloat32(i * 4, a[i], true);
  return out;
}

/** Copies into a fresh, aligned Float32Array: msgpackr hands out unaligned slices of the file buffer. */
function bytesToF32(b: Uint8Array): Float32Array {
  const out = new Float32Array(b.byteLength / 4);
  if (HOST_LITTLE_ENDIAN) {
    new Uint8Array(out.buffer).set(b);
  } else {
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    for (let i = 0; i < out.length; i++) out[i] = dv.getFloat32(i * 4, true);
  }
  return out;
}

export function encodeFile(data: CheckpointData): Uint8Array {
  const payload: Record<string, unknown> = {
    format: data.format,
    createdAt: data.createdAt,
    step: data.step,
    epoch: data.epoch,
    batchIndex: data.batchIndex,
    epochRngState: [...data.epochRngState],
    rngState: [...data.rngState],
    params: f32ToBytes(data.params),
    optimizer: {
      name: data.optimizer.name,
      state: data.optimizer.state.map((s) => ({ name: s.name, values: f32ToBytes(s.values), shape: [...s.shape] })),
    },
    vocab: data.vocab,
    corpusSha1: data.corpusSha1,
    config: data.config,
  };
  if (data.history !== undefined) payload.history = data.history.map(cleanHistoryEntry);
  if (data.streamState !== undefined) payload.streamState = f32ToBytes(data.streamState);
  if (data.model !== undefined) payload.model = { name: data.model.name, hyper: { ...data.model.hyper } };
  if (data.tokenizer !== undefined) payload.tokenizer = { ...data.tokenizer };
  const body: Uint8Array = packr.pack(payload);
  if (body.byteLength > 0xffffffff) {
    throw new RangeError(`checkpoint payload of ${body.byteLength} bytes exceeds the format's 4 GiB limit`);
  }
  const out = new Uint8Array(HEADER_BYTES + body.byteLength + DIGEST_BYTES);
  out.set(MAGIC, 0);
  const dv = new DataView(out.buffer);
  dv.setUint32(4, CHECKPOINT_FORMAT, true);
  dv.setUint32(8, body.byteLength, true);
  out.set(body, HEADER_BYTES);
  const digest = createHash('sha256').update(out.subarray(0, HEADER_BYTES + body.byteLength)).digest();
  out.set(digest, HEADER_BYTES + body.byteLength);
  return out;
}

function cleanHistoryEntry(h: HistoryEntry): HistoryEntry {
  const out: HistoryEntry = { step: h.step, epoch: h.epoch, trainPerplexity: h.trainPerplexity };
  if (h.validationPerplexity != null) out.validationPerplexity = h.validationPerplexity;
  if (h.tokensPerSecond != null) out.tokensPerSecond = h.tokensPerSecond;
  return out;
}

// ---------------------------------------------------------------------------
// Decoding and validation

/** Thrown inside the decoder; the caller turns it into ERR_CHECKPOINT_CORRUPT naming the file. */
/** A file that is not a valid checkpoint; the reader turns it into ERR_CHECKPOINT_CORRUPT. */
export class Invalid extends Error {}

export function decodeFile(buf: Uint8Array): CheckpointData {
  if (buf.byteLength < HEADER_BYTES + DIGEST_BYTES) throw new Invalid(`it is only ${buf.byteLength} bytes long (truncated)`);
  for (let i = 0; i < MAGIC.length; i++) {
    if (buf[i] !== MAGIC[i]) throw new Invalid('it does not start with the DPTC magic bytes (not a dptrain checkpoint)');
  }
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const version = dv.getUint32(4, true);
  const bodyLen = dv.getUint32(8, true);
  const expected = HEADER_BYTES + bodyLen + DIGEST_BYTES;
  if (buf.byteLength !== expected) {
    throw new Invalid(
      buf.byteLength < expected
        ? `it is ${buf.byteLength} bytes long but its header announces ${expected} (truncated)`
        : `it has ${buf.byteLength - expected} unexpected trailing bytes`,
    );
  }
  const digest = createHash('sha256').update(buf.subarray(0, HEADER_BYTES + bodyLen)).digest();
  if (!digest.equals(buf.subarray(HEADER_BYTES + bodyLen))) throw new Invalid('its SHA-256 checksum does not match its contents');
  if (version !== CHECKPOINT_FORMAT) {
    throw new Invalid(`it is format version ${version}, and this dptrain reads version ${CHECKPOINT_FORMAT} only`);
  }
  let raw: unknown;
  try {
    raw = packr.unpack(buf.subarray(HEADER_BYTES, HEADER_BYTES + bodyLen));
  } catch (e) {
    throw new Invalid(`its payload is not valid msgpack (${(e as Error).message})`);
  }
  return validate(raw);
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array);
}

function need(cond: boolean, what: string): asserts cond {
  if (!cond) throw new Invalid(what);
}

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

function isRngState(x: unknown): x is RngState4 {
  return Array.isArray(x) && x.length === 4 && x.every((w) => typeof w === 'number' && Number.isInteger(w) && w >= 0 && w <= 0xffffffff);
}

function floatArrayField(x: unknown, what: string): Float32Array {
  need(x instanceof Uint8Array && x.byteLength % 4 === 0, `${what} is not a float32 byte array`);
  return bytesToF32(x);
}

function firstNonFinite(a: Float32Array): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i;
  return -1;
}

/**
 * Checks a decoded payload field by field and rebuilds it with known fields
 * only, so a reader never trusts the shape of what it found on disk.
 */
function validate(raw: unknown): CheckpointData {
  need(isObject(raw), 'its payload is not a map');
  need(raw.format === CHECKPOINT_FORMAT, `its format field is ${JSON.stringify(raw.format)}, expected ${CHECKPOINT_FORMAT}`);
  need(typeof raw.createdAt === 'string', 'createdAt is not a string');
  need(isCount(raw.step), 'step is not a non-negative integer');
  need(isCount(raw.epoch), 'epoch is not a non-negative integer');
  need(isCount(raw.batchIndex), 'batchIndex is not a non-negative integer');
  need(isRngState(raw.epochRngState), 'epochRngState is not four unsigned 32-bit integers');
  need(isRngState(raw.rngState), 'rngState is not four unsigned 32-bit integers');
  need(Array.isArray(raw.vocab) && raw.vocab.length > 0 && raw.vocab.every((s) => typeof s === 'string'), 'vocab is not a non-empty list of strings');
  need(new Set(raw.vocab).size === raw.vocab.length, 'vocab holds duplicate entries');
  need(typeof raw.corpusSha1 === 'string', 'corpusSha1 is not a string');
  need(isObject(raw.config), 'config is not a map');
  let modelField: CheckpointData['model'];
  if (raw.model != null) {
    const m = raw.model;
    need(isObject(m) && typeof m.name === 'string' && isObject(m.hyper), 'model is not a map with a name and hyperparameters');
    need(Object.values(m.hyper).every((v) => typeof v === 'number'), 'model.hyper holds a value that is not a number');
    modelField = { name: m.name, hyper: { ...(m.hyper as Record<string, number>) } };
  }
  let tokenizer: TokenizerField | undefined;
  if (raw.tokenizer != null) {
    const t = raw.tokenizer;
    need(isObject(t) && typeof t.kind === 'string' && isCount(t.minFreq) && typeof t.preprocess === 'string', 'tokenizer is not a map with a kind, a min-freq and a preprocessing');
    need(TOKENIZER_NAMES.includes(t.kind), `its tokenizer ${JSON.stringify(t.kind)} is not one this dptrain knows (${TOKENIZER_NAMES.join(', ')})`);
    need((PREPROCESS_CHOICES as readonly string[]).includes(t.preprocess), `its tokenizer's preprocessing ${JSON.stringify(t.preprocess)} is not one of ${PREPROCESS_CHOICES.join(', ')}`);
    need(raw.vocab[0] === '<unk>', 'vocab does not start with <unk>');
    tokenizer = { kind: t.kind, minFreq: t.minFreq, preprocess: t.preprocess as Preprocess };
  }
  let model: ModelDescriptor;
  try {
    model = checkpointModel({ model: modelField, config: raw.config, vocab: raw.vocab });
  } catch (e) {
    throw new Invalid(`its model cannot be built: ${(e as Error).message}`);
  }

  const params = floatArrayField(raw.params, 'params');
  need(
    params.length === model.paramCount,
    `params holds ${params.length} values but vocab size ${raw.vocab.length} and ${model.sizeFlags.replace(/^--/, '')} need ${model.paramCount}`,
  );
  const bad = firstNonFinite(params);
  need(bad < 0, `params[${bad}] is ${params[bad]}`);

  need(isObject(raw.optimizer), 'optimizer is not a map');
  need(typeof raw.optimizer.name === 'string', 'optimizer.name is not a string');
  need(Array.isArray(raw.optimizer.state), 'optimizer.state is not a list');
  const state: OptimizerSlot[] = raw.optimizer.state.map((s: unknown, k: number) => {
    const where = `optimizer.state[${k}]`;
    need(isObject(s) && typeof s.name === 'string', `${where} has no name`);
    need(Array.isArray(s.shape) && s.shape.every(isCount), `${where}.shape is not a list of non-negative integers`);
    const values = floatArrayField(s.values, `${where}.values`);
    const size = (s.shape as number[]).reduce((a, b) => a * b, 1);
    need(values.length === size, `${where} (${s.name}) holds ${values.length} values but its shape [${s.shape}] needs ${size}`);
    const badSlot = firstNonFinite(values);
    need(badSlot < 0, `${where} (${s.name}) value ${badSlot} is ${values[badSlot]}`);
    return { name: s.name, values, shape: [...(s.shape as number[])] };
  });

  const out: CheckpointData = {
    format: raw.format,
    createdAt: raw.createdAt,
    step: raw.step,
    epoch: raw.epoch,
    batchIndex: raw.batchIndex,
    epochRngState: [...raw.epochRngState] as RngState4,
    rngState: [...raw.rngState] as RngState4,
    params,
    optimizer: { name: raw.optimizer.name, state },
    vocab: [...raw.vocab],
    corpusSha1: raw.corpusSha1,
    config: raw.config,
  };
  if (raw.streamState != null) {
    const st = floatArrayField(raw.streamState, 'streamState');
    need(firstNonFinite(st) < 0, 'streamState holds a non-finite value');
    out.streamState = st;
  }
  if (modelField) out.model = modelField;
  if (tokenizer) out.tokenizer = tokenizer;
  if (raw.history != null) {
    need(Array.isArray(raw.history), 'history is not a list');
    const num = (x: unknown) => typeof x === 'number';
    const opt = (x: unknown) => x == null || typeof x === 'number';
    out.history = raw.history.map((h: unknown, k: number) => {
      need(
        isObject(h) && num(h.step) && num(h.epoch) && num(h.trainPerplexity) && opt(h.validationPerplexity) && opt(h.tokensPerSecond),
        `history[${k}] is not a {step, epoch, trainPerplexity} record`,
      );
      return cleanHistoryEntry(h as unknown as HistoryEntry);
    });
  }
  return out;
}

