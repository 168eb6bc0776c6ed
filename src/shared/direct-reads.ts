/**
 * A connection's socket reads into memory chosen here, so that receiving a
 * megabyte frame allocates nothing, and its payload is read by the kernel
 * straight into the buffer its handler gets.
 *
 * Why: Node reads a TCP socket into a fresh ArrayBuffer per read (64 kB at
 * most), so a 1.2 MB gradient is some twenty new external allocations, which
 * drive V8's scavenges and full collections ("external memory pressure"):
 * with 32 workers, 38 MB a round on the coordinator, and garbage collection
 * took 10 to 30% of its CPU in the `fanin` part. Node's `onread` option lets
 * a socket read into a buffer the program supplies, choosing the next one
 * after each read; ws, though, reads through the socket's stream.
 *
 * So each read lands in a small per-connection buffer, where the WebSocket
 * frame headers are followed. A large, whole, binary frame (the gradients and
 * the parameters) that ws would hand over as one message is taken here: its
 * payload goes into the connection's own frame buffer, the rest of it read
 * by the kernel straight there, and when it is complete it is unmasked and
 * emitted as ws's `message` event, as ws would have. Every other byte (small
 * frames, control frames, fragments, anything ws must refuse) is copied and
 * written to ws's receiver in order, as ws's own 'data' listener does, so ws
 * keeps its checks, its errors and its close handshake.
 *
 * The same contract as frame-scratch.ts: a taken frame's buffer is reused by
 * the connection's next large frame, so handlers copy what they keep before
 * they return. The coordinator offers slots of its gradient accumulator's
 * WebAssembly memory (FrameSlots), where a float32 gradient is then summed
 * without a copy; a frame that finds none free is read into the connection's
 * own buffer. Where the socket, Node or ws do not look as expected (TLS, a
 * socket with data already buffered, another ws or Node version), attach()
 * returns false and nothing is changed.
 */
import net, { type Socket } from 'node:net';
import type { WebSocket } from 'ws';

/** Frames below this go to ws (a copy of a small read is cheap). */
export const MIN_DIRECT_FRAME = 64 * 1024;
const SMALL = 64 * 1024;

/** The fields of ws's Receiver (ws 8) this relies on. */
interface Receiver {
  write(chunk: Buffer): boolean;
  writableLength: number;
  _isServer: boolean;
  _maxPayload: number;
  _bufferedBytes: number;
  _state: number;
  _opcode: number;
  _errored: boolean;
}

function looksLikeWs8(r: unknown): r is Receiver {
  const x = r as Partial<Receiver> | null;
  return !!x && typeof x.write === 'function' && typeof x._isServer === 'boolean' && typeof x._maxPayload === 'number' && typeof x._bufferedBytes === 'number' && typeof x._state === 'number' && typeof x._errored === 'boolean';
}

/** Node's private symbols behind net.Socket's `onread` option, found once on a probe socket; null where they differ. */
let onreadSymbols: { buffer: symbol; callback: symbol; next: symbol } | null | undefined;

function symbols(): typeof onreadSymbols {
  if (onreadSymbols !== undefined) return onreadSymbols;
  try {
    const probe = new net.Socket({ onread: { buffer: () => Buffer.alloc(1), callback: () => true } } as unknown as net.SocketConstructorOpts);
    const named = (d: string) => Object.getOwnPropertySymbols(probe).find((x) => x.description === d);
    const [buffer, callback, next] = [named('kBuffer'), named('kBufferCb'), named('kBufferGen')];
    probe.destroy();
    onreadSymbols = buffer && callback && next ? { buffer, callback, next } : null;
  } catch {
    onreadSymbols = null;
  }
  return onreadSymbols;
}

/** Memory a frame may be read into instead of the connection's own buffer (GradAccumulator's slots), held until released. */
export interface FrameSlots {
  acquire(n: number): Uint8Array | null;
  release(slot: Uint8Array): void;
}

const HEADER = 0;
const PASS = 1;
const TAKE = 2;

