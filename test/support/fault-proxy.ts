/**
 * A userspace TCP proxy that makes a link slow or broken, for tests on loopback (no netem here):
 * added latency each way, a bandwidth cap, a blackhole that stops forwarding without closing
 * either side (a half-open link: no FIN, no RST), and a reset of every connection.
 */
import net from 'node:net';

export interface LinkFaults {
  /** Added one-way delay, ms, in each direction. */
  latencyMs: number;
  /** Bytes per second in each direction; 0 = unlimited. */
  bytesPerSecond: number;
  /** Accept and drop everything, in both directions, keeping the sockets open. */
  blackhole: boolean;
}

interface Pipe {
  a: net.Socket;
  b: net.Socket;
}

export class FaultProxy {
  readonly faults: LinkFaults = { latencyMs: 0, bytesPerSecond: 0, blackhole: false };
  private readonly server: net.Server;
  private readonly pipes = new Set<Pipe>();
  private timers = new Set<NodeJS.Timeout>();
  /** Sockets whose peer closed while the link was blackholed: left open, silent, until close(). */
  private readonly orphans = new Set<net.Socket>();
  /** Bytes dropped by the blackhole, both directions. */
  dropped = 0;
  connections = 0;

  constructor(private readonly target: { host: string; port: number }) {
    this.server = net.createServer((client) => this.onClient(client));
  }

  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return (this.server.address() as net.AddressInfo).port;
  }

  private onClient(a: net.Socket): void {
    this.connections++;
    const b = net.connect(this.target.port, this.target.host);
    const pipe = { a, b };
    this.pipes.add(pipe);
    this.forward(a, b);
    this.forward(b, a);
    // A blackholed link carries no FIN or RST either: the side still open hears nothing.
    const end = (closed: net.Socket, other: net.Socket) => () => {
      this.pipes.delete(pipe);
      closed.destroy();
      if (!this.faults.blackhole) other.destroy();
      else this.orphans.add(other);
    };
    a.on('close', end(a, b)).on('error', end(a, b));
    b.on('close', end(b, a)).on('error', end(b, a));
  }

  /**
   * from → to with the link's delay and rate, in order: chunks wait in one queue per direction, drained
   * from its head. (A timer per chunk is not enough: a later chunk's shorter timer, armed against the
   * event loop's cached clock, can fire first and reorder the byte stream.)
   */
  private forward(from: net.Socket, to: net.Socket): void {
    let nextFree = 0;
    const queue: { chunk: Buffer; sendAt: number }[] = [];
    let armed: NodeJS.Timeout | null = null;
    const drain = () => {
      if (armed) this.timers.delete(armed);
      armed = null;
      const now = Date.now();
      while (queue.length > 0 && queue[0].sendAt <= now) {
        const { chunk } = queue.shift()!;
        if (!to.destroyed) to.write(chunk);
      }
      if (queue.length > 0) {
        armed = setTimeout(drain, Math.max(1, queue[0].sendAt - now));
        this.timers.add(armed);
      }
    };
    from.on('data', (chunk: Buffer) => {
      const f = this.faults;
      if (f.blackhole) {
        this.dropped += chunk.length;
        return;
      }
      const now = Date.now();
      const sendAt = Math.max(now + f.latencyMs, nextFree);
      nextFree = sendAt + (f.bytesPerSecond > 0 ? (chunk.length / f.bytesPerSecond) * 1000 : 0);
      queue.push({ chunk, sendAt });
      if (queue.length === 1 && sendAt <= now) drain();
      else if (armed === null) {
        armed = setTimeout(drain, Math.max(1, sendAt - now));
        this.timers.add(armed);
      }
    });
  }

  /** Every connection through the proxy ends with a TCP reset. */
  reset(): void {
    for (const { a, b } of this.pipes) {
      a.resetAndDestroy();
      b.resetAndDestroy();
    }
    this.pipes.clear();
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    for (const { a, b } of this.pipes) {
      a.destroy();
      b.destroy();
    }
    for (const s of this.orphans) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
