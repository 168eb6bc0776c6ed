/**
 * `dptrain relay` and `--coordinator URL1,URL2` as a user meets them: bad flags
 * are one sentence and exit 2; a wrong token is refused for good at either
 * hop; a relay with no coordinator gives up after --max-retries.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dptrain, freePort, NO_STACK } from './support/proc.js';
import { startCoordinator, tinyCoordinatorConfig, TOKEN } from './support/cluster.js';
import { spawnRelay } from './support/relay.js';

test('bad relay and address-list flags: one sentence, exit 2, no stack', async () => {
  const cases: [string[], Record<string, string>, RegExp][] = [
    [['relay', '--coordinator', 'http://x:1'], { DPTRAIN_TOKEN: TOKEN }, /--coordinator must look like ws:\/\/HOST:PORT or wss:\/\/HOST:PORT \(several separated by commas\), got 'http:\/\/x:1' \(ERR_BAD_CONFIG\)/],
    [['relay', '--coordinator', 'ws://x:1'], {}, /no token: set DPTRAIN_TOKEN, --token-file or --token .*\(ERR_BAD_CONFIG\)/],
    [['relay', '--tls-cert', 'cert.pem'], { DPTRAIN_TOKEN: TOKEN }, /--tls-cert and --tls-key go together \(ERR_BAD_CONFIG\)/],
    [['worker', 'join', '--coordinator', 'ws://a:1,ftp://b:2'], { DPTRAIN_TOKEN: TOKEN }, /got 'ftp:\/\/b:2' \(ERR_BAD_CONFIG\)/],
  ];
  for (const [args, env, re] of cases) {
    const p = dptrain(args, env);
    const { code } = await p.exited;
    assert.equal(code, 2, `${args.join(' ')}:\n${p.output()}`);
    assert.match(p.output(), re);
    assert.doesNotMatch(p.output(), NO_STACK);
  }
});

test('a relay with no coordinator gives up after --max-retries with ERR_COORDINATOR_GONE (exit 1)', async () => {
  const port = await freePort();
  const p = dptrain(['relay', '--coordinator', `ws://127.0.0.1:${port},ws://127.0.0.1:${port}`, '--max-retries', '1', '--metrics-port', '-1'], { DPTRAIN_TOKEN: TOKEN });
  const { code } = await p.exited;
  assert.equal(code, 1, p.output());
  assert.match(p.output(), /2 attempts in a row to reach any of ws:\/\/127\.0\.0\.1:\d+, ws:\/\/127\.0\.0\.1:\d+ failed \(--max-retries 1\) \(ERR_COORDINATOR_GONE\)/);
});

test('a wrong token is refused for good: a relay by its coordinator, a worker by its relay', async () => {
  const c = await startCoordinator(tinyCoordinatorConfig({ epochs: 1 }));
  const relay = spawnRelay(`ws://127.0.0.1:${c.port}`);
  try {
    const bad = dptrain(['relay', '--coordinator', `ws://127.0.0.1:${c.port}`, '--metrics-port', '-1', '--port', '0'], { DPTRAIN_TOKEN: 'not-the-token-0123' });
    assert.equal((await bad.exited).code, 1, bad.output());
    assert.match(bad.output(), /refused by the coordinator: .*\(ERR_BAD_TOKEN\)/);

    const relayUrl = `ws://127.0.0.1:${await relay.port()}`;
    const w = dptrain(['worker', 'join', '--coordinator', relayUrl, '--backend', 'cpu'], { DPTRAIN_TOKEN: 'not-the-token-0123' });
    assert.equal((await w.exited).code, 1, w.output());
    assert.match(w.output(), /ERR_BAD_TOKEN/);
    assert.equal(relay.exitCode(), null, 'the relay is unaffected');
  } finally {
    relay.kill('SIGKILL');
    c.stop('test over');
    await c.run();
    await c.dispose();
  }
});
