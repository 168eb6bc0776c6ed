/**
 * The `params` message, built in place: a fixed msgpack header written here,
 * then the parameters encoded straight behind it, in a buffer reused from
 * round to round once every socket it was sent on has written it out.
 *
 * encode() would copy the parameters into msgpackr's buffer and hand out a
 * fresh megabyte-sized Buffer each round (external memory that drives V8's
 * collections, and fresh pages to fault in). The frame is plain msgpack that
 * any decoder reads like encode()'s: integers as uint32, the same keys.
 */
import { DptrainError, ErrorCodes } from '../errors.js';
import { bytesPerElement, encodeTensorInto, type WireDtype } from './tensor.js';

/** msgpack: a fixstr key or value. */
function str(s: string): number[] {
  if (s.length > 31) throw new RangeError('fixstr only');
  return [0xa0 | s.length, ...[...s].map((c) => c.charCodeAt(0))];
}
const U32_SLOT = [0xce, 0, 0, 0, 0];

interface Header {
  bytes: number[];
  versionAt: number;
  lengthAt: number;
  dataLengthAt: number;
}
const headers = new Map<WireDtype, Header>();

/** Header bytes and where its three 32-bit fields go. */
function header(dtype: WireDtype): Header {
  let h = headers.get(dtype);
  if (!h) {
    h = buildHeader(dtype);
    headers.set(dtype, h);
  }
  return h;
}

function buildHeader(dtype: WireDtype): Header {
  const bytes = [0x83, ...str('type'), ...str('params'), ...str('version')];
  const versionAt = bytes.length + 1;
  bytes.push(...U32_SLOT, ...str('params'), 0x83, ...str('dtype'), ...str(dtype), ...str('length'));
  const lengthAt = bytes.length + 1;
  bytes.push(...U32_SLOT, ...str('data'), 0xc6);
  const dataLengthAt = bytes.length;
  bytes.push(0, 0, 0, 0);
  return { bytes, versionAt, lengthAt, dataLengthAt };
}

interface Frame {
  bytes: Buffer;
  dtype: WireDtype;
  count: number;
  /** Sends not yet written out. */
  held: number;
}

/** Frames kept for reuse; a frame still held by a slow socket beyond these is left to the garbage collector. */
const POOL = 3;

export class ParamsFrames {
  private pool: Frame[] = [];
  /** Frames built in a fresh buffer (for tests and the benchmarks). */
  allocated = 0;

  /**
   * The params frame for `values` at `version`. Call `hold()` once per send
   * of the frame and the function it returns when that send has been written
   * out (or failed); until then the buffer is not reused.
   */
  build(version: number, values: Float32Array, dtype: WireDtype): { bytes: Buffer; hold(): () => void } {
    if (!Number.isSafeInteger(version) || version < 0 || version > 0xffffffff) {
      throw new DptrainError(ErrorCodes.ERR_BAD_MESSAGE, `params version ${version} does not fit in 32 bits`);
    }
    const count = values.length;
    let frame = this.pool.find((f) => f.held === 0 && f.dtype === dtype && f.count === count);
    if (!frame) {
      frame = this.fresh(dtype, count);
      if (this.pool.length >= POOL) {
        // A free frame of another shape goes first; else the oldest, which its sockets still hold until they are done.
        const free = this.pool.findIndex((f) => f.held === 0);
        this.pool.splice(free >= 0 ? free : 0, 1);
      }
      this.pool.push(frame);
    }
    const h = header(dtype);
    const b = frame.bytes;
    b.writeUInt32BE(version, h.versionAt);
    encodeTensorInto(values, dtype, b.subarray(h.bytes.length));
    const f = frame;
    return {
      bytes: b,
      hold: () => {
        f.held++;
        let released = false;
        return () => {
          if (released) return;
          released = true;
          f.held--;
        };
      },
    };
  }

  private fresh(dtype: WireDtype, count: number): Frame {
    const h = header(dtype);
    const dataBytes = count * bytesPerElement(dtype);
    // The values start 4-byte aligned in the ArrayBuffer, so that they could be viewed as float32.
    const pad = (4 - (h.bytes.length % 4)) % 4;
    const bytes = Buffer.from(new ArrayBuffer(pad + h.bytes.length + dataBytes), pad, h.bytes.length + dataBytes);
    bytes.set(h.bytes);
    bytes.writeUInt32BE(count, h.lengthAt);
    bytes.writeUInt32BE(dataBytes, h.dataLengthAt);
    this.allocated++;
    return { bytes, dtype, count, held: 0 };
  }
}
