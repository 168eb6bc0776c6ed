/**
 * The d2l `Vocab(tokens, min_freq)` (no reserved tokens) over character or
 * word tokens: `<unk>` first, then every token seen at least min_freq times.
 * Index order must match d2l exactly, because a checkpoint or a peer refers to
 * tokens by index and the reference numbers (28 tokens for The Time Machine)
 * depend on it.
 */
export const UNK = '<unk>';

export class Vocab {
  readonly idxToToken: readonly string[];
  private readonly tokenToIdx: Map<string, number>;

  private constructor(idxToToken: string[]) {
    this.idxToToken = Object.freeze(idxToToken);
    this.tokenToIdx = new Map(idxToToken.map((t, i) => [t, i]));
  }

  /**
   * Descending frequency, ties by first occurrence: a Map keeps insertion
   * order and Array.prototype.sort is stable, which is what Python's
   * `sorted(Counter(tokens).items(), key=..., reverse=True)` does.
   */
  static fromTokens(tokens: Iterable<string>, minFreq = 0): Vocab {
    const counts = new Map<string, number>();
    for (const t of tokens) counts.set(t, (counts.get(t) ?? 0) + 1);
    const byFreq = [...counts.entries()].sort((a, b) => b[1] - a[1]);
    const list = [UNK];
    // d2l stops at the first token below min_freq: the list is sorted, so that is every rarer one.
    for (const [t, n] of byFreq) {
      if (n < minFreq) break;
      if (t !== UNK) list.push(t);
    }
    return new Vocab(list);
  }

  /** For a vocabulary received from the coordinator or read from a checkpoint; rejects anything d2l could not have produced. */
  static fromList(idxToToken: string[]): Vocab {
    if (!Array.isArray(idxToToken) || idxToToken.length === 0 || idxToToken[0] !== UNK) {
      throw new TypeError(`a vocabulary must be a non-empty list of strings starting with "${UNK}"`);
    }
    const seen = new Set<string>();
    for (const t of idxToToken) {
      if (typeof t !== 'string') throw new TypeError('a vocabulary must contain only strings');
      if (seen.has(t)) throw new TypeError(`the vocabulary lists the token ${JSON.stringify(t)} twice`);
      seen.add(t);
    }
    return new Vocab([...idxToToken]);
  }

  get size(): number {
    return this.idxToToken.length;
  }

  /** Unknown tokens map to 0 (`<unk>`), as in d2l. */
  index(token: string): number {
    return this.tokenToIdx.get(token) ?? 0;
  }

  token(i: number): string {
    if (!Number.isInteger(i) || i < 0 || i >= this.idxToToken.length) {
      throw new RangeError(`token index ${i} is outside the vocabulary of ${this.idxToToken.length} tokens`);
    }
    return this.idxToToken[i];
  }

  /** Character tokens: iterates code points, like Python's list(str), so astral characters stay one token. */
  encode(text: string): Int32Array {
    const out = new Int32Array(text.length);
    let n = 0;
    for (const ch of text) out[n++] = this.index(ch);
    return n === out.length ? out : out.slice(0, n);
  }

  /** Tokens joined by `sep`: '' for characters, ' ' for words. */
  decode(ids: ArrayLike<number>, sep = ''): string {
    const parts: string[] = [];
    for (let i = 0; i < ids.length; i++) parts.push(this.token(ids[i]));
    return parts.join(sep);
  }
}
