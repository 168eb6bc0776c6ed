/**
 * Text to token ids with the semantics of d2l's `read_time_machine` and
 * `load_corpus_time_machine`, plus a held-out tail for validation.
 *
 * The text arrives in chunks (a corpus may be far larger than the longest
 * string JavaScript can hold, ~512 M characters), so tokenizing is a stream:
 * `Tokenizer.push` takes one chunk at a time, keeps only token ids (two bytes
 * each) and the counts the vocabulary needs, and can stop once `--max-tokens`
 * tokens are in.
 */
import { ChunkedTokenizer } from './chunked.js';
import { DptrainError } from '../errors.js';
import { rankTokens, splitIds } from './ranked.js';
import { UNK, type Vocab } from './vocab.js';
import { WordTokenizer } from './words.js';

/** d2l: letters A–Z only, lower-cased, every other run one space (read_time_machine). none: every character as is. */
export type Preprocess = 'd2l' | 'none';
export const PREPROCESS_CHOICES = ['d2l', 'none'] as const;

/** d2l's `tokenize(lines, token)`: every character is a token, or every whitespace-separated word. */
export type TokenKind = 'char' | 'word';
export const TOKEN_KINDS = ['char', 'word'] as const;

/**
 * `--min-freq` when none is given. char: d2l's 0 (every character). word: 2,
 * as d2l's machine-translation vocabulary: a word seen once cannot be learned
 * from (it never appears as both input and target in different contexts), and
 * in a book such words are about half of the distinct words, so the
 * vocabulary (input and output layer) halves.
 */
export function defaultMinFreq(tokens: TokenKind): number {
  return tokens === 'word' ? 2 : 0;
}

/** d2l's `load_corpus_time_machine(max_tokens=10000)`: the default cut of `--corpus timemachine` only. */
export const D2L_MAX_TOKENS = 10000;

export { MAX_CORPUS_TOKENS } from './chunked.js';

/** Token ids must fit the protocol's uint16 (LIMITS.MAX_VOCAB), `<unk>` included. */
const MAX_DISTINCT_TOKENS = 65535;

export { DROPPED_LETTERS_WARN_FRACTION } from './ranked.js';

/**
 * Python's text-mode readlines() uses universal newlines, so a lone '\r' also
 * ends a line; since lines are later joined without a separator, that choice
 * changes the token stream and has to match.
 */
export function preprocessLines(text: string): string[] {
  return text.split(/\r\n|\r|\n/).map((line) => line.replace(/[^A-Za-z]+/g, ' ').trim().toLowerCase());
}

/** The text as the model reads it: d2l = the preprocessed lines joined without a separator; none = line ends as '\n'. */
export function preprocessText(text: string, mode: Preprocess): string {
  return mode === 'd2l' ? preprocessLines(text).join('') : text.replace(/\r\n?/g, '\n');
}

export interface Corpus {
  vocab: Vocab;
  train: Int32Array;
  validation: Int32Array;
  /** Tokens read, before maxTokens truncation (train + validation may be fewer); when reading stopped at maxTokens, that many. */
  totalTokens: number;
  /** Distinct tokens read, and how many of the tokens read fell below --min-freq (or were a literal `<unk>`). */
  stats?: { distinct: number; unkTokens: number };
}

export interface BuildOptions {
  /** 0 or undefined keeps all tokens; d2l uses 10000. */
  maxTokens?: number;
  /** Tail fraction held out for validation, in [0, 0.5]; default 0.1. */
  valFraction?: number;
  /** Default 'd2l'. */
  preprocess?: Preprocess;
  /** Default 'char'. */
  tokens?: TokenKind;
  /** d2l's min_freq: tokens seen fewer times read as <unk>; default defaultMinFreq(tokens). */
  minFreq?: number;
}

