/** Messages -> msgpack frames, with exactly the protocol's fields. */
import { HOST_LITTLE_ENDIAN, plainPackr } from '../msgpack.js';
import { DptrainError, ErrorCodes } from '../errors.js';
import type { WireTensor } from './tensor.js';
import type { Message } from './messages.js';

// The decoder refuses extensions, so nothing here may produce one.
const packr = plainPackr({ copyBuffers: false });

// ---------------------------------------------------------------------------
// Encoding

function bytesView(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function int32ToWire(a: Int32Array): Uint8Array {
  if (HOST_LITTLE_ENDIAN) return bytesView(a);
  const out = new Uint8Array(a.length * 4);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < a.length; i++) dv.setInt32(i * 4, a[i], true);
  return out;
}

function tensorToWire(t: WireTensor): Record<string, unknown> {
  return { dtype: t.dtype, length: t.length, data: bytesView(t.data) };
}

// Fields are copied one by one so a message object carrying extra properties
// (or undefined optionals) puts exactly the protocol's fields on the wire.
function toWire(msg: Message): Record<string, unknown> {
  switch (msg.type) {
    case 'hello': {
      const info: Record<string, unknown> = {
        backend: msg.info.backend,
        device: msg.info.device,
        host: msg.info.host,
        pid: msg.info.pid,
      };
      if (msg.info.name !== undefined) info.name = msg.info.name;
      return { type: msg.type, version: msg.version, token: msg.token, info, ...(msg.capacity !== undefined ? { capacity: msg.capacity } : {}) };
    }
    case 'capacity':
      return { type: msg.type, capacity: msg.capacity, ...(msg.round !== undefined ? { round: msg.round } : {}) };
    case 'grads':
      return {
        type: msg.type,
        round: msg.round,
        tokenCount: msg.tokenCount,
        lossSum: msg.lossSum,
        computeMs: msg.computeMs,
        grads: tensorToWire(msg.grads),
        ...(msg.state ? { state: tensorToWire(msg.state) } : {}),
        ...(msg.rows && msg.rows.length > 0 ? { rows: msg.rows.map((r) => ({ block: r.block, ids: bytesView(r.ids), values: tensorToWire(r.values) })) } : {}),
      };
    case 'leave':
      return { type: msg.type, reason: msg.reason };
    case 'welcome':
      return {
        type: msg.type,
        version: msg.version,
        workerId: msg.workerId,
        model: {
          name: msg.model.name,
          hyper: { ...msg.model.hyper },
          vocabSize: msg.model.vocabSize,
          numSteps: msg.model.numSteps,
          paramCount: msg.model.paramCount,
          stateWidth: msg.model.stateWidth,
        },
        tokenWidth: msg.tokenWidth,
        wireDtype: msg.wireDtype,
        heartbeatMs: msg.heartbeatMs,
        ...(msg.sparseRows === true ? { sparseRows: true } : {}),
        tokens: bytesView(msg.tokens),
        ...(msg.streams !== undefined ? { streams: msg.streams } : {}),
      };
    case 'params':
      return { type: msg.type, version: msg.version, params: tensorToWire(msg.params) };
    case 'step':
      return {
        type: msg.type,
        round: msg.round,
        paramsVersion: msg.paramsVersion,
        lo: msg.lo,
        hi: msg.hi,
        starts: int32ToWire(msg.starts),
        fresh: bytesView(msg.fresh),
        ...(msg.state ? { state: tensorToWire(msg.state) } : {}),
        ...(msg.local
          ? { local: { starts: int32ToWire(msg.local.starts), resets: bytesView(msg.local.resets), optimizer: msg.local.optimizer, lr: msg.local.lr, clip: msg.local.clip } }
          : {}),
        ...(msg.deadlineMs !== undefined ? { deadlineMs: msg.deadlineMs } : {}),
      };
    case 'pause':
      return { type: msg.type, reason: msg.reason, workers: msg.workers, minWorkers: msg.minWorkers };
    case 'bye':
      return { type: msg.type, reason: msg.reason, message: msg.message };
    case 'error':
      return { type: msg.type, code: msg.code, message: msg.message };
    default: {
      const t: unknown = (msg as { type?: unknown }).type;
      throw new DptrainError(ErrorCodes.ERR_UNKNOWN_TYPE, `cannot encode message of type ${JSON.stringify(t)}`);
    }
  }
}

/**
 * Encodes without validating: the receiver validates. The result does not
 * alias the message's arrays, so one encoded `params` frame can be sent to
 * every worker while the next round's parameters are computed.
 */
export function encode(msg: Message): Buffer {
  return packr.pack(toWire(msg));
}

/**
 * Encodes the one large message a peer sends every round (a worker's
 * gradient) into a buffer reused once the socket has written the previous
 * frame out, instead of a fresh megabyte-sized one per round.
 *
 * msgpackr writes every Packr's output into one buffer shared by the whole
 * module: it is pointed at ours for this message only, then at a fresh small
 * one, so no other message ever lands in a buffer that will be reused.
 */
/** A Buffer in Node (msgpackr writes strings into one faster, and callers may expect one), a Uint8Array in a browser. */
function bytesOver(b: ArrayBuffer): Uint8Array {
  return typeof Buffer !== 'undefined' ? Buffer.from(b) : new Uint8Array(b);
}

export class ReusedFrames {
  private spare: ArrayBuffer | null = null;
  /** Frames that needed a fresh buffer (for tests). */
  allocated = 0;

  /** `sent` must be called once the frame is no longer needed (written out); until then its buffer is not reused. */
  encode(msg: Message): { bytes: Uint8Array; sent: () => void } {
    const spare = this.spare;
    this.spare = null;
    let bytes: Uint8Array;
    try {
      if (spare) packr.useBuffer(bytesOver(spare));
      bytes = packr.pack(toWire(msg));
    } finally {
      packr.useBuffer(bytesOver(new ArrayBuffer(8192)));
    }
    if (bytes.buffer !== spare) this.allocated++;
    const own = bytes.buffer;
    let done = false;
    return {
      bytes,
      sent: () => {
        if (done) return;
        done = true;
        // msgpackr's own buffers are whole ArrayBuffers; keep only one.
        if (own instanceof ArrayBuffer && bytes.byteOffset === 0) this.spare ??= own;
      },
    };
  }
}

