/** The fleet benchmark's round model (bench/lib/fleet-model.ts): small trees whose rounds are worked out by hand. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { countWorkers, simulateRound, star, tree, type FleetTerms } from '../bench/lib/fleet-model.js';
import { layoutTree } from '../bench/lib/fleet-runs.js';

function terms(p: { s?: number; r?: number; f?: number; wp?: number; wr?: number; rp?: number; rs?: number; rr?: number; fwd?: number; inner?: number; delta?: number; bytes?: number } = {}): FleetTerms {
  return {
    bytes: p.bytes ?? 1000,
    root: { fixedMs: p.f ?? 0, sendMs: p.s ?? 0, recvMs: p.r ?? 0 },
    relay: { paramsMs: p.rp ?? 0, sendMs: p.rs ?? p.s ?? 0, recvMs: p.rr ?? p.r ?? 0, forwardMs: p.fwd ?? 0 },
    worker: { paramsMs: p.wp ?? 0, replyMs: p.wr ?? 0, innerStepMs: p.inner ?? 0, deltaMs: p.delta ?? 0 },
  };
}
const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-9, `${a} != ${b}`);

test('one worker: every term once, in a row', () => {
  const r = simulateRound(star(1), terms({ s: 2, r: 1, f: 5, wp: 0.5, wr: 0.25 }), { computeMs: 10 });
  close(r.roundMs, 2 + 0.5 + 10 + 0.25 + 1 + 5);
  close(r.efficiency, 10 / r.roundMs);
  assert.equal(r.workers, 1);
});

test('sends go out one after another, and replies are added while later ones are still coming', () => {
  // Sends end at 2, 4, 6; replies arrive at 12, 14, 16 and each is added at once (r < s): the last at 17.
  const r = simulateRound(star(3), terms({ s: 2, r: 1, f: 3 }), { computeMs: 10 });
  close(r.lastReplyMs, 17);
  close(r.roundMs, 20);
  // A serial sum would say 3 + 10 + 3 x (2 + 1) = 22.
});

test('when adding a reply costs more than sending, replies queue on the root', () => {
  // Arrivals at 11, 12, 13; added 11-16, 16-21, 21-26.
  const r = simulateRound(star(3), terms({ s: 1, r: 5 }), { computeMs: 10 });
  close(r.lastReplyMs, 26);
});

test('a link carries one message at a time at each end, plus its latency', () => {
  // 1000 bytes at 100 bytes/ms = 10 ms on the wire. Params: 0-10 (arrives 11), 10-20 (arrives 21).
  // Replies leave at 11 and 21, reach the root's end at 12 and 22: 12-22, 22-32.
  const r = simulateRound(star(2), terms({ bytes: 1000 }), { computeMs: 0, link: { bytesPerMs: 100, latencyMs: 1 } });
  close(r.lastReplyMs, 32);
});

test('a relay forwards the parameters as they arrive and one sum once all its replies are in', () => {
  // Root sends 0-1; relay receives 1-1.5, sends 1.5-2.5, 2.5-3.5; workers reply at 12.5, 13.5;
  // relay adds 12.5-13.5, 13.5-14.5, forwards 14.5-16.5; root adds 16.5-17.5.
  const r = simulateRound(tree(2, [2]), terms({ s: 1, r: 1, rp: 0.5, fwd: 2 }), { computeMs: 10 });
  close(r.lastReplyMs, 17.5);
  assert.equal(r.workers, 2);
});

test('a relay under a relay adds one more level of the same', () => {
  const one = simulateRound(tree(2, [2]), terms({ s: 1, r: 1, rp: 0.5, fwd: 2 }), { computeMs: 10 });
  const two = simulateRound([{ kind: 'relay', children: tree(2, [2]) }], terms({ s: 1, r: 1, rp: 0.5, fwd: 2 }), { computeMs: 10 });
  // The extra relay: receive 0.5, send 1, and on the way back add 1 and forward 2.
  close(two.lastReplyMs - one.lastReplyMs, 0.5 + 1 + 1 + 2);
});

test('stand-ins sharing one event loop wait for each other', () => {
  // Params arrive at 1 and 2; replies are due at 11 and 12 but the shared loop encodes 11-14, 14-17.
  const shared = simulateRound([{ kind: 'worker', cpu: 'standins' }, { kind: 'worker', cpu: 'standins' }], terms({ s: 1, wr: 3 }), { computeMs: 10 });
  close(shared.lastReplyMs, 17);
  const own = simulateRound(star(2), terms({ s: 1, wr: 3 }), { computeMs: 10 });
  close(own.lastReplyMs, 15);
});

test('local SGD: K inner steps, each with its optimizer step, then the change; per step the round over K', () => {
  const r = simulateRound(star(1), terms({ s: 1, r: 1, f: 2, inner: 1, delta: 2 }), { computeMs: 10, k: 4 });
  close(r.roundMs, 1 + 4 * 11 + 2 + 1 + 2);
  close(r.stepMs, r.roundMs / 4);
  close(r.efficiency, 40 / r.roundMs);
  // The outer optimizer's fixed work replaces the synchronous one when it is given.
  const t = terms({ s: 1, r: 1, f: 2, inner: 1, delta: 2 });
  t.root.fixedLocalMs = 7;
  close(simulateRound(star(1), t, { computeMs: 10, k: 4 }).roundMs, r.roundMs + 5);
  close(simulateRound(star(1), t, { computeMs: 10 }).roundMs, 1 + 10 + 1 + 2);
});

test('trees: relays of 8, and 8 x 4 x 4 for 128 workers', () => {
  const t8 = tree(32, [8]);
  assert.equal(t8.length, 4);
  assert.equal(countWorkers(t8), 32);
  const t = tree(128, [4, 4]);
  assert.equal(t.length, 8);
  assert.ok(t.every((n) => n.kind === 'relay' && n.children.length === 4 && n.children.every((c) => c.kind === 'relay' && c.children.length === 4)));
  assert.equal(countWorkers(t), 128);
  assert.equal(countWorkers(tree(10, [8])), 10);
  assert.throws(() => simulateRound([], terms(), { computeMs: 1 }));
});

test('busy time per resource: what limits a round', () => {
  const r = simulateRound(tree(4, [2]), terms({ s: 1, r: 2, rp: 0.5, fwd: 3, bytes: 1000 }), { computeMs: 10, link: { bytesPerMs: 1000, latencyMs: 0 } });
  close(r.busyMs['root/cpu'], 2 * 1 + 2 * 2);
  close(r.busyMs['root.0/cpu'], 0.5 + 2 * 1 + 2 * 2 + 3);
  close(r.busyMs['root/out'], 2);
  close(r.busyMs['root.1/in'], 2);
});

test('a measured layout becomes the model of the same set-up: one event loop per stand-in process', () => {
  const t = layoutTree([{ relay: [{ standIns: 2 }, { relay: [{ standIns: 1 }] }] }, { standIns: 2 }]);
  assert.equal(countWorkers(t), 5);
  assert.deepEqual(t, [
    { kind: 'relay', children: [{ kind: 'worker', cpu: 'standins-0' }, { kind: 'worker', cpu: 'standins-0' }, { kind: 'relay', children: [{ kind: 'worker', cpu: 'standins-1' }] }] },
    { kind: 'worker', cpu: 'standins-2' },
    { kind: 'worker', cpu: 'standins-2' },
  ]);
});

test('event loops that share cores wait for one', () => {
  // Root sends 0-1 and 1-2; the stand-ins' loops receive at 1-4 and 2-5 on their own cores.
  const own = simulateRound([{ kind: 'worker', cpu: 'a' }, { kind: 'worker', cpu: 'b' }], terms({ s: 1, wp: 3 }), { computeMs: 0 });
  close(own.lastReplyMs, 5);
  // On one core for all: the root's sends 0-2, then the receives 2-5 and 5-8.
  const one = simulateRound([{ kind: 'worker', cpu: 'a' }, { kind: 'worker', cpu: 'b' }], terms({ s: 1, wp: 3 }), { computeMs: 0, cores: 1 });
  close(one.lastReplyMs, 8);
});
