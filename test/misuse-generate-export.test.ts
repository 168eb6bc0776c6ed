/**
 * `generate` and `export` as users misuse them: a prefix typed in capitals,
 * characters the model never saw, a seed past 32 bits, and every kind of bad
 * --out (a file, a missing parent, /proc, a read-only place, an export that
 * is already there). Real checkpoints made by a real run, real CLI processes.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readCheckpoint, checkCompatible } from '../src/shared/store/checkpoint.js';
import { TRAIN_KEYS } from '../src/shared/config.js';
import { buildCorpus, preparePrefix } from '../src/shared/data/corpus.js';
import { isDptrainError, type ErrorCode } from '../src/shared/errors.js';
import { prepareExportDir } from '../src/shared/model/export-tfjs.js';
import { cliPath, tmpDir } from './support/cluster.js';

const TOKEN = 'misuse-generate-token-0123456789';
const NO_STACK = /\n\s+at .+:\d+:\d+/;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function cli(args: string[], timeoutMs = 90_000): Promise<Run> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DPTRAIN_')));
  const t0 = Date.now();
  const child = spawn(process.execPath, ['--import', 'tsx', cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...env, DPTRAIN_TOKEN: TOKEN } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) =>
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - t0 });
    }),
  );
}

function assertRefused(r: Run, code: number, err: ErrorCode, what: RegExp, label: string): void {
  const out = r.stdout + r.stderr;
  assert.equal(r.code, code, `${label}: exit ${r.code}\n${out}`);
  assert.match(out, new RegExp(`error: .*\\(${err}\\)`), label);
  assert.match(out, what, label);
  assert.doesNotMatch(out, NO_STACK, `${label}: stack trace`);
}

/** Sentences of a few words with no q, x, z or digits, so the model's vocabulary is known to lack them. */
const TEXT = 'Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, I thought I would sail about a little and see the watery part of the world.\n'.repeat(40);
let ck = '';

before(async () => {
  const dir = tmpDir();
  const corpus = path.join(dir, 'corpus.txt');
  fs.writeFileSync(corpus, TEXT);
  ck = path.join(dir, 'ck');
  const r = await cli([
    'coordinator', 'start', '--corpus', corpus, '--batch-size', '4', '--num-steps', '5', '--hidden', '8', '--epochs', '1',
    '--spawn', '1', '--port', '0', '--host', '127.0.0.1', '--metrics-port', '-1', '--backend', 'cpu', '--worker-backend', 'cpu',
    '--sample-every', '0', '--log-every', '1', '--checkpoint-dir', ck,
  ]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.ok(fs.existsSync(path.join(ck, 'checkpoint.dpt')), 'the run wrote a checkpoint');
});

test('generate reads the prefix as the corpus was read: capitals lower-cased, no <unk>, no warning', async () => {
  const r = await cli(['generate', '--checkpoint', ck, '--prefix', 'Call Me Ishmael', '--length', '20', '--backend', 'cpu']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^call me ishmael/);
  assert.doesNotMatch(r.stdout, /<unk>/);
  assert.doesNotMatch(r.stderr, /warning:/, 'no warning for a prefix the model can read');
});

test('generate warns about what the model cannot read: dropped letters and digits, characters outside its vocabulary', async () => {
  const r = await cli(['generate', '--checkpoint', ck, '--prefix', 'Café 42 Quiz', '--length', '5', '--backend', 'cpu']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stderr, /^warning: d2l preprocessing keeps only the letters A-Z, so the prefix loses "é", "4", "2" and reads "caf quiz"\.$/m);
  assert.match(r.stderr, /^warning: the prefix has characters the model never saw in its corpus \("q", "z"\); they are read as <unk>\.$/m);
  assert.match(r.stdout, /^caf <unk>ui<unk>/);
  assert.doesNotMatch(r.stdout + r.stderr, NO_STACK);

  // The same rule in-process, for the mode that keeps text as is.
  const none = buildCorpus('Abc abc', { preprocess: 'none' });
  assert.deepEqual(preparePrefix('Ab\r\nZ', 'none', none.vocab), { text: 'Ab\nZ', warnings: ['the prefix has characters the model never saw in its corpus ("\\n", "Z"); they are read as <unk>.'] });
});

test('generate --seed beyond 32 bits is refused instead of wrapping to another seed', async () => {
  assertRefused(
    await cli(['generate', '--checkpoint', ck, '--seed', '4294967296', '--temperature', '1']),
    2,
    'ERR_BAD_CONFIG',
    /--seed must be at most 4294967295, got 4294967296/,
    'seed 2^32',
  );
  const top = await cli(['generate', '--checkpoint', ck, '--seed', '4294967295', '--temperature', '1', '--length', '5', '--backend', 'cpu']);
  assert.equal(top.code, 0, top.stdout + top.stderr);
});

test('a checkpoint remembers its preprocessing: a resume with another --preprocess is a mismatch', async () => {
  const data = await readCheckpoint(ck);
  assert.equal(data.config.preprocess, 'd2l');
  assert.equal(data.config.maxTokens, 0, 'a corpus of your own is used whole, and the checkpoint says so');
  const expect = { vocab: data.vocab, corpusSha1: data.corpusSha1, config: { ...data.config, preprocess: 'none' }, paramCount: data.params.length };
  assert.throws(
    () => checkCompatible(data, expect, TRAIN_KEYS),
    (e) => isDptrainError(e, 'ERR_CHECKPOINT_MISMATCH') && /preprocess is "d2l" in the checkpoint but "none" now/.test(e.message),
  );
});

test('export --out: a file, a missing parent, /proc/foo/bar and /proc/foo are one sentence and exit 2, at once', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'a-file');
  fs.writeFileSync(file, 'not a directory');
  for (const [out, err, what] of [
    [file, 'ERR_EXPORT_PATH', /--out .*a-file is a file, not a directory/],
    [path.join(dir, 'no', 'such', 'out'), 'ERR_EXPORT_PATH', /--out .* cannot be created: its parent .*no[/\\]such does not exist \(create it first\)/],
    ['/proc/dptrain-export/model', 'ERR_EXPORT_PATH', /cannot be created: its parent \/proc\/dptrain-export does not exist/],
    ['/proc/dptrain-export', 'ERR_EXPORT_PATH', /--out \/proc\/dptrain-export cannot be created \(ENOENT\)/],
    [path.join(file, 'sub'), 'ERR_EXPORT_PATH', /a part of its path is a file/],
  ] as const) {
    const r = await cli(['export', '--checkpoint', ck, '--out', out], 60_000);
    assertRefused(r, 2, err, what, out);
  }
  assert.equal(fs.readFileSync(file, 'utf8'), 'not a directory');
  assert.ok(!fs.existsSync(path.join(dir, 'no')), 'no parent was created');
});

