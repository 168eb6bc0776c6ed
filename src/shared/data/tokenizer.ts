/**
 * Text -> token ids and token ids -> text, through a tokenizer named in the
 * config (`tokenizer`, set by --tokens) and the checkpoint. Generation and
 * export go through it; the corpus is read by the streaming builder of the
 * same tokenizer (corpus.ts, words.ts), whose vocabulary a checkpoint stores.
 *
 * Two tokenizers, as d2l's `tokenize(lines, token)`, after the corpus's
 * preprocessing (--preprocess d2l | none): char (every character is a token)
 * and word (every whitespace-separated word; generation joins words with
 * spaces). Both use d2l's Vocab(min_freq): tokens seen fewer than --min-freq
 * times read as <unk>. Adding one: an entry in TOKENIZERS.
 */
import { DptrainError, ErrorCodes } from '../errors.js';
import { defaultMinFreq, preparePrefix, preprocessText, PREPROCESS_CHOICES, TOKEN_KINDS, type Preprocess } from './corpus.js';
import { UNK, type Vocab } from './vocab.js';
import { textWords } from './words.js';

export interface TextTokenizer {
  /** Registry name, e.g. 'char'. */
  readonly name: string;
  readonly preprocess: Preprocess;
  /** d2l's min_freq the vocabulary was built with. */
  readonly minFreq: number;
  readonly vocab: Vocab;
  /** For logs, the status page and dptrain_info: 'word, min-freq 2'. */
  readonly label: string;
  /** What decode joins tokens with: '' for characters, ' ' for words. */
  readonly separator: string;
  /**
   * A prompt as the model would have seen it in its corpus: preprocessed like
   * the corpus ('Call Me' reaches a d2l model as 'call me'). Notices (letters
   * dropped, tokens the model never saw) come back as sentences.
   */
  preparePrompt(text: string): { text: string; warnings: string[] };
  /** Text already in the corpus's form -> ids (unknown tokens are <unk>, id 0). */
  encode(text: string): Int32Array;
  decode(ids: ArrayLike<number>): string;
}

type TokenizerFactory = (vocab: Vocab, preprocess: Preprocess, minFreq: number) => TextTokenizer;

const label = (name: string, minFreq: number) => (minFreq > 1 ? `${name}, min-freq ${minFreq}` : name);

const TOKENIZERS: Record<string, TokenizerFactory> = {
  char: (vocab, preprocess, minFreq) => ({
    name: 'char',
    preprocess,
    minFreq,
    vocab,
    label: label('char', minFreq),
    separator: '',
    preparePrompt: (text) => preparePrefix(text, preprocess, vocab),
    encode: (text) => vocab.encode(text),
    decode: (ids) => vocab.decode(ids),
  }),
  word: (vocab, preprocess, minFreq) => ({
    name: 'word',
    preprocess,
    minFreq,
    vocab,
    label: label('word', minFreq),
    separator: ' ',
    preparePrompt: (text) => prepareWordPrompt(text, preprocess, vocab, minFreq),
    encode: (text) => Int32Array.from(textWords(text, preprocess), (w) => vocab.index(w)),
    decode: (ids) => vocab.decode(ids, ' '),
  }),
};

/** A word prompt: the words of the text as the corpus's preprocessing made them, joined by single spaces. */
function prepareWordPrompt(prefix: string, mode: Preprocess, vocab: Vocab, minFreq: number): { text: string; warnings: string[] } {
  // Lines end words (d2l splits each line); joined with '\n' they stay apart.
  const words = textWords(mode === 'd2l' ? prefix : preprocessText(prefix, mode), mode);
  const text = words.join(' ');
  const warnings: string[] = [];
  const show = (items: Iterable<string>) => [...new Set(items)].map((c) => JSON.stringify(c)).join(', ');
  if (mode === 'd2l') {
    const dropped = [...prefix].filter((c) => /[\p{L}\p{N}]/u.test(c) && !/[A-Za-z]/.test(c));
    if (dropped.length > 0) {
      warnings.push(`d2l preprocessing keeps only the letters A-Z, so the prefix loses ${show(dropped)} and reads ${JSON.stringify(text)}.`);
    }
  }
  if (words.length === 0) {
    warnings.push(`the prefix has no words; generating from ${UNK}.`);
    return { text: '', warnings };
  }
  const unknown = words.filter((w) => vocab.index(w) === 0);
  if (unknown.length > 0) {
    const why = minFreq > 1 ? `never saw in its corpus or saw fewer than --min-freq ${minFreq} times` : 'never saw in its corpus';
    warnings.push(`the prefix has words the model ${why} (${show(unknown)}); they are read as ${UNK}.`);
  }
  return { text, warnings };
}

export const TOKENIZER_NAMES: readonly string[] = Object.keys(TOKENIZERS);
/** What every run used before tokenizers had names. */
export const DEFAULT_TOKENIZER = 'char';

// Every kind --tokens offers has a tokenizer.
for (const k of TOKEN_KINDS) if (!Object.hasOwn(TOKENIZERS, k)) throw new Error(`no tokenizer for --tokens ${k}`);

export function createTokenizer(name: string, vocab: Vocab, preprocess: Preprocess, minFreq = 0): TextTokenizer {
  const make = Object.hasOwn(TOKENIZERS, name) ? TOKENIZERS[name] : undefined;
  if (!make) throw new DptrainError(ErrorCodes.ERR_BAD_CONFIG, `unknown tokenizer ${JSON.stringify(name)}; known: ${TOKENIZER_NAMES.join(', ')}`);
  return make(vocab, preprocess, minFreq);
}

/**
 * The tokenizer a run's config names, over a vocabulary. Configs from before
 * `tokenizer` existed name none (char), those from before --min-freq had
 * none (0, every token), and those from before --preprocess used d2l's
 * preprocessing.
 */
export function tokenizerFromConfig(config: { readonly tokenizer?: unknown; readonly preprocess?: unknown; readonly minFreq?: unknown }, vocab: Vocab): TextTokenizer {
  const name = typeof config.tokenizer === 'string' ? config.tokenizer : DEFAULT_TOKENIZER;
  const p = config.preprocess;
  const preprocess = typeof p === 'string' && (PREPROCESS_CHOICES as readonly string[]).includes(p) ? (p as Preprocess) : 'd2l';
  const m = config.minFreq;
  const minFreq = typeof m === 'number' && Number.isSafeInteger(m) && m >= 0 ? m : name === 'word' ? defaultMinFreq('word') : 0;
  return createTokenizer(name, vocab, preprocess, minFreq);
}
