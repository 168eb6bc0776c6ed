/**
 * Local SGD's outer step (DiLoCo, Douillard et al. 2023). With --sync-every K
 * each worker takes K inner steps from the round's parameters θ and returns
 * (θ - θ_local) · tokens; the coordinator adds these sums, divides by the
 * tokens and gets the token-weighted average change Δ, which it treats as a
 * gradient: θ ← outer(θ, Δ). It is the ParameterServer's own mean and
 * optimizer step with another optimizer and no clipping (gradients are clipped
 * on the inner steps, where they are gradients).
 *
 * sgd:      θ ← θ - lr · Δ                        (lr 1: plain parameter averaging)
 * nesterov: m ← μ · m + Δ;  θ ← θ - lr · (Δ + μ · m)   (PyTorch's SGD(nesterov=True), tfjs's momentum optimizer)
 */
import * as tf from '@tensorflow/tfjs';
import type { OptimizerConfig } from './param-server.js';

export interface OuterConfig {
  syncEvery: number;
  outerOptimizer?: 'sgd' | 'nesterov';
  outerLr?: number;
  outerMomentum?: number;
}

/** The run uses local SGD: workers take more than one inner step per round. */
export function isLocalSgd(c: OuterConfig): boolean {
  return c.syncEvery > 1;
}

/** The name a checkpoint gives the optimizer whose slots it holds. */
export function outerOptimizerName(c: OuterConfig): string {
  return `outer-${c.outerOptimizer ?? 'nesterov'}`;
}

/** The coordinator's ParameterServer configuration for the outer step. */
export function outerOptimizerConfig(c: OuterConfig): OptimizerConfig {
  const lr = c.outerLr ?? 0.7;
  const momentum = c.outerMomentum ?? 0.9;
  const nesterov = (c.outerOptimizer ?? 'nesterov') === 'nesterov';
  return {
    optimizer: 'sgd',
    lr,
    clip: Infinity,
    create: () => (nesterov ? tf.train.momentum(lr, momentum, true) : tf.train.sgd(lr)),
  };
}
