/** `dptrain relay`: config, token, metrics port, signals, then the relay until its coordinator's run ends. */
import os from 'node:os';
import { readToken, type RelayConfig } from '../shared/config.js';
import { DptrainError } from '../shared/errors.js';
import { urlHost } from '../shared/listen.js';
import { Relay } from './relay.js';
import { RelayMetrics } from './metrics.js';
import type { UpstreamExit } from './upstream.js';

export async function startRelay(cfg: RelayConfig, log: (l: string) => void = (l) => console.log(l)): Promise<UpstreamExit> {
  const token = readToken(cfg);
  if (token === undefined) throw new DptrainError('ERR_BAD_CONFIG', "no token: set DPTRAIN_TOKEN, --token-file or --token to the coordinator's token (workers present the same one to the relay)");
  let metrics: RelayMetrics | undefined;
  if (cfg.metricsPort >= 0) {
    metrics = new RelayMetrics();
    const port = await metrics.listen(cfg.metricsHost, cfg.metricsPort);
    log(`relay metrics on http://${urlHost(cfg.metricsHost)}:${port}/metrics`);
  }
  const relay = new Relay({
    upstream: {
      url: cfg.coordinator,
      token,
      info: { backend: 'relay', device: 'relay', host: os.hostname(), pid: process.pid, ...(cfg.name ? { name: cfg.name } : {}) },
      ca: cfg.ca,
      maxRetries: cfg.maxRetries,
      reconnectGrace: cfg.reconnectGrace,
    },
    host: cfg.host,
    port: cfg.port,
    tls: cfg.tlsCert && cfg.tlsKey ? { certFile: cfg.tlsCert, keyFile: cfg.tlsKey } : undefined,
    maxWorkers: cfg.maxWorkers,
    helloTimeoutMs: cfg.helloTimeout * 1000,
    heartbeatMs: cfg.heartbeatInterval * 1000,
    roundTimeoutMs: cfg.roundTimeout * 1000,
    log,
    metrics,
  });
  log(`relay: joining ${cfg.coordinator}; workers may join once it has welcomed this relay`);
  const onSignal = (sig: NodeJS.Signals) => relay.stop(`received ${sig}`);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const exit = await relay.run();
    log(`relay exiting: ${exit} after ${relay.rounds} rounds`);
    if (relay.fatal) throw relay.fatal;
    if (exit === 'gave-up') throw new DptrainError('ERR_COORDINATOR_GONE', relay.upstream.reason);
    if (exit === 'rejected' && relay.upstream.refusal) throw new DptrainError(relay.upstream.refusal, relay.upstream.reason);
    return exit;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    metrics?.close();
  }
}
