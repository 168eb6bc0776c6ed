/** The round table and the membership registry, in process, without sockets. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Round } from '../src/coordinator/round.js';
import { Membership, type Peer } from '../src/coordinator/membership.js';
import { GradAccumulator } from '../src/shared/wire/accumulate.js';
import { encodeTensor, type WireDtype } from '../src/shared/wire/tensor.js';

const exp = (lo: number, hi: number) => ({ lo, hi, tokenCount: (hi - lo) * 5 });
const reply = (workerId: string, round: number, g: number[], tokenCount = 10) => ({ workerId, round, tokenCount, lossSum: 1, computeMs: 3, grad: Float32Array.from(g) });

test('a round sums replies in float64 and resolves when the last one arrives', async () => {
  const r = new Round(4, new Map([['a', exp(0, 2)], ['b', exp(2, 4)]]), 3, 10_000);
  assert.equal(r.accept(reply('a', 4, [1, 2, 3])), null);
  assert.equal(r.isSettled, false);
  assert.equal(r.accept(reply('a', 4, [1, 2, 3])), 'ERR_DUPLICATE_REPLY');
  assert.equal(r.accept(reply('b', 3, [1, 1, 1])), 'ERR_STALE_ROUND');
  assert.equal(r.accept(reply('b', 5, [1, 1, 1])), 'ERR_FUTURE_ROUND');
  assert.equal(r.accept(reply('c', 4, [1, 1, 1])), 'ERR_STALE_ROUND');
  assert.equal(r.accept(reply('b', 4, [1, 1, 1], 9)), 'ERR_BAD_MESSAGE');
  assert.equal(r.accept(reply('b', 4, [0.5, 0.5, 0.5])), null);
  const o = await r.done;
  assert.deepEqual([...o.gradSum], [1.5, 2.5, 3.5]);
  assert.equal(o.tokens, 20);
  assert.deepEqual(o.replied, ['a', 'b']);
  assert.equal(o.timedOut, false);
  // Once it ended, a second reply is still a duplicate; one from a non-member is late.
  assert.equal(r.accept(reply('b', 4, [1, 1, 1])), 'ERR_DUPLICATE_REPLY');
  assert.equal(r.accept(reply('c', 4, [1, 1, 1])), 'ERR_STALE_ROUND');
  // After the next round began, the ended round still tells a duplicate from a late reply.
  assert.equal(r.reclassify('a', 4, 'ERR_STALE_ROUND'), 'ERR_DUPLICATE_REPLY');
  assert.equal(r.reclassify('c', 4, 'ERR_STALE_ROUND'), 'ERR_STALE_ROUND');
  assert.equal(r.reclassify('a', 3, 'ERR_STALE_ROUND'), 'ERR_STALE_ROUND');
  assert.equal(r.reclassify('a', 5, 'ERR_FUTURE_ROUND'), 'ERR_FUTURE_ROUND');
});

test('a round never waits past its deadline, nor for a worker that left', async () => {
  const r = new Round(1, new Map([['a', exp(0, 2)], ['b', exp(2, 4)]]), 1, 50);
  r.accept(reply('a', 1, [2]));
  const o = await r.done;
  assert.equal(o.timedOut, true);
  assert.deepEqual(o.late, ['b']);
  assert.deepEqual([...o.gradSum], [2]);

  const r2 = new Round(2, new Map([['a', exp(0, 2)], ['b', exp(2, 4)]]), 1, 60_000);
  r2.drop('a');
  r2.drop('b');
  const o2 = await r2.done;
  assert.deepEqual(o2.gone, ['a', 'b']);
  assert.equal(o2.tokens, 0);
  assert.equal(o2.timedOut, false);

  const empty = await new Round(3, new Map(), 1, 60_000).done;
  assert.equal(empty.replied.length, 0);
});

test('membership: bounded reused slots, epoch bumps, contiguous stream assignment in join order', () => {
  const peer: Peer = { send() {}, close() {}, bufferedAmount: () => 0 };
  const info = { backend: 'cpu', device: 'cpu', host: 'h', pid: 1 };
  const m = new Membership(3);
  let changes = 0;
  m.onChange(() => changes++);
  m.add('a', info, peer, 0);
  m.add('b', info, peer, 0);
  m.add('c', info, peer, 0);
  assert.equal(m.full, true);
  assert.throws(() => m.add('d', info, peer, 0));
  assert.deepEqual(m.assign(7).map((x) => [x.member.id, x.lo, x.hi]), [['a', 0, 3], ['b', 3, 5], ['c', 5, 7]]);
  m.remove('b');
  assert.deepEqual(m.assign(7).map((x) => [x.member.id, x.lo, x.hi]), [['a', 0, 4], ['c', 4, 7]]);
  assert.equal(m.add('d', info, peer, 0).slot, 'w1');
  assert.equal(m.epoch, 5);
  assert.equal(changes, 5);
  assert.equal(m.assign(2).length, 2, 'never more workers than streams');
});

test('a gradient as received is summed in one pass into the accumulator\'s sum; a NaN or a wrong size in it leaves the sum and the round as they were', async () => {
  const acc = new GradAccumulator(3);
  const r = new Round(2, new Map([['a', exp(0, 2)], ['b', exp(2, 4)]]), 3, 10_000, undefined, acc);
  const wire = (g: number[], dtype: WireDtype = 'float32') => encodeTensor(Float32Array.from(g), dtype);
  assert.equal(r.accept({ ...reply('a', 2, []), grad: wire([1, 2, 3], 'bfloat16') }), null);
  assert.equal(r.accept({ ...reply('b', 2, []), grad: wire([5, 5, NaN]) }), 'ERR_NON_FINITE');
  assert.equal(r.accept({ ...reply('b', 2, []), grad: wire([5, 5]) }), 'ERR_BAD_TENSOR');
  assert.equal(r.isSettled, false);
  assert.equal(r.accept({ ...reply('b', 2, []), grad: wire([0.5, 0.5, 0.5], 'float16') }), null);
  const o = await r.done;
  assert.deepEqual([...o.gradSum], [1.5, 2.5, 3.5]);
  assert.equal(o.tokens, 20);
});
