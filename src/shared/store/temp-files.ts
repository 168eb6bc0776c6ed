/**
 * Temp files of checkpoint writes whose writer died. A coordinator killed
 * while writing a checkpoint leaves its temp file behind (the checkpoint
 * itself stays whole). Each is as large as a checkpoint, and a restarted
 * process has another pid, so nothing else would ever remove them.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { CHECKPOINT_FILE } from './checkpoint.js';

/** True while a process with this pid exists on this host (EPERM: it exists, owned by someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes `.checkpoint.dpt.tmp-PID` files in `dir` whose process is gone; says so for each. */
export async function removeDeadTempFiles(dir: string, log: (line: string) => void): Promise<void> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return;
  }
  const prefix = `.${CHECKPOINT_FILE}.tmp-`;
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length));
    if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid || processAlive(pid)) continue;
    await fsp.rm(join(dir, name), { force: true }).catch(() => {});
    log(`checkpoint: removed ${name}, a partial write of a process that died`);
  }
}
