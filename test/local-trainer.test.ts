import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tf, testBackend } from './support/tf.js';
import { buildCorpus } from '../src/shared/data/corpus.js';
import { trainLocal } from '../src/shared/train/local-trainer.js';
import { resolveOptions, type TrainConfig } from '../src/shared/config.js';
import { COORDINATOR_OPTIONS } from '../src/shared/options.js';
import { perplexityOf, predict } from '../src/shared/model/evaluate.js';
import { tokenizerFromConfig } from '../src/shared/data/tokenizer.js';

export function tinyConfig(over: Partial<TrainConfig> = {}): TrainConfig {
  return { ...resolveOptions<TrainConfig>(COORDINATOR_OPTIONS, {}, {}), maxTokens: 0, batchSize: 4, numSteps: 8, hidden: 16, epochs: 60, lr: 1, clip: 1, valFraction: 0.1, ...over };
}

test('a tiny model learns a tiny repetitive corpus', async () => {
  await testBackend();
  const text = 'the quick brown fox jumps over the lazy dog\n'.repeat(40);
  const corpus = buildCorpus(text, { valFraction: 0.1 });
  const cfg = tinyConfig({ optimizer: 'adam', lr: 0.02, epochs: 40 });
  const { server, history } = trainLocal(cfg, corpus);
  const first = history[0].trainPerplexity;
  const last = history.at(-1)!.trainPerplexity;
  // An untrained model is near uniform: perplexity ~ vocabulary size (28). This text is almost deterministic.
  assert.ok(first > 10, `first epoch perplexity ${first}`);
  assert.ok(last < 2, `last epoch perplexity ${last}`);
  const val = perplexityOf(server.params(), server.model, corpus.validation, cfg.numSteps, 2);
  assert.ok(val < 3, `validation perplexity ${val}`);
  const sample = predict(server.params(), server.model, tokenizerFromConfig(cfg, corpus.vocab), 'the quick', 20);
  assert.match(sample, /^the quick brown fox/);
  const before = tf.memory().numTensors;
  server.dispose();
  assert.ok(tf.memory().numTensors < before);
});
