import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  CHECKPOINT_FILE,
  CHECKPOINT_FORMAT,
  CHECKPOINT_PREV_FILE,
  checkCompatible,
  readCheckpoint,
  writeCheckpoint,
  type CheckpointData,
} from '../src/shared/store/checkpoint.js';
import { isDptrainError, type ErrorCode } from '../src/shared/errors.js';
import { paramCount, type ModelDims } from '../src/shared/model/char-lstm/params.js';
import { Rng } from '../src/shared/data/rng.js';

const dims: ModelDims = { vocabSize: 6, hidden: 4 };
const vocab = ['a', 'b', 'c', ' ', '\n', 'é'];

function sample(step = 7, seed = 1): CheckpointData {
  const rng = new Rng(seed);
  const n = paramCount(dims);
  const params = new Float32Array(n).map(() => rng.normal());
  return {
    format: CHECKPOINT_FORMAT,
    createdAt: new Date(Date.UTC(2024, 0, 2, 3, 4, 5)).toISOString(),
    step,
    epoch: 1,
    batchIndex: 3,
    epochRngState: [1, 2, 3, 0xffffffff],
    rngState: [5, 6, 7, 8],
    params,
    optimizer: {
      name: 'adam',
      state: [
        { name: 'm', values: new Float32Array(n).map(() => rng.normal() * 1e-3), shape: [n] },
        { name: 'v', values: new Float32Array(n).map(() => rng.next() * 1e-6), shape: [n] },
        { name: 'scale', values: Float32Array.of(0.5, -1.25), shape: [1, 2] },
      ],
    },
    vocab,
    corpusSha1: 'da39a3ee5e6b4b0d3255bfef95601890afd80709',
    config: { hidden: dims.hidden, batchSize: 32, numSteps: 35, optimizer: 'adam', lr: 0.002, clip: null, nested: { a: [1, 2] } },
    history: [
      { step: 5, epoch: 0, trainPerplexity: 12.5 },
      { step: 7, epoch: 1, trainPerplexity: 9.25, validationPerplexity: 10.5, tokensPerSecond: 1234.5 },
    ],
  };
}

const made: string[] = [];
after(() => Promise.all(made.map((d) => fs.rm(d, { recursive: true, force: true }))));

async function tempDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'dptrain-ck-'));
  made.push(dir);
  return dir;
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, pattern?: RegExp): Promise<Error> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(isDptrainError(caught, code), `expected ${code}, got ${caught instanceof Error ? `${(caught as { code?: string }).code}: ${caught.message}` : String(caught)}`);
  if (pattern) assert.match(caught.message, pattern);
  return caught;
}

test('round trip keeps every field, typed arrays included', async () => {
  const dir = await tempDir();
  const data = sample();
  const file = await writeCheckpoint(dir, data);
  assert.equal(file, path.join(dir, CHECKPOINT_FILE));
  const back = await readCheckpoint(dir);
  assert.deepStrictEqual(back, data);
  assert.ok(back.params instanceof Float32Array);
  assert.equal(back.params.byteOffset, 0);

  const noHistory = { ...sample(), history: undefined };
  delete noHistory.history;
  await writeCheckpoint(dir, noHistory);
  assert.deepStrictEqual(await readCheckpoint(dir), noHistory);
});

test('atomic write leaves no temp files and a second write keeps .prev', async () => {
  const dir = path.join(await tempDir(), 'nested', 'ck');
  await writeCheckpoint(dir, sample(1));
  assert.deepStrictEqual(await fs.readdir(dir), [CHECKPOINT_FILE]);
  await writeCheckpoint(dir, sample(2));
  assert.deepStrictEqual((await fs.readdir(dir)).sort(), [CHECKPOINT_FILE, CHECKPOINT_PREV_FILE].sort());
  assert.equal((await readCheckpoint(dir)).step, 2);

  // With the main file gone (a crash between the two renames), the reader falls back to .prev.
  await fs.rm(path.join(dir, CHECKPOINT_FILE));
  const logs: string[] = [];
  const back = await readCheckpoint(dir, { log: (m) => logs.push(m) });
  assert.equal(back.step, 1);
  assert.equal(logs.length, 1);
});

test('a flipped byte anywhere or a truncation is refused as corrupt', async () => {
  const dir = await tempDir();
  await writeCheckpoint(dir, sample());
  const file = path.join(dir, CHECKPOINT_FILE);
  const good = await fs.readFile(file);
  for (const at of [2, 5, 9, Math.floor(good.length / 2), good.length - 1]) {
    const bad = Buffer.from(good);
    bad[at] ^= 0x10;
    await fs.writeFile(file, bad);
    await rejectsWith(readCheckpoint(dir), 'ERR_CHECKPOINT_CORRUPT', /corrupt/);
  }
  for (const len of [0, 10, good.length - 1, Math.floor(good.length / 2)]) {
    await fs.writeFile(file, good.subarray(0, len));
    const e = await rejectsWith(readCheckpoint(dir), 'ERR_CHECKPOINT_CORRUPT', /truncated/);
    assert.ok(e.message.includes(file), e.message);
    assert.match(e.message, /no checkpoint\.prev\.dpt/);
  }

  // Corrupt main with a good .prev: still refused, and the message points at .prev.
  await fs.writeFile(path.join(dir, CHECKPOINT_PREV_FILE), good);
  const e = await rejectsWith(readCheckpoint(dir), 'ERR_CHECKPOINT_CORRUPT');
  assert.ok(e.message.includes(path.join(dir, CHECKPOINT_PREV_FILE)), e.message);
});

