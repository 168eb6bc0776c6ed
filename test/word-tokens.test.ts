/**
 * Word tokens as d2l's `tokenize(lines, 'word')` and `Vocab(tokens, min_freq)`:
 * the counts, the cut, `<unk>` and the order on a small text; the streaming
 * reader against the whole text; prompts and the round trip text -> ids ->
 * text; the vocabulary cap; the checkpoint's tokenizer field and what a
 * resume compares.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { buildCorpus, createStreamTokenizer, type Preprocess } from '../src/shared/data/corpus.js';
import { createTokenizer, tokenizerFromConfig } from '../src/shared/data/tokenizer.js';
import { Vocab } from '../src/shared/data/vocab.js';
import { isPyWhitespace, splitWords } from '../src/shared/data/words.js';
import { MAX_VOCAB_SIZE } from '../src/shared/data/ranked.js';
import { LIMITS } from '../src/shared/wire/messages.js';
import { isDptrainError } from '../src/shared/errors.js';
import { resolveCoordinatorConfig, TRAIN_KEYS } from '../src/shared/config.js';
import { checkCompatible, checkpointTokenizer, CHECKPOINT_FORMAT, decodeFile, encodeFile, type CheckpointData } from '../src/shared/store/checkpoint.js';
import { createModel } from '../src/shared/model/registry.js';
import { checkModelFits } from '../src/coordinator/model-limits.js';

// Lines as d2l reads them: "the cat the dog", "the cat", "sat on the mat", "a cat" ('\r' alone ends a line too).
const TEXT = 'The cat, the DOG.\nthe cat\r\nsat on-the mat\rA cat';
const WORDS = ['the', 'cat', 'the', 'dog', 'the', 'cat', 'sat', 'on', 'the', 'mat', 'a', 'cat'];

describe("d2l's word tokens and Vocab(min_freq)", () => {
  test('min-freq 0: <unk> first, then by count, ties in order of first occurrence', () => {
    const c = buildCorpus(TEXT, { tokens: 'word', minFreq: 0, valFraction: 0 });
    // the 4, cat 3, then dog sat on mat a once each, in the order they first appear.
    assert.deepEqual(c.vocab.idxToToken, ['<unk>', 'the', 'cat', 'dog', 'sat', 'on', 'mat', 'a']);
    assert.deepEqual([...c.train], [1, 2, 1, 3, 1, 2, 4, 5, 1, 6, 7, 2]);
    assert.deepEqual(c.stats, { distinct: 7, unkTokens: 0 });
    assert.equal(c.totalTokens, 12);
  });

  test('min-freq 2: words seen once read as <unk>, and the corpus says how many tokens that is', () => {
    const c = buildCorpus(TEXT, { tokens: 'word', minFreq: 2, valFraction: 0 });
    assert.deepEqual(c.vocab.idxToToken, ['<unk>', 'the', 'cat']);
    assert.deepEqual([...c.train], [1, 2, 1, 0, 1, 2, 0, 0, 1, 0, 0, 2]);
    assert.deepEqual(c.stats, { distinct: 7, unkTokens: 5 });
    // Vocab.fromTokens is the same rule over a token list.
    assert.deepEqual(Vocab.fromTokens(WORDS, 2).idxToToken, c.vocab.idxToToken);
    assert.deepEqual(Vocab.fromTokens(WORDS, 4).idxToToken, ['<unk>', 'the']);
  });

  test('the default min-freq is 2 for words and 0 (every token) for characters', () => {
    assert.deepEqual(buildCorpus(TEXT, { tokens: 'word' }).vocab.idxToToken, ['<unk>', 'the', 'cat']);
    assert.equal(buildCorpus('aab', { valFraction: 0 }).vocab.size, 3);
    // min-freq applies to characters as d2l's Vocab does.
    assert.deepEqual(buildCorpus('aab', { minFreq: 2, valFraction: 0 }).vocab.idxToToken, ['<unk>', 'a']);
  });

  test('--preprocess none splits on whitespace as Python str.split(): case and punctuation stay, <unk> in the text is <unk>', () => {
    const c = buildCorpus('Call me Ishmael. call\u00a0me\x1cmaybe <unk>\u3000Ishmael.\n', { tokens: 'word', preprocess: 'none', minFreq: 0, valFraction: 0 });
    assert.deepEqual(c.vocab.idxToToken, ['<unk>', 'me', 'Ishmael.', 'Call', 'call', 'maybe']);
    assert.deepEqual([...c.train], [3, 1, 2, 4, 1, 5, 0, 2]);
    assert.deepEqual(splitWords(' a\tb\u2028c\u200bd '), ['a', 'b', 'c\u200bd']);
    assert.equal(isPyWhitespace(0x85), true);
    assert.equal(isPyWhitespace(0xfeff), false);
  });

  test('the validation split is the tail of the word ids; --max-tokens counts words', () => {
    const c = buildCorpus(TEXT, { tokens: 'word', minFreq: 0, valFraction: 0.25 });
    assert.deepEqual([...c.train], [1, 2, 1, 3, 1, 2, 4, 5, 1]);
    assert.deepEqual([...c.validation], [6, 7, 2]);
    const cut = buildCorpus(TEXT, { tokens: 'word', minFreq: 0, valFraction: 0, maxTokens: 4 });
    assert.equal(cut.train.length, 4);
  });

  test('a text with no words is refused with ERR_CORPUS_EMPTY', () => {
    assert.throws(() => buildCorpus('123 ... 42\n', { tokens: 'word' }), (e) => isDptrainError(e, 'ERR_CORPUS_EMPTY'));
    assert.throws(() => buildCorpus('\x1c\x1d', { tokens: 'word', preprocess: 'none' }), (e) => isDptrainError(e, 'ERR_CORPUS_EMPTY'));
  });
});

describe('the streaming word reader', () => {
  const text = `${TEXT}\nÉtude for a cat 😀 and the dog\n`.repeat(5);
  for (const preprocess of ['d2l', 'none'] as Preprocess[]) {
    test(`${preprocess}: the same ids, vocabulary and SHA-1 however the text is cut into chunks`, () => {
      const read = (size: number, stopAt = 0) => {
        const t = createStreamTokenizer({ preprocess, tokens: 'word', minFreq: 2, stopAt });
        for (let i = 0; i < text.length && !t.done; i += size) t.push(text.slice(i, i + size));
        return t.finish({ maxTokens: stopAt, valFraction: 0.1, what: '' });
      };
      const whole = read(text.length);
      for (const size of [1, 2, 3, 7]) {
        const r = read(size);
        assert.deepEqual(r.corpus.vocab.idxToToken, whole.corpus.vocab.idxToToken, `chunks of ${size}`);
        assert.deepEqual([...r.corpus.train, ...r.corpus.validation], [...whole.corpus.train, ...whole.corpus.validation], `chunks of ${size}`);
        assert.equal(r.sha1, whole.sha1);
      }
      // Stopping at N words: a word cut by a chunk boundary is still one word, and the reader knows the text went on.
      const a = read(3, 10);
      const b = read(text.length, 10);
      assert.equal(a.corpus.totalTokens, 10);
      assert.equal(a.stoppedEarly, true);
      assert.deepEqual([...a.corpus.train], [...b.corpus.train]);
      assert.equal(a.sha1, b.sha1);
    });
  }

  test('d2l preprocessing warns when it drops many letters', () => {
    const r = createStreamTokenizer({ preprocess: 'd2l', tokens: 'word' });
    r.push('Ελληνικά λόγια and a few english words');
    assert.match(r.finish({ maxTokens: 0, valFraction: 0, what: '' }).warnings.join(), /keeps only the letters A-Z/);
  });

  test('more distinct words than 16-bit ids can hold is refused, naming the --min-freq that fits', () => {
    // 70,000 words seen once and 10 seen twice: only min-freq 2 leaves a vocabulary that fits.
    const once = Array.from({ length: 70000 }, (_, i) => `w${i}`);
    const twice = Array.from({ length: 10 }, (_, i) => `t${i} t${i}`);
    const text = [...once, ...twice].join(' ');
    assert.throws(
      () => buildCorpus(text, { tokens: 'word', preprocess: 'none', minFreq: 1 }),
      (e) => isDptrainError(e, 'ERR_CORPUS_TOO_LARGE') && /70,010 distinct words .*--min-freq 2 or higher/.test((e as Error).message),
    );
    assert.equal(buildCorpus(text, { tokens: 'word', preprocess: 'none', minFreq: 2 }).vocab.size, 11);
    // The cap is the protocol's: a vocabulary that fits is one the welcome and the token ids can carry.
    assert.equal(MAX_VOCAB_SIZE, LIMITS.MAX_VOCAB);
  });
});

describe('prompts and the round trip', () => {
  const vocab = buildCorpus(TEXT, { tokens: 'word', minFreq: 0, valFraction: 0 }).vocab;
  const words = createTokenizer('word', vocab, 'd2l', 0);

  test('text -> ids -> text gives the words back, joined by single spaces', () => {
    const p = words.preparePrompt('The  cat\nsat, on THE mat!');
    assert.deepEqual(p, { text: 'the cat sat on the mat', warnings: [] });
    const ids = words.encode(p.text);
    assert.deepEqual([...ids], [1, 2, 4, 5, 1, 6]);
    assert.equal(words.decode(ids), p.text);
    assert.equal(words.separator, ' ');
  });

  test('unknown words read as <unk>, and the prompt says so', () => {
    const cut = createTokenizer('word', Vocab.fromTokens(WORDS, 2), 'd2l', 2);
    const p = cut.preparePrompt('the zebra and the cat');
    assert.equal(p.text, 'the zebra and the cat');
    assert.match(p.warnings.join(), /words the model never saw in its corpus or saw fewer than --min-freq 2 times \("zebra", "and"\); they are read as <unk>/);
    assert.equal(cut.decode(cut.encode(p.text)), 'the <unk> <unk> the cat');
    const none = cut.preparePrompt('1984!');
    assert.equal(none.text, '');
    assert.match(none.warnings.join(), /no words; generating from <unk>/);
  });

  test('a config names the tokenizer; configs from before --tokens and --min-freq read as char with every token', () => {
    assert.equal(tokenizerFromConfig({}, vocab).name, 'char');
    assert.equal(tokenizerFromConfig({}, vocab).minFreq, 0);
    const t = tokenizerFromConfig({ tokenizer: 'word', minFreq: 3, preprocess: 'none' }, vocab);
    assert.deepEqual([t.name, t.minFreq, t.preprocess, t.label], ['word', 3, 'none', 'word, min-freq 3']);
  });
});

describe('flags, checkpoints and limits', () => {
  const corpus = 'x.txt';
  test('--tokens word sets the tokenizer and a min-freq of 2; timemachine keeps the whole book for words', () => {
    const w = resolveCoordinatorConfig({ corpus, tokens: 'word' }, {});
    assert.deepEqual([w.tokenizer, w.minFreq], ['word', 2]);
    const c = resolveCoordinatorConfig({ corpus }, {});
    assert.deepEqual([c.tokenizer, c.minFreq], ['char', 0]);
    assert.equal(resolveCoordinatorConfig({ corpus: 'timemachine', tokens: 'word' }, {}).maxTokens, 0);
    assert.equal(resolveCoordinatorConfig({ corpus: 'timemachine' }, {}).maxTokens, 10000);
    assert.equal(resolveCoordinatorConfig({ corpus, tokens: 'word', minFreq: 5 }, {}).minFreq, 5);
    assert.throws(() => resolveCoordinatorConfig({ corpus, tokens: 'bpe' }, {}), (e) => isDptrainError(e, 'ERR_BAD_CONFIG'));
    assert.throws(() => resolveCoordinatorConfig({ corpus, minFreq: -1 }, {}), (e) => isDptrainError(e, 'ERR_BAD_CONFIG'));
    assert.ok(TRAIN_KEYS.includes('tokenizer') && TRAIN_KEYS.includes('minFreq'));
  });

  const vocab = ['<unk>', 'the', 'cat'];
  const model = createModel('char-lstm', vocab.length, { hidden: 2 });
  const base = (over: Partial<CheckpointData> = {}): CheckpointData => ({
    format: CHECKPOINT_FORMAT,
    createdAt: new Date(0).toISOString(),
    step: 1,
    epoch: 0,
    batchIndex: 0,
    epochRngState: [1, 2, 3, 4],
    rngState: [1, 2, 3, 4],
    params: new Float32Array(model.paramCount),
    optimizer: { name: 'sgd', state: [] },
    vocab,
    corpusSha1: 'x',
    config: { tokenizer: 'word', minFreq: 2, preprocess: 'd2l' },
    model: { name: 'char-lstm', hyper: { hidden: 2 } },
    ...over,
  });

  test('the checkpoint names the tokenizer next to the vocabulary; one without the field reads as char', () => {
    const ck = decodeFile(encodeFile(base({ tokenizer: { kind: 'word', minFreq: 2, preprocess: 'd2l' } })));
    assert.deepEqual(ck.tokenizer, { kind: 'word', minFreq: 2, preprocess: 'd2l' });
    const t = checkpointTokenizer(ck);
    assert.deepEqual([t.name, t.minFreq, t.decode([1, 2])], ['word', 2, 'the cat']);
    const old = decodeFile(encodeFile(base({ config: { hidden: 2 } })));
    assert.equal(old.tokenizer, undefined);
    assert.deepEqual([checkpointTokenizer(old).name, checkpointTokenizer(old).minFreq], ['char', 0]);
    assert.throws(() => decodeFile(encodeFile(base({ tokenizer: { kind: 'bpe', minFreq: 0, preprocess: 'd2l' } }))), /tokenizer "bpe" is not one this dptrain knows/);
  });

  test('a resume with other --tokens or --min-freq is refused with ERR_CHECKPOINT_MISMATCH; an old char checkpoint resumes as char', () => {
    const keys = TRAIN_KEYS as string[];
    const expect = (config: Record<string, unknown>) => ({ vocab, corpusSha1: 'x', config: { preprocess: 'd2l', model: 'char-lstm', layers: 1, dropout: 0, embedding: 0, ...config }, paramCount: model.paramCount });
    const ck = base({ config: { tokenizer: 'word', minFreq: 2, preprocess: 'd2l', model: 'char-lstm' } });
    checkCompatible(ck, expect({ tokenizer: 'word', minFreq: 2 }), keys);
    assert.throws(
      () => checkCompatible(ck, expect({ tokenizer: 'word', minFreq: 3 }), keys),
      (e) => isDptrainError(e, 'ERR_CHECKPOINT_MISMATCH') && /minFreq is 2 in the checkpoint but 3 now/.test((e as Error).message),
    );
    assert.throws(
      () => checkCompatible(ck, expect({ tokenizer: 'char', minFreq: 2 }), keys),
      (e) => isDptrainError(e, 'ERR_CHECKPOINT_MISMATCH') && /tokenizer is "word" in the checkpoint but "char" now/.test((e as Error).message),
    );
    const old = base({ config: { preprocess: 'd2l' } });
    checkCompatible(old, expect({ tokenizer: 'char', minFreq: 0 }), keys);
  });

  test('a model too large for its word vocabulary is refused, suggesting --min-freq', () => {
    assert.throws(
      () => checkModelFits({ paramCount: 400e6, stateCount: 0, trainTokens: 0, backend: 'wasm', sizeFlags: '--hidden 2048', vocab: { size: 60000, tokens: 'word', minFreq: 2 } }),
      (e) => isDptrainError(e, 'ERR_MODEL_TOO_LARGE') && /^--hidden 2048 with a vocabulary of 60,000 words \(--min-freq 2\) gives 400,000,000 parameters: .*; use a smaller --hidden or a higher --min-freq /.test((e as Error).message),
    );
  });
});
