/** No model data before a successful hello; a wrong or missing token is refused with its close code. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { encode, decode, PROTOCOL_VERSION } from '../src/shared/wire/protocol.js';
import { CloseCodes } from '../src/shared/errors.js';
import { startCoordinator, tinyCoordinatorConfig, TOKEN } from './support/cluster.js';

interface Outcome {
  messages: Record<string, unknown>[];
  code: number;
}

function talk(url: string, frames: Uint8Array[]): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const messages: Record<string, unknown>[] = [];
    const timer = setTimeout(() => reject(new Error('no close within 5 s')), 5000);
    ws.on('open', () => frames.forEach((f) => ws.send(f)));
    ws.on('message', (d: Buffer) => messages.push(decode(d) as Record<string, unknown>));
    ws.on('close', (code) => {
      clearTimeout(timer);
      resolve({ messages, code });
    });
    ws.on('error', () => {});
  });
}

const info = { backend: 'cpu', device: 'cpu', host: 'test', pid: 1 };

test('wrong token, missing token and messages before hello are refused before any model data', async () => {
  const c = await startCoordinator(tinyCoordinatorConfig({ helloTimeout: 0.5 }));
  const url = `ws://127.0.0.1:${c.port}`;
  try {
    const wrong = await talk(url, [encode({ type: 'hello', version: PROTOCOL_VERSION, token: 'nope', info })]);
    assert.equal(wrong.code, CloseCodes.BAD_TOKEN);
    assert.deepEqual(wrong.messages.map((m) => m.type), ['error']);
    assert.equal(wrong.messages[0].code, 'ERR_BAD_TOKEN');

    const missing = await talk(url, [Buffer.from(JSON.stringify({ type: 'hello' }))]);
    assert.notEqual(missing.code, 1000);
    assert.ok(!missing.messages.some((m) => m.type === 'welcome'));

    const noToken = await talk(url, [new Uint8Array(encode({ type: 'hello', version: PROTOCOL_VERSION, info } as never))]);
    assert.equal(noToken.code, CloseCodes.BAD_MESSAGE);
    assert.ok(!noToken.messages.some((m) => m.type === 'welcome' || m.type === 'params'));

    const early = await talk(url, [encode({ type: 'leave', reason: 'x' })]);
    assert.equal(early.code, CloseCodes.NOT_AUTHENTICATED);

    const silent = await talk(url, []);
    assert.equal(silent.code, CloseCodes.HELLO_TIMEOUT);

    const oldVersion = await talk(url, [encode({ type: 'hello', version: 99, token: TOKEN, info })]);
    assert.equal(oldVersion.code, CloseCodes.VERSION_MISMATCH);
    assert.equal(c.membership.size, 0);

    // The right token gets a welcome.
    const ok = await new Promise<Record<string, unknown>>((resolve) => {
      const ws = new WebSocket(url);
      ws.on('open', () => ws.send(encode({ type: 'hello', version: PROTOCOL_VERSION, token: TOKEN, info })));
      ws.on('message', (d: Buffer) => {
        resolve(decode(d) as Record<string, unknown>);
        ws.close();
      });
    });
    assert.equal(ok.type, 'welcome');
    const rejected = (await c.metrics.rejected.get()).values.find((v) => v.labels.code === 'ERR_BAD_TOKEN');
    assert.equal(rejected?.value, 1);
  } finally {
    c.stop('test over');
    await c.run();
    c.dispose();
  }
});
