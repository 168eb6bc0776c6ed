import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { batchesPerEpoch, gatherRows, planEpoch, splitStreams } from '../src/shared/data/batches.js';
import { isDptrainError } from '../src/shared/errors.js';
import { Rng } from '../src/shared/data/rng.js';

const range = (n: number) => Int32Array.from({ length: n }, (_, i) => i);

/** Direct transcription of d2l seq_data_iter_sequential, yielding (X, Y) as nested arrays. */
function d2lSequential(corpus: number[], batchSize: number, numSteps: number, rng: Rng): Array<[number[][], number[][]]> {
  const offset = rng.int(0, numSteps);
  const numTokens = Math.floor((corpus.length - offset - 1) / batchSize) * batchSize;
  const flatX = corpus.slice(offset, offset + numTokens);
  const flatY = corpus.slice(offset + 1, offset + 1 + numTokens);
  const L = numTokens / batchSize;
  const Xs = Array.from({ length: batchSize }, (_, r) => flatX.slice(r * L, (r + 1) * L));
  const Ys = Array.from({ length: batchSize }, (_, r) => flatY.slice(r * L, (r + 1) * L));
  const numBatches = Math.floor(L / numSteps);
  const out: Array<[number[][], number[][]]> = [];
  for (let i = 0; i < numSteps * numBatches; i += numSteps) {
    out.push([Xs.map((row) => row.slice(i, i + numSteps)), Ys.map((row) => row.slice(i, i + numSteps))]);
  }
  return out;
}

function rows(flat: Int32Array, numSteps: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < flat.length; i += numSteps) out.push([...flat.subarray(i, i + numSteps)]);
  return out;
}

describe('sequential partition', () => {
  it('matches d2l seq_data_iter_sequential batch for batch', () => {
    const tokens = range(100);
    for (const seed of [1, 2, 3, 4, 5, 6, 7]) {
      const expected = d2lSequential([...tokens], 3, 5, new Rng(seed));
      const plan = planEpoch(tokens.length, 3, 5, 'sequential', new Rng(seed));
      assert.equal(plan.batches.length, expected.length);
      plan.batches.forEach((b, i) => {
        const { x, y } = gatherRows(tokens, b.starts, 5);
        assert.deepEqual(rows(x, 5), expected[i][0]);
        assert.deepEqual(rows(y, 5), expected[i][1]);
        assert.equal(b.resetState, i === 0);
      });
    }
  });

  it('continues each row exactly where the previous batch left it', () => {
    const plan = planEpoch(1000, 4, 7, 'sequential', new Rng(42));
    assert.ok(plan.batches.length > 2);
    for (let i = 0; i + 1 < plan.batches.length; i++) {
      for (let r = 0; r < 4; r++) assert.equal(plan.batches[i + 1].starts[r], plan.batches[i].starts[r] + 7);
    }
  });

  it('draws only the offset, so the same rng state gives the same plan', () => {
    const rng = new Rng(9);
    const state = rng.getState();
    const a = planEpoch(500, 4, 6, 'sequential', rng);
    const after = rng.getState();
    rng.setState(state);
    assert.equal(rng.int(0, 6), a.offset);
    assert.deepEqual(rng.getState(), after);
  });
});

describe('random partition', () => {
  it('uses distinct starts that are offset plus multiples of numSteps, resetting every batch', () => {
    const n = 1000;
    const numSteps = 7;
    const plan = planEpoch(n, 4, numSteps, 'random', new Rng(3));
    assert.ok(plan.offset >= 0 && plan.offset < numSteps);
    const numSubseqs = Math.floor((n - plan.offset - 1) / numSteps);
    assert.equal(plan.batches.length, Math.floor(numSubseqs / 4));
    const seen = new Set<number>();
    for (const b of plan.batches) {
      assert.equal(b.resetState, true);
      for (const s of b.starts) {
        assert.equal((s - plan.offset) % numSteps, 0);
        assert.ok(s + numSteps < n);
        assert.ok(!seen.has(s));
        seen.add(s);
      }
    }
  });

  it('is reproducible from the rng state and differs between seeds', () => {
    const a = planEpoch(1000, 4, 7, 'random', new Rng(11));
    const b = planEpoch(1000, 4, 7, 'random', new Rng(11));
    const c = planEpoch(1000, 4, 7, 'random', new Rng(12));
    assert.deepEqual(a, b);
    assert.notDeepEqual(a.batches.map((x) => [...x.starts]), c.batches.map((x) => [...x.starts]));
  });
});

