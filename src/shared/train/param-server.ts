/**
 * The master copy of the parameters and the optimizer step:
 * gradient SUM over all tokens of a round -> mean -> clip by global norm
 * (d2l grad_clipping, once, on the averaged gradient) -> tfjs optimizer.
 *
 * The in-process reference loop and the coordinator both update through this
 * class, so "N workers equal one process" compares only how the gradient sum
 * was computed.
 *
 * This is the coordinator's critical path between the last reply and the next
 * step message, so SGD runs here on the flat parameters, in the same float32
 * operations as tfjs's SGD (p + fround(-lr) * g, each rounded to float32; a
 * float64 intermediate rounds to the same float32 for + and x), with no
 * tensors to create and no copy to read back: one pass for the mean and its
 * norm, then one pass that clips (when it must) and steps, both in WebAssembly
 * SIMD (simd-sum.ts; in JavaScript where that is missing). The coordinator
 * puts this server's arrays into its gradient accumulator's memory
 * (moveInto), so that the round's float64 sum is averaged where it lies; that
 * pass also takes the unclipped step while its divisions run, and only a step
 * the norm then clips needs the second pass.
 *
 * The mean is the same float32 values either way, bit for bit. The squared
 * norm is summed in eight interleaved chains in SIMD and in one in JavaScript
 * (a relative difference near 1e-16 over 300,000 values); it only sets the clip
 * scale, so a clipped step may differ in the last bit of some parameters
 * between a SIMD and a no-SIMD run, far inside the 1e-5 the runs promise;
 * each run is deterministic, so resume stays exact. Adam goes through tfjs.
 */
import * as tf from '@tensorflow/tfjs';
import type { ModelDescriptor, ParamBlock } from '../model/descriptor.js';
import { simdSum, type SimdSum } from '../wire/simd-sum.js';

export interface OptimizerConfig {
  optimizer: 'sgd' | 'adam';
  lr: number;
  clip: number;
  /** Builds the optimizer instead of `optimizer` and `lr` (local SGD's outer optimizer: outer-optimizer.ts). */
  create?: () => tf.Optimizer;
}

export interface OptimizerSlot {
  name: string;
  values: Float32Array;
  shape: number[];
}

export interface ApplyResult {
  /** Global L2 norm of the mean gradient before clipping. */
  gradNorm: number;
  /** Factor the gradient was multiplied by (1 when not clipped). */
  scale: number;
  /** Time spent on mean + norm + clip, and in the optimizer (a step taken inside the mean's pass counts in clipMs). */
  clipMs: number;
  optimizerMs: number;
}

let instances = 0;

export class ParameterServer {
  readonly model: ModelDescriptor;
  readonly count: number;
  /** Number of optimizer steps applied. */
  version = 0;
  private readonly layout: readonly ParamBlock[];
  private readonly vars: tf.Variable[];
  private readonly varNames: string[];
  private readonly optimizer: tf.Optimizer;
  private readonly cfg: OptimizerConfig;
  private cache: Float32Array | null = null;
  private mean: Float32Array;
  /** The last mean's squared norm (meanSq). */
  private sq = 0;
  /**
   * SGD without tfjs: the parameters, and the buffer the next step writes (swapped, so params() stays valid until then).
   * With SIMD, both and `mean` live in the module's memory.
   */
  private readonly sgd: { flat: Float32Array; next: Float32Array; c: number; simd: SimdSum | null } | null;

  /** One tfjs variable per block of the model's parameter layout. */
  constructor(model: ModelDescriptor, init: Float32Array, cfg: OptimizerConfig) {
    this.model = model;
    this.count = model.paramCount;
    if (init.length !== this.count) throw new RangeError(`initial parameters hold ${init.length} values, the model has ${this.count}`);
    this.cfg = cfg;
    this.layout = model.blocks;
    // tfjs registers variables by name process-wide; tests and benchmarks hold several servers at once.
    const id = instances++;
    this.varNames = this.layout.map((p) => `dptrain${id}/${p.name}`);
    const simd = cfg.optimizer === 'sgd' && !cfg.create ? simdSum() : null;
    if (simd) {
      const need = regionBytes(this.count);
      if (simd.memory.buffer.byteLength < need) simd.memory.grow(Math.ceil((need - simd.memory.buffer.byteLength) / 65536));
      this.mean = new Float32Array(0);
      this.sgd = { flat: init, next: init, c: Math.fround(-cfg.lr), simd };
      this.place(simd, 0);
    } else {
      this.mean = new Float32Array(this.count);
      this.sgd = cfg.optimizer === 'sgd' && !cfg.create ? { flat: init.slice(), next: new Float32Array(this.count), c: Math.fround(-cfg.lr), simd: null } : null;
    }
    // A variable shares its initial tensor's data; that tensor itself must still be disposed.
    this.vars = this.sgd ? [] : this.layout.map((p, k) => {
      const t = tf.tensor1d(init.subarray(p.offset, p.offset + p.size));
      const v = tf.variable(t, true, this.varNames[k]);
      t.dispose();
      return v;
    });
    this.optimizer = cfg.create ? cfg.create() : cfg.optimizer === 'adam' ? tf.train.adam(cfg.lr) : tf.train.sgd(cfg.lr);
  }

