import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadCorpusText } from '../src/shared/data/corpus-source.js';
import { buildCorpus, preprocessLines } from '../src/shared/data/corpus.js';
import { isDptrainError } from '../src/shared/errors.js';
import { Vocab } from '../src/shared/data/vocab.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('preprocessLines (d2l read_time_machine)', () => {
  it('keeps only letters, collapses the rest to one space, trims and lowercases', () => {
    assert.deepEqual(preprocessLines("Hello, World!\r\nIt's 2024...\n\n  X--y  "), ['hello world', 'it s', '', 'x y']);
  });

  it('treats a lone carriage return as a line break, like Python universal newlines', () => {
    assert.deepEqual(preprocessLines('ab\rcd'), ['ab', 'cd']);
  });
});

describe('Vocab', () => {
  it('puts <unk> first, then tokens by descending frequency', () => {
    assert.deepEqual(Vocab.fromTokens('abbccc').idxToToken, ['<unk>', 'c', 'b', 'a']);
  });

  it('breaks frequency ties by first occurrence', () => {
    assert.deepEqual(Vocab.fromTokens('zyxxyzq').idxToToken, ['<unk>', 'z', 'y', 'x', 'q']);
  });

  it('maps unknown tokens to 0 and decodes them as <unk>', () => {
    const v = Vocab.fromTokens('hello');
    assert.equal(v.size, 5);
    assert.equal(v.index('?'), 0);
    const ids = v.encode('hel?');
    assert.deepEqual([...ids], [v.index('h'), v.index('e'), v.index('l'), 0]);
    assert.equal(v.decode(ids), 'hel<unk>');
    assert.equal(v.decode(v.encode('hello')), 'hello');
    assert.throws(() => v.token(99), RangeError);
  });

  it('rebuilds from a list and rejects lists d2l could not produce', () => {
    const v = Vocab.fromList(['<unk>', ' ', 'e']);
    assert.equal(v.index('e'), 2);
    assert.throws(() => Vocab.fromList([' ', '<unk>']), TypeError);
    assert.throws(() => Vocab.fromList(['<unk>', 'a', 'a']), TypeError);
    assert.throws(() => Vocab.fromList([]), TypeError);
  });
});

describe('buildCorpus', () => {
  it('joins lines without a separator', () => {
    const c = buildCorpus('Ab\n\ncd!\n');
    assert.equal(c.vocab.decode(c.train) + c.vocab.decode(c.validation), 'abcd');
    assert.equal(c.totalTokens, 4);
  });

  it('builds the vocabulary from all tokens before truncating', () => {
    const c = buildCorpus('aab\nzzzz', { maxTokens: 3, valFraction: 0 });
    assert.deepEqual(c.vocab.idxToToken, ['<unk>', 'z', 'a', 'b']);
    assert.deepEqual([...c.train], [2, 2, 3]);
    assert.equal(c.validation.length, 0);
    assert.equal(c.totalTokens, 7);
  });

  it('holds out the last floor(n * valFraction) tokens', () => {
    const text = 'abcdefghij'.repeat(10);
    const c = buildCorpus(text);
    assert.equal(c.train.length, 90);
    assert.equal(c.validation.length, 10);
    assert.equal(c.vocab.decode(c.validation), text.slice(90));

    const q = buildCorpus('abcdefghij', { valFraction: 0.25 });
    assert.equal(q.train.length, 8);
    assert.equal(q.validation.length, 2);
    assert.equal(buildCorpus('abcdefghij', { valFraction: 0 }).train.length, 10);
  });

  it('rejects bad options and a text without letters', () => {
    assert.throws(() => buildCorpus('abc', { valFraction: 0.6 }), (e) => isDptrainError(e, 'ERR_BAD_CONFIG'));
    assert.throws(() => buildCorpus('abc', { maxTokens: -1 }), (e) => isDptrainError(e, 'ERR_BAD_CONFIG'));
    assert.throws(() => buildCorpus('123 !!!\n42'), (e) => isDptrainError(e, 'ERR_CORPUS_EMPTY'));
  });
});
