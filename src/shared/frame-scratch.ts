/**
 * One receive buffer for the large frames of every connection of a server
 * (the coordinator's and a relay's), or of a worker's one connection.
 *
 * A 1.2 MB gradient reaches the socket as some twenty 64 kB reads, and ws
 * joins them into a fresh Buffer per message: megabytes of new external
 * memory per round, which is what drives V8's garbage collections on the
 * coordinator (scavenges and full collections triggered by external memory,
 * a third of its CPU time in the `fanin` part's profile). Here a connection's
 * ws receiver copies a large, single-frame binary message into a scratch
 * buffer shared by the server's connections instead, grown to the largest
 * frame seen, so that steady-state rounds allocate nothing per message.
 *
 * This is safe only because ws (with allowSynchronousEvents, its default)
 * emits the message synchronously from the copy, and the handlers are done
 * with the bytes when they return: they decode, validate and sum them, and
 * copy whatever they keep (a stream state, a token, the parameters, the
 * corpus). A relay's link to its parent keeps the parameters' frame to pass
 * it on, so it does not use this. Fragmented,
 * compressed, text and small frames take ws's own path. Where ws's receiver
 * does not look as expected (another ws version), nothing is changed.
 */
import type { WebSocket } from 'ws';
import { attachDirectReads } from './direct-reads.js';

/** DPTRAIN_DIRECT_READS=0 turns the socket read takeover off (for comparisons). */
const DIRECT_READS = process.env.DPTRAIN_DIRECT_READS !== '0';

/** Frames below this take ws's own path (a slice of one socket read, or a small copy). */
const MIN_SCRATCH_FRAME = 64 * 1024;

/** The fields of ws's Receiver (ws 8) this relies on. */
interface ReceiverInternals {
  consume(n: number): Buffer;
  _buffers: Buffer[];
  _bufferedBytes: number;
  _fin: boolean;
  _fragmented: number;
  _opcode: number;
  _compressed: boolean;
  _allowSynchronousEvents: boolean;
  _payloadLength: number;
}

function looksLikeWs8(r: unknown): r is ReceiverInternals {
  const x = r as Partial<ReceiverInternals> | null;
  return (
    !!x &&
    typeof x.consume === 'function' &&
    Array.isArray(x._buffers) &&
    typeof x._bufferedBytes === 'number' &&
    typeof x._fin === 'boolean' &&
    typeof x._fragmented === 'number' &&
    typeof x._opcode === 'number' &&
    x._allowSynchronousEvents === true
  );
}

export class FrameScratch {
  private buf = Buffer.alloc(0);
  /** Messages received through the scratch (for tests and the benchmarks). */
  uses = 0;

  /**
   * `place`, when given, offers the memory a frame of n bytes is received into
   * (the coordinator's: its gradient sum's WebAssembly memory, where a float32
   * gradient is then summed without a copy); null: the scratch's own buffer.
   */
  constructor(private readonly place?: (n: number) => Uint8Array | null) {}

  /**
   * Route `ws`'s large single-frame binary messages through the scratch; false where its receiver is not ws 8's.
   * Where the socket allows it, its reads are taken over first (direct-reads.ts: such a frame is read straight
   * into a buffer of the connection's own, with no allocation per read); the scratch then serves only what
   * that leaves to ws.
   */
  attach(ws: WebSocket): boolean {
    const r = (ws as unknown as { _receiver?: unknown })._receiver;
    if (!looksLikeWs8(r)) return false;
    if (DIRECT_READS) attachDirectReads(ws, () => this.uses++);
    const own = r.consume;
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const scratch = this;
    r.consume = function (this: ReceiverInternals, n: number): Buffer {
      // The payload of a whole binary message (not a header, a fragment, a control frame or a compressed one) that spans socket reads.
      if (n < MIN_SCRATCH_FRAME || n !== this._payloadLength || !this._fin || this._fragmented !== 0 || this._opcode !== 2 || this._compressed || !this._allowSynchronousEvents || this._buffers[0].length >= n) {
        return own.call(this, n);
      }
      return scratch.take(this, n);
    };
    return true;
  }

  private take(r: ReceiverInternals, n: number): Buffer {
    const offered = this.place?.(n);
    let dst: Buffer;
    if (offered && offered.byteLength === n) {
      // A Buffer over those bytes, not a copy: the handlers see where the frame lies.
      dst = Buffer.from(offered.buffer, offered.byteOffset, n);
    } else {
      if (this.buf.length < n) this.buf = Buffer.allocUnsafe(n);
      dst = this.buf.subarray(0, n);
    }
    r._bufferedBytes -= n;
    let at = 0;
    while (at < n) {
      const b = r._buffers[0];
      const want = n - at;
      if (b.length <= want) {
        dst.set(b, at);
        at += b.length;
        r._buffers.shift();
      } else {
        dst.set(b.subarray(0, want), at);
        r._buffers[0] = b.subarray(want);
        at = n;
      }
    }
    this.uses++;
    return dst;
  }
}
