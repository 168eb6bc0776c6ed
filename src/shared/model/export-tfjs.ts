/**
 * Trained weights as a TF.js Layers model (model.json + weights.bin), so the
 * result loads with plain `tf.loadLayersModel` in a browser or in Node with no
 * dptrain code. The model descriptor builds the Layers model; this file only
 * checks the output directory and writes the files.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { DptrainError } from '../errors.js';
import type { ModelDescriptor } from './descriptor.js';
import type { TextTokenizer } from '../data/tokenizer.js';

export const MODEL_JSON_FILE = 'model.json';
export const WEIGHTS_FILE = 'weights.bin';

/** Stored under userDefinedMetadata.dptrain in model.json. */
export interface ExportMetadata {
  /** Index -> token: characters, or words with --tokens word (`<unk>` first). */
  vocab: string[];
  vocabSize: number;
  /** The model's registry name and its hyperparameters (the char-LSTM's `hidden`). */
  model: string;
  /** How text becomes the one-hot inputs: the tokenizer's name and the corpus's preprocessing. */
  tokenizer: string;
  preprocess: string;
  /** d2l's min_freq the vocabulary was built with: rarer tokens read as <unk>. */
  minFreq: number;
  /** What generated tokens are joined with: '' for characters, ' ' for words. */
  separator: string;
  [hyper: string]: unknown;
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
export async function exportLayersModel(flat: Float32Array, desc: ModelDescriptor, tokenizer: TextTokenizer, outDir: string, opts: { overwrite?: boolean } = {}): Promise<void> {
  const vocab = tokenizer.vocab.idxToToken;
  if (vocab.length !== desc.vocabSize) {
    throw new RangeError(`vocab has ${vocab.length} entries but the model's vocab size is ${desc.vocabSize}`);
  }
  await prepareExportDir(outDir, opts);
  const model = desc.layersModel(flat);
  try {
    const metadata: ExportMetadata = { vocab: [...vocab], ...desc.hyper, vocabSize: desc.vocabSize, model: desc.name, tokenizer: tokenizer.name, preprocess: tokenizer.preprocess, minFreq: tokenizer.minFreq, separator: tokenizer.separator };
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
