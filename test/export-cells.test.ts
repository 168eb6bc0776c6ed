/**
 * The RNN and GRU export as tfjs-layers simpleRNN and gru layers, which
 * express d2l's equations exactly: the loaded model gives the same per-step
 * distribution as dptrain's own forward pass (within 1e-5).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tf, testBackend } from './support/tf.js';
import { exportLayersModel } from '../src/shared/model/export-tfjs.js';
import { createModel } from '../src/shared/model/registry.js';
import { createTokenizer } from '../src/shared/data/tokenizer.js';
import { Vocab } from '../src/shared/data/vocab.js';
import { toTimeMajor } from '../src/shared/model/char-lstm/step.js';
import { Rng } from '../src/shared/data/rng.js';

const vocab = ['<unk>', 'a', 'b', 'c', ' ', '\n'];
const V = vocab.length;
const H = 4;

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

for (const cell of ['rnn', 'gru']) {
  test(`--cell ${cell}: the exported Layers model (${cell === 'rnn' ? 'simpleRNN' : 'gru'}) reproduces dptrain's forward pass within 1e-5`, async (t) => {
    await testBackend();
    const model = createModel(`char-${cell}`, V, { hidden: H });
    const rng = new Rng(11);
    const flat = new Float32Array(model.paramCount).map(() => 0.5 * rng.normal());
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'dptrain-export-'));
    t.after(() => fs.rm(dir, { recursive: true, force: true }));
    await exportLayersModel(flat, model, createTokenizer('char', Vocab.fromList(vocab), 'none'), dir);
    const json = JSON.parse(await fs.readFile(path.join(dir, 'model.json'), 'utf8'));
    assert.equal(json.userDefinedMetadata.dptrain.model, `char-${cell}`);
    const className = json.modelTopology.model_config?.config?.layers?.[0]?.class_name ?? json.modelTopology.config?.layers?.[0]?.class_name;
    assert.equal(className, cell === 'rnn' ? 'SimpleRNN' : 'GRU');
    assert.equal((await fs.stat(path.join(dir, 'weights.bin'))).size, model.paramCount * 4);

    const loaded = await tf.loadLayersModel(fileLoader(dir));
    const rows = 2;
    const numSteps = 6;
    const ids = new Int32Array(rows * numSteps).map(() => rng.int(0, V - 1));
    const session = model.forward(flat, rows);
    const logits = session.logits(toTimeMajor(ids, rows, numSteps), numSteps);
    const ref = tf.tidy(() => tf.softmax(logits).dataSync() as Float32Array);
    logits.dispose();
    session.dispose();
    const got = tf.tidy(() => {
      const x = tf.oneHot(tf.tensor2d(ids, [rows, numSteps], 'int32'), V).asType('float32');
      return (loaded.predict(x) as tf.Tensor).dataSync() as Float32Array;
    });
    let maxDiff = 0;
    for (let r = 0; r < rows; r++) {
      for (let s = 0; s < numSteps; s++) {
        for (let v = 0; v < V; v++) maxDiff = Math.max(maxDiff, Math.abs(got[(r * numSteps + s) * V + v] - ref[(s * rows + r) * V + v]));
      }
    }
    console.log(`${cell}: export max abs difference of the next-token distribution ${maxDiff.toExponential(2)}`);
    assert.ok(maxDiff < 1e-5, `max abs difference ${maxDiff}`);
    loaded.dispose();
  });
}
