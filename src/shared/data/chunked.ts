/**
 * What the character and the word tokenizer share: text arrives in chunks (a
 * stream of a file, a URL, the bundled book), is hashed as it is consumed,
 * never splits a surrogate pair between two scans, and stops at `stopAt`
 * tokens while noting whether the text goes on with more.
 */
import { createHash, type Hash } from 'node:crypto';

export abstract class ChunkedTokenizer {
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