describe('batchesPerEpoch', () => {
  it('gives the exact count for a known offset and the minimum otherwise', () => {
    for (const partition of ['sequential', 'random'] as const) {
      for (let seed = 0; seed < 20; seed++) {
        const plan = planEpoch(1003, 5, 8, partition, new Rng(seed));
        assert.equal(batchesPerEpoch(1003, 5, 8, partition, plan.offset), plan.batches.length);
        assert.ok(plan.batches.length >= batchesPerEpoch(1003, 5, 8, partition));
      }
    }
  });
});

describe('sharding streams', () => {
  it('splits as evenly as possible, earlier parts first', () => {
    assert.deepEqual(splitStreams(32, 3), [[0, 11], [11, 22], [22, 32]]);
    assert.deepEqual(splitStreams(5, 5), [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]);
    assert.deepEqual(splitStreams(7, 1), [[0, 7]]);
    assert.deepEqual(splitStreams(8, 4), [[0, 2], [2, 4], [4, 6], [6, 8]]);
    for (const [b, k] of [[4, 0], [4, 5], [4, 1.5], [0, 1]]) {
      assert.throws(() => splitStreams(b, k), (e) => isDptrainError(e, 'ERR_BAD_CONFIG'));
    }
  });

  it('gathering each shard and concatenating equals gathering the whole batch', () => {
    const tokens = Int32Array.from({ length: 2000 }, (_, i) => (i * 7919) % 97);
    for (const partition of ['sequential', 'random'] as const) {
      const plan = planEpoch(tokens.length, 10, 9, partition, new Rng(5));
      for (const batch of plan.batches.slice(0, 5)) {
        const whole = gatherRows(tokens, batch.starts, 9);
        for (let k = 1; k <= 4; k++) {
          const xs: number[] = [];
          const ys: number[] = [];
          for (const [lo, hi] of splitStreams(10, k)) {
            const part = gatherRows(tokens, batch.starts.subarray(lo, hi), 9);
            assert.equal(part.x.length, (hi - lo) * 9);
            xs.push(...part.x);
            ys.push(...part.y);
          }
          assert.deepEqual(xs, [...whole.x]);
          assert.deepEqual(ys, [...whole.y]);
        }
      }
    }
  });

  it('refuses row starts that run past the tokens', () => {
    assert.throws(() => gatherRows(range(10), [5], 5), RangeError);
    assert.deepEqual([...gatherRows(range(10), [4], 5).y], [5, 6, 7, 8, 9]);
  });
});

describe('too small a corpus', () => {
  it('says how many tokens are needed and how many there are', () => {
    // Sequential needs batch*steps + 1 + the largest offset (steps): 3*5 + 1 + 5 = 21.
    for (let seed = 0; seed < 20; seed++) assert.ok(planEpoch(21, 3, 5, 'sequential', new Rng(seed)).batches.length >= 1);
    assert.throws(
      () => planEpoch(20, 3, 5, 'sequential', new Rng(1)),
      (e) => isDptrainError(e, 'ERR_CORPUS_TOO_SMALL') && /20 tokens/.test(e.message) && /at least 21/.test(e.message),
    );
    // Random needs batch*steps + 1 + (steps - 1) = 20.
    for (let seed = 0; seed < 20; seed++) assert.ok(planEpoch(20, 3, 5, 'random', new Rng(seed)).batches.length >= 1);
    assert.throws(() => planEpoch(19, 3, 5, 'random', new Rng(1)), (e) => isDptrainError(e, 'ERR_CORPUS_TOO_SMALL'));
    assert.throws(() => batchesPerEpoch(5, 3, 5, 'random'), (e) => isDptrainError(e, 'ERR_CORPUS_TOO_SMALL'));
  });
});
