/**
 * What the character and the word tokenizer share once the text is read:
 * d2l's vocabulary order (descending count, ties by first occurrence), its
 * min_freq cut, and the train/validation split of the ids.
 */
import { DptrainError } from '../errors.js';
import { UNK, Vocab } from './vocab.js';

/** Token ids travel as uint16 (LIMITS.MAX_VOCAB in wire/messages.ts): at most 65,536 entries, `<unk>` included. */
export const MAX_VOCAB_SIZE = 65536;

export interface Ranked {
  vocab: Vocab;
  /** First-occurrence number -> vocabulary id (0 for tokens below min_freq). */
  remap: Int32Array;
  /** Tokens read that map to `<unk>`. */
  unkTokens: number;
  /** Distinct tokens read, before the min_freq cut. */
  distinct: number;
}

const fmt = (n: number) => n.toLocaleString('en-US');

/** Warn when d2l preprocessing drops more than this share of the text's letters. */
export const DROPPED_LETTERS_WARN_FRACTION = 0.05;

/**
 * d2l preprocessing keeps only A-Z: a text with none of them has nothing to
 * train on (ERR_CORPUS_EMPTY, saying why), and one that lost many of its
 * letters (another script, accents) gets a warning. `of` names the corpus (' FILE' or '').
 */
export function checkD2lLetters(o: { tokens: number; letters: number; dropped: number; examples: Iterable<string>; of: string }): string[] {
  const examples = [...o.examples].join(' ');
  if (o.tokens === 0) {
    if (o.dropped > 0) {
      throw new DptrainError(
        'ERR_CORPUS_EMPTY',
        `The corpus${o.of} has no letters A-Z: d2l preprocessing keeps only A-Z, which drops all ${fmt(o.dropped)} of its letters (e.g. ${examples}); use --preprocess none to train on the text as is.`,
      );
    }
    throw new DptrainError('ERR_CORPUS_EMPTY', `The corpus${o.of} contains no letters, so it has no tokens to train on (d2l preprocessing keeps only the letters A-Z).`);
  }
  if (o.dropped > o.letters * DROPPED_LETTERS_WARN_FRACTION) {
    const pct = Math.round((100 * o.dropped) / o.letters);
    return [
      `d2l preprocessing keeps only the letters A-Z (lower-cased): ${pct}% of the corpus's letters (${fmt(o.dropped)} of ${fmt(o.letters)}, e.g. ${examples}) were dropped; --preprocess none keeps every character.`,
    ];
  }
  return [];
}

/**
 * `counts[k]` is how often the token first seen as number k occurred;
 * `unit` names a token in messages ('character', 'word').
 */
export function rankTokens(counts: ArrayLike<number>, distinct: number, tokenOf: (first: number) => string, minFreq: number, unit: string): Ranked {
  const order = Array.from({ length: distinct }, (_, i) => i).sort((a, b) => counts[b] - counts[a] || a - b);
  const list = [UNK];
  const remap = new Int32Array(distinct);
  let unkTokens = 0;
  for (const first of order) {
    const t = tokenOf(first);
    // d2l: tokens below min_freq are left out (they read as <unk>); a literal '<unk>' token is <unk>.
    if (counts[first] < minFreq || t === UNK) {
      unkTokens += counts[first];
      continue;
    }
    remap[first] = list.length;
    list.push(t);
  }
  if (list.length > MAX_VOCAB_SIZE) {
    // The smallest min_freq that leaves at most MAX_VOCAB_SIZE - 1 tokens besides <unk>.
    const fits = counts[order[MAX_VOCAB_SIZE - 1]] + 1;
    throw new DptrainError(
      'ERR_CORPUS_TOO_LARGE',
      `The corpus has ${fmt(list.length - 1)} distinct ${unit}s seen at least ${Math.max(minFreq, 1)} times, more than a vocabulary can hold (${fmt(MAX_VOCAB_SIZE)} token ids with ${UNK}, 16-bit on the wire); use --min-freq ${fits} or higher (rarer ${unit}s read as ${UNK}) or a smaller --max-tokens.`,
    );
  }
  return { vocab: Vocab.fromList(list), remap, unkTokens, distinct };
}

/** The first `maxTokens` ids (0 = all) through `remap`, the last `valFraction` of them held out. */
export function splitIds(ids: ArrayLike<number>, total: number, remap: Int32Array, maxTokens: number, valFraction: number): { train: Int32Array; validation: Int32Array } {
  const used = maxTokens > 0 && maxTokens < total ? maxTokens : total;
  const nVal = Math.floor(used * valFraction);
  const train = new Int32Array(used - nVal);
  const validation = new Int32Array(nVal);
  for (let i = 0; i < train.length; i++) train[i] = remap[ids[i]];
  for (let i = 0; i < nVal; i++) validation[i] = remap[ids[train.length + i]];
  return { train, validation };
}
