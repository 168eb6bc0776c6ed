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
 * norm (JavaScript: the norm's sum must keep its order), then one pass that
 * clips (when it must) and steps, four values per instruction in WebAssembly
 * SIMD (simd-sum.ts; in JavaScript where that is missing). Adam goes through tfjs.
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
  /** Time spent on mean + norm + clip, and in the tfjs optimizer. */
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
  private readonly mean: Float32Array;
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
      // [mean][params][next params], float32 each, 16-byte aligned.
      const stride = Math.ceil((this.count * 4) / 16) * 16;
      const need = 3 * stride + 16;
      if (simd.memory.buffer.byteLength < need) simd.memory.grow(Math.ceil((need - simd.memory.buffer.byteLength) / 65536));
      const at = (k: number) => new Float32Array(simd.memory.buffer, k * stride, this.count);
      this.mean = at(0);
      this.sgd = { flat: at(1), next: at(2), c: Math.fround(-cfg.lr), simd };
      this.sgd.flat.set(init);
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
    const gradNorm = Math.sqrt(gradSum instanceof Float64Array ? meanSq64(gradSum, tokens, mean) : meanSq32(gradSum, tokens, mean));
    if (!Number.isFinite(gradNorm)) throw new RangeError('gradient is not finite; refusing to apply it');
    const scale = gradNorm > this.cfg.clip ? this.cfg.clip / gradNorm : 1;
    if (this.sgd) {
      // The clip happens inside the step's pass; its time counts as the optimizer's.
      const t1 = performance.now();
      const { next, flat, c, simd } = this.sgd;
      let done = 0;
      if (simd) {
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

/** out = p + fround(c * g) from index `from` on, in float32 as tfjs computes add(mul(c, g), p). */
function sgdStep(out: Float32Array, p: Float32Array, g: Float32Array, c: number, from: number): void {
  for (let i = from; i < out.length; i++) out[i] = Math.fround(c * g[i]) + p[i];
}

/** The same with g clipped first, rounded as `g[i] *= s` rounds it. */
function sgdStepScaled(out: Float32Array, p: Float32Array, g: Float32Array, c: number, s: number, from: number): void {
  for (let i = from; i < out.length; i++) out[i] = Math.fround(c * Math.fround(g[i] * s)) + p[i];
}

// The mean and its squared norm in one pass (the float32 mean, squared in float64, summed in order);
// one function per input type, so that each loop stays monomorphic.
function meanSq64(sum: Float64Array, tokens: number, mean: Float32Array): number {
  let sq = 0;
  const n = mean.length;
  for (let i = 0; i < n; i++) {
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
