/**
 * Corpora as users meet them: a corpus of their own is used whole, huge and
 * endless inputs end quickly with one sentence, the first bytes decide
 * "binary" or "not UTF-8", and text outside A-Z is reported rather than
 * dropped in silence. Real files, devices, HTTP servers and CLI processes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { loadCorpus, SAMPLE_BYTES } from '../src/shared/data/corpus-source.js';
import { buildCorpus, preprocessLines, Tokenizer } from '../src/shared/data/corpus.js';
import { isDptrainError, type ErrorCode } from '../src/shared/errors.js';
import { cliPath, repoRoot, tmpDir } from './support/cluster.js';

const TOKEN = 'misuse-corpus-token-0123456789';
const NO_STACK = /\n\s+at .+:\d+:\d+/;

interface Run {
  code: number | null;
  out: string;
  ms: number;
}

/** `dptrain ARGS` as a real process; `until` (matched against its output) sends SIGTERM once seen. */
function cli(args: string[], o: { until?: RegExp; timeoutMs?: number } = {}): Promise<Run> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DPTRAIN_')));
  const t0 = Date.now();
  const child = spawn(process.execPath, ['--import', 'tsx', cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...env, DPTRAIN_TOKEN: TOKEN } });
  let out = '';
  let stopped = false;
  const onData = (d: Buffer) => {
    out += d;
    // Once: a second signal is the user insisting, which ends the process at once.
    if (o.until && !stopped && o.until.test(out)) {
      stopped = true;
      child.kill('SIGTERM');
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 60_000);
  return new Promise((resolve) =>
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, ms: Date.now() - t0 });
    }),
  );
}

const START = ['coordinator', 'start', '--port', '0', '--host', '127.0.0.1', '--metrics-port', '-1', '--batch-size', '4', '--num-steps', '5', '--hidden', '8', '--backend', 'cpu'];

function assertOneSentence(r: Run, code: number, err: ErrorCode, what: RegExp, label: string): void {
  assert.equal(r.code, code, `${label}: exit ${r.code}\n${r.out}`);
  assert.match(r.out, new RegExp(`error: .*\\(${err}\\)`), label);
  assert.match(r.out, what, label);
  assert.doesNotMatch(r.out, NO_STACK, `${label}: stack trace`);
  assert.equal(r.out.split('\n').filter((l) => l.startsWith('error:')).length, 1, `${label}: one error line`);
}

/** English-like prose of about `chars` characters, deterministic. */
function prose(chars: number, seed = 1): string {
  const words = 'the whale ship sea captain call me ishmael some years ago never mind how long precisely having little or no money in my purse'.split(' ');
  let x = seed;
  const out: string[] = [];
  let n = 0;
  while (n < chars) {
    x = (x * 1103515245 + 12345) >>> 0;
    const w = words[x % words.length];
    out.push(w);
    n += w.length + 1;
    if (x % 13 === 0) {
      out.push('.\n');
      n += 2;
    }
  }
  return out.join(' ').slice(0, chars);
}

