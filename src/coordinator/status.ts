/**
 * The status page: /status.json (run state, log history, per-round series,
 * workers, latest sample) and the static page and assets that draw it. The
 * page polls /status.json every second; the charts are Chart.js, served from
 * node_modules so the page needs no network and no build step.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import type http from 'node:http';
import type { Coordinator } from './coordinator.js';
import { medianStepMs } from './membership.js';
import { STATUS_CSS, STATUS_HTML, STATUS_JS } from './status-page.js';

export type RunStateName = 'training' | 'waiting' | 'paused' | 'stopping' | 'done';

export interface StatusQuery {
  /** Only series points after this step (when `generation` is current). */
  since?: number;
  generation?: number;
}

export function statusJson(c: Coordinator, q: StatusQuery = {}) {
  const s = c.state;
  const cfg = c.cfg;
  const pos = c.schedule?.peek();
  const done = s.epoch >= cfg.epochs;
  const workersConnected = c.membership.size;
  const state: RunStateName = done ? 'done' : s.stopping ? 'stopping' : s.paused ? 'paused' : workersConnected < cfg.minWorkers ? 'waiting' : 'training';
  return {
    state,
    step: s.step,
    epoch: s.epoch,
    epochs: cfg.epochs,
    batch: pos?.batchIndex ?? 0,
    batchesInEpoch: pos?.batchesInEpoch ?? 0,
    round: s.round,
    paused: s.paused,
    stopping: s.stopping,
    done,
    workersConnected,
    minWorkers: cfg.minWorkers,
    startedAt: c.startedAt,
    now: Date.now(),
    history: c.history,
    series: c.series.view(q.since, q.generation),
    sample: c.lastSample,
    /** The model: registry name, one-line summary ('GRU hidden 256, vocabulary 28'), parameter count, and its tokens ('word, min-freq 2'). */
    model: { name: c.model.name, summary: c.model.summary, paramCount: c.model.paramCount, tokenizer: c.tokenizer?.label ?? cfg.tokenizer },
    samplePrefix: cfg.samplePrefix,
    sampleTemperature: cfg.sampleTemperature,
    workers: c.membership.list().map((m) => ({
      slot: m.slot,
      name: m.info.name ?? `${m.info.host}:${m.info.pid}`,
      host: m.info.host,
      pid: m.info.pid,
      backend: m.info.backend,
      device: m.info.device,
      /** The last round's compute time. */
      stepMs: m.lastStepMs ?? null,
      /** Median compute time of the recent rounds (up to STEP_WINDOW): what the worker usually takes. */
      stepMedianMs: medianStepMs(m) ?? null,
      stepWindow: m.recentStepMs.length,
      waitMs: m.lastWaitMs ?? null,
      rounds: m.rounds,
      tokens: m.tokens,
      joinedAt: m.joinedAt,
      lastSeen: m.lastSeen,
    })),
  };
}

export type StatusJson = ReturnType<typeof statusJson>;

/** Reads ?since= and ?generation=; anything malformed means "send everything". */
export function parseStatusQuery(params: URLSearchParams): StatusQuery {
  const num = (k: string): number | undefined => {
    const v = params.get(k);
    if (v === null || v.trim() === '') return undefined;
    const n = Number(v);
    return Number.isFinite(n) ? n : undefined;
  };
  return { since: num('since'), generation: num('generation') };
}

/**
 * The page and script forbid everything but their own origin: no inline
 * script, so a worker name that slipped past textContent still could not run.
 */
export const STATUS_PAGE_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

interface Asset {
  type: string;
  load: () => Buffer;
}

/**
 * chart.js's "exports" map hides dist/chart.umd.min.js from require.resolve,
 * so find the package through its main entry (dist/chart.cjs) and take the
 * UMD build beside it.
 */
function chartJsPath(): string {
  return path.join(path.dirname(createRequire(import.meta.url).resolve('chart.js')), 'chart.umd.min.js');
}

/** The only files served under /assets/; a path not listed here is a 404, whatever it contains. */
const ASSETS: ReadonlyMap<string, Asset> = new Map([
  ['/assets/chart.umd.min.js', { type: 'text/javascript; charset=utf-8', load: () => fs.readFileSync(chartJsPath()) }],
  ['/assets/status.js', { type: 'text/javascript; charset=utf-8', load: () => Buffer.from(STATUS_JS) }],
  ['/assets/status.css', { type: 'text/css; charset=utf-8', load: () => Buffer.from(STATUS_CSS) }],
]);

const loaded = new Map<string, { body: Buffer; etag: string }>();

function assetBody(pathname: string, a: Asset): { body: Buffer; etag: string } {
  let hit = loaded.get(pathname);
  if (!hit) {
    const body = a.load();
    hit = { body, etag: `"${crypto.createHash('sha1').update(body).digest('base64url')}"` };
    loaded.set(pathname, hit);
  }
  return hit;
}

/** Serves a whitelisted asset; returns false (nothing written) for any other path. */
export function serveAsset(pathname: string, req: http.IncomingMessage, res: http.ServerResponse): boolean {
  const a = ASSETS.get(pathname);
  if (!a) return false;
  const { body, etag } = assetBody(pathname, a);
  // no-cache + ETag: a coordinator upgraded in place is picked up on reload, an unchanged one costs a 304.
  const headers = { 'content-type': a.type, 'cache-control': 'no-cache', etag, ...STATUS_PAGE_HEADERS };
  if (req.headers['if-none-match'] === etag) {
    res.writeHead(304, headers).end();
    return true;
  }
  res.writeHead(200, { ...headers, 'content-length': String(body.length) }).end(body);
  return true;
}

export function statusPage(): string {
  return STATUS_HTML;
}
