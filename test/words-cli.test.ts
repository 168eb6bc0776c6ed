/**
 * `--tokens word` end to end: 2 worker processes end at the parameters of the
 * in-process loop; `coordinator start --spawn 2 --tokens word --min-freq 2`
 * exits 0 with a checkpoint that names its tokenizer, `generate` reads word
 * prefixes and prints words, `export` lists the words (and loads with
 * tf.loadLayersModel, giving the same next-word distribution), and a run with other
 * --tokens or --min-freq refuses to resume it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { loadCorpus } from '../src/shared/data/corpus-source.js';
import { checkpointModel, checkpointTokenizer, readCheckpoint } from '../src/shared/store/checkpoint.js';
import { tf, testBackend } from './support/tf.js';
import { statusJson } from '../src/coordinator/status.js';
import { initialParams, trainLocal } from '../src/shared/train/local-trainer.js';
import { corpusFile, killAll, relativeError, spawnWorker, startCoordinator, tinyCoordinatorConfig, tmpDir, type WorkerProc } from './support/cluster.js';
import { runDptrain } from './support/proc.js';


const cli = runDptrain;

function fileLoader(dir: string): tf.io.IOHandler {
  return {
    load: async () => {
      const modelJson = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8')) as tf.io.ModelJSON;
      return tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
        const b = fs.readFileSync(path.join(dir, manifest[0].paths[0]));
        return [manifest.flatMap((g) => g.weights), b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)];
      });
    },
  };
}

test('--tokens word --embedding 8: coordinator + 2 worker processes equal the in-process loop', async () => {
  const cfg = tinyCoordinatorConfig({ minWorkers: 2, batchSize: 6, tokens: 'word', minFreq: 2, maxTokens: 1500, embedding: 8 });
  assert.equal(cfg.model, 'stack-lstm', 'a learned embedding');
  const c = await startCoordinator(cfg);
  const procs: WorkerProc[] = [];
  try {
    // The status page and dptrain_info name the tokenizer.
    assert.equal(statusJson(c).model.tokenizer, 'word, min-freq 2');
    assert.match(await c.metrics.registry.metrics(), /^dptrain_info\{[^}]*tokenizer="word,min_freq=2"[^}]*\} 1$/m);
    for (let k = 0; k < 2; k++) procs.push(spawnWorker(`ws://127.0.0.1:${c.port}`));
    const summary = await c.run();
    assert.equal(summary.reason, 'done');
    const exits = await Promise.all(procs.map((p) => p.exited));
    for (const [k, e] of exits.entries()) assert.equal(e.code, 0, `worker ${k} exit ${JSON.stringify(e)}:\n${procs[k].output()}`);

    const { corpus } = await loadCorpus(cfg.corpus, { dataDir: '.', maxTokens: cfg.maxTokens, valFraction: cfg.valFraction, preprocess: cfg.preprocess, tokens: 'word', minFreq: 2 });
    assert.ok(corpus.vocab.size > 100, `a word vocabulary (${corpus.vocab.size})`);
    assert.equal(c.corpus.vocab.size, corpus.vocab.size);
    const local = trainLocal(cfg, corpus);
    assert.equal(c.server.version, local.server.version, 'same number of optimizer steps');
    assert.ok(c.server.version >= 40, `ran ${c.server.version} steps`);
    const rel = relativeError(c.server.params(), local.server.params());
    assert.ok(rel <= 1e-5, `parameters differ: relative error ${rel.toExponential(2)} after ${c.server.version} steps`);
    const moved = relativeError(c.server.params(), initialParams(cfg, c.model));
    assert.ok(moved > 1e-2, `parameters moved only ${moved.toExponential(2)} from their init`);
    console.log(`word tokens: relative error of the parameters, 2 workers vs one process: ${rel.toExponential(2)}`);
    local.server.dispose();
  } finally {
    killAll(procs);
    c.dispose();
  }
});

test('coordinator start --spawn 2 --tokens word --min-freq 2 --embedding 64 exits 0; generate and export take words; other --tokens or --min-freq refuse to resume', async () => {
  const ck = tmpDir();
  const common = ['--corpus', corpusFile(), '--max-tokens', '600', '--hidden', '8', '--batch-size', '4', '--num-steps', '5', '--port', '0', '--host', '127.0.0.1', '--metrics-port', '-1', '--backend', 'cpu', '--worker-backend', 'cpu', '--sample-every', '0', '--log-every', '1', '--checkpoint-dir', ck];
  const run = await cli(['coordinator', 'start', '--spawn', '2', '--tokens', 'word', '--min-freq', '2', '--embedding', '64', '--epochs', '2', ...common]);
  assert.equal(run.code, 0, run.out);
  assert.match(run.out, /540 training \+ 60 validation tokens \(words\), vocabulary \d+ \(\d+ distinct, those seen fewer than --min-freq 2 times read as <unk>: \d+ tokens/);
  assert.match(run.out, /model: 1-layer LSTM hidden 8, embedding 64, vocabulary \d+ \(tokens: word, min-freq 2\)/);
  const saved = await readCheckpoint(ck);
  assert.deepEqual(saved.tokenizer, { kind: 'word', minFreq: 2, preprocess: 'd2l' });
  assert.equal(saved.vocab[0], '<unk>');
  assert.ok(saved.vocab.includes('the'));
  assert.ok(saved.vocab.slice(1).every((w) => /^[a-z]+$/.test(w)), 'every entry is a d2l word');

  // Words in, words out: the prefix as the corpus's preprocessing makes it, then `length` words joined by spaces.
  const gen = await cli(['generate', '--checkpoint', ck, '--prefix', 'The  Water, zorglub', '--length', '7', '--temperature', '1', '--backend', 'cpu']);
  assert.equal(gen.code, 0, gen.out);
  assert.match(gen.out, /the prefix has words the model never saw in its corpus or saw fewer than --min-freq 2 times \((?:"water", )?"zorglub"\); they are read as <unk>/);
  const printed = gen.stdout.trim().split('\n').at(-1)!.split(' ');
  assert.deepEqual(printed.slice(0, 3), ['the', saved.vocab.includes('water') ? 'water' : '<unk>', '<unk>']);
  assert.equal(printed.length, 3 + 7);
  for (const w of printed) assert.ok(saved.vocab.includes(w), `${w} is a word of the vocabulary`);

  const out = path.join(tmpDir(), 'export');
  const exp = await cli(['export', '--checkpoint', ck, '--out', out]);
  assert.equal(exp.code, 0, exp.out);
  const meta = JSON.parse(fs.readFileSync(path.join(out, 'model.json'), 'utf8')).userDefinedMetadata.dptrain;
  assert.deepEqual(meta.vocab, saved.vocab);
  assert.deepEqual([meta.tokenizer, meta.minFreq, meta.separator, meta.vocabSize], ['word', 2, ' ', saved.vocab.length]);
  // And it loads with tf.loadLayersModel, giving dptrain's next-word distribution for a word prompt.
  await testBackend();
  const loaded = await tf.loadLayersModel(fileLoader(out));
  const model = checkpointModel(saved);
  const ids = checkpointTokenizer(saved).encode('the whale and the sea of the ship');
  const fw = model.forward(saved.params, 1);
  let maxDiff = 0;
  let ref: Float32Array = new Float32Array(0);
  for (const id of ids) {
    const t = fw.logits(Int32Array.of(id), 1);
    ref = tf.tidy(() => tf.softmax(t).dataSync() as Float32Array);
    t.dispose();
  }
  fw.dispose();
  const got = tf.tidy(() => {
    // A learned embedding: the export takes token ids (its first layer is a tfjs embedding).
    const x = tf.tensor2d(ids, [1, ids.length], 'float32');
    const y = loaded.predict(x) as tf.Tensor;
    return y.slice([0, ids.length - 1, 0], [1, 1, saved.vocab.length]).dataSync() as Float32Array;
  });
  for (let v = 0; v < ref.length; v++) maxDiff = Math.max(maxDiff, Math.abs(got[v] - ref[v]));
  assert.equal(got.length, saved.vocab.length);
  assert.ok(maxDiff < 1e-5, `exported next-word distribution differs by ${maxDiff}`);
  loaded.dispose();

  const asChars = await cli(['coordinator', 'start', '--spawn', '1', '--epochs', '3', '--resume', ...common]);
  assert.equal(asChars.code, 2, asChars.out);
  assert.match(asChars.out, /ERR_CHECKPOINT_MISMATCH/);
  assert.match(asChars.out, /tokenizer is "word" in the checkpoint but "char" now/);

  const rarer = await cli(['coordinator', 'start', '--spawn', '1', '--tokens', 'word', '--min-freq', '3', '--epochs', '3', '--resume', ...common]);
  assert.equal(rarer.code, 2, rarer.out);
  assert.match(rarer.out, /ERR_CHECKPOINT_MISMATCH/);
  assert.match(rarer.out, /minFreq is 2 in the checkpoint but 3 now/);
});
