/**
 * Trained weights as a TF.js Layers model (model.json + weights.bin), so the
 * result loads with plain `tf.loadLayersModel` in a browser or in Node with no
 * dptrain code: one-hot sequences (batch, time, V) in, per-step softmax out.
 *
 * Our flat layout keeps one matrix per gate in the order i, f, o, c; a Keras /
 * tfjs-layers LSTM wants the gates side by side in kernel (V, 4H), recurrent
 * kernel (H, 4H) and bias (4H), in the order i, f, c, o (see LSTMCell.call in
 * tfjs-layers: z is split into i, f, candidate, o).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { DptrainError } from './errors.js';
import { paramCount, paramLayout, type ModelDims, type ParamName } from './params.js';

/** Gate order of tfjs-layers' fused LSTM weights. */
const KERAS_GATES = ['i', 'f', 'c', 'o'] as const;

export const MODEL_JSON_FILE = 'model.json';
export const WEIGHTS_FILE = 'weights.bin';

/** Stored under userDefinedMetadata.dptrain in model.json. */
export interface ExportMetadata {
  vocab: string[];
  hidden: number;
  vocabSize: number;
}

function fusedWeights(flat: Float32Array, dims: ModelDims) {
  const { vocabSize: V, hidden: H } = dims;
  const at = new Map(paramLayout(dims).map((p) => [p.name, p]));
  const view = (n: ParamName) => {
    const p = at.get(n)!;
    return flat.subarray(p.offset, p.offset + p.size);
  };
  // Gate block k of a fused (rows, 4H) matrix is columns [kH, (k+1)H).
  const fuse = (prefix: 'W_x' | 'W_h', rows: number) => {
    const out = new Float32Array(rows * 4 * H);
    KERAS_GATES.forEach((g, k) => {
      const w = view(`${prefix}${g}` as ParamName);
      for (let r = 0; r < rows; r++) out.set(w.subarray(r * H, (r + 1) * H), r * 4 * H + k * H);
    });
    return out;
  };
  const bias = new Float32Array(4 * H);
  KERAS_GATES.forEach((g, k) => bias.set(view(`b_${g}` as ParamName), k * H));
  return { kernel: fuse('W_x', V), recurrentKernel: fuse('W_h', H), bias, whq: view('W_hq'), bq: view('b_q') };
}

/** The Sequential model with our weights set; the caller owns (and disposes) it. */
export function buildLayersModel(flat: Float32Array, dims: ModelDims): tf.LayersModel {
  const { vocabSize: V, hidden: H } = dims;
  if (flat.length !== paramCount(dims)) {
    throw new RangeError(`params hold ${flat.length} values but vocab size ${V} and hidden ${H} need ${paramCount(dims)}`);
  }
  const w = fusedWeights(flat, dims);
  const model = tf.sequential({ name: 'dptrain_char_lstm' });
  // Fixed layer names keep the weight names in model.json stable, whatever
  // else this process has built before.
  model.add(
    tf.layers.lstm({
      name: 'lstm',
      units: H,
      inputShape: [null, V],
      returnSequences: true,
      activation: 'tanh',
      recurrentActivation: 'sigmoid',
      unitForgetBias: false,
      useBias: true,
    }),
  );
  model.add(
    tf.layers.timeDistributed({
      name: 'output',
      layer: tf.layers.dense({ name: 'output_dense', units: V, activation: 'softmax' }),
    }),
  );
  const lstmWeights = [tf.tensor2d(w.kernel, [V, 4 * H]), tf.tensor2d(w.recurrentKernel, [H, 4 * H]), tf.tensor1d(w.bias)];
  const denseWeights = [tf.tensor2d(w.whq, [H, V]), tf.tensor1d(w.bq)];
  try {
    model.layers[0].setWeights(lstmWeights);
    model.layers[1].setWeights(denseWeights);
  } finally {
    tf.dispose([...lstmWeights, ...denseWeights]);
  }
  return model;
}

/** Errors that mean "this --out cannot be written" (the user's choice, exit 2) rather than a failing disk (exit 1). */
const PATH_CODES = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOTDIR', 'EISDIR', 'ENOENT', 'ENAMETOOLONG', 'ELOOP', 'EINVAL']);

function codeOf(e: unknown): string {
  return (e as NodeJS.ErrnoException)?.code ?? (e as Error)?.message ?? String(e);
}

async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    await fs.writeFile(tmp, data);
    await fs.rename(tmp, file);
  } catch (e) {
    await fs.rm(tmp, { force: true }).catch(() => {});
    const code = codeOf(e);
    if (PATH_CODES.has(code)) throw new DptrainError('ERR_EXPORT_PATH', `Cannot write ${file} (${code}); choose another --out.`, { cause: e });
    throw new DptrainError('ERR_EXPORT_WRITE', `Could not write ${file} (${code}).`, { cause: e });
  }
}

