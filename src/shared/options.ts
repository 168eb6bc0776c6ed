/**
 * The command-line options of every command, in one table: yargs, the
 * DPTRAIN_* environment variables, config files, the README and the deploy
 * manifests' test are all derived from it.
 */
import { BACKEND_CHOICES } from './backend.js';
import { CELLS, DEFAULT_CELL } from './model/registry.js';
import { TOKEN_KINDS } from './data/corpus.js';

export interface OptionSpec {
  type: 'string' | 'number' | 'boolean';
  describe: string;
  default?: unknown;
  choices?: readonly string[];
  /** Inclusive bounds for numbers. */
  min?: number;
  max?: number;
  integer?: boolean;
  /** Kept out of logs, checkpoints and the effective-config print. */
  secret?: boolean;
  /** The command refuses to run without it (ERR_BAD_CONFIG): checked by the CLI for every table. */
  required?: boolean;
}

export type OptionTable = Record<string, OptionSpec>;

const TRAIN_OPTIONS = {
  corpus: { type: 'string', default: 'mobydick', describe: 'timemachine (downloaded, SHA-1 checked), mobydick (bundled, offline), a .txt file, a folder of .txt files, or an http(s) URL' },
  'data-dir': { type: 'string', describe: 'where downloaded corpora are cached (default $DPTRAIN_DATA_DIR or ./data)' },
  'max-tokens': { type: 'number', integer: true, min: 0, describe: 'use only the first N tokens of the corpus and stop reading there, 0 = all (default: 10000 for timemachine as d2l, else all)' },
  'max-corpus-bytes': { type: 'number', default: 268435456, integer: true, min: 1, describe: 'refuse a corpus (file, folder or download) larger than this many bytes (default 256 MiB); with --max-tokens only the bytes read count' },
  preprocess: { type: 'string', default: 'd2l', choices: ['d2l', 'none'], describe: 'd2l: keep only the letters A-Z, lower-cased, other runs one space (read_time_machine); none: every character is a token, as is (case kept, line ends as \\n)' },
  tokens: { type: 'string', default: 'char', choices: TOKEN_KINDS, describe: "how text becomes tokens, as d2l's tokenize(lines, token): char = every character of the preprocessed text; word = every whitespace-separated word (generation joins words with spaces)" },
  'min-freq': { type: 'number', integer: true, min: 0, max: 4294967295, describe: "d2l's Vocab min_freq: tokens seen fewer times in the corpus become the unknown token (default: 0 for char, as d2l; 2 for word: words seen once are over 40% of a book's distinct words and cannot be learned)" },
  'val-fraction': { type: 'number', default: 0.1, min: 0, max: 0.5, describe: 'last fraction of the corpus held out for validation perplexity' },
  'batch-size': { type: 'number', default: 32, integer: true, min: 1, max: 65536, describe: 'number of parallel streams (global batch), split over the workers' },
  'num-steps': { type: 'number', default: 35, integer: true, min: 1, max: 10000, describe: 'time steps per batch (truncated BPTT length)' },
  cell: { type: 'string', default: DEFAULT_CELL, choices: CELLS, describe: 'recurrent cell of the d2l model: lstm, gru (reset gate before the recurrent matMul, as d2l) or rnn (tanh)' },
  hidden: { type: 'number', default: 256, integer: true, min: 1, max: 16384, describe: 'hidden units of each recurrent layer' },
  layers: { type: 'number', default: 1, integer: true, min: 1, max: 64, describe: "recurrent layers (d2l deep RNN): layer l reads layer l-1's hidden state; every layer's state is carried per stream" },
  dropout: { type: 'number', default: 0, min: 0, max: 1, describe: 'dropout probability on the output of every recurrent layer but the last (as d2l and PyTorch), in training only; needs --layers 2 or more; below 1' },
  embedding: { type: 'number', default: 0, integer: true, min: 0, max: 16384, describe: 'size of a learned input embedding (W_emb, vocabulary x E, normal(0, 0.01) init); 0 = one-hot inputs as d2l' },
  epochs: { type: 'number', default: 500, integer: true, min: 1, describe: 'passes over the training split' },
  lr: { type: 'number', default: 1, min: 1e-12, max: 1e6, describe: 'learning rate' },
  optimizer: { type: 'string', default: 'sgd', choices: ['sgd', 'adam'], describe: 'optimizer (tfjs): sgd as d2l, or adam' },
  clip: { type: 'number', default: 1, min: 1e-12, describe: 'clip the averaged gradient to this global norm (d2l theta)' },
  partition: { type: 'string', default: 'sequential', choices: ['sequential', 'random'], describe: 'd2l sequential (state carried across batches) or random (state reset every batch) partitioning' },
  seed: { type: 'number', default: 0, integer: true, min: 0, max: 4294967295, describe: 'seed of parameter init and data order' },
} as const satisfies OptionTable;

