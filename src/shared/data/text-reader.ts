/**
 * Bytes to text, for every corpus source: `Reader` counts the bytes of one
 * load against --max-corpus-bytes and prints a progress line every few
 * seconds; `ByteText` checks the first bytes of a file or download (binary
 * content, UTF-16, Latin-1), decodes UTF-8 into the sink (the tokenizer, or a
 * collector of the text) and reports the byte sequences that were not UTF-8.
 */
import { DptrainError } from '../errors.js';
import type { LoadOptions } from './corpus-source.js';

/**
 * 256 MiB: a corpus read whole costs the coordinator about 6 bytes per token
 * while it loads and 4 after (Int32 ids), and every worker receives the
 * training split (1-2 bytes per token) in one message; at this size that is
 * ~1.5 GiB and 256 MB per worker, and ~3 s of reading. Far more than a
 * character-level LSTM gets through in a day on CPU; raise it for more.
 */
export const DEFAULT_MAX_CORPUS_BYTES = 256 * 1024 ** 2;
/** The first bytes of every file or download are checked for binary content and the encoding. */
export const SAMPLE_BYTES = 64 * 1024;
const PROGRESS_EVERY_MS = 2000;
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

export function warn(opts: LoadOptions, message: string): void {
  if (opts.onWarning) opts.onWarning(message);
  else process.stderr.write(`warning: ${message}\n`);
}

/** What the bytes turn into: the tokenizer, or a collector of the text. */
export interface TextSink {
  push(text: string): void;
  /** True once the sink needs no more text (--max-tokens reached). */
  readonly done: boolean;
  readonly tokens?: number;
}

/** Counts the bytes of one load against the cap and prints progress. */
export class Reader {
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
export class ByteText {
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
