/**
 * Part `fleet`: efficiency of one coordinator with many workers, star, relays
 * and local SGD, from a model of the round whose every term is measured here,
 * checked against runs this machine can host.
 *
 * 1. Terms (bench/lib/fleet-terms.ts): the root's, a relay's and a worker's CPU
 *    per message and per round, by compute time, with the code they run today.
 * 2. Measured runs (bench/lib/fleet-runs.ts): stand-in workers answering each step
 *    a compute time after it arrived, under the in-process coordinator directly
 *    (1 to 16) and behind `dptrain relay` processes (2 relays x 4; a relay under a
 *    relay), and a local SGD round; next to the model of the same set-up (the
 *    stand-ins of one process share its event loop; no link: loopback's cost is in
 *    the socket terms).
 * 3. The model (bench/lib/fleet-model.ts, a discrete-event simulation of one round:
 *    staggered sends, replies added while others are on the way) for 8, 32 and 128
 *    workers on their own machines, on 10 and 1 Gbit/s links: star, relays, two
 *    levels of relays, local SGD with K = 8, 32 and 128 (DiLoCo's own runs sync every
 *    500 inner steps), and which reach the targets.
 *
 * Efficiency = measured tokens/s / (N x one stand-in's tokens/s at the same
 * compute time) = K x compute / round period.
 */
import os from 'node:os';
import { waitForQuiet, LOAD_FLAGS, round2 } from './lib/cluster.js';
import { fmt, pct, table } from './lib/stats.js';
import type { BenchContext, BenchPart, Section } from './lib/types.js';
import { measureTerms, STREAMS, STEPS } from './lib/fleet-terms.js';
import { measureLayout, layoutTree, type FleetRun, type Layout } from './lib/fleet-runs.js';
import { rootFixedMs, simulateRound, star, tree, type FleetResult, type FleetTerms, type Link } from './lib/fleet-model.js';

const LINKS: [string, Link][] = [
  ['10 Gbit/s', { bytesPerMs: 10e9 / 8 / 1000, latencyMs: 0.05 }],
  ['1 Gbit/s', { bytesPerMs: 1e9 / 8 / 1000, latencyMs: 0.05 }],
];
const TOPOLOGIES: [string, number[]][] = [
  ['star', []],
  ['relays of 8', [8]],
  ['relays of 16', [16]],
  ['two levels of relays of 4 (8 x 4 x 4 at 128)', [4, 4]],
];
/** Inner steps per sync. The `slowlink` part measures convergence at K = 8 and 32; 128 is here for throughput only. */
const KS = [1, 8, 32, 128];
const SIZES = [8, 32, 128];

/** The busiest resource of a modelled round (the root's fixed work included), as "what, ms". */
function busiest(r: FleetResult, t: FleetTerms, k: number): [string, number] {
  const groups: Record<string, number> = {};
  for (const [name, ms] of Object.entries(r.busyMs)) {
    const [node, what] = name.split('/');
    const kind = node === 'root' ? 'root' : node.startsWith('root.') ? 'a relay' : 'a worker';
    if (kind === 'a worker') continue;
    const label = `${kind}'s ${what === 'cpu' ? 'CPU' : what === 'out' ? 'link out' : 'link in'}`;
    const v = ms + (name === 'root/cpu' ? rootFixedMs(t, k) : 0);
    groups[label] = Math.max(groups[label] ?? 0, v);
  }
  return Object.entries(groups).reduce((a, b) => (b[1] > a[1] ? b : a));
}

/** Per optimizer step, ms: the workers' own local SGD overhead (inner optimizer, the change) and everything else beyond compute (the sync). */
function split(r: FleetResult, t: FleetTerms, computeMs: number, k: number): { innerMs: number; syncMs: number } {
  const inner = k > 1 ? k * t.worker.innerStepMs + t.worker.deltaMs : 0;
  return { innerMs: inner / k, syncMs: (r.roundMs - k * computeMs - inner) / k };
}

function limitText(r: FleetResult, t: FleetTerms, computeMs: number, k: number): string {
  const { innerMs, syncMs } = split(r, t, computeMs, k);
  const [what, ms] = busiest(r, t, k);
  return `${k > 1 ? `inner ${fmt(innerMs, 1)} + ` : ''}sync ${fmt(syncMs, 1)} ms per step; busiest: ${what}, ${fmt(ms, 0)} ms per round`;
}

