/**
 * Local SGD with real processes: a coordinator with 2 worker processes and
 * --sync-every 4 trains (the loss goes down), counts rounds and optimizer
 * steps apart, and ends where the in-process local SGD loop ends; a
 * coordinator process stopped by SIGTERM and resumed ends at the same
 * parameters as an uninterrupted run (the checkpoint sits at a round boundary
 * and holds the outer optimizer's momentum).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadCorpus } from '../src/shared/data/corpus-source.js';
import { trainLocalSgd } from '../src/shared/train/local-sgd.js';
import { readCheckpoint } from '../src/shared/store/checkpoint.js';
import { corpusFile, killAll, relativeError, spawnWorker, startCoordinator, tinyCoordinatorConfig, tmpDir, waitFor, type WorkerProc } from './support/cluster.js';
import { startCoordinatorProc } from './support/processes.js';

async function counter(c: { get(): Promise<{ values: { value: number }[] }> }): Promise<number> {
  return (await c.get()).values[0]?.value ?? NaN;
}

test('--sync-every 4 with 2 worker processes: the loss goes down, rounds and steps are counted apart, and it equals the in-process local SGD loop', async () => {
  await clusterMatches({});
});

test('--sync-every 3, 2 layers with dropout: 2 worker processes draw the masks the in-process local SGD loop draws', async () => {
  await clusterMatches({ syncEvery: 3, layers: 2, dropout: 0.3, epochs: 2 });
});

async function clusterMatches(over: Record<string, unknown>): Promise<void> {
  const cfg = tinyCoordinatorConfig({ minWorkers: 2, batchSize: 6, epochs: 4, syncEvery: 4, logEvery: 1, ...over });
  const K = cfg.syncEvery;
  const c = await startCoordinator(cfg);
  const procs: WorkerProc[] = [];
  try {
    for (let k = 0; k < 2; k++) procs.push(spawnWorker(`ws://127.0.0.1:${c.port}`));
    const summary = await c.run();
    assert.equal(summary.reason, 'done');
    for (const p of procs) assert.equal((await p.exited).code, 0, p.output());

    const { corpus } = await loadCorpus(cfg.corpus, { dataDir: '.', maxTokens: cfg.maxTokens, valFraction: cfg.valFraction, preprocess: cfg.preprocess });
    const ref = trainLocalSgd(cfg, corpus, 2);
    // Counters: optimizer steps are batches trained on; rounds are 1/K of them (the last round of the run may be shorter).
    assert.equal(summary.steps, ref.steps);
    assert.equal(c.state.step, ref.steps);
    assert.equal(c.server.version, ref.server.version);
    assert.equal(c.server.version, Math.ceil(ref.steps / K), `${c.server.version} rounds for ${ref.steps} steps`);
    assert.equal(await counter(c.metrics.steps), ref.steps);
    assert.equal(await counter(c.metrics.rounds), c.server.version);
    assert.equal(await counter(c.metrics.tokens), ref.steps * cfg.batchSize * cfg.numSteps);
    const rel = relativeError(c.server.params(), ref.server.params());
    assert.ok(rel <= 1e-5, `parameters differ from the in-process local SGD loop: relative error ${rel.toExponential(2)}`);
    // It trains: the train perplexity falls epoch after epoch, and the validation perplexity with it.
    const h = c.history;
    assert.equal(h.length, cfg.epochs);
    assert.ok(h.at(-1)!.trainPerplexity < h[0].trainPerplexity * 0.95, h.map((e) => e.trainPerplexity.toFixed(2)).join(' '));
    assert.ok(h.at(-1)!.validationPerplexity! < h[0].validationPerplexity!, h.map((e) => e.validationPerplexity?.toFixed(2)).join(' '));
    console.log(`local SGD K=${K} ${JSON.stringify(over)}, 2 workers: ${ref.steps} steps in ${c.server.version} rounds, relative error vs in-process ${rel.toExponential(2)}, train perplexity ${h.map((e) => e.trainPerplexity.toFixed(2)).join(' -> ')}`);
    ref.server.dispose();
  } finally {
    killAll(procs);
    c.dispose();
  }
}

const coordinator = (args: string[]) => startCoordinatorProc(args);

test('--sync-every 4: SIGTERM and --resume continue to the same parameters as an uninterrupted run', async () => {
  const corpus = corpusFile();
  const common = ['--sync-every', '4', '--optimizer', 'adam', '--lr', '0.01', '--corpus', corpus, '--max-tokens', '3000', '--batch-size', '6', '--num-steps', '5', '--hidden', '16', '--epochs', '8', '--port', '0', '--metrics-port', '-1', '--host', '127.0.0.1', '--spawn', '2', '--min-workers', '2', '--backend', 'cpu', '--worker-backend', 'cpu', '--log-every', '1', '--sample-every', '0', '--checkpoint-every', '0'];

  const full = tmpDir();
  const a = coordinator([...common, '--checkpoint-dir', full]);
  assert.equal((await a.exited).code, 0, a.output());
  assert.match(a.output(), /local SGD: 4 inner steps \(adam, clipped there\) per round on each worker, then outer nesterov lr 0\.7 momentum 0\.9/);

  const part = tmpDir();
  const b = coordinator([...common, '--checkpoint-dir', part]);
  await waitFor(() => /epoch 2\/8/.test(b.output()), 180_000, 'two epochs');
  b.child.kill('SIGTERM');
  assert.equal((await b.exited).code, 0, b.output());
  const mid = await readCheckpoint(part);
  const want = await readCheckpoint(full);
  assert.ok(mid.step > 0 && mid.step < want.step, `stopped at step ${mid.step} of ${want.step}`);
  assert.equal(mid.optimizer.name, 'outer-nesterov');
  assert.ok(mid.optimizer.state.some((s) => /momentum$/.test(s.name)), 'the checkpoint holds the outer momentum');
  assert.ok(mid.rounds !== undefined && mid.rounds > 0 && mid.rounds * 4 <= mid.step + 3 && mid.rounds * 4 >= mid.step, `rounds ${mid.rounds}, steps ${mid.step}`);

  const c = coordinator([...common, '--checkpoint-dir', part, '--resume']);
  assert.equal((await c.exited).code, 0, c.output());
  assert.match(c.output(), new RegExp(`resume: step ${mid.step}`));
  const got = await readCheckpoint(part);
  assert.equal(got.step, want.step);
  assert.equal(got.rounds, want.rounds);
  const rel = relativeError(got.params, want.params);
  assert.ok(rel <= 1e-6, `resumed parameters differ: relative error ${rel.toExponential(2)}`);
  console.log(`local SGD resume: stopped at step ${mid.step} (round ${mid.rounds}) of ${want.step}; relative error of the resumed parameters ${rel.toExponential(2)}`);
});
