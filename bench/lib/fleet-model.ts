/**
 * A discrete-event model of one synchronous round of a tree of nodes: the
 * root, relays (any depth) and workers, each node one event loop (one CPU)
 * that does its work in the order it became ready (first come, first served),
 * and links whose sending and receiving ends each carry one message at a time.
 *
 * The round as it happens: the root does its fixed work (mean, clip, optimizer,
 * encode), then sends the parameters to its children one after another, so
 * they start staggered; a relay forwards the frame to each of its children as
 * soon as it arrived; a worker decodes it, computes (K inner steps, each with
 * its own optimizer step, then the change), encodes and sends its reply; a
 * relay or the root receives and adds each reply as it arrives, while later
 * ones are still on the way; a relay forwards its sum once it holds all of
 * them. The period of a round is when the root has added its last reply plus
 * its fixed work; per optimizer step it is that over K.
 *
 * Pure: no clocks, no sockets; every cost is an input (measured by the fleet
 * part, bench/fleet.ts).
 */

/** A tree below the root: a worker, or a relay with children. */
export type FleetNode =
  /** `cpu`: the event loop it runs on, when workers share one (the stand-ins of a measured run, all in one process). */
  | { kind: 'worker'; cpu?: string }
  | { kind: 'relay'; children: FleetNode[] };

export interface FleetTerms {
  /** Parameters (or gradient) bytes per message, each way. */
  bytes: number;
  root: {
    /** Per round, between the last reply and the next sends: mean, clip, optimizer, encode the parameters. */
    fixedMs: number;
    /** The same under local SGD (K > 1), where the root applies the outer optimizer instead; default fixedMs. */
    fixedLocalMs?: number;
    /** Per child: send it the step and the parameters. */
    sendMs: number;
    /** Per reply: receive it, check, decode and add it into the sum. */
    recvMs: number;
  };
  relay: {
    /** Receive the parameters from its parent. */
    paramsMs: number;
    /** Per child: send it the parameters (the frame as it came). */
    sendMs: number;
    /** Per reply: receive, check, decode and add. */
    recvMs: number;
    /** Once all replies are in: the sum to float32, encode and send one reply up. */
    forwardMs: number;
  };
  worker: {
    /** Receive and decode the parameters. */
    paramsMs: number;
    /** Encode and send the reply. */
    replyMs: number;
    /** Local SGD only (K > 1): the inner optimizer's step, per inner step. */
    innerStepMs: number;
    /** Local SGD only: the parameter change at the end of the K steps. */
    deltaMs: number;
  };
}

export interface Link {
  /** Bytes per millisecond each way (1 Gbit/s = 125,000). */
  bytesPerMs: number;
  /** One-way latency, ms. */
  latencyMs: number;
}

export interface FleetOptions {
  /** One worker's compute per (inner) step, ms. */
  computeMs: number;
  /** Inner steps per sync (local SGD); 1 = synchronous SGD. */
  k?: number;
  /** The network; absent: no transfer time at all (the CPU terms only). */
  link?: Link;
  /** The workers' costs, when not `terms.worker` (the stand-ins of a measured run). */
  worker?: FleetTerms['worker'];
  /** Every event loop (root, relays, workers' loops) shares this many cores, as on the machine of a measured run; default: a core each. */
  cores?: number;
}

export interface FleetResult {
  /** Root's sends start to the next round's sends start, ms. */
  roundMs: number;
  /** roundMs / K. */
  stepMs: number;
  /** K x compute / roundMs: measured tokens/s over N x one worker's at the same compute. */
  efficiency: number;
  workers: number;
  /** When the root added the last reply (before its fixed work). */
  lastReplyMs: number;
  /**
   * Busy time in the round per resource: `root/cpu` (its fixed work not included), `root/out` and `root/in`
   * (its link's two ends), `root.I/cpu` for the relay that is the root's child I (`root.I.J/...` below it),
   * and `wI/cpu` for worker I (or its `cpu`).
   */
  busyMs: Record<string, number>;
}

/** A resource that serves one job at a time, in the order jobs became ready. */
interface Resource {
  free: number;
  busy: number;
  /** An event loop: it also needs one of the machine's cores, where they are counted. */
  cpu: boolean;
}

interface Job {
  at: number;
  seq: number;
  res: Resource;
  dur: number;
  then: (end: number) => void;
}

class Sim {
  private queue: Job[] = [];
  private seq = 0;
  private readonly resources = new Map<string, Resource>();
  /** When each core is free, where every event loop shares a few cores; empty: each loop has its own. */
  private readonly cores: number[];

  constructor(cores = 0) {
    this.cores = new Array<number>(cores).fill(0);
  }

  resource(name: string): Resource {
    let r = this.resources.get(name);
    if (!r) this.resources.set(name, (r = { free: 0, busy: 0, cpu: name.endsWith('/cpu') }));
    return r;
  }

  /** Run `dur` on `res` once it is ready at `at` and the resource is free; then `then(end)`. */
  job(at: number, res: Resource, dur: number, then: (end: number) => void): void {
    this.queue.push({ at, seq: this.seq++, res, dur, then });
  }

  /** Busy time per resource, ms. */
  busy(): Record<string, number> {
    return Object.fromEntries([...this.resources].map(([k, r]) => [k, r.busy]));
  }

