/**
 * Row-sparse blocks on the wire: a worker sends the one-hot input weights'
 * gradient as (row ids, rows) of the tokens its batch held; the validator
 * checks the rows and the coordinator adds them into their rows, so the sum
 * is exactly the dense one, and N workers still equal one process.
 */
import { describe, it, test } from 'node:test';
import assert from 'node:assert/strict';
import { createModel } from '../src/shared/model/registry.js';
import { rowSparseBlocks } from '../src/shared/model/descriptor.js';
import { Rng } from '../src/shared/data/rng.js';
import { encodeGradient } from '../src/worker/shard-compute.js';
import { decodeWorkerMessage, encode, type GradsMsg } from '../src/shared/wire/protocol.js';
import { GradAccumulator } from '../src/shared/wire/accumulate.js';
import { encodeTensor, WIRE_DTYPES } from '../src/shared/wire/tensor.js';
import { Round, type Reply } from '../src/coordinator/round.js';
import { loadCorpus } from '../src/shared/data/corpus-source.js';
import { trainLocal } from '../src/shared/train/local-trainer.js';
import { killAll, relativeError, spawnWorker, startCoordinator, tinyCoordinatorConfig, type WorkerProc } from './support/cluster.js';

const V = 40;
const model = createModel('char-lstm', V, { hidden: 8 });
const sparse = rowSparseBlocks(model.blocks);
/** A gradient shaped like a real one: rows of W_x* nonzero only for the inputs. */
const inputs = Int32Array.from([3, 7, 7, 12, 3, 39, 0]);
const grad = new Float32Array(model.paramCount);
{
  const rng = new Rng(5);
  for (let i = 0; i < grad.length; i++) grad[i] = rng.normal();
  const present = new Set(inputs);
  for (const b of sparse) for (let r = 0; r < b.rows; r++) if (!present.has(r)) grad.fill(0, b.offset + r * b.cols, b.offset + (r + 1) * b.cols);
}
const limits = { paramCount: model.paramCount, maxTokenCount: 100, rowSparse: sparse };

function frame(dtype: (typeof WIRE_DTYPES)[number], useRows = true): Buffer {
  return encode({ type: 'grads', round: 1, tokenCount: 7, lossSum: 1, computeMs: 1, ...encodeGradient(model, grad, inputs, dtype, useRows) });
}

