/**
 * Text -> token ids and token ids -> text, through a tokenizer named in the
 * config (`tokenizer`) and the checkpoint. Generation and export go through
 * it; the corpus is read by the streaming builder of the same tokenizer
 * (corpus.ts), whose vocabulary a checkpoint stores.
 *
 * The first and only tokenizer is d2l's character tokenizer: every character
 * is a token, after the corpus's preprocessing (--preprocess d2l | none).
 * Adding one: an entry in TOKENIZERS.
 */
import { DptrainError, ErrorCodes } from '../errors.js';
import { preparePrefix, PREPROCESS_CHOICES, type Preprocess } from './corpus.js';
import { Vocab } from './vocab.js';

export interface TextTokenizer {
  /** Registry name, e.g. 'char'. */
  readonly name: string;
  readonly preprocess: Preprocess;
  readonly vocab: Vocab;
  /**
   * A prompt as the model would have seen it in its corpus: preprocessed like
   * the corpus ('Call Me' reaches a d2l model as 'call me'). Notices (letters
   * dropped, characters the model never saw) come back as sentences.
   */
  preparePrompt(text: string): { text: string; warnings: string[] };
  /** Text already in the corpus's form -> ids (unknown tokens are <unk>, id 0). */
  encode(text: string): Int32Array;
  decode(ids: ArrayLike<number>): string;
}

type TokenizerFactory = (vocab: Vocab, preprocess: Preprocess) => TextTokenizer;

const TOKENIZERS: Record<string, TokenizerFactory> = {
  char: (vocab, preprocess) => ({
    name: 'char',
    preprocess,
    vocab,
    preparePrompt: (text) => preparePrefix(text, preprocess, vocab),
    encode: (text) => vocab.encode(text),
    decode: (ids) => vocab.decode(ids),
  }),
};

export const TOKENIZER_NAMES: readonly string[] = Object.keys(TOKENIZERS);
/** What every run used before tokenizers had names. */
export const DEFAULT_TOKENIZER = 'char';

export function createTokenizer(name: string, vocab: Vocab, preprocess: Preprocess): TextTokenizer {
  const make = Object.hasOwn(TOKENIZERS, name) ? TOKENIZERS[name] : undefined;
  if (!make) throw new DptrainError(ErrorCodes.ERR_BAD_CONFIG, `unknown tokenizer ${JSON.stringify(name)}; known: ${TOKENIZER_NAMES.join(', ')}`);
  return make(vocab, preprocess);
}

/**
 * The tokenizer a run's config names, over a vocabulary. Configs from before
 * `tokenizer` existed name none (char), and those from before --preprocess
 * used d2l's preprocessing.
 */
export function tokenizerFromConfig(config: { readonly tokenizer?: unknown; readonly preprocess?: unknown }, vocab: Vocab): TextTokenizer {
  const name = typeof config.tokenizer === 'string' ? config.tokenizer : DEFAULT_TOKENIZER;
  const p = config.preprocess;
  const preprocess = typeof p === 'string' && (PREPROCESS_CHOICES as readonly string[]).includes(p) ? (p as Preprocess) : 'd2l';
  return createTokenizer(name, vocab, preprocess);
}