export function checkBuildOptions(opts: BuildOptions): { maxTokens: number; valFraction: number; preprocess: Preprocess; tokens: TokenKind; minFreq: number } {
  const maxTokens = opts.maxTokens ?? 0;
  const valFraction = opts.valFraction ?? 0.1;
  const preprocess = opts.preprocess ?? 'd2l';
  const tokens = opts.tokens ?? 'char';
  const minFreq = opts.minFreq ?? defaultMinFreq(tokens);
  if (!TOKEN_KINDS.includes(tokens)) {
    throw new DptrainError('ERR_BAD_CONFIG', `The tokens must be one of ${TOKEN_KINDS.join(', ')}, got ${JSON.stringify(tokens)}.`);
  }
  if (!Number.isSafeInteger(minFreq) || minFreq < 0) {
    throw new DptrainError('ERR_BAD_CONFIG', `The minimum token frequency must be a non-negative integer, got ${minFreq}.`);
  }
  if (!Number.isInteger(maxTokens) || maxTokens < 0) {
    throw new DptrainError('ERR_BAD_CONFIG', `maxTokens must be a non-negative integer (0 means all), got ${maxTokens}.`);
  }
  if (!(Number.isFinite(valFraction) && valFraction >= 0 && valFraction <= 0.5)) {
    throw new DptrainError('ERR_BAD_CONFIG', `The validation fraction must be between 0 and 0.5, got ${valFraction}.`);
  }
  if (!PREPROCESS_CHOICES.includes(preprocess)) {
    throw new DptrainError('ERR_BAD_CONFIG', `The preprocessing must be one of ${PREPROCESS_CHOICES.join(', ')}, got ${JSON.stringify(preprocess)}.`);
  }
  return { maxTokens, valFraction, preprocess, tokens, minFreq };
}

/** What the corpus readers feed: the character or the word tokenizer. */
export interface StreamTokenizer {
  push(chunk: string): void;
  /** True once stopAt tokens are in and the text is known to go on: the caller can stop reading. */
  readonly done: boolean;
  readonly tokens: number;
  finish(o: { maxTokens: number; valFraction: number; what: string }): TokenizerResult;
}

export function createStreamTokenizer(o: TokenizerOptions & { tokens: TokenKind }): StreamTokenizer {
  return o.tokens === 'word' ? new WordTokenizer(o) : new Tokenizer(o);
}

/** Everything in memory: for short texts (tests, prefixes, benchmarks). The vocabulary comes from all tokens, then the ids are cut, as d2l does. */
export function buildCorpus(text: string, opts: BuildOptions = {}): Corpus {
  const o = checkBuildOptions(opts);
  const t = createStreamTokenizer({ preprocess: o.preprocess, tokens: o.tokens, minFreq: o.minFreq });
  t.push(text);
  return t.finish({ maxTokens: o.maxTokens, valFraction: o.valFraction, what: '' }).corpus;
}

export interface TokenizerOptions {
  preprocess: Preprocess;
  /** Stop consuming text once this many tokens are in (0 = never): the vocabulary then comes from those tokens only. */
  stopAt?: number;
  /** d2l's min_freq (default 0). */
  minFreq?: number;
}

export interface TokenizerResult {
  corpus: Corpus;
  /** SHA-1 of the UTF-8 encoding of the text consumed (all of it, unless reading stopped at maxTokens). */
  sha1: string;
  /** True when the text went on after the last token kept (reading stopped at stopAt). */
  stoppedEarly: boolean;
  /** Non-fatal notices, e.g. how much d2l preprocessing dropped. */
  warnings: string[];
}

const fmt = (n: number) => n.toLocaleString('en-US');
const SPACE = 32;

/**
 * Streaming d2l tokenizer. Token ids are first-occurrence indices while
 * reading (so nothing is re-encoded) and are renumbered by frequency at the
 * end, which gives exactly d2l's Vocab order (descending count, ties by first
 * occurrence).
 */
export class Tokenizer extends ChunkedTokenizer implements StreamTokenizer {
  /** First-occurrence id of a BMP code point, -1 when unseen; astral code points in `astral`. */
  private readonly bmpId = new Int32Array(65536).fill(-1);
  private readonly astralId = new Map<number, number>();
  private readonly codePoints: number[] = [];
  // d2l line state: a letter was seen on this line; a non-letter run follows it.
  private inLine = false;
  private pendingSpace = false;
  // none: the previous character was '\r' (so a following '\n' is the same line end).
  private lastCR = false;

  constructor(o: TokenizerOptions) {
    super(o, 'tokens', Uint16Array);
  }

  protected scan(s: string): number {
    return this.mode === 'd2l' ? this.pushD2l(s) : this.pushNone(s);
  }

  /** After the last token kept: does the text go on with more tokens? (A trailing run of punctuation does not count.) */
  protected holdsToken(s: string): boolean {
    return this.mode === 'd2l' ? /[A-Za-z]/.test(s) : s.length > 0;
  }

  private emit(cp: number): void {
    let id = cp < 65536 ? this.bmpId[cp] : (this.astralId.get(cp) ?? -1);
    if (id < 0) {
      id = this.codePoints.length;
      if (id >= MAX_DISTINCT_TOKENS) {
        throw new DptrainError(
          'ERR_CORPUS_TOO_LARGE',
          `The corpus has more than ${fmt(MAX_DISTINCT_TOKENS)} distinct characters, more than a vocabulary can hold (token ids are 16-bit); use --preprocess d2l or a corpus with fewer distinct characters.`,
        );
      }
      if (cp < 65536) this.bmpId[cp] = id;
      else this.astralId.set(cp, id);
      this.codePoints.push(cp);
    }
    this.append(id);
  }

