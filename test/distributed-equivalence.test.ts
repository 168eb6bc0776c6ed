/**
 * The proof that data parallelism here is exact: a coordinator with real
 * worker processes ends at the same parameters as the in-process loop.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadCorpus } from '../src/shared/data/corpus-source.js';
import { initialParams, trainLocal } from '../src/shared/train/local-trainer.js';
import { killAll, relativeError, spawnWorker, startCoordinator, tinyCoordinatorConfig, waitFor, type WorkerProc } from './support/cluster.js';

async function equivalence(workers: number, batchSize: number, over: Record<string, unknown> = {}): Promise<number> {
  const cfg = tinyCoordinatorConfig({ minWorkers: workers, batchSize, ...over });
  const c = await startCoordinator(cfg);
  const procs: WorkerProc[] = [];
  try {
    for (let k = 0; k < workers; k++) procs.push(spawnWorker(`ws://127.0.0.1:${c.port}`));
    const summary = await c.run();
    assert.equal(summary.reason, 'done');
    const exits = await Promise.all(procs.map((p) => p.exited));
    for (const [k, e] of exits.entries()) assert.equal(e.code, 0, `worker ${k} exit ${JSON.stringify(e)}:\n${procs[k].output()}`);

    // Loaded as the coordinator loads it (reading stops at --max-tokens, so the vocabulary is that prefix's).
    const { corpus } = await loadCorpus(cfg.corpus, { dataDir: '.', maxTokens: cfg.maxTokens, valFraction: cfg.valFraction, preprocess: cfg.preprocess });
    const local = trainLocal(cfg, corpus);
    assert.equal(c.server.version, local.server.version, 'same number of optimizer steps');
    assert.ok(c.server.version >= 40, `ran ${c.server.version} steps`);
    const rel = relativeError(c.server.params(), local.server.params());
    assert.ok(rel <= 1e-5, `parameters differ: relative error ${rel.toExponential(2)} after ${c.server.version} steps`);
    // And training did something: the parameters moved away from their init.
    const moved = relativeError(c.server.params(), initialParams(cfg, c.model));
    assert.ok(moved > 1e-2, `parameters moved only ${moved.toExponential(2)} from their init`);
    local.server.dispose();
    return rel;
  } finally {
    killAll(procs);
    c.dispose();
  }
}

test('coordinator + 2 worker processes equal the in-process loop (sequential partition)', async () => {
  await equivalence(2, 6);
});

test('coordinator + 3 worker processes on uneven shards (7 streams: 3+2+2) equal the in-process loop', async () => {
  await equivalence(3, 7);
});

for (const cell of ['gru', 'rnn']) {
  test(`--cell ${cell}: coordinator + 2 worker processes equal the in-process loop`, async () => {
    const rel = await equivalence(2, 6, { cell });
    console.log(`${cell}: relative error of the parameters, 2 workers vs one process: ${rel.toExponential(2)}`);
  });
}