const TOKEN_OPTIONS = {
  token: { type: 'string', secret: true, describe: 'shared secret workers present; prefer --token-file or DPTRAIN_TOKEN (flags show in ps)' },
  'token-file': { type: 'string', describe: 'file whose first line is the shared secret' },
} as const satisfies OptionTable;

export const COORDINATOR_OPTIONS = {
  ...TRAIN_OPTIONS,
  host: { type: 'string', default: '0.0.0.0', describe: 'address the WebSocket server binds' },
  port: { type: 'number', default: 8765, integer: true, min: 0, max: 65535, describe: 'WebSocket port (0 = any free port)' },
  'metrics-host': { type: 'string', default: '127.0.0.1', describe: 'address of the metrics/status HTTP server; unauthenticated, so loopback unless widened (0.0.0.0 for a Prometheus elsewhere)' },
  'metrics-port': { type: 'number', default: 9400, integer: true, min: -1, max: 65535, describe: 'HTTP port of /metrics, /healthz, /readyz and the status page (0 = any free port, -1 = off)' },
  ...TOKEN_OPTIONS,
  'min-workers': { type: 'number', default: 1, integer: true, min: 1, describe: 'training pauses while fewer workers are connected' },
  'max-workers': { type: 'number', default: 64, integer: true, min: 1, max: 4096, describe: 'connection limit (workers beyond it are refused)' },
  'round-timeout': { type: 'number', default: 0, min: 0, max: 86400, describe: 'seconds a round waits for gradients before dropping late workers; 0 = derived from recent step times (10x the median, 5 s to 120 s)' },
  'heartbeat-interval': { type: 'number', default: 5, min: 0.05, max: 3600, describe: 'seconds between WebSocket pings; a worker silent for two intervals is terminated' },
  'hello-timeout': { type: 'number', default: 10, min: 0.05, max: 3600, describe: 'seconds an unauthenticated socket may stay open before saying hello' },
  'checkpoint-dir': { type: 'string', describe: 'directory of the checkpoint (written atomically); no checkpoints without it' },
  'checkpoint-every': { type: 'number', default: 100, integer: true, min: 0, describe: 'steps between checkpoints (0 = only at the end and on SIGINT/SIGTERM)' },
  resume: { type: 'boolean', default: false, describe: 'continue from the checkpoint in --checkpoint-dir (an existing empty directory starts fresh; a finished run exits 0 at once)' },
  overwrite: { type: 'boolean', default: false, describe: 'start a new run in a --checkpoint-dir that already holds a checkpoint, replacing it' },
  spawn: { type: 'number', default: 0, integer: true, min: 0, max: 256, describe: 'start N local worker processes (one-command local mode; a token is generated)' },
  'log-every': { type: 'number', default: 10, integer: true, min: 1, describe: 'epochs between log lines (with validation perplexity)' },
  'sample-every': { type: 'number', default: 50, integer: true, min: 0, describe: 'epochs between generated samples from --sample-prefix (0 = never)' },
  'sample-prefix': { type: 'string', default: 'time traveller', describe: 'prefix of the generated samples (words with --tokens word; unknown ones are read as the unknown token, with a warning)' },
  'sample-temperature': { type: 'number', default: 0, min: 0, max: 100, describe: 'temperature of the samples: 0 = greedy (d2l predict_ch8; often loops on a short phrase), else drawn from softmax(logits / T), e.g. 0.6' },
  'wire-dtype': { type: 'string', default: 'float32', choices: ['float32', 'float16', 'bfloat16'], describe: 'precision of parameters and gradients on the wire' },
  'tls-cert': { type: 'string', describe: 'PEM certificate: serve wss:// instead of ws://' },
  'tls-key': { type: 'string', describe: 'PEM private key for --tls-cert' },
  backend: { type: 'string', default: 'auto', choices: BACKEND_CHOICES, describe: 'tfjs backend of the coordinator (optimizer, validation, samples)' },
  'worker-backend': { type: 'string', default: 'auto', choices: BACKEND_CHOICES, describe: 'backend of the --spawn workers' },
  config: { type: 'string', describe: 'JSON or YAML file of options (keys as flags); flags and env override it' },
} as const satisfies OptionTable;

