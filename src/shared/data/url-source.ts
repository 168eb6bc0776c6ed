/**
 * `--corpus URL`: the body streamed into the tokenizer as it arrives (reading
 * stops at --max-tokens), with a timeout on silence rather than on the whole
 * download, and network failures named in one sentence.
 */
import { DptrainError } from '../errors.js';
import type { LoadOptions } from './corpus-source.js';
import { ByteText, warn, type Reader } from './text-reader.js';

export const DEFAULT_TIMEOUT_MS = 30_000;

/** A download that failed on the network side; the message is the reason. */
export class FetchFailure extends Error {}
export class BodyTooLarge extends Error {}

/**
 * Streams a URL's body to onChunk until it ends or onChunk returns false.
 * Fails with FetchFailure when the server cannot be reached, answers with an
 * error status, or sends nothing for idleMs; errors thrown by the callbacks
 * pass through unchanged (and abort the download).
 */
export async function streamUrl(
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

export async function loadUrl(url: string, opts: LoadOptions, reader: Reader): Promise<{ source: string; what: string }> {
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
