/**
 * Deep stacks keep data parallelism exact: 2 worker processes end at the
 * parameters of the in-process loop for a 2-layer LSTM with dropout and an
 * embedding (the masks are a function of seed, step, stream, layer and time,
 * not of who computes the row), and a 2-layer GRU with dropout, stopped with
 * SIGTERM and resumed, ends where the uninterrupted run ends.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadCorpus } from '../src/shared/data/corpus-source.js';
import { readCheckpoint } from '../src/shared/store/checkpoint.js';
import { statusJson } from '../src/coordinator/status.js';
import { initialParams, trainLocal } from '../src/shared/train/local-trainer.js';
import { corpusFile, killAll, relativeError, spawnWorker, startCoordinator, tinyCoordinatorConfig, tmpDir, waitFor, type WorkerProc } from './support/cluster.js';
import { startCoordinatorProc } from './support/processes.js';

test('2-layer LSTM with dropout 0.3 and embedding 8: coordinator + 2 worker processes equal the in-process loop', async () => {
  const cfg = tinyCoordinatorConfig({ minWorkers: 2, batchSize: 6, cell: 'lstm', layers: 2, dropout: 0.3, embedding: 8 });
  assert.equal(cfg.model, 'stack-lstm');
  const c = await startCoordinator(cfg);
  const procs: WorkerProc[] = [];
  try {
    for (let k = 0; k < 2; k++) procs.push(spawnWorker(`ws://127.0.0.1:${c.port}`));
    const summary = await c.run();
    assert.equal(summary.reason, 'done');
    // The status page and dptrain_info name the stack.
    assert.equal(statusJson(c).model.summary, '2-layer LSTM hidden 16, embedding 8, dropout 0.3, vocabulary ' + c.model.vocabSize);
    assert.match(await c.metrics.registry.metrics(), /^dptrain_info\{[^}]*model="stack-lstm",model_hyper="hidden=16,layers=2,embedding=8,dropout=0.3,seed=0"[^}]*\} 1$/m);
    const exits = await Promise.all(procs.map((p) => p.exited));
    for (const [k, e] of exits.entries()) assert.equal(e.code, 0, `worker ${k} exit ${JSON.stringify(e)}:\n${procs[k].output()}`);

    const { corpus } = await loadCorpus(cfg.corpus, { dataDir: '.', maxTokens: cfg.maxTokens, valFraction: cfg.valFraction, preprocess: cfg.preprocess });
    const local = trainLocal(cfg, corpus);
    assert.equal(c.server.version, local.server.version, 'same number of optimizer steps');
    assert.ok(c.server.version >= 40, `ran ${c.server.version} steps`);
    const rel = relativeError(c.server.params(), local.server.params());
    console.log(`stack-lstm (2 layers, dropout, embedding): relative error of the parameters, 2 workers vs one process: ${rel.toExponential(2)}`);
    assert.ok(rel <= 1e-5, `parameters differ: relative error ${rel.toExponential(2)} after ${c.server.version} steps`);
    // Block by block too: the deep model's lower layers move little in a few steps, and the whole vector's error would hide them.
    const block = (flat: Float32Array, name: string) => {
      const b = c.model.blocks.find((x) => x.name === name)!;
      return flat.subarray(b.offset, b.offset + b.size);
    };
    for (const b of c.model.blocks) {
      const e = relativeError(block(c.server.params(), b.name), block(local.server.params(), b.name));
      assert.ok(e <= 1e-5, `${b.name} differs: relative error ${e.toExponential(2)}`);
    }
    const moved = relativeError(c.server.params(), initialParams(cfg, c.model));
    assert.ok(moved > 1e-2, `parameters moved only ${moved.toExponential(2)} from their init`);

    // The masks matter: the same run without dropout ends elsewhere.
    const plain = trainLocal({ ...cfg, dropout: 0 }, corpus);
    const changed = relativeError(block(plain.server.params(), 'b_c_l0'), block(local.server.params(), 'b_c_l0'));
    assert.ok(changed > 1e-2, `dropout changed layer 0's candidate bias by only ${changed.toExponential(2)}`);
    local.server.dispose();
    plain.server.dispose();
  } finally {
    killAll(procs);
    c.dispose();
  }
});

const coordinator = (args: string[]) => startCoordinatorProc(args);

test('2-layer GRU with dropout 0.25: SIGTERM and --resume continue to the same parameters as an uninterrupted run', async () => {
  const corpus = corpusFile();
  const common = ['--cell', 'gru', '--layers', '2', '--dropout', '0.25', '--corpus', corpus, '--max-tokens', '3000', '--batch-size', '6', '--num-steps', '5', '--hidden', '12', '--epochs', '12', '--port', '0', '--metrics-port', '-1', '--host', '127.0.0.1', '--spawn', '2', '--min-workers', '2', '--backend', 'cpu', '--worker-backend', 'cpu', '--log-every', '1', '--sample-every', '0', '--checkpoint-every', '0'];

  const full = tmpDir();
  const a = coordinator([...common, '--checkpoint-dir', full]);
  assert.equal((await a.exited).code, 0, a.output());

  const part = tmpDir();
  const b = coordinator([...common, '--checkpoint-dir', part]);
  await waitFor(() => /epoch 3\/12/.test(b.output()), 60_000, 'three epochs');
  b.child.kill('SIGTERM');
  assert.equal((await b.exited).code, 0, b.output());
  const mid = await readCheckpoint(part);
  const want = await readCheckpoint(full);
  assert.ok(mid.step > 0 && mid.step < want.step, `stopped at step ${mid.step} of ${want.step}`);
  assert.equal(mid.model?.name, 'stack-gru');

  const c = coordinator([...common, '--checkpoint-dir', part, '--resume']);
  assert.equal((await c.exited).code, 0, c.output());
  assert.match(c.output(), new RegExp(`resume: step ${mid.step}`));
  const got = await readCheckpoint(part);
  assert.equal(got.step, want.step);
  const rel = relativeError(got.params, want.params);
  console.log(`stack-gru (2 layers, dropout): relative error of resumed parameters ${rel.toExponential(2)}`);
  assert.ok(rel <= 1e-6, `resumed parameters differ: relative error ${rel.toExponential(2)}`);
});