export const fleetPart: BenchPart = {
  name: 'fleet',
  title: 'Fleet: 8 to 128 workers with 68 ms and 10 ms of compute, star, relays and local SGD, modelled from measured terms',
  summary: 'a discrete-event model of the round (root, relays, workers, links) from terms measured here, checked against stand-in runs (star 1 to 16, relays, local SGD); efficiency at 8, 32, 128 workers',
  flags: {
    'fleet-workers': { type: 'string', default: '1,2,4,8,16', describe: 'worker counts measured with stand-ins, star' },
    'fleet-compute': { type: 'string', default: '68,10', describe: 'stand-in compute times, ms' },
    'fleet-rounds': { type: 'number', default: 20, describe: 'measured rounds per run' },
    'fleet-relays': { type: 'boolean', default: true, describe: 'also measure stand-ins behind relay processes, and a local SGD run' },
    ...LOAD_FLAGS,
  },
  async run(ctx: BenchContext): Promise<Section> {
    const counts = ctx.flag<string>('fleet-workers').split(',').map(Number).filter((x) => x > 0);
    const computes = ctx.flag<string>('fleet-compute').split(',').map(Number).filter((x) => x > 0);
    const rounds = Math.max(5, ctx.flag<number>('fleet-rounds'));
    const quiet = await waitForQuiet(ctx, ctx.flag<number>('load-threshold'), ctx.flag<number>('load-wait'));
    const terms = await measureTerms(ctx.repoRoot);
    ctx.log(`terms measured (load ${terms.load.map((x) => x.toFixed(2)).join(' to ')}): ${JSON.stringify(terms.fleet)}`);
    const t = terms.fleet;

    const plans: [string, Layout[], number, number][] = [];
    for (const c of computes) for (const n of counts) plans.push([`star, ${n}`, [{ standIns: n }], c, 1]);
    if (ctx.flag<boolean>('fleet-relays')) {
      const c = computes[0];
      plans.push(['2 relays x 4', [{ relay: [{ standIns: 4 }] }, { relay: [{ standIns: 4 }] }], c, 1]);
      plans.push(['relay under a relay, 4', [{ relay: [{ relay: [{ standIns: 4 }] }] }], c, 1]);
      plans.push(['star, 4, local SGD K=8', [{ standIns: 4 }], computes[computes.length - 1], 8]);
    }
    const cores = os.cpus().length;
    const runs: { run: FleetRun; model: FleetResult; shared: FleetResult; layout: Layout[] }[] = [];
    for (const [name, layout, c, k] of plans) {
      const run = await measureLayout(ctx, name, layout, c, k, 5, rounds);
      const model = simulateRound(layoutTree(layout), t, { computeMs: c, k, worker: terms.standIn });
      const shared = simulateRound(layoutTree(layout), t, { computeMs: c, k, worker: terms.standIn, cores });
      ctx.log(`${name}: breakdown ${JSON.stringify(run.breakdown)}`);
      ctx.log(`${name}, ${c} ms${k > 1 ? `, K=${k}` : ''}: period ${fmt(run.periodMs, 1)} ms (model ${fmt(model.roundMs, 1)}, on ${cores} cores ${fmt(shared.roundMs, 1)}), efficiency ${pct(run.efficiency, 1)} (model ${pct(model.efficiency, 1)}), load ${run.load.toFixed(2)}`);
      runs.push({ run, model, shared, layout });
    }
    const loadEnd = os.loadavg()[0];

    const md: string[] = [];
    md.push(
      `Setup: the LSTM with H=256, V=28 (${fmt(t.bytes / 1e6, 2)} MB per parameters frame, float32 on the wire), ${STREAMS} streams x ${STEPS} steps per worker, SGD; backend ${ctx.backend.name}. ` +
        `Load: ${quiet.quiet ? `${quiet.load} when measuring began` : `**still ${quiet.load} after waiting ${quiet.waitedSeconds} s**`}, ${round2(loadEnd)} at the end; each run's below.`,
    );
    md.push('');
    md.push(
      `**Terms**, measured first in this part by compute time (min of wall clock and this process's CPU time, median of batches in a shuffled order; load ${terms.load.map((x) => x.toFixed(2)).join(' to ')}). ` +
        'Sockets are real: a WebSocket to a peer process on loopback, whose kernel work partly lands on the sender; the pieces are what the root (coordinator.ts), a relay (relay.ts) and a worker (WorkerClient, ShardComputer) do today, so a faster coordinator shows here on the next run:',
    );
    md.push('');
    md.push(table(['piece', 'ms'], Object.entries(terms.pieces).map(([k, v]) => [k, fmt(v, 3)]), ['l', 'r']));
    md.push('');
    md.push(
      'Model terms from these: root per child send = a parameters frame\'s send; root per reply = receive and add; root fixed per round = mean, clip, optimizer, read and encode (under local SGD: the outer optimizer, Nesterov as the default, instead); relay: receive the parameters, per child the same send, per reply its receive and add (the one-pass check-decode-add the root uses), forward = its sum written into its reply frame, one send; worker: receive, decode and build the stepper, then encode and send its reply; local SGD adds the inner step per inner step and the change once. A stand-in of the measured runs only receives the parameters frame and sends a precomputed reply.',
    );
    md.push('');
    md.push(
      '**Model against measured runs.** The model of each run is the run\'s own set-up: the root, each relay process, and each stand-in process as one event loop shared by its connections; no link (loopback\'s cost is in the socket terms). CPU per round: the root from this process, relays and stand-ins from /proc (10 ms ticks), against the model\'s busy time of the same loop.',
    );
    md.push('');
    md.push(
      table(
        ['run', 'compute ms', 'workers', 'period ms', 'model ms', `model, ${cores} cores`, 'coordinator\'s round ms', 'efficiency', 'model', 'root CPU ms/round', 'model', 'relay CPU', 'model', 'stand-in CPU', 'model', 'load'],
        runs.map(({ run: r, model: m, shared: sh }) => {
          const relayModel = Object.entries(m.busyMs).filter(([k]) => k.startsWith('root.') && k.endsWith('/cpu')).map(([, v]) => v);
          const standModel = Object.entries(m.busyMs).filter(([k]) => k.startsWith('standins-')).map(([, v]) => v);
          const list = (xs: number[]) => (xs.length ? xs.map((x) => fmt(x, 1)).join(', ') : '–');
          return [r.name, fmt(r.computeMs) + (r.k > 1 ? ` (x${r.k})` : ''), fmt(r.workers), fmt(r.periodMs, 1), fmt(m.roundMs, 1), fmt(sh.roundMs, 1), fmt(r.breakdown.totalMs, 1), pct(r.efficiency, 1), pct(m.efficiency, 1), fmt(r.rootCpuMs, 1), fmt(m.busyMs['root/cpu'] + rootFixedMs(t, r.k), 1), list(r.relayCpuMs), list(relayModel), list(r.standInCpuMs), list(standModel), r.load.toFixed(2)];
        }),
        ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
      ),
    );
    md.push('');
    md.push(
      `Where they differ: this machine has ${cores} cores for the root, every relay and every stand-in process (and, at times, other people's jobs), while the model gives each loop a core of its own; so a run with more busy loops than cores is slower than its model, by the CPU the others took (the stand-in and relay CPU columns). The column "model, ${cores} cores" is the same model with every loop waiting for one of ${cores} cores (non-preemptive; other processes on the machine not counted). A round also has costs the terms leave out (the step messages, heartbeats, timers, the coordinator's bookkeeping per round), which the root's CPU column shows against the model's; the coordinator's own round (its RoundBreakdown total, from the first send to the optimizer step) against the period shows the time between its rounds.`,
    );
    md.push('');

    // The fleet: every worker and relay on a machine of its own.
    const model: Record<string, unknown>[] = [];
    const rows: string[][] = [];
    const best = new Map<string, [string, number, string, string][]>();
    for (const c of computes) {
      for (const [tname, fan] of TOPOLOGIES) {
        for (const k of KS) {
          const cells: string[] = [];
          for (const [lname, link] of LINKS) {
            const res = SIZES.map((n) => simulateRound(fan.length ? tree(n, fan) : star(n), t, { computeMs: c, k, link }));
            cells.push(res.map((r) => pct(r.efficiency, 0)).join(' / '));
            if (lname === LINKS[0][0]) cells.push(limitText(res[2], t, c, k));
            res.forEach((r, i) => {
              model.push({ computeMs: c, topology: tname, k, link: lname, workers: SIZES[i], efficiency: r.efficiency, roundMs: r.roundMs });
              const key = `${c}/${SIZES[i]}/${lname}`;
              best.set(key, [...(best.get(key) ?? []), [`${tname}${k > 1 ? `, local SGD K=${k}` : ''}`, r.efficiency, k > 1 ? 'local' : 'sync', limitText(r, t, c, k)]]);
            });
          }
          rows.push([fmt(c), tname, k === 1 ? 'synchronous' : `local SGD K=${k}`, ...cells]);
        }
      }
    }
    md.push(
      '**The fleet, modelled** (every worker and relay on its own machine with the measured terms; workers decode, compute, encode as a real worker; links with 0.05 ms latency, each end carrying one message at a time). Efficiency at 8 / 32 / 128 workers; at 128 on 10 Gbit/s, where the time beyond compute goes per optimizer step (inner: the workers\' own inner optimizer steps and parameter change under local SGD; sync: everything else, sends, transfers, decoding, adding, forwarding, the root\'s fixed work) and the busiest event loop or link end per round (the root\'s fixed work included):',
    );
    md.push('');
    md.push(table(['compute ms', 'topology', 'sync', '10 Gbit/s', 'at 128 workers, 10 Gbit/s: beyond compute', '1 Gbit/s'], rows, ['r', 'l', 'l', 'r', 'l', 'r']));
    md.push('');
    md.push('K = 128 is a throughput figure only: what local SGD costs in convergence is measured by part `slowlink`, at K = 8 and 32 (DiLoCo itself syncs every 500 inner steps).');
    md.push('');
    const targets: [string, number, number, number, boolean][] = [
      ['≥ 90% at 32 workers, 68 ms compute', 68, 32, 0.9, false],
      ['≥ 80% at 128 workers, 68 ms compute', 68, 128, 0.8, false],
      ['≥ 80% at 32 workers, 10 ms compute, with local SGD', 10, 32, 0.8, true],
    ];
    const verdicts = [];
    for (const [what, c, n, goal, localOnly] of targets) {
      if (!computes.includes(c)) continue;
      const parts: string[] = [];
      for (const [lname] of LINKS) {
        const cands = (best.get(`${c}/${n}/${lname}`) ?? []).filter(([, , kind]) => !localOnly || kind === 'local');
        const met = cands.filter(([, e]) => e >= goal);
        const top = cands.reduce((a, b) => (b[1] > a[1] ? b : a));
        verdicts.push({ what, link: lname, met: met.map(([x, e]) => ({ config: x, efficiency: e })), best: top[0], bestEfficiency: top[1], limit: top[3] });
        parts.push(`on ${lname}: ${met.length ? `reached by ${met.map(([x, e]) => `${x} (${pct(e, 0)})`).join('; ')}` : `**not reached**; best ${top[0]} at ${pct(top[1], 0)} (${top[3]})`}`);
      }
      md.push(`- **${what}** (model): ${parts.join('. ')}.`);
      if (localOnly) {
        // What-if: the same fleets with an inner step that costs the worker nothing beyond its compute.
        const free: FleetTerms = { ...t, worker: { ...t.worker, innerStepMs: 0, deltaMs: 0 } };
        const alt = TOPOLOGIES.flatMap(([tname, fan]) => KS.filter((k) => k > 1).map((k) => [`${tname}, K=${k}`, simulateRound(fan.length ? tree(n, fan) : star(n), free, { computeMs: c, k, link: LINKS[0][1] }).efficiency] as [string, number]));
        const top = alt.reduce((a, b) => (b[1] > a[1] ? b : a));
        verdicts.push({ what, whatIf: 'inner step free', best: top[0], bestEfficiency: top[1] });
        md.push(`  With an inner step that cost the worker nothing beyond its compute (the same fleets, 10 Gbit/s), the best would be ${top[0]} at ${pct(top[1], 0)}.`);
      }
    }
    const cap = (c: number) => pct(c / (c + t.worker.innerStepMs), 0);
    md.push(
      `- What limits them. Synchronous rounds pay, once per round, the chain send, the worker's decode and new stepper (${fmt(t.worker.paramsMs, 1)} ms), compute, its encode and send (${fmt(t.worker.replyMs, 1)} ms), the adds, the root's fixed work (${fmt(t.root.fixedMs, 1)} ms), and per child of a node its send and its receive-and-add ` +
        `(root ${fmt(t.root.sendMs + t.root.recvMs, 2)} ms; relay ${fmt(t.relay.sendMs + t.relay.recvMs, 2)} ms: the same one-pass check-decode-add as the root, into its own sum), once per level of relays. ` +
        `Local SGD divides that by K, but each inner step costs the worker ${fmt(t.worker.innerStepMs, 1)} ms of its own (the inner SGD step on the flat parameters and a new stepper on them; the model charges every inner step, though a round's first runs on the stepper built when the parameters arrived): whatever K and topology, efficiency stays below compute / (compute + inner) = ${computes.map((c) => `${cap(c)} at ${c} ms`).join(', ')}.`,
    );
    if (quiet.load > 1) {
      md.push(
        `- Load: the terms were measured at a load average of ${terms.load[0].toFixed(2)} on ${os.cpus().length} cores; a term that waited for a core is counted in CPU time only, but shared caches still slow it. Re-run on a quiet machine for figures that stand for this code.`,
      );
    }
    return { markdown: md.join('\n'), result: { quiet, loadEnd, terms, runs: runs.map(({ run, model: m, shared: sh }) => ({ ...run, modelRoundMs: m.roundMs, modelEfficiency: m.efficiency, modelBusyMs: m.busyMs, modelSharedCoresRoundMs: sh.roundMs })), model, verdicts } };
  },
};
