/**
 * Typed configuration: defaults from the option table, then a JSON/YAML config
 * file, then DPTRAIN_* environment variables, then flags. Unknown keys and
 * ill-typed or out-of-range values fail with one sentence (ERR_BAD_CONFIG,
 * exit code 2). The effective config is printed and saved in checkpoints.
 */
import tls from 'node:tls';
import YAML from 'yaml';
import type { Partition } from './data/batches.js';
import type { BackendChoice } from './backend.js';
import type { WireDtype } from './wire/tensor.js';
import { DptrainError } from './errors.js';
import { readSmallFile } from './small-file.js';
import { D2L_MAX_TOKENS, defaultMinFreq, type Preprocess, type TokenKind } from './data/corpus.js';
import { modelNameFor } from './model/registry.js';
import { camel, envVarFor, type OptionTable, COORDINATOR_OPTIONS, WORKER_OPTIONS } from './options.js';

export interface TrainConfig {
  corpus: string;
  dataDir?: string;
  maxTokens: number;
  maxCorpusBytes: number;
  preprocess: Preprocess;
  /** `--tokens`: char or word; checkTrainConfig sets `tokenizer` from it. */
  tokens?: TokenKind;
  /** Registry name of the tokenizer (src/shared/data/tokenizer.ts). */
  tokenizer: string;
  /** d2l's min_freq; checkTrainConfig resolves an unset one to the default of `tokens`. */
  minFreq: number;
  valFraction: number;
  batchSize: number;
  numSteps: number;
  /** `--cell`: lstm, gru or rnn; checkTrainConfig sets `model` from it. */
  cell?: string;
  /** Registry name of the model (src/shared/model/registry.ts): char-<cell>, or stack-<cell> with --layers, --dropout or --embedding; its hyperparameters are keys of this config (hidden, ...). */
  model: string;
  hidden: number;
  layers: number;
  dropout: number;
  embedding: number;
  epochs: number;
  lr: number;
  optimizer: 'sgd' | 'adam';
  clip: number;
  partition: Partition;
  seed: number;
}

export interface CoordinatorConfig extends TrainConfig {
  host: string;
  port: number;
  metricsHost: string;
  metricsPort: number;
  token?: string;
  tokenFile?: string;
  minWorkers: number;
  maxWorkers: number;
  roundTimeout: number;
  heartbeatInterval: number;
  helloTimeout: number;
  checkpointDir?: string;
  checkpointEvery: number;
  resume: boolean;
  overwrite: boolean;
  spawn: number;
  logEvery: number;
  sampleEvery: number;
  samplePrefix: string;
  sampleTemperature: number;
  wireDtype: WireDtype;
  tlsCert?: string;
  tlsKey?: string;
  backend: BackendChoice;
  workerBackend: BackendChoice;
  config?: string;
}

export interface WorkerConfig {
  coordinator: string;
  token?: string;
  tokenFile?: string;
  gpu?: number;
  backend: BackendChoice;
  metricsHost: string;
  metricsPort?: number;
  ca?: string;
  name?: string;
  maxRetries: number;
  reconnectGrace: number;
  config?: string;
}

/** Keys of TrainConfig that define the model and the data order: a resumed run must match them. */
export const TRAIN_KEYS: (keyof TrainConfig)[] = ['corpus', 'maxTokens', 'preprocess', 'tokenizer', 'minFreq', 'valFraction', 'batchSize', 'numSteps', 'model', 'hidden', 'layers', 'dropout', 'embedding', 'optimizer', 'partition', 'seed'];

function bad(msg: string): never {
  throw new DptrainError('ERR_BAD_CONFIG', msg);
}

/** A value as the user typed it: NaN and Infinity, which JSON would print as null, stay themselves. */
function shown(raw: unknown): string {
  return typeof raw === 'number' ? String(raw) : JSON.stringify(raw) ?? String(raw);
}

