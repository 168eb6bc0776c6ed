/**
 * Part `models`: the seed's exercise ("compare the computational cost for
 * GRUs, LSTMs, and regular RNNs for a given hidden dimension, training and
 * inference") measured, each cell's hand step against tfjs autodiff and a
 * matMul roofline, and a PyTorch peer (bench/peer/peer.py) side by side.
 *
 * The machine may be shared: what is compared is measured interleaved (the
 * step measurements in rounds over all cells; per cell, the peer and dptrain
 * back to back), and every figure carries the 1-minute load average at the
 * time. Single-threaded work is timed by "compute time", min(wall clock,
 * process CPU time), as in part `step`.
 */
import * as tf from '@tensorflow/tfjs';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { checkTrainConfig } from '../src/shared/config.js';
import { buildCorpus } from '../src/shared/data/corpus.js';
import { loadCorpusText } from '../src/shared/data/corpus-source.js';
import { tokenizerFromConfig } from '../src/shared/data/tokenizer.js';
import { perplexityOf, predict } from '../src/shared/model/evaluate.js';
import { modelOf, trainLocal } from '../src/shared/train/local-trainer.js';
import { ensureTimeMachine, round2 } from './lib/cluster.js';
import { CELL_GATES, cellBench, flopsPerToken, kernelSplit, matMulProbe, type Cell, type CellBench } from './lib/model-steps.js';
import { computeMs, fmt, median, measure, pct, sig, table, type Sample } from './lib/stats.js';
import { runDistributed, trainConfig } from './lib/train-runs.js';
import type { BenchContext, BenchPart, Section } from './lib/types.js';

const load = () => round2(os.loadavg()[0]);
const G = (flops: number) => `${sig(flops / 1e9, 3)} GFLOP/s`;

interface PeerResult {
  tokens_per_second: number;
  wall_seconds: number;
  cpu_seconds_rank0: number;
  steps: number;
  parameters: number;
  generate_tokens_per_second?: number;
  torch: string;
}

/** Runs bench/peer/peer.py; null with the reason where Python or PyTorch is missing or the run fails. */
function runPeer(ctx: BenchContext, args: string[]): { result: PeerResult | null; reason: string } {
  const python = ctx.flag<string>('python');
  const r = spawnSync(python, [path.join(ctx.repoRoot, 'bench', 'peer', 'peer.py'), ...args], {
    env: { ...process.env, OPENBLAS_NUM_THREADS: '1', OMP_NUM_THREADS: '1', MKL_NUM_THREADS: '1' },
    encoding: 'utf8',
    timeout: 300_000,
  });
  if (r.error) return { result: null, reason: `${python} could not run (${r.error.message})` };
  if (r.status !== 0) return { result: null, reason: `the peer exited with ${r.status ?? r.signal}: ${(r.stderr ?? '').trim().split('\n').slice(-1)[0]}` };
  const line = r.stdout.trim().split('\n').at(-1) ?? '';
  return { result: JSON.parse(line) as PeerResult, reason: '' };
}

function peerAvailable(ctx: BenchContext): string | null {
  const r = spawnSync(ctx.flag<string>('python'), ['-c', 'import torch, torch.distributed as d; assert d.is_gloo_available()'], { encoding: 'utf8', timeout: 60_000 });
  if (r.error) return `${ctx.flag<string>('python')} is not there (${r.error.message})`;
  if (r.status !== 0) return `PyTorch with gloo is not importable by ${ctx.flag<string>('python')} (${(r.stderr ?? '').trim().split('\n').slice(-1)[0]})`;
  return null;
}

const computeMedian = (s: Sample[]) => median(s.map(computeMs));
/** A one-process peer run's tokens/s by compute time, min(wall clock, CPU time). */
const peerCompute = (p: PeerResult, tokensPerStep: number) => (p.steps * tokensPerStep) / Math.min(p.wall_seconds, p.cpu_seconds_rank0);

