/**
 * The coordinator's round loop, membership and pausing in one process: a fake
 * transport (no sockets) and a hand-driven clock for the round deadline.
 * The multi-process tests cover the same paths over real WebSockets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Coordinator } from '../src/coordinator/coordinator.js';
import type { Clock, Transport } from '../src/coordinator/transport.js';
import type { WsHandlers } from '../src/coordinator/ws-server.js';
import type { Peer } from '../src/coordinator/membership.js';
import { CloseCodes } from '../src/shared/errors.js';
import { decodeCoordinatorMessage, PROTOCOL_VERSION, type CoordinatorMessage, type StepMsg } from '../src/shared/wire/protocol.js';
import { encodeTensor } from '../src/shared/wire/tensor.js';
import { testBackend } from './support/tf.js';
import { TOKEN, tinyCoordinatorConfig, waitFor } from './support/cluster.js';

class FakePeer implements Peer {
  readonly got: CoordinatorMessage[] = [];
  closed: number | null = null;
  send(bytes: Uint8Array): void {
    const v = decodeCoordinatorMessage(bytes);
    assert.ok(v.ok, v.ok ? '' : v.message);
    this.got.push(v.msg);
  }
  close(code: number): void {
    this.closed ??= code;
  }
  bufferedAmount(): number {
    return 0;
  }
  last(type: string): CoordinatorMessage | undefined {
    return this.got.filter((m) => m.type === type).at(-1);
  }
}

class HandClock implements Clock {
  private t = 0;
  private timers = new Map<number, () => void>();
  private next = 1;
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.timers.set(id, fn);
    void ms;
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers.delete(h as number);
  }
  /** Fires every pending timer (the deadline passes). */
  expire(): void {
    const due = [...this.timers.values()];
    this.timers.clear();
    this.t += 1e6;
    for (const fn of due) fn();
  }
}

test('pause below --min-workers, a round over fake peers, a wrong-length state refused, a missed deadline drops the worker', async () => {
  await testBackend();
  let handlers!: WsHandlers;
  const transport: Transport = { scheme: 'fake', connectionCount: 0, listen: async () => 1, close: async () => {} };
  const clock = new HandClock();
  const logs: string[] = [];
  const cfg = tinyCoordinatorConfig({ minWorkers: 2, epochs: 1, roundTimeout: 30 });
  const c = new Coordinator(cfg, TOKEN, { log: (l) => logs.push(l), progress: null, clock, transport: (_o, h) => ((handlers = h), transport) });
  await c.start();
  const join = (name: string) => {
    const peer = new FakePeer();
    const r = handlers.onHello({ type: 'hello', version: PROTOCOL_VERSION, token: TOKEN, info: { backend: 'cpu', device: 'cpu', host: 'test', pid: 1, name } }, peer, name);
    assert.ok(r.ok);
    return { peer, id: r.id };
  };
  const reply = (w: { peer: FakePeer; id: string }, step: StepMsg, stateLength?: number) => {
    const rows = step.hi - step.lo;
    const tokenCount = rows * cfg.numSteps;
    const state = new Float32Array(stateLength ?? rows * c.model.stateWidth);
    handlers.onMessage(
      w.id,
      { type: 'grads', round: step.round, tokenCount, lossSum: tokenCount, computeMs: 1, grads: encodeTensor(new Float32Array(c.model.paramCount), 'float32'), state: encodeTensor(state, 'float32') },
      0,
    );
  };
  try {
    const a = join('a');
    const welcome = a.peer.last('welcome');
    assert.ok(welcome && welcome.type === 'welcome');
    assert.deepEqual(welcome.model, { name: 'char-lstm', hyper: { hidden: 16 }, vocabSize: c.model.vocabSize, numSteps: cfg.numSteps, paramCount: c.model.paramCount, stateWidth: 32 });
    const running = c.run();
    await waitFor(() => a.peer.last('pause') !== undefined, 5000, 'a pause for the lone worker');
    assert.equal(c.state.paused, true);

    const b = join('b');
    await waitFor(() => a.peer.last('step') !== undefined && b.peer.last('step') !== undefined, 5000, 'the first round');
    assert.equal(c.state.paused, false);
    const [sa, sb] = [a.peer.last('step') as StepMsg, b.peer.last('step') as StepMsg];
    assert.equal(sa.hi - sa.lo + (sb.hi - sb.lo), cfg.batchSize, 'the streams are split over both');
    reply(a, sa);
    reply(b, sb);
    await waitFor(() => c.state.step === 1, 5000, 'the round to be applied');

    // Round 2: b returns a state of the wrong length: refused and disconnected, not silently dropped.
    await waitFor(() => (a.peer.last('step') as StepMsg).round === 2 && (b.peer.last('step') as StepMsg).round === 2, 5000, 'round 2');
    reply(b, b.peer.last('step') as StepMsg, 3);
    assert.equal(b.peer.closed, CloseCodes.BAD_MESSAGE);
    handlers.onClose(b.id, 'protocol');
    // a never answers round 2: the deadline passes and a is dropped for it.
    clock.expire();
    await waitFor(() => a.peer.closed !== null, 5000, 'a to be dropped');
    assert.equal(a.peer.closed, CloseCodes.HEARTBEAT_TIMEOUT);
    handlers.onClose(a.id, 'timeout');
    assert.equal(c.membership.size, 0);
    assert.ok(logs.some((l) => /missed the round deadline/.test(l)), logs.join('\n'));
    assert.equal(c.state.step, 1, 'nothing of round 2 was applied');

    c.stop('test over');
    const summary = await running;
    assert.equal(summary.reason, 'stopped');
  } finally {
    await c.dispose();
  }
});
