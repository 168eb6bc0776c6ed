/**
 * A connection's socket reads taken over (src/shared/direct-reads.ts): large
 * whole binary frames are read straight into the connection's frame buffer,
 * everything else goes to ws. Over real sockets: every message arrives byte
 * for byte and in order, masked with a random key or not, with frame headers
 * split across reads; ws still refuses what it must (a frame over maxPayload).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { WebSocketServer, WebSocket } from 'ws';
import { attachDirectReads, MIN_DIRECT_FRAME } from '../src/shared/direct-reads.js';

const hash = (b: Buffer | string) => crypto.createHash('sha256').update(b).digest('hex');
const bytes = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));

async function server(maxPayload = 0): Promise<{ wss: WebSocketServer; port: number }> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false, ...(maxPayload ? { maxPayload } : {}) });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  return { wss, port: (wss.address() as { port: number }).port };
}

test('messages of every kind arrive intact and in order; only large whole binary frames are taken (random client masks)', async () => {
  const { wss, port } = await server();
  let taken = 0;
  const got: { hash: string; binary: boolean; taken: boolean }[] = [];
  const pings: string[] = [];
  const n = 9;
  const all = new Promise<void>((resolve) => {
    wss.on('connection', (ws) => {
      assert.equal(attachDirectReads(ws, () => taken++), true);
      let seen = 0;
      ws.on('ping', (d) => pings.push(d.toString()));
      ws.on('message', (data: Buffer, binary) => {
        got.push({ hash: hash(data), binary, taken: taken !== seen });
        seen = taken;
        if (got.length === n) resolve();
      });
    });
  });
  // A browser-like client: ws masks every frame with a random key.
  const client = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false });
  await new Promise<void>((r) => client.once('open', () => r()));
  const big = bytes(1_200_000, 1);
  const edge = bytes(MIN_DIRECT_FRAME, 2);
  const below = bytes(MIN_DIRECT_FRAME - 1, 3);
  const frags = [bytes(150_000, 4), bytes(150_000, 5)];
  const text = 'y'.repeat(100_000);
  client.send(big);
  client.send(bytes(10, 6));
  client.ping('p1');
  client.send(edge);
  client.send(below);
  client.send(frags[0], { fin: false });
  client.send(frags[1], { fin: true });
  client.send(text);
  client.send(big);
  client.send(Buffer.alloc(0));
  client.send(bytes(300_001, 7));
  await all;
  const expected = [big, bytes(10, 6), edge, below, Buffer.concat(frags), Buffer.from(text), big, Buffer.alloc(0), bytes(300_001, 7)];
  assert.deepEqual(got.map((g) => g.hash), expected.map((b) => hash(b)));
  assert.deepEqual(got.map((g) => g.binary), [true, true, true, true, true, false, true, true, true]);
  assert.deepEqual(got.map((g) => g.taken), [true, false, true, false, false, false, true, false, true]);
  assert.deepEqual(pings, ['p1']);
  // Frames from the server to a client whose reads are taken over: unmasked, as servers send them.
  assert.equal(attachDirectReads(client), true);
  const back: string[] = [];
  const two = new Promise<void>((resolve) => {
    client.on('message', (d: Buffer) => {
      back.push(hash(d));
      if (back.length === 3) resolve();
    });
  });
  for (const ws of wss.clients) {
    ws.send(big);
    ws.send('small');
    ws.send(bytes(500_000, 8));
  }
  await two;
  assert.deepEqual(back, [hash(big), hash('small'), hash(bytes(500_000, 8))]);
  // The close handshake still goes through ws.
  const closed = new Promise<number>((r) => client.once('close', (code) => r(code)));
  for (const ws of wss.clients) ws.close(4012, 'done');
  assert.equal(await closed, 4012);
  await new Promise<void>((r) => wss.close(() => r()));
});

test('frame headers and payloads split across many small reads, and a frame over maxPayload still refused by ws', async () => {
  const { wss, port } = await server(400_000);
  let taken = 0;
  const got: string[] = [];
  let error = '';
  wss.on('connection', (ws) => {
    assert.equal(attachDirectReads(ws, () => taken++), true);
    ws.on('message', (d: Buffer) => got.push(hash(d)));
    ws.on('error', (e: Error & { code?: string }) => (error = e.code ?? ''));
  });
  // A raw client: the upgrade by hand, then frames written a few bytes at a time.
  const sock = net.connect(port, '127.0.0.1');
  await new Promise<void>((r) => sock.once('connect', () => r()));
  sock.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  await new Promise<void>((r) => sock.once('data', () => r()));
  const frame = (payload: Buffer, opcode = 2) => {
    const mask = crypto.randomBytes(4);
    const n = payload.length;
    const head = n < 126 ? Buffer.from([0x80 | opcode, 0x80 | n]) : n < 65536 ? Buffer.from([0x80 | opcode, 0x80 | 126, n >> 8, n & 0xff]) : Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | 127, 0, 0, 0, 0]), Buffer.from([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff])]);
    const body = Buffer.from(payload.map((b, i) => b ^ mask[i & 3]));
    return Buffer.concat([head, mask, body]);
  };
  const a = bytes(200_000, 9);
  const b = bytes(70_000, 10);
  const stream = Buffer.concat([frame(a), frame(Buffer.from('hi'), 1), frame(b)]);
  // Pieces of 1, 3, 7 and 4,000 bytes, each its own write and (with the pauses) its own read.
  let at = 0;
  for (const size of [1, 3, 7, 1, 1, 4000]) {
    sock.write(stream.subarray(at, at + size));
    at += size;
    await new Promise((r) => setTimeout(r, 5));
  }
  // Then 9 and 60,000 bytes in turn: headers and payload boundaries fall anywhere in a read.
  for (let k = 0; at < stream.length; k++) {
    const size = Math.min(stream.length - at, k % 2 === 0 ? 9 : 60_000);
    sock.write(stream.subarray(at, at + size));
    at += size;
    await new Promise((r) => setTimeout(r, 2));
  }
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(got, [hash(a), hash('hi'), hash(b)]);
  assert.equal(taken, 2);
  // Over maxPayload: ws refuses it, closing with 1009, as it would without the takeover.
  const closeFrame = new Promise<Buffer>((r) => sock.on('data', (d: Buffer) => d[0] === 0x88 && r(d)));
  sock.write(frame(bytes(500_000, 11)));
  const close = await closeFrame;
  assert.equal(close.readUInt16BE(2), 1009);
  assert.equal(error, 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH');
  assert.equal(got.length, 3);
  sock.destroy();
  await new Promise<void>((r) => wss.close(() => r()));
});
