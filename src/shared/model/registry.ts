/**
 * Every model dptrain can train, by the name the config, the welcome message
 * and the checkpoint use. Adding a model: a file in this folder and one line here.
 */
import { DptrainError, ErrorCodes } from '../errors.js';
import { charLstm } from './char-lstm/index.js';
import { charGru, charRnn } from './char-cells/index.js';
import { stackGru, stackLstm, stackRnn } from './stack/index.js';
import type { HyperRule, ModelDescriptor, ModelKind } from './descriptor.js';

const MODELS: Record<string, ModelKind> = {
  [charLstm.name]: charLstm,
  [charGru.name]: charGru,
  [charRnn.name]: charRnn,
  [stackLstm.name]: stackLstm,
  [stackGru.name]: stackGru,
  [stackRnn.name]: stackRnn,
};

const POSITIVE_INTEGER: HyperRule = { integer: true, min: 1 };

function checkHyper(name: string, key: string, v: unknown, rule: HyperRule): number {
  const range = `${rule.min}${rule.max === undefined ? ' or more' : rule.belowMax ? ` to below ${rule.max}` : ` to ${rule.max}`}`;
  const what = rule.integer ? `an integer from ${range}` : `a number from ${range}`;
  const ok =
    typeof v === 'number' &&
    Number.isFinite(v) &&
    (!rule.integer || Number.isSafeInteger(v)) &&
    v >= rule.min &&
    (rule.max === undefined || (rule.belowMax ? v < rule.max : v <= rule.max));
  if (!ok) throw new DptrainError(ErrorCodes.ERR_BAD_CONFIG, `model ${name}: ${key} must be ${what}, got ${JSON.stringify(v)}`);
  return v as number;
}

export const MODEL_NAMES: readonly string[] = Object.keys(MODELS);
/** What every run was before models had names: checkpoints without a `model` key hold one. */
export const DEFAULT_MODEL = charLstm.name;

export function modelKind(name: string): ModelKind {
  const kind = Object.hasOwn(MODELS, name) ? MODELS[name] : undefined;
  if (!kind) throw new DptrainError(ErrorCodes.ERR_BAD_CONFIG, `unknown model ${JSON.stringify(name)}; known: ${MODEL_NAMES.join(', ')}`);
  return kind;
}

/** The descriptor for a vocabulary size and hyperparameters (refused unless each follows its rule: by default a positive integer). */
export function createModel(name: string, vocabSize: number, hyper: Readonly<Record<string, unknown>>): ModelDescriptor {
  const kind = modelKind(name);
  const h: Record<string, number> = {};
  for (const key of kind.hyperKeys) h[key] = checkHyper(name, key, hyper[key], kind.hyperRules?.[key] ?? POSITIVE_INTEGER);
  if (!Number.isSafeInteger(vocabSize) || vocabSize < 1) throw new DptrainError(ErrorCodes.ERR_BAD_CONFIG, `model ${name}: vocabulary size must be a positive integer, got ${vocabSize}`);
  return kind.create(vocabSize, h);
}

/** The cells `--cell` chooses from; cell X is the model char-X, or stack-X with more than d2l's single one-hot layer. */
export const CELLS = ['lstm', 'gru', 'rnn'] as const;
export const DEFAULT_CELL = 'lstm';

/**
 * The model `--cell`, `--layers`, `--dropout` and `--embedding` choose: one
 * layer on one-hot inputs without dropout stays today's char-X (its
 * checkpoints and its benchmarked step unchanged); anything else is stack-X.
 */
export function modelNameFor(cell: string, o: { layers?: number; dropout?: number; embedding?: number }): string {
  const plain = (o.layers ?? 1) === 1 && (o.dropout ?? 0) === 0 && (o.embedding ?? 0) === 0;
  return `${plain ? 'char' : 'stack'}-${cell}`;
}

/** The model a run's config names (`model`, default char-lstm), with its hyperparameters read from the same config. */
export function modelFromConfig(config: Readonly<Record<string, unknown>>, vocabSize: number): ModelDescriptor {
  const name = config.model === undefined ? DEFAULT_MODEL : config.model;
  if (typeof name !== 'string') throw new DptrainError(ErrorCodes.ERR_BAD_CONFIG, `model must be a name, got ${JSON.stringify(name)}`);
  return createModel(name, vocabSize, config);
}