  /** Bytes of WebAssembly memory the SIMD step uses ([mean][params][next params], float32 each, 16-byte aligned); 0 without it. */
  get simdBytes(): number {
    return this.sgd?.simd ? regionBytes(this.count) : 0;
  }

  /**
   * Moves the mean, the parameters and the next step's buffer to byte `at`
   * (16-byte aligned, `simdBytes` long) of another instance's memory, and
   * steps with that instance from then on. A Float64Array gradient sum in that
   * memory is then averaged in SIMD where it lies; any other sum goes through
   * the JavaScript loop. Arrays from params() before the move keep the old values.
   */
  moveInto(simd: SimdSum, at: number): void {
    if (!this.sgd?.simd) return;
    if (at % 16 !== 0 || at + this.simdBytes > simd.memory.buffer.byteLength) throw new RangeError(`no room for ${this.simdBytes} bytes at ${at}`);
    this.place(simd, at);
  }

  private place(simd: SimdSum, base: number): void {
    const sgd = this.sgd!;
    const stride = Math.ceil((this.count * 4) / 16) * 16;
    const view = (k: number) => new Float32Array(simd.memory.buffer, base + k * stride, this.count);
    const params = sgd.flat;
    this.mean = view(0);
    sgd.flat = view(1);
    sgd.next = view(2);
    sgd.simd = simd;
    sgd.flat.set(params);
  }

  /** Current parameters, flat. The returned array is shared until the next apply: do not mutate it. */
  params(): Float32Array {
    if (this.sgd) return this.sgd.flat;
    if (this.cache === null) {
      const flat = new Float32Array(this.count);
      this.layout.forEach((p, k) => flat.set(this.vars[k].dataSync() as Float32Array, p.offset));
      this.cache = flat;
    }
    return this.cache;
  }

  /** One optimizer step from a gradient sum over `tokens` tokens. */
  apply(gradSum: Float64Array | Float32Array, tokens: number): ApplyResult {
    if (gradSum.length !== this.count) throw new RangeError(`gradient holds ${gradSum.length} values, the model has ${this.count}`);
    if (!(tokens > 0)) throw new RangeError(`token count must be positive, got ${tokens}`);
    const t0 = performance.now();
    const mean = this.mean;
    // How many values' unclipped step the mean's pass has already taken (into `next`).
    const stepped = this.meanSq(gradSum, tokens);
    const gradNorm = Math.sqrt(this.sq);
    if (!Number.isFinite(gradNorm)) throw new RangeError('gradient is not finite; refusing to apply it');
    const scale = gradNorm > this.cfg.clip ? this.cfg.clip / gradNorm : 1;
    if (this.sgd) {
      // The clip happens inside the step's pass; its time counts as the optimizer's.
      const t1 = performance.now();
      const { next, flat, c, simd } = this.sgd;
      let done = scale === 1 ? stepped : 0;
      if (simd && done === 0) {
        done = this.count & ~3;
        if (scale === 1) simd.sgd(next.byteOffset, flat.byteOffset, mean.byteOffset, mean.byteOffset + done * 4, c);
        else simd.sgdScaled(next.byteOffset, flat.byteOffset, mean.byteOffset, mean.byteOffset + done * 4, c, scale);
      }
      if (scale === 1) sgdStep(next, flat, mean, c, done);
      else sgdStepScaled(next, flat, mean, c, scale, done);
      [this.sgd.flat, this.sgd.next] = [next, flat];
      // The iteration count the checkpoint keeps, as tfjs's applyGradients would have counted it.
      (this.optimizer as unknown as { incrementIterations(): void }).incrementIterations();
      this.version++;
      return { gradNorm, scale, clipMs: t1 - t0, optimizerMs: performance.now() - t1 };
    }
    if (scale !== 1) for (let i = 0; i < mean.length; i++) mean[i] *= scale;
    const t1 = performance.now();
    const grads: Record<string, tf.Tensor> = {};
    this.layout.forEach((p, k) => {
      grads[this.varNames[k]] = tf.tensor1d(mean.subarray(p.offset, p.offset + p.size));
    });
    this.optimizer.applyGradients(grads);
    tf.dispose(Object.values(grads));
    this.version++;
    this.cache = null;
    return { gradNorm, scale, clipMs: t1 - t0, optimizerMs: performance.now() - t1 };
  }

