import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../src/shared/backend.js';
import { isDptrainError } from '../src/shared/errors.js';

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
