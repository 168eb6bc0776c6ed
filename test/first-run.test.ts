/**
 * A newcomer's first run, scaled down: `coordinator start --spawn` with Adam and
 * samples drawn at a temperature (as `npm start`) ends with the final
 * validation perplexity, a last sample made of the corpus's words and not one
 * phrase repeated, where the status page is, and one line of what to try next,
 * whose generate command works as printed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { corpusFile, tmpDir } from './support/cluster.js';
import { dptrain } from './support/proc.js';
import { lastSampleOf, sampleQuality, wordsOf } from '../bench/sample-quality.js';
import { shellWords } from '../bench/status-screenshot.js';

test('sample quality: corpus words pass; one phrase repeated or made-up words fail', () => {
  const vocabulary = new Set(wordsOf('call me ishmael some years ago never mind how long precisely having little or no money in my purse the ship and whale'));
  const good = sampleQuality('call me ishmael some years ago never mind how long precisely having little or no money in my pur', 'call me ishmael', vocabulary);
  assert.equal(good.ok, true, good.reasons.join('; '));
  assert.deepEqual(good.words.slice(0, 3), ['some', 'years', 'ago']);
  assert.ok(!good.words.includes('pur'), 'a word cut at the end is not judged');
  const loop = sampleQuality('call me ishmael the ship and the ship and the ship and the ship and the ship and the sh', 'call me ishmael', vocabulary);
  assert.equal(loop.ok, false);
  assert.match(loop.reasons.join(' '), /phrase repeated/);
  const greedy = sampleQuality('call me ishmael the the the the the the the the the the the the', 'call me ishmael', vocabulary);
  assert.equal(greedy.ok, false);
  const noise = sampleQuality('call me ishmael thw serf qoun ant blik morr the vell dasp soom tirk', 'call me ishmael', vocabulary);
  assert.equal(noise.ok, false);
  assert.match(noise.reasons.join(' '), /corpus words/);
  assert.deepEqual(lastSampleOf('config: {"samplePrefix":"call me"}\nsample: call me a\nlast sample (drawn at temperature 0.6): call me b\n'), { sample: 'call me b', prefix: 'call me' });
});

test('a --spawn run with Adam and sampling at a temperature ends with perplexity, a sample of corpus words, the status page and what to try next', { timeout: 180_000 }, async () => {
  const corpus = corpusFile();
  const ckpt = path.join(tmpDir(), 'checkpoints');
  // A small model, trained for seconds on 3 chapters: enough for words, not for meaning.
  const p = dptrain([
    'coordinator', 'start', '--spawn', '1', '--corpus', corpus, '--hidden', '64', '--optimizer', 'adam', '--lr', '0.02', '--epochs', '12',
    '--log-every', '4', '--sample-every', '12', '--sample-prefix', 'call me ishmael', '--sample-temperature', '0.5',
    '--checkpoint-dir', ckpt, '--port', '0', '--metrics-port', '0', '--backend', 'wasm', '--worker-backend', 'wasm',
  ]);
  const { code } = await p.exited;
  const out = p.output();
  assert.equal(code, 0, out);
  const lines = out.trimEnd().split('\n');
  const tail = lines.slice(-4);
  assert.match(tail[0], /^finished: validation perplexity (\d+\.\d\d), train perplexity \d+\.\d\d after 12 of 12 epochs, \d+ steps, /, out);
  const ppl = Number(/validation perplexity (\d+\.\d\d)/.exec(tail[0])![1]);
  assert.ok(ppl > 1 && ppl < 10, `validation perplexity ${ppl}`);
  assert.match(tail[1], /^last sample \(drawn at temperature 0\.5\): call me ishmael/);
  assert.match(tail[2], /^status page: /);
  assert.match(tail[3], /^try next: /);
  for (const what of ['npx dptrain generate --checkpoint', '--corpus timemachine', 'status page', 'Multi-machine']) assert.ok(tail[3].includes(what), `try next should mention ${what}: ${tail[3]}`);

  const found = lastSampleOf(out)!;
  assert.equal(found.prefix, 'call me ishmael');
  const vocabulary = new Set(wordsOf(fs.readFileSync(corpus, 'utf8')));
  const q = sampleQuality(found.sample, found.prefix, vocabulary);
  assert.ok(q.ok, `${found.sample}: ${q.reasons.join('; ')}`);

  // The suggested generate command works as printed.
  const cmd = shellWords(tail[3].slice('try next: '.length).split('  |  ')[0]);
  assert.deepEqual(cmd.slice(0, 3), ['npx', 'dptrain', 'generate']);
  assert.equal(cmd[cmd.indexOf('--checkpoint') + 1], ckpt);
  const g = dptrain([...cmd.slice(2), '--backend', 'wasm']);
  const gen = await g.exited;
  assert.equal(gen.code, 0, g.output());
  const text = g.output().trimEnd().split('\n').at(-1)!;
  assert.ok(text.startsWith('call me ishmael') && text.length >= 'call me ishmael'.length + 200, text);
  const gq = sampleQuality(text, 'call me ishmael', vocabulary);
  assert.ok(gq.ok, `${text}: ${gq.reasons.join('; ')}`);
});
