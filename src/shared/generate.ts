/** `dptrain generate` and `dptrain export`: use a checkpoint without a coordinator. */
import { readCheckpoint } from './checkpoint.js';
import { predict } from './evaluate.js';
import { exportLayersModel } from './export-tfjs.js';
import { selectBackend, type BackendChoice } from './backend.js';
import { Vocab } from './vocab.js';

function dimsOf(ck: { vocab: string[]; config: Record<string, unknown> }) {
  return { vocabSize: ck.vocab.length, hidden: Number(ck.config.hidden) };
}

export async function generateFromCheckpoint(o: { checkpoint: string; prefix: string; length: number; temperature: number; seed: number; backend: BackendChoice }): Promise<string> {
  await selectBackend({ backend: o.backend, log: () => {} });
  const ck = await readCheckpoint(o.checkpoint);
  return predict(ck.params, dimsOf(ck), Vocab.fromList(ck.vocab), o.prefix, o.length, { temperature: o.temperature, seed: o.seed });
}

export async function exportCheckpoint(dir: string, out: string): Promise<string> {
  await selectBackend({ backend: 'cpu', log: () => {} });
  const ck = await readCheckpoint(dir);
  await exportLayersModel(ck.params, dimsOf(ck), ck.vocab, out);
  return `exported step ${ck.step} to ${out} (model.json + weights.bin; load with tf.loadLayersModel)`;
}
