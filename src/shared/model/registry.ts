/**
 * Every model dptrain can train, by the name the config, the welcome message
 * and the checkpoint use. Adding a model: a file in this folder and one line here.
 */
import { DptrainError, ErrorCodes } from '../errors.js';
import { charLstm } from './char-lstm/index.js';
import { charGru, charRnn } from './char-cells/index.js';
import type { ModelDescriptor, ModelKind } from './descriptor.js';

const MODELS: Record<string, ModelKind> = {
  [charLstm.name]: charLstm,
  [charGru.name]: charGru,
  [charRnn.name]: charRnn,
};

export const MODEL_NAMES: readonly string[] = Object.keys(MODELS);
/** What every run was before models had names: checkpoints without a `model` key hold one. */
export const DEFAULT_MODEL = charLstm.name;

export function modelKind(name: string): ModelKind {
  const kind = Object.hasOwn(MODELS, name) ? MODELS[name] : undefined;
  if (!kind) throw new DptrainError(ErrorCodes.ERR_BAD_CONFIG, `unknown model ${JSON.stringify(name)}; known: ${MODEL_NAMES.join(', ')}`);
  return kind;
}

/** The descriptor for a vocabulary size and hyperparameters (refused unless each is a positive integer). */
export function createModel(name: string, vocabSize: number, hyper: Readonly<Record<string, unknown>>): ModelDescriptor {
  const kind = modelKind(name);
  const h: Record<string, number> = {};
  for (const key of kind.hyperKeys) {
    const v = hyper[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
      throw new DptrainError(ErrorCodes.ERR_BAD_CONFIG, `model ${name}: ${key} must be a positive integer, got ${JSON.stringify(v)}`);
    }
    h[key] = v;
  }
  if (!Number.isSafeInteger(vocabSize) || vocabSize < 1) throw new DptrainError(ErrorCodes.ERR_BAD_CONFIG, `model ${name}: vocabulary size must be a positive integer, got ${vocabSize}`);
  return kind.create(vocabSize, h);
}

/** The cells `--cell` chooses from; cell X is the model char-X. */
export const CELLS = ['lstm', 'gru', 'rnn'] as const;
export const DEFAULT_CELL = 'lstm';

/** The model a run's config names (`model`, default char-lstm), with its hyperparameters read from the same config. */
export function modelFromConfig(config: Readonly<Record<string, unknown>>, vocabSize: number): ModelDescriptor {
  const name = config.model === undefined ? DEFAULT_MODEL : config.model;
  if (typeof name !== 'string') throw new DptrainError(ErrorCodes.ERR_BAD_CONFIG, `model must be a name, got ${JSON.stringify(name)}`);
  return createModel(name, vocabSize, config);
}
