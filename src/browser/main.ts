/**
 * The worker page (/worker on the coordinator's HTTP port): a browser tab as a
 * worker. The token comes from the URL fragment (#token=..., which the browser
 * never sends to a server) or from the form the page shows without one; the
 * coordinator's WebSocket address from /worker/config.json. Then the same
 * connection loop and shard compute as `worker join`, over the browser's
 * WebSocket, until the run ends, the coordinator refuses the tab, or the tab closes.
 *
 * Everything shown comes in through textContent, never as HTML.
 */
import { WorkerClient, type WorkerExit } from '../worker/worker-client.js';
import { browserSockets } from './browser-socket.js';
import { chooseBackend } from './backend.js';
import { uaFamily } from './ua.js';

interface PageConfig {
  /** ws or wss */
  scheme: string;
  port: number;
}

type TabState = 'needs-token' | 'starting' | 'connecting' | 'training' | 'done' | 'refused' | 'stopped' | 'gave-up' | 'error';

const $ = (id: string): HTMLElement => document.getElementById(id)!;

function show(id: string, text: string): void {
  $(id).textContent = text;
}

function setState(s: TabState, detail = ''): void {
  const el = $('state');
  el.textContent = s;
  el.dataset.state = s;
  document.body.dataset.state = s;
  show('detail', detail);
}

const logLines: string[] = [];
function log(line: string): void {
  logLines.push(`${new Date().toISOString().slice(11, 19)} ${line}`);
  if (logLines.length > 200) logLines.shift();
  show('log', logLines.join('\n'));
}

function tokenFromFragment(): string | null {
  const t = new URLSearchParams(location.hash.slice(1)).get('token');
  return t && t.length > 0 ? t : null;
}

function askToken(): Promise<string> {
  setState('needs-token', 'paste the token the coordinator printed (or open its join link)');
  const form = $('token-form') as HTMLFormElement;
  form.hidden = false;
  return new Promise((resolve) => {
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const t = ($('token-input') as HTMLInputElement).value.trim();
      if (!t) return;
      form.hidden = true;
      resolve(t);
    });
  });
}

async function main(): Promise<void> {
  setState('starting');
  const token = tokenFromFragment() ?? (await askToken());
  setState('starting', 'choosing a backend');
  const res = await fetch('/worker/config.json', { cache: 'no-store' });
  if (!res.ok) throw new Error(`/worker/config.json answered HTTP ${res.status}`);
  const cfg = (await res.json()) as PageConfig;
  const backend = await chooseBackend(new URLSearchParams(location.search).get('backend'));
  show('backend', backend.name);
  show('device', backend.device);
  document.body.dataset.backend = backend.name;
  for (const n of backend.notes) log(`backend: ${n}`);
  log(`backend: ${backend.name} (${backend.device})`);

  const url = `${cfg.scheme}://${location.hostname.includes(':') ? `[${location.hostname}]` : location.hostname}:${cfg.port}`;
  let tokens = 0;
  let computeS = 0;
  const client = new WorkerClient({
    url,
    token,
    info: { backend: backend.name, device: backend.device, host: 'browser', pid: 0, name: `browser:${uaFamily(navigator.userAgent)}` },
    sockets: browserSockets(),
    maxRetries: 0,
    reconnectGrace: 600,
    log: (line) => {
      log(line);
      if (/^joined as/.test(line)) setState('training', line);
      else if (/^reconnecting|^connection (closed|error)/.test(line) && !client.workerId) setState('connecting', line);
    },
    metrics: {
      setReady: (ready) => {
        if (!ready && document.body.dataset.state === 'training') setState('connecting', 'connection lost; reconnecting');
      },
      observeStep: (seconds, n) => {
        tokens += n;
        computeS += seconds;
        show('rounds', String(client.rounds));
        show('tps', computeS > 0 ? `${Math.round(tokens / computeS).toLocaleString('en-US')}` : '–');
        show('step-ms', `${(seconds * 1000).toFixed(1)} ms`);
      },
    },
  });
  // Closing or leaving the tab is a leave; a tab the browser freezes simply misses its deadlines.
  addEventListener('pagehide', () => client.stop('tab closed'));
  setState('connecting', url);
  const exit: WorkerExit = await client.run();
  show('rounds', String(client.rounds));
  if (exit === 'done') setState('done', `the run finished after ${client.rounds} rounds here`);
  else if (exit === 'rejected') setState('refused', client.refusal ? `${client.refusal}: ${client.reason}` : client.reason);
  else if (exit === 'gave-up') setState('gave-up', client.reason);
  else setState('stopped');
}

main().catch((e) => {
  log(`error: ${(e as Error).message}`);
  setState('error', (e as Error).message);
});
