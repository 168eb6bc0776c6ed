/**
 * Files a user names for a secret, a certificate or a config are small. Reading one whole with
 * readFileSync would read /dev/zero or a mistyped multi-gigabyte path until memory runs out;
 * these are read only if they are regular files under a size that no such file needs.
 */
import fs from 'node:fs';
import { DptrainError } from './errors.js';

export const SMALL_FILE_BYTES = 1024 * 1024;

/** The file's bytes; ERR_BAD_CONFIG naming `what` when it is missing, not a regular file, or larger than maxBytes. */
export function readSmallFile(file: string, what: string, maxBytes = SMALL_FILE_BYTES): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new DptrainError('ERR_BAD_CONFIG', `cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new DptrainError('ERR_BAD_CONFIG', `${what} ${file} is not a regular file`);
    if (st.size > maxBytes) throw new DptrainError('ERR_BAD_CONFIG', `${what} ${file} is ${st.size} bytes, more than the ${maxBytes} such a file can need`);
    const buf = Buffer.alloc(st.size);
    let n = 0;
    while (n < buf.length) {
      const k = fs.readSync(fd, buf, n, buf.length - n, n);
      if (k === 0) break;
      n += k;
    }
    return buf.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}
