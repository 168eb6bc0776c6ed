/**
 * The pure parts of relays, in process: streams in proportion to the workers a
 * member carries, a relay's partial reply, the address rotation of
 * `--coordinator URL1,URL2`, and the protocol's relay fields.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Membership, type Peer } from '../src/coordinator/membership.js';
import { Round } from '../src/coordinator/round.js';
import { StreamTable } from '../src/coordinator/streams.js';
import { AddressRotation, parseAddresses } from '../src/shared/addresses.js';
import { decodeCoordinatorMessage, decodeWorkerMessage, encode, PROTOCOL_VERSION, tokensToWire } from '../src/shared/wire/protocol.js';
import { isDptrainError } from '../src/shared/errors.js';

const peer: Peer = { send() {}, close() {}, bufferedAmount: () => 0 };
const info = { backend: 'cpu', device: 'cpu', host: 'h', pid: 1 };
const ranges = (m: Membership, streams: number, offset = 0) => m.assign(streams, offset).map((x) => [x.member.id, x.lo, x.hi]);

test('membership: a relay gets the streams of the workers it carries, as if they had joined one by one', () => {
  const plain = new Membership(8);
  for (const id of ['a', 'b', 'c', 'd', 'e']) plain.add(id, info, peer, 0);
  const m = new Membership(8);
  m.add('a', info, peer, 0);
  m.add('r', { ...info, backend: 'relay' }, peer, 0, 3);
  m.add('e', info, peer, 0);
  assert.equal(m.workers, 5);
  assert.equal(m.get('r')!.relay, true);
  assert.equal(m.get('a')!.relay, false);
  // 11 streams over 5 workers: 3 2 2 2 2; the relay holds the middle three shares.
  assert.deepEqual(ranges(plain, 11), [['a', 0, 3], ['b', 3, 5], ['c', 5, 7], ['d', 7, 9], ['e', 9, 11]]);
  assert.deepEqual(ranges(m, 11), [['a', 0, 3], ['r', 3, 9], ['e', 9, 11]]);
  // Inside a relay: its own range, split over its workers.
  const under = new Membership(4);
  for (const id of ['x', 'y', 'z']) under.add(id, info, peer, 0);
  assert.deepEqual(ranges(under, 6, 3), [['x', 3, 5], ['y', 5, 7], ['z', 7, 9]]);
});

test('membership: a relay with no workers gets no streams; its count changes at the next assign and wakes a waiting loop', () => {
  const m = new Membership(4);
  m.add('r', info, peer, 0, 0);
  assert.deepEqual(m.assign(6), []);
  let woke = 0;
  m.onChange(() => woke++);
  m.setCapacity('r', 2);
  m.setCapacity('r', 2);
  assert.equal(woke, 1, 'an unchanged count is no change');
  m.add('a', info, peer, 0);
  assert.deepEqual(ranges(m, 6), [['r', 0, 4], ['a', 4, 6]]);
  // More workers than streams: the first ones in join order get them, as without relays.
  m.setCapacity('r', 7);
  assert.deepEqual(ranges(m, 6), [['r', 0, 6]]);
  m.setCapacity('r', 5);
  assert.deepEqual(ranges(m, 6), [['r', 0, 5], ['a', 5, 6]]);
});

test("a relay's reply may cover fewer tokens than it was given, never more; a worker's must match", async () => {
  const r = new Round(1, new Map([
    ['relay', { lo: 0, hi: 4, tokenCount: 20, partial: true }],
    ['worker', { lo: 4, hi: 6, tokenCount: 10 }],
  ]), 2, 10_000);
  const reply = (workerId: string, tokenCount: number) => ({ workerId, round: 1, tokenCount, lossSum: tokenCount, computeMs: 1, grad: Float32Array.from([1, 2]) });
  assert.equal(r.accept(reply('relay', 25)), 'ERR_BAD_MESSAGE');
  assert.equal(r.accept(reply('worker', 5)), 'ERR_BAD_MESSAGE');
  assert.equal(r.accept(reply('relay', 15)), null);
  assert.equal(r.accept(reply('worker', 10)), null);
  const o = await r.done;
  assert.equal(o.tokens, 25);
  assert.deepEqual([...o.gradSum], [2, 4]);
});

test('stream table: streams handed over from outside are sent on to whoever computes them next', () => {
  const t = new StreamTable(4, 2);
  assert.ok(t.handOver('w', 0, 4, false).state, 'first round: state sent');
  assert.equal(t.handOver('w', 0, 4, false).state, undefined, 'held: not sent again');
  t.store(0, Float32Array.from([1, 1, 2, 2, 3, 3, 4, 4]));
  t.forget(2, 4);
  const h = t.handOver('w', 0, 4, false);
  assert.deepEqual([...h.state!], [1, 1, 2, 2, 3, 3, 4, 4]);
});

test('--coordinator URL1,URL2: each failure moves to the next address, cycling; a bad entry is one sentence', () => {
  const r = new AddressRotation(' ws://relay:8766, wss://root:8765 ');
  assert.deepEqual(r.urls, ['ws://relay:8766', 'wss://root:8765']);
  assert.equal(r.current, 'ws://relay:8766');
  assert.equal(r.advance(), 'wss://root:8765');
  assert.equal(r.advance(), 'ws://relay:8766');
  assert.equal(r.describe(), 'any of ws://relay:8766, wss://root:8765');
  assert.equal(new AddressRotation('ws://a:1').describe(), 'ws://a:1');
  for (const bad of ['ws://a:1,http://b:2', ',', 'a:1']) {
    assert.throws(() => parseAddresses(bad), (e) => isDptrainError(e, 'ERR_BAD_CONFIG') && /--coordinator/.test(e.message), bad);
  }
});

test('protocol: hello.capacity, the capacity message, welcome.streams and step.deadlineMs round-trip; out-of-range values are refused', () => {
  const limits = { paramCount: 4, maxTokenCount: 100 };
  const hello = { type: 'hello' as const, version: PROTOCOL_VERSION, token: 't', info, capacity: 3 };
  const h = decodeWorkerMessage(encode(hello), limits);
  assert.ok(h.ok && h.msg.type === 'hello' && h.msg.capacity === 3);
  const plain = decodeWorkerMessage(encode({ ...hello, capacity: undefined }), limits);
  assert.ok(plain.ok && plain.msg.type === 'hello' && plain.msg.capacity === undefined, 'a worker sends none');
  const c = decodeWorkerMessage(encode({ type: 'capacity', capacity: 0, round: 7 }), limits);
  assert.deepEqual(c.ok && c.msg, { type: 'capacity', capacity: 0, round: 7 });
  const step = decodeCoordinatorMessage(encode({ type: 'step', round: 1, paramsVersion: 0, lo: 0, hi: 2, starts: Int32Array.from([0, 5]), fresh: new Uint8Array(2), deadlineMs: 4000 }));
  assert.ok(step.ok && step.msg.type === 'step' && step.msg.deadlineMs === 4000);
  const bad = decodeWorkerMessage(encode({ type: 'capacity', capacity: -1 }), limits);
  assert.ok(!bad.ok && bad.code === 'ERR_BAD_MESSAGE');
  const w = decodeCoordinatorMessage(
    encode({ type: 'welcome', version: PROTOCOL_VERSION, workerId: 'x', model: { name: 'char-lstm', hyper: { hidden: 1 }, vocabSize: 3, numSteps: 2, paramCount: 4, stateWidth: 2 }, ...tokensToWire(Int32Array.from([0, 1, 2]), 3), wireDtype: 'float32', heartbeatMs: 1000, streams: 6 }),
  );
  assert.ok(w.ok && w.msg.type === 'welcome' && w.msg.streams === 6);
});
