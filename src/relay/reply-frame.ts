/**
 * The relay's reply to its parent (a `grads` message), built in place: a fixed
 * msgpack header, the float64 sum written straight into the frame as float32
 * (or through float32 into float16 or bfloat16), then the streams' states, in a
 * buffer reused from round to round once the socket has written it out.
 *
 * encode() would take a float32 copy of the sum and copy it again into a fresh
 * megabyte-sized frame every round. The frame is plain msgpack that the parent
 * decodes like encode()'s (integers as uint32, numbers as float64, the same keys).
 * A big-endian host, or a field that does not fit (never for a real round),
 * goes through encode() as before.
 */
import { encode } from '../shared/wire/protocol.js';
import { bytesPerElement, encodeTensor, HOST_LITTLE_ENDIAN, type WireDtype } from '../shared/wire/tensor.js';

/** msgpack: a fixstr. */
function str(s: string): number[] {
  if (s.length > 31) throw new RangeError('fixstr only');
  return [0xa0 | s.length, ...[...s].map((c) => c.charCodeAt(0))];
}
const U32 = [0xce, 0, 0, 0, 0];
const F64 = [0xcb, 0, 0, 0, 0, 0, 0, 0, 0];

interface Layout {
  head: number[];
  roundAt: number;
  tokensAt: number;
  lossAt: number;
  computeAt: number;
  lengthAt: number;
  dataLengthAt: number;
  /** Where the state's header starts (after the gradient's bytes), and its own fields relative to that. */
  stateAt: number;
  stateHead: number[];
  stateLengthAt: number;
  stateDataLengthAt: number;
}

function layout(dtype: WireDtype, count: number): Layout {
  const head = [0x87, ...str('type'), ...str('grads'), ...str('round')];
  const roundAt = head.length + 1;
  head.push(...U32, ...str('tokenCount'));
  const tokensAt = head.length + 1;
  head.push(...U32, ...str('lossSum'));
  const lossAt = head.length + 1;
  head.push(...F64, ...str('computeMs'));
  const computeAt = head.length + 1;
  head.push(...F64, ...str('grads'), 0x83, ...str('dtype'), ...str(dtype), ...str('length'));
  const lengthAt = head.length + 1;
  head.push(...U32, ...str('data'), 0xc6);
  const dataLengthAt = head.length;
  head.push(0, 0, 0, 0);
  const stateAt = head.length + count * bytesPerElement(dtype);
  const stateHead = [...str('state'), 0x83, ...str('dtype'), ...str('float32'), ...str('length')];
  const stateLengthAt = stateHead.length + 1;
  stateHead.push(...U32, ...str('data'), 0xc6);
  const stateDataLengthAt = stateHead.length;
  stateHead.push(0, 0, 0, 0);
  return { head, roundAt, tokensAt, lossAt, computeAt, lengthAt, dataLengthAt, stateAt, stateHead, stateLengthAt, stateDataLengthAt };
}

export interface Reply {
  round: number;
  tokenCount: number;
  lossSum: number;
  computeMs: number;
  /** The float64 gradient sum. */
  sum: Float64Array;
  state: Float32Array;
}

/** Buffers kept; a frame still held by the socket beyond these is left to the garbage collector. */
const POOL = 2;

export class ReplyFrames {
  private pool: { bytes: Buffer; held: boolean }[] = [];
  private lay: Layout | null = null;
  private f32 = new Float32Array(0);
  /** Frames built in a fresh buffer (the tests check that steady rounds reuse them). */
  allocated = 0;

  constructor(
    private readonly dtype: WireDtype,
    private readonly paramCount: number,
    /** The most state values a reply carries (the streams the parent may hand over x the state width). */
    private readonly maxState: number,
  ) {}

  /**
   * The reply's frame, and the function to call once the socket has written it
   * out (or dropped it): until then its buffer is not reused.
   */
  build(r: Reply): { bytes: Uint8Array; release: () => void } {
    const fits = (x: number) => Number.isInteger(x) && x >= 0 && x <= 0xffffffff;
    if (!HOST_LITTLE_ENDIAN || r.sum.length !== this.paramCount || r.state.length > this.maxState || !fits(r.round) || !fits(r.tokenCount)) {
      if (this.f32.length !== r.sum.length) this.f32 = new Float32Array(r.sum.length);
      this.f32.set(r.sum);
      return { bytes: encode({ type: 'grads', round: r.round, tokenCount: r.tokenCount, lossSum: r.lossSum, computeMs: r.computeMs, grads: encodeTensor(this.f32, this.dtype), state: encodeTensor(r.state, 'float32') }), release: () => {} };
    }
    const frame = this.frame();
    const L = this.lay!;
    const b = frame.bytes;
    b.writeUInt32BE(r.round, L.roundAt);
    b.writeUInt32BE(r.tokenCount, L.tokensAt);
    b.writeDoubleBE(r.lossSum, L.lossAt);
    b.writeDoubleBE(r.computeMs, L.computeAt);
    const n = this.paramCount;
    const dataAt = L.dataLengthAt + 4;
    if (this.dtype === 'float32') {
      // float64 -> float32 rounds as Float32Array.set does; the data starts 4-byte aligned.
      const out = new Float32Array(b.buffer, b.byteOffset + dataAt, n);
      out.set(r.sum);
    } else {
      if (this.f32.length !== n) this.f32 = new Float32Array(n);
      this.f32.set(r.sum);
      b.set(encodeTensor(this.f32, this.dtype).data, dataAt);
    }
    const s = L.stateAt;
    b.set(L.stateHead, s);
    b.writeUInt32BE(r.state.length, s + L.stateLengthAt);
    b.writeUInt32BE(r.state.length * 4, s + L.stateDataLengthAt);
    const stateData = s + L.stateDataLengthAt + 4;
    b.set(new Uint8Array(r.state.buffer, r.state.byteOffset, r.state.byteLength), stateData);
    frame.held = true;
    let released = false;
    return {
      bytes: b.subarray(0, stateData + r.state.byteLength),
      release: () => {
        if (released) return;
        released = true;
        frame.held = false;
      },
    };
  }

  private frame(): { bytes: Buffer; held: boolean } {
    const free = this.pool.find((f) => !f.held);
    if (free) return free;
    // The gradient's data 4-byte aligned in the ArrayBuffer, so that float32 can be written through a view.
    const L = (this.lay ??= layout(this.dtype, this.paramCount));
    const pad = (4 - ((L.dataLengthAt + 4) % 4)) % 4;
    const total = L.stateAt + L.stateHead.length + this.maxState * 4;
    const bytes = Buffer.from(new ArrayBuffer(pad + total), pad, total);
    bytes.set(L.head);
    bytes.writeUInt32BE(this.paramCount, L.lengthAt);
    bytes.writeUInt32BE(this.paramCount * bytesPerElement(this.dtype), L.dataLengthAt);
    const frame = { bytes, held: false };
    this.allocated++;
    if (this.pool.length >= POOL) this.pool.shift();
    this.pool.push(frame);
    return frame;
  }
}