export const WORKER_OPTIONS = {
  coordinator: { type: 'string', default: 'ws://127.0.0.1:8765', describe: 'coordinator URL, ws://HOST:PORT or wss://HOST:PORT' },
  ...TOKEN_OPTIONS,
  gpu: { type: 'number', integer: true, min: 0, max: 1023, describe: 'GPU index: sets CUDA_VISIBLE_DEVICES and loads @tensorflow/tfjs-node-gpu' },
  backend: { type: 'string', default: 'auto', choices: BACKEND_CHOICES, describe: 'auto = tfjs-node-gpu if --gpu, else tfjs-node, else wasm, else cpu' },
  'metrics-host': { type: 'string', default: '127.0.0.1', describe: "address of the worker's own /metrics, /healthz and /readyz (loopback unless widened)" },
  'metrics-port': { type: 'number', integer: true, min: 0, max: 65535, describe: "serve the worker's own /metrics on this port (off by default)" },
  ca: { type: 'string', describe: 'PEM CA certificate to trust for wss://' },
  name: { type: 'string', describe: 'worker name shown on the status page (default host:pid)' },
  'max-retries': { type: 'number', default: 0, integer: true, min: 0, describe: 'give up after the first attempt and N retries failed in a row (0 = no limit; backoff up to 30 s)' },
  'reconnect-grace': { type: 'number', default: 300, min: 0, max: 86400, describe: 'seconds without a coordinator (it restarted, moved or vanished) before giving up with exit 1 (0 = never give up)' },
  config: { type: 'string', describe: 'JSON or YAML file of options' },
} as const satisfies OptionTable;

export const GENERATE_OPTIONS = {
  checkpoint: { type: 'string', default: './checkpoints', describe: 'checkpoint directory' },
  prefix: { type: 'string', default: 'time traveller', describe: 'text to warm the state up on, preprocessed as the corpus was (words for a word model; unknown ones are read as the unknown token, with a warning)' },
  length: { type: 'number', default: 50, integer: true, min: 1, max: 100000, describe: 'tokens to generate: characters, or words (joined by spaces) for a word model' },
  temperature: { type: 'number', default: 0, min: 0, max: 100, describe: '0 = greedy (d2l predict_ch8), else sample from softmax(logits / T)' },
  seed: { type: 'number', default: 0, integer: true, min: 0, max: 4294967295, describe: 'seed for temperature sampling' },
  backend: { type: 'string', default: 'auto', choices: BACKEND_CHOICES, describe: 'tfjs backend' },
} as const satisfies OptionTable;

export const EXPORT_OPTIONS = {
  checkpoint: { type: 'string', default: './checkpoints', describe: 'checkpoint directory' },
  out: { type: 'string', required: true, describe: 'output directory for model.json + weights.bin (tf.loadLayersModel); created if missing, its parent must exist' },
  overwrite: { type: 'boolean', default: false, describe: 'replace a model.json already in --out' },
} as const satisfies OptionTable;

/** `metrics-port` -> `DPTRAIN_METRICS_PORT`. */
export function envVarFor(flag: string): string {
  return 'DPTRAIN_' + flag.toUpperCase().replace(/-/g, '_');
}

export function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}
