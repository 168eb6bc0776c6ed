import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { GPU_REQUIREMENT, selectBackend } from '../src/shared/backend.js';
import { isDptrainError } from '../src/shared/errors.js';
import { cliPath, repoRoot, tmpDir } from './support/cluster.js';
import { startCoordinatorProc, within } from './support/processes.js';

const require = createRequire(import.meta.url);
function loads(pkg: string): boolean {
  try {
    require(pkg);
    return true;
  } catch {
    return false;
  }
}

test('tensorflow backend: a missing tfjs-node names the package and the fallback', async (t) => {
  if (loads('@tensorflow/tfjs-node')) {
    const b = await selectBackend({ backend: 'tensorflow', log: () => {} });
    assert.equal(b.name, 'tensorflow');
    return;
  }
  await assert.rejects(selectBackend({ backend: 'tensorflow', log: () => {} }), (e: unknown) => {
    assert.ok(isDptrainError(e, 'ERR_BACKEND_UNAVAILABLE'));
    assert.match((e as Error).message, /@tensorflow\/tfjs-node/);
    assert.match((e as Error).message, /--backend wasm/);
    return true;
  });
  t.diagnostic('tfjs-node is not installed here: checked the error path');
});

test('--gpu loads tfjs-node-gpu after setting CUDA_VISIBLE_DEVICES, and never falls back silently', async () => {
  const before = process.env.CUDA_VISIBLE_DEVICES;
  const growth = process.env.TF_FORCE_GPU_ALLOW_GROWTH;
  try {
    if (loads('@tensorflow/tfjs-node-gpu')) return;
    await assert.rejects(selectBackend({ backend: 'auto', gpu: 3, log: () => {} }), (e: unknown) => {
      assert.ok(isDptrainError(e, 'ERR_BACKEND_UNAVAILABLE'));
      assert.match((e as Error).message, /@tensorflow\/tfjs-node-gpu/);
      return true;
    });
    assert.equal(process.env.CUDA_VISIBLE_DEVICES, '3');
    await assert.rejects(selectBackend({ backend: 'wasm', gpu: 0, log: () => {} }), /--gpu needs/);
  } finally {
    if (before === undefined) delete process.env.CUDA_VISIBLE_DEVICES;
    else process.env.CUDA_VISIBLE_DEVICES = before;
    if (growth === undefined) delete process.env.TF_FORCE_GPU_ALLOW_GROWTH;
    else process.env.TF_FORCE_GPU_ALLOW_GROWTH = growth;
  }
});

test('auto falls back to the best backend present and logs the choice', async () => {
  const lines: string[] = [];
  const b = await selectBackend({ backend: 'auto', log: (l) => lines.push(l) });
  assert.equal(tf.getBackend(), b.name);
  if (!loads('@tensorflow/tfjs-node')) {
    assert.equal(b.name, 'wasm');
    assert.ok(lines.some((l) => /tfjs-node.*falling back to wasm/.test(l)), lines.join('\n'));
  }
  assert.ok(lines.some((l) => l.startsWith(`backend: ${b.name}`)), lines.join('\n'));
  const cpu = await selectBackend({ backend: 'cpu', log: () => {} });
  assert.equal(cpu.name, 'cpu');
  assert.equal(tf.getBackend(), 'cpu');
});

/** Runs fn with the GPU variables of this process unset, and puts them back after. */
async function withoutGpuEnv<T>(fn: () => Promise<T>): Promise<T> {
  const keys = ['CUDA_VISIBLE_DEVICES', 'TF_FORCE_GPU_ALLOW_GROWTH'] as const;
  const saved = keys.map((k) => process.env[k]);
  for (const k of keys) delete process.env[k];
  try {
    return await fn();
  } finally {
    keys.forEach((k, i) => (saved[i] === undefined ? delete process.env[k] : (process.env[k] = saved[i])));
  }
}