export const modelsPart: BenchPart = {
  name: 'models',
  title: 'Models: RNN, GRU and LSTM compared, hand step vs autodiff vs roofline, and a PyTorch peer',
  summary: 'the seed exercise (cost of RNN/GRU/LSTM at hidden 256), hand vs autodiff vs roofline per cell, PyTorch (1 process, DDP over 2) side by side',
  flags: {
    cells: { type: 'string', default: 'rnn,gru,lstm', describe: 'cells to compare, comma-separated' },
    epochs: { type: 'number', default: 30, describe: 'epochs of the d2l setup each cell trains (perplexity after the same number of epochs)' },
    'dist-epochs': { type: 'number', default: 4, describe: 'epochs of the 2-worker run per cell (throughput only)' },
    rounds: { type: 'number', default: 3, describe: 'interleaved rounds of the step measurements' },
    'hand-steps': { type: 'number', default: 6, describe: 'hand steps per cell per round' },
    'autodiff-steps': { type: 'number', default: 2, describe: 'autodiff steps per cell per round' },
    'peer-iters': { type: 'number', default: 60, describe: 'timed PyTorch training steps per run' },
    'generate-tokens': { type: 'number', default: 300, describe: 'tokens generated to time inference' },
    python: { type: 'string', default: '/usr/bin/python3', describe: 'the Python with PyTorch for the peer' },
    peer: { type: 'boolean', default: true, describe: 'run the PyTorch peer (--no-peer: skip it)' },
    'step-only': { type: 'boolean', default: false, describe: 'only the one-step comparison (hand vs autodiff vs roofline): no training runs, no peer' },
  },

  async run(ctx: BenchContext): Promise<Section> {
    const cells = ctx.flag<string>('cells').split(',').map((c) => c.trim()) as Cell[];
    for (const c of cells) if (!(c in CELL_GATES)) throw new Error(`unknown cell '${c}'; the cells are ${Object.keys(CELL_GATES).join(', ')}`);
    const source = ensureTimeMachine(ctx);
    const tmFile = path.join(ctx.dataDir, 'timemachine.txt');
    const d2l = { maxTokens: 10000, valFraction: 0.1, batchSize: 32, numSteps: 35, hidden: 256, optimizer: 'sgd', lr: 1, clip: 1, partition: 'sequential', seed: 0 };
    const text = await loadCorpusText('timemachine', { dataDir: ctx.dataDir, onWarning: (m) => ctx.log(m) });
    const corpus = buildCorpus(text.text, { maxTokens: d2l.maxTokens, valFraction: d2l.valFraction });
    const V = corpus.vocab.size;
    const shape = { B: d2l.batchSize, T: d2l.numSteps, V, H: d2l.hidden };
    const tokensPerStep = shape.B * shape.T;

    // ---- 1. one step: hand vs autodiff vs roofline, interleaved over the cells
    const benches: CellBench[] = cells.map((c) => cellBench(c, shape));
    const probe = matMulProbe(V + shape.H, shape.T * shape.B, shape.H); // the gate weight gradients' shape: the largest matMul
    const S = new Map(cells.map((c) => [c, { hand: [] as Sample[], ops: [] as Sample[], auto: [] as Sample[], loads: [] as number[] }]));
    const probeS: Sample[] = [];
    for (const b of benches) {
      for (let i = 0; i < 2; i++) b.hand(), b.variant?.run();
      b.autodiff();
    }
    for (let r = 0; r < Math.max(1, ctx.flag<number>('rounds')); r++) {
      for (const b of benches) {
        const s = S.get(b.cell)!;
        s.loads.push(load());
        for (let i = 0; i < ctx.flag<number>('hand-steps'); i++) {
          s.hand.push(measure(b.hand));
          if (b.variant) s.ops.push(measure(b.variant.run));
        }
        for (let i = 0; i < ctx.flag<number>('autodiff-steps'); i++) s.auto.push(measure(() => void b.autodiff()));
        for (let i = 0; i < 3; i++) probeS.push(probe.sample());
      }
      ctx.log(`step round ${r + 1}: ${cells.map((c) => `${c} ${fmt(computeMedian(S.get(c)!.hand), 1)} ms`).join(', ')}; load ${load()}`);
    }
    const bigRate = probe.flops / (computeMedian(probeS) / 1000);
    const stepRows: Record<string, unknown>[] = [];
    for (const b of benches) {
      const s = S.get(b.cell)!;
      const split = await kernelSplit(b.hand);
      const opsSplit = b.variant ? await kernelSplit(b.variant.run) : null;
      const handMs = computeMedian(s.hand);
      const autoMs = computeMedian(s.auto);
      const rooflineMs = ((flopsPerToken(b.cell, V, shape.H).training * tokensPerStep) / bigRate) * 1000;
      stepRows.push({
        cell: b.cell,
        handMs,
        opsMs: s.ops.length ? computeMedian(s.ops) : null,
        variant: b.variant?.label ?? null,
        autodiffMs: autoMs,
        ratio: autoMs / handMs,
        rooflineMs,
        rooflineFraction: rooflineMs / handMs,
        profile: split,
        opsProfile: opsSplit,
        load: round2(median(s.loads)),
        wallOverCpu: median(s.hand.map((x) => x.wallMs / x.cpuMs)),
      });
    }
    probe.dispose();
    benches.forEach((b) => b.dispose());
    if (ctx.flag<boolean>('step-only')) {
      const md = report(ctx, { source, V, shape, epochs: 0, bigRate, stepRows, rows: [], noPeer: 'only the one-step comparison was asked for (--step-only)' }, true);
      return { markdown: md, result: { source, shape, matMulRate: bigRate, steps: stepRows, stepOnly: true } };
    }

    // ---- 2. per cell: PyTorch (1 process), dptrain (1 process), PyTorch DDP (2), dptrain (2 workers), back to back
    const noPeer = !ctx.flag<boolean>('peer') ? 'the peer was switched off (--no-peer)' : peerAvailable(ctx);
    if (noPeer) ctx.log(`skipping the PyTorch peer: ${noPeer}`);
    const epochs = Math.max(1, Math.round(ctx.flag<number>('epochs')));
    const rows: Record<string, unknown>[] = [];
    for (const cell of cells) {
      const peerArgs = (world: number) => ['--corpus', tmFile, '--cell', cell, '--hidden', String(shape.H), '--batch', String(shape.B), '--steps', String(shape.T), '--iters', String(ctx.flag<number>('peer-iters')), '--world', String(world), '--generate', String(ctx.flag<number>('generate-tokens'))];
      const row: Record<string, unknown> = { cell };
      if (!noPeer) {
        const l = load();
        const p = runPeer(ctx, peerArgs(1));
        row.peer1 = p.result ? { ...p.result, load: l } : { error: p.reason };
        ctx.log(`${cell}: PyTorch 1 process ${p.result ? `${fmt(p.result.tokens_per_second)} tokens/s` : p.reason} (load ${l})`);
      }
      // dptrain, one process: the d2l setup for `epochs` epochs.
      const cfg = trainConfig(ctx, { ...d2l, cell, epochs });
      checkTrainConfig(cfg); // sets cfg.model from cfg.cell, as the CLI does
      const model = modelOf(cfg, corpus);
      let trainWall = 0;
      let trainCompute = 0;
      let steps = 0;
      let lastPpl = NaN;
      let cpuMark = process.cpuUsage();
      const l1 = load();
      const { server } = trainLocal(cfg, corpus, {
        onEpoch: (r) => {
          const c = process.cpuUsage(cpuMark);
          trainWall += r.seconds;
          trainCompute += Math.min(r.seconds, (c.user + c.system) / 1e6);
          steps = r.step;
          lastPpl = r.trainPerplexity;
          cpuMark = process.cpuUsage();
        },
      });
      const params = server.params();
      const validation = perplexityOf(params, model, corpus.validation, cfg.numSteps, cfg.batchSize);
      const n = ctx.flag<number>('generate-tokens');
      const tokenizer = tokenizerFromConfig(cfg, corpus.vocab);
      predict(params, model, tokenizer, 'time traveller', 20); // warm-up
      const gen = measure(() => void predict(params, model, tokenizer, 'time traveller', n));
      server.dispose();
      row.local = {
        parameters: model.paramCount,
        epochs,
        steps,
        trainPerplexity: lastPpl,
        validationPerplexity: validation,
        tokensPerSecondWall: (steps * tokensPerStep) / trainWall,
        tokensPerSecondCompute: (steps * tokensPerStep) / trainCompute,
        generateTokensPerSecond: n / (computeMs(gen) / 1000),
        load: l1,
      };
      ctx.log(`${cell}: dptrain 1 process ${fmt((steps * tokensPerStep) / trainCompute)} tokens/s (compute), perplexity ${lastPpl.toFixed(2)} after ${epochs} epochs (load ${l1})`);
      if (!noPeer) {
        const l = load();
        const p = runPeer(ctx, peerArgs(2));
        row.peer2 = p.result ? { ...p.result, load: l } : { error: p.reason };
        ctx.log(`${cell}: PyTorch DDP 2 processes ${p.result ? `${fmt(p.result.tokens_per_second)} tokens/s` : p.reason} (load ${l})`);
      }
      const l2 = load();
      const dist = await runDistributed(ctx, { config: { ...d2l, cell, epochs: Math.max(2, Math.round(ctx.flag<number>('dist-epochs'))) }, target: null, timeLimitSeconds: 300, evalEvery: 1_000_000, log: (m) => ctx.log(m), workers: 2 });
      // The first epoch includes the workers' warm-up: throughput over the epochs after it.
      const first = dist.curve[0];
      const distSteps = dist.steps - dist.steps / dist.curve.length;
      row.dist2 = { steps: dist.steps, tokensPerSecond: (distSteps * tokensPerStep) / (dist.trainSeconds - first.elapsedSeconds), roundMsMedian: dist.roundMsMedian, slowestComputeMsMedian: dist.slowestComputeMsMedian, load: l2 };
      ctx.log(`${cell}: dptrain 2 workers ${fmt((row.dist2 as { tokensPerSecond: number }).tokensPerSecond)} tokens/s (load ${l2})`);
      rows.push(row);
    }

    return { markdown: report(ctx, { source, V, shape, epochs, bigRate, stepRows, rows, noPeer }), result: { source, shape, epochs, matMulRate: bigRate, steps: stepRows, runs: rows, peerSkipped: noPeer } };
  },
};

