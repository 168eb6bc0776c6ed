/**
 * A worker's own HTTP port (optional, --metrics-port): /metrics, /healthz (the
 * process serves) and /readyz (200 only while connected to a coordinator and welcomed by it).
 */
import http from 'node:http';
import { listenOn } from '../shared/listen.js';
import client from 'prom-client';
import * as tf from '@tensorflow/tfjs';
import { collectProcessMetrics, VERSION } from '../coordinator/metrics.js';

export class WorkerMetrics {
  readonly registry = new client.Registry();
  private readonly stepDuration: client.Histogram;
  private readonly steps: client.Counter;
  private readonly tokens: client.Counter;
  private server: http.Server | null = null;
  /** Connected to a coordinator and welcomed by it: what /readyz answers. */
  private ready = false;

  constructor(backend: string, device: string) {
    const r = [this.registry];
    collectProcessMetrics(this.registry);
    this.stepDuration = new client.Histogram({ name: 'dptrain_worker_step_duration_seconds', help: 'Time to compute one shard gradient.', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: r });
    this.steps = new client.Counter({ name: 'dptrain_worker_steps_total', help: 'Shard gradients computed.', registers: r });
    this.tokens = new client.Counter({ name: 'dptrain_worker_processed_tokens_total', help: 'Tokens this worker computed gradients on.', registers: r });
    new client.Gauge({
      name: 'dptrain_worker_tensors',
      help: 'Live tfjs tensors in this worker (tf.memory().numTensors); flat in the steady state.',
      registers: r,
      collect() {
        this.set(tf.memory().numTensors);
      },
    });
    new client.Gauge({ name: 'dptrain_info', help: 'Build and backend of this worker (value 1).', labelNames: ['backend', 'device', 'version'], registers: r }).set({ backend, device, version: VERSION }, 1);
  }

  observeStep(seconds: number, tokens: number): void {
    this.stepDuration.observe(seconds);
    this.steps.inc();
    this.tokens.inc(tokens);
  }

  /** The worker client calls this when a welcome arrives (true) and when its connection closes (false). */
  setReady(ready: boolean): void {
    this.ready = ready;
  }

  async listen(host: string, port: number): Promise<number> {
    this.server = http.createServer(async (req, res) => {
      if (req.url === '/metrics') {
        res.writeHead(200, { 'content-type': this.registry.contentType }).end(await this.registry.metrics());
      } else if (req.url === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else if (req.url === '/readyz') {
        res.writeHead(this.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(this.ready ? 'ready\n' : 'not ready: not connected to a coordinator\n');
      } else res.writeHead(404).end();
    });
    return listenOn(this.server, host, port, { port: '--metrics-port', host: '--metrics-host' });
  }

  close(): void {
    this.server?.close();
  }
}
