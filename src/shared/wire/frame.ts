/** Frames -> plain values: a scan that bounds what decoding may allocate, then msgpack; and the largest frame a peer accepts. */
import { plainPackr } from '../msgpack.js';
import { DptrainError, ErrorCodes } from '../errors.js';
import { bytesPerElement, type WireDtype } from './tensor.js';
import { LIMITS } from './messages.js';

const packr = plainPackr({ copyBuffers: false });

// ---------------------------------------------------------------------------
// Decoding

function malformed(message: string): DptrainError {
  return new DptrainError(ErrorCodes.ERR_MALFORMED, message);
}

/**
 * Walks the msgpack structure without building anything, before msgpackr
 * sees the frame. It bounds what decoding can allocate (values, nesting) by
 * limits rather than by counts a hostile header claims, refuses every
 * extension type (never sent; msgpackr would otherwise build Dates, Errors,
 * records...), requires string map keys and a map at the top, and rejects
 * truncated frames and trailing bytes.
 */
function scanFrame(b: Uint8Array): void {
  const end = b.length;
  if (end === 0) throw malformed('empty frame');
  const first = b[0];
  if (!((first >= 0x80 && first <= 0x8f) || first === 0xde || first === 0xdf)) {
    throw malformed('frame is not a msgpack map');
  }
  // Per open container: values still to read, and whether it is a map
  // (in which case an even count left means the next value is a key).
  const left: number[] = [];
  const isMap: boolean[] = [];
  let pos = 0;
  let values = 0;
  const need = (k: number): void => {
    if (k > end - pos) throw malformed('truncated frame');
  };
  const open = (n: number, map: boolean): void => {
    // Every value takes at least one byte, so no honest header claims more than the bytes left.
    if (n > end - pos) throw malformed('truncated frame');
    if (n === 0) return;
    if (left.length >= LIMITS.MAX_DEPTH) throw malformed(`nesting deeper than ${LIMITS.MAX_DEPTH}`);
    left.push(n);
    isMap.push(map);
  };
  do {
    need(1);
    const t = b[pos++];
    const depth = left.length;
    if (depth > 0) {
      const key = isMap[depth - 1] && left[depth - 1] % 2 === 0;
      if (key && !((t >= 0xa0 && t <= 0xbf) || (t >= 0xd9 && t <= 0xdb))) throw malformed('map key is not a string');
      left[depth - 1]--;
    }
    if (++values > LIMITS.MAX_VALUES) throw malformed(`more than ${LIMITS.MAX_VALUES} values in one frame`);
    if (t <= 0x7f || t >= 0xe0) {
      // fixint
    } else if (t <= 0x8f) {
      open((t & 0x0f) * 2, true);
    } else if (t <= 0x9f) {
      open(t & 0x0f, false);
    } else if (t <= 0xbf) {
      need(t & 0x1f);
      pos += t & 0x1f;
    } else {
      switch (t) {
        case 0xc0: // nil
        case 0xc2: // false
        case 0xc3: // true
          break;
        case 0xc4: // bin 8
        case 0xd9: {
          // str 8
          need(1);
          const n = b[pos];
          pos += 1;
          need(n);
          pos += n;
          break;
        }
        case 0xc5: // bin 16
        case 0xda: {
          // str 16
          need(2);
          const n = (b[pos] << 8) | b[pos + 1];
          pos += 2;
          need(n);
          pos += n;
          break;
        }
        case 0xc6: // bin 32
        case 0xdb: {
          // str 32
          need(4);
          const n = readU32(b, pos);
          pos += 4;
          need(n);
          pos += n;
          break;
        }
        case 0xcc:
        case 0xd0:
          need(1);
          pos += 1;
          break;
        case 0xcd:
        case 0xd1:
          need(2);
          pos += 2;
          break;
        case 0xca:
        case 0xce:
        case 0xd2:
          need(4);
          pos += 4;
          break;
        case 0xcb:
        case 0xcf:
        case 0xd3:
          need(8);
          pos += 8;
          break;
        case 0xdc: {
          need(2);
          const n = (b[pos] << 8) | b[pos + 1];
          pos += 2;
          open(n, false);
          break;
        }
        case 0xdd: {
          need(4);
          const n = readU32(b, pos);
          pos += 4;
          open(n, false);
          break;
        }
        case 0xde: {
          need(2);
          const n = (b[pos] << 8) | b[pos + 1];
          pos += 2;
          open(n * 2, true);
          break;
        }
        case 0xdf: {
          need(4);
          const n = readU32(b, pos);
          pos += 4;
          open(n * 2, true);
          break;
        }
        default:
          // 0xc1 (never used) and the ext family 0xc7-0xc9, 0xd4-0xd8.
          throw malformed(`msgpack type 0x${t.toString(16)} is not allowed`);
      }
    }
    while (left.length > 0 && left[left.length - 1] === 0) {
      left.pop();
      isMap.pop();
    }
  } while (left.length > 0);
  if (pos !== end) throw malformed(`${end - pos} trailing bytes after the message`);
}

function readU32(b: Uint8Array, pos: number): number {
  return ((b[pos] << 24) >>> 0) + ((b[pos + 1] << 16) | (b[pos + 2] << 8) | b[pos + 3]);
}

/** One frame -> plain object with `bin` fields as Uint8Array views into `bytes`. */
export function decode(bytes: Uint8Array): unknown {
  if (!(bytes instanceof Uint8Array)) throw malformed('frame is not binary');
  scanFrame(bytes);
  let value: unknown;
  try {
    value = packr.unpack(bytes);
  } catch (e) {
    throw new DptrainError(ErrorCodes.ERR_MALFORMED, `undecodable msgpack: ${(e as Error)?.message ?? String(e)}`, { cause: e });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value) || ArrayBuffer.isView(value)) {
    throw malformed('frame is not a msgpack map');
  }
  return value;
}

// ---------------------------------------------------------------------------
// Frame size

/** Headroom for msgpack framing, strings and a character-level vocabulary. */
const PAYLOAD_SLACK = 64 * 1024;

/** The largest frame a worker accepts from its coordinator (the welcome carries the corpus, a step the parameters). */
export const WORKER_MAX_PAYLOAD = 1 << 30;

/**
 * A generous bound on the largest legitimate frame, for ws's maxPayload: the
 * welcome (tokens counted at two bytes each) or a params/grads frame (counted
 * at four bytes per value, so a peer that sends float32 whatever the run's
 * dtype still fits). `dtype` is checked but does not shrink the bound.
 * A coordinator, which never receives a welcome, can pass trainTokens = 0.
 */
export function maxPayloadFor(paramCount: number, trainTokens: number, dtype: WireDtype): number {
  if (!Number.isSafeInteger(paramCount) || paramCount < 0 || !Number.isSafeInteger(trainTokens) || trainTokens < 0) {
    throw new DptrainError(ErrorCodes.ERR_BAD_CONFIG, `maxPayloadFor: counts must be non-negative integers (${paramCount}, ${trainTokens})`);
  }
  const tensorBytes = paramCount * Math.max(4, bytesPerElement(dtype));
  return Math.max(trainTokens * 2, tensorBytes) + PAYLOAD_SLACK;
}

