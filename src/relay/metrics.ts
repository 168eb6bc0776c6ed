/**
 * A relay's own HTTP port (--metrics-port): /metrics (prefix dptrain_relay_),
 * /healthz (the process serves) and /readyz (200 only while its coordinator has
 * welcomed it).
 */
import http from 'node:http';
import client from 'prom-client';
import { listenOn } from '../shared/listen.js';
import { collectProcessMetrics, VERSION } from '../coordinator/metrics.js';

export class RelayMetrics {
  readonly registry = new client.Registry();
  readonly gradBytes: client.Counter;
  readonly rejected: client.Counter;
  private readonly workers: client.Gauge;
  private readonly members: client.Gauge;
  private readonly upstream: client.Gauge;
  private readonly rounds: client.Counter;
  private readonly tokens: client.Counter;
  private readonly roundDuration: client.Histogram;
  private readonly joins: client.Counter;
  private readonly departures: client.Counter;
  private server: http.Server | null = null;
  private ready = false;

  constructor() {
    const r = [this.registry];
    collectProcessMetrics(this.registry);
    this.workers = new client.Gauge({ name: 'dptrain_relay_workers', help: 'Workers this relay carries (a relay under it counts its own workers): what it tells its coordinator.', registers: r });
    this.members = new client.Gauge({ name: 'dptrain_relay_connections', help: 'Workers and relays connected directly to this relay.', registers: r });
    this.upstream = new client.Gauge({ name: 'dptrain_relay_upstream_connected', help: '1 while the coordinator (or parent relay) has welcomed this relay.', registers: r });
    this.rounds = new client.Counter({ name: 'dptrain_relay_rounds_total', help: 'Rounds this relay answered with a summed gradient.', registers: r });
    this.tokens = new client.Counter({ name: 'dptrain_relay_tokens_total', help: 'Tokens covered by the gradients this relay summed.', registers: r });
    this.roundDuration = new client.Histogram({ name: 'dptrain_relay_round_duration_seconds', help: "From a step's arrival to the relay's reply (its workers' compute included).", buckets: [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30], registers: r });
    this.gradBytes = new client.Counter({ name: 'dptrain_relay_gradient_bytes_received_total', help: "Bytes of gradient messages received from this relay's workers.", registers: r });
    this.joins = new client.Counter({ name: 'dptrain_relay_worker_joins_total', help: 'Workers (or relays) that joined this relay.', registers: r });
    this.departures = new client.Counter({ name: 'dptrain_relay_worker_departures_total', help: 'Workers that left this relay: cleanly (leave), missed a deadline or heartbeats (timeout), lost connection (disconnect), broke the protocol (protocol).', labelNames: ['reason'], registers: r });
    this.rejected = new client.Counter({ name: 'dptrain_relay_rejected_messages_total', help: 'Messages and connections this relay refused, by error code.', labelNames: ['code'], registers: r });
    new client.Gauge({ name: 'dptrain_info', help: 'Build of this relay (value 1).', labelNames: ['role', 'version'], registers: r }).set({ role: 'relay', version: VERSION }, 1);
    for (const reason of ['leave', 'timeout', 'disconnect', 'protocol']) this.departures.inc({ reason }, 0);
  }

  setUpstream(connected: boolean): void {
    this.ready = connected;
    this.upstream.set(connected ? 1 : 0);
  }

  membership(workers: number, connections: number, event?: 'join' | 'leave' | 'timeout' | 'disconnect' | 'protocol'): void {
    this.workers.set(workers);
    this.members.set(connections);
    if (event === 'join') this.joins.inc();
    else if (event) this.departures.inc({ reason: event });
  }

  roundDone(seconds: number, tokens: number): void {
    this.rounds.inc();
    this.tokens.inc(tokens);
    this.roundDuration.observe(seconds);
  }

  async listen(host: string, port: number): Promise<number> {
    this.server = http.createServer(async (req, res) => {
      if (req.url === '/metrics') res.writeHead(200, { 'content-type': this.registry.contentType }).end(await this.registry.metrics());
      else if (req.url === '/healthz') res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      else if (req.url === '/readyz') res.writeHead(this.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(this.ready ? 'ready\n' : 'not ready: not welcomed by a coordinator\n');
      else res.writeHead(404).end();
    });
    return listenOn(this.server, host, port, { port: '--metrics-port', host: '--metrics-host' });
  }

  close(): void {
    this.server?.close();
  }
}
