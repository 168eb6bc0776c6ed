/**
 * Bundled for the browser by bench/browser.ts: a model's training step on the
 * tab's backend (chosen as the worker page chooses it), through
 * window.dptrainInit (build the stepper, one step, its gradient and op counts)
 * and window.dptrainTime (time n more steps).
 */
import * as tf from '@tensorflow/tfjs';
import { chooseBackend } from '../../src/browser/backend.js';
import { createModel } from '../../src/shared/model/registry.js';
import type { TrainStepper } from '../../src/shared/model/descriptor.js';
import { initialParamsFor } from './params.js';

export interface StepRequest {
  backend: string;
  model: string;
  vocab: number;
  hyper: Record<string, number>;
  rows: number;
  numSteps: number;
  seed: number;
}

let run: { stepper: TrainStepper; x: Int32Array; y: Int32Array; state: Float32Array; req: StepRequest } | null = null;

async function dptrainInit(req: StepRequest) {
  const be = await chooseBackend(req.backend);
  const model = createModel(req.model, req.vocab, req.hyper);
  const { params, x, y } = initialParamsFor(model.paramCount, req.vocab, req.rows, req.numSteps, req.seed);
  const stepper = model.stepper(params);
  const state = new Float32Array(req.rows * model.stateWidth);
  run = { stepper, x, y, state, req };
  const first = stepper.step({ x, y, rows: req.rows, numSteps: req.numSteps }, state);
  const profile = await tf.profile(() => {
    stepper.step({ x, y, rows: req.rows, numSteps: req.numSteps }, state);
  });
  const byOp = new Map<string, number>();
  for (const k of profile.kernels) byOp.set(k.name, (byOp.get(k.name) ?? 0) + 1);
  return {
    backend: be.name,
    device: be.device,
    grad: Array.from(first.grad),
    kernels: profile.kernels.length,
    byOp: Object.fromEntries([...byOp].sort((a, b) => b[1] - a[1])),
  };
}

function dptrainTime(n: number): number[] {
  const r = run!;
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    r.stepper.step({ x: r.x, y: r.y, rows: r.req.rows, numSteps: r.req.numSteps }, r.state);
    times.push(performance.now() - t0);
  }
  return times;
}

Object.assign(window, { dptrainInit, dptrainTime });
