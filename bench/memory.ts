/**
 * Part `memory`: resident memory and live tfjs tensors of the coordinator and
 * of each worker over many rounds (a small model, so that the round count is
 * large): what a long run would show as a leak. Workers report their own
 * numbers on their /metrics (process_resident_memory_bytes from prom-client's
 * default metrics, dptrain_worker_tensors); the coordinator runs in this process.
 */
import * as tf from '@tensorflow/tfjs';
import { promValue, scrape, startCluster, waitUntil } from './lib/cluster.js';
import { bytes, downsample, fmt, median, pct, sparkline, table } from './lib/stats.js';
import type { BenchContext, BenchPart, Section } from './lib/types.js';

interface Sample {
  round: number;
  seconds: number;
  rss: number;
  heapUsed: number;
  tensors: number;
  tensorBytes: number;
}

interface Series {
  who: string;
  samples: Sample[];
}

/**
 * Growth of a quantity after warm-up. Garbage collection makes the resident
 * memory a sawtooth, so single samples say little: the samples after warm-up
 * are cut into thirds, and the first third is compared with the last by their
 * medians (the typical level) and by their maxima (the peaks of the sawtooth).
 */
function growth(samples: Sample[], key: keyof Sample, warmRound: number) {
  const after = samples.filter((s) => s.round >= warmRound);
  const third = Math.max(1, Math.floor(after.length / 3));
  const first = after.slice(0, third).map((s) => s[key]);
  const last = after.slice(-third).map((s) => s[key]);
  const base = median(first);
  const end = median(last);
  const firstMax = Math.max(...first);
  const lastMax = Math.max(...last);
  return { base, end, firstMax, lastMax, growth: end / base - 1, peakGrowth: lastMax / firstMax - 1, max: Math.max(...after.map((s) => s[key])), roundsPerThird: third * (after[1] ? after[1].round - after[0].round : 0) };
}