describe('sparse rows: encoding, validation and the sum', () => {
  it('the models mark the blocks indexed by input token id row-sparse, nothing else', () => {
    assert.deepEqual(
      model.blocks.filter((b) => b.rowSparse).map((b) => b.name),
      ['W_xi', 'W_xf', 'W_xo', 'W_xc'],
    );
    const gru = createModel('char-gru', V, { hidden: 8 });
    assert.deepEqual(gru.blocks.filter((b) => b.rowSparse).map((b) => b.name), ['W_xz', 'W_xr', 'W_xh']);
    // A stack: the embedding when there is one, else the first layer's one-hot input weights; never a layer above.
    const emb = createModel('stack-lstm', V, { hidden: 8, layers: 2, embedding: 4, dropout: 0, seed: 0 });
    assert.deepEqual(emb.blocks.filter((b) => b.rowSparse).map((b) => b.name), ['W_emb']);
    const deep = createModel('stack-gru', V, { hidden: 8, layers: 2, embedding: 0, dropout: 0, seed: 0 });
    assert.deepEqual(deep.blocks.filter((b) => b.rowSparse).map((b) => b.name), ['W_xz_l0', 'W_xr_l0', 'W_xh_l0']);
  });
  for (const dtype of WIRE_DTYPES) {
    it(`${dtype}: the rows of the tokens that occurred travel, in fewer bytes, and sum to exactly the dense gradient`, () => {
      const dense = frame(dtype, false);
      const rows = frame(dtype);
      assert.ok(rows.byteLength < dense.byteLength, `${rows.byteLength} vs ${dense.byteLength} bytes`);
      const v = decodeWorkerMessage(rows, limits);
      assert.ok(v.ok, JSON.stringify(v));
      const msg = v.msg as GradsMsg;
      assert.equal(msg.rows?.length, 4);
      assert.deepEqual([...new Int32Array(msg.rows![0].ids.slice().buffer)], [0, 3, 7, 12, 39]);
      const acc = new GradAccumulator(model.paramCount, sparse);
      const a = acc.newSum();
      assert.equal(acc.addInto(a, msg.grads, msg.rows), null);
      const d = decodeWorkerMessage(dense, limits);
      assert.ok(d.ok);
      const b = new Float64Array(model.paramCount);
      assert.equal(acc.addInto(b, (d.msg as GradsMsg).grads), null);
      assert.deepEqual(a, b);
    });
  }
  it('every row present: the block goes dense', () => {
    const all = Int32Array.from({ length: V }, (_, i) => i);
    const e = encodeGradient(model, grad, all, 'float32', true);
    assert.equal(e.rows, undefined);
    assert.equal(e.grads.length, model.paramCount);
  });
  it('the validator refuses rows a model does not have, bad row ids and mismatched sizes, with a clear message', () => {
    const good = decodeWorkerMessage(frame('float32'), limits);
    assert.ok(good.ok);
    const msg = good.msg as GradsMsg;
    const withRows = (rows: GradsMsg['rows']) => decodeWorkerMessage(encode({ ...msg, rows }), limits);
    const ids = (xs: number[]) => new Uint8Array(Int32Array.from(xs).buffer);
    const r0 = msg.rows![0];
    const cases: [string, ReturnType<typeof decodeWorkerMessage>, RegExp][] = [
      ['no row-sparse blocks in the limits', decodeWorkerMessage(frame('float32'), { ...limits, rowSparse: undefined }), /row-sparse/],
      ['unsorted ids', withRows([{ ...r0, ids: ids([3, 0, 7, 12, 39]) }, ...msg.rows!.slice(1)]), /strictly increasing/],
      ['an id past the vocabulary', withRows([{ ...r0, ids: ids([0, 3, 7, 12, 40]) }, ...msg.rows!.slice(1)]), /strictly increasing and in \[0, 40\)/],
      ['a repeated block', withRows([r0, r0, ...msg.rows!.slice(2)]), /ascending/],
      ['values of another dtype', withRows([{ ...r0, values: encodeTensor(new Float32Array(5 * 8), 'float16') }, ...msg.rows!.slice(1)]), /float16/],
      ['too few values', withRows([{ ...r0, values: encodeTensor(new Float32Array(4 * 8), 'float32') }, ...msg.rows!.slice(1)]), /elements, expected 40/],
      ['a dense part that still holds the block', withRows(msg.rows!.slice(1)), /grads has/],
    ];
    for (const [what, v, re] of cases) {
      assert.equal(v.ok, false, what);
      if (!v.ok) {
        assert.equal(v.code, 'ERR_BAD_TENSOR', `${what}: ${v.message}`);
        assert.match(v.message, re, what);
      }
    }
  });
  it('a NaN in the rows is refused by the summing pass and leaves the sum as it was', () => {
    const g = grad.slice();
    g[sparse[2].offset + 7 * 8 + 3] = NaN;
    const v = decodeWorkerMessage(encode({ type: 'grads', round: 1, tokenCount: 7, lossSum: 1, computeMs: 1, ...encodeGradient(model, g, inputs, 'float32', true) }), { ...limits, gradsFinitenessChecked: true });
    assert.ok(v.ok);
    const acc = new GradAccumulator(model.paramCount, sparse);
    const sum = acc.newSum();
    assert.equal(acc.addInto(sum, (v.msg as GradsMsg).grads, (v.msg as GradsMsg).rows), 'ERR_NON_FINITE');
    assert.ok(sum.every((x) => x === 0));
    // Without the summing pass behind it, the validator checks the rows itself.
    const w = decodeWorkerMessage(encode({ type: 'grads', round: 1, tokenCount: 7, lossSum: 1, computeMs: 1, ...encodeGradient(model, g, inputs, 'float32', true) }), limits);
    assert.equal(w.ok, false);
    if (!w.ok) assert.equal(w.code, 'ERR_NON_FINITE');
  });
});

test('coordinator + 2 worker processes sending sparse rows equal the in-process loop (≤ 1e-5)', async () => {
  const cfg = tinyCoordinatorConfig({ minWorkers: 2, batchSize: 6 });
  let withRows = 0;
  let replies = 0;
  const original = Round.prototype.accept;
  Round.prototype.accept = function (this: Round, r: Reply) {
    replies++;
    if (r.rows && r.rows.length > 0) withRows++;
    return original.call(this, r);
  };
  const c = await startCoordinator(cfg);
  const procs: WorkerProc[] = [];
  try {
    for (let k = 0; k < 2; k++) procs.push(spawnWorker(`ws://127.0.0.1:${c.port}`));
    const summary = await c.run();
    assert.equal(summary.reason, 'done');
    const { corpus } = await loadCorpus(cfg.corpus, { dataDir: '.', maxTokens: cfg.maxTokens, valFraction: cfg.valFraction, preprocess: cfg.preprocess });
    const local = trainLocal(cfg, corpus);
    assert.equal(c.server.version, local.server.version);
    const rel = relativeError(c.server.params(), local.server.params());
    assert.ok(rel <= 1e-5, `parameters differ: relative error ${rel.toExponential(2)}`);
    // 3 streams x 5 steps per worker: 15 inputs, fewer than the vocabulary, so every reply sent rows.
    assert.ok(replies >= 80 && withRows === replies, `${withRows} of ${replies} replies sent rows`);
    local.server.dispose();
  } finally {
    Round.prototype.accept = original;
    killAll(procs);
    c.dispose();
  }
});
