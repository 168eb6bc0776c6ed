/**
 * Word tokens as d2l's `tokenize(lines, 'word')`: every preprocessed line
 * split on whitespace (Python's str.split()), read as a stream of chunks like
 * the character tokenizer (corpus.ts). With d2l preprocessing a word is a
 * run of the letters A-Z, lower-cased; with none, a run of anything but
 * whitespace, as is (so 'Ishmael.' and 'Ishmael' are two words).
 *
 * Word ids are first-occurrence numbers while reading (four bytes each: a
 * big text can have millions of distinct words before --min-freq cuts them)
 * and are renumbered into d2l's vocabulary order at the end.
 */
import { ChunkedTokenizer } from './chunked.js';
import { DptrainError } from '../errors.js';
import type { Preprocess, StreamTokenizer, TokenizerOptions, TokenizerResult } from './corpus.js';
import { rankTokens, splitIds } from './ranked.js';

/** Python's str.isspace() for one UTF-16 code unit (every whitespace character is in the BMP). */
export function isPyWhitespace(c: number): boolean {
  if (c <= 0x20) return c === 0x20 || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f);
  if (c < 0x85) return false;
  return c === 0x85 || c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000;
}

/** Python's `text.split()`: the runs of non-whitespace characters. */
export function splitWords(text: string): string[] {
  const out: string[] = [];
  let start = -1;
  for (let i = 0; i <= text.length; i++) {
    const space = i === text.length || isPyWhitespace(text.charCodeAt(i));
    if (!space && start < 0) start = i;
    else if (space && start >= 0) {
      out.push(text.slice(start, i));
      start = -1;
    }
  }
  return out;
}

/** The words of a text as a model of this preprocessing read them (d2l: runs of A-Z, lower-cased). */
export function textWords(text: string, mode: Preprocess): string[] {
  return mode === 'd2l' ? (text.match(/[A-Za-z]+/g) ?? []).map((w) => w.toLowerCase()) : splitWords(text);
}

const isAsciiLetter = (c: number) => ((c | 0x20) >= 97 && (c | 0x20) <= 122);

export class WordTokenizer extends ChunkedTokenizer implements StreamTokenizer {
  private readonly wordId = new Map<string, number>();
  private readonly words: string[] = [];
  /** The start of a word that the previous chunk ended in. */
  private pending = '';
  /** A lone high surrogate at the end of the previous chunk, waiting for its pair. */

  constructor(o: TokenizerOptions) {
    super(o, 'words', Uint32Array);
  }

  private isWordChar(c: number): boolean {
    return this.mode === 'd2l' ? isAsciiLetter(c) : !isPyWhitespace(c);
  }

  protected holdsToken(s: string): boolean {
    for (let i = 0; i < s.length; i++) if (this.isWordChar(s.charCodeAt(i))) return true;
    return false;
  }

  /** Returns the code units consumed (fewer than s.length only when stopAt was reached: up to the end of the last word). */
  protected scan(s: string): number {
    const len = s.length;
    const d2l = this.mode === 'd2l';
    let start = -1;
    for (let i = 0; i < len; i++) {
      const c = s.charCodeAt(i);
      if (this.isWordChar(c)) {
        if (start < 0) start = i;
        if (d2l) this.letters++;
        continue;
      }
      if (start >= 0 || this.pending !== '') {
        this.emit(this.pending + (start >= 0 ? s.slice(start, i) : ''));
        this.pending = '';
        start = -1;
        if (this.full) return i;
      }
      if (d2l && c >= 128) i += this.countDropped(s, i) - 1;
    }
    if (start >= 0) this.pending += s.slice(start);
    return len;
  }

  private emit(raw: string): void {
    const word = this.mode === 'd2l' ? raw.toLowerCase() : raw;
    let id = this.wordId.get(word);
    if (id === undefined) {
      id = this.words.length;
      this.wordId.set(word, id);
      this.words.push(word);
    }
    this.append(id);
  }

  finish(o: { maxTokens: number; valFraction: number; what: string }): TokenizerResult {
    const of = o.what ? ` ${o.what}` : '';
    if (this.carry) {
      // A lone high surrogate at the very end: part of a word when words are runs of non-whitespace.
      this.hash.update(this.carry);
      if (this.mode === 'none' && !this.full) this.pending += this.carry;
      this.carry = '';
    }
    if (this.pending !== '' && !this.full) this.emit(this.pending);
    this.pending = '';
    if (!this.sawNonSpace) {
      throw new DptrainError('ERR_CORPUS_EMPTY', `The corpus${of} is empty or contains only whitespace.`);
    }
    const warnings = this.droppedWarnings(of);
    if (this.n === 0) throw new DptrainError('ERR_CORPUS_EMPTY', `The corpus${of} has no words: it contains only whitespace.`);
    const r = rankTokens(this.counts, this.words.length, (k) => this.words[k], this.minFreq, 'word');
    const total = this.n;
    const { train, validation } = splitIds(this.ids, total, r.remap, o.maxTokens, o.valFraction);
    this.ids = new Uint32Array(0);
    return {
      corpus: { vocab: r.vocab, train, validation, totalTokens: total, stats: { distinct: r.distinct, unkTokens: r.unkTokens } },
      sha1: this.hash.digest('hex'),
      stoppedEarly: this.moreAfterFull,
      warnings,
    };
  }
}
