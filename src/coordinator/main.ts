/** `coordinator start`: wire config, backend, servers, signals and local workers together. */
import crypto from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { DptrainError } from '../shared/errors.js';
import { urlHost } from '../shared/listen.js';
import { MIN_TOKEN_LENGTH, readToken, publicConfig, type CoordinatorConfig } from '../shared/config.js';
import { COORDINATOR_OPTIONS } from '../shared/options.js';
import { selectBackend } from '../shared/backend.js';
import { Coordinator, type RunSummary } from './coordinator.js';
import { HttpServer } from './http-server.js';
import { closingLines } from './console-report.js';
import { spawnWorkers } from './spawn.js';
import { joinLinkLines } from './join-link.js';

export async function startCoordinator(cfg: CoordinatorConfig, log: (l: string) => void = (l) => console.log(l)): Promise<RunSummary> {
  let token = readToken(cfg, { minLength: MIN_TOKEN_LENGTH });
  if (token === undefined) {
    if (cfg.spawn === 0) throw new DptrainError('ERR_BAD_CONFIG', 'no token: set DPTRAIN_TOKEN, --token-file or --token (workers must present the same one), or use --spawn for a local run');
    token = crypto.randomBytes(24).toString('base64url');
  }
  log(`config: ${JSON.stringify(publicConfig(cfg, COORDINATOR_OPTIONS))}`);
  const backend = await selectBackend({ backend: cfg.backend, log });
  const c = new Coordinator(cfg, token, { log, backend });
  const http = new HttpServer(c);
  let children: ChildProcess[] = [];
  let allLocalWorkersDied = false;
  let signalled = false;
  const onSignal = (sig: NodeJS.Signals) => {
    signalled = true;
    c.stop(`received ${sig}`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await c.start();
    if (c.finished) return { steps: c.state.step, epochs: c.state.epoch, reason: 'finished', finalTrainPerplexity: c.history.at(-1)?.trainPerplexity ?? NaN, checkpoint: cfg.checkpointDir };
    if (cfg.metricsPort >= 0) {
      const mp = await http.listen(cfg.metricsHost, cfg.metricsPort);
      log(`metrics on http://${urlHost(cfg.metricsHost)}:${mp}/metrics, status page on http://${urlHost(cfg.metricsHost)}:${mp}/`);
      for (const line of joinLinkLines(`http://${urlHost(cfg.metricsHost)}:${mp}`, token, process.stdout.isTTY === true)) log(line);
    }
    if (cfg.spawn > 0) {
      children = spawnWorkers({ count: cfg.spawn, url: `${cfg.tlsCert ? 'wss' : 'ws'}://${urlHost(cfg.host)}:${c.port}`, token, backend: cfg.workerBackend, log, ca: cfg.tlsCert });
      log(`spawned ${cfg.spawn} local workers`);
      if (cfg.spawn > cfg.batchSize) log(`note: --spawn ${cfg.spawn} is more than --batch-size ${cfg.batchSize} streams: ${cfg.spawn - cfg.batchSize} of the workers get no streams and wait as spares`);
      // Local mode with every local worker gone and nobody else connected would wait forever.
      for (const ch of children) {
        ch.once('exit', () => {
          // Ctrl-C reaches the whole process group: workers leaving then is the stop, not a failure.
          if (!signalled && children.every((k) => k.exitCode !== null || k.signalCode !== null) && c.membership.size === 0 && c.state.epoch < cfg.epochs) {
            allLocalWorkersDied = true;
            c.stop('all local workers exited');
          }
        });
      }
    }
    const summary = await c.run();
    if (allLocalWorkersDied && summary.reason !== 'done' && !signalled) throw new DptrainError('ERR_WORKERS_EXITED', 'all local workers exited before training finished (see their output above)');
    // After 'done' the workers leave by themselves; after a stop they would wait for the coordinator to come back.
    await stopChildren(children, summary.reason === 'done' ? 5000 : 0);
    if (summary.checkpointFailed) {
      throw new DptrainError('ERR_CHECKPOINT_WRITE', `the final checkpoint could not be written to ${cfg.checkpointDir} (see the line above); training since the last checkpoint that was written is lost`);
    }
    for (const line of closingLines(c, summary)) log(line);
    return summary;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    for (const ch of children) if (ch.exitCode === null && ch.signalCode === null) ch.kill('SIGTERM');
    await http.close();
    await c.dispose();
  }
}

/** Wait up to graceMs for the children to exit by themselves, then SIGTERM them, then SIGKILL after 5 s. */
async function stopChildren(children: ChildProcess[], graceMs: number): Promise<void> {
  const alive = (ch: ChildProcess) => ch.exitCode === null && ch.signalCode === null;
  await Promise.all(
    children.map(
      (ch) =>
        new Promise<void>((resolve) => {
          if (!alive(ch)) return resolve();
          const timers: NodeJS.Timeout[] = [];
          ch.once('exit', () => {
            timers.forEach(clearTimeout);
            resolve();
          });
          timers.push(setTimeout(() => ch.kill('SIGTERM'), graceMs));
          timers.push(setTimeout(() => {
            ch.kill('SIGKILL');
            resolve();
          }, graceMs + 5000));
        }),
    ),
  );
}
