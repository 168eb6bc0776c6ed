/**
 * Text to token ids with the semantics of d2l's `read_time_machine` and
 * `load_corpus_time_machine`, plus a held-out tail for validation.
 */
import { DptrainError } from './errors.js';
import { Vocab } from './vocab.js';

/**
 * Python's text-mode readlines() uses universal newlines, so a lone '\r' also
 * ends a line; since lines are later joined without a separator, that choice
 * changes the token stream and has to match.
 */
export function preprocessLines(text: string): string[] {
  return text.split(/\r\n|\r|\n/).map((line) => line.replace(/[^A-Za-z]+/g, ' ').trim().toLowerCase());
}

export interface Corpus {
  vocab: Vocab;
  train: Int32Array;
  validation: Int32Array;
  /** Tokens in the whole text, before maxTokens truncation (train + validation may be fewer). */
  totalTokens: number;
}

export interface BuildOptions {
  /** 0 or undefined keeps all tokens; d2l uses 10000. */
  maxTokens?: number;
  /** Tail fraction held out for validation, in [0, 0.5]; default 0.1. */
  valFraction?: number;
}

export function buildCorpus(text: string, opts: BuildOptions = {}): Corpus {
  const maxTokens = opts.maxTokens ?? 0;
  const valFraction = opts.valFraction ?? 0.1;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) {
    throw new DptrainError('ERR_BAD_CONFIG', `maxTokens must be a non-negative integer (0 means all), got ${maxTokens}.`);
  }
  if (!(Number.isFinite(valFraction) && valFraction >= 0 && valFraction <= 0.5)) {
    throw new DptrainError('ERR_BAD_CONFIG', `The validation fraction must be between 0 and 0.5, got ${valFraction}.`);
  }

  const stream = preprocessLines(text).join('');
  if (stream.length === 0) {
    throw new DptrainError('ERR_CORPUS_EMPTY', 'The corpus contains no letters, so it has no tokens to train on.');
  }
  // d2l builds the vocabulary from every token and only then truncates the id sequence.
  const vocab = Vocab.fromTokens(stream);
  const all = vocab.encode(stream);
  const used = maxTokens > 0 && maxTokens < all.length ? all.subarray(0, maxTokens) : all;

  const n = used.length;
  const nVal = Math.floor(n * valFraction);
  return {
    vocab,
    // Copies, so neither split pins the untruncated buffer in memory.
    train: used.slice(0, n - nVal),
    validation: used.slice(n - nVal),
    totalTokens: all.length,
  };
}