export const memoryPart: BenchPart = {
  name: 'memory',
  title: 'Memory: coordinator and worker resident memory and live tensors over 2,000 rounds',
  summary: 'RSS and tf.memory().numTensors of the coordinator and 2 worker processes over many rounds (H=64): growth after warm-up',
  flags: {
    'memory-rounds': { type: 'number', default: 2000, describe: 'rounds to run' },
    'memory-hidden': { type: 'number', default: 64, describe: 'hidden units (a small model makes rounds short)' },
    'memory-every': { type: 'number', default: 50, describe: 'rounds between samples' },
    'memory-warmup': { type: 'number', default: 200, describe: 'rounds of warm-up before growth is measured' },
  },

  async run(ctx: BenchContext): Promise<Section> {
    const total = Math.max(100, Math.round(ctx.flag<number>('memory-rounds')));
    const hidden = Math.round(ctx.flag<number>('memory-hidden'));
    const every = Math.max(1, Math.round(ctx.flag<number>('memory-every')));
    const warm = Math.min(Math.round(ctx.flag<number>('memory-warmup')), Math.floor(total / 2));
    const workers = 2;
    const coordinator: Series = { who: 'coordinator (this process)', samples: [] };
    const workerSeries: Series[] = Array.from({ length: workers }, (_, k) => ({ who: `worker ${k + 1}`, samples: [] }));
    const pending: Promise<void>[] = [];
    let t0 = 0;
    const cluster = await startCluster(ctx, {
      workers,
      workerMetrics: true,
      config: { maxTokens: 10000, batchSize: 32, numSteps: 35, hidden, epochs: 1_000_000 },
      onRound: () => {
        const n = cluster.rounds.length;
        if (n === 1) t0 = performance.now();
        if (n % every !== 0 && n !== 1) return;
        const seconds = (performance.now() - t0) / 1000;
        const mu = process.memoryUsage();
        const tm = tf.memory();
        coordinator.samples.push({ round: n, seconds, rss: mu.rss, heapUsed: mu.heapUsed, tensors: tm.numTensors, tensorBytes: tm.numBytes });
        cluster.workers.forEach((w, k) => {
          const port = w.metricsPort();
          if (port === null) return;
          pending.push(
            scrape(port).then(
              (text) => {
                const rss = promValue(text, 'process_resident_memory_bytes');
                const heap = promValue(text, 'nodejs_heap_size_used_bytes');
                const tensors = promValue(text, 'dptrain_worker_tensors');
                if (rss !== null && heap !== null && tensors !== null) workerSeries[k].samples.push({ round: n, seconds, rss, heapUsed: heap, tensors, tensorBytes: NaN });
              },
              () => undefined,
            ),
          );
        });
        if (n >= total) void cluster.stop();
      },
    });
    await waitUntil(() => cluster.rounds.length >= total, 570_000, `${total} rounds`);
    await cluster.stop();
    await Promise.all(pending);
    for (const s of workerSeries) s.samples.sort((a, b) => a.round - b.round);
    const seconds = coordinator.samples[coordinator.samples.length - 1].seconds;
    const all = [coordinator, ...workerSeries];
    if (workerSeries.some((s) => s.samples.length < 4)) throw new Error('the workers did not report their memory (no /metrics samples)');

    // ---- report
    const rows = all.map((s) => {
      const rss = growth(s.samples, 'rss', warm);
      const heap = growth(s.samples, 'heapUsed', warm);
      const tens = growth(s.samples, 'tensors', warm);
      return { who: s.who, rss, heap, tens, tensorsFirst: s.samples[0].tensors, rssSpark: sparkline(downsample(s.samples, 40).map((x) => x.rss)) };
    });
    const worstOf = (r: (typeof rows)[number]) => Math.max(r.rss.growth, r.rss.peakGrowth, r.tens.growth, r.tens.peakGrowth);
    const worst = Math.max(...rows.map(worstOf));
    const md: string[] = [];
    md.push(
      `Setup: one coordinator in the benchmark process and ${workers} \`worker join\` processes (backend ${ctx.backend.name}) with their own \`/metrics\`; the d2l data (Time Machine, first 10,000 tokens), batch 32 (16 streams per worker), T=35, ` +
        `**H=${hidden}** so that ${fmt(total)} rounds take ${fmt(seconds, 0)} s. Every ${every} rounds: the coordinator's \`process.memoryUsage()\` and \`tf.memory()\`, and each worker's ` +
        `\`process_resident_memory_bytes\`, \`nodejs_heap_size_used_bytes\` and \`dptrain_worker_tensors\` scraped from its \`/metrics\`. ` +
        `Garbage collection makes resident memory a sawtooth (see the last column), so after a warm-up of ${warm} rounds the samples are cut into thirds (${fmt(rows[0].rss.roundsPerThird)} rounds each) and the last third is compared with the first, by median (the typical level) and by maximum (the peaks).`,
    );
    md.push('');
    md.push(
      table(
        ['process', 'RSS, first third (median / max)', 'RSS, last third (median / max)', 'growth of the median', 'growth of the peaks', 'JS heap, growth of the median', 'live tensors (first sample → first third → last third)', 'RSS over the run'],
        rows.map((r) => [
          r.who,
          `${bytes(r.rss.base)} / ${bytes(r.rss.firstMax)}`,
          `${bytes(r.rss.end)} / ${bytes(r.rss.lastMax)}`,
          `**${pct(r.rss.growth, 1)}**`,
          `**${pct(r.rss.peakGrowth, 1)}**`,
          pct(r.heap.growth, 1),
          `${fmt(r.tensorsFirst)} → ${fmt(r.tens.base)} → **${fmt(r.tens.end)}**`,
          `\`${r.rssSpark}\``,
        ]),
        ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
      ),
    );
    md.push('');
    md.push(
      `- **largest growth after warm-up: ${pct(worst, 1)}** (resident memory or live tensors, by median or by peak, any process); target < 5%${worst < 0.05 ? ': met' : ': **missed**'}. ` +
        (rows.every((r) => r.tens.end === r.tens.base && r.tens.max === r.tens.base)
          ? `Live tensors stay at a constant count in every process after warm-up: each step's intermediate tensors are released by \`tf.tidy\`, and the per-round parameter tensors are replaced, not accumulated` +
            (rows[0].tensorsFirst > 100 ? ` (the coordinator's count includes what earlier parts left in this process, and it does not change during this one).` : '.')
          : `Live tensors change after warm-up in ${rows.filter((r) => r.tens.end !== r.tens.base || r.tens.max !== r.tens.base).map((r) => r.who).join(', ')}: see the JSON series.`),
    );

    return {
      markdown: md.join('\n'),
      result: { rounds: total, hidden, every, warmupRounds: warm, seconds, growth: rows.map(({ rssSpark: _s, ...r }) => r), series: all },
    };
  },
};
