/**
 * Part `wordmodel`: a word-level model of real size on 2 real worker
 * processes. Moby-Dick as words (min-freq 2), a 2-layer LSTM stack with a
 * 256-wide embedding and hidden 512; its parameter count by block group; then
 * the round time broken down (the coordinator's RoundBreakdown) and the bytes
 * per round up and down, with float32 and float16 on the wire, each with the
 * embedding's gradient sent as row-sparse (row ids + rows, as the CLI does)
 * and dense (the coordinator's bench-only `sparseRows: false`).
 *
 * The four variants run one after another in one process (f32 sparse, f32
 * dense, f16 sparse, f16 dense, then reversed on a second repetition), each
 * with its own coordinator and workers; the load is recorded with each.
 */
import os from 'node:os';
import type { ParamBlock } from '../src/shared/model/descriptor.js';
import { bytesPerElement, type WireDtype } from '../src/shared/wire/tensor.js';
import { startCluster, waitUntil, type RoundRecord } from './lib/cluster.js';
import { bytes, fmt, median, pct, sig, sum, table } from './lib/stats.js';
import type { BenchContext, BenchPart, Section } from './lib/types.js';

interface Variant {
  key: string;
  dtype: WireDtype;
  sparse: boolean;
  label: string;
}

const VARIANTS: Variant[] = [
  { key: 'f32-sparse', dtype: 'float32', sparse: true, label: 'float32, sparse rows' },
  { key: 'f32-dense', dtype: 'float32', sparse: false, label: 'float32, dense' },
  { key: 'f16-sparse', dtype: 'float16', sparse: true, label: 'float16, sparse rows' },
  { key: 'f16-dense', dtype: 'float16', sparse: false, label: 'float16, dense' },
];

const MODEL = { corpus: 'mobydick', tokens: 'word', minFreq: 2, cell: 'lstm', layers: 2, hidden: 512, embedding: 256 } as const;

interface Round extends RoundRecord {
  /** Bytes of the gradient messages received from both workers in this round. */
  upBytes: number;
  /** Bytes of the parameter and step messages sent to both workers for this round. */
  downBytes: number;
}

interface Group {
  name: string;
  blocks: string[];
  params: number;
  rowSparse: boolean;
}

interface VariantRun {
  key: string;
  rep: number;
  label: string;
  dtype: WireDtype;
  sparse: boolean;
  load: { start: number[]; end: number[] };
  startupSeconds: number;
  rounds: Round[];
  median: Record<'totalMs' | 'computeMs' | 'waitRestMs' | 'decodeSumMs' | 'clipOptMs' | 'encodeSendMs' | 'upBytes' | 'downBytes' | 'periodMs', number>;
  tokensPerSecond: number;
}

function groupsOf(blocks: readonly ParamBlock[], layers: number): Group[] {
  const groups: Group[] = [
    { name: 'embedding', blocks: [], params: 0, rowSparse: false },
    ...Array.from({ length: layers }, (_, l) => ({ name: `LSTM layer ${l + 1}`, blocks: [] as string[], params: 0, rowSparse: false })),
    { name: 'output', blocks: [], params: 0, rowSparse: false },
  ];
  for (const b of blocks) {
    const m = /_l(\d+)$/.exec(b.name);
    const g = b.name === 'W_emb' ? groups[0] : m ? groups[1 + Number(m[1])] : groups[groups.length - 1];
    g.blocks.push(`${b.name} (${b.shape.join('x')})`);
    g.params += b.size;
    if (b.rowSparse) g.rowSparse = true;
  }
  return groups;
}

