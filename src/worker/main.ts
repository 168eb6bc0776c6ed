/** `worker join`: backend first (CUDA_VISIBLE_DEVICES must be set before tfjs-node-gpu loads), then the connection loop. */
import os from 'node:os';
import { readToken, type WorkerConfig } from '../shared/config.js';
import { DptrainError } from '../shared/errors.js';
import { urlHost } from '../shared/listen.js';
import { selectBackend } from '../shared/backend.js';
import { WorkerClient, type WorkerExit } from './worker-client.js';
import { WorkerMetrics } from './metrics.js';
import { nodeSockets } from './node-socket.js';

export async function joinWorker(cfg: WorkerConfig, log: (l: string) => void = (l) => console.log(l)): Promise<WorkerExit> {
  const token = readToken(cfg);
  if (token === undefined) throw new DptrainError('ERR_BAD_CONFIG', 'no token: set DPTRAIN_TOKEN, --token-file or --token to the coordinator\'s token');
  const backend = await selectBackend({ backend: cfg.backend, gpu: cfg.gpu, log });
  let metrics: WorkerMetrics | undefined;
  if (cfg.metricsPort !== undefined) {
    metrics = new WorkerMetrics(backend.name, backend.device);
    const port = await metrics.listen(cfg.metricsHost, cfg.metricsPort);
    log(`worker metrics on http://${urlHost(cfg.metricsHost)}:${port}/metrics`);
  }
  const client = new WorkerClient({
    url: cfg.coordinator,
    token,
    info: { backend: backend.name, device: backend.device, host: os.hostname(), pid: process.pid, ...(cfg.name ? { name: cfg.name } : {}) },
    sockets: nodeSockets({ ca: cfg.ca }),
    maxRetries: cfg.maxRetries,
    reconnectGrace: cfg.reconnectGrace,
    log,
    metrics,
  });
  const onSignal = () => client.stop('signal');
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const exit = await client.run();
    log(`worker exiting: ${exit} after ${client.rounds} rounds`);
    if (exit === 'gave-up') throw new DptrainError('ERR_COORDINATOR_GONE', client.reason);
    if (exit === 'rejected' && client.refusal) throw new DptrainError(client.refusal, client.reason);
    return exit;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    metrics?.close();
  }
}
