/**
 * Part `step`: throughput of one training step of the char-LSTM (d2l sizes:
 * H=256, B=32, T=35, V=28) on the chosen backend.
 *
 *  (a) the hand-derived BPTT step of src/shared/model/char-lstm/step.ts;
 *  (b) the same model differentiated by tfjs (tf.grads of lossSumOf), with the
 *      gradients copied to host memory as the hand step does;
 *  (c) a roofline: the step's matMul FLOPs at the rate a single large matMul
 *      reaches on this backend;
 * and a kernel profile of the hand step that says where its time goes.
 *
 * The machine may be shared. (a), (b) and the matMul rates are measured in
 * interleaved rounds, each sample by wall clock and by this process's CPU
 * time. On single-threaded backends (wasm, cpu) both are upper bounds of the
 * compute thread's own time: the wall clock also counts waiting for a core
 * that another process holds, CPU time also counts V8's helper threads. Their
 * minimum, "compute time", is what ratios and the roofline use there. Medians.
 */
import * as tf from '@tensorflow/tfjs';
import { lossSumOf, namedParams, type NamedParams } from '../src/shared/model/char-lstm/forward.js';
import { disposeState, disposeStepParams, lstmStep, makeStepParams, zeroState, type Batch, type LstmState } from '../src/shared/model/char-lstm/step.js';
import { initParams, paramLayout, type ModelDims } from '../src/shared/model/char-lstm/params.js';
import { Rng } from '../src/shared/data/rng.js';
import { computeMs, fmt, mean, measure, median, pct, sig, table, timeMs, type Sample } from './lib/stats.js';
import type { BenchContext, BenchPart, Section } from './lib/types.js';
import { waitForQuiet, LOAD_FLAGS } from './lib/cluster.js';

interface Shape {
  B: number;
  T: number;
  V: number;
  H: number;
}

/** FLOPs of one step, by term (multiply-add = 2 FLOPs; elementwise work ignored). */
export function stepFlops({ B, T, V, H }: Shape) {
  const terms = [
    { term: 'forward: gate matMuls', formula: '2·B·(V+H)·4H·T', flops: 2 * B * (V + H) * 4 * H * T },
    { term: 'forward: output layer', formula: '2·T·B·H·V', flops: 2 * T * B * H * V },
    { term: 'backward: dh recurrence', formula: '2·B·4H·H·T', flops: 2 * B * 4 * H * H * T },
    { term: 'backward: gate weight grads', formula: '2·(V+H)·T·B·4H', flops: 2 * (V + H) * T * B * 4 * H },
    { term: 'backward: output layer grads (dW_hq, dh)', formula: '2·2·T·B·H·V', flops: 2 * 2 * T * B * H * V },
  ];
  return { terms, total: terms.reduce((a, t) => a + t.flops, 0) };
}

/** What each matMul shape in the step is, for the profile table. */
function matMulRole(a: number[], b: number[], { B, T, V, H }: Shape): string {
  // tfjs may report matMul inputs as rank 3 ([1, m, k]); look at the last two dimensions.
  const [m0, k0] = a.slice(-2);
  const [k1, n1] = b.slice(-2);
  const is = (m: number, k: number, n: number) => m0 === m && k0 === k && k1 === k && n1 === n;
  // [onehot(x_t), h_{t-1}] or [onehot(x_t), h_{t-1}, 1] (the bias as a row of the weights).
  if (is(B, V + H, H) || is(B, V + H + 1, H)) return 'gate forward, per time step';
  if (is(B, V + H + 1, 4 * H)) return 'gate forward (the four gates in one), per time step';
  if (is(B, 4 * H, H)) return 'dh recurrence, per time step';
  if (is(B, 4 * H + V, H)) return 'dh recurrence incl. the output layer, per time step';
  if (is(B, V, H)) return 'dh from the output layer, per time step';
  if (is(T * B, V, H)) return 'dh from the output layer, all steps';
  if (is(V + H, T * B, H) || is(V + H + 1, T * B, H)) return 'gate weight grads, all steps';
  if (is(4 * H, T * B, V + H + 1)) return 'gate weight grads (transposed, the four gates in one), all steps';
  if (is(T * B, H, V)) return 'output layer forward, all steps';
  if (is(H, T * B, V)) return 'dW_hq, all steps';
  return 'other';
}

