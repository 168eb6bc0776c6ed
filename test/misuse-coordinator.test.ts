/**
 * Ordinary mistakes on the coordinator's command line, with real processes and real files: nothing
 * a user types loses a checkpoint, hangs, or ends in a stack trace.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { corpusFile, tmpDir, TOKEN, waitFor } from './support/cluster.js';
import { dptrain, NO_STACK } from './support/proc.js';
import { readCheckpoint } from '../src/shared/store/checkpoint.js';
import { LOCK_FILE } from '../src/coordinator/checkpoint-dir.js';

const corpus = corpusFile();
const TINY = ['--corpus', corpus, '--max-tokens', '1500', '--batch-size', '4', '--num-steps', '5', '--hidden', '8', '--host', '127.0.0.1', '--port', '0', '--metrics-port', '-1', '--backend', 'cpu', '--worker-backend', 'cpu', '--log-every', '1', '--sample-every', '0'];
const ENV = { DPTRAIN_TOKEN: TOKEN };

function sha(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

async function expectExit(args: string[], code: number, want: RegExp, env: NodeJS.ProcessEnv = ENV): Promise<string> {
  const p = dptrain(args, env);
  const { code: got } = await p.exited;
  const out = p.output();
  assert.equal(got, code, `${args.join(' ')} exited ${got}:\n${out}`);
  assert.match(out, want, args.join(' '));
  assert.doesNotMatch(out, NO_STACK, `stack trace for ${args.join(' ')}`);
  return out;
}

/** A finished one-epoch run in a fresh directory; returns the directory. */
async function trainedDir(epochs = 1): Promise<string> {
  const dir = tmpDir();
  await expectExit(['coordinator', 'start', ...TINY, '--epochs', String(epochs), '--spawn', '1', '--checkpoint-dir', dir], 0, /done: \d+ steps/);
  return dir;
}

test('a checkpoint directory is never overwritten by a new run without --overwrite, and --resume of a finished run trains nothing', async () => {
  const dir = await trainedDir(2);
  const ck = path.join(dir, 'checkpoint.dpt');
  const before = sha(ck);
  const step = (await readCheckpoint(dir)).step;

  // A new run on it: refused before anything is loaded, the checkpoint untouched.
  await expectExit(['coordinator', 'start', ...TINY, '--epochs', '2', '--spawn', '1', '--checkpoint-dir', dir], 2, /already holds a checkpoint .*--resume .*--overwrite.*\(ERR_CHECKPOINT_EXISTS\)/);
  assert.equal(sha(ck), before);

  // --resume with the same or fewer epochs: the run is finished; exit 0 at once, nothing trained, no worker started.
  for (const epochs of ['2', '1']) {
    const out = await expectExit(['coordinator', 'start', ...TINY, '--epochs', epochs, '--spawn', '1', '--checkpoint-dir', dir, '--resume'], 0, /already finished \(step \d+, epoch 2 of --epochs \d\); nothing to do/);
    assert.doesNotMatch(out, /ECONNREFUSED|spawned|local-0/);
    assert.equal(sha(ck), before);
  }
  // --overwrite says so and starts over.
  const out = await expectExit(['coordinator', 'start', ...TINY, '--epochs', '1', '--spawn', '1', '--checkpoint-dir', dir, '--overwrite'], 0, /will be replaced by this new run/);
  assert.match(out, /done: /);
  assert.ok((await readCheckpoint(dir)).step < step);
  await expectExit(['coordinator', 'start', ...TINY, '--checkpoint-dir', dir, '--overwrite', '--resume'], 2, /either --resume .* or --overwrite/);
});

