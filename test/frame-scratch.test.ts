/**
 * Large frames are received into one shared buffer instead of a fresh one per
 * message (src/shared/frame-scratch.ts): over a real socket, every kind of
 * frame must still arrive byte for byte, and only whole, large binary messages
 * may take the shared buffer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { WebSocketServer, WebSocket } from 'ws';
import { FrameScratch } from '../src/shared/frame-scratch.js';

test('large binary messages arrive intact through the shared receive buffer; small, fragmented and text ones take ws’s own path', async () => {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const scratch = new FrameScratch();
  const got: { hash: string; length: number; binary: boolean; shared: boolean }[] = [];
  let lastUses = 0;
  const done = new Promise<void>((resolve) => {
    wss.on('connection', (ws) => {
      assert.equal(scratch.attach(ws), true, "ws's receiver is the one frame-scratch expects");
      ws.on('message', (data: Buffer, binary) => {
        got.push({ hash: crypto.createHash('sha256').update(data).digest('hex'), length: data.length, binary, shared: scratch.uses !== lastUses });
        lastUses = scratch.uses;
        if (got.length === 7) resolve();
      });
    });
  });
  const port = (wss.address() as { port: number }).port;
  const client = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false });
  // A client's receiver exists from the upgrade on, so a worker attaches on open (src/worker/node-socket.ts).
  const clientScratch = new FrameScratch();
  assert.equal(clientScratch.attach(client), false, 'no receiver before the upgrade');
  await new Promise<void>((r) => client.once('open', () => r()));
  assert.equal(clientScratch.attach(client), true);
  const big = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));
  const sent = [big(1_200_000, 1), big(100, 2), big(1_500_000, 3), big(300_000, 4)];
  const frags = [big(200_000, 5), big(200_000, 6)];
  const text = 'x'.repeat(200_000);
  client.send(sent[0]);
  client.send(sent[1]);
  client.send(sent[2]);
  // A message in two fragments: ws's path (the fragments are joined when the last arrives).
  client.send(frags[0], { fin: false });
  client.send(frags[1], { fin: true });
  client.send(text);
  client.send(sent[3]);
  client.send(sent[0]);
  await done;
  const hash = (b: Buffer | string) => crypto.createHash('sha256').update(b).digest('hex');
  const expected = [sent[0], sent[1], sent[2], Buffer.concat(frags), Buffer.from(text), sent[3], sent[0]];
  assert.deepEqual(got.map((g) => [g.hash, g.length]), expected.map((b) => [hash(b), b.length]));
  assert.deepEqual(got.map((g) => g.binary), [true, true, true, true, false, true, true]);
  // The large whole binary messages span socket reads (64 kB each at most): they, and only they, use the shared buffer.
  assert.deepEqual(got.map((g) => g.shared), [true, false, true, false, false, true, true]);
  // And the other way: two large frames to the client, through its own scratch.
  const back: string[] = [];
  const twoBack = new Promise<void>((resolve) => {
    client.on('message', (data: Buffer) => {
      back.push(hash(data));
      if (back.length === 2) resolve();
    });
  });
  for (const ws of wss.clients) {
    ws.send(sent[2]);
    ws.send(sent[0]);
  }
  await twoBack;
  assert.deepEqual(back, [hash(sent[2]), hash(sent[0])]);
  assert.equal(clientScratch.uses, 2);
  client.close();
  await new Promise<void>((r) => wss.close(() => r()));
});
