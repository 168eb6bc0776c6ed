/**
 * `--cell gru` and `--cell rnn` end to end: `coordinator start --spawn 2`
 * exits 0 with a checkpoint that names the model, `generate` and `export`
 * accept it, and a run of another cell refuses to resume it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { readCheckpoint } from '../src/shared/store/checkpoint.js';
import { corpusFile, tmpDir } from './support/cluster.js';
import { runDptrain } from './support/proc.js';


const cli = runDptrain;

const corpus = corpusFile();

for (const [cell, other] of [['gru', 'rnn'], ['rnn', 'lstm']]) {
  test(`coordinator start --spawn 2 --cell ${cell} exits 0; generate and export accept its checkpoint; --cell ${other} refuses to resume it`, async () => {
    const ck = tmpDir();
    const common = ['--corpus', corpus, '--max-tokens', '3000', '--hidden', '16', '--batch-size', '4', '--num-steps', '5', '--port', '0', '--host', '127.0.0.1', '--metrics-port', '-1', '--backend', 'cpu', '--worker-backend', 'cpu', '--sample-every', '0', '--log-every', '1', '--checkpoint-dir', ck];
    const run = await cli(['coordinator', 'start', '--spawn', '2', '--cell', cell, '--epochs', '2', ...common]);
    assert.equal(run.code, 0, run.out);
    assert.match(run.out, new RegExp(`model: ${cell.toUpperCase()} hidden 16`));
    const saved = await readCheckpoint(ck);
    assert.deepEqual(saved.model, { name: `char-${cell}`, hyper: { hidden: 16 } });

    const gen = await cli(['generate', '--checkpoint', ck, '--prefix', 'call me', '--length', '20', '--backend', 'cpu']);
    assert.equal(gen.code, 0, gen.out);
    assert.match(gen.out, /call me/);

    const out = path.join(tmpDir(), 'export');
    const exp = await cli(['export', '--checkpoint', ck, '--out', out]);
    assert.equal(exp.code, 0, exp.out);
    const json = JSON.parse(fs.readFileSync(path.join(out, 'model.json'), 'utf8'));
    assert.equal(json.userDefinedMetadata.dptrain.model, `char-${cell}`);

    const refused = await cli(['coordinator', 'start', '--spawn', '1', '--cell', other, '--epochs', '3', '--resume', ...common]);
    assert.equal(refused.code, 2, refused.out);
    assert.match(refused.out, /ERR_CHECKPOINT_MISMATCH/);
    assert.match(refused.out, new RegExp(`model is "char-${cell}" in the checkpoint but "char-${other}" now`));
  });
}