test('checkpoint directories that cannot work are refused at start: a file, a mistyped --resume, a path through a file', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'plain-file');
  fs.writeFileSync(file, 'x');
  await expectExit(['coordinator', 'start', ...TINY, '--spawn', '1', '--checkpoint-dir', file], 2, /--checkpoint-dir .*plain-file is a file, not a directory \(ERR_CHECKPOINT_DIR\)/);
  await expectExit(['coordinator', 'start', ...TINY, '--spawn', '1', '--checkpoint-dir', file, '--resume'], 2, /is a file, not a directory \(ERR_CHECKPOINT_DIR\)/);
  await expectExit(['coordinator', 'start', ...TINY, '--spawn', '1', '--checkpoint-dir', path.join(file, 'sub')], 2, /\(ERR_CHECKPOINT_DIR\)/);
  await expectExit(['coordinator', 'start', ...TINY, '--spawn', '1', '--checkpoint-dir', path.join(dir, 'chekpoints'), '--resume'], 2, /does not exist \(mistyped\?\).*\(ERR_CHECKPOINT_DIR\)/);
  assert.equal(fs.existsSync(path.join(dir, 'chekpoints')), false);
});

test('a run whose final checkpoint cannot be written does not exit 0', async () => {
  const dir = tmpDir();
  const p = dptrain(['coordinator', 'start', ...TINY, '--epochs', '40', '--spawn', '1', '--checkpoint-dir', dir, '--checkpoint-every', '0'], ENV);
  // A directory where the coordinator's temp file goes: the rename-into-place write fails (root ignores permissions).
  fs.mkdirSync(path.join(dir, `.checkpoint.dpt.tmp-${p.pid}`));
  const { code } = await p.exited;
  assert.equal(code, 1, p.output());
  assert.match(p.output(), /the final checkpoint could not be written .*\(ERR_CHECKPOINT_WRITE\)/);
  assert.doesNotMatch(p.output(), NO_STACK);
});

test('one coordinator per checkpoint directory: a second is refused naming the holder; a SIGKILLed holder does not block the next start', async () => {
  const dir = tmpDir();
  const first = dptrain(['coordinator', 'start', ...TINY, '--epochs', '100000', '--min-workers', '1', '--checkpoint-dir', dir], ENV);
  await waitFor(() => /listening on/.test(first.output()), 60_000, 'the first coordinator');
  const lock = JSON.parse(fs.readFileSync(path.join(dir, LOCK_FILE), 'utf8'));
  assert.equal(lock.pid, first.pid);
  const other = TINY.map((a, i) => (TINY[i - 1] === '--hidden' ? '16' : a));
  await expectExit(['coordinator', 'start', ...other, '--checkpoint-dir', dir, '--resume'], 2, new RegExp(`in use by the coordinator on host ${os.hostname()}, pid ${first.pid}.*\\(ERR_CHECKPOINT_LOCKED\\)`));
  first.kill('SIGKILL');
  await first.exited;
  assert.ok(fs.existsSync(path.join(dir, LOCK_FILE)), 'a SIGKILLed coordinator leaves its lock');
  const out = await expectExit(['coordinator', 'start', ...TINY, '--epochs', '1', '--spawn', '1', '--checkpoint-dir', dir, '--resume'], 0, /taking over the lock of .* pid \d+ .*that process is gone/);
  assert.match(out, /done: /);
  assert.equal(fs.existsSync(path.join(dir, LOCK_FILE)), false, 'a clean exit removes its lock');
});

test('busy ports are one sentence naming the flag, exit 2', async () => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  const port = String((blocker.address() as net.AddressInfo).port);
  try {
    const base = TINY.filter((a, i) => !['--port', '--metrics-port'].includes(a) && !['--port', '--metrics-port'].includes(TINY[i - 1]));
    await expectExit(['coordinator', 'start', ...base, '--port', port, '--metrics-port', '-1'], 2, new RegExp(`--port ${port} is already in use on 127\\.0\\.0\\.1 .*\\(ERR_PORT_IN_USE\\)`));
    await expectExit(['coordinator', 'start', ...base, '--port', '0', '--metrics-port', port], 2, new RegExp(`--metrics-port ${port} is already in use .*\\(ERR_PORT_IN_USE\\)`));
    await expectExit(['worker', 'join', '--coordinator', 'ws://127.0.0.1:1', '--metrics-port', port, '--backend', 'cpu'], 2, /--metrics-port \d+ is already in use .*\(ERR_PORT_IN_USE\)/);
  } finally {
    blocker.close();
  }
});

