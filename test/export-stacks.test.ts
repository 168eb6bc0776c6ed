/**
 * Stacks export as tfjs-layers models ([embedding] → stacked lstm / gru /
 * simpleRNN → dense softmax) that give the same per-step distribution as
 * dptrain's own forward pass (within 1e-5).
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
const CLASS: Record<string, string> = { lstm: 'LSTM', gru: 'GRU', rnn: 'SimpleRNN' };

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

for (const cell of ['lstm', 'gru', 'rnn']) {
  for (const embedding of [0, 3]) {
    test(`stack-${cell}, 2 layers, ${embedding > 0 ? 'embedding' : 'one-hot'}, dropout: the exported Layers model reproduces dptrain's forward pass within 1e-5`, async (t) => {
      await testBackend();
      const model = createModel(`stack-${cell}`, V, { hidden: 4, layers: 2, embedding, dropout: 0.3, seed: 0 });
      const rng = new Rng(11);
      const flat = new Float32Array(model.paramCount).map(() => 0.5 * rng.normal());
      const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'dptrain-export-'));
      t.after(() => fs.rm(dir, { recursive: true, force: true }));
      await exportLayersModel(flat, model, createTokenizer('char', Vocab.fromList(vocab), 'none'), dir);
      const json = JSON.parse(await fs.readFile(path.join(dir, 'model.json'), 'utf8'));
      assert.equal(json.userDefinedMetadata.dptrain.model, `stack-${cell}`);
      assert.equal(json.userDefinedMetadata.dptrain.layers, 2);
      const layers = (json.modelTopology.model_config?.config?.layers ?? json.modelTopology.config?.layers) as { class_name: string }[];
      assert.deepEqual(
        layers.map((l) => l.class_name),
        [...(embedding > 0 ? ['Embedding'] : []), CLASS[cell], 'Dropout', CLASS[cell], 'TimeDistributed'],
      );
      assert.equal((await fs.stat(path.join(dir, 'weights.bin'))).size, model.paramCount * 4);

      const loaded = await tf.loadLayersModel(fileLoader(dir));
      const rows = 2;
      const numSteps = 6;
      const ids = new Int32Array(rows * numSteps).map(() => rng.int(0, V - 1));
      const session = model.forward(flat, rows);
      // Two calls: the forward session carries every layer's state from one to the next, as the Layers model runs through.
      const first = session.logits(toTimeMajor(ids.filter((_, k) => k % numSteps < 3), rows, 3), 3);
      const second = session.logits(toTimeMajor(ids.filter((_, k) => k % numSteps >= 3), rows, 3), 3);
      const refA = tf.tidy(() => tf.softmax(first).dataSync() as Float32Array);
      const refB = tf.tidy(() => tf.softmax(second).dataSync() as Float32Array);
      tf.dispose([first, second]);
      session.dispose();
      const got = tf.tidy(() => {
        const x = embedding > 0 ? tf.tensor2d(ids, [rows, numSteps], 'int32') : tf.oneHot(tf.tensor2d(ids, [rows, numSteps], 'int32'), V).asType('float32');
        return (loaded.predict(x) as tf.Tensor).dataSync() as Float32Array;
      });
      let maxDiff = 0;
      for (let r = 0; r < rows; r++) {
        for (let s = 0; s < numSteps; s++) {
          const ref = s < 3 ? refA : refB;
          const at = ((s % 3) * rows + r) * V;
          for (let v = 0; v < V; v++) maxDiff = Math.max(maxDiff, Math.abs(got[(r * numSteps + s) * V + v] - ref[at + v]));
        }
      }
      console.log(`stack-${cell} (${embedding > 0 ? 'embedding' : 'one-hot'}): export max abs difference of the next-token distribution ${maxDiff.toExponential(2)}`);
      assert.ok(maxDiff < 1e-5, `max abs difference ${maxDiff}`);
      loaded.dispose();
    });
  }
}
