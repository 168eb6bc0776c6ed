/**
 * The relay's own hot path: its reply built in place decodes to what encode()
 * gives, in every wire dtype, and steady rounds reuse its buffer; a reply's
 * gradient is added straight from the received frame, all or nothing; and a
 * real relay refuses a NaN gradient from a peer under it, whether that reply is
 * summed or not, while its honest worker trains on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReplyFrames } from '../src/shared/wire/reply-frame.js';
import { decodeWorkerMessage, encode } from '../src/shared/wire/protocol.js';
import { decodeTensor, encodeTensor, WIRE_DTYPES } from '../src/shared/wire/tensor.js';
import { GradAccumulator } from '../src/shared/wire/accumulate.js';
import { Round } from '../src/coordinator/round.js';
import { CloseCodes, ErrorCodes } from '../src/shared/errors.js';
import { killAll, spawnWorker, startCoordinator, tinyCoordinatorConfig, waitFor, type WorkerProc } from './support/cluster.js';
import { spawnRelay, type RelayProc } from './support/relay.js';
import { gradsFrame, RawClient } from './support/raw-client.js';

const P = 1001;
const W = 6;
const limits = { paramCount: P, maxTokenCount: 1e6, stateCount: 8 * W };

function sumOf(seed: number): Float64Array {
  return Float64Array.from({ length: P }, (_, i) => Math.sin(i * 0.37 + seed) * (i % 7 === 0 ? 1e3 : 1e-2) + 1e-9 * i);
}

test('the reply built in place decodes as encode() would, in every wire dtype, and reuses its buffer once written out', () => {
  for (const dtype of WIRE_DTYPES) {
    const frames = new ReplyFrames(dtype, P, 8 * W);
    for (const [round, streams] of [[7, 3], [8, 8], [70000, 1]]) {
      const sum = sumOf(round);
      const state = Float32Array.from({ length: streams * W }, (_, i) => i / 3 - round);
      const built = frames.build({ round, tokenCount: streams * 35, lossSum: 1234.5678 + round, computeMs: 12.25, sum, state });
      const want = encode({ type: 'grads', round, tokenCount: streams * 35, lossSum: 1234.5678 + round, computeMs: 12.25, grads: encodeTensor(Float32Array.from(sum), dtype), state: encodeTensor(state, 'float32') });
      const a = decodeWorkerMessage(built.bytes, limits);
      const b = decodeWorkerMessage(want, limits);
      assert.ok(a.ok && b.ok, 'both frames pass the parent validator');
      assert.equal(a.msg.type, 'grads');
      if (a.msg.type !== 'grads' || b.msg.type !== 'grads') return;
      assert.deepEqual([a.msg.round, a.msg.tokenCount, a.msg.lossSum, a.msg.computeMs], [b.msg.round, b.msg.tokenCount, b.msg.lossSum, b.msg.computeMs]);
      assert.equal(a.msg.grads.dtype, dtype);
      assert.deepEqual(Buffer.from(a.msg.grads.data), Buffer.from(b.msg.grads.data), `${dtype}: the gradient's bytes`);
      assert.deepEqual(decodeTensor(a.msg.state!), state);
      built.release();
    }
    assert.equal(frames.allocated, 1, `${dtype}: one buffer for rounds whose frames were written out`);
    // A frame the socket still holds is not overwritten: the next round gets another buffer.
    const held = frames.build({ round: 1, tokenCount: 35, lossSum: 1, computeMs: 1, sum: sumOf(1), state: new Float32Array(W) });
    const copy = Buffer.from(held.bytes);
    const next = frames.build({ round: 2, tokenCount: 70, lossSum: 2, computeMs: 2, sum: sumOf(2), state: new Float32Array(2 * W) });
    assert.deepEqual(Buffer.from(held.bytes), copy);
    assert.equal(frames.allocated, 2);
    held.release();
    next.release();
  }
});

test("a worker's reply built in place: the step writes into the claimed frame, which decodes as encode()'s; a frame given back is reused; a larger state gets a larger frame", () => {
  const frames = new ReplyFrames('float32', P, 0);
  for (const [round, streams] of [[3, 2], [4, 2], [5, 5]]) {
    const slot = frames.claim(streams * W)!;
    const grad = Float32Array.from(sumOf(round));
    slot.grad.set(grad); // what the step does through gradOut
    const state = Float32Array.from({ length: streams * W }, (_, i) => i - round);
    const built = slot.seal({ round, tokenCount: streams * 35, lossSum: 9.5, computeMs: 70.25, grad: slot.grad, state });
    const want = encode({ type: 'grads', round, tokenCount: streams * 35, lossSum: 9.5, computeMs: 70.25, grads: encodeTensor(grad, 'float32'), state: encodeTensor(state, 'float32') });
    const x = decodeWorkerMessage(built.bytes, { ...limits, stateCount: 5 * W });
    const y = decodeWorkerMessage(want, { ...limits, stateCount: 5 * W });
    assert.ok(x.ok && y.ok && x.msg.type === 'grads' && y.msg.type === 'grads');
    if (!x.ok || !y.ok || x.msg.type !== 'grads' || y.msg.type !== 'grads') return;
    assert.deepEqual([x.msg.round, x.msg.tokenCount, x.msg.lossSum, x.msg.computeMs], [y.msg.round, y.msg.tokenCount, y.msg.lossSum, y.msg.computeMs]);
    assert.deepEqual(Buffer.from(x.msg.grads.data), Buffer.from(y.msg.grads.data), "the gradient's bytes");
    assert.deepEqual(decodeTensor(x.msg.state!), state);
    built.release();
  }
  assert.equal(frames.allocated, 2, 'reused while the state fits; one larger frame for 5 streams');
  // A step that returned its own array: copied in.
  const slot = frames.claim(W)!;
  const own = Float32Array.from(sumOf(9));
  const built = slot.seal({ round: 9, tokenCount: 35, lossSum: 1, computeMs: 1, grad: own, state: new Float32Array(W) });
  const v = decodeWorkerMessage(built.bytes, { ...limits, stateCount: 5 * W });
  assert.ok(v.ok && v.msg.type === 'grads');
  if (v.ok && v.msg.type === 'grads') assert.deepEqual(decodeTensor(v.msg.grads), own);
  // Held by the socket: the next claim takes another buffer; a released claim is reused.
  const next = frames.claim(W)!;
  assert.notEqual(next.grad.buffer, slot.grad.buffer);
  next.release();
  assert.equal(frames.claim(W)!.grad.buffer, next.grad.buffer);
  assert.equal(new ReplyFrames('float16', P, 0).claim(W), null, 'float16 is encoded as before');
});

test("a relay's round adds replies straight from their frames: the sum of the decoded gradients; a NaN or a short tensor leaves it as it was", () => {
  const acc = new GradAccumulator(P);
  const expected = new Map(['a', 'b', 'c'].map((id) => [id, { lo: 0, hi: 1, tokenCount: 35, stateLength: W }]));
  const round = new Round(1, expected, P, 60_000, undefined, acc);
  const grads = [sumOf(1), sumOf(2)].map((s) => Float32Array.from(s));
  const frame = (g: Float32Array) => {
    const v = decodeWorkerMessage(encode({ type: 'grads', round: 1, tokenCount: 35, lossSum: 1, computeMs: 1, grads: encodeTensor(g, 'float16'), state: encodeTensor(new Float32Array(W), 'float32') }), { ...limits, gradsFinitenessChecked: true });
    assert.ok(v.ok && v.msg.type === 'grads');
    return v.msg;
  };
  const reply = (id: string, g: Float32Array) => {
    const m = frame(g);
    return round.accept({ workerId: id, round: 1, tokenCount: 35, lossSum: 1, computeMs: 1, grad: m.grads, state: decodeTensor(m.state!) });
  };
  assert.equal(reply('a', grads[0]), null);
  const bad = grads[1].slice();
  bad[500] = NaN;
  assert.equal(reply('b', bad), ErrorCodes.ERR_NON_FINITE);
  assert.equal(reply('b', grads[1]), null);
  const short = frame(grads[0]);
  assert.equal(round.accept({ workerId: 'c', round: 1, tokenCount: 35, lossSum: 1, computeMs: 1, grad: { ...short.grads, length: P - 1, data: short.grads.data.subarray(2) } }), ErrorCodes.ERR_BAD_TENSOR);
  round.drop('c');
  return round.done.then((o) => {
    const want = grads.map((g) => decodeTensor(encodeTensor(g, 'float16')));
    for (let i = 0; i < P; i++) assert.equal(o.gradSum[i], want[0][i] + want[1][i]);
    assert.equal(o.tokens, 70);
  });
});

test('a relay refuses a NaN gradient from a peer under it, in its round and out of it, and its honest worker trains on', async () => {
  const c = await startCoordinator(tinyCoordinatorConfig({ epochs: 100000, maxTokens: 1000, roundTimeout: 5 }));
  const root = `ws://127.0.0.1:${c.port}`;
  const procs: WorkerProc[] = [];
  let relay: RelayProc | null = null;
  let running: ReturnType<typeof c.run> | null = null;
  const raws: RawClient[] = [];
  try {
    relay = spawnRelay(root, ['--name', 'relay']);
    const url = `ws://127.0.0.1:${await relay.port()}`;
    procs.push(spawnWorker(url, ['--name', 'honest']));
    running = c.run();
    const relayRounds = () => c.membership.list().find((m) => m.info.name === 'relay')?.rounds ?? 0;
    await waitFor(() => relayRounds() >= 2, 60_000, 'the relay training with its worker');

    // Out of any round: a reply for a round that does not exist is refused for its NaN, not counted as late.
    const early = new RawClient(url);
    raws.push(early);
    const w = await early.join();
    const P = (w.model as { paramCount: number }).paramCount;
    early.send(gradsFrame({ round: 1_000_000, tokenCount: 1, length: P, fill: NaN }));
    assert.equal((await early.waitClose(10_000)).code, CloseCodes.BAD_MESSAGE);
    assert.deepEqual(early.errorCodes(), [ErrorCodes.ERR_NON_FINITE]);

    // In its round: a reply that fits the step it was given except for a NaN.
    const inRound = new RawClient(url);
    raws.push(inRound);
    const welcome = await inRound.join();
    const numSteps = (welcome.model as { numSteps: number }).numSteps;
    await inRound.until(() => inRound.messages.some((m) => m.type === 'step'), 30_000, 'a step from the relay');
    const step = inRound.messages.find((m) => m.type === 'step') as { round: number; lo: number; hi: number; local?: unknown };
    assert.equal(step.local, undefined);
    inRound.send(gradsFrame({ round: step.round, tokenCount: (step.hi - step.lo) * numSteps, length: P, fill: NaN }));
    assert.equal((await inRound.waitClose(10_000)).code, CloseCodes.BAD_MESSAGE);
    assert.deepEqual(inRound.errorCodes(), [ErrorCodes.ERR_NON_FINITE]);

    const after = relayRounds();
    await waitFor(() => relayRounds() >= after + 3, 60_000, 'the relay to go on with its honest worker');
    assert.ok(c.server.params().every(Number.isFinite));
    for (const p of procs) assert.equal(p.child.exitCode, null, p.output());
  } finally {
    c.stop('test over');
    await (running ?? c.run());
    for (const r of raws) r.ws.terminate();
    killAll(procs);
    relay?.kill('SIGKILL');
    await c.dispose();
  }
});