/** One connection's reads: the frame headers followed across reads, and where each byte goes. */
class DirectReads {
  private readonly small = Buffer.allocUnsafe(SMALL);
  private readonly header = Buffer.alloc(14);
  private headerLength = 0;
  private mode = HEADER;
  /** Payload bytes of the current frame not yet read. */
  private remaining = 0;
  /** ws is inside a fragmented message (its frames all go to ws). */
  private fragmented = false;
  private frame: Buffer = Buffer.alloc(0);
  /** The connection's own frame buffer (grown to the largest frame), used when no slot is free. */
  private own: Buffer = Buffer.alloc(0);
  /** The slot the frame being taken is read into, if any. */
  private slot: Uint8Array | null = null;
  private frameLength = 0;
  private at = 0;
  private readonly mask = Buffer.alloc(4);
  private masked = false;
  /** Bytes for ws, copied out of this read, in order. */
  private pending: Buffer[] = [];
  constructor(
    private readonly ws: WebSocket,
    private readonly socket: Socket,
    private readonly receiver: Receiver,
    private readonly onTaken: () => void,
    private readonly slots: FrameSlots | null,
  ) {
    // A frame cut off by the connection's end gives its slot back.
    socket.once('close', () => this.releaseSlot());
  }

  private releaseSlot(): void {
    if (this.slot) this.slots!.release(this.slot);
    this.slot = null;
  }

  /** Node's read callback: `buf` is the buffer the kernel just filled (nread bytes). */
  onRead(nread: number, buf: Buffer): boolean {
    if (buf === this.small) this.scan(this.small, nread);
    else {
      // The rest of a taken frame, read where it belongs.
      this.at += nread;
      this.remaining -= nread;
      if (this.remaining === 0) this.complete();
    }
    this.flush();
    return true;
  }

  /** Where the next read goes: the rest of the frame being taken, else the small buffer. */
  nextBuffer(): Buffer {
    return this.mode === TAKE && this.remaining > 0 ? this.frame.subarray(this.at, this.at + this.remaining) : this.small;
  }

  private scan(buf: Buffer, end: number): void {
    let off = 0;
    while (off < end) {
      if (this.mode === HEADER) {
        const need = this.headerLength < 2 ? 2 : headerSize(this.header);
        const n = Math.min(need - this.headerLength, end - off);
        buf.copy(this.header, this.headerLength, off, off + n);
        this.headerLength += n;
        off += n;
        if (this.headerLength >= 2 && this.headerLength === headerSize(this.header)) this.onHeader();
        continue;
      }
      const n = Math.min(this.remaining, end - off);
      if (this.mode === PASS) this.pending.push(Buffer.from(buf.subarray(off, off + n)));
      else buf.copy(this.frame, this.at, off, off + n);
      off += n;
      this.remaining -= n;
      if (this.mode === TAKE) this.at += n;
      if (this.remaining === 0) {
        if (this.mode === TAKE) this.complete();
        else this.mode = HEADER;
      }
    }
  }

  private onHeader(): void {
    const h = this.header;
    const size = headerSize(h);
    const fin = (h[0] & 0x80) !== 0;
    const rsv = h[0] & 0x70;
    const opcode = h[0] & 0x0f;
    const masked = (h[1] & 0x80) !== 0;
    const len7 = h[1] & 0x7f;
    // A length past 2^32 (impossible under any maxPayload here) is left to ws, which refuses it.
    const length = len7 < 126 ? len7 : len7 === 126 ? h.readUInt16BE(2) : h.readUInt32BE(2) === 0 ? h.readUInt32BE(6) : -1;
    const r = this.receiver;
    this.headerLength = 0;
    let take = fin && rsv === 0 && opcode === 2 && !this.fragmented && length >= MIN_DIRECT_FRAME && (r._maxPayload === 0 || length <= r._maxPayload) && masked === r._isServer;
    if (take) {
      // The messages before it first: then ws holds nothing half-read, and this frame's message comes after theirs.
      this.flush();
      take = this.ws.readyState === 1 && this.socket.listenerCount('data') > 0 && !r._errored && r._opcode !== 0x08 && r._bufferedBytes === 0 && r.writableLength === 0 && r._state === 0;
    }
    if (!take) {
      if ((opcode === 1 || opcode === 2) && !fin) this.fragmented = true;
      else if (opcode === 0 && fin) this.fragmented = false;
      this.pending.push(Buffer.from(h.subarray(0, size)));
      // A length this parser does not follow (past 2^32): everything from here on is ws's.
      this.mode = length !== 0 ? PASS : HEADER;
      this.remaining = length < 0 ? Number.POSITIVE_INFINITY : length;
      return;
    }
    this.slot = this.slots?.acquire(length) ?? null;
    if (this.slot) this.frame = Buffer.from(this.slot.buffer, this.slot.byteOffset, length);
    else {
      if (this.own.length < length) this.own = Buffer.allocUnsafe(length);
      this.frame = this.own;
    }
    this.frameLength = length;
    this.at = 0;
    this.remaining = length;
    this.masked = masked;
    if (masked) h.copy(this.mask, 0, size - 4, size);
    this.mode = TAKE;
  }

