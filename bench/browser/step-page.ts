/**
 * Bundled for the browser by bench/browser-step.ts (and used to check the tab's
 * arithmetic): runs a model's training step on a chosen tfjs backend and
 * returns its gradient and timings, through window.dptrainStep.
 */
import * as tf from '@tensorflow/tfjs';
import { chooseBackend } from '../../src/browser/backend.js';
import { createModel } from '../../src/shared/model/registry.js';
import { initialParamsFor } from './params.js';

interface StepRequest {
  backend: string;
  model: string;
  vocab: number;
  hyper: Record<string, number>;
  rows: number;
  numSteps: number;
  seed: number;
  /** Timed repetitions after one warm-up step. */
  reps: number;
}

async function dptrainStep(req: StepRequest) {
  const be = await chooseBackend(req.backend);
  const model = createModel(req.model, req.vocab, req.hyper);
  const { params, x, y } = initialParamsFor(model.paramCount, req.vocab, req.rows, req.numSteps, req.seed);
  const stepper = model.stepper(params);
  const state = new Float32Array(req.rows * model.stateWidth);
  const first = stepper.step({ x, y, rows: req.rows, numSteps: req.numSteps }, state);
  const times: number[] = [];
  for (let i = 0; i < req.reps; i++) {
    const t0 = performance.now();
    stepper.step({ x, y, rows: req.rows, numSteps: req.numSteps }, state);
    times.push(performance.now() - t0);
  }
  tf.engine().startScope();
  const profile = await tf.profile(() => {
    stepper.step({ x, y, rows: req.rows, numSteps: req.numSteps }, state);
  });
  tf.engine().endScope();
  const byOp = new Map<string, number>();
  for (const k of profile.kernels) byOp.set(k.name, (byOp.get(k.name) ?? 0) + 1);
  stepper.dispose();
  return {
    backend: be.name,
    device: be.device,
    grad: Array.from(first.grad),
    lossSum: first.lossSum,
    state: Array.from(first.state),
    times,
    kernels: profile.kernels.length,
    byOp: Object.fromEntries([...byOp].sort((a, b) => b[1] - a[1])),
  };
}

(window as unknown as { dptrainStep: typeof dptrainStep }).dptrainStep = dptrainStep;
