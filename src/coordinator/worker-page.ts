/**
 * The browser worker's page on the coordinator's HTTP port: /worker (the
 * page), /worker/worker.js (the bundle scripts/build-browser.ts builds into
 * dist/browser/ at install time), /worker/worker.css, /worker/config.json
 * (where the WebSocket port is) and /worker/wasm/*.wasm (tfjs's wasm backend,
 * from node_modules). Nothing is fetched from elsewhere: the CSP allows this
 * origin, the coordinator's WebSocket port on the host the page was loaded
 * from, and wasm compilation; the page cannot be framed.
 *
 * The token never reaches this code: it travels in the URL fragment.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type http from 'node:http';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** The package root: src/coordinator/ (tsx) and dist/coordinator/ (built) are both two levels below it. */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const WORKER_BUNDLE = path.join(ROOT, 'dist', 'browser', 'worker.bundle.js');

const WASM_FILES = ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm'];

export const WORKER_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>dptrain worker</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/worker/worker.css">
<script type="module" src="/worker/worker.js"></script>
</head>
<body data-state="starting">
<header><h1>dptrain worker</h1><span id="state" class="badge" data-state="starting">starting</span></header>
<main>
  <p id="detail" class="muted"></p>
  <form id="token-form" hidden>
    <label for="token-input">Token</label>
    <input id="token-input" type="password" autocomplete="off" spellcheck="false" required>
    <button type="submit">Join</button>
  </form>
  <dl class="cards">
    <div><dt>Backend</dt><dd id="backend">&ndash;</dd></div>
    <div><dt>Device</dt><dd id="device">&ndash;</dd></div>
    <div><dt>Rounds</dt><dd id="rounds">0</dd></div>
    <div><dt>Tokens / s <span class="muted">(compute)</span></dt><dd id="tps">&ndash;</dd></div>
    <div><dt>Last step</dt><dd id="step-ms">&ndash;</dd></div>
  </dl>
  <p class="muted">This tab computes gradients for the run while it stays open; closing it leaves the run. A tab in the background may be slowed down by the browser and then miss its rounds' deadlines.</p>
  <pre id="log"></pre>
</main>
</body>
</html>
`;

export const WORKER_CSS = `body { margin: 0; font: 14px/1.45 system-ui, sans-serif; background: #f5f6f8; color: #1d2330; }
header { display: flex; gap: 12px; align-items: center; padding: 12px 20px; background: #fff; border-bottom: 1px solid #e3e6ec; }
h1 { font-size: 18px; margin: 0; }
main { padding: 16px 20px; max-width: 960px; }
.muted { color: #6b7385; }
.badge { padding: 2px 10px; border-radius: 10px; background: #8a92a3; color: #fff; }
.badge[data-state="training"] { background: #1f9d55; }
.badge[data-state="connecting"], .badge[data-state="starting"], .badge[data-state="needs-token"] { background: #c98a00; }
.badge[data-state="refused"], .badge[data-state="error"], .badge[data-state="gave-up"] { background: #d64545; }
.badge[data-state="done"] { background: #2f6fdb; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 10px; }
.cards div { background: #fff; border: 1px solid #e3e6ec; border-radius: 6px; padding: 8px 12px; }
dt { color: #6b7385; font-size: 12px; } dd { margin: 0; font-size: 20px; overflow-wrap: anywhere; }
#device { font-size: 13px; }
[hidden] { display: none !important; }
form { display: flex; gap: 8px; align-items: center; margin: 12px 0; }
input { flex: 1; padding: 6px; font: inherit; }
pre { background: #fff; border: 1px solid #e3e6ec; padding: 8px; max-height: 320px; overflow: auto; font-size: 12px; }
`;

/** The page's hostname as the browser addressed it, if it is a plain host name or address (it goes into a header). */
export function requestHostname(hostHeader: string | undefined): string | null {
  if (!hostHeader) return null;
  let hostname: string;
  try {
    hostname = new URL(`http://${hostHeader}`).hostname;
  } catch {
    return null;
  }
  return /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)$/.test(hostname) ? hostname : null;
}

export function workerPageHeaders(wsOrigin: string): Record<string, string> {
  return {
    'content-security-policy': `default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self' ${wsOrigin}; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
    'x-frame-options': 'DENY',
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'cache-control': 'no-cache',
  };
}

interface Body {
  type: string;
  body: Buffer;
  etag: string;
}

const cache = new Map<string, Body>();

function load(key: string, type: string, read: () => Buffer): Body {
  let hit = cache.get(key);
  if (!hit) {
    const body = read();
    hit = { type, body, etag: `"${crypto.createHash('sha1').update(body).digest('base64url')}"` };
    cache.set(key, hit);
  }
  return hit;
}

function wasmDir(): string {
  return path.join(path.dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist');
}

export interface WorkerPageContext {
  /** The coordinator's WebSocket port and scheme. */
  wsPort: number;
  wsScheme: 'ws' | 'wss';
}

/** Serves /worker and /worker/*; returns false (nothing written) for any other path. */
export function serveWorkerPage(pathname: string, req: http.IncomingMessage, res: http.ServerResponse, ctx: WorkerPageContext): boolean {
  if (pathname !== '/worker' && !pathname.startsWith('/worker/')) return false;
  const hostname = requestHostname(req.headers.host);
  if (!hostname) {
    res.writeHead(400, { 'content-type': 'text/plain' }).end('bad Host header\n');
    return true;
  }
  const headers = workerPageHeaders(`${ctx.wsScheme}://${hostname}:${ctx.wsPort}`);
  let b: Body;
  if (pathname === '/worker' || pathname === '/worker/') b = load('html', 'text/html; charset=utf-8', () => Buffer.from(WORKER_HTML));
  else if (pathname === '/worker/worker.css') b = load('css', 'text/css; charset=utf-8', () => Buffer.from(WORKER_CSS));
  else if (pathname === '/worker/config.json') {
    const body = Buffer.from(JSON.stringify({ scheme: ctx.wsScheme, port: ctx.wsPort }));
    res.writeHead(200, { ...headers, 'content-type': 'application/json', 'cache-control': 'no-store' }).end(body);
    return true;
  } else if (pathname === '/worker/worker.js') {
    if (!fs.existsSync(WORKER_BUNDLE)) {
      res.writeHead(503, { ...headers, 'content-type': 'text/plain' }).end('the browser worker was not built: run npm run build\n');
      return true;
    }
    b = load('js', 'text/javascript; charset=utf-8', () => fs.readFileSync(WORKER_BUNDLE));
  } else if (pathname.startsWith('/worker/wasm/') && WASM_FILES.includes(pathname.slice('/worker/wasm/'.length))) {
    const name = pathname.slice('/worker/wasm/'.length);
    b = load(name, 'application/wasm', () => fs.readFileSync(path.join(wasmDir(), name)));
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    return true;
  }
  if (req.headers['if-none-match'] === b.etag) {
    res.writeHead(304, { ...headers, etag: b.etag }).end();
    return true;
  }
  res.writeHead(200, { ...headers, 'content-type': b.type, etag: b.etag, 'content-length': String(b.body.length) }).end(req.method === 'HEAD' ? undefined : b.body);
  return true;
}