interface KernelRow {
  name: string;
  /** Calls and milliseconds per step (mean over the profiled steps). */
  calls: number;
  ms: number;
}

/** 'compute' = min(wall clock, process CPU time) per sample; for single-threaded backends. */
type Clock = 'compute' | 'wall';

/**
 * Kernel time by kernel name and matMul time by shape, averaged over several
 * profiled runs of f (tf.profile times each kernel on its own). With the
 * compute clock, each kernel is timed by min(wall clock, process CPU time)
 * instead of the backend's wall clock, so that other processes on the machine
 * do not inflate it; that is only meaningful where kernels run on the calling thread.
 */
class KernelProfile {
  runs = 0;
  private readonly byName = new Map<string, { calls: number; ms: number }>();
  private readonly byShape = new Map<string, { a: number[]; b: number[]; calls: number; ms: number }>();

  /** What timing an empty function reports: subtracted from every kernel. */
  private readonly overheadMs: number;

  constructor(private readonly clock: Clock) {
    this.overheadMs = clock === 'compute' ? median(Array.from({ length: 2001 }, () => computeMs(measure(() => {})))) : 0;
  }

  private async profile(f: () => void) {
    if (this.clock === 'wall') return tf.profile(f);
    const backend = tf.backend() as unknown as { time(g: () => void): Promise<{ kernelMs: number }> };
    const own = Object.prototype.hasOwnProperty.call(backend, 'time');
    const original = backend.time;
    backend.time = async (g: () => void) => ({ kernelMs: Math.max(0, computeMs(measure(g)) - this.overheadMs) });
    try {
      return await tf.profile(f);
    } finally {
      if (own) backend.time = original;
      else delete (backend as { time?: unknown }).time;
    }
  }

  async add(f: () => void): Promise<void> {
    const info = await this.profile(f);
    this.runs++;
    for (const k of info.kernels) {
      const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
      const row = this.byName.get(k.name) ?? { calls: 0, ms: 0 };
      row.calls++;
      row.ms += ms;
      this.byName.set(k.name, row);
      if (/MatMul/.test(k.name) && k.inputShapes.length >= 2) {
        const [a, b] = k.inputShapes;
        const key = `[${a}]x[${b}]`;
        const sh = this.byShape.get(key) ?? { a, b, calls: 0, ms: 0 };
        sh.calls++;
        sh.ms += ms;
        this.byShape.set(key, sh);
      }
    }
  }

  /** Per-step means, largest first. */
  kernels(): KernelRow[] {
    return [...this.byName].map(([name, r]) => ({ name, calls: r.calls / this.runs, ms: r.ms / this.runs })).sort((x, y) => y.ms - x.ms);
  }

  matMulShapes() {
    return [...this.byShape].map(([key, r]) => ({ key, a: r.a, b: r.b, calls: r.calls / this.runs, ms: r.ms / this.runs })).sort((x, y) => y.ms - x.ms);
  }

  get calls(): number {
    return this.kernels().reduce((a, k) => a + k.calls, 0);
  }

  get kernelMs(): number {
    return this.kernels().reduce((a, k) => a + k.ms, 0);
  }
}

/** Time per matMul of [m,k]x[k,n], from blocks of calls sized to take about `targetMs`. */
function makeMatMulProbe(m: number, k: number, n: number) {
  const a = tf.randomNormal([m, k]) as tf.Tensor2D;
  const b = tf.randomNormal([k, n]) as tf.Tensor2D;
  const block = (reps: number): Sample => {
    const s = measure(() => {
      for (let r = 0; r < reps; r++) {
        const c = tf.matMul(a, b);
        if (r === reps - 1) c.dataSync(); // waits for the whole block on asynchronous backends
        c.dispose();
      }
    });
    return { wallMs: s.wallMs / reps, cpuMs: s.cpuMs / reps };
  };
  let reps = 1;
  return {
    flops: 2 * m * k * n,
    warmUp(targetMs: number) {
      block(3);
      reps = Math.max(1, Math.round(targetMs / block(5).wallMs));
    },
    sample: () => block(reps),
    dispose: () => tf.dispose([a, b]),
  };
}

