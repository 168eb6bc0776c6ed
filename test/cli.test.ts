/** Bad flags and bad input: one clear sentence and exit code 2, never a stack trace. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cliPath, tmpDir } from './support/cluster.js';

function run(args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', cliPath, ...args], { encoding: 'utf8', env: { ...process.env, DPTRAIN_TOKEN: 'test-token-0123' }, timeout: 60_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

test('bad flags and bad corpora exit 2 with one sentence and an error code', () => {
  const dir = tmpDir();
  const empty = path.join(dir, 'empty.txt');
  fs.writeFileSync(empty, '');
  const binary = path.join(dir, 'bin.txt');
  fs.writeFileSync(binary, Buffer.from([0, 1, 2, 3, 0, 255, 0, 7]));
  const small = path.join(dir, 'small.txt');
  fs.writeFileSync(small, 'a tiny corpus\n');
  const cases: [string[], RegExp][] = [
    [['coordinator', 'start', '--bogus', '1'], /Unknown argument: bogus/],
    [['coordinator', 'start', '--batch-size', '-3'], /--batch-size must be at least 1/],
    [['coordinator', 'start', '--hidden', '0'], /--hidden must be at least 1/],
    [['coordinator', 'start', '--clip', '0'], /--clip must be at least/],
    [['coordinator', 'start', '--optimizer', 'rmsprop'], /optimizer/],
    [['coordinator', 'start', '--corpus', path.join(dir, 'missing.txt'), '--metrics-port', '-1'], /ERR_CORPUS_NOT_FOUND/],
    [['coordinator', 'start', '--corpus', empty, '--metrics-port', '-1'], /ERR_CORPUS_EMPTY/],
    [['coordinator', 'start', '--corpus', binary, '--metrics-port', '-1'], /ERR_CORPUS_BINARY/],
    [['coordinator', 'start', '--corpus', small, '--max-tokens', '0', '--metrics-port', '-1'], /ERR_CORPUS_TOO_SMALL|ERR_BAD_CONFIG/],
    [['coordinator', 'start', '--corpus', 'http://127.0.0.1:1/x.txt', '--metrics-port', '-1'], /ERR_CORPUS_DOWNLOAD/],
    [['worker', 'join', '--coordinator', 'http://x'], /--coordinator must look like ws:\/\//],
    [['generate', '--checkpoint', path.join(dir, 'none')], /ERR_CHECKPOINT_NOT_FOUND/],
  ];
  for (const [args, want] of cases) {
    const r = run(args);
    assert.equal(r.code, 2, `${args.join(' ')} exited ${r.code}:\n${r.out}`);
    assert.match(r.out, want, args.join(' '));
    assert.doesNotMatch(r.out, /\n\s+at .+:\d+:\d+/, `stack trace for ${args.join(' ')}`);
  }
});

test('--help works on every command', () => {
  for (const args of [['coordinator', 'start', '--help'], ['worker', 'join', '--help'], ['generate', '--help'], ['export', '--help']]) {
    const r = run(args);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /--/);
  }
});

test('unreadable TLS, CA and token files exit 2 with one sentence, before anything starts', () => {
  const dir = tmpDir();
  const garbage = path.join(dir, 'garbage.pem');
  fs.writeFileSync(garbage, 'not a certificate\n');
  const emptyToken = path.join(dir, 'empty-token');
  fs.writeFileSync(emptyToken, '\n');
  const missing = path.join(dir, 'missing.pem');
  const cases: [string[], RegExp][] = [
    [['coordinator', 'start', '--tls-cert', missing, '--tls-key', missing, '--token', 't'], /cannot read --tls-cert .*missing\.pem: ENOENT \(ERR_BAD_CONFIG\)/],
    [['coordinator', 'start', '--tls-cert', garbage, '--tls-key', garbage, '--token', 't'], /do not load as a PEM certificate and its private key.*\(ERR_BAD_CONFIG\)/],
    [['coordinator', 'start', '--tls-cert', garbage, '--token', 't'], /--tls-cert and --tls-key go together/],
    [['worker', 'join', '--coordinator', 'wss://127.0.0.1:1', '--ca', missing, '--token', 't'], /cannot read --ca .*missing\.pem: ENOENT \(ERR_BAD_CONFIG\)/],
    [['worker', 'join', '--token-file', missing], /cannot read --token-file .*: ENOENT \(ERR_BAD_CONFIG\)/],
    [['worker', 'join', '--token-file', emptyToken], /--token-file .* is empty \(ERR_BAD_CONFIG\)/],
  ];
  for (const [args, want] of cases) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', cliPath, ...args], { encoding: 'utf8', env: { ...process.env, DPTRAIN_TOKEN: '' }, timeout: 60_000 });
    const out = `${r.stdout}${r.stderr}`;
    assert.equal(r.status, 2, `${args.join(' ')} exited ${r.status}:\n${out}`);
    assert.match(out, want, args.join(' '));
    assert.doesNotMatch(out, /\n\s+at .+:\d+:\d+/, `stack trace for ${args.join(' ')}`);
  }
});
