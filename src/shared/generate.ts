/** `dptrain generate` and `dptrain export`: use a checkpoint without a coordinator. */
import { checkpointModel, checkpointTokenizer, readCheckpoint } from './store/checkpoint.js';
import { predict } from './model/evaluate.js';
import { exportLayersModel } from './model/export-tfjs.js';
import { selectBackend, type BackendChoice } from './backend.js';

/** The tokenizer the checkpoint's run used, over its vocabulary (older checkpoints: char, and d2l preprocessing before --preprocess existed). */
const tokenizerOf = checkpointTokenizer;

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
  const tokenizer = tokenizerOf(ck);
  // The model only ever saw preprocessed text: 'Call Me Ishmael' must reach it as 'call me ishmael'.
  const prefix = tokenizer.preparePrompt(o.prefix);
  for (const w of prefix.warnings) (o.onWarning ?? ((m) => process.stderr.write(`warning: ${m}\n`)))(w);
  return predict(ck.params, checkpointModel(ck), tokenizer, prefix.text, o.length, { temperature: o.temperature, seed: o.seed });
}

export async function exportCheckpoint(dir: string, out: string, opts: { overwrite?: boolean } = {}): Promise<string> {
  await selectBackend({ backend: 'cpu', log: () => {} });
  const ck = await readCheckpoint(dir);
  await exportLayersModel(ck.params, checkpointModel(ck), tokenizerOf(ck), out, opts);
  return `exported step ${ck.step} to ${out} (model.json + weights.bin; load with tf.loadLayersModel)`;
}