test('missing directory or file is ERR_CHECKPOINT_NOT_FOUND', async () => {
  const dir = await tempDir();
  await rejectsWith(readCheckpoint(dir), 'ERR_CHECKPOINT_NOT_FOUND', /no checkpoint\.dpt/);
  await rejectsWith(readCheckpoint(path.join(dir, 'absent')), 'ERR_CHECKPOINT_NOT_FOUND', /does not exist/);
});

test('checkCompatible names each differing item', () => {
  const ck = sample();
  const keys = ['hidden', 'batchSize', 'numSteps', 'optimizer'];
  const expect = { vocab: [...vocab], corpusSha1: ck.corpusSha1, config: { ...ck.config }, paramCount: paramCount(dims) };
  checkCompatible(ck, expect, keys);

  const mismatch = (change: Partial<typeof expect>, pattern: RegExp) => {
    assert.throws(
      () => checkCompatible(ck, { ...expect, ...change }, keys),
      (e: unknown) => isDptrainError(e, 'ERR_CHECKPOINT_MISMATCH') && pattern.test(e.message),
    );
  };
  mismatch({ vocab: ['a', 'b', 'c', ' ', '\n', 'x'] }, /vocab differs at index 5/);
  mismatch({ vocab: ['a', 'b'] }, /vocab has 6 tokens in the checkpoint but 2 now/);
  mismatch({ corpusSha1: 'ffff' }, /corpus SHA-1 is da39\w+ in the checkpoint but ffff now/);
  mismatch({ config: { ...ck.config, hidden: 128 }, paramCount: paramCount({ vocabSize: 6, hidden: 128 }) }, /hidden is 4 in the checkpoint but 128 now/);
  mismatch({ config: { ...ck.config, optimizer: 'sgd' } }, /optimizer is "adam" in the checkpoint but "sgd" now/);
  mismatch({ paramCount: 3 }, /parameter count/);
  // Keys outside the list may differ.
  checkCompatible(ck, { ...expect, config: { ...ck.config, lr: 1 } }, keys);
  // Several differences are all listed.
  mismatch({ corpusSha1: 'ffff', config: { ...ck.config, batchSize: 8, numSteps: 10 } }, /corpus.*batchSize is 32 .* 8 now.*numSteps is 35 .* 10 now/);
});

test('write errors are ERR_CHECKPOINT_WRITE and keep the previous checkpoint whole', async () => {
  const root = await tempDir();
  // A regular file where a directory should be: mkdir fails even as root.
  const blocker = path.join(root, 'blocker');
  await fs.writeFile(blocker, 'x');
  await rejectsWith(writeCheckpoint(path.join(blocker, 'ck'), sample()), 'ERR_CHECKPOINT_WRITE', new RegExp(`${path.join(blocker, 'ck')}.*(ENOTDIR|EEXIST)`));

  // procfs refuses new directories with ENOENT, which must fail rather than hang.
  if (existsSync('/proc/self')) {
    await rejectsWith(writeCheckpoint('/proc/self/dptrain-ck', sample()), 'ERR_CHECKPOINT_WRITE', /\/proc\/self\/dptrain-ck/);
  }

  const dir = path.join(root, 'ck');
  await writeCheckpoint(dir, sample(1));
  const tmp = path.join(dir, `.${CHECKPOINT_FILE}.tmp-${process.pid}`);

  // A directory in the temp file's place: opening it for writing fails.
  await fs.mkdir(tmp);
  await rejectsWith(writeCheckpoint(dir, sample(2)), 'ERR_CHECKPOINT_WRITE', /EISDIR/);
  await fs.rmdir(tmp);
  assert.equal((await readCheckpoint(dir)).step, 1);

  // A full disk: the temp file is a link to /dev/full, so the write itself fails with ENOSPC.
  if (existsSync('/dev/full')) {
    await fs.symlink('/dev/full', tmp);
    await rejectsWith(writeCheckpoint(dir, sample(3)), 'ERR_CHECKPOINT_WRITE', /no space left on device \(ENOSPC\)/);
    assert.ok(!existsSync(tmp) && !(await fs.lstat(tmp).catch(() => null)), 'temp file removed');
  }
  assert.deepStrictEqual(await fs.readdir(dir), [CHECKPOINT_FILE]);
  assert.deepStrictEqual(await readCheckpoint(dir), sample(1));
});

test('invalid data is refused before anything is written', async () => {
  const dir = await tempDir();
  await writeCheckpoint(dir, sample(1));
  const nan = sample(2);
  nan.params[3] = NaN;
  await rejectsWith(writeCheckpoint(dir, nan), 'ERR_CHECKPOINT_WRITE', /params\[3\] is NaN/);
  const short = { ...sample(2), params: new Float32Array(5) };
  await rejectsWith(writeCheckpoint(dir, short), 'ERR_CHECKPOINT_WRITE', /need \d+/);
  assert.deepStrictEqual(await fs.readdir(dir), [CHECKPOINT_FILE]);
  assert.equal((await readCheckpoint(dir)).step, 1);
});

test('a checkpoint written before --preprocess existed resumes as the d2l preprocessing it ran with', async () => {
  const { checkCompatible } = await import('../src/shared/store/checkpoint.js');
  const ck = { vocab: ['<unk>', ' ', 'a'], corpusSha1: 'x', config: { hidden: 4 }, params: new Float32Array(3) } as unknown as Parameters<typeof checkCompatible>[0];
  const expect = (preprocess: string) => ({ vocab: ['<unk>', ' ', 'a'], corpusSha1: 'x', config: { hidden: 4, preprocess }, paramCount: 3 });
  checkCompatible(ck, expect('d2l'), ['hidden', 'preprocess']);
  assert.throws(() => checkCompatible(ck, expect('none'), ['hidden', 'preprocess']), /preprocess is "d2l" in the checkpoint but "none" now/);
});
