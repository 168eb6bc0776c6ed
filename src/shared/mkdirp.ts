/**
 * mkdir -p that ends. Node's recursive mkdir loops forever at full CPU (and
 * ignores SIGTERM) where the kernel answers ENOENT for a directory whose
 * parent exists: procfs (`/proc/foo/bar`), some FUSE mounts. A checkpoint dir
 * or a data dir there must fail with an error, not hang, so each level is made
 * once and any failure is final.
 */
import fs from 'node:fs/promises';
import path from 'node:path';

export async function mkdirp(dir: string): Promise<void> {
  const mkdirOne = async (d: string): Promise<boolean> => {
    try {
      await fs.mkdir(d);
      return true;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return false;
      if (code !== 'EEXIST') throw e;
      if ((await fs.stat(d)).isDirectory()) return true;
      throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${d}'`), { code: 'ENOTDIR' });
    }
  };
  if (await mkdirOne(dir)) return;
  const parent = path.dirname(dir);
  if (parent !== dir) await mkdirp(parent);
  if (!(await mkdirOne(dir))) {
    throw Object.assign(new Error(`ENOENT: no such file or directory, mkdir '${dir}'`), { code: 'ENOENT' });
  }
}
