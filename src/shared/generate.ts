/** `dptrain generate` and `dptrain export`: use a checkpoint without a coordinator. */
import { readCheckpoint } from './checkpoint.js';
import { preparePrefix, PREPROCESS_CHOICES, type Preprocess } from './corpus.js';
import { predict } from './evaluate.js';
import { exportLayersModel } from './export-tfjs.js';
import { selectBackend, type BackendChoice } from './backend.js';
import { Vocab } from './vocab.js';

function dimsOf(ck: { vocab: string[]; config: Record<string, unknown> }) {
  return { vocabSize: ck.vocab.length, hidden: Number(ck.config.hidden) };
}

/** How the checkpoint's corpus was preprocessed; checkpoints from before --preprocess existed used d2l's. */
function preprocessOf(config: Record<string, unknown>): Preprocess {
  const p = config.preprocess;
  return typeof p === 'string' && (PREPROCESS_CHOICES as readonly string[]).includes(p) ? (p as Preprocess) : 'd2l';
}

export async function generateFromCheckpoint(o: {
  checkpoint: string;
  prefix: string;
  length: number;
  temperature: number;
  seed: number;
  backend: BackendChoice;
  /** Receives notices about the prefix; default prints `warning: ...` to stderr. */
  onWarning?: (message: string) => void;
}): Promise<string> {
  await selectBackend({ backend: o.backend, log: () => {} });
  const ck = await readCheckpoint(o.checkpoint);
  const vocab = Vocab.fromList(ck.vocab);
  // The model only ever saw preprocessed text: 'Call Me Ishmael' must reach it as 'call me ishmael'.
  const prefix = preparePrefix(o.prefix, preprocessOf(ck.config), vocab);
  for (const w of prefix.warnings) (o.onWarning ?? ((m) => process.stderr.write(`warning: ${m}\n`)))(w);
  return predict(ck.params, dimsOf(ck), vocab, prefix.text, o.length, { temperature: o.temperature, seed: o.seed });
}

export async function exportCheckpoint(dir: string, out: string, opts: { overwrite?: boolean } = {}): Promise<string> {
  await selectBackend({ backend: 'cpu', log: () => {} });
  const ck = await readCheckpoint(dir);
  await exportLayersModel(ck.params, dimsOf(ck), ck.vocab, out, opts);
  return `exported step ${ck.step} to ${out} (model.json + weights.bin; load with tf.loadLayersModel)`;
}
