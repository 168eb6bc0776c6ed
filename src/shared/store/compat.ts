/** Whether a checkpoint fits the run about to resume from it. */
import { isDeepStrictEqual } from 'node:util';
import { DptrainError, ErrorCodes } from '../errors.js';
import type { CheckpointData } from './format.js';

// ---------------------------------------------------------------------------
// Compatibility with the run about to resume

function show(v: unknown): string {
  return v === undefined ? 'unset' : JSON.stringify(v);
}

/**
 * Throws ERR_CHECKPOINT_MISMATCH listing every difference between the
 * checkpoint and the run that wants to resume from it.
 */
const KEYS_ADDED_LATER: Record<string, unknown> = { preprocess: 'd2l', model: 'char-lstm', tokenizer: 'char', layers: 1, dropout: 0, embedding: 0, minFreq: 0 };

export function checkCompatible(
  ck: CheckpointData,
  expect: { vocab: string[]; corpusSha1: string; config: Record<string, unknown>; paramCount: number },
  keys: string[],
): void {
  const diffs: string[] = [];
  if (!isDeepStrictEqual(ck.vocab, expect.vocab)) {
    if (ck.vocab.length !== expect.vocab.length) {
      diffs.push(`vocab has ${ck.vocab.length} tokens in the checkpoint but ${expect.vocab.length} now`);
    } else {
      const k = ck.vocab.findIndex((s, i) => s !== expect.vocab[i]);
      diffs.push(`vocab differs at index ${k}: ${JSON.stringify(ck.vocab[k])} in the checkpoint but ${JSON.stringify(expect.vocab[k])} now`);
    }
  }
  if (ck.corpusSha1 !== expect.corpusSha1) {
    diffs.push(`corpus SHA-1 is ${ck.corpusSha1} in the checkpoint but ${expect.corpusSha1} now`);
  }
  for (const key of keys) {
    // A key added after the checkpoint was written reads as the value every run had before it existed.
    const a = ck.config[key] ?? KEYS_ADDED_LATER[key];
    const b = expect.config[key];
    if (!isDeepStrictEqual(a, b)) diffs.push(`${key} is ${show(a)} in the checkpoint but ${show(b)} now`);
  }
  // The parameter count follows from vocab and hidden; report it only when
  // nothing above already explains the difference.
  if (diffs.length === 0 && ck.params.length !== expect.paramCount) {
    diffs.push(`the parameter count is ${ck.params.length} in the checkpoint but ${expect.paramCount} now`);
  }
  if (diffs.length > 0) {
    throw new DptrainError(ErrorCodes.ERR_CHECKPOINT_MISMATCH, `The checkpoint does not match this run: ${diffs.join('; ')}.`);
  }
}

