/**
 * A relay over wss:// both ways, with a self-signed certificate made here: a
 * relay given the certificate with --ca joins a TLS coordinator and serves its
 * own workers over wss:// (they trust it with --ca), and the run trains to the
 * end; a relay without --ca refuses the coordinator's certificate, gives up and
 * never joins.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { corpusFile, spawnWorker, killAll, tmpDir, waitFor, TOKEN, type WorkerProc } from './support/cluster.js';
import { startCoordinatorProc, within, type CoordinatorProc } from './support/processes.js';
import { dptrain, type Proc } from './support/proc.js';

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

const relay = (coordinator: string, extra: string[]): Proc =>
  dptrain(['relay', '--coordinator', coordinator, '--host', '127.0.0.1', '--port', '0', '--metrics-port', '-1', '--heartbeat-interval', '1', ...extra], { DPTRAIN_TOKEN: TOKEN });

test('TLS: a relay with --ca joins a wss:// coordinator and serves its workers over wss://; one without --ca never joins', async () => {
  const dir = tmpDir();
  const { cert, key } = selfSignedCertificate(dir);
  const workers: WorkerProc[] = [];
  const relays: Proc[] = [];
  let coord: CoordinatorProc | null = null;
  try {
    coord = startCoordinatorProc(
      ['--corpus', corpusFile(), '--max-tokens', '1000', '--batch-size', '6', '--num-steps', '5', '--hidden', '16', '--epochs', '2', '--min-workers', '2',
        '--host', '127.0.0.1', '--port', '0', '--metrics-port', '-1', '--backend', 'cpu', '--log-every', '1', '--sample-every', '0',
        '--tls-cert', cert, '--tls-key', key, '--hello-timeout', '1'],
      { DPTRAIN_TOKEN: TOKEN },
    );
    const port = await coord.listening();
    const url = `wss://127.0.0.1:${port}`;

    // Without --ca the coordinator's certificate does not verify: the relay gives up and never joins.
    const untrusted = relay(url, ['--name', 'untrusted', '--max-retries', '1']);
    relays.push(untrusted);
    const gone = await within(untrusted.exited, 30_000, 'the untrusted relay to give up');
    assert.notEqual(gone.code, 0, untrusted.output());
    assert.match(untrusted.output(), /self[- ]signed certificate/);
    assert.doesNotMatch(untrusted.output(), /^listening on/m);
    assert.doesNotMatch(coord.output(), /joined from/);

    // With --ca it joins, and serves wss:// itself with the same certificate.
    const trusted = relay(url, ['--name', 'trusted', '--ca', cert, '--tls-cert', cert, '--tls-key', key]);
    relays.push(trusted);
    await waitFor(() => /^listening on wss:\/\/[^:]+:\d+/m.test(trusted.output()) || trusted.exitCode() !== null, 60_000, 'the relay to listen on wss://');
    const m = /^listening on wss:\/\/[^:]+:(\d+)/m.exec(trusted.output());
    assert.ok(m, trusted.output());
    const relayUrl = `wss://127.0.0.1:${m[1]}`;
    for (const name of ['a', 'b']) workers.push(spawnWorker(relayUrl, ['--name', name, '--ca', cert]));
    for (const w of workers) assert.deepEqual(await within(w.exited, 90_000, 'a worker to finish'), { code: 0, signal: null }, w.output());
    assert.deepEqual(await within(coord.exited, 30_000, 'the coordinator to finish'), { code: 0, signal: null }, coord.output());
    assert.equal((await within(trusted.exited, 30_000, 'the relay to finish')).code, 0, trusted.output());
    assert.equal((coord.output().match(/joined from/g) ?? []).length, 1, `only the relay with --ca joined:\n${coord.output()}`);
    assert.match(coord.output(), /done: \d+ steps, 2 epochs/);
    for (const w of workers) assert.ok(Number(/after (\d+) rounds/.exec(w.output())?.[1]) > 0, w.output());
  } finally {
    killAll(workers);
    for (const r of relays) if (r.exitCode() === null) r.kill('SIGKILL');
    if (coord && coord.child.exitCode === null) coord.child.kill('SIGKILL');
  }
});
