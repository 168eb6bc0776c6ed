/**
 * Relays as real processes: 2 relays x 2 workers, and a relay under a relay,
 * end at the parameters of the in-process loop; each relay serves its own
 * /metrics and the root shows each relay with the workers it carries.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadCorpus } from '../src/shared/data/corpus-source.js';
import { initialParams, trainLocal } from '../src/shared/train/local-trainer.js';
import { trainLocalSgd } from '../src/shared/train/local-sgd.js';
import { statusJson } from '../src/coordinator/status.js';
import { killAll, relativeError, spawnWorker, startCoordinator, tinyCoordinatorConfig, waitFor, type WorkerProc } from './support/cluster.js';
import { spawnRelay, type RelayProc } from './support/relay.js';
import type { Coordinator } from '../src/coordinator/coordinator.js';

interface Topology {
  relays: RelayProc[];
  workers: WorkerProc[];
}

/** Runs a tiny training with `build` laying out relays and workers; checks it against one process. */
async function equivalence(minWorkers: number, batchSize: number, build: (rootUrl: string) => Promise<Topology>, during?: (c: Coordinator, t: Topology) => Promise<void>): Promise<number> {
  const cfg = tinyCoordinatorConfig({ minWorkers, batchSize });
  const c = await startCoordinator(cfg);
  let t: Topology = { relays: [], workers: [] };
  try {
    t = await build(`ws://127.0.0.1:${c.port}`);
    const running = c.run();
    if (during) await during(c, t);
    const summary = await running;
    assert.equal(summary.reason, 'done');
    for (const [k, w] of t.workers.entries()) assert.equal((await w.exited).code, 0, `worker ${k}:\n${w.output()}`);
    for (const [k, r] of t.relays.entries()) assert.equal((await r.exited).code, 0, `relay ${k}:\n${r.output()}`);

    const { corpus } = await loadCorpus(cfg.corpus, { dataDir: '.', maxTokens: cfg.maxTokens, valFraction: cfg.valFraction, preprocess: cfg.preprocess });
    const local = trainLocal(cfg, corpus);
    assert.equal(c.server.version, local.server.version, 'same number of optimizer steps');
    assert.ok(c.server.version >= 40, `ran ${c.server.version} steps`);
    const rel = relativeError(c.server.params(), local.server.params());
    assert.ok(rel <= 1e-5, `parameters differ: relative error ${rel.toExponential(2)} after ${c.server.version} steps`);
    assert.ok(relativeError(c.server.params(), initialParams(cfg, c.model)) > 1e-2, 'training moved the parameters');
    local.server.dispose();
    return rel;
  } finally {
    killAll(t.workers);
    for (const r of t.relays) r.kill('SIGKILL');
    await c.dispose();
  }
}

test('2 relays x 2 workers equal the in-process loop; relays serve /metrics and the root shows what each carries', async () => {
  const rel = await equivalence(
    4,
    8,
    async (root) => {
      const relays = [spawnRelay(root, ['--name', 'relay-a']), spawnRelay(root, ['--name', 'relay-b'])];
      const workers: WorkerProc[] = [];
      for (const r of relays) {
        const url = `ws://127.0.0.1:${await r.port()}`;
        workers.push(spawnWorker(url), spawnWorker(url));
      }
      return { relays, workers };
    },
    async (c, t) => {
      await waitFor(() => c.membership.list().every((m) => m.rounds >= 2) && c.membership.size === 2, 60_000, 'both relays training');
      const status = statusJson(c);
      assert.deepEqual(status.workers.map((w) => [w.name, w.relay]).sort(), [['relay-a', { workers: 2 }], ['relay-b', { workers: 2 }]]);
      const rootMetrics = await c.metrics.registry.metrics();
      assert.match(rootMetrics, /^dptrain_relay_carried_workers\{relay="w0"\} 2$/m);
      assert.match(rootMetrics, /^dptrain_relay_carried_workers\{relay="w1"\} 2$/m);
      const text = await (await fetch(`http://127.0.0.1:${await t.relays[0].metricsPort()}/metrics`)).text();
      assert.match(text, /^dptrain_relay_workers 2$/m);
      assert.match(text, /^dptrain_relay_upstream_connected 1$/m);
      assert.match(text, /^dptrain_relay_rounds_total [1-9]/m);
      const ready = await fetch(`http://127.0.0.1:${await t.relays[0].metricsPort()}/readyz`);
      assert.equal(ready.status, 200);
    },
  );
  console.log(`2 relays x 2 workers: relative error of the parameters vs one process: ${rel.toExponential(2)}`);
});

test('a relay under a relay (2 workers under the lower one, 1 beside it) on uneven shards equals the in-process loop', async () => {
  const rel = await equivalence(3, 7, async (root) => {
    const upper = spawnRelay(root, ['--name', 'upper']);
    const upperUrl = `ws://127.0.0.1:${await upper.port()}`;
    const lower = spawnRelay(upperUrl, ['--name', 'lower']);
    const lowerUrl = `ws://127.0.0.1:${await lower.port()}`;
    return { relays: [upper, lower], workers: [spawnWorker(lowerUrl), spawnWorker(lowerUrl), spawnWorker(upperUrl)] };
  });
  console.log(`a relay under a relay: relative error of the parameters vs one process: ${rel.toExponential(2)}`);
});

test('local SGD (--sync-every 3) through a relay with 2 workers equals the in-process local SGD loop with 2 shards', async () => {
  const cfg = tinyCoordinatorConfig({ minWorkers: 2, batchSize: 6, epochs: 2, syncEvery: 3 });
  const c = await startCoordinator(cfg);
  const relays: RelayProc[] = [];
  const workers: WorkerProc[] = [];
  try {
    relays.push(spawnRelay(`ws://127.0.0.1:${c.port}`, ['--name', 'relay-a']));
    const url = `ws://127.0.0.1:${await relays[0].port()}`;
    workers.push(spawnWorker(url), spawnWorker(url));
    const summary = await c.run();
    assert.equal(summary.reason, 'done');
    for (const [k, w] of workers.entries()) assert.equal((await w.exited).code, 0, `worker ${k}:\n${w.output()}`);
    const { corpus } = await loadCorpus(cfg.corpus, { dataDir: '.', maxTokens: cfg.maxTokens, valFraction: cfg.valFraction, preprocess: cfg.preprocess });
    const ref = trainLocalSgd(cfg, corpus, 2);
    assert.equal(summary.steps, ref.steps, 'inner steps');
    assert.equal(c.server.version, ref.server.version, 'outer steps');
    const rel = relativeError(c.server.params(), ref.server.params());
    assert.ok(rel <= 1e-5, `parameters differ: relative error ${rel.toExponential(2)}`);
    console.log(`local SGD through a relay: relative error vs the in-process loop: ${rel.toExponential(2)}`);
    ref.server.dispose();
  } finally {
    killAll(workers);
    for (const r of relays) r.kill('SIGKILL');
    await c.dispose();
  }
});