  /** Returns the number of code units consumed (less than s.length only when stopAt was reached). */
  private pushD2l(s: string): number {
    const len = s.length;
    for (let i = 0; i < len; i++) {
      const c = s.charCodeAt(i);
      if (c === 10 || c === 13) {
        this.inLine = false;
        this.pendingSpace = false;
        continue;
      }
      const lower = c | 0x20;
      if (lower >= 97 && lower <= 122) {
        if (this.pendingSpace) {
          this.pendingSpace = false;
          this.emit(SPACE);
          if (this.full) return i;
        }
        this.emit(lower);
        this.letters++;
        this.inLine = true;
        if (this.full) return i + 1;
        continue;
      }
      if (this.inLine) this.pendingSpace = true;
      if (c < 128) continue;
      i += this.countDropped(s, i) - 1;
    }
    return len;
  }

  private pushNone(s: string): number {
    const len = s.length;
    for (let i = 0; i < len; i++) {
      const c = s.charCodeAt(i);
      if (c === 10 && this.lastCR) {
        this.lastCR = false;
        continue;
      }
      this.lastCR = c === 13;
      let cp = c === 13 ? 10 : c;
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < len) {
        const lo = s.charCodeAt(i + 1);
        if (lo >= 0xdc00 && lo <= 0xdfff) {
          cp = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
          i++;
        }
      }
      this.emit(cp);
      if (this.full) return i + 1;
    }
    return len;
  }

  /**
   * The vocabulary (d2l order) and the train/validation split. `what` names
   * the corpus in error messages. Throws ERR_CORPUS_EMPTY when nothing is
   * left to train on, saying why.
   */
  finish(o: { maxTokens: number; valFraction: number; what: string }): TokenizerResult {
    const of = o.what ? ` ${o.what}` : '';
    if (this.carry) {
      // A lone high surrogate at the very end: consume it like any other character.
      const s = this.carry;
      this.carry = '';
      this.hash.update(s);
      if (this.mode === 'none' && !this.full) this.emit(s.charCodeAt(0));
    }
    if (!this.sawNonSpace) {
      throw new DptrainError('ERR_CORPUS_EMPTY', `The corpus${of} is empty or contains only whitespace.`);
    }
    const warnings = this.droppedWarnings(of);
    // n > 0 here: whitespace-only text was refused above, and 'none' keeps every character.
    const r = rankTokens(this.counts, this.codePoints.length, (k) => String.fromCodePoint(this.codePoints[k]), this.minFreq, 'character');
    const total = this.n;
    const { train, validation } = splitIds(this.ids, total, r.remap, o.maxTokens, o.valFraction);
    // Drop the reading buffer now: the coordinator keeps the corpus for the whole run.
    this.ids = new Uint16Array(0);
    return {
      corpus: { vocab: r.vocab, train, validation, totalTokens: total, stats: { distinct: r.distinct, unkTokens: r.unkTokens } },
      sha1: this.hash.digest('hex'),
      stoppedEarly: this.moreAfterFull,
      warnings,
    };
  }
}

/**
 * A generation prefix read like the corpus the model learned from: d2l
 * lower-cases it and keeps only A–Z and single spaces. Warns about what the
 * model cannot read (dropped letters or digits, characters outside the vocabulary).
 */
export function preparePrefix(prefix: string, mode: Preprocess, vocab: Vocab): { text: string; warnings: string[] } {
  const text = preprocessText(prefix, mode);
  const warnings: string[] = [];
  const show = (chars: Iterable<string>) => [...new Set(chars)].map((c) => JSON.stringify(c)).join(', ');
  if (mode === 'd2l') {
    const dropped = [...prefix].filter((c) => /[\p{L}\p{N}]/u.test(c) && !/[A-Za-z]/.test(c));
    if (dropped.length > 0) {
      warnings.push(`d2l preprocessing keeps only the letters A-Z, so the prefix loses ${show(dropped)} and reads ${JSON.stringify(text)}.`);
    }
    if (text === '') warnings.push('the prefix has no letters A-Z; generating from a single space.');
  }
  const unknown = [...text].filter((c) => vocab.index(c) === 0);
  if (unknown.length > 0) {
    warnings.push(`the prefix has characters the model never saw in its corpus (${show(unknown)}); they are read as ${UNK}.`);
  }
  return { text, warnings };
}
