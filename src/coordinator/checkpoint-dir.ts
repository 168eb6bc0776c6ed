/**
 * A checkpoint directory belongs to one run at a time, and a trained
 * checkpoint is never replaced by a new run unless the user says so.
 *
 * Before anything is loaded the directory is checked (a directory, writable,
 * there when --resume expects it) and locked: `.dptrain.lock` names the holder
 * (host, pid) and is refreshed every LOCK_REFRESH_MS. A lock is stale, and
 * taken over, when its holder on this host is gone (or is this very process:
 * a restarted container is pid 1 again), or when nobody refreshed it for
 * LOCK_STALE_MS (a holder on another machine that died with its node).
 */
import fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DptrainError } from '../shared/errors.js';
import { CHECKPOINT_FILE, CHECKPOINT_PREV_FILE } from '../shared/store/checkpoint.js';
import { mkdirp } from '../shared/mkdirp.js';
import { processAlive } from '../shared/store/temp-files.js';

export const LOCK_FILE = '.dptrain.lock';
export const LOCK_REFRESH_MS = 10_000;
export const LOCK_STALE_MS = 30_000;

export interface LockInfo {
  host: string;
  pid: number;
  startedAt: string;
}

export interface CheckpointDirOptions {
  resume: boolean;
  overwrite: boolean;
  log: (line: string) => void;
  /** For tests: the host name this process claims. */
  host?: string;
  now?: () => number;
}

export class CheckpointDirLock {
  private timer: NodeJS.Timeout | null = null;
  private released = false;

  constructor(
    readonly file: string,
    private readonly info: LockInfo,
  ) {
    this.timer = setInterval(() => this.refresh(), LOCK_REFRESH_MS);
    this.timer.unref();
  }

  private refresh(): void {
    const t = new Date();
    fs.utimes(this.file, t, t, () => {});
  }

  /** Remove the lock if it is still ours. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.timer) clearInterval(this.timer);
    const held = await readLock(this.file);
    if (held && held.host === this.info.host && held.pid === this.info.pid && held.startedAt === this.info.startedAt) {
      await fsp.rm(this.file, { force: true }).catch(() => {});
    }
  }
}

/**
 * Check and lock `dir` for a run. Refuses (exit code 2) a path that is not a
 * directory, a missing directory with --resume, a directory another live
 * coordinator holds, and a directory holding a checkpoint when neither
 * --resume nor --overwrite was given.
 */
export async function openCheckpointDir(dir: string, o: CheckpointDirOptions): Promise<CheckpointDirLock> {
  const st = await fsp.stat(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return null;
    if (e.code === 'ENOTDIR') throw new DptrainError('ERR_CHECKPOINT_DIR', `--checkpoint-dir ${dir} is not a directory: a part of its path is a file`);
    throw new DptrainError('ERR_CHECKPOINT_DIR', `cannot use --checkpoint-dir ${dir}: ${e.code ?? e.message}`);
  });
  if (st && !st.isDirectory()) throw new DptrainError('ERR_CHECKPOINT_DIR', `--checkpoint-dir ${dir} is a file, not a directory`);
  if (!st) {
    if (o.resume) {
      throw new DptrainError('ERR_CHECKPOINT_DIR', `--resume: --checkpoint-dir ${dir} does not exist (mistyped?); for a new run create it first or leave out --resume`);
    }
    try {
      await mkdirp(dir);
    } catch (e) {
      throw new DptrainError('ERR_CHECKPOINT_DIR', `cannot create --checkpoint-dir ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  const lock = await acquireLock(dir, o);
  try {
    if (!o.resume && !o.overwrite) {
      const existing = await existingCheckpoint(dir);
      if (existing) {
        throw new DptrainError(
          'ERR_CHECKPOINT_EXISTS',
          `--checkpoint-dir ${dir} already holds a checkpoint (${existing}); pass --resume to continue that run, --overwrite to replace it with a new one, or choose another directory`,
        );
      }
    }
    if (o.overwrite && !o.resume && (await existingCheckpoint(dir))) o.log(`checkpoint: --overwrite: the checkpoint in ${dir} will be replaced by this new run`);
  } catch (e) {
    await lock.release();
    throw e;
  }
  return lock;
}

async function existingCheckpoint(dir: string): Promise<string | null> {
  for (const name of [CHECKPOINT_FILE, CHECKPOINT_PREV_FILE]) {
    const st = await fsp.stat(path.join(dir, name)).catch(() => null);
    if (st) return `${name}, written ${st.mtime.toISOString()}`;
  }
  return null;
}

async function readLock(file: string): Promise<LockInfo | null> {
  try {
    const x = JSON.parse(await fsp.readFile(file, 'utf8')) as Partial<LockInfo>;
    if (typeof x.host === 'string' && typeof x.pid === 'number' && typeof x.startedAt === 'string') return x as LockInfo;
  } catch {
    /* unreadable: judged by its age alone */
  }
  return null;
}

async function acquireLock(dir: string, o: CheckpointDirOptions): Promise<CheckpointDirLock> {
  const file = path.join(dir, LOCK_FILE);
  const info: LockInfo = { host: o.host ?? os.hostname(), pid: process.pid, startedAt: new Date((o.now ?? Date.now)()).toISOString() };
  // Written whole to a temp file and then linked into place: link() fails if the lock exists, so two
  // starters cannot both create it, and nobody ever reads a half-written lock.
  const tmp = path.join(dir, `${LOCK_FILE}.${process.pid}.tmp`);
  try {
    await fsp.writeFile(tmp, JSON.stringify(info) + '\n', { mode: 0o644 });
  } catch (e) {
    throw new DptrainError('ERR_CHECKPOINT_DIR', `--checkpoint-dir ${dir} is not writable: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await fsp.link(tmp, file);
        return new CheckpointDirLock(file, info);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) {
          if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw lockedError(dir, await readLock(file));
          throw new DptrainError('ERR_CHECKPOINT_DIR', `cannot lock --checkpoint-dir ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
        }
      }
      const held = await readLock(file);
      const st = await fsp.stat(file).catch(() => null);
      const age = st ? (o.now ?? Date.now)() - st.mtimeMs : Infinity;
      const sameHost = held?.host === info.host;
      const holderGone = sameHost && (held!.pid === process.pid || !processAlive(held!.pid));
      if (!holderGone && age < LOCK_STALE_MS) throw lockedError(dir, held);
      o.log(
        `checkpoint: taking over the lock of ${held ? `${held.host} pid ${held.pid}` : 'an unknown holder'} in ${dir} (${holderGone ? 'that process is gone' : `not refreshed for ${Math.round(age / 1000)} s`})`,
      );
      await fsp.rm(file, { force: true });
    }
  } finally {
    await fsp.rm(tmp, { force: true }).catch(() => {});
  }
}

function lockedError(dir: string, held: LockInfo | null): DptrainError {
  const who = held ? `the coordinator on host ${held.host}, pid ${held.pid}, running since ${held.startedAt}` : 'another coordinator';
  return new DptrainError(
    'ERR_CHECKPOINT_LOCKED',
    `--checkpoint-dir ${dir} is in use by ${who}; stop it first or choose another directory (a lock whose holder died is taken over once it is ${LOCK_STALE_MS / 1000} s old)`,
  );
}

