/**
 * The shared secret with real processes: the coordinator reads it from
 * --token-file, workers from DPTRAIN_TOKEN or --token-file, a wrong one is
 * refused for good, and it appears in no log line, metric or checkpoint.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CHECKPOINT_FILE } from '../src/shared/store/checkpoint.js';
import { corpusFile, killAll, spawnWorker, tmpDir, type WorkerProc } from './support/cluster.js';
import { scrape, startCoordinatorProc, within, type CoordinatorProc } from './support/processes.js';

test('token from --token-file and DPTRAIN_TOKEN; a wrong one is refused; the token is never logged, exported or saved', async () => {
  const dir = tmpDir();
  const token = crypto.randomBytes(24).toString('base64url');
  const tokenFile = path.join(dir, 'token');
  fs.writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const checkpoints = path.join(dir, 'checkpoints');
  const workers: WorkerProc[] = [];
  let coord: CoordinatorProc | null = null;
  try {
    coord = startCoordinatorProc([
      '--corpus', corpusFile(), '--max-tokens', '1000', '--batch-size', '6', '--num-steps', '5', '--hidden', '16', '--epochs', '10',
      '--host', '127.0.0.1', '--port', '0', '--metrics-host', '127.0.0.1', '--metrics-port', '0', '--backend', 'cpu', '--log-every', '1',
      '--sample-every', '0', '--min-workers', '2', '--checkpoint-dir', checkpoints, '--token-file', tokenFile,
    ]);
    const url = `ws://127.0.0.1:${await coord.listening()}`;
    const metricsPort = await coord.metricsPort();

    // A wrong token: refused with 4001, and the worker gives up at once instead of retrying.
    const intruder = spawnWorker(url, ['--name', 'intruder'], { DPTRAIN_TOKEN: `${token.slice(0, -1)}${token.endsWith('x') ? 'y' : 'x'}` });
    workers.push(intruder);
    assert.deepEqual(await within(intruder.exited, 30_000, 'the intruder to give up'), { code: 1, signal: null }, intruder.output());
    assert.match(intruder.output(), /refused by the coordinator: ERR_BAD_TOKEN/);
    assert.match(coord.output(), /refused 127\.0\.0\.1:\d+: ERR_BAD_TOKEN/);

    const byEnv = spawnWorker(url, ['--name', 'by-env'], { DPTRAIN_TOKEN: token });
    const byFile = spawnWorker(url, ['--name', 'by-file', '--token-file', tokenFile], { DPTRAIN_TOKEN: '' });
    workers.push(byEnv, byFile);
    // Scraped while both train (min-workers 2 holds the run until both are in).
    const deadline = Date.now() + 30_000;
    while ((await scrape(metricsPort, 'dptrain_workers_connected')) < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();

    assert.deepEqual(await within(byEnv.exited, 60_000, 'the worker to finish'), { code: 0, signal: null }, byEnv.output());
    assert.deepEqual(await within(byFile.exited, 60_000, 'the worker to finish'), { code: 0, signal: null }, byFile.output());
    assert.deepEqual(await within(coord.exited, 30_000, 'the coordinator to finish'), { code: 0, signal: null }, coord.output());
    assert.match(coord.output(), /joined from .*\(by-env, /);
    assert.match(coord.output(), /joined from .*\(by-file, /);
    assert.doesNotMatch(coord.output(), /\(intruder, /);

    const places: [string, string][] = [
      ['coordinator log', coord.output()],
      ['worker logs', workers.map((w) => w.output()).join('\n')],
      ['/metrics', metrics],
      ['checkpoint', fs.readFileSync(path.join(checkpoints, CHECKPOINT_FILE)).toString('latin1')],
    ];
    for (const [where, text] of places) assert.ok(!text.includes(token), `the token appears in the ${where}`);
    // The config line is printed, and names the file, not its contents.
    assert.match(coord.output(), new RegExp(`config: .*"tokenFile":"${tokenFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"`));
    console.log('reliability-counts', JSON.stringify({ test: 'token', placesSearched: places.length, tokenFound: 0, wrongTokenRefused: 1 }));
  } finally {
    killAll(workers);
    if (coord && coord.child.exitCode === null) coord.child.kill('SIGKILL');
  }
});
