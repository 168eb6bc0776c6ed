import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { TIMEMACHINE_SHA1, loadCorpusText } from '../src/shared/data/corpus-source.js';
import { buildCorpus } from '../src/shared/data/corpus.js';
import { isDptrainError, type ErrorCode } from '../src/shared/errors.js';


const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'dptrain-source-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let tmpCount = 0;
function freshDir(): string {
  const d = path.join(tmpRoot, String(tmpCount++));
  fs.mkdirSync(d);
  return d;
}

/**
 * A stand-in for d2l's file, generated here so the test needs nothing outside the repository: the
 * download, checksum and cache paths are the real ones, with the stand-in's SHA-1 injected.
 */
const BOOK = Buffer.from('The Time Traveller (for so it will be convenient to speak of him) was expounding a recondite matter to us.\n'.repeat(300));
const BOOK_SHA1 = crypto.createHash('sha1').update(BOOK).digest('hex');
function realFile(): Buffer {
  return BOOK;
}

interface Served {
  url: string;
  requests: () => number;
  close: () => Promise<void>;
}

async function serve(handler: (res: http.ServerResponse) => void): Promise<Served> {
  let count = 0;
  const server = http.createServer((_req, res) => {
    count++;
    handler(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/timemachine.txt`,
    requests: () => count,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function serveBytes(body: Buffer): Promise<Served> {
  return serve((res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(body);
  });
}

async function closedPortUrl(): Promise<string> {
  const s = await serveBytes(Buffer.from(''));
  await s.close();
  return s.url;
}

function hasCode(code: ErrorCode) {
  return (e: unknown) => isDptrainError(e, code);
}

describe('timemachine download and cache', () => {
  it('downloads, verifies, caches, and then loads offline', async () => {
    const dataDir = path.join(freshDir(), 'nested', 'data');
    const server = await serveBytes(realFile());
    const first = await loadCorpusText('timemachine', { dataDir, timemachineUrl: server.url, timemachineSha1: BOOK_SHA1 });
    await server.close();
    assert.equal(server.requests(), 1);
    assert.equal(first.sha1, BOOK_SHA1);
    assert.match(first.source, /downloaded/);
    assert.deepEqual(fs.readdirSync(dataDir), ['timemachine.txt']);

    const second = await loadCorpusText('timemachine', { dataDir, timemachineUrl: server.url, timemachineSha1: BOOK_SHA1 });
    assert.equal(second.text, first.text);
    assert.match(second.source, /cached at/);
    // d2l preprocessing: 300 lines of "the time traveller for so it ... matter to us", 103 characters each, joined without separators.
    assert.equal(buildCorpus(second.text).totalTokens, 300 * 103);
  });

  it('rejects a download with the wrong SHA-1 and caches nothing', async () => {
    const dataDir = freshDir();
    const server = await serveBytes(Buffer.from('The Time Machine, abridged beyond recognition.\n'));
    try {
      await assert.rejects(loadCorpusText('timemachine', { dataDir, timemachineUrl: server.url }), hasCode('ERR_CORPUS_CHECKSUM'));
    } finally {
      await server.close();
    }
    assert.deepEqual(fs.readdirSync(dataDir), []);
  });

  it('replaces a cached copy whose SHA-1 is wrong, and says so', async () => {
    const dataDir = freshDir();
    const target = path.join(dataDir, 'timemachine.txt');
    fs.writeFileSync(target, 'truncated');
    const warnings: string[] = [];
    const server = await serveBytes(realFile());
    try {
      const got = await loadCorpusText('timemachine', { dataDir, timemachineUrl: server.url, timemachineSha1: BOOK_SHA1, onWarning: (m) => warnings.push(m) });
      assert.equal(got.sha1, BOOK_SHA1);
    } finally {
      await server.close();
    }
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /wrong SHA-1/);
    assert.deepEqual(fs.readFileSync(target), realFile());
  });

  it('names the file to place when the server is down', async () => {
    const dataDir = freshDir();
    const url = await closedPortUrl();
    await assert.rejects(loadCorpusText('timemachine', { dataDir, timemachineUrl: url }), (e) => {
      assert.ok(isDptrainError(e, 'ERR_CORPUS_DOWNLOAD'));
      assert.ok(e.message.includes(path.join(dataDir, 'timemachine.txt')), e.message);
      assert.ok(e.message.includes(TIMEMACHINE_SHA1));
      assert.match(e.message, /--corpus mobydick/);
      assert.match(e.message, /--data-dir/);
      return true;
    });
    assert.deepEqual(fs.readdirSync(dataDir), []);
  });

  it('treats an HTTP error status or a stalled server as a download failure', async () => {
    const notFound = await serve((res) => {
      res.writeHead(404);
      res.end('no');
    });
    const stalled = await serve(() => undefined);
    try {
      await assert.rejects(
        loadCorpusText('timemachine', { dataDir: freshDir(), timemachineUrl: notFound.url }),
        (e) => isDptrainError(e, 'ERR_CORPUS_DOWNLOAD') && /HTTP 404/.test(e.message),
      );
      await assert.rejects(
        loadCorpusText('timemachine', { dataDir: freshDir(), timemachineUrl: stalled.url, timeoutMs: 200 }),
        (e) => isDptrainError(e, 'ERR_CORPUS_DOWNLOAD') && /timed out/.test(e.message),
      );
    } finally {
      await notFound.close();
      await stalled.close();
    }
  });
});

describe('other corpus sources', () => {
  it('loads an http URL without caching it', async () => {
    const dataDir = freshDir();
    const server = await serveBytes(Buffer.from('Some text served over HTTP.\n'));
    try {
      const got = await loadCorpusText(server.url, { dataDir });
      assert.equal(got.text, 'Some text served over HTTP.\n');
      assert.match(got.source, /^url /);
    } finally {
      await server.close();
    }
    assert.deepEqual(fs.readdirSync(dataDir), []);
    await assert.rejects(loadCorpusText(await closedPortUrl(), { dataDir }), hasCode('ERR_CORPUS_DOWNLOAD'));
  });

  it('loads a local file', async () => {
    const file = path.join(freshDir(), 'book.txt');
    fs.writeFileSync(file, '\uFEFFCaf\u00e9 society.\n');
    const got = await loadCorpusText(file, { dataDir: freshDir() });
    assert.equal(got.text, 'Caf\u00e9 society.\n');
  });

  it('concatenates the .txt files of a folder in name order', async () => {
    const dir = freshDir();
    fs.writeFileSync(path.join(dir, 'b.txt'), 'second');
    fs.writeFileSync(path.join(dir, 'a.txt'), 'first');
    fs.writeFileSync(path.join(dir, 'notes.md'), 'ignored');
    fs.mkdirSync(path.join(dir, 'sub.txt'));
    const got = await loadCorpusText(dir, { dataDir: freshDir() });
    assert.equal(got.text, 'first\nsecond');
    await assert.rejects(loadCorpusText(freshDir(), { dataDir: freshDir() }), hasCode('ERR_CORPUS_NOT_FOUND'));
  });

  it('reports a missing path with the valid corpus values', async () => {
    const missing = path.join(freshDir(), 'nope.txt');
    await assert.rejects(loadCorpusText(missing, { dataDir: freshDir() }), (e) => {
      assert.ok(isDptrainError(e, 'ERR_CORPUS_NOT_FOUND'));
      assert.ok(e.message.includes(missing));
      assert.match(e.message, /timemachine/);
      assert.match(e.message, /mobydick/);
      return true;
    });
  });

  it('rejects empty and binary files', async () => {
    const dir = freshDir();
    fs.writeFileSync(path.join(dir, 'empty.txt'), ' \n\t\n');
    fs.writeFileSync(path.join(dir, 'nul.txt'), Buffer.from('text\u0000more', 'utf8'));
    fs.writeFileSync(path.join(dir, 'noise.txt'), Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 37 + 128) % 256 || 1)));
    await assert.rejects(loadCorpusText(path.join(dir, 'empty.txt'), { dataDir: dir }), hasCode('ERR_CORPUS_EMPTY'));
    await assert.rejects(loadCorpusText(path.join(dir, 'nul.txt'), { dataDir: dir }), hasCode('ERR_CORPUS_BINARY'));
    await assert.rejects(loadCorpusText(path.join(dir, 'noise.txt'), { dataDir: dir }), hasCode('ERR_CORPUS_BINARY'));
  });

  it('loads the bundled Moby Dick', async () => {
    const got = await loadCorpusText('mobydick', { dataDir: freshDir() });
    assert.match(got.text, /Call me Ishmael/);
    const c = buildCorpus(got.text);
    assert.ok(c.vocab.size > 26, `vocabulary of ${c.vocab.size}`);
    assert.ok(c.totalTokens > 1_000_000);
  });
});