async function runVariant(ctx: BenchContext, v: Variant, rep: number, o: { warmup: number; rounds: number; batchSize: number; numSteps: number; timeoutS: number }): Promise<{ run: VariantRun; blocks: ParamBlock[]; vocabSize: number }> {
  const total = o.warmup + o.rounds;
  const loadStart = os.loadavg();
  const t0 = performance.now();
  const rounds: Round[] = [];
  let up = 0;
  let down = 0;
  const cluster = await startCluster(ctx, {
    workers: 2,
    sparseRows: v.sparse,
    config: { ...MODEL, maxTokens: 0, valFraction: 0, batchSize: o.batchSize, numSteps: o.numSteps, epochs: 1000, roundTimeout: 600, wireDtype: v.dtype },
    onRound: (r) => {
      rounds.push({ ...r, upBytes: up, downBytes: down });
      up = 0;
      down = 0;
      ctx.log(`${v.label} round ${rounds.length}/${total}: ${fmt(r.totalMs)} ms (slowest compute ${fmt(r.slowestComputeMs)} ms)`);
      if (rounds.length === total) void cluster.stop();
    },
  });
  // Count the bytes per round as the coordinator's own counters see them.
  const c = cluster.coordinator;
  const gradInc = c.metrics.gradBytes.inc.bind(c.metrics.gradBytes);
  const paramInc = c.metrics.paramBytes.inc.bind(c.metrics.paramBytes);
  c.metrics.gradBytes.inc = ((n?: number) => {
    up += n ?? 0;
    gradInc(n);
  }) as typeof c.metrics.gradBytes.inc;
  c.metrics.paramBytes.inc = ((n?: number) => {
    down += n ?? 0;
    paramInc(n);
  }) as typeof c.metrics.paramBytes.inc;
  try {
    await waitUntil(() => rounds.length >= total, o.timeoutS * 1000, `${total} rounds of ${v.label}`);
  } catch (e) {
    await cluster.stop();
    throw new Error(`${(e as Error).message}; worker output: ${cluster.workers.map((w) => w.output().slice(-500)).join(' | ')}`);
  }
  await cluster.stop();
  const measured = rounds.slice(o.warmup);
  const first = rounds[o.warmup - 1];
  const med = (f: (r: Round) => number) => median(measured.map(f));
  const periods = measured.map((r, k) => r.at - (k === 0 ? first.at : measured[k - 1].at));
  const wallSeconds = (measured[measured.length - 1].at - first.at) / 1000;
  const run: VariantRun = {
    key: v.key,
    rep,
    label: v.label,
    dtype: v.dtype,
    sparse: v.sparse,
    load: { start: loadStart, end: os.loadavg() },
    startupSeconds: (rounds[0].at - rounds[0].totalMs - t0) / 1000,
    rounds: measured,
    median: {
      totalMs: med((r) => r.totalMs),
      computeMs: med((r) => r.slowestComputeMs),
      waitRestMs: med((r) => r.waitMs - r.slowestComputeMs - r.decodeMs - r.sumMs),
      decodeSumMs: med((r) => r.decodeMs + r.sumMs),
      clipOptMs: med((r) => r.clipMs + r.optimizerMs),
      encodeSendMs: med((r) => r.encodeMs + r.sendMs),
      upBytes: med((r) => r.upBytes),
      downBytes: med((r) => r.downBytes),
      periodMs: median(periods),
    },
    tokensPerSecond: sum(measured.map((r) => r.tokens)) / wallSeconds,
  };
  return { run, blocks: [...c.model.blocks], vocabSize: c.model.vocabSize };
}

const la = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(' / ');

