/** The training split's token ids on the wire: one byte each when the vocabulary fits, else two. */
import { DptrainError, ErrorCodes } from '../errors.js';
import { LIMITS } from './messages.js';

// ---------------------------------------------------------------------------
// Token ids

function checkVocabSize(vocabSize: number): void {
  if (!Number.isSafeInteger(vocabSize) || vocabSize < 1 || vocabSize > LIMITS.MAX_VOCAB) {
    throw new DptrainError(ErrorCodes.ERR_BAD_MESSAGE, `vocabulary size must be an integer in [1, ${LIMITS.MAX_VOCAB}], got ${vocabSize}`);
  }
}

/** One byte per id when the vocabulary fits, else two (little-endian). */
export function tokensToWire(ids: Int32Array, vocabSize: number): { tokens: Uint8Array; tokenWidth: 1 | 2 } {
  checkVocabSize(vocabSize);
  const n = ids.length;
  for (let i = 0; i < n; i++) {
    const id = ids[i];
    if (id < 0 || id >= vocabSize) {
      throw new DptrainError(ErrorCodes.ERR_BAD_MESSAGE, `token id ${id} at ${i} is outside a vocabulary of ${vocabSize}`);
    }
  }
  if (vocabSize <= 256) {
    const tokens = new Uint8Array(n);
    tokens.set(ids);
    return { tokens, tokenWidth: 1 };
  }
  const tokens = new Uint8Array(n * 2);
  for (let i = 0, j = 0; i < n; i++, j += 2) {
    const id = ids[i];
    tokens[j] = id & 0xff;
    tokens[j + 1] = id >>> 8;
  }
  return { tokens, tokenWidth: 2 };
}

/** Throws ERR_BAD_MESSAGE unless every id is below vocabSize. */
export function tokensFromWire(tokens: Uint8Array, width: 1 | 2, vocabSize: number): Int32Array {
  checkVocabSize(vocabSize);
  if (width !== 1 && width !== 2) {
    throw new DptrainError(ErrorCodes.ERR_BAD_MESSAGE, `token width must be 1 or 2, got ${String(width)}`);
  }
  if (tokens.byteLength % width !== 0) {
    throw new DptrainError(ErrorCodes.ERR_BAD_MESSAGE, `${tokens.byteLength} token bytes is not a multiple of ${width}`);
  }
  const n = tokens.byteLength / width;
  const ids = new Int32Array(n);
  if (width === 1) {
    ids.set(tokens);
  } else {
    for (let i = 0, j = 0; i < n; i++, j += 2) ids[i] = tokens[j] | (tokens[j + 1] << 8);
  }
  for (let i = 0; i < n; i++) {
    if (ids[i] >= vocabSize) {
      throw new DptrainError(ErrorCodes.ERR_BAD_MESSAGE, `token id ${ids[i]} at ${i} is outside a vocabulary of ${vocabSize}`);
    }
  }
  return ids;
}

