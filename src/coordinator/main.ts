/** `coordinator start`: wire config, backend, servers, signals and local workers together. */
import crypto from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { readToken, publicConfig, type CoordinatorConfig } from '../shared/config.js';
import { COORDINATOR_OPTIONS } from '../shared/options.js';
import { selectBackend } from '../shared/backend.js';
import { Coordinator, type RunSummary } from './coordinator.js';
import { HttpServer } from './http-server.js';
import { closingLines } from './console-report.js';
import { spawnWorkers } from './spawn.js';

export async function startCoordinator(cfg: CoordinatorConfig, log: (l: string) => void = (l) => console.log(l)): Promise<RunSummary> {
  let token = readToken(cfg);
  if (token === undefined) {
    if (cfg.spawn === 0) throw new (await import('../shared/errors.js')).DptrainError('ERR_BAD_CONFIG', 'no token: set DPTRAIN_TOKEN, --token-file or --token (workers must present the same one), or use --spawn for a local run');
    token = crypto.randomBytes(24).toString('base64url');
  }
  log(`config: ${JSON.stringify(publicConfig(cfg, COORDINATOR_OPTIONS))}`);
  const backend = await selectBackend({ backend: cfg.backend, log });
  const c = new Coordinator(cfg, token, { log, backend });
  const http = new HttpServer(c);
  let children: ChildProcess[] = [];
  let allLocalWorkersDied = false;
  const onSignal = (sig: NodeJS.Signals) => c.stop(`received ${sig}`);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await c.start();
    if (cfg.metricsPort >= 0) {
      const mp = await http.listen(cfg.metricsHost, cfg.metricsPort);
      log(`metrics on http://${cfg.metricsHost}:${mp}/metrics, status page on http://${cfg.metricsHost === '0.0.0.0' ? '127.0.0.1' : cfg.metricsHost}:${mp}/`);
    }
    if (cfg.spawn > 0) {
      const host = cfg.host === '0.0.0.0' || cfg.host === '::' ? '127.0.0.1' : cfg.host;
      children = spawnWorkers({ count: cfg.spawn, url: `${cfg.tlsCert ? 'wss' : 'ws'}://${host}:${c.port}`, token, backend: cfg.workerBackend, log, ca: cfg.tlsCert });
      log(`spawned ${cfg.spawn} local workers`);
      // Local mode with every local worker gone and nobody else connected would wait forever.
      for (const ch of children) {
        ch.once('exit', () => {
          if (children.every((k) => k.exitCode !== null || k.signalCode !== null) && c.membership.size === 0 && c.state.epoch < cfg.epochs) {
            allLocalWorkersDied = true;
            c.stop('all local workers exited');
          }
        });
      }
    }
    const summary = await c.run();
    if (allLocalWorkersDied && summary.reason !== 'done') throw new Error('all local workers exited before training finished (see their output above)');
    await Promise.all(children.map((ch) => new Promise<void>((r) => {
      if (ch.exitCode !== null || ch.signalCode !== null) return r();
      const t = setTimeout(() => { ch.kill('SIGTERM'); r(); }, 5000);
      ch.once('exit', () => { clearTimeout(t); r(); });
    })));
    for (const line of closingLines(c, summary)) log(line);
    return summary;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    for (const ch of children) if (ch.exitCode === null && ch.signalCode === null) ch.kill('SIGTERM');
    await http.close();
    c.dispose();
  }
}