test('export does not overwrite an export unless --overwrite; a missing --out is created', async () => {
  const out = path.join(tmpDir(), 'model');
  const first = await cli(['export', '--checkpoint', ck, '--out', out]);
  assert.equal(first.code, 0, first.stdout + first.stderr);
  const json = path.join(out, 'model.json');
  fs.writeFileSync(json, '{"mine": true}');
  assertRefused(await cli(['export', '--checkpoint', ck, '--out', out]), 2, 'ERR_EXPORT_EXISTS', /already holds model\.json and weights\.bin; pass --overwrite to replace it/, 'existing model.json');
  assert.equal(fs.readFileSync(json, 'utf8'), '{"mine": true}', 'model.json untouched');
  const again = await cli(['export', '--checkpoint', ck, '--out', out, '--overwrite']);
  assert.equal(again.code, 0, again.stdout + again.stderr);
  assert.equal(JSON.parse(fs.readFileSync(json, 'utf8')).format, 'layers-model');
});

test('export --out in a place nobody may write, or a broken symbolic link: one sentence, nothing hangs', async () => {
  const dir = tmpDir();
  const dangling = path.join(dir, 'dangling');
  fs.symlinkSync(path.join(dir, 'gone'), dangling);
  const cases: [string, RegExp][] = [[dangling, /cannot be created \(EEXIST: a broken symbolic link\?\)/]];
  // Root may write anywhere a mode bit forbids; /sys refuses even root.
  if (fs.existsSync('/sys/kernel')) cases.push(['/sys/dptrain-export', /cannot be created \((EACCES|EPERM|EROFS): the parent is not writable\)/]);
  if (os.userInfo().uid !== 0) {
    const ro = path.join(dir, 'read-only');
    fs.mkdirSync(ro, { mode: 0o555 });
    cases.push([path.join(ro, 'out'), /cannot be created \((EACCES|EPERM): the parent is not writable\)/]);
  }
  for (const [out, what] of cases) {
    await assert.rejects(prepareExportDir(out), (e) => {
      assert.ok(isDptrainError(e, 'ERR_EXPORT_PATH'), `${out}: ${String(e)}`);
      assert.match(e.message, what, out);
      return true;
    });
  }
});
