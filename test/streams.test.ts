/** Stream ownership and the hand-over of carried state (src/coordinator/streams.ts), in process. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StreamTable } from '../src/coordinator/streams.js';

test('a stream travels with its state to a worker that does not hold it, and not to the one that does', () => {
  const t = new StreamTable(4, 2);
  // Nobody holds anything yet: the first hand-over sends state (zeros).
  const first = t.handOver('a', 0, 2, false);
  assert.deepEqual([...first.fresh], [0, 0]);
  assert.deepEqual([...first.state!], [0, 0, 0, 0]);
  t.store(0, Float32Array.of(1, 2, 3, 4));
  // The same worker, the same streams: it holds them, nothing is sent.
  assert.equal(t.handOver('a', 0, 2, false).state, undefined);
  // Stream 1 moves to b: b gets rows 1..2 with stream 1's state, stream 2's zeros.
  const moved = t.handOver('b', 1, 3, false);
  assert.deepEqual([...moved.state!], [3, 4, 0, 0]);
  // a leaves: its stream 0 goes to b with its state.
  t.release('a');
  assert.deepEqual([...t.handOver('b', 0, 1, false).state!], [1, 2]);
});

test('a reset of the data order sends zeros for every row, and the state is whole after restore', () => {
  const t = new StreamTable(2, 3);
  t.restore(Float32Array.of(1, 2, 3, 4, 5, 6));
  const r = t.handOver('a', 0, 2, true);
  assert.deepEqual([...r.fresh], [1, 1]);
  // Every row fresh: the worker starts each from zeros, so no state travels although it holds none of them.
  assert.equal(r.state, undefined);
  assert.throws(() => t.restore(new Float32Array(5)), RangeError);
  assert.deepEqual([...t.state], [1, 2, 3, 4, 5, 6]);
});
