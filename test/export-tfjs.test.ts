import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { tf, testBackend } from './support/tf.js';
import { exportLayersModel } from '../src/shared/model/export-tfjs.js';
import { buildLayersModel } from '../src/shared/model/char-lstm/layers.js';
import { createModel } from '../src/shared/model/registry.js';
import { createTokenizer } from '../src/shared/data/tokenizer.js';
import { Vocab } from '../src/shared/data/vocab.js';
import { lstmForward, namedParams } from '../src/shared/model/char-lstm/forward.js';
import { zeroState, toTimeMajor } from '../src/shared/model/char-lstm/step.js';
import { paramCount, type ModelDims } from '../src/shared/model/char-lstm/params.js';
import { Rng } from '../src/shared/data/rng.js';

const dims: ModelDims = { vocabSize: 6, hidden: 4 };
const vocab = ['<unk>', 'a', 'b', 'c', ' ', '\n'];

/** What a browser would do with http://: read model.json, then the weight files it names. */
function fileLoader(dir: string): tf.io.IOHandler {
  return {
    load: async () => {
      const modelJson = JSON.parse(await fs.readFile(path.join(dir, 'model.json'), 'utf8')) as tf.io.ModelJSON;
      return tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
        const specs = manifest.flatMap((g) => g.weights);
        const buffers = await Promise.all(
          manifest.flatMap((g) => g.paths).map(async (p) => {
            const b = await fs.readFile(path.join(dir, p));
            return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
          }),
        );
        return [specs, tf.io.CompositeArrayBuffer.join(buffers)];
      });
    },
  };
}

/** Per-step softmax of the reference forward pass, as (B, T, V) row-major. */
function referenceProbs(flat: Float32Array, ids: Int32Array, rows: number, numSteps: number): Float32Array {
  const { vocabSize: V, hidden: H } = dims;
  const timeMajor = tf.tidy(() => {
    const { logits } = lstmForward(namedParams(flat, dims), toTimeMajor(ids, rows, numSteps), numSteps, zeroState(rows, H), dims);
    return tf.softmax(logits).dataSync() as Float32Array;
  });
  const out = new Float32Array(rows * numSteps * V);
  for (let t = 0; t < numSteps; t++) {
    for (let r = 0; r < rows; r++) out.set(timeMajor.subarray((t * rows + r) * V, (t * rows + r + 1) * V), (r * numSteps + t) * V);
  }
  return out;
}

test('exported Layers model reproduces the reference forward pass', async (t) => {
  await testBackend();
  const rng = new Rng(7);
  const flat = new Float32Array(paramCount(dims)).map(() => 0.5 * rng.normal());
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'dptrain-export-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  await exportLayersModel(flat, createModel('char-lstm', dims.vocabSize, { hidden: dims.hidden }), createTokenizer('char', Vocab.fromList(vocab), 'none'), dir);
  assert.deepStrictEqual((await fs.readdir(dir)).sort(), ['model.json', 'weights.bin']);

  const json = JSON.parse(await fs.readFile(path.join(dir, 'model.json'), 'utf8'));
  assert.equal(json.format, 'layers-model');
  assert.deepStrictEqual(json.weightsManifest[0].paths, ['weights.bin']);
  assert.deepStrictEqual(json.userDefinedMetadata, { dptrain: { vocab, hidden: 4, vocabSize: 6, model: 'char-lstm', tokenizer: 'char', preprocess: 'none', minFreq: 0, separator: '' } });
  assert.equal((await fs.stat(path.join(dir, 'weights.bin'))).size, paramCount(dims) * 4);

  const model = await tf.loadLayersModel(fileLoader(dir));
  assert.deepStrictEqual(model.getUserDefinedMetadata(), { dptrain: { vocab, hidden: 4, vocabSize: 6, model: 'char-lstm', tokenizer: 'char', preprocess: 'none', minFreq: 0, separator: '' } });

  const rows = 2;
  const numSteps = 5;
  const ids = new Int32Array(rows * numSteps).map(() => rng.int(0, dims.vocabSize - 1));
  const expected = referenceProbs(flat, ids, rows, numSteps);
  for (const m of [model, buildLayersModel(flat, dims)]) {
    const got = tf.tidy(() => {
      const x = tf.oneHot(tf.tensor2d(ids, [rows, numSteps], 'int32'), dims.vocabSize).asType('float32');
      const y = m.predict(x) as tf.Tensor;
      assert.deepStrictEqual(y.shape, [rows, numSteps, dims.vocabSize]);
      return y.dataSync() as Float32Array;
    });
    let maxDiff = 0;
    for (let k = 0; k < got.length; k++) maxDiff = Math.max(maxDiff, Math.abs(got[k] - expected[k]));
    assert.ok(maxDiff < 1e-5, `max abs difference ${maxDiff}`);
    m.dispose();
  }
});

test('buildLayersModel refuses a parameter vector of the wrong length', () => {
  assert.throws(() => buildLayersModel(new Float32Array(3), dims), RangeError);
});