function coerce(flag: string, spec: OptionTable[string], raw: unknown, from: string): unknown {
  if (Array.isArray(raw) && from === 'command line') bad(`--${flag} was given ${raw.length} times; give it once`);
  let v = raw;
  if (spec.type === 'number') {
    if (typeof v === 'string' && v.trim() !== '') v = Number(v);
    if (typeof v !== 'number' || !Number.isFinite(v)) bad(`--${flag} must be a number, got ${shown(raw)} (${from})`);
    if (spec.integer && !Number.isInteger(v)) bad(`--${flag} must be an integer, got ${v} (${from})`);
    if (spec.min !== undefined && v < spec.min) bad(`--${flag} must be at least ${spec.min}, got ${v} (${from})`);
    if (spec.max !== undefined && v > spec.max) bad(`--${flag} must be at most ${spec.max}, got ${v} (${from})`);
  } else if (spec.type === 'boolean') {
    if (typeof v === 'string') {
      if (/^(1|true|yes|on)$/i.test(v)) v = true;
      else if (/^(0|false|no|off)$/i.test(v)) v = false;
    }
    if (typeof v !== 'boolean') bad(`--${flag} must be true or false, got ${shown(raw)} (${from})`);
  } else {
    if (typeof v === 'number') v = String(v);
    if (typeof v !== 'string') bad(`--${flag} must be a string, got ${shown(raw)} (${from})`);
    if (spec.choices && !spec.choices.includes(v)) bad(`--${flag} must be one of ${spec.choices.join(', ')}, got '${v}' (${from})`);
  }
  return v;
}