/** The GPU environment at the moment the (injected) loader is asked for a package, then a missing-package error. */
function recordingLoader(seen: Record<string, string | undefined>[]) {
  return (pkg: string): never => {
    seen.push({ pkg, CUDA_VISIBLE_DEVICES: process.env.CUDA_VISIBLE_DEVICES, TF_FORCE_GPU_ALLOW_GROWTH: process.env.TF_FORCE_GPU_ALLOW_GROWTH });
    throw Object.assign(new Error(`Cannot find module '${pkg}'`), { code: 'MODULE_NOT_FOUND' });
  };
}

test('--gpu sets TF_FORCE_GPU_ALLOW_GROWTH=true and CUDA_VISIBLE_DEVICES before tfjs-node-gpu loads; a missing package names itself and CUDA 11.2 / cuDNN 8.1', async () => {
  await withoutGpuEnv(async () => {
    const seen: Record<string, string | undefined>[] = [];
    const lines: string[] = [];
    await assert.rejects(selectBackend({ backend: 'auto', gpu: 2, log: (l) => lines.push(l), loadNative: recordingLoader(seen) }), (e: unknown) => {
      assert.ok(isDptrainError(e, 'ERR_BACKEND_UNAVAILABLE'));
      const m = (e as Error).message;
      assert.match(m, /cannot load @tensorflow\/tfjs-node-gpu \(Cannot find module/);
      assert.match(m, /CUDA 11\.2/);
      assert.match(m, /cuDNN 8\.1/);
      assert.match(m, /libtensorflow 2\.9\.1/);
      assert.match(m, /README "GPU workers"/);
      assert.match(m, /drop --gpu/);
      return true;
    });
    assert.deepEqual(seen, [{ pkg: '@tensorflow/tfjs-node-gpu', CUDA_VISIBLE_DEVICES: '2', TF_FORCE_GPU_ALLOW_GROWTH: 'true' }]);
    assert.ok(lines.includes('backend: CUDA_VISIBLE_DEVICES=2 TF_FORCE_GPU_ALLOW_GROWTH=true'), lines.join('\n'));
  });
});

test("the user's own TF_FORCE_GPU_ALLOW_GROWTH is kept; without --gpu neither variable is touched", async () => {
  await withoutGpuEnv(async () => {
    const seen: Record<string, string | undefined>[] = [];
    process.env.TF_FORCE_GPU_ALLOW_GROWTH = 'false';
    await assert.rejects(selectBackend({ backend: 'tensorflow', gpu: 0, log: () => {}, loadNative: recordingLoader(seen) }), /ERR_BACKEND_UNAVAILABLE|cannot load/);
    assert.deepEqual(seen.at(-1), { pkg: '@tensorflow/tfjs-node-gpu', CUDA_VISIBLE_DEVICES: '0', TF_FORCE_GPU_ALLOW_GROWTH: 'false' });
    delete process.env.TF_FORCE_GPU_ALLOW_GROWTH;
    delete process.env.CUDA_VISIBLE_DEVICES;
    await assert.rejects(selectBackend({ backend: 'tensorflow', log: () => {}, loadNative: recordingLoader(seen) }), (e: unknown) => {
      assert.match((e as Error).message, /cannot load @tensorflow\/tfjs-node \(/);
      assert.doesNotMatch((e as Error).message, /CUDA/);
      return true;
    });
    assert.deepEqual(seen.at(-1), { pkg: '@tensorflow/tfjs-node', CUDA_VISIBLE_DEVICES: undefined, TF_FORCE_GPU_ALLOW_GROWTH: undefined });
  });
});

/*
 * Real processes for what only a GPU machine has: @tensorflow/tfjs-node-gpu
 * cannot be installed here, so the worker processes below find a clearly
 * labelled stand-in package (test/fixtures/gpu-standin, on NODE_PATH) in its
 * place. Everything else is real: the CLI, backend selection, the coordinator
 * process, the WebSocket join and the training run.
 */
const STANDIN = path.join(repoRoot, 'test', 'fixtures', 'gpu-standin');
const GPU_TOKEN = 'gpu-test-token-0123456789';

function workerEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, DPTRAIN_TOKEN: GPU_TOKEN, ...extra };
  delete env.CUDA_VISIBLE_DEVICES;
  delete env.TF_FORCE_GPU_ALLOW_GROWTH;
  return env;
}

