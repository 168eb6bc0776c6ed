/**
 * Part `wire`: the wire dtype (--wire-dtype float32 | float16 | bfloat16).
 * Bytes per round for each, and whether half precision on the wire (both the
 * parameters sent to the workers and the gradients sent back) changes where
 * training ends: the d2l setup, coordinator + 2 worker processes (16 streams
 * each), the same number of epochs with each dtype, one after the other.
 */
import os from 'node:os';
import { paramCount } from '../src/shared/model/char-lstm/params.js';
import { round2, waitForQuiet, LOAD_FLAGS } from './lib/cluster.js';
import { bytes, fmt, pct, table } from './lib/stats.js';
import { runDistributed, type TrainRun } from './lib/train-runs.js';
import type { BenchContext, BenchPart, Section } from './lib/types.js';

const DTYPES = ['float32', 'float16', 'bfloat16'] as const;
const TOLERANCE = 0.05;
const D2L = { maxTokens: 10000, valFraction: 0.1, batchSize: 32, numSteps: 35, hidden: 256, optimizer: 'sgd', lr: 1, clip: 1, partition: 'sequential', seed: 0 };

export const wirePart: BenchPart = {
  name: 'wire',
  title: 'Wire format: float32, float16 and bfloat16 on the wire, bytes per round and the d2l run',
  summary: 'bytes per round for each --wire-dtype, and the train perplexity the d2l setup reaches with each (coordinator + 2 workers)',
  flags: {
    'wire-epochs': { type: 'number', default: 200, describe: 'epochs of the d2l setup per dtype (500 is d2l\'s; the default fits three runs in 10 minutes)' },
    'wire-time-limit': { type: 'number', default: 180, describe: 'seconds of training per dtype after which a run stops at the end of its epoch (then all are compared at the epoch they all reached)' },
    'wire-eval-every': { type: 'number', default: 25, describe: 'epochs between logged perplexities (train and validation)' },
    ...LOAD_FLAGS,
  },

  async run(ctx: BenchContext): Promise<Section> {
    const epochs = Math.round(ctx.flag<number>('wire-epochs'));
    const timeLimit = ctx.flag<number>('wire-time-limit');
    const evalEvery = Math.max(1, Math.round(ctx.flag<number>('wire-eval-every')));
    // A part stays under 10 minutes: a short wait for a quiet machine, then the three runs share what is left.
    const partStart = performance.now();
    const left = () => 580 - (performance.now() - partStart) / 1000;
    const quiet = await waitForQuiet(ctx, ctx.flag<number>('load-threshold'), Math.min(ctx.flag<number>('load-wait'), 60));
    const runs: { dtype: (typeof DTYPES)[number]; run: TrainRun; load: number[] }[] = [];
    for (const [k, dtype] of DTYPES.entries()) {
      const load = os.loadavg().map(round2);
      ctx.log(`${dtype}: ${epochs} epochs (load ${load[0]})`);
      const limit = Math.min(timeLimit, (left() - 10 * (DTYPES.length - k)) / (DTYPES.length - k));
      const run = await runDistributed(ctx, { config: { ...D2L, epochs, wireDtype: dtype }, target: null, timeLimitSeconds: limit, evalEvery, workers: 2, log: ctx.log });
      runs.push({ dtype, run, load });
    }
    const P = paramCount({ vocabSize: 28, hidden: 256 });
    // Compare at the last logged epoch that every run reached.
    const common = Math.min(...runs.map((r) => r.run.curve[r.run.curve.length - 1]?.epoch ?? 0));
    const pointAt = (r: TrainRun) => r.curve.filter((p) => p.epoch <= common).at(-1)!;
    const ref = pointAt(runs[0].run);
    const rows = runs.map(({ dtype, run }) => {
      const p = pointAt(run);
      return {
        dtype,
        gradientBytesPerRound: run.gradientBytes! / run.steps,
        parameterBytesPerRound: run.parameterBytes! / run.steps,
        trainPerplexity: p.trainPerplexity,
        validationPerplexity: p.validationPerplexity,
        delta: p.trainPerplexity - ref.trainPerplexity,
        epoch: p.epoch,
        roundMs: run.roundMsMedian!,
        seconds: p.elapsedSeconds,
      };
    });
    const ok = rows.every((r) => Math.abs(r.delta) <= TOLERANCE);
    const base = rows[0];

    const md: string[] = [];
    md.push(
      `Setup: the d2l setup (The Time Machine, first 10,000 tokens with the last 10% held out, batch 32, 35 steps, hidden 256, SGD lr 1, clip 1, seed 0) trained by an in-process coordinator and 2 \`worker join\` processes (16 streams each, backend ${ctx.backend.name}), ` +
        `once per wire dtype, one after the other, **${fmt(epochs)} epochs each** (d2l trains 500; three 500-epoch runs do not fit the 10 minutes a part may take on this machine: \`--wire-epochs 500\` runs them all). ` +
        `The dtype applies to the parameters sent to the workers and to the gradients sent back; the coordinator keeps float32 parameters and sums in float64, and the carried LSTM state always travels as float32. ` +
        `Bytes are the coordinator's \`dptrain_gradient_bytes_received_total\` and \`dptrain_parameter_bytes_sent_total\` (whole frames, the step messages included) over the optimizer steps. ` +
        `Load averages before each run: ${runs.map((r) => `${r.dtype} ${r.load[0]}`).join(', ')}.`,
    );
    md.push('');
    md.push(
      table(
        ['wire dtype', 'gradient bytes / round (2 workers)', 'vs float32', 'parameter bytes / round', 'round ms (median)', `train perplexity, epoch ${common}`, 'difference to float32', `validation perplexity, epoch ${common}`],
        rows.map((r) => [
          r.dtype,
          bytes(r.gradientBytesPerRound),
          pct(r.gradientBytesPerRound / base.gradientBytesPerRound, 0),
          bytes(r.parameterBytesPerRound),
          fmt(r.roundMs, 1),
          `**${r.trainPerplexity.toFixed(3)}**`,
          r.dtype === 'float32' ? '' : `${r.delta >= 0 ? '+' : ''}${r.delta.toFixed(3)}`,
          r.validationPerplexity?.toFixed(3) ?? '',
        ]),
      ),
    );
    md.push('');
    md.push(
      `- A gradient is ${fmt(P)} values: ${bytes(P * 4)} in float32, ${bytes(P * 2)} in float16 or bfloat16; each grads frame also carries the worker's 16 streams' state (16 × 2 × 256 float32 = ${bytes(16 * 2 * 256 * 4)}) and a small header, so the frames shrink to ${pct(rows[1].gradientBytesPerRound / base.gradientBytesPerRound, 0)} rather than 50%.`,
    );
    md.push(
      `- **Train perplexity after ${common} epochs with half precision on the wire: ${rows
        .slice(1)
        .map((r) => `${r.dtype} ${r.trainPerplexity.toFixed(3)} (${r.delta >= 0 ? '+' : ''}${r.delta.toFixed(3)})`)
        .join(', ')} against float32 ${base.trainPerplexity.toFixed(3)}**; target: within ${TOLERANCE}${ok ? ': met' : ': **missed**'}${common < epochs ? ` (compared at epoch ${common}, the last logged epoch all three reached within --wire-time-limit)` : ''}.`,
    );
    md.push('');
    const epochsLogged = [...new Set(runs.flatMap((r) => r.run.curve.map((p) => p.epoch)))].sort((a, b) => a - b);
    md.push(
      table(
        ['epoch', ...DTYPES.map((d) => `${d}: train / validation perplexity`)],
        epochsLogged.map((e) => [e, ...runs.map((r) => {
          const p = r.run.curve.find((q) => q.epoch === e);
          return p ? `${p.trainPerplexity.toFixed(3)} / ${p.validationPerplexity?.toFixed(2) ?? '–'}` : '';
        })]),
      ),
    );

    return {
      markdown: md.join('\n'),
      result: { quiet, epochs, timeLimit, comparedAtEpoch: common, tolerance: TOLERANCE, met: ok, rows, runs },
    };
  },
};
