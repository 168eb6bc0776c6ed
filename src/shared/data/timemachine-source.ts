/**
 * `--corpus timemachine`: d2l's file, checked against its SHA-1, cached in the
 * data dir (written atomically: workers on one host may download it at once)
 * and downloaded again when the cached copy is wrong.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { DptrainError } from '../errors.js';
import { mkdirp } from '../mkdirp.js';
import type { LoadOptions } from './corpus-source.js';
import { ByteText, formatBytes, warn, type Reader } from './text-reader.js';
import { BodyTooLarge, DEFAULT_TIMEOUT_MS, FetchFailure, streamUrl } from './url-source.js';

export const TIMEMACHINE_URL = 'http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt';
export const TIMEMACHINE_SHA1 = '090b5e7e70c295757f55df93cb0a180b9691891a';
/** The real file is 178,978 bytes; anything far larger is not it. */
const TIMEMACHINE_MAX_BYTES = 16 * 1024 ** 2;

function sha1Hex(data: Uint8Array | string): string {
  return createHash('sha1').update(data).digest('hex');
}

export async function loadTimeMachine(opts: LoadOptions, reader: Reader): Promise<{ source: string; what: string }> {
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