function randomBatch(rows: number, numSteps: number, V: number, seed: number): Batch {
  const rng = new Rng(seed);
  const ids = () => Int32Array.from({ length: rows * numSteps }, () => Math.min(V - 1, Math.floor(rng.next() * V)));
  return { x: ids(), y: ids(), rows, numSteps };
}

/** Medians and means of a list of samples, in ms. */
function summary(samples: Sample[]) {
  const wall = samples.map((s) => s.wallMs);
  const cpu = samples.map((s) => s.cpuMs);
  const compute = samples.map(computeMs);
  return {
    n: samples.length,
    computeMedianMs: median(compute),
    computeMeanMs: mean(compute),
    wallMedianMs: median(wall),
    wallMeanMs: mean(wall),
    cpuMedianMs: median(cpu),
    cpuMeanMs: mean(cpu),
  };
}

export const stepPart: BenchPart = {
  name: 'step',
  title: 'One training step: hand-derived BPTT vs tfjs autodiff vs a matMul roofline',
  summary: 'tokens/s of one training step (d2l sizes), tfjs autodiff for comparison, roofline, kernel profile',
  flags: {
    'hand-steps': { type: 'number', default: 40, describe: 'timed hand-derived steps (after 3 warm-up steps)' },
    'autodiff-steps': { type: 'number', default: 10, describe: 'timed autodiff steps (after 1 warm-up step)' },
    rounds: { type: 'number', default: 5, describe: 'interleave the measurements in this many rounds' },
    hidden: { type: 'number', default: 256, describe: 'H, hidden units' },
    'batch-size': { type: 'number', default: 32, describe: 'B, streams per step' },
    'num-steps': { type: 'number', default: 35, describe: 'T, time steps per step' },
    vocab: { type: 'number', default: 28, describe: "V, vocabulary size (The Time Machine's is 28)" },
    ...LOAD_FLAGS,
  },

  async run(ctx: BenchContext): Promise<Section> {
    const quiet = await waitForQuiet(ctx, ctx.flag<number>('load-threshold'), ctx.flag<number>('load-wait'));
    const shape: Shape = { B: ctx.flag<number>('batch-size'), T: ctx.flag<number>('num-steps'), V: ctx.flag<number>('vocab'), H: ctx.flag<number>('hidden') };
    const { B, T, V, H } = shape;
    const rounds = Math.max(1, Math.round(ctx.flag<number>('rounds')));
    const handN = Math.max(rounds, Math.round(ctx.flag<number>('hand-steps')));
    const autoN = Math.max(rounds, Math.round(ctx.flag<number>('autodiff-steps')));
    const dims: ModelDims = { vocabSize: V, hidden: H };
    const tokens = B * T;
    // Single-threaded backends: this process's CPU time is the time the work
    // took, whatever else the machine runs. Multi-threaded ones: wall clock.
    const clock: Clock = ctx.backend.name === 'cpu' || (ctx.backend.name === 'wasm' && /\b1 thread\b/.test(ctx.env.backendDetail)) ? 'compute' : 'wall';
    const tensorsBefore = tf.memory().numTensors;

    const flat = initParams(dims, new Rng(0));
    const batch = randomBatch(B, T, V, 1);
    const sp = makeStepParams(flat, dims);
    const zero = zeroState(B, H);
    let state: LstmState = zeroState(B, H);
    const handStep = () => {
      const r = lstmStep(sp, batch, state);
      disposeState(state);
      state = r.state;
      return r;
    };

    const np: NamedParams = namedParams(flat, dims);
    const names = paramLayout(dims).map((p) => p.name);
    const gradFn = tf.grads((...ts: tf.Tensor[]) => lossSumOf(Object.fromEntries(names.map((n, k) => [n, ts[k]])) as NamedParams, batch, zero, dims));
    const autodiffStep = (): Float32Array[] => {
      const gs = gradFn(names.map((n) => np[n]));
      const host = gs.map((g) => g.dataSync() as Float32Array);
      tf.dispose(gs);
      return host;
    };

    // Same computation? Compare both gradients from the zero state (this is also autodiff's warm-up step).
    const handFromZero = lstmStep(sp, batch, zero);
    disposeState(handFromZero.state);
    const autoGrads = autodiffStep();
    let maxDiff = 0;
    let maxAbs = 0;
    paramLayout(dims).forEach((p, k) => {
      for (let i = 0; i < p.size; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(handFromZero.grad[p.offset + i] - autoGrads[k][i]));
        maxAbs = Math.max(maxAbs, Math.abs(autoGrads[k][i]));
      }
    });
    ctx.log(`hand vs autodiff gradient: max |diff| ${maxDiff.toExponential(2)} (max |grad| ${maxAbs.toExponential(2)})`);

    // Warm-up.
    for (let i = 0; i < 3; i++) handStep();
    const big = makeMatMulProbe(V + H, T * B, H); // [V+H, T·B] x [T·B, H]: the gate weight grads, the largest matMul
    const small = makeMatMulProbe(B, V + H, H); // [B, V+H] x [V+H, H]: one gate at one time step
    big.warmUp(30);
    small.warmUp(30);

    // Interleaved rounds, one profiled hand step in each.
    const handS: Sample[] = [];
    const autoS: Sample[] = [];
    const bigS: Sample[] = [];
    const smallS: Sample[] = [];
    const handProfile = new KernelProfile(clock);
    const share = (n: number, r: number) => Math.floor(((r + 1) * n) / rounds) - Math.floor((r * n) / rounds);
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < share(handN, r); i++) handS.push(measure(handStep));
      for (let i = 0; i < 3; i++) bigS.push(big.sample());
      for (let i = 0; i < share(autoN, r); i++) autoS.push(measure(autodiffStep));
      for (let i = 0; i < 3; i++) smallS.push(small.sample());
      await handProfile.add(() => void handStep());
      const h = summary(handS);
      ctx.log(`round ${r + 1}/${rounds}: hand ${fmt(h.wallMedianMs, 1)} ms wall / ${fmt(h.cpuMedianMs, 1)} ms CPU, autodiff ${fmt(summary(autoS).wallMedianMs, 0)} ms wall`);
    }
    // The fixed cost of one tfjs op, engine included: a multiply of two 1-element tensors.
    const tiny = tf.tensor1d([1]);
    const opUs = median(
      Array.from({ length: 7 }, () => {
        const s0 = measure(() => {
          for (let i = 0; i < 500; i++) tf.mul(tiny, tiny).dispose();
        });
        return ((clock === 'compute' ? computeMs(s0) : s0.wallMs) / 500) * 1000;
      }),
    );
    tiny.dispose();
    // What trainLocal adds per step: uploading the parameters into StepParams.
    const uploadMs = median(Array.from({ length: 10 }, () => timeMs(() => disposeStepParams(makeStepParams(flat, dims)))));
    const autoProfile = new KernelProfile(clock);
    await autoProfile.add(() => void autodiffStep());

    big.dispose();
    small.dispose();
    disposeStepParams(sp);
    disposeState(state);
    disposeState(zero);
    tf.dispose(Object.values(np));
    const leaked = tf.memory().numTensors - tensorsBefore;

    // ---- numbers
    const hand = summary(handS);
    const auto = summary(autoS);
    const bigT = summary(bigS);
    const smallT = summary(smallS);
    const tps = (ms: number) => tokens / (ms / 1000);
    const flops = stepFlops(shape);
    const rate = (probe: { flops: number }, ms: number) => probe.flops / (ms / 1000);
    const byClock = {
      compute: {
        ratio: auto.computeMedianMs / hand.computeMedianMs,
        rooflineMs: (flops.total / rate(big, bigT.computeMedianMs)) * 1000,
        bigRate: rate(big, bigT.computeMedianMs),
        smallRate: rate(small, smallT.computeMedianMs),
      },
      wall: {
        ratio: auto.wallMedianMs / hand.wallMedianMs,
        rooflineMs: (flops.total / rate(big, bigT.wallMedianMs)) * 1000,
        bigRate: rate(big, bigT.wallMedianMs),
        smallRate: rate(small, smallT.wallMedianMs),
      },
    };
    const fractionOf = (c: Clock) => byClock[c].rooflineMs / (c === 'compute' ? hand.computeMedianMs : hand.wallMedianMs);
    const main = byClock[clock];
    const other: Clock = clock === 'compute' ? 'wall' : 'compute';
    const stepMs = clock === 'compute' ? hand.computeMedianMs : hand.wallMedianMs;
    const loadFactor = median(handS.map((x) => x.wallMs / x.cpuMs));
    const achievedRate = flops.total / (stepMs / 1000);

    const kernels = handProfile.kernels();
    const kernelMsPerStep = handProfile.kernelMs;
    const isMatMul = (k: KernelRow) => /MatMul/.test(k.name);
    const matMulKernelMs = kernels.filter(isMatMul).reduce((a, k) => a + k.ms, 0);
    const matMulCalls = kernels.filter(isMatMul).reduce((a, k) => a + k.calls, 0);
    const otherKernelMs = kernelMsPerStep - matMulKernelMs;
    // Profiling adds bookkeeping around kernels, not inside them: kernel times
    // carry over to an unprofiled step, and the rest of its time is outside kernels.
    const stepBasisMs = Math.max(stepMs, kernelMsPerStep);
    const outsideMs = stepBasisMs - kernelMsPerStep;
    const shapeRows = handProfile.matMulShapes().map((r) => {
      const f = 2 * r.a[0] * r.a[1] * r.b[1];
      return { shape: r.key, role: matMulRole(r.a, r.b, shape), calls: r.calls, ms: r.ms, gflops: (r.calls * f) / (r.ms / 1000) / 1e9 };
    });
    const group = (re: RegExp) => {
      const rows = shapeRows.filter((r) => re.test(r.role));
      const ms = rows.reduce((a, r) => a + r.ms, 0);
      return { count: rows.length, calls: rows.reduce((a, r) => a + r.calls, 0), ms, rate: rows.reduce((a, r) => a + r.gflops * 1e9 * (r.ms / 1000), 0) / (ms / 1000) };
    };
    const perStep = group(/per time step/);
    const allSteps = group(/all steps/);
    const byName = (n: string) => kernels.find((k) => k.name === n);
    const tanh = byName('Tanh');
    const sigmoid = byName('Sigmoid');
    const tanhNote =
      tanh && sigmoid && tanh.ms / tanh.calls > 2.5 * (sigmoid.ms / sigmoid.calls)
        ? ` One elementwise kernel stands out: Tanh costs ${fmt(tanh.ms / tanh.calls / (sigmoid.ms / sigmoid.calls), 1)}× a Sigmoid of the same (B, H) shape on this backend (${fmt((1000 * tanh.ms) / tanh.calls)} vs ${fmt((1000 * sigmoid.ms) / sigmoid.calls)} µs per call), so its ${fmt(tanh.calls, 0)} calls take ${fmt(tanh.ms, 1)} ms; tanh(x) = 2·sigmoid(2x) − 1 would recover most of that.`
        : '';
    const threadsNote = clock === 'compute' && ctx.backend.name === 'wasm'
      ? ` Finally, the wasm backend runs every kernel on one thread (${ctx.env.backendDetail}): these are one-core numbers on a ${ctx.env.cores}-core machine, and the other core is left for a second worker process, which is how the data-parallel trainer uses it.`
      : '';

    // ---- report
    const G = (x: number) => `${sig(x / 1e9)} GFLOP/s`;
    const clockName = (c: Clock) => (c === 'compute' ? 'compute time' : 'wall clock');
    const md: string[] = [];
    md.push(
      `Model: char-LSTM, H=${H}, B=${B}, T=${T}, V=${V} (${fmt(tokens)} tokens per step). Random token ids, fixed seed; the hidden state is carried from step to step as in sequential training. ` +
        `Gradients are on the host (\`Float32Array\`) at the end of every step in both variants; uploading the parameters into the step's tensors, which the training loop does once per step, is not included (${fmt(uploadMs, 2)} ms). ` +
        `The steps and the matMul probes are interleaved over ${rounds} rounds, and every sample records both wall-clock time and this process's CPU time. ` +
        (clock === 'compute'
          ? `The ${ctx.backend.name} backend computes on the calling thread, so both are upper bounds of that thread's own time: the wall clock also counts waiting for a core held by another process, the CPU time also counts V8's helper threads (garbage collection). ` +
            `Their minimum per sample, **compute time**, is what the work cost whatever else ran on the machine; ratios and the roofline are computed from it, with the wall-clock versions alongside. ` +
            `During this run a step's wall time was ${fmt(loadFactor, 2)}× its CPU time${loadFactor > 1.2 ? ' (the machine was shared)' : ''}.`
          : `The ${ctx.backend.name} backend computes on several threads, so wall-clock time is the measure; compute-time columns (here min(wall, CPU summed over threads)) are only for reference.`),
    );
    md.push('');
    md.push(
      table(
        ['', 'compute ms / step', 'tokens/s, compute time', 'wall ms / step', 'tokens/s, wall (median)', 'tokens/s, wall (mean)', 'samples'],
        [
          ['(a) hand-derived BPTT (`lstmStep`)', fmt(hand.computeMedianMs, 1), `**${fmt(tps(hand.computeMedianMs))}**`, fmt(hand.wallMedianMs, 1), `**${fmt(tps(hand.wallMedianMs))}**`, fmt(tps(hand.wallMeanMs)), hand.n],
          ['(b) tfjs autodiff (`tf.grads` of `lossSumOf`)', fmt(auto.computeMedianMs, 1), `**${fmt(tps(auto.computeMedianMs))}**`, fmt(auto.wallMedianMs, 1), `**${fmt(tps(auto.wallMedianMs))}**`, fmt(tps(auto.wallMeanMs)), auto.n],
          ['(c) roofline (step FLOPs at the large-matMul rate)', fmt(byClock.compute.rooflineMs, 1), `**${fmt(tps(byClock.compute.rooflineMs))}**`, fmt(byClock.wall.rooflineMs, 1), `**${fmt(tps(byClock.wall.rooflineMs))}**`, '', ''],
        ],
        ['l', 'r', 'r', 'r', 'r', 'r', 'r'],
      ),
    );
    md.push('');
    md.push('Times are medians over the samples unless marked mean.');
    md.push('');
    md.push(
      'The hand-derived step (`src/shared/model/char-lstm/step.ts`) multiplies, per time step, [onehot(x_t), h_{t-1}, 1] with the gates\' contiguous blocks [W_x; W_h; b] of the flat parameters ' +
        '(the bias is a row of the weights: no add in the forward pass, no sum in the backward pass) and computes tanh as 2·sigmoid(2x) − 1 (the candidate gate\'s block is doubled once per parameter version). ' +
        'On wasm the four gates are one matMul per time step, the gate arithmetic of a time step is three custom kernels (WebAssembly SIMD over the backend\'s memory, src/shared/model/kernels/) and two backend sigmoids, ' +
        'the output layer\'s share of dh is one matMul for all steps (dLogits × W_hq^T) whose row blocks the backward kernel adds, and the gates\' weight gradients are one matMul, dZ^T × A (wasm packs the second operand of a matMul afresh when it is a new tensor, and A is a quarter of dZ\'s size). ' +
        'Elsewhere the same arithmetic runs as tfjs ops, with one matMul per gate and the output layer\'s share of dh folded into the recurrence matMul ([dZ_t, dLogits_{t-1}] × [W_h^T; W_hq^T]).',
    );
    md.push('');
    md.push(`- **hand / autodiff: ${fmt(main.ratio, 1)}×** by ${clockName(clock)} (${fmt(byClock[other].ratio, 1)}× by ${clockName(other)}); target ≥ 8× on wasm. Both compute the same gradient: max |difference| ${maxDiff.toExponential(1)} for gradients up to ${maxAbs.toExponential(1)}.`);
    md.push(`- **fraction of roofline: ${pct(fractionOf(clock))}** by ${clockName(clock)} (${pct(fractionOf(other))} by ${clockName(other)}); target ≥ 60%. The hand step sustains ${G(achievedRate)} of matMul work.`);
    md.push(`- tensors left behind by the whole part: ${leaked}.`);
    md.push('');
    md.push(`**FLOPs per step** (multiply-add = 2; elementwise work ignored): F = 2·B·(V+H)·4H·T + 2·T·B·H·V + 2·B·4H·H·T + 2·(V+H)·T·B·4H + 2·2·T·B·H·V = ${sig(flops.total / 1e9, 4)} GFLOP, ${sig(flops.total / tokens / 1e6, 3)} MFLOP per token.`);
    md.push('');
    md.push(table(['term', 'formula', 'GFLOP'], flops.terms.map((t) => [t.term, t.formula, sig(t.flops / 1e9, 3)]), ['l', 'l', 'r']));
    md.push('');
    md.push(
      `**MatMul rates** (plain \`tf.matMul\`, median of ${bigT.n} blocks, by ${clockName(clock)}; ${clockName(other)} in parentheses): ` +
        `[${V + H},${T * B}]x[${T * B},${H}], the largest matMul of the step (the gate weight gradients): **${G(main.bigRate)}** (${G(byClock[other].bigRate)}); ` +
        `[${B},${V + H}]x[${V + H},${H}], one gate at one time step: **${G(main.smallRate)}** (${G(byClock[other].smallRate)}). ` +
        `Roofline = F / ${G(main.bigRate)} = ${fmt(main.rooflineMs, 1)} ms per step = ${fmt(tps(main.rooflineMs))} tokens/s. At the per-time-step rate instead, the bound would be ${fmt(tokens / (flops.total / main.smallRate))} tokens/s.`,
    );
    md.push('');
    md.push(`**Kernel profile of the hand-derived step** (\`tf.profile\` of ${handProfile.runs} steps, one per round, each kernel timed by ${clockName(clock)}; per step): ${fmt(handProfile.calls, 0)} kernel calls, ${fmt(kernelMsPerStep, 1)} ms of kernel time. Top 10 by time:`);
    md.push('');
    md.push(
      table(
        ['kernel', 'calls', 'ms', 'share of kernel time', 'µs / call'],
        kernels.slice(0, 10).map((k) => [k.name, fmt(k.calls, 0), fmt(k.ms, 2), pct(k.ms / kernelMsPerStep, 1), fmt((1000 * k.ms) / k.calls, 1)]),
      ),
    );
    md.push('');
    md.push("The same steps' matMuls by shape:");
    md.push('');
    md.push(table(['shape', 'role', 'calls', 'ms', 'GFLOP/s'], shapeRows.map((r) => [r.shape, r.role, fmt(r.calls, 0), fmt(r.ms, 2), sig(r.gflops)]), ['l', 'l', 'r', 'r', 'r']));
    md.push('');
    const autoKernels = autoProfile.kernels();
    const autoMatMulCalls = autoKernels.filter(isMatMul).reduce((a, k) => a + k.calls, 0);
    md.push(`For comparison, one autodiff step runs ${fmt(autoProfile.calls, 0)} kernels (${fmt(autoProfile.kernelMs, 0)} ms of kernel time); its top kernels: ${autoKernels.slice(0, 5).map((k) => `${k.name} ${fmt(k.ms, 0)} ms in ${fmt(k.calls, 0)} calls`).join(', ')}.`);
    md.push('');
    const gapParts = [
      { key: 'matmul', what: 'matMuls running below the roofline rate', ms: Math.max(0, matMulKernelMs - main.rooflineMs) },
      { key: 'other', what: 'the non-matMul kernels', ms: otherKernelMs },
      { key: 'outside', what: 'work outside kernels', ms: outsideMs },
    ];
    const largest = [...gapParts].sort((x, y) => y.ms - x.ms)[0];
    const lever =
      largest.key === 'matmul'
        ? 'The lever is the matMul efficiency: more rows per matMul (a larger B; the four gates as one (B, 4H) matMul would need column slices, which copy on this backend).'
        : largest.key === 'other'
          ? `The matMuls themselves run at ${pct(main.rooflineMs / Math.max(matMulKernelMs, main.rooflineMs))} of the roofline rate, so the lever is the other kernels; the largest: ${kernels
              .filter((k) => !isMatMul(k))
              .slice(0, 4)
              .map((k) => `${k.name} ${fmt(k.ms, 1)} ms in ${fmt(k.calls, 0)} calls`)
              .join(', ')}.`
          : 'The lever is the JavaScript around the kernels: fewer tensor creations and host copies per step.';
    md.push(
      `**What limits it.** A step takes ${fmt(stepMs, 1)} ms against a roofline of ${fmt(main.rooflineMs, 1)} ms (${clockName(clock)}). ` +
        `Per the profile, matMul kernels take ${fmt(matMulKernelMs, 1)} ms of it (${pct(matMulKernelMs / stepBasisMs)}, ${fmt(matMulCalls, 0)} calls), ` +
        `the other ${fmt(handProfile.calls - matMulCalls, 0)} kernels (the elementwise gate math, concat, transpose, softmax, sums) ${fmt(otherKernelMs, 1)} ms (${pct(otherKernelMs / stepBasisMs)}), ` +
        `and the remaining ${fmt(outsideMs, 1)} ms (${pct(outsideMs / stepBasisMs)}) is outside kernels: JavaScript, building the one-hot inputs, copying the gradient to the host (the profiled kernel times are accurate to a few ms). ` +
        `Every tfjs op also has a fixed cost: ${fmt(opUs, 1)} µs for a multiply of two 1-element tensors, engine included, so the ${fmt(handProfile.calls, 0)} ops of a step cost about ${fmt((handProfile.calls * opUs) / 1000, 1)} ms (${pct((handProfile.calls * opUs) / 1000 / stepMs)} of the step) before any arithmetic. ` +
        `Above the roofline: ${gapParts.map((g) => `${g.what} ${fmt(g.ms, 1)} ms`).join(', ')}; the largest share is ${largest.what}. ` +
        `The recurrence forces ${fmt(perStep.calls, 0)} small matMuls with only B=${B} rows; they take ${fmt(perStep.ms, 1)} ms at ${G(perStep.rate)}, ` +
        `while the ${allSteps.count} matMuls over all time steps at once take ${fmt(allSteps.ms, 1)} ms at ${G(allSteps.rate)} (the isolated large matMul: ${G(main.bigRate)}). ` +
        lever +
        tanhNote +
        ` Autodiff is ${fmt(main.ratio, 1)}× slower: it runs ${fmt(autoProfile.calls / handProfile.calls, 1)}× as many kernels, ${fmt(autoMatMulCalls, 0)} of them matMuls instead of ${fmt(matMulCalls, 0)}, and its matMuls alone take ${fmt(autoKernels.filter(isMatMul).reduce((a, k) => a + k.ms, 0) / matMulKernelMs, 1)}× the hand step's matMul time.` +
        threadsNote,
    );

    return {
      markdown: md.join('\n'),
      result: {
        quiet,
        shape,
        tokensPerStep: tokens,
        rounds,
        clock,
        wallOverCpu: loadFactor,
        hand: { ...hand, tokensPerSecondCompute: tps(hand.computeMedianMs), tokensPerSecondWallMedian: tps(hand.wallMedianMs), tokensPerSecondWallMean: tps(hand.wallMeanMs), samples: handS },
        autodiff: { ...auto, tokensPerSecondCompute: tps(auto.computeMedianMs), tokensPerSecondWallMedian: tps(auto.wallMedianMs), tokensPerSecondWallMean: tps(auto.wallMeanMs), samples: autoS },
        ratioHandOverAutodiff: { compute: byClock.compute.ratio, wall: byClock.wall.ratio },
        gradientCheck: { maxAbsDiff: maxDiff, maxAbsGrad: maxAbs },
        flops: { perStep: flops.total, perToken: flops.total / tokens, terms: flops.terms },
        matMul: {
          large: { shape: [[V + H, T * B], [T * B, H]], flopsPerSecCompute: byClock.compute.bigRate, flopsPerSecWall: byClock.wall.bigRate, samples: bigS },
          perTimeStep: { shape: [[B, V + H], [V + H, H]], flopsPerSecCompute: byClock.compute.smallRate, flopsPerSecWall: byClock.wall.smallRate, samples: smallS },
        },
        roofline: {
          compute: { msPerStep: byClock.compute.rooflineMs, tokensPerSec: tps(byClock.compute.rooflineMs), fraction: fractionOf('compute') },
          wall: { msPerStep: byClock.wall.rooflineMs, tokensPerSec: tps(byClock.wall.rooflineMs), fraction: fractionOf('wall') },
        },
        paramUploadMs: uploadMs,
        fixedCostPerOpMicroseconds: opUs,
        profile: {
          clock,
          hand: { steps: handProfile.runs, kernelCallsPerStep: handProfile.calls, kernelMsPerStep, kernels, matMulShapes: shapeRows },
          autodiff: { steps: autoProfile.runs, kernelCallsPerStep: autoProfile.calls, kernelMsPerStep: autoProfile.kernelMs, kernels: autoKernels.slice(0, 20) },
        },
        leakedTensors: leaked,
      },
    };
  },
};