  private complete(): void {
    this.mode = HEADER;
    const data = this.frame.subarray(0, this.frameLength);
    if (this.masked && (this.mask[0] | this.mask[1] | this.mask[2] | this.mask[3]) !== 0) unmask(data, this.mask);
    // As ws's receiver would: the message event, synchronously, from the frame's bytes; none once ws is closing.
    // The handlers are done with the bytes when it returns: a slot is free again.
    try {
      if (this.ws.readyState !== 1 || this.socket.listenerCount('data') === 0) return;
      this.onTaken();
      this.ws.emit('message', data, true);
    } finally {
      this.releaseSlot();
    }
  }

  /** Hands the bytes for ws to its receiver, as ws's own 'data' listener does. */
  private flush(): void {
    if (this.pending.length === 0) return;
    const chunk = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending);
    this.pending = [];
    // Only while ws still listens: after an error or a close it stops reading the socket (and stops pausing it).
    if (this.socket.listenerCount('data') === 0) return;
    if (!this.receiver.write(chunk)) this.socket.pause();
  }
}

/** Bytes of a frame header whose first two bytes are in `h`. */
function headerSize(h: Buffer): number {
  const len7 = h[1] & 0x7f;
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + ((h[1] & 0x80) !== 0 ? 4 : 0);
}

/** XOR with the 4-byte mask (a browser's frames): four bytes at a time where the frame is 4-byte aligned. */
function unmask(data: Buffer, mask: Buffer): void {
  let i = 0;
  if ((data.byteOffset & 3) === 0) {
    const words = new Uint32Array(data.buffer, data.byteOffset, data.length >>> 2);
    // The mask's bytes read as one word in the host's byte order, as the frame's words are.
    const m = new Uint32Array(Uint8Array.from(mask.subarray(0, 4)).buffer)[0];
    for (let k = 0; k < words.length; k++) words[k] ^= m;
    i = words.length * 4;
  }
  for (; i < data.length; i++) data[i] ^= mask[i & 3];
}

/**
 * Takes over `ws`'s socket reads as described above. False (and nothing changed) where it cannot:
 * a TLS socket, bytes already buffered on either side, or Node and ws internals not as expected.
 */
export function attachDirectReads(ws: WebSocket, onTaken: () => void = () => undefined, slots: FrameSlots | null = null): boolean {
  const syms = symbols();
  const socket = (ws as unknown as { _socket?: Socket & { encrypted?: boolean; _handle?: { useUserBuffer?: (b: Buffer) => void } } })._socket;
  const receiver = (ws as unknown as { _receiver?: unknown })._receiver;
  if (!syms || !socket || socket.encrypted || typeof socket._handle?.useUserBuffer !== 'function' || !looksLikeWs8(receiver)) return false;
  if (socket.readableLength !== 0 || receiver._bufferedBytes !== 0 || receiver.writableLength !== 0 || receiver._state !== 0 || ws.readyState !== 1) return false;
  const reads = new DirectReads(ws, socket, receiver, onTaken, slots);
  const s = socket as unknown as Record<symbol, unknown>;
  s[syms.buffer] = reads.nextBuffer();
  s[syms.callback] = (nread: number, buf: Buffer) => reads.onRead(nread, buf);
  s[syms.next] = () => reads.nextBuffer();
  socket._handle.useUserBuffer(reads.nextBuffer());
  return true;
}
