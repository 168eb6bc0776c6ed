/**
 * Local SGD (--sync-every K, DiLoCo) in process: the outer optimizer's
 * arithmetic (Nesterov, and plain averaging), the flags it refuses, the
 * wire form of a local round, and the reference loop: one shard with outer
 * SGD at lr 1 is exactly synchronous training.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { testBackend } from './support/tf.js';
import { isDptrainError } from '../src/shared/errors.js';
import { resolveCoordinatorConfig } from '../src/shared/config.js';
import { createModel } from '../src/shared/model/registry.js';
import { ParameterServer } from '../src/shared/train/param-server.js';
import { outerOptimizerConfig } from '../src/shared/train/outer-optimizer.js';
import { trainLocalSgd } from '../src/shared/train/local-sgd.js';
import { trainLocal } from '../src/shared/train/local-trainer.js';
import { buildCorpus } from '../src/shared/data/corpus.js';
import { Rng } from '../src/shared/data/rng.js';
import { decodeCoordinatorMessage, encode } from '../src/shared/wire/protocol.js';
import { corpusFile, relativeError, tinyCoordinatorConfig } from './support/cluster.js';
import fs from 'node:fs';

function refused(over: Record<string, unknown>, re: RegExp): void {
  assert.throws(
    () => resolveCoordinatorConfig({ corpus: 'x.txt', ...over }, {}),
    (e: unknown) => isDptrainError(e, 'ERR_BAD_CONFIG') && re.test((e as Error).message),
  );
}

test('the outer flags: DiLoCo defaults with --sync-every > 1; refused without it, and momentum refused with plain sgd', () => {
  const c = resolveCoordinatorConfig({ corpus: 'x.txt', syncEvery: 8 }, {});
  assert.deepEqual([c.syncEvery, c.outerOptimizer, c.outerLr, c.outerMomentum], [8, 'nesterov', 0.7, 0.9]);
  const sync = resolveCoordinatorConfig({ corpus: 'x.txt' }, {});
  assert.deepEqual([sync.syncEvery, sync.outerOptimizer, sync.outerLr, sync.outerMomentum], [1, undefined, undefined, undefined]);
  const sgd = resolveCoordinatorConfig({ corpus: 'x.txt', syncEvery: 2, outerOptimizer: 'sgd', outerLr: 1 }, {});
  assert.deepEqual([sgd.outerOptimizer, sgd.outerLr, sgd.outerMomentum], ['sgd', 1, undefined]);
  refused({ outerLr: 0.5 }, /--outer-lr applies only to local SGD; add --sync-every/);
  refused({ syncEvery: 1, outerOptimizer: 'nesterov', outerMomentum: 0.5 }, /--outer-optimizer and --outer-momentum apply only to local SGD/);
  refused({ syncEvery: 4, outerOptimizer: 'sgd', outerMomentum: 0.5 }, /--outer-momentum applies only to --outer-optimizer nesterov/);
  refused({ syncEvery: 0 }, /--sync-every must be at least 1/);
  refused({ syncEvery: 2.5 }, /--sync-every must be an integer/);
  refused({ syncEvery: 4, outerOptimizer: 'adam' }, /--outer-optimizer must be one of sgd, nesterov/);
  refused({ syncEvery: 4, outerMomentum: 1 }, /--outer-momentum must be at most 0.9999/);
});

test('outer Nesterov: m = mu m + g, theta -= lr (g + mu m), on the token-weighted mean change; outer sgd lr 1 is averaging', async () => {
  await testBackend();
  const model = createModel('char-lstm', 5, { hidden: 3 });
  const rng = new Rng(7);
  const init = Float32Array.from({ length: model.paramCount }, () => rng.normal() * 0.1);
  const lr = 0.7;
  const mu = 0.9;
  const server = new ParameterServer(model, init, outerOptimizerConfig({ syncEvery: 4, outerOptimizer: 'nesterov', outerLr: lr, outerMomentum: mu }));
  const theta = Float64Array.from(init);
  const m = new Float64Array(init.length);
  for (let round = 0; round < 4; round++) {
    // Two workers' sums, (theta - theta_local) x tokens, with 30 and 10 tokens; norms far above any clip.
    const tokens = [30, 10];
    const sum = new Float64Array(init.length);
    const change = tokens.map(() => Float64Array.from(init, () => rng.normal() * 5));
    change.forEach((d, w) => d.forEach((x, i) => (sum[i] += x * tokens[w])));
    const r = server.apply(sum, 40);
    assert.equal(r.scale, 1, 'the outer step is never clipped');
    for (let i = 0; i < theta.length; i++) {
      const g = sum[i] / 40;
      m[i] = mu * m[i] + g;
      theta[i] -= lr * (g + mu * m[i]);
    }
    const rel = relativeError(server.params(), Float32Array.from(theta));
    assert.ok(rel < 1e-6, `round ${round}: relative error ${rel}`);
  }
  assert.equal(server.version, 4);
  const slots = await server.optimizerState();
  assert.ok(slots.some((s) => /momentum$/.test(s.name)), `momentum slots for the checkpoint: ${slots.map((s) => s.name).join(', ')}`);
  server.dispose();

  const avg = new ParameterServer(model, init, outerOptimizerConfig({ syncEvery: 2, outerOptimizer: 'sgd', outerLr: 1 }));
  const local = [Float32Array.from(init, (x) => x + 0.5), Float32Array.from(init, (x) => x - 0.1)];
  const sum = new Float64Array(init.length);
  local.forEach((p, w) => p.forEach((x, i) => (sum[i] += (init[i] - x) * [1, 3][w])));
  avg.apply(sum, 4);
  const want = Float32Array.from(init, (_, i) => (local[0][i] * 1 + local[1][i] * 3) / 4);
  assert.ok(relativeError(avg.params(), want) < 1e-6, 'outer sgd at lr 1 sets the token-weighted average of the workers\u2019 parameters');
  avg.dispose();
});

test('one shard with outer sgd at lr 1 is synchronous training: trainLocalSgd equals trainLocal step for step', async () => {
  await testBackend();
  const text = fs.readFileSync(corpusFile(), 'utf8').slice(0, 3000);
  const corpus = buildCorpus(text, { valFraction: 0.1 });
  const cfg = { ...tinyCoordinatorConfig({ batchSize: 4, numSteps: 5, epochs: 2 }), syncEvery: 5, outerOptimizer: 'sgd' as const, outerLr: 1 };
  const local = trainLocalSgd(cfg, corpus, 1);
  const sync = trainLocal({ ...cfg, syncEvery: 1 }, corpus);
  assert.equal(local.steps, sync.server.version, 'the same number of optimizer steps');
  assert.ok(local.server.version < local.steps / 4, `${local.server.version} rounds for ${local.steps} steps`);
  const rel = relativeError(local.server.params(), sync.server.params());
  assert.ok(rel < 1e-5, `relative error ${rel.toExponential(2)} after ${local.steps} steps`);
  local.server.dispose();
  sync.server.dispose();
});

test('step.local travels the wire and back; malformed inner steps are refused', () => {
  const step = {
    type: 'step' as const,
    round: 3,
    paramsVersion: 2,
    lo: 1,
    hi: 3,
    starts: Int32Array.of(10, 20),
    fresh: Uint8Array.of(0, 1),
    local: { starts: Int32Array.of(15, 25, 0, 5), resets: Uint8Array.of(0, 1), optimizer: 'adam' as const, lr: 0.01, clip: 1 },
  };
  const v = decodeCoordinatorMessage(encode(step));
  assert.ok(v.ok, v.ok ? '' : v.message);
  assert.deepEqual(v.msg, step);
  const bad = (local: Record<string, unknown>, re: RegExp) => {
    const r = decodeCoordinatorMessage(encode({ ...step, local: { ...step.local, ...local } } as never));
    assert.ok(!r.ok && r.code === 'ERR_BAD_MESSAGE' && re.test(r.message), JSON.stringify(r));
  };
  bad({ starts: Int32Array.of(1, 2, 3) }, /step\.local\.starts has 12 bytes, expected 16/);
  bad({ resets: Uint8Array.of(0, 2) }, /resets\[1\] must be 0 or 1/);
  bad({ optimizer: 'rmsprop' }, /optimizer must be sgd or adam/);
  bad({ lr: -1 }, /must be positive/);
});

test('the coordinator in process: a local round sends its K batches in step.local, waits K x --round-timeout, and counts K steps in one round', async () => {
  await testBackend();
  const { Coordinator } = await import('../src/coordinator/coordinator.js');
  const { PROTOCOL_VERSION } = await import('../src/shared/wire/protocol.js');
  const { encodeTensor } = await import('../src/shared/wire/tensor.js');
  const { TOKEN, waitFor } = await import('./support/cluster.js');
  type Handlers = import('../src/coordinator/ws-server.js').WsHandlers;
  type StepMsg = import('../src/shared/wire/protocol.js').StepMsg;
  let handlers!: Handlers;
  const deadlines: number[] = [];
  const clock = { now: () => 0, setTimeout: (_fn: () => void, ms: number) => (deadlines.push(ms), deadlines.length), clearTimeout: () => undefined };
  const cfg = tinyCoordinatorConfig({ minWorkers: 1, epochs: 1, roundTimeout: 3, syncEvery: 4 });
  const c = new Coordinator(cfg, TOKEN, { log: () => undefined, progress: null, clock, transport: (_o, h) => ((handlers = h), { scheme: 'fake', connectionCount: 0, listen: async () => 1, close: async () => {} }) });
  await c.start();
  const got: StepMsg[] = [];
  const peer = {
    send: (bytes: Uint8Array) => {
      const v = decodeCoordinatorMessage(bytes);
      if (v.ok && v.msg.type === 'step') got.push(v.msg);
    },
    close: () => undefined,
    bufferedAmount: () => 0,
  };
  const r = handlers.onHello({ type: 'hello', version: PROTOCOL_VERSION, token: TOKEN, info: { backend: 'cpu', device: 'cpu', host: 'test', pid: 1 } }, peer, 'a');
  assert.ok(r.ok);
  const running = c.run();
  try {
    await waitFor(() => got.length === 1, 5000, 'the first round');
    const step = got[0];
    assert.ok(step.local, 'a local round');
    assert.equal(step.local.resets.length, 3, 'K - 1 further inner steps');
    assert.equal(step.local.starts.length, 3 * cfg.batchSize);
    assert.deepEqual([step.local.optimizer, step.local.lr, step.local.clip], [cfg.optimizer, cfg.lr, cfg.clip]);
    assert.equal(step.local.starts[0], step.starts[0] + cfg.numSteps, 'sequential: the next batch of the same stream');
    assert.equal(deadlines.at(-1), 4 * 3000, 'the deadline scales with the inner steps');
    // A reply that covers one batch's tokens instead of four is refused.
    const tokens = cfg.batchSize * cfg.numSteps;
    const grads = encodeTensor(new Float32Array(c.model.paramCount).fill(1e-3 * 4 * tokens), 'float32');
    handlers.onMessage(r.id!, { type: 'grads', round: step.round, tokenCount: tokens, lossSum: tokens, computeMs: 1, grads }, 0);
    assert.equal(c.state.step, 0);
    handlers.onMessage(r.id!, { type: 'grads', round: step.round, tokenCount: 4 * tokens, lossSum: 4 * tokens * 3, computeMs: 1, grads }, 0);
    await waitFor(() => c.state.step === 4, 5000, 'the round to be applied');
    assert.equal(c.server.version, 1, 'one round, one outer step');
    assert.equal((await c.metrics.rounds.get()).values[0].value, 1);
    assert.equal((await c.metrics.steps.get()).values[0].value, 4);
    // The outer Nesterov step on a change of 1e-3 everywhere: theta -= 0.7 (1e-3 + 0.9 * 1e-3).
    const p0 = (await import('../src/shared/train/local-trainer.js')).initialParams(cfg, c.model);
    assert.ok(Math.abs(p0[0] - c.server.params()[0] - 0.7 * 1.9e-3) < 1e-6);
  } finally {
    c.stop('test over');
    c.stop('test over');
    await running;
    await c.dispose();
  }
});