test('blank and short tokens are refused by the coordinator and the worker', async () => {
  // Independent processes: run side by side.
  await Promise.all([
    ...['', ' ', '\t'].flatMap((t) => [
      expectExit(['coordinator', 'start', ...TINY, '--token', t], 2, /(--token \(or DPTRAIN_TOKEN\) is blank|--token was given without a value).*\(ERR_BAD_CONFIG\)/, {}),
      expectExit(['worker', 'join', '--coordinator', 'ws://127.0.0.1:1', '--token', t], 2, /(is blank|without a value).*\(ERR_BAD_CONFIG\)/, {}),
    ]),
    expectExit(['coordinator', 'start', ...TINY], 2, /is blank/, { DPTRAIN_TOKEN: '   ' }),
    expectExit(['coordinator', 'start', ...TINY, '--token', 'abc'], 2, /has 3 characters; use at least 8 .*\(ERR_BAD_CONFIG\)/, {}),
  ]);
});

test('flags without values, timers past what Node can hold, NaN and models that cannot fit are refused before anything starts', async () => {
  const big = TINY.map((a, i) => (TINY[i - 1] === '--hidden' ? '8192' : a));
  const wasmBig = TINY.map((a, i) => (TINY[i - 1] === '--hidden' ? '6144' : a));
  await Promise.all([
    expectExit(['coordinator', 'start', ...TINY, '--hidden', '--epochs', '3'], 2, /--hidden was given without a value.*\(ERR_BAD_CONFIG\)/),
    expectExit(['coordinator', 'start', ...TINY, '--corpus='], 2, /--corpus was given without a value/),
    expectExit(['worker', 'join', '--coordinator', '--backend', 'cpu'], 2, /--coordinator was given without a value/),
    expectExit(['coordinator', 'start', ...TINY, '--round-timeout', '1e9'], 2, /--round-timeout must be at most 86400/),
    expectExit(['worker', 'join', '--reconnect-grace', '1e9'], 2, /--reconnect-grace must be at most 86400/),
    expectExit(['coordinator', 'start', ...TINY, '--lr', 'NaN'], 2, /--lr must be a number, got NaN \(command line\)/),
    expectExit(['coordinator', 'start', ...TINY, '--epochs', '3', '--epochs', '4'], 2, /--epochs was given 2 times/),
    expectExit(['coordinator', 'start', ...big, '--spawn', '1'], 2, /--hidden 8192 gives [\d,]+ parameters: a \d+ MiB message, over the 1024 MiB a worker accepts .*\(ERR_MODEL_TOO_LARGE\)/),
    expectExit(['coordinator', 'start', ...wasmBig, '--spawn', '1'], 2, /about \d+ MiB for the cpu backend, over the 2048 MiB .*\(ERR_MODEL_TOO_LARGE\)/),
  ]);
});

