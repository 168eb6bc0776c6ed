/**
 * wss:// with a self-signed certificate made here: a worker given the
 * certificate with --ca trains; one without it refuses the coordinator's
 * certificate and never joins.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { corpusFile, spawnWorker, killAll, tmpDir, TOKEN, type WorkerProc } from './support/cluster.js';
import { startCoordinatorProc, within, type CoordinatorProc } from './support/processes.js';
import { RawClient, tcpIdle } from './support/raw-client.js';

function selfSignedCertificate(dir: string): { cert: string; key: string } {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  const r = spawnSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', key, '-out', cert],
    { encoding: 'utf8', timeout: 60_000 },
  );
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') {
    assert.fail('this test needs the openssl command line tool to make a self-signed certificate (Debian/Ubuntu: apt-get install openssl)');
  }
  assert.equal(r.status, 0, `openssl failed: ${r.stderr}`);
  return { cert, key };
}

test('TLS: a worker with --ca trains over wss://, one without it is refused and does not train', async () => {
  const dir = tmpDir();
  const { cert, key } = selfSignedCertificate(dir);
  const workers: WorkerProc[] = [];
  let coord: CoordinatorProc | null = null;
  try {
    coord = startCoordinatorProc(
      ['--corpus', corpusFile(), '--max-tokens', '1000', '--batch-size', '6', '--num-steps', '5', '--hidden', '16', '--epochs', '2',
        '--host', '127.0.0.1', '--port', '0', '--metrics-port', '-1', '--backend', 'cpu', '--log-every', '1', '--sample-every', '0',
        '--tls-cert', cert, '--tls-key', key, '--hello-timeout', '1'],
      { DPTRAIN_TOKEN: TOKEN },
    );
    const port = await coord.listening();
    assert.match(coord.output(), new RegExp(`listening on wss://127\\.0\\.0\\.1:${port}`));
    const url = `wss://127.0.0.1:${port}`;

    // Without --ca the certificate does not verify: no handshake, no hello, no training.
    const untrusted = spawnWorker(url, ['--name', 'untrusted', '--max-retries', '1']);
    workers.push(untrusted);
    assert.deepEqual(await within(untrusted.exited, 30_000, 'the untrusted worker to give up'), { code: 1, signal: null }, untrusted.output());
    assert.match(untrusted.output(), /connection error: self[- ]signed certificate/);
    assert.match(untrusted.output(), /giving up: 2 attempts in a row .* failed \(--max-retries 1\)/);
    assert.match(untrusted.output(), /after 0 rounds/);
    // Nor does a plain-text client get anywhere on the TLS port.
    const plain = new RawClient(`ws://127.0.0.1:${port}`);
    assert.equal(await plain.opened, false);
    // Sockets that stall before the TLS handshake, or after it but before any HTTP, are cut at the hello timeout.
    const [beforeHandshake, afterHandshake] = await Promise.all([
      tcpIdle(port, { giveUpMs: 5000 }),
      tcpIdle(port, { tls: { ca: fs.readFileSync(cert), servername: 'localhost' }, giveUpMs: 5000 }),
    ]);
    assert.ok(beforeHandshake < 2000, `silent TCP socket open for ${beforeHandshake} ms`);
    assert.ok(afterHandshake < 2000, `silent TLS socket open for ${afterHandshake} ms`);
    assert.doesNotMatch(coord.output(), /joined from/);

    const trusted = spawnWorker(url, ['--name', 'trusted', '--ca', cert]);
    workers.push(trusted);
    assert.deepEqual(await within(trusted.exited, 60_000, 'the trusted worker to finish'), { code: 0, signal: null }, trusted.output());
    assert.deepEqual(await within(coord.exited, 30_000, 'the coordinator to finish'), { code: 0, signal: null }, coord.output());
    assert.match(coord.output(), /joined from .*\(trusted, /);
    assert.equal((coord.output().match(/joined from/g) ?? []).length, 1, 'only the worker with --ca joined');
    assert.match(coord.output(), /done: \d+ steps, 2 epochs/);
    const rounds = Number(/after (\d+) rounds/.exec(trusted.output())?.[1]);
    assert.ok(rounds > 0, trusted.output());
    console.log('reliability-counts', JSON.stringify({ test: 'tls', trustedRounds: rounds, untrustedRounds: 0 }));
  } finally {
    killAll(workers);
    if (coord && coord.child.exitCode === null) coord.child.kill('SIGKILL');
  }
});