function gpuCorpus(dir: string): string {
  const words = ['the', 'time', 'machine', 'traveller', 'said', 'and', 'we', 'sat', 'by', 'fire', 'of', 'a', 'strange', 'hour'];
  let text = '';
  for (let i = 0; text.length < 6000; i++) text += words[(i * 7 + (i >> 3)) % words.length] + (i % 11 === 10 ? '.\n' : ' ');
  const p = path.join(dir, 'corpus.txt');
  fs.writeFileSync(p, text);
  return p;
}

test('two workers on one GPU (worker join --gpu 0, twice) get distinct names and slots, and both load the GPU package with allow-growth set', async (t) => {
  if (loads('@tensorflow/tfjs-node-gpu')) {
    t.skip('the real tfjs-node-gpu is installed here: the stand-in would not be used');
    return;
  }
  const dir = tmpDir('dptrain-gpu-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const record = path.join(dir, 'standin-loads.jsonl');
  const coord = startCoordinatorProc(
    ['--corpus', gpuCorpus(dir), '--max-tokens', '0', '--hidden', '8', '--batch-size', '4', '--num-steps', '5', '--epochs', '1',
      '--min-workers', '2', '--host', '127.0.0.1', '--port', '0', '--metrics-port', '-1', '--backend', 'cpu', '--log-every', '1', '--sample-every', '0'],
    { DPTRAIN_TOKEN: GPU_TOKEN },
  );
  const workers: { child: ReturnType<typeof spawn>; out: string; exited: Promise<number | null> }[] = [];
  try {
    const port = await coord.listening(60_000);
    for (let k = 0; k < 2; k++) {
      const child = spawn(process.execPath, ['--import', 'tsx', cliPath, 'worker', 'join', '--coordinator', `ws://127.0.0.1:${port}`, '--gpu', '0', '--max-retries', '3'], {
        env: workerEnv({ NODE_PATH: STANDIN, DPTRAIN_STANDIN_RECORD: record }),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const w = { child, out: '', exited: new Promise<number | null>((r) => child.on('exit', (code) => r(code))) };
      child.stdout!.on('data', (d) => (w.out += d));
      child.stderr!.on('data', (d) => (w.out += d));
      workers.push(w);
    }
    const codes = await within(Promise.all(workers.map((w) => w.exited)), 120_000, 'both GPU workers to finish the run');
    const done = await within(coord.exited, 30_000, 'the coordinator to finish');
    const log = coord.output();
    assert.equal(done.code, 0, log);
    workers.forEach((w, k) => {
      assert.equal(codes[k], 0, w.out);
      assert.match(w.out, /backend: tensorflow \(@tensorflow\/tfjs-node-gpu, device gpu:0\)/);
    });

    // The coordinator logs "worker <slot> joined from <addr> (<name>, <backend>/<device>)".
    const joins = [...log.matchAll(/worker (w\d+) joined from \S+ \(([^,]+), ([^/]+)\/([^)]+)\)/g)].map((m) => ({ slot: m[1], name: m[2], backend: m[3], device: m[4] }));
    assert.equal(joins.length, 2, log);
    assert.notEqual(joins[0].slot, joins[1].slot, 'two slots');
    assert.notEqual(joins[0].name, joins[1].name, 'two names');
    const pids = workers.map((w) => w.child.pid);
    for (const j of joins) {
      assert.equal(j.backend, 'tensorflow');
      assert.equal(j.device, 'gpu:0');
      assert.ok(pids.some((pid) => j.name.endsWith(`:${pid}`)), `default name host:pid, got ${j.name}`);
    }

    // What the GPU package saw when it loaded, in each worker process.
    const loadsSeen = fs.readFileSync(record, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { pid: number; CUDA_VISIBLE_DEVICES: string; TF_FORCE_GPU_ALLOW_GROWTH: string });
    assert.deepEqual(loadsSeen.map((l) => l.pid).sort(), [...pids].sort());
    for (const l of loadsSeen) {
      assert.equal(l.CUDA_VISIBLE_DEVICES, '0');
      assert.equal(l.TF_FORCE_GPU_ALLOW_GROWTH, 'true');
    }
  } finally {
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    if (coord.child.exitCode === null && coord.child.signalCode === null) coord.child.kill('SIGKILL');
  }
});

test('worker join --gpu: a GPU package that finds no GPU, or no GPU package at all, is one sentence naming the package and CUDA 11.2 / cuDNN 8.1, exit 2', (t) => {
  const join = (env: NodeJS.ProcessEnv) =>
    spawnSync(process.execPath, ['--import', 'tsx', cliPath, 'worker', 'join', '--coordinator', 'ws://127.0.0.1:9', '--gpu', '0', '--max-retries', '1'], { env: workerEnv(env), encoding: 'utf8', timeout: 60_000 });
  const checks = (r: ReturnType<typeof join>, what: RegExp) => {
    assert.equal(r.status, 2, `${r.stdout}${r.stderr}`);
    const errors = r.stderr.split('\n').filter((l) => l.startsWith('error: '));
    assert.equal(errors.length, 1, r.stderr);
    assert.match(errors[0], what);
    assert.match(errors[0], /@tensorflow\/tfjs-node-gpu/);
    assert.match(errors[0], /CUDA 11\.2 and cuDNN 8\.1/);
    assert.match(errors[0], /\(ERR_BACKEND_UNAVAILABLE\)$/);
    assert.doesNotMatch(r.stderr, /\n\s+at .+:\d+:\d+/, 'no stack trace');
    assert.doesNotMatch(r.stdout, /connection error|reconnecting/, 'it stopped before connecting');
  };
  // libtensorflow loaded but registered no GPU device (CUDA 12 host without the CUDA 11 libraries):
  // refused instead of training on the CPU under a gpu:0 label.
  checks(join({ NODE_PATH: STANDIN, DPTRAIN_STANDIN_GPU: '0' }), /loaded but TensorFlow found no usable GPU 0/);
  if (loads('@tensorflow/tfjs-node-gpu')) {
    t.diagnostic('tfjs-node-gpu is installed here: the missing-package case is not checked');
    return;
  }
  checks(join({}), /cannot load @tensorflow\/tfjs-node-gpu \(Cannot find module/);
});

test('README "GPU workers" (after "Multi-machine") gives the CUDA/cuDNN versions, the CUDA 12 error and its fix, PTX JIT caching, allow-growth and the offline mirror', () => {
  const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
  const start = readme.indexOf('\n## GPU workers\n');
  assert.ok(start > readme.indexOf('\n## Multi-machine\n') && readme.indexOf('\n## Multi-machine\n') > 0, 'a "## GPU workers" section after "## Multi-machine"');
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  for (const must of [
    'CUDA 11.2', 'cuDNN 8.1', 'libtensorflow 2.9.1', "Could not load dynamic library 'libcudart.so.11.0'", 'tensorflow/tfjs#8362', '#8187',
    'PTX', 'CUDA_CACHE_MAXSIZE', 'CUDA_CACHE_PATH', 'TF_FORCE_GPU_ALLOW_GROWTH', '--gpu 0', 'TFJS_NODE_BASE_URI', 'scripts/install.js',
  ]) {
    assert.ok(section.includes(must), `README "GPU workers" should mention ${must}`);
  }
  // The section and the error message agree on what the package needs.
  assert.match(GPU_REQUIREMENT, /CUDA 11\.2 and cuDNN 8\.1/);
});
