/**
 * Coordinator-owned checkpoints on disk (the format is format.ts).
 *
 * Writes are atomic (temp file, fsync, rename, fsync of the directory) and the
 * previous checkpoint is kept as checkpoint.prev.dpt, so a crash at any point
 * leaves at least one whole checkpoint on disk.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { DptrainError, ErrorCodes } from '../errors.js';
import { mkdirp } from '../mkdirp.js';
import { CHECKPOINT_FILE, CHECKPOINT_FORMAT, CHECKPOINT_PREV_FILE, decodeFile, encodeFile, Invalid, type CheckpointData } from './format.js';

export * from './format.js';
export { checkCompatible } from './compat.js';

// ---------------------------------------------------------------------------
// Files

function osReason(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (typeof err?.code === 'string') {
    // Node's messages read "ENOSPC: no space left on device, write"; keep the human part.
    const m = /^[A-Z0-9_]+: ([^,]+)/.exec(err.message ?? '');
    return m ? `${m[1]} (${err.code})` : err.code;
  }
  return e instanceof Error ? e.message : String(e);
}

/**
 * Writes atomically and keeps the previous checkpoint as checkpoint.prev.dpt.
 * Returns the path written. On failure the temp file is removed and whatever
 * checkpoint was on disk before stays readable.
 */
export async function writeCheckpoint(dir: string, data: CheckpointData): Promise<string> {
  let bytes: Uint8Array;
  try {
    // Round-trip through the reader's own checks so that nothing unreadable
    // (NaN parameters, a params length that does not fit the config) can
    // replace a good checkpoint.
    if (data.format !== CHECKPOINT_FORMAT) throw new Invalid(`its format field is ${data.format}, expected ${CHECKPOINT_FORMAT}`);
    bytes = encodeFile(data);
    decodeFile(bytes);
  } catch (e) {
    if (!(e instanceof Invalid) && !(e instanceof RangeError)) throw e;
    throw new DptrainError(ErrorCodes.ERR_CHECKPOINT_WRITE, `Refusing to write an invalid checkpoint to ${dir}: ${e.message}.`, { cause: e });
  }

  const target = path.join(dir, CHECKPOINT_FILE);
  const prev = path.join(dir, CHECKPOINT_PREV_FILE);
  const tmp = path.join(dir, `.${CHECKPOINT_FILE}.tmp-${process.pid}`);
  let tmpCreated = false;
  let movedToPrev = false;
  try {
    await mkdirp(dir);
    tmpCreated = true; // from here on a partial temp file may exist
    const fh = await fs.open(tmp, 'w');
    try {
      await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await fs.rename(target, prev);
      movedToPrev = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    await fs.rename(tmp, target);
    tmpCreated = false;
    await syncDir(dir);
    return target;
  } catch (e) {
    if (tmpCreated) await fs.rm(tmp, { force: true }).catch(() => {});
    // A failed final rename leaves only the .prev file, which readCheckpoint
    // falls back to anyway; putting it back just keeps the layout familiar.
    if (movedToPrev && tmpCreated) await fs.rename(prev, target).catch(() => {});
    throw new DptrainError(ErrorCodes.ERR_CHECKPOINT_WRITE, `Could not write a checkpoint to ${dir}: ${osReason(e)}.`, { cause: e });
  }
}

async function syncDir(dir: string): Promise<void> {
  let fh: fs.FileHandle | undefined;
  try {
    fh = await fs.open(dir, 'r');
    await fh.sync();
  } catch (e) {
    // Some platforms and filesystems cannot open or fsync a directory; the
    // renames are still atomic there, only their durability is up to the OS.
    const code = (e as NodeJS.ErrnoException).code;
    if (!['EISDIR', 'EINVAL', 'EPERM', 'EACCES', 'EBADF', 'ENOTSUP'].includes(code ?? '')) throw e;
  } finally {
    await fh?.close();
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.stat(p);
    return true;
  } catch {
    return false;
  }
}

async function readFileOrNull(file: string): Promise<Uint8Array | null> {
  try {
    // A checkpoint is a regular file: a FIFO or a device (a link to /dev/zero) would be read forever.
    const st = await fs.stat(file);
    if (!st.isFile()) throw new DptrainError(ErrorCodes.ERR_CHECKPOINT_CORRUPT, `The checkpoint ${file} is not a regular file.`);
    return await fs.readFile(file);
  } catch (e) {
    if (e instanceof DptrainError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw new DptrainError(ErrorCodes.ERR_CHECKPOINT_NOT_FOUND, `Could not read the checkpoint ${file}: ${osReason(e)}.`, { cause: e });
  }
}

/**
 * Reads checkpoint.dpt from `dir`, or checkpoint.prev.dpt when the main file
 * is missing (a crash between the two renames of a write). A corrupt main file
 * is refused, never silently replaced by the older one: resuming from an older
 * step should be the user's decision.
 */
export async function readCheckpoint(dir: string, options: { log?: (msg: string) => void } = {}): Promise<CheckpointData> {
  const main = path.join(dir, CHECKPOINT_FILE);
  const prev = path.join(dir, CHECKPOINT_PREV_FILE);
  let file = main;
  let buf = await readFileOrNull(main);
  if (buf === null) {
    buf = await readFileOrNull(prev);
    if (buf === null) {
      const why = (await exists(dir)) ? `there is no ${CHECKPOINT_FILE} in ${dir}` : `the checkpoint directory ${dir} does not exist`;
      throw new DptrainError(ErrorCodes.ERR_CHECKPOINT_NOT_FOUND, `No checkpoint to resume from: ${why}.`);
    }
    file = prev;
    options.log?.(`${main} is missing; resuming from the previous checkpoint ${prev}`);
  }
  try {
    return decodeFile(buf);
  } catch (e) {
    if (!(e instanceof Invalid)) throw e;
    let hint = '';
    if (file === main) {
      hint = (await exists(prev))
        ? ` The previous checkpoint ${prev} is still there: move it to ${main} to resume from it.`
        : ` There is no ${CHECKPOINT_PREV_FILE} to fall back to.`;
    }
    throw new DptrainError(ErrorCodes.ERR_CHECKPOINT_CORRUPT, `The checkpoint ${file} is corrupt: ${e.message}.${hint}`, { cause: e });
  }
}

