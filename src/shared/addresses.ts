/**
 * `--coordinator URL1,URL2,...`: the addresses a worker (or a relay) may join, and
 * the rotation through them. A connection that fails, closes or goes silent moves
 * on to the next address; the caller's backoff paces the attempts. Used by
 * worker/worker-client.ts and relay/upstream.ts; knows nothing of sockets.
 */
import { DptrainError } from './errors.js';

const URL_SHAPE = /^wss?:\/\/[^/\s,]+/;

/** Splits and checks a comma-separated address list; a bad entry is a one-sentence ERR_BAD_CONFIG. */
export function parseAddresses(list: string, flag = '--coordinator'): string[] {
  const urls = list
    .split(',')
    .map((u) => u.trim())
    .filter((u) => u !== '');
  if (urls.length === 0) throw new DptrainError('ERR_BAD_CONFIG', `${flag} is empty; give ws://HOST:PORT or wss://HOST:PORT (several separated by commas)`);
  for (const u of urls) {
    if (!URL_SHAPE.test(u)) throw new DptrainError('ERR_BAD_CONFIG', `${flag} must look like ws://HOST:PORT or wss://HOST:PORT (several separated by commas), got '${u}'`);
  }
  return urls;
}

export class AddressRotation {
  readonly urls: readonly string[];
  private k = 0;

  constructor(list: string | readonly string[]) {
    this.urls = typeof list === 'string' ? parseAddresses(list) : [...list];
    if (this.urls.length === 0) throw new RangeError('no address');
  }

  /** The address to try now. */
  get current(): string {
    return this.urls[this.k];
  }

  /** The connection to `current` ended (refused, closed, silent): the next attempt goes to the next address. */
  advance(): string {
    this.k = (this.k + 1) % this.urls.length;
    return this.current;
  }

  /** For messages: the one address, or all of them. */
  describe(): string {
    return this.urls.length === 1 ? this.urls[0] : `any of ${this.urls.join(', ')}`;
  }
}

/**
 * After a connection ended and the rotation moved on: give up (with the reason) or wait `delayMs`.
 * The backoff doubles with failures; jitter spreads many clients' reconnects and the 30 s cap holds
 * after it; the last wait ends with the grace period.
 */
export function reconnectPlan(o: { failures: number; maxRetries: number; awayMs: number; graceMs: number; addresses: AddressRotation }): { giveUp: string } | { delayMs: number } {
  const { failures, maxRetries, awayMs, graceMs, addresses } = o;
  if (maxRetries > 0 && failures > maxRetries) return { giveUp: `${failures} attempts in a row to reach ${addresses.describe()} failed (--max-retries ${maxRetries})` };
  if (graceMs > 0 && awayMs >= graceMs) return { giveUp: `no coordinator at ${addresses.describe()} for ${Math.round(awayMs / 1000)} s (--reconnect-grace ${graceMs / 1000})` };
  let delayMs = Math.min(30_000, 250 * 2 ** Math.min(failures, 7) * (0.75 + 0.5 * Math.random()));
  if (graceMs > 0) delayMs = Math.min(delayMs, graceMs - awayMs);
  return { delayMs };
}