  run(): void {
    while (this.queue.length > 0) {
      // Earliest ready first; ties in the order they were queued. Queues are small: a linear scan.
      let b = 0;
      for (let i = 1; i < this.queue.length; i++) {
        const q = this.queue[i];
        const x = this.queue[b];
        if (q.at < x.at || (q.at === x.at && q.seq < x.seq)) b = i;
      }
      const j = this.queue[b];
      this.queue[b] = this.queue[this.queue.length - 1];
      this.queue.pop();
      let start = Math.max(j.at, j.res.free);
      if (j.res.cpu && this.cores.length > 0) {
        // The core that frees first (non-preemptive: a job runs to its end once it has one).
        let c = 0;
        for (let i = 1; i < this.cores.length; i++) if (this.cores[i] < this.cores[c]) c = i;
        start = Math.max(start, this.cores[c]);
        this.cores[c] = start + j.dur;
      }
      const end = start + j.dur;
      j.res.free = end;
      j.res.busy += j.dur;
      j.then(end);
    }
  }
}

/** The root's fixed work per round with K inner steps per sync. */
export function rootFixedMs(t: FleetTerms, k: number): number {
  return k > 1 ? (t.root.fixedLocalMs ?? t.root.fixedMs) : t.root.fixedMs;
}

export function countWorkers(children: readonly FleetNode[]): number {
  return children.reduce((n, c) => n + (c.kind === 'worker' ? 1 : countWorkers(c.children)), 0);
}

/** Simulate one round of the root with `children` (a star: N workers; relays: subtrees). */
export function simulateRound(children: readonly FleetNode[], t: FleetTerms, o: FleetOptions): FleetResult {
  if (children.length === 0) throw new Error('a fleet needs at least one child of the root');
  const k = o.k ?? 1;
  const w = o.worker ?? t.worker;
  const sim = new Sim(o.cores ?? 0);
  const wire = o.link ? t.bytes / o.link.bytesPerMs : 0;
  const latency = o.link?.latencyMs ?? 0;
  let workerIndex = 0;
  let lastReply = 0;

  /**
   * A node with `kids` has its parameters ready on its CPU at `at`: it sends them to each child
   * (its CPU, then its link's sending end, then the latency), the children answer, it adds each reply
   * (its link's receiving end, then its CPU) and calls `done(t)` when it added the last one.
   */
  const serve = (name: string, kids: readonly FleetNode[], at: number, cost: { sendMs: number; recvMs: number }, done: (end: number) => void): void => {
    const cpu = sim.resource(`${name}/cpu`);
    const out = sim.resource(`${name}/out`);
    const inn = sim.resource(`${name}/in`);
    let left = kids.length;
    const reply = (sentAt: number): void => {
      // The reply crosses the link (the receiving end takes one at a time), then this node's CPU adds it.
      sim.job(sentAt + latency, inn, wire, (arrived) =>
        sim.job(arrived, cpu, cost.recvMs, (added) => {
          if (--left === 0) done(added);
        }),
      );
    };
    kids.forEach((kid, i) => {
      const kidName = `${name}.${i}`;
      const cpuName = kid.kind === 'worker' ? (kid.cpu ?? `w${workerIndex++}`) : kidName;
      sim.job(at, cpu, cost.sendMs, (sent) =>
        sim.job(sent, out, wire, (onWire) => {
          const arrives = onWire + latency;
          const kidCpu = sim.resource(`${cpuName}/cpu`);
          if (kid.kind === 'worker') {
            sim.job(arrives, kidCpu, w.paramsMs, (decoded) => {
              // Compute is the worker's own accelerator or core: it waits for nothing but its own loop.
              const inner = k > 1 ? k * (o.computeMs + w.innerStepMs) + w.deltaMs : o.computeMs;
              // A timer, not the loop: stand-ins sharing one loop still compute side by side.
              sim.job(decoded + inner, kidCpu, w.replyMs, reply);
            });
          } else {
            sim.job(arrives, kidCpu, t.relay.paramsMs, (ready) =>
              serve(cpuName, kid.children, ready, t.relay, (summed) => sim.job(summed, kidCpu, t.relay.forwardMs, reply)),
            );
          }
        }),
      );
    });
  };

  serve('root', children, 0, t.root, (end) => (lastReply = end));
  sim.run();
  const roundMs = lastReply + rootFixedMs(t, k);
  return { roundMs, stepMs: roundMs / k, efficiency: (k * o.computeMs) / roundMs, workers: countWorkers(children), lastReplyMs: lastReply, busyMs: sim.busy() };
}

/** N workers straight under the root. */
export function star(n: number): FleetNode[] {
  return Array.from({ length: n }, () => ({ kind: 'worker' as const }));
}

/**
 * N workers under relays: `fanouts` from the top, e.g. [8] = the root holds N/8 relays of 8 workers;
 * [4, 4] with 128 = the root holds 8 relays, each 4 relays of 4 workers. Uneven counts fill in order.
 */
export function tree(n: number, fanouts: readonly number[]): FleetNode[] {
  if (fanouts.length === 0) return star(n);
  const leaf = fanouts.reduce((a, b) => a * b, 1);
  const groups: FleetNode[] = [];
  for (let left = n; left > 0; left -= leaf) {
    const m = Math.min(leaf, left);
    groups.push({ kind: 'relay', children: tree(m, fanouts.slice(1)) });
  }
  return groups;
}
