/**
 * Deep stacks end to end: `coordinator start --spawn 2 --cell gru|rnn
 * --layers 2` exits 0 with a checkpoint that names the stack, `generate` and
 * `export` accept it, and a run of another model refuses to resume it.
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
const common = (ck: string) => ['--corpus', corpus, '--max-tokens', '3000', '--hidden', '8', '--batch-size', '4', '--num-steps', '5', '--port', '0', '--host', '127.0.0.1', '--metrics-port', '-1', '--backend', 'cpu', '--worker-backend', 'cpu', '--sample-every', '0', '--log-every', '1', '--checkpoint-dir', ck];

const RUNS = [
  { cell: 'gru', extra: [], hyper: { hidden: 8, layers: 2, embedding: 0, dropout: 0, seed: 0 }, summary: '2-layer GRU hidden 8, one-hot inputs' },
  { cell: 'rnn', extra: ['--embedding', '6', '--dropout', '0.2'], hyper: { hidden: 8, layers: 2, embedding: 6, dropout: 0.2, seed: 0 }, summary: '2-layer RNN hidden 8, embedding 6, dropout 0.2' },
];

for (const r of RUNS) {
  test(`coordinator start --spawn 2 --cell ${r.cell} ${['--layers', '2', ...r.extra].join(' ')} exits 0; generate and export accept its checkpoint; another stack refuses to resume it`, async () => {
    const ck = tmpDir();
    const run = await cli(['coordinator', 'start', '--spawn', '2', '--cell', r.cell, '--layers', '2', ...r.extra, '--epochs', '2', ...common(ck)]);
    assert.equal(run.code, 0, run.out);
    assert.ok(run.out.includes(`model: ${r.summary}`), run.out);
    const saved = await readCheckpoint(ck);
    assert.deepEqual(saved.model, { name: `stack-${r.cell}`, hyper: r.hyper });
    assert.equal(saved.streamState?.length, 4 * 2 * 8, 'both layers of every stream carried');

    const gen = await cli(['generate', '--checkpoint', ck, '--prefix', 'call me', '--length', '20', '--backend', 'cpu']);
    assert.equal(gen.code, 0, gen.out);
    assert.match(gen.out, /call me/);

    const out = path.join(tmpDir(), 'export');
    const exp = await cli(['export', '--checkpoint', ck, '--out', out]);
    assert.equal(exp.code, 0, exp.out);
    const json = JSON.parse(fs.readFileSync(path.join(out, 'model.json'), 'utf8'));
    assert.equal(json.userDefinedMetadata.dptrain.model, `stack-${r.cell}`);

    const refused = await cli(['coordinator', 'start', '--spawn', '1', '--cell', r.cell, '--layers', '3', ...r.extra, '--epochs', '3', '--resume', ...common(ck)]);
    assert.equal(refused.code, 2, refused.out);
    assert.match(refused.out, /ERR_CHECKPOINT_MISMATCH/);
    assert.match(refused.out, /layers is 2 in the checkpoint but 3 now/);
    const single = await cli(['coordinator', 'start', '--spawn', '1', '--cell', r.cell, '--epochs', '3', '--resume', ...common(ck)]);
    assert.equal(single.code, 2, single.out);
    assert.match(single.out, new RegExp(`model is "stack-${r.cell}" in the checkpoint but "char-${r.cell}" now`));
  });
}

test('--dropout needs --layers 2 or more, and is below 1 (ERR_BAD_CONFIG, exit 2)', async () => {
  const ck = tmpDir();
  const one = await cli(['coordinator', 'start', '--spawn', '1', '--dropout', '0.5', '--epochs', '1', ...common(ck)]);
  assert.equal(one.code, 2, one.out);
  assert.match(one.out, /ERR_BAD_CONFIG/);
  assert.match(one.out, /needs --layers 2 or more/);
  const all = await cli(['coordinator', 'start', '--spawn', '1', '--layers', '2', '--dropout', '1', '--epochs', '1', ...common(ck)]);
  assert.equal(all.code, 2, all.out);
  assert.match(all.out, /--dropout must be below 1/);
});

test('a stack too large for one frame is refused before anything starts (ERR_MODEL_TOO_LARGE), naming its size flags', async () => {
  const ck = tmpDir();
  const big = common(ck).map((a, i, all) => (all[i - 1] === '--hidden' ? '4096' : a));
  const run = await cli(['coordinator', 'start', '--spawn', '1', '--layers', '8', '--epochs', '1', ...big]);
  assert.equal(run.code, 2, run.out);
  assert.match(run.out, /--hidden 4096 --layers 8 --cell lstm gives [\d,]+ parameters: a \d+ MiB message, over the 1024 MiB a worker accepts in one WebSocket frame; use a smaller --hidden .*\(ERR_MODEL_TOO_LARGE\)/);
});
