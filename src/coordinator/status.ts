/**
 * Status page data. The page itself is served by statusPage(); its charts are
 * drawn in the browser from /status.json.
 */
import type http from 'node:http';
import type { Coordinator } from './coordinator.js';

export function statusJson(c: Coordinator) {
  const s = c.state;
  return {
    step: s.step,
    epoch: s.epoch,
    epochs: c.cfg.epochs,
    paused: s.paused,
    stopping: s.stopping,
    startedAt: c.startedAt,
    history: c.history,
    sample: c.lastSample,
    workers: c.membership.list().map((m) => ({
      slot: m.slot,
      name: m.info.name ?? `${m.info.host}:${m.info.pid}`,
      backend: m.info.backend,
      device: m.info.device,
      stepMs: m.lastStepMs ?? null,
      waitMs: m.lastWaitMs ?? null,
      rounds: m.rounds,
      tokens: m.tokens,
      lastSeen: m.lastSeen,
    })),
  };
}

export function statusPage(): string {
  return `<!doctype html><meta charset="utf-8"><title>dptrain</title><pre id="s">loading</pre>
<script>setInterval(async()=>{const r=await fetch('/status.json');document.getElementById('s').textContent=JSON.stringify(await r.json(),null,2)},1000)</script>`;
}

export function serveAsset(_path: string, _res: http.ServerResponse): boolean {
  return false;
}