test('SIGINT or SIGTERM to a --spawn run, to the process or its whole group, exits 0 with a checkpoint and no stack trace', async () => {
  for (const [sig, group] of [['SIGINT', false], ['SIGTERM', false], ['SIGINT', true]] as const) {
    const dir = tmpDir();
    const p = dptrain(['coordinator', 'start', ...TINY, '--epochs', '100000', '--spawn', '1', '--checkpoint-dir', dir], ENV, { detached: group });
    await waitFor(() => /epoch 2\//.test(p.output()), 60_000, 'two epochs');
    if (group) process.kill(-p.pid, sig);
    else p.kill(sig);
    const { code } = await p.exited;
    assert.equal(code, 0, `${sig}${group ? ' to the group' : ''}:\n${p.output()}`);
    assert.match(p.output(), /stopped at step \d+/);
    assert.doesNotMatch(p.output(), NO_STACK);
    assert.doesNotMatch(p.output(), /all local workers exited/);
    assert.ok((await readCheckpoint(dir)).step > 0);
  }
});

test('a worker pointed at something that is not a coordinator says so and exits 2 instead of retrying forever', async () => {
  const server = http.createServer((_req, res) => res.end('hello\n'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  try {
    await expectExit(['worker', 'join', '--coordinator', `ws://127.0.0.1:${port}`, '--backend', 'cpu'], 2, /answered HTTP 200 instead of a WebSocket upgrade: not a dptrain coordinator.*\(ERR_NOT_A_COORDINATOR\)/);
  } finally {
    server.close();
  }
});

test('--max-retries N means N retries after the first attempt; --reconnect-grace bounds the time without a coordinator', async () => {
  const port = await (async () => {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const p = (s.address() as net.AddressInfo).port;
    await new Promise<void>((r) => s.close(() => r()));
    return p;
  })();
  const out = await expectExit(['worker', 'join', '--coordinator', `ws://127.0.0.1:${port}`, '--backend', 'cpu', '--max-retries', '2'], 1, /giving up: 3 attempts in a row .* failed \(--max-retries 2\).*\(ERR_COORDINATOR_GONE\)/s);
  assert.equal(out.match(/connection error/g)?.length, 3, out);
  const t0 = Date.now();
  await expectExit(['worker', 'join', '--coordinator', `ws://127.0.0.1:${port}`, '--backend', 'cpu', '--reconnect-grace', '2'], 1, /no coordinator at .* for \d+ s \(--reconnect-grace 2\).*\(ERR_COORDINATOR_GONE\)/s);
  assert.ok(Date.now() - t0 < 30_000);
});

test('token, config, certificate and checkpoint paths that name a device, a FIFO or a huge file are refused, not read forever', async () => {
  const dir = tmpDir();
  const huge = path.join(dir, 'huge.yaml');
  fs.writeFileSync(huge, '');
  fs.truncateSync(huge, 64 * 1024 * 1024);
  const ckdir = tmpDir();
  fs.symlinkSync('/dev/zero', path.join(ckdir, 'checkpoint.dpt'));
  await Promise.all([
    expectExit(['worker', 'join', '--token-file', '/dev/zero'], 2, /--token-file \/dev\/zero is not a regular file \(ERR_BAD_CONFIG\)/, {}),
    expectExit(['coordinator', 'start', ...TINY, '--config', '/dev/urandom'], 2, /config file \/dev\/urandom is not a regular file/),
    expectExit(['coordinator', 'start', ...TINY, '--config', huge], 2, /config file .*huge\.yaml is 67108864 bytes, more than/),
    expectExit(['coordinator', 'start', ...TINY, '--tls-cert', '/dev/zero', '--tls-key', '/dev/zero'], 2, /--tls-cert \/dev\/zero is not a regular file/),
    expectExit(['worker', 'join', '--coordinator', 'wss://127.0.0.1:1', '--ca', '/dev/zero'], 2, /--ca \/dev\/zero is not a regular file/),
    expectExit(['generate', '--checkpoint', ckdir], 2, /checkpoint .* is not a regular file.*\(ERR_CHECKPOINT_CORRUPT\)/),
  ]);
});

test('--checkpoint-dir under /proc ends with one sentence instead of spinning', async () => {
  await expectExit(['coordinator', 'start', ...TINY, '--spawn', '1', '--checkpoint-dir', '/proc/dptrain-no/such'], 2, /cannot create --checkpoint-dir \/proc\/dptrain-no\/such: ENOENT \(ERR_CHECKPOINT_DIR\)/);
});
