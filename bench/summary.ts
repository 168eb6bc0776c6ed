/**
 * Part `summary`: the targets at a glance, read from the other parts' last
 * results (bench/results/NAME.json). It measures nothing; when several parts
 * run together it runs after them (bench/run.ts), and its section sits at the
 * top of BENCHMARKS.md.
 */
import fs from 'node:fs';
import path from 'node:path';
import { bytes, fmt, pct, table } from './lib/stats.js';
import type { BenchContext, BenchPart, Section } from './lib/types.js';

interface Stored {
  command: string;
  env: { date: string; loadAverage: number[] };
  result: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

function load(ctx: BenchContext, name: string): Stored | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(ctx.repoRoot, 'bench', 'results', `${name}.json`), 'utf8')) as Stored;
  } catch {
    return null;
  }
}

const mark = (ok: boolean | null) => (ok === null ? '–' : ok ? 'met' : '**missed**');

export const summaryPart: BenchPart = {
  name: 'summary',
  title: 'Targets at a glance',
  summary: 'one table of every target and its latest measurement, from bench/results/*.json (measures nothing)',

  async run(ctx: BenchContext): Promise<Section> {
    const rows: (string | number)[][] = [];
    const add = (part: string, what: string, target: string, value: string, ok: boolean | null) => rows.push([what, target, value, mark(ok), `\`${part}\``]);
    const when = (s: Stored | null) => (s ? s.env.date.slice(0, 10) : '');
    const dates: Record<string, string> = {};

    const step = load(ctx, 'step');
    if (step) {
      dates.step = when(step);
      const r = step.result;
      add('step', 'hand-derived step vs tfjs autodiff (wasm, H=256, B=32, T=35)', '≥ 8×', `${fmt(r.ratioHandOverAutodiff.compute, 1)}× (${fmt(r.hand.tokensPerSecondCompute)} tokens/s)`, r.ratioHandOverAutodiff.compute >= 8);
      add('step', 'hand-derived step vs the matMul roofline', '≥ 75%', pct(r.roofline.compute.fraction), r.roofline.compute.fraction >= 0.75);
    }
    const models = load(ctx, 'models');
    if (models) {
      dates.models = when(models);
      const st = models.result.steps as { cell: string; ratio: number; rooflineFraction: number }[];
      const each = (f: (x: (typeof st)[number]) => string) => st.map((x) => `${x.cell.toUpperCase()} ${f(x)}`).join(', ');
      add('models', 'each cell\'s hand step vs the same cell through tfjs autodiff (wasm, H=256)', '≥ 8×', each((x) => `${fmt(x.ratio, 1)}×`), st.every((x) => x.ratio >= 8));
      add('models', 'each cell\'s hand step vs the matMul roofline', '≥ 75%', each((x) => pct(x.rooflineFraction)), st.every((x) => x.rooflineFraction >= 0.75));
    }
    const d2l = load(ctx, 'd2l');
    if (d2l) {
      dates.d2l = when(d2l);
      const r = d2l.result;
      add('d2l', 'd2l reproduction: epoch of train perplexity ≤ 1.3 (in-process, 500 epochs)', 'within 500', r.epochReachingTarget === null ? 'not reached' : `epoch ${r.epochReachingTarget}, final ${r.finalTrainPerplexity.toFixed(3)}`, r.epochReachingTarget !== null);
    }
    const sc = load(ctx, 'scaling');
    if (sc) {
      dates.scaling = when(sc);
      const r = sc.result;
      add('scaling', 'weak scaling, 2 workers × 32 streams over 1 × 32', '≥ 1.8×', `${fmt(r.weakScaling.median, 2)}× (${fmt(r.tokensPerSecond.W2)} vs ${fmt(r.tokensPerSecond.W1)} tokens/s)`, r.weakScaling.median >= 1.8);
      add('scaling', 'strong scaling, global batch 32 on 2 workers over 1', '(2× ideal)', `${fmt(r.strongScaling.median, 2)}×`, null);
      add('scaling', 'coordinator overhead per round, 2 workers × 32 streams (16 streams)', '≤ 5%', `${pct(r.overhead.W2, 1)} (${pct(r.overhead.S2, 1)})${r.ownOverhead ? `; the coordinator's own work ${pct(r.ownOverhead.W2, 1)} (${pct(r.ownOverhead.S2, 1)})` : ''}`, r.overhead.W2 <= 0.05);
    }
    const fi = load(ctx, 'fanin');
    if (fi) {
      dates.fanin = when(fi);
      const r = fi.result;
      const perReply = (r.wirePath ?? []) as { key: string; ms: number; skipped?: boolean }[];
      const replyMs = perReply.filter((x) => ['decodeGrads', 'decodeTensor', 'sum'].includes(x.key) && !x.skipped).reduce((a, x) => a + x.ms, 0);
      if (replyMs > 0) add('fanin', 'coordinator CPU per 1.2 MB float32 gradient (decode and validate the message and the state, check and add the gradient)', '≤ 0.5 ms', `${fmt(replyMs, 2)} ms`, replyMs <= 0.5);
      add('fanin', 'gradient traffic through one coordinator (loopback, stand-in workers)', '≥ 1 GB/s', `${bytes(r.peakGradientBytesPerSecond)}/s`, r.peakGradientBytesPerSecond >= 1e9);
      add('fanin', 'round time vs workers (1 to 32)', 'linear or better', `${fmt(r.fit.a, 1)} ms + ${fmt(r.fit.b, 2)} ms per worker`, r.linear);
    }
    const fl = load(ctx, 'fleet');
    if (fl) {
      dates.fleet = when(fl);
      const verdicts = (fl.result.verdicts ?? []) as { what: string; link?: string; whatIf?: string; met?: { config: string; efficiency: number }[]; best: string; bestEfficiency: number }[];
      for (const v of verdicts.filter((x) => x.link === '10 Gbit/s' && x.met)) {
        const m = v.met!;
        const top = m.length ? m.reduce((a, b) => (b.efficiency > a.efficiency ? b : a)) : null;
        const value = top ? `${pct(top.efficiency, 0)}: ${top.config}${m.length > 1 ? ` (and ${m.length - 1} more)` : ''}` : `best ${pct(v.bestEfficiency, 0)}: ${v.best}`;
        add('fleet', `fleet efficiency, model from measured terms, 10 Gbit/s links: ${v.what.replace(/^[≥<>]+\s*[\d.]+%\s*at\s*/, '')}`, v.what.split(' at ')[0], value, m.length > 0);
      }
    }
    const sl = load(ctx, 'slowlink');
    if (sl) {
      dates.slowlink = when(sl);
      // The synchronous run sets the target (its final validation perplexity): its time is its whole training time.
      const r = sl.result as { latencyMs: number; mbit: number; runs: { syncEvery: number; reachedSeconds: number | null; trainSeconds: number }[] };
      const sync = r.runs.find((x) => x.syncEvery === 1);
      for (const x of r.runs.filter((y) => y.syncEvery > 1)) {
        const ratio = sync && x.reachedSeconds !== null ? x.reachedSeconds / sync.trainSeconds : null;
        add('slowlink', `slow links (${r.latencyMs} ms one way, ${r.mbit} Mbit/s): local SGD K=${x.syncEvery}, wall time to the synchronous run's final validation perplexity`, '≤ 1/3 of synchronous', ratio === null ? 'not reached' : `${fmt(ratio, 2)}× (${fmt(x.reachedSeconds!, 0)} s vs ${fmt(sync!.trainSeconds, 0)} s)`, ratio !== null && ratio <= 1 / 3);
      }
    }
    const wi = load(ctx, 'wire');
    if (wi) {
      dates.wire = when(wi);
      const r = wi.result;
      const rr = r.rows as { dtype: string; delta: number; gradientBytesPerRound: number }[];
      add('wire', `half precision on the wire: train perplexity vs float32 after ${r.comparedAtEpoch} epochs`, `within ${r.tolerance}`, rr.slice(1).map((x) => `${x.dtype} ${x.delta >= 0 ? '+' : ''}${x.delta.toFixed(3)}`).join(', '), r.met);
      add('wire', 'gradient bytes per round, float16 / bfloat16 vs float32', '(half)', rr.slice(1).map((x) => `${x.dtype} ${pct(x.gradientBytesPerRound / rr[0].gradientBytesPerRound, 0)}`).join(', '), null);
    }
    for (const [name, label] of [['ttp', 'SGD'], ['ttp-adam', 'Adam lr 0.01']] as const) {
      const t = load(ctx, name);
      if (!t) continue;
      dates[name] = when(t);
      const r = t.result;
      const d = r.distributed;
      const l = r.local;
      const fmtRun = (x: { reachedEpoch: number | null; reachedSeconds: number | null; curve: unknown[] }) => (x.reachedEpoch === null ? `not reached (${x.curve.length} epochs)` : `${fmt(x.reachedSeconds!, 0)} s, epoch ${x.reachedEpoch}`);
      add(name, `time to train perplexity ≤ 1.3, d2l setup, ${label}: coordinator + 2 workers vs in-process`, '–', `${fmtRun(d)} vs ${fmtRun(l)}${r.speedup ? ` (${fmt(r.speedup, 2)}×)` : ''}`, null);
    }
    const tf = load(ctx, 'ttp-full');
    if (tf) {
      dates['ttp-full'] = when(tf);
      const r = tf.result;
      const best = (x: { curve: { validationPerplexity?: number }[] }) => Math.min(...x.curve.map((p) => p.validationPerplexity ?? Infinity));
      add('ttp-full', `whole book, ${r.timeLimit} s each: best validation perplexity, coordinator + 2 workers vs in-process`, '–', `${best(r.distributed).toFixed(2)} (${r.distributed.curve.length} epochs) vs ${best(r.local).toFixed(2)} (${r.local.curve.length} epochs)`, null);
    }
    const me = load(ctx, 'memory');
    if (me) {
      dates.memory = when(me);
      const r = me.result;
      const g = r.growth as { who: string; rss: { growth: number }; tens: { growth: number } }[];
      const worst = Math.max(...g.map((x) => Math.max(x.rss.growth, x.tens.growth)));
      add('memory', `RSS and live tensors after warm-up, ${fmt(r.rounds)} rounds (H=${r.hidden}), coordinator and 2 workers`, '< 5% growth', `${pct(worst, 1)} at most`, worst < 0.05);
    }
    const md: string[] = [];
    md.push(`From each part's last run (\`bench/results/NAME.json\`; dates: ${Object.entries(dates).map(([k, v]) => `${k} ${v}`).join(', ') || 'none yet'}). The sections below have the set-up, the load during the run and the explanations.`);
    md.push('');
    md.push(table(['measure', 'target', 'measured', '', 'part'], rows, ['l', 'l', 'l', 'l', 'l']));
    return { markdown: md.join('\n'), result: { rows } };
  },
};