  /**
   * Writes the mean gradient into `this.mean` and its squared norm into `this.sq`. A sum in the SIMD
   * module's memory goes through one pass that also takes the unclipped step into `next`, at the cost
   * of a wasted step where the norm then calls for a clip; returns how many values that step covered.
   */
  private meanSq(gradSum: Float64Array | Float32Array, tokens: number): number {
    const mean = this.mean;
    if (gradSum instanceof Float32Array) {
      this.sq = meanSq32(gradSum, tokens, mean);
      return 0;
    }
    const sgd = this.sgd;
    let done = 0;
    let sq = 0;
    if (sgd?.simd && gradSum.buffer === sgd.simd.memory.buffer) {
      done = this.count & ~7;
      sq = sgd.simd.meanSqStep(mean.byteOffset, gradSum.byteOffset, gradSum.byteOffset + done * 8, tokens, sgd.next.byteOffset, sgd.flat.byteOffset, sgd.c);
    }
    this.sq = sq + meanSq64(gradSum, tokens, mean, done);
    return done;
  }

  /** Replace the parameters (resume). */
  setParams(flat: Float32Array): void {
    if (flat.length !== this.count) throw new RangeError(`parameters hold ${flat.length} values, the model has ${this.count}`);
    if (this.sgd) this.sgd.flat.set(flat);
    if (this.sgd) return;
    this.layout.forEach((p, k) => {
      const t = tf.tensor1d(flat.subarray(p.offset, p.offset + p.size));
      this.vars[k].assign(t);
      t.dispose();
    });
    this.cache = null;
  }

  /** Optimizer slots (iterations, Adam moments) in tfjs order, names without this instance's prefix. */
  async optimizerState(): Promise<OptimizerSlot[]> {
    const weights = await this.optimizer.getWeights();
    return Promise.all(
      weights.map(async (w) => ({
        name: w.name.replace(/^dptrain\d+\//, ''),
        values: new Float32Array(await w.tensor.data()),
        shape: w.tensor.shape.slice(),
      })),
    );
  }

  async loadOptimizerState(slots: OptimizerSlot[]): Promise<void> {
    const prefix = this.varNames[0].split('/')[0];
    await this.optimizer.setWeights(
      slots.map((s) => ({
        name: s.name === 'iter' || s.name === 'iterations' ? s.name : `${prefix}/${s.name}`,
        tensor: tf.tensor(s.values, s.shape),
      })),
    );
  }

  dispose(): void {
    tf.dispose(this.vars);
    this.optimizer.dispose();
  }
}

/** [mean][params][next params], float32 each, each 16-byte aligned. */
function regionBytes(count: number): number {
  return 3 * Math.ceil((count * 4) / 16) * 16 + 16;
}

/** out = p + fround(c * g) from index `from` on, in float32 as tfjs computes add(mul(c, g), p). */
function sgdStep(out: Float32Array, p: Float32Array, g: Float32Array, c: number, from: number): void {
  for (let i = from; i < out.length; i++) out[i] = Math.fround(c * g[i]) + p[i];
}

/** The same with g clipped first, rounded as `g[i] *= s` rounds it. */
function sgdStepScaled(out: Float32Array, p: Float32Array, g: Float32Array, c: number, s: number, from: number): void {
  for (let i = from; i < out.length; i++) out[i] = Math.fround(c * Math.fround(g[i] * s)) + p[i];
}

// The mean and its squared norm in one pass (the float32 mean, squared in float64, summed in order),
// from index `from` on for the SIMD pass's tail; one function per input type, so that each loop stays monomorphic.
function meanSq64(sum: Float64Array, tokens: number, mean: Float32Array, from: number): number {
  let sq = 0;
  const n = mean.length;
  for (let i = from; i < n; i++) {
    const m = Math.fround(sum[i] / tokens);
    mean[i] = m;
    sq += m * m;
  }
  return sq;
}

function meanSq32(sum: Float32Array, tokens: number, mean: Float32Array): number {
  let sq = 0;
  const n = mean.length;
  for (let i = 0; i < n; i++) {
    const m = Math.fround(sum[i] / tokens);
    mean[i] = m;
    sq += m * m;
  }
  return sq;
}
