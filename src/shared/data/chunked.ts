/**
 * What the character and the word tokenizer share: text arrives in chunks (a
 * stream of a file, a URL, the bundled book), is hashed as it is consumed,
 * never splits a surrogate pair between two scans, and stops at `stopAt`
 * tokens while noting whether the text goes on with more. Both keep token ids
 * as first-occurrence numbers with their counts (renumbered into d2l's
 * vocabulary order at the end), and both count the letters d2l preprocessing
 * drops, for its warning.
 */
import { createHash, type Hash } from 'node:crypto';
import { DptrainError } from '../errors.js';
import type { Preprocess, TokenizerOptions } from './corpus.js';
import { checkD2lLetters } from './ranked.js';

/** Token ids go to every worker in one WebSocket frame of at most 1 GiB. */
export const MAX_CORPUS_TOKENS = 2 ** 30;

export abstract class ChunkedTokenizer {
  protected readonly mode: Preprocess;
  protected readonly stopAt: number;
  protected readonly minFreq: number;
  /** Token ids in reading order (first-occurrence numbers) and how often each id occurred. */
  protected ids: Uint16Array | Uint32Array;
  protected counts = new Float64Array(64);
  protected n = 0;
  // d2l: how much of the text's letters (any script) preprocessing keeps.
  protected letters = 0;
  private dropped = 0;
  private readonly droppedExamples = new Set<string>();
  /** Per BMP code unit: 0 not yet classified, 1 a letter, 2 not. */
  private readonly letterClass = new Uint8Array(65536);
  protected readonly hash: Hash = createHash('sha1');
  /** Text left from the previous chunk: a lone high surrogate waiting for its pair. */
  protected carry = '';
  protected sawNonSpace = false;
  /** stopAt tokens are in. */
  protected full = false;
  /** ...and the text goes on with more tokens. */
  protected moreAfterFull = false;
  /** Characters consumed so far (UTF-16 code units), for progress lines. */
  chars = 0;

  /**
   * @param unit what a token is, for the too-large error ('tokens', 'words')
   * @param IdArray the id array's type: 16 bits hold a character vocabulary, a word text needs 32 while reading
   */
  constructor(
    o: TokenizerOptions,
    private readonly unit: string,
    private readonly IdArray: Uint16ArrayConstructor | Uint32ArrayConstructor,
  ) {
    this.mode = o.preprocess;
    this.stopAt = o.stopAt ?? 0;
    this.minFreq = o.minFreq ?? 0;
    this.ids = new IdArray(this.stopAt > 0 ? Math.min(this.stopAt, 1 << 20) : 1 << 16);
  }

  get tokens(): number {
    return this.n;
  }

  /** Appends one token; an id seen for the first time is the next unused one. */
  protected append(id: number): void {
    if (id >= this.counts.length) {
      const c = new Float64Array(this.counts.length * 2);
      c.set(this.counts);
      this.counts = c;
    }
    if (this.n === this.ids.length) {
      if (this.n >= MAX_CORPUS_TOKENS) {
        throw new DptrainError(
          'ERR_CORPUS_TOO_LARGE',
          `The corpus has more than ${MAX_CORPUS_TOKENS.toLocaleString('en-US')} ${this.unit}, more than a worker can receive in one message; use --max-tokens to train on its beginning.`,
        );
      }
      const grown = new this.IdArray(Math.min(MAX_CORPUS_TOKENS, this.ids.length * 2));
      grown.set(this.ids);
      this.ids = grown;
    }
    this.ids[this.n++] = id;
    this.counts[id]++;
    if (this.stopAt > 0 && this.n >= this.stopAt) this.full = true;
  }

  /**
   * The non-ASCII character at s[i], which d2l preprocessing drops: counted (for d2l's warning) when it is a letter.
   * Returns its width in code units.
   */
  protected countDropped(s: string, i: number): number {
    const c = s.charCodeAt(i);
    let width = 1;
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const lo = s.charCodeAt(i + 1);
      if (lo >= 0xdc00 && lo <= 0xdfff) width = 2;
    }
    let letter: boolean;
    if (width === 1) {
      let k = this.letterClass[c];
      if (k === 0) {
        k = /\p{L}/u.test(String.fromCharCode(c)) ? 1 : 2;
        this.letterClass[c] = k;
      }
      letter = k === 1;
    } else letter = /\p{L}/u.test(s.slice(i, i + 2));
    if (letter) {
      this.letters++;
      this.dropped++;
      if (this.droppedExamples.size < 6) this.droppedExamples.add(s.slice(i, i + width));
    }
    return width;
  }

  /** d2l preprocessing's warnings about the letters it dropped (none for --preprocess none). */
  protected droppedWarnings(of: string): string[] {
    return this.mode === 'd2l' ? checkD2lLetters({ tokens: this.n, letters: this.letters, dropped: this.dropped, examples: this.droppedExamples, of }) : [];
  }

  /** True once stopAt tokens are in and the text is known to go on: the caller can stop reading. */
  get done(): boolean {
    return this.moreAfterFull;
  }

  /** Tokenizes `s` (whole code points); returns the code units consumed, fewer than s.length only once full. */
  protected abstract scan(s: string): number;

  /** After the last token kept: does `s` hold another token? */
  protected abstract holdsToken(s: string): boolean;

  push(chunk: string): void {
    if (this.moreAfterFull || chunk.length === 0) return;
    let s = this.carry + chunk;
    this.carry = '';
    if (this.full) {
      this.peekAfterFull(s);
      return;
    }
    const last = s.charCodeAt(s.length - 1);
    if (last >= 0xd800 && last <= 0xdbff) {
      this.carry = s.slice(-1);
      s = s.slice(0, -1);
    }
    if (!this.sawNonSpace && /\S/.test(s)) this.sawNonSpace = true;
    const consumed = this.scan(s);
    this.hash.update(consumed === s.length ? s : s.slice(0, consumed));
    this.chars += consumed;
    if (this.full) {
      this.carry = '';
      if (consumed < s.length) this.peekAfterFull(s.slice(consumed));
    }
  }

  private peekAfterFull(s: string): void {
    if (this.holdsToken(s)) this.moreAfterFull = true;
  }
}