export const wordmodelPart: BenchPart = {
  name: 'wordmodel',
  title: 'A word-level model of real size: Moby-Dick words, embedding 256, 2 LSTM layers of 512, on 2 workers',
  summary: 'parameter count by block group, round time breakdown and bytes per round on 2 worker processes, float32/float16 on the wire, sparse embedding rows on/off',
  flags: {
    'wordmodel-rounds': { type: 'number', default: 4, describe: 'measured rounds per variant' },
    'wordmodel-warmup': { type: 'number', default: 1, describe: 'rounds before measuring, per variant' },
    'wordmodel-reps': { type: 'number', default: 1, describe: 'repetitions of the four variants (in order, then reversed)' },
    'wordmodel-batch': { type: 'number', default: 32, describe: 'global batch (streams over both workers)' },
    'wordmodel-steps': { type: 'number', default: 35, describe: 'time steps per stream and round' },
    'wordmodel-timeout': { type: 'number', default: 600, describe: 'longest wait for one variant\'s rounds, seconds' },
  },

  async run(ctx: BenchContext): Promise<Section> {
    const o = {
      rounds: Math.max(1, Math.round(ctx.flag<number>('wordmodel-rounds'))),
      warmup: Math.max(1, Math.round(ctx.flag<number>('wordmodel-warmup'))),
      batchSize: Math.max(2, Math.round(ctx.flag<number>('wordmodel-batch'))),
      numSteps: Math.max(1, Math.round(ctx.flag<number>('wordmodel-steps'))),
      timeoutS: Math.max(10, ctx.flag<number>('wordmodel-timeout')),
    };
    const reps = Math.max(1, Math.round(ctx.flag<number>('wordmodel-reps')));
    const runs: VariantRun[] = [];
    let blocks: ParamBlock[] = [];
    let vocabSize = 0;
    for (let rep = 0; rep < reps; rep++) {
      for (const v of rep % 2 === 0 ? VARIANTS : [...VARIANTS].reverse()) {
        const r = await runVariant(ctx, v, rep, o);
        blocks = r.blocks;
        vocabSize = r.vocabSize;
        runs.push(r.run);
        ctx.log(`${v.label}: round ${fmt(r.run.median.totalMs)} ms, up ${bytes(r.run.median.upBytes)}, down ${bytes(r.run.median.downBytes)}, load ${la(r.run.load.start)}`);
      }
    }

    // ---- the model
    const groups = groupsOf(blocks, MODEL.layers);
    const params = sum(groups.map((g) => g.params));
    const emb = groups[0];
    const out = groups[groups.length - 1];
    const recurrent = sum(groups.slice(1, -1).map((g) => g.params));
    const of = (key: string) => runs.filter((r) => r.key === key);
    const agg = (key: string, f: (r: VariantRun) => number) => median(of(key).map(f));
    const perWorker = (key: string) => agg(key, (r) => r.median.upBytes) / 2;
    // A gradient message = header + dense blocks + (sparse: the embedding's row ids and rows). The header is what the dense message carries beyond the parameters.
    const header = (dtype: WireDtype, key: string) => perWorker(key) - params * bytesPerElement(dtype);
    const embSent = (dtype: WireDtype, sparseKey: string, denseKey: string) => perWorker(sparseKey) - header(dtype, denseKey) - (params - emb.params) * bytesPerElement(dtype);
    const emb32 = embSent('float32', 'f32-sparse', 'f32-dense');
    const emb16 = embSent('float16', 'f16-sparse', 'f16-dense');
    const rows32 = emb32 / (4 + MODEL.embedding * 4);
    const rows16 = emb16 / (4 + MODEL.embedding * 2);
    const streams = o.batchSize / 2;

    // ---- report
    const md: string[] = [];
    md.push(
      `Setup: \`--corpus mobydick --tokens word --min-freq 2\` (vocabulary ${fmt(vocabSize)} words, the whole book, no validation split), model \`stack-lstm\` with \`--embedding 256 --layers 2 --hidden 512\`, SGD; ` +
        `one coordinator in the benchmark process (backend ${ctx.backend.name}) and 2 \`worker join\` processes (backend ${ctx.backend.name}) on loopback, global batch ${o.batchSize} x ${o.numSteps} steps (${streams} streams per worker). ` +
        `Four variants, one after another in one process, each with its own coordinator and workers: float32 or float16 on the wire (\`--wire-dtype\`, both directions), and the embedding's gradient sent as row-sparse (row ids + rows, what the CLI does) or dense (a bench-only coordinator option). ` +
        `Each runs ${o.warmup} warm-up round${o.warmup > 1 ? 's' : ''}, then ${o.rounds} measured round${o.rounds > 1 ? 's' : ''}${reps > 1 ? `; ${reps} repetitions, the order reversed on every other` : ''}: few rounds, so the medians below carry the noise of the machine (load averages per variant in the last table).`,
    );
    md.push('');
    md.push(`**The model: ${fmt(params)} parameters** (${sig((params * 4) / 1e6)} MB as float32, ${sig((params * 2) / 1e6)} MB as float16, per gradient and per parameter message):`);
    md.push('');
    md.push(
      table(
        ['block group', 'blocks', 'parameters', 'share', 'gradient bytes per worker, float32', 'float16', 'row-sparse on the wire'],
        groups.map((g) => [g.name, g.blocks.join(', '), fmt(g.params), pct(g.params / params, 1), bytes(g.params * 4), bytes(g.params * 2), g.rowSparse ? 'yes: only the rows of the input tokens of the batch' : 'no (dense)']),
      ),
    );
    md.push('');
    md.push(`**Round time and bytes per round** (medians over the measured rounds, ms; bytes are both workers together, as the coordinator's \`dptrain_gradient_bytes_received_total\` and \`dptrain_parameter_bytes_sent_total\` count them):`);
    md.push('');
    md.push(
      table(
        ['variant', 'round', 'slowest worker compute', 'rest of the wait (worker decode/encode, transfer, GC)', 'coordinator decode + sum', 'clip + optimizer', 'coordinator encode + send', 'round period', 'tokens/s', 'up (gradients) / round', 'down (parameters) / round'],
        VARIANTS.map((v) => {
          const g = (k: keyof VariantRun['median']) => agg(v.key, (r) => r.median[k]);
          return [v.label, fmt(g('totalMs')), fmt(g('computeMs')), fmt(g('waitRestMs')), fmt(g('decodeSumMs')), fmt(g('clipOptMs')), fmt(g('encodeSendMs')), fmt(g('periodMs')), fmt(agg(v.key, (r) => r.tokensPerSecond)), bytes(g('upBytes')), bytes(g('downBytes'))];
        }),
      ),
    );
    md.push('');
    const up = (k: string) => agg(k, (r) => r.median.upBytes);
    md.push(
      `- **Sparse embedding rows** shrink only the embedding's block (the one block with \`rowSparse\` in the layout; the recurrent layers and the output layer get a gradient in every entry from every batch). ` +
        `A worker's ${streams} x ${o.numSteps} = ${fmt(streams * o.numSteps)} input tokens hold about ${fmt(rows32)} distinct words (measured: the sparse message less the dense blocks and the header), so the embedding goes as ${bytes(emb32)} instead of ${bytes(emb.params * 4)} in float32 ` +
        `(${bytes(emb16)} instead of ${bytes(emb.params * 2)} in float16, ${fmt(rows16)} rows). Gradients up per round: ${bytes(up('f32-dense'))} dense against ${bytes(up('f32-sparse'))} sparse in float32 (${pct(1 - up('f32-sparse') / up('f32-dense'), 0)} less), ` +
        `${bytes(up('f16-dense'))} against ${bytes(up('f16-sparse'))} in float16 (${pct(1 - up('f16-sparse') / up('f16-dense'), 0)} less). The parameters down are dense either way (every worker needs every row).`,
    );
    md.push(
      `- **The output layer dominates**: W_hq (${MODEL.hidden} x ${fmt(vocabSize)}) and b_q are ${fmt(out.params)} parameters, ${pct(out.params / params, 0)} of the model, against ${pct(emb.params / params, 0)} for the embedding and ${pct(recurrent / params, 0)} for both LSTM layers. ` +
        `Every batch touches every column of W_hq (the softmax is over the whole vocabulary), so its gradient is dense: with sparse rows it is ${pct((out.params * 4) / perWorker('f32-sparse'), 0)} of a worker's float32 gradient message (${bytes(out.params * 4)} of ${bytes(perWorker('f32-sparse'))}). ` +
        `Sparse rows cannot shrink it; float16 halves it, and beyond that only a smaller output (a sampled or adaptive softmax, tied embeddings, a smaller vocabulary) would.`,
    );
    const m = (key: string, k: keyof VariantRun['median']) => agg(key, (r) => r.median[k]);
    const computes = VARIANTS.map((v) => m(v.key, 'computeMs'));
    const loads = runs.map((r) => r.load.start[0]);
    const restGain = m('f16-sparse', 'waitRestMs') < m('f32-sparse', 'waitRestMs') && m('f16-dense', 'waitRestMs') < m('f32-dense', 'waitRestMs');
    md.push(
      `- **float16 against float32, and the noise**: every variant computes the same kind of batch on the same model, yet the slowest worker's compute ranged from ${fmt(Math.min(...computes))} to ${fmt(Math.max(...computes))} ms (median per variant) with 1-minute load averages of ${fmt(Math.min(...loads), 2)} to ${fmt(Math.max(...loads), 2)} on ${os.cpus().length} cores: ` +
        `the round times of the variants differ mostly by the load on this shared machine, not by the wire. The worker's compute is ${pct(m('f32-sparse', 'computeMs') / m('f32-sparse', 'totalMs'), 0)} of the float32 sparse round. ` +
        `What the wire dtype changes shows in the pieces outside the compute: the coordinator's encode + send takes ${fmt(m('f32-sparse', 'encodeSendMs'))} ms for float32 and ${fmt(m('f16-sparse', 'encodeSendMs'))} ms for float16 (sparse rows; it converts the parameters to float16), its decode + sum ${fmt(m('f32-sparse', 'decodeSumMs'))} against ${fmt(m('f16-sparse', 'decodeSumMs'))} ms (it converts the gradients back), ` +
        `and the rest of the wait (the workers' conversions and the transfers) ${fmt(m('f32-sparse', 'waitRestMs'))} against ${fmt(m('f16-sparse', 'waitRestMs'))} ms with sparse rows, ${fmt(m('f32-dense', 'waitRestMs'))} against ${fmt(m('f16-dense', 'waitRestMs'))} ms dense: ` +
        `${restGain ? 'float16 shortens it in both' : 'no consistent gain from halving the bytes on loopback at this load'}. Float16 halves the bytes (up and down); it pays off on links slower than the conversions (part \`slowlink\`).`,
    );
    md.push('');
    md.push(
      table(
        ['variant', 'repetition', 'load average at start (1 / 5 / 15 min)', 'at end', 'start-up (corpus, model, joins) s', 'round times, ms'],
        runs.map((r) => [r.label, r.rep + 1, la(r.load.start), la(r.load.end), fmt(r.startupSeconds, 1), r.rounds.map((x) => fmt(x.totalMs)).join(', ')]),
      ),
    );
    md.push('');

    return {
      markdown: md.join('\n'),
      result: {
        model: { ...MODEL, vocabSize, params, groups },
        batchSize: o.batchSize,
        numSteps: o.numSteps,
        warmup: o.warmup,
        rounds: o.rounds,
        reps,
        embeddingRowsPerWorker: { float32: rows32, float16: rows16 },
        embeddingBytesPerWorker: { float32: emb32, float16: emb16 },
        runs,
      },
    };
  },
};