/**
 * Makes sure `outDir` can take model.json and weights.bin, before anything is
 * written: it must be a directory or be creatable as one inside an existing
 * parent (no mkdir -p: a mistyped path is an error, and Node's recursive mkdir
 * spins forever on paths like /proc/x/y, where the kernel answers ENOENT for
 * a child of an existing directory), and it must not hold an export already
 * unless `overwrite`. Every failure is one sentence (ERR_EXPORT_PATH or
 * ERR_EXPORT_EXISTS).
 */
export async function prepareExportDir(outDir: string, o: { overwrite?: boolean } = {}): Promise<string> {
  const out = path.resolve(outDir);
  const bad = (why: string, e?: unknown) => new DptrainError('ERR_EXPORT_PATH', `--out ${outDir} ${why}.`, { cause: e });
  const st = await fs.stat(out).catch((e: NodeJS.ErrnoException) => e);
  if (!(st instanceof Error)) {
    if (!st.isDirectory()) throw bad('is a file, not a directory; give a directory for model.json and weights.bin');
    if (!o.overwrite) {
      const held: string[] = [];
      for (const f of [MODEL_JSON_FILE, WEIGHTS_FILE]) if (await fs.lstat(path.join(out, f)).then(() => true, () => false)) held.push(f);
      if (held.length > 0) {
        throw new DptrainError('ERR_EXPORT_EXISTS', `--out ${outDir} already holds ${held.join(' and ')}; pass --overwrite to replace it, or choose another directory.`);
      }
    }
    return out;
  }
  const code = codeOf(st);
  if (code === 'ENOTDIR') throw bad('cannot be a directory: a part of its path is a file', st);
  if (code !== 'ENOENT') throw bad(`cannot be used (${code})`, st);
  const parent = path.dirname(out);
  const pst = await fs.stat(parent).catch((e: NodeJS.ErrnoException) => e);
  if (pst instanceof Error) {
    const pcode = codeOf(pst);
    if (pcode === 'ENOENT') throw bad(`cannot be created: its parent ${parent} does not exist (create it first)`, pst);
    if (pcode === 'ENOTDIR') throw bad('cannot be a directory: a part of its path is a file', pst);
    throw bad(`cannot be created: its parent ${parent} cannot be used (${pcode})`, pst);
  }
  if (!pst.isDirectory()) throw bad(`cannot be created: its parent ${parent} is a file`);
  try {
    await fs.mkdir(out);
  } catch (e) {
    // EEXIST after stat said ENOENT: a dangling symbolic link (or a race); either way not a directory to write into.
    const c = codeOf(e);
    const why = c === 'EACCES' || c === 'EPERM' || c === 'EROFS' ? ': the parent is not writable' : c === 'EEXIST' ? ': a broken symbolic link?' : '';
    throw bad(`cannot be created (${c}${why})`, e);
  }
  return out;
}

/**
 * Writes model.json and weights.bin into outDir (created if missing; see
 * prepareExportDir). Saving
 * goes through a custom handler because the `file://` scheme only exists in
 * tfjs-node. weights.bin is written first, so a model.json on disk always has
 * its weights next to it.
 */
export async function exportLayersModel(flat: Float32Array, dims: ModelDims, vocab: string[], outDir: string, opts: { overwrite?: boolean } = {}): Promise<void> {
  if (vocab.length !== dims.vocabSize) {
    throw new RangeError(`vocab has ${vocab.length} entries but the model's vocab size is ${dims.vocabSize}`);
  }
  await prepareExportDir(outDir, opts);
  const model = buildLayersModel(flat, dims);
  try {
    const metadata: ExportMetadata = { vocab: [...vocab], hidden: dims.hidden, vocabSize: dims.vocabSize };
    model.setUserDefinedMetadata({ dptrain: metadata });
    await model.save(
      tf.io.withSaveHandler(async (artifacts) => {
        if (artifacts.modelTopology instanceof ArrayBuffer || artifacts.weightSpecs === undefined) {
          throw new Error('expected a JSON topology and weight specs from LayersModel.save');
        }
        const weightData = new Uint8Array(tf.io.CompositeArrayBuffer.join(artifacts.weightData ?? []));
        const modelJson = {
          format: 'layers-model',
          generatedBy: `TensorFlow.js tfjs-layers v${tf.version_layers}`,
          convertedBy: 'dptrain',
          modelTopology: artifacts.modelTopology,
          weightsManifest: [{ paths: [WEIGHTS_FILE], weights: artifacts.weightSpecs }],
          userDefinedMetadata: artifacts.userDefinedMetadata,
        };
        await writeFileAtomic(path.join(outDir, WEIGHTS_FILE), weightData);
        const json = JSON.stringify(modelJson);
        await writeFileAtomic(path.join(outDir, MODEL_JSON_FILE), json);
        return {
          modelArtifactsInfo: {
            dateSaved: new Date(),
            modelTopologyType: 'JSON',
            modelTopologyBytes: Buffer.byteLength(JSON.stringify(artifacts.modelTopology)),
            weightSpecsBytes: Buffer.byteLength(JSON.stringify(artifacts.weightSpecs)),
            weightDataBytes: weightData.byteLength,
          },
        };
      }),
    );
  } finally {
    model.dispose();
  }
}
