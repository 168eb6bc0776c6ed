/**
 * A `grads` reply (the relay's to its parent, a worker's to its coordinator), built in place: a fixed
 * msgpack header, the float64 sum written straight into the frame as float32
 * (or through float32 into float16 or bfloat16), then the streams' states, in a
 * buffer reused from round to round once the socket has written it out.
 *
 * encode() would take a float32 copy of the sum and copy it again into a fresh
 * megabyte-sized frame every round. The frame is plain msgpack that the parent
 * decodes like encode()'s (integers as uint32, numbers as float64, the same keys).
 * A big-endian host, or a field that does not fit (never for a real round),
 * goes through encode() as before.
 *
 * The worker's reply is the same frame: claim() hands out the gradient's place
 * in it before the step runs, the step writes its gradient there, and seal()
 * adds the rest.
 */
import { encode } from './protocol.js';
import { bytesPerElement, encodeTensor, HOST_LITTLE_ENDIAN, type WireDtype } from './tensor.js';

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

interface Frame {
  bytes: Uint8Array;
  /** Big-endian fields (msgpack's order), written through this view. */
  view: DataView;
  held: boolean;
  /** State values it has room for. */
  stateRoom: number;
}

/** A `grads` frame whose gradient's place is handed out before the gradient exists (see ReplyFrames.claim). */
export interface GradSlot {
  /** Where the float32 gradient goes in the frame (paramCount values). */
  grad: Float32Array;
  /** Writes the other fields and the state; `grad` is copied in unless it is the slot's own array. */
  seal(r: Omit<Reply, 'sum'> & { grad: Float32Array }): { bytes: Uint8Array; release: () => void };
  /** Gives the frame back unsent (the step failed). */
  release(): void;
}

export class ReplyFrames {
  private pool: Frame[] = [];
  private lay: Layout | null = null;
  private f32 = new Float32Array(0);
  /** Frames built in a fresh buffer (the tests check that steady rounds reuse them). */
  allocated = 0;

  constructor(
    private readonly dtype: WireDtype,
    private readonly paramCount: number,
    /** The state values a reply carries at most (the streams the parent may hand over x the state width); a worker's grows as needed. */
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
    const frame = this.frame(r.state.length);
    const dataAt = this.lay!.dataLengthAt + 4;
    const b = frame.bytes;
    if (this.dtype === 'float32') {
      // float64 -> float32 rounds as Float32Array.set does; the data starts 4-byte aligned.
      new Float32Array(b.buffer, b.byteOffset + dataAt, this.paramCount).set(r.sum);
    } else {
      if (this.f32.length !== this.paramCount) this.f32 = new Float32Array(this.paramCount);
      this.f32.set(r.sum);
      b.set(encodeTensor(this.f32, this.dtype).data, dataAt);
    }
    return this.finish(frame, r);
  }

  /**
   * A float32 frame whose gradient a worker's step writes in place (TrainStepper's gradOut), saving the copy of
   * a megabyte into an encoded frame on the way from the step's end to the socket. Null where the frame cannot
   * be built in place (another wire dtype, a big-endian host): the caller encodes as before.
   */
  claim(stateLength: number): GradSlot | null {
    if (!HOST_LITTLE_ENDIAN || this.dtype !== 'float32') return null;
    const frame = this.frame(stateLength);
    frame.held = true;
    const b = frame.bytes;
    const grad = new Float32Array(b.buffer, b.byteOffset + this.lay!.dataLengthAt + 4, this.paramCount);
    let open = true;
    return {
      grad,
      seal: (r) => {
        if (!open) throw new Error('a claimed frame is sealed once');
        open = false;
        const fits = (x: number) => Number.isInteger(x) && x >= 0 && x <= 0xffffffff;
        if (r.state.length > frame.stateRoom || r.grad.length !== this.paramCount || !fits(r.round) || !fits(r.tokenCount)) {
          frame.held = false;
          return { bytes: encode({ type: 'grads', round: r.round, tokenCount: r.tokenCount, lossSum: r.lossSum, computeMs: r.computeMs, grads: encodeTensor(r.grad, 'float32'), state: encodeTensor(r.state, 'float32') }), release: () => {} };
        }
        if (r.grad !== grad) grad.set(r.grad);
        return this.finish(frame, r);
      },
      release: () => {
        if (open) frame.held = false;
        open = false;
      },
    };
  }

  /** Writes the fields and the state after the gradient; the frame stays held until `release`. */
  private finish(frame: Frame, r: Omit<Reply, 'sum'>): { bytes: Uint8Array; release: () => void } {
    const L = this.lay!;
    const b = frame.bytes;
    const v = frame.view;
    v.setUint32(L.roundAt, r.round);
    v.setUint32(L.tokensAt, r.tokenCount);
    v.setFloat64(L.lossAt, r.lossSum);
    v.setFloat64(L.computeAt, r.computeMs);
    const s = L.stateAt;
    b.set(L.stateHead, s);
    v.setUint32(s + L.stateLengthAt, r.state.length);
    v.setUint32(s + L.stateDataLengthAt, r.state.length * 4);
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

  /** A frame no socket holds with room for `stateLength` state values, from the pool or fresh. */
  private frame(stateLength: number): Frame {
    const free = this.pool.find((f) => !f.held && f.stateRoom >= stateLength);
    if (free) return free;
    // The gradient's data 4-byte aligned in the ArrayBuffer, so that float32 can be written through a view.
    const L = (this.lay ??= layout(this.dtype, this.paramCount));
    const pad = (4 - ((L.dataLengthAt + 4) % 4)) % 4;
    const stateRoom = Math.max(stateLength, this.maxState);
    const total = L.stateAt + L.stateHead.length + stateRoom * 4;
    // Plain typed arrays, no Buffer: the browser's worker builds its replies here too.
    const bytes = new Uint8Array(new ArrayBuffer(pad + total), pad, total);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    bytes.set(L.head);
    view.setUint32(L.lengthAt, this.paramCount);
    view.setUint32(L.dataLengthAt, this.paramCount * bytesPerElement(this.dtype));
    const frame = { bytes, view, held: false, stateRoom };
    this.allocated++;
    // The oldest free frame makes room (one still held is the socket's until it is written).
    const drop = this.pool.findIndex((f) => !f.held);
    if (this.pool.length >= POOL) this.pool.splice(drop >= 0 ? drop : 0, 1);
    this.pool.push(frame);
    return frame;
  }
}