type Num = number;
function report(ctx: BenchContext, r: { source: string; V: Num; shape: { B: Num; T: Num; H: Num }; epochs: Num; bigRate: Num; stepRows: Record<string, unknown>[]; rows: Record<string, unknown>[]; noPeer: string | null }, stepOnly = false): string {
  const { V } = r;
  const { B, T, H } = r.shape;
  const md: string[] = [];
  const get = <T>(o: Record<string, unknown>, k: string) => o[k] as T;
  if (!stepOnly) {
    md.push(
      `Setup: d2l's (${r.source}, first 10,000 character tokens, vocabulary ${V}, 10% held out for validation, batch ${B}, ${T} steps, ${H} hidden units, SGD lr 1, clipping at 1, sequential partition, seed 0). ` +
        `Training throughput is the reference loop's (\`trainLocal\`: step, optimizer, parameter upload) over ${r.epochs} epochs by compute time (min of wall clock and CPU time); ` +
        `generation is d2l's \`predict\` (one token at a time, greedy) after those epochs. FLOPs are the matMul FLOPs from the shapes (bench/lib/model-steps.ts, \`flopsPerToken\`): ` +
        `with G gate blocks (RNN 1, GRU 3, LSTM 4), inference 2·G·(V+H)·H + 2·H·V per token, training adds 2·G·(V+H)·H (weight gradients) + 2·G·H² (the recurrence) + 4·H·V (output layer).`,
    );
    md.push('');
    md.push(
      table(
        ['cell', 'parameters', 'FLOPs/token, training', 'FLOPs/token, inference', 'training tokens/s', 'generation tokens/s', `train perplexity after ${r.epochs} epochs`, 'validation perplexity', 'load'],
        r.rows.map((row) => {
          const l = get<Record<string, number>>(row, 'local');
          const f = flopsPerToken(get<Cell>(row, 'cell'), V, H);
          return [get<string>(row, 'cell').toUpperCase(), fmt(l.parameters), fmt(f.training), fmt(f.inference), `**${fmt(l.tokensPerSecondCompute)}** (wall ${fmt(l.tokensPerSecondWall)})`, fmt(l.generateTokensPerSecond), l.trainPerplexity.toFixed(2), l.validationPerplexity.toFixed(2), l.load];
        }),
      ),
    );
    md.push('');
  }
  md.push(
    `One step (${B}×${T} tokens, random ids), interleaved over the cells: the model's own stepper (its hand-derived backward pass, including building the step's tensors from the flat parameters as training does) against tfjs autodiff of the same forward pass, and against a roofline: the step's matMul FLOPs at the rate of an isolated [${V + H}, ${T * B}]×[${T * B}, ${H}] matMul on this backend (${G(r.bigRate)}). Kernel times by tf.profile with each kernel timed by compute time, mean of 3 profiled steps. On wasm the RNN's and GRU's loops over time call the backend's matMul and gate kernels directly, into buffers reused from step to step (\`kernels/wasm-calls.ts\`), which tf.profile does not see: their kernel counts and matMul shares cover only the work outside the loops (the output layer and the weight gradients), and the split of their step below is left out.`,
  );
  md.push('');
  md.push(
    table(
      ['cell', 'hand step ms', 'tokens/s', 'autodiff ms', 'hand vs autodiff (target ≥ 8×)', 'roofline ms', 'of roofline (target ≥ 75%)', 'kernels: calls (matMuls)', 'matMul share of kernel time', 'load'],
      r.stepRows.flatMap((s) => {
        const p = get<{ calls: Num; matMulCalls: Num; matMulMs: Num; otherMs: Num }>(s, 'profile');
        const line = (name: string, ms: Num, prof: typeof p, auto: string, ratio: string) => [name, fmt(ms, 1), fmt((B * T) / (ms / 1000)), auto, ratio, fmt(get<Num>(s, 'rooflineMs'), 1), `**${pct(get<Num>(s, 'rooflineMs') / ms)}**`, `${fmt(prof.calls)} (${fmt(prof.matMulCalls)})`, pct(prof.matMulMs / (prof.matMulMs + prof.otherMs)), get<Num>(s, 'load')];
        const out = [line(get<string>(s, 'cell').toUpperCase(), get<Num>(s, 'handMs'), p, fmt(get<Num>(s, 'autodiffMs'), 0), `**${fmt(get<Num>(s, 'ratio'), 1)}×**`)];
        const ops = get<Num | null>(s, 'opsMs');
        if (ops !== null) out.push(line(`${get<string>(s, 'cell').toUpperCase()}, ${get<string>(s, 'variant')}`, ops, get<typeof p>(s, 'opsProfile'), '', `${fmt(get<Num>(s, 'autodiffMs') / ops, 1)}×`));
        return out;
      }),
    ),
  );
  md.push('');
  if (r.noPeer) {
    md.push(`The PyTorch peer was skipped: ${r.noPeer}.`);
    return md.join('\n');
  }
  md.push(
    `The peer, per cell back to back with dptrain: PyTorch's \`nn.RNN\`/\`nn.GRU\`/\`nn.LSTM\` with one-hot inputs and a linear output (d2l's concise \`RNNModel\`, bench/peer/peer.py), same sizes, SGD with clipping, ` +
      `one thread per process (\`OPENBLAS_NUM_THREADS=1\`, \`torch.set_num_threads(1)\`); DDP with the gloo backend over 2 processes on 127.0.0.1, each taking ${B / 2} of the ${B} streams (the same global batch). ` +
      `One process, both sides by compute time (min of wall clock and the process's CPU time): dptrain is \`trainLocal\` above. ` +
      `Two processes, both sides by wall clock, which on a loaded machine counts waiting for a core: PyTorch DDP (with the share of the wall time rank 0 was on a CPU), ` +
      `and dptrain's in-process coordinator with 2 \`worker join\` processes (the first epoch left out; in brackets, the tokens/s the slowest worker's step alone would give, median over rounds).`,
  );
  md.push('');
  md.push(
    table(
      ['cell', 'PyTorch, 1 process', 'dptrain, 1 process', 'dptrain / PyTorch', 'PyTorch DDP, 2 processes (wall)', 'dptrain, 2 workers (wall)', 'dptrain / PyTorch', 'PyTorch generation tokens/s', 'load (peer 1, dptrain 1, peer 2, dptrain 2)'],
      r.rows.map((row) => {
        const p1 = get<PeerResult & { load: Num }>(row, 'peer1');
        const p2 = get<PeerResult & { load: Num }>(row, 'peer2');
        const l = get<Record<string, Num>>(row, 'local');
        const d = get<Record<string, Num>>(row, 'dist2');
        const err = (p: unknown) => String((p as { error?: string }).error ?? '');
        const p1c = p1.tokens_per_second ? peerCompute(p1, B * T) : NaN;
        return [
          get<string>(row, 'cell').toUpperCase(),
          p1.tokens_per_second ? `${fmt(p1c)} (wall ${fmt(p1.tokens_per_second)})` : err(p1),
          fmt(l.tokensPerSecondCompute),
          p1.tokens_per_second ? `**${sig(l.tokensPerSecondCompute / p1c, 2)}**` : '',
          p2.tokens_per_second ? `${fmt(p2.tokens_per_second)} (rank 0 busy ${pct(p2.cpu_seconds_rank0 / p2.wall_seconds)})` : err(p2),
          `${fmt(d.tokensPerSecond)} (steps alone: ${fmt((B * T) / (d.slowestComputeMsMedian / 1000))})`,
          p2.tokens_per_second ? `**${sig(d.tokensPerSecond / p2.tokens_per_second, 2)}**` : '',
          p1.generate_tokens_per_second ? fmt(p1.generate_tokens_per_second) : '',
          `${p1.load ?? ''}, ${l.load}, ${p2.load ?? ''}, ${d.load}`,
        ];
      }),
    ),
  );
  md.push('');
  md.push(
    `Where one dptrain step's time goes (the profiled hand step above: timing each kernel on its own inflates it, so the profile gives the shares and the step's median the total), and how far the roofline lets it go: the roofline is the step's matMul FLOPs at the isolated large matMul's rate (${G(r.bigRate)} here), ` +
      `against PyTorch's tokens/s in one process by compute time and the matMul rate that implies (training FLOPs per token × tokens/s).`,
  );
  md.push('');
  md.push(
    table(
      ['cell', 'step ms', 'matMuls ≈ ms', 'other kernels and JS ≈ ms', 'matMul rate in the step', 'roofline tokens/s', 'PyTorch tokens/s (compute time)', 'PyTorch implied GFLOP/s', 'roofline / PyTorch'],
      r.rows.map((row) => {
        const cell = get<Cell>(row, 'cell');
        const s = r.stepRows.find((x) => x.cell === cell)!;
        const p = get<{ matMulMs: Num; otherMs: Num }>(s, 'profile');
        const stepMs = get<Num>(s, 'handMs');
        const p1 = get<PeerResult>(row, 'peer1');
        const peerTps = p1.tokens_per_second ? peerCompute(p1, B * T) : NaN;
        const roofTps = (B * T) / (get<Num>(s, 'rooflineMs') / 1000);
        const mm = (stepMs * p.matMulMs) / (p.matMulMs + p.otherMs);
        // The profile does not see the RNN's and GRU's loops on wasm (see above): no split for them.
        const split = cell === 'lstm' || tf.getBackend() !== 'wasm' ? [fmt(mm, 1), fmt(stepMs - mm, 1), G((flopsPerToken(cell, V, H).training * B * T) / (mm / 1000))] : ['—', '—', '—'];
        return [cell.toUpperCase(), fmt(stepMs, 1), ...split, fmt(roofTps), fmt(peerTps), sig((peerTps * flopsPerToken(cell, V, H).training) / 1e9, 3), sig(roofTps / peerTps, 2)];
      }),
    ),
  );
  const lstm = r.stepRows.find((x) => x.cell === 'lstm');
  const lstmRow = r.rows.find((x) => x.cell === 'lstm');
  if (lstm && lstmRow && get<PeerResult>(lstmRow, 'peer1').tokens_per_second) {
    const p = get<{ matMulMs: Num; otherMs: Num; calls: Num }>(lstm, 'profile');
    const ms = get<Num>(lstm, 'handMs');
    const peerTps = peerCompute(get<PeerResult>(lstmRow, 'peer1'), B * T);
    const roofTps = (B * T) / (get<Num>(lstm, 'rooflineMs') / 1000);
    const loads = r.rows.flatMap((x) => ['peer1', 'local', 'peer2', 'dist2'].map((k) => get<{ load?: Num }>(x, k)?.load ?? 0));
    md.push('');
    md.push(
      `What limits dptrain: the matMuls. They are ${pct(p.matMulMs / (p.matMulMs + p.otherMs))} of the LSTM step's kernel time; the elementwise work left after fusing is ${fmt(p.calls)} kernel calls a step. ` +
        `In the step the matMuls average ${G((flopsPerToken('lstm', V, H).training * B * T) / ((ms * p.matMulMs) / (p.matMulMs + p.otherMs) / 1000))} (the recurrence forces ${T} matMuls of B = ${B} rows each way), against ${G(r.bigRate)} for the isolated large matMul. ` +
        `That rate is the ceiling: PyTorch's one-thread LSTM implies ${sig((peerTps * flopsPerToken('lstm', V, H).training) / 1e9, 3)} GFLOP/s (OpenBLAS), so even at the roofline the wasm step would give ${sig(roofTps / peerTps, 2)}× PyTorch's tokens/s; closing the rest needs a faster matMul (tfjs-node's libtensorflow, or a wasm GEMM with larger tiles), not fewer kernels.` +
        (Math.max(...loads) > 2
          ? ` The machine was shared (1-minute load up to ${Math.max(...loads)} on ${os.cpus().length} cores): the two-process figures, by wall clock, are dominated by waiting for a core and are not a measure of either trainer; the one-process figures, by compute time, are.`
          : ''),
    );
  }
  void ctx;
  return md.join('\n');
}