async function server(handler: http.RequestListener): Promise<{ url: string; close: () => Promise<void>; closedEarly: () => number }> {
  let closedEarly = 0;
  const s = http.createServer((req, res) => {
    res.on('close', () => {
      if (!res.writableFinished) closedEarly++;
    });
    handler(req, res);
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(s.address() as AddressInfo).port}/corpus.txt`,
    closedEarly: () => closedEarly,
    close: () =>
      new Promise<void>((r) => {
        s.closeAllConnections();
        s.close(() => r());
      }),
  };
}

/** Writes text forever (or zeros), as fast as the client reads. */
function endless(chunk: Buffer): http.RequestListener {
  return (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    const pump = () => {
      while (!res.destroyed && res.write(chunk));
      if (!res.destroyed) res.once('drain', pump);
    };
    pump();
  };
}

test('a corpus of your own is used whole by default; --max-tokens cuts it and the start-up line says so (CLI)', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'notes.txt');
  const text = prose(150_000);
  fs.writeFileSync(file, text);
  const all = buildCorpus(text, { valFraction: 0 }).train.length;

  const whole = await cli([...START, '--corpus', file], { until: /listening on/ });
  assert.equal(whole.code, 0, whole.out);
  const m = /corpus: file .*notes\.txt: (\d+) training \+ (\d+) validation tokens, vocabulary (\d+)(.*)/.exec(whole.out);
  assert.ok(m, whole.out);
  assert.equal(Number(m[1]) + Number(m[2]), all, 'every token of the file is used');
  assert.equal(Number(m[2]), Math.floor(all * 0.1));
  assert.doesNotMatch(m[4], /using the first/);

  const cut = await cli([...START, '--corpus', file, '--max-tokens', '5000'], { until: /listening on/ });
  assert.equal(cut.code, 0, cut.out);
  assert.match(cut.out, /corpus: file .*: 4500 training \+ 500 validation tokens, vocabulary \d+; using the first 5000 tokens \(--max-tokens; /);
});

test('/dev/zero, /dev/urandom and a 550 MB file end at once with one sentence and exit 2 (CLI)', async () => {
  const dir = tmpDir();
  const huge = path.join(dir, 'huge.txt');
  // Sparse: 550 MB on paper, nothing on disk; refused from its size alone, before a byte is read.
  fs.writeFileSync(huge, prose(2 * 1024 * 1024));
  fs.truncateSync(huge, 550_000_000);
  for (const [corpus, err, what] of [
    ['/dev/zero', 'ERR_CORPUS_BINARY', /looks like a binary file/],
    ['/dev/urandom', 'ERR_CORPUS_BINARY', /looks like a binary file/],
    [huge, 'ERR_CORPUS_TOO_LARGE', /is 525 MiB, more than --max-corpus-bytes allows \(256 MiB\); use --max-tokens N/],
  ] as const) {
    const r = await cli([...START, '--corpus', corpus]);
    assertOneSentence(r, 2, err, what, corpus);
  }
  // With --max-tokens only the bytes read count: the same file trains on its beginning.
  const head = await cli([...START, '--corpus', huge, '--max-tokens', '5000'], { until: /listening on/ });
  assert.equal(head.code, 0, head.out);
  assert.match(head.out, /using the first 5000 tokens \(--max-tokens; 1\.0 MiB read, the rest left out\)/);
});

test('reading /dev/zero, /dev/urandom and an endless HTTP body stays small in memory', async () => {
  const text = await server(endless(Buffer.from(prose(64 * 1024))));
  const zeros = await server(endless(Buffer.alloc(64 * 1024)));
  try {
    const cases: [string, string, ErrorCode][] = [
      ['/dev/zero', '', 'ERR_CORPUS_BINARY'],
      ['/dev/urandom', '', 'ERR_CORPUS_BINARY'],
      [text.url, ', maxBytes: 16 * 1024 * 1024', 'ERR_CORPUS_TOO_LARGE'],
      [zeros.url, '', 'ERR_CORPUS_BINARY'],
    ];
    for (const [spec, extra, code] of cases) {
      // A child process, so its peak RSS is the loader's alone.
      const script =
        `import { loadCorpus } from ${JSON.stringify(path.join(repoRoot, 'src/shared/data/corpus-source.ts'))};` +
        `try { await loadCorpus(${JSON.stringify(spec)}, { dataDir: '.', onProgress: () => {}${extra} }); console.log('loaded'); }` +
        `catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message, rssMiB: process.resourceUsage().maxRSS / 1024 })); }`;
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      const t0 = Date.now();
      await new Promise((r) => child.on('exit', r));
      const got = JSON.parse(out.trim().split('\n').pop()!) as { code: string; message: string; rssMiB: number };
      assert.equal(got.code, code, `${spec}: ${out}`);
      assert.ok(got.rssMiB < 300, `${spec}: peak RSS ${got.rssMiB.toFixed(0)} MiB`);
      assert.ok(Date.now() - t0 < 60_000, `${spec} took ${Date.now() - t0} ms`);
    }
  } finally {
    await text.close();
    await zeros.close();
  }
});

test('an endless HTTP body: the cap ends it with one sentence (CLI); with --max-tokens reading stops and the connection is closed', async () => {
  const s = await server(endless(Buffer.from(prose(16 * 1024))));
  try {
    const r = await cli([...START, '--corpus', s.url, '--max-corpus-bytes', String(4 * 1024 * 1024)]);
    assertOneSentence(r, 2, 'ERR_CORPUS_TOO_LARGE', /downloaded from http:.* more than --max-corpus-bytes allows \(4\.0 MiB\)/, 'endless body');

    const a = await loadCorpus(s.url, { dataDir: '.', maxTokens: 20_000, valFraction: 0.1, onProgress: () => {} });
    assert.equal(a.corpus.train.length + a.corpus.validation.length, 20_000);
    assert.ok(a.stoppedEarly);
    assert.ok(a.bytesRead < 1024 * 1024, `read ${a.bytesRead} bytes`);
    // The same tokens whatever the chunking of the body: the SHA-1 covers exactly the text used.
    const b = await loadCorpus(s.url, { dataDir: '.', maxTokens: 20_000, valFraction: 0.1, onProgress: () => {} });
    assert.equal(b.sha1, a.sha1);
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(s.closedEarly() >= 2, 'the client hung up on the endless body');
  } finally {
    await s.close();
  }
});

test('the first bytes decide: binary, UTF-16, or Latin-1 ("not UTF-8"); a stray invalid byte is a warning (CLI)', async () => {
  const dir = tmpDir();
  const latin1 = path.join(dir, 'latin1.txt');
  fs.writeFileSync(latin1, Buffer.from('Çà et là, où était-il ? Père Noël, déjà éteint, préféré à l\'été.\n'.repeat(200), 'latin1'));
  const utf16 = path.join(dir, 'utf16.txt');
  fs.writeFileSync(utf16, Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('Call me Ishmael.\n'.repeat(100), 'utf16le')]));
  const exe = path.join(dir, 'program.txt');
  const head = Buffer.alloc(256 * 1024);
  const fd = fs.openSync(process.execPath, 'r');
  fs.readSync(fd, head, 0, head.length, 0);
  fs.closeSync(fd);
  fs.writeFileSync(exe, head);
  for (const [file, err, what] of [
    [latin1, 'ERR_CORPUS_ENCODING', /is not UTF-8 text: .* are not valid UTF-8 \(Latin-1 or Windows-1252\?\); convert it/],
    [utf16, 'ERR_CORPUS_ENCODING', /is UTF-16 text, not UTF-8/],
    [exe, 'ERR_CORPUS_BINARY', /looks like a binary file, not text/],
  ] as const) {
    assertOneSentence(await cli([...START, '--corpus', file]), 2, err, what, path.basename(file));
  }

  const stray = path.join(dir, 'stray.txt');
  fs.writeFileSync(stray, Buffer.concat([Buffer.from(prose(20_000)), Buffer.from([0xe9]), Buffer.from(prose(20_000, 2))]));
  const warnings: string[] = [];
  const got = await loadCorpus(stray, { dataDir: dir, onWarning: (w) => warnings.push(w) });
  assert.ok(got.corpus.train.length > 30_000);
  assert.equal(warnings.length, 1, warnings.join('\n'));
  assert.match(warnings[0], /1 byte sequence in .*stray\.txt is not valid UTF-8 and was read as U\+FFFD/);
});

test('text outside A-Z: a notable share dropped is said, an all-Chinese file says why it is empty, --preprocess none keeps it (CLI)', async () => {
  const dir = tmpDir();
  const multi = path.join(dir, 'multilingual.txt');
  fs.writeFileSync(multi, `${prose(20_000)}\n${'Größe café naïve Ærøskøbing Straße déjà vu. '.repeat(300)}`);
  const r = await cli([...START, '--corpus', multi], { until: /listening on/ });
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /corpus: d2l preprocessing keeps only the letters A-Z \(lower-cased\): \d+% of the corpus's letters \([\d,]+ of [\d,]+, e\.g\. ö ß é ï Æ ø\) were dropped; --preprocess none keeps every character\./);

  const chinese = path.join(dir, 'chinese.txt');
  fs.writeFileSync(chinese, '我们的目标是星辰大海。天下大事，必作于细。\n'.repeat(400));
  assertOneSentence(
    await cli([...START, '--corpus', chinese]),
    2,
    'ERR_CORPUS_EMPTY',
    /has no letters A-Z: d2l preprocessing keeps only A-Z, which drops all [\d,]+ of its letters \(e\.g\. 我 们 的 目 标 是\); use --preprocess none/,
    'all-Chinese',
  );
  const none = await cli([...START, '--corpus', chinese, '--preprocess', 'none'], { until: /listening on/ });
  assert.equal(none.code, 0, none.out);
  assert.match(none.out, /corpus: file .*chinese\.txt: \d+ training \+ \d+ validation tokens, vocabulary 21; text as is \(--preprocess none\)/);
});

test('--preprocess none keeps case, punctuation and astral characters; line ends become \\n', () => {
  const c = buildCorpus('Ab,\r\nc\rD😀\n', { preprocess: 'none', valFraction: 0 });
  assert.equal(c.vocab.decode(c.train), 'Ab,\nc\nD😀\n');
  assert.ok(c.vocab.idxToToken.includes('😀'));
  assert.ok(c.vocab.idxToToken.includes('A') && c.vocab.idxToToken.includes('a') === false);
});

test('the streaming tokenizer gives the same tokens, vocabulary and SHA-1 however the text is cut into chunks', () => {
  const text = `Hello,\r\nWorld!  café\rX--y 😀 naïve\n\n${prose(5000)} Ζεύς 12 ab\r`;
  const reference = preprocessLines(text).join('');
  for (const mode of ['d2l', 'none'] as const) {
    const whole = buildCorpus(text, { preprocess: mode, valFraction: 0 });
    if (mode === 'd2l') assert.equal(whole.vocab.decode(whole.train), reference);
    const t0 = new Tokenizer({ preprocess: mode });
    t0.push(text);
    const sha = t0.finish({ maxTokens: 0, valFraction: 0, what: '' }).sha1;
    for (const size of [1, 2, 3, 7, 64]) {
      const t = new Tokenizer({ preprocess: mode });
      for (let i = 0; i < text.length; i += size) t.push(text.slice(i, i + size));
      const r = t.finish({ maxTokens: 0, valFraction: 0, what: '' });
      assert.deepEqual(r.corpus.vocab.idxToToken, whole.vocab.idxToToken, `${mode} by ${size}`);
      assert.deepEqual([...r.corpus.train], [...whole.train], `${mode} by ${size}`);
      assert.equal(r.sha1, sha, `${mode} by ${size}`);
    }
    // Stopping at N tokens: the same N tokens and the same SHA-1 whatever the chunking.
    const shas = new Set<string>();
    for (const size of [1, 5, 100, text.length]) {
      const t = new Tokenizer({ preprocess: mode, stopAt: 1000 });
      for (let i = 0; i < text.length && !t.done; i += size) t.push(text.slice(i, i + size));
      assert.ok(t.done);
      const r = t.finish({ maxTokens: 1000, valFraction: 0, what: '' });
      assert.equal(r.corpus.train.length, 1000);
      assert.equal(r.corpus.vocab.decode(r.corpus.train), whole.vocab.decode(whole.train.subarray(0, 1000)));
      shas.add(r.sha1);
    }
    assert.equal(shas.size, 1, `${mode}: one SHA-1 for the cut`);
  }
});

test('a long load prints progress lines; a folder counts against the cap as a whole', async () => {
  const dir = tmpDir();
  const big = path.join(dir, 'big.txt');
  const block = Buffer.from(prose(1024 * 1024));
  const fd = fs.openSync(big, 'w');
  for (let i = 0; i < 6; i++) fs.writeSync(fd, block);
  fs.closeSync(fd);
  const lines: string[] = [];
  const got = await loadCorpus(big, { dataDir: dir, progressEveryMs: 0, onProgress: (l) => lines.push(l) });
  assert.ok(got.corpus.train.length > 5_000_000);
  assert.ok(lines.length >= 5, lines.join('\n'));
  assert.match(lines[0], /^corpus: read 1\.0 MiB of 6\.0 MiB \(16%\) of .*big\.txt, [\d,]+ tokens in \d+ s$/);

  const folder = path.join(dir, 'folder');
  fs.mkdirSync(folder);
  for (const k of [1, 2, 3]) fs.writeFileSync(path.join(folder, `part${k}.txt`), block);
  await assert.rejects(loadCorpus(folder, { dataDir: dir, maxBytes: 2.5 * 1024 * 1024 }), (e) => {
    assert.ok(isDptrainError(e, 'ERR_CORPUS_TOO_LARGE'), String(e));
    assert.match(e.message, /The corpus folder .* is 3\.0 MiB, more than --max-corpus-bytes allows \(2\.5 MiB\)/);
    return true;
  });
  // A file past the first sample bytes is still checked for NUL bytes as it streams.
  const late = path.join(dir, 'late-nul.txt');
  fs.writeFileSync(late, Buffer.concat([Buffer.from(prose(SAMPLE_BYTES * 3)), Buffer.from([0]), Buffer.from('tail')]));
  await assert.rejects(loadCorpus(late, { dataDir: dir }), (e) => isDptrainError(e, 'ERR_CORPUS_BINARY') && /NUL byte at offset 196,608/.test(e.message));
});

test('timemachine keeps d2l: read whole (vocabulary from the whole book), then cut to --max-tokens; a cache dir under /proc fails once, not forever', async () => {
  // A stand-in book served locally with its digest injected: z and q only occur after the first 10,000 tokens.
  const book = `${prose(40_000)}\nzzz quiz zoo\n`;
  const sha1 = createHash('sha1').update(book).digest('hex');
  const s = await server((_req, res) => res.end(book));
  try {
    const warnings: string[] = [];
    for (const dataDir of ['/proc/dptrain-data/cache', '/proc/dptrain-data']) {
      const t0 = Date.now();
      const got = await loadCorpus('timemachine', { dataDir, timemachineUrl: s.url, timemachineSha1: sha1, maxTokens: 10_000, onWarning: (w) => warnings.push(w) });
      assert.ok(Date.now() - t0 < 10_000);
      assert.equal(got.corpus.train.length + got.corpus.validation.length, 10_000);
      assert.ok(!got.stoppedEarly);
      assert.ok(got.corpus.vocab.idxToToken.includes('z') && got.corpus.vocab.idxToToken.includes('q'), 'vocabulary of the whole book, as d2l');
      assert.match(got.summary, /^timemachine \(downloaded from .*, not cached\): 9000 training \+ 1000 validation tokens, vocabulary \d+; using the first 10000 of \d+ tokens \(--max-tokens; 0 uses them all\)$/);
      assert.equal(got.sha1, sha1);
    }
    assert.equal(warnings.length, 2);
    for (const w of warnings) assert.match(w, /Could not cache The Time Machine at \/proc\/dptrain-data.* \(ENOENT\)/);
    // Any other corpus stops reading at --max-tokens, so its vocabulary is that of the tokens used.
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'book.txt'), book);
    const file = await loadCorpus(path.join(dir, 'book.txt'), { dataDir: dir, maxTokens: 10_000 });
    assert.ok(file.stoppedEarly && !file.corpus.vocab.idxToToken.includes('z'));
  } finally {
    await s.close();
  }
});
