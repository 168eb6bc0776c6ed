/**
 * The coordinator's HTTP side: /metrics (Prometheus), /healthz (process up),
 * /readyz (accepting workers: listening, not stopping, not finished), /status.json
 * the status page at /, and the browser worker's page at /worker (worker-page.ts).
 */
import http from 'node:http';
import { listenOn } from '../shared/listen.js';
import type { Coordinator } from './coordinator.js';
import { parseStatusQuery, serveAsset, statusJson, statusPage, STATUS_PAGE_HEADERS } from './status.js';
import { serveWorkerPage } from './worker-page.js';

export class HttpServer {
  private server: http.Server;

  constructor(private readonly c: Coordinator) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((e) => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`internal error: ${(e as Error).message}\n`);
      });
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    switch (url.pathname) {
      case '/metrics':
        res.writeHead(200, { 'content-type': this.c.metrics.registry.contentType }).end(await this.c.metrics.registry.metrics());
        return;
      case '/healthz':
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
        return;
      case '/readyz': {
        // Ready = accepting workers: listening, not stopping, not finished. Not "--min-workers
        // joined": a Service that routes only to ready coordinators would then never let the first worker in.
        const s = this.c.state;
        const ready = this.c.port > 0 && !s.stopping && !this.c.finished && s.epoch < this.c.cfg.epochs;
        res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ready\n' : 'not ready\n');
        return;
      }
      case '/status.json':
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(statusJson(this.c, parseStatusQuery(url.searchParams))));
        return;
      case '/':
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-cache', ...STATUS_PAGE_HEADERS }).end(statusPage());
        return;
      default:
        if (serveAsset(url.pathname, req, res)) return;
        if (serveWorkerPage(url.pathname, req, res, { wsPort: this.c.port, wsScheme: this.c.cfg.tlsCert ? 'wss' : 'ws' })) return;
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  }

  async listen(host: string, port: number): Promise<number> {
    return listenOn(this.server, host, port, { port: '--metrics-port', host: '--metrics-host' });
  }

  close(): Promise<void> {
    this.server.closeAllConnections?.();
    return new Promise((r) => this.server.close(() => r()));
  }
}