export function readConfigFile(file: string): Record<string, unknown> {
  const text = readSmallFile(file, 'config file').toString('utf8');
  let parsed: unknown;
  try {
    parsed = /\.json$/i.test(file) ? JSON.parse(text) : YAML.parse(text);
  } catch (e) {
    bad(`config file ${file} is not valid ${/\.json$/i.test(file) ? 'JSON' : 'YAML'}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) bad(`config file ${file} must hold a mapping of option names to values`);
  return parsed as Record<string, unknown>;
}

/**
 * Merge defaults < config file < env < explicit values, validating each.
 * `explicit` keys may be kebab-case flags or camelCase; undefined values are ignored.
 */
export function resolveOptions<T>(table: OptionTable, explicit: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): T {
  const byCamel = new Map(Object.keys(table).map((k) => [camel(k), k]));
  const toFlag = (k: string, from: string): string => {
    if (k in table) return k;
    const f = byCamel.get(k);
    if (f) return f;
    return bad(`unknown option '${k}' (${from}); see --help for the list`);
  };
  const out: Record<string, unknown> = {};
  for (const [flag, spec] of Object.entries(table)) if (spec.default !== undefined) out[camel(flag)] = spec.default;

  const layers: [Record<string, unknown>, string][] = [];
  const cfgFile = (explicit.config ?? (env[envVarFor('config')] || undefined)) as string | undefined;
  if (cfgFile !== undefined && 'config' in table) layers.push([readConfigFile(cfgFile), `config file ${cfgFile}`]);
  const fromEnv: Record<string, unknown> = {};
  for (const flag of Object.keys(table)) {
    const v = env[envVarFor(flag)];
    if (v !== undefined && v !== '') fromEnv[flag] = v;
  }
  layers.push([fromEnv, 'environment']);
  layers.push([explicit, 'command line']);
  for (const [values, from] of layers) {
    for (const [k, raw] of Object.entries(values)) {
      if (raw === undefined) continue;
      const flag = toFlag(k, from === 'environment' ? `${envVarFor(k)}` : from);
      const where = from === 'environment' ? envVarFor(flag) : from;
      out[camel(flag)] = coerce(flag, table[flag], raw, where);
    }
  }
  return out as T;
}

export function checkTrainConfig(c: TrainConfig): void {
  if (c.dropout >= 1) bad(`--dropout must be below 1 (it is the probability of dropping a unit), got ${c.dropout}`);
  if (c.dropout > 0 && c.layers === 1) bad(`--dropout ${c.dropout} applies between recurrent layers (as d2l and PyTorch), so it needs --layers 2 or more`);
  if (c.cell !== undefined) c.model = modelNameFor(c.cell, c);
  if (c.tokens !== undefined) c.tokenizer = c.tokens;
  // Resolved here, before a checkpoint compares them (TRAIN_KEYS), so a resume sees the numbers the run used.
  if (c.minFreq === undefined) c.minFreq = defaultMinFreq(c.tokenizer === 'word' ? 'word' : 'char');
  // d2l's 10,000-token cut belongs to the d2l character setup; any other corpus (and d2l's word examples) use it whole unless --max-tokens says otherwise.
  if (c.maxTokens === undefined) c.maxTokens = c.corpus.trim() === 'timemachine' && c.tokenizer !== 'word' ? D2L_MAX_TOKENS : 0;
  if (c.maxTokens !== 0 && c.maxTokens < c.batchSize * c.numSteps + c.numSteps + 1) {
    bad(`--max-tokens ${c.maxTokens} is less than one batch needs (batch-size * num-steps + num-steps + 1 = ${c.batchSize * c.numSteps + c.numSteps + 1})`);
  }
}

export function resolveCoordinatorConfig(explicit: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): CoordinatorConfig {
  const c = resolveOptions<CoordinatorConfig>(COORDINATOR_OPTIONS, explicit, env);
  checkTrainConfig(c);
  if ((c.tlsCert === undefined) !== (c.tlsKey === undefined)) bad('--tls-cert and --tls-key go together');
  if (c.tlsCert !== undefined && c.tlsKey !== undefined) {
    // Loaded here so a wrong path or a bad PEM stops at start-up with exit code 2, not as a stack trace after the corpus loads.
    const cert = readFileOrBad('--tls-cert', c.tlsCert);
    const key = readFileOrBad('--tls-key', c.tlsKey);
    try {
      tls.createSecureContext({ cert, key });
    } catch (e) {
      bad(`--tls-cert ${c.tlsCert} and --tls-key ${c.tlsKey} do not load as a PEM certificate and its private key: ${(e as Error).message}`);
    }
  }
  if (c.resume && !c.checkpointDir) bad('--resume needs --checkpoint-dir');
  if (c.overwrite && !c.checkpointDir) bad('--overwrite needs --checkpoint-dir');
  if (c.overwrite && c.resume) bad('give either --resume (continue the run in --checkpoint-dir) or --overwrite (replace it with a new run), not both');
  if (c.spawn > 0 && c.minWorkers > c.spawn) bad(`--min-workers ${c.minWorkers} can never be reached with --spawn ${c.spawn} and no other workers; lower it or spawn more`);
  if (c.minWorkers > c.maxWorkers) bad(`--min-workers ${c.minWorkers} exceeds --max-workers ${c.maxWorkers}`);
  if (c.minWorkers > c.batchSize) bad(`--min-workers ${c.minWorkers} exceeds --batch-size ${c.batchSize}: every worker needs at least one stream`);
  return c;
}

export function resolveWorkerConfig(explicit: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  const c = resolveOptions<WorkerConfig>(WORKER_OPTIONS, explicit, env);
  if (!/^wss?:\/\/[^/\s]+/.test(c.coordinator)) bad(`--coordinator must look like ws://HOST:PORT or wss://HOST:PORT, got '${c.coordinator}'`);
  if (c.gpu !== undefined && (c.backend === 'wasm' || c.backend === 'cpu')) bad(`--gpu needs --backend auto or tensorflow, not ${c.backend}`);
  if (c.ca !== undefined) readFileOrBad('--ca', c.ca);
  return c;
}

function readFileOrBad(flag: string, file: string): Buffer {
  return readSmallFile(file, flag);
}

/** The shortest token a coordinator accepts: a guessable secret guards the whole corpus and the model. */
export const MIN_TOKEN_LENGTH = 8;

/**
 * The token from --token, DPTRAIN_TOKEN or --token-file (first line), or undefined when none was given.
 * A blank token is refused everywhere; `minLength` is the coordinator's, which sets the secret.
 */
export function readToken(c: { token?: string; tokenFile?: string }, o: { minLength?: number } = {}): string | undefined {
  if (c.token !== undefined && c.tokenFile !== undefined) bad('give either --token or --token-file, not both');
  let t: string;
  let from: string;
  if (c.tokenFile !== undefined) {
    const text = readSmallFile(c.tokenFile, '--token-file', 64 * 1024).toString('utf8');
    t = text.split(/\r?\n/)[0].trim();
    from = `--token-file ${c.tokenFile}`;
    if (t === '') bad(`${from} is empty`);
  } else if (c.token !== undefined) {
    t = c.token;
    from = `--token (or ${envVarFor('token')})`;
    if (t.trim() === '') bad(`${from} is blank; give the shared secret, or leave it out with --spawn for a generated one`);
  } else return undefined;
  if (o.minLength !== undefined && t.length < o.minLength) {
    bad(`the token from ${from} has ${t.length} characters; use at least ${o.minLength} (for example: openssl rand -base64 24)`);
  }
  return t;
}

/** JSON-safe copy without secrets, for logs and checkpoints. */
export function publicConfig(c: object, table: OptionTable): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(c)) {
    const flag = Object.keys(table).find((f) => camel(f) === k);
    if (flag && table[flag].secret) continue;
    if (v !== undefined) out[k] = v;
  }
  return out;
}
