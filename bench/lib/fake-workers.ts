/**
 * Light stand-ins for workers, for the fan-in benchmark: one process holding
 * many WebSocket connections to a coordinator. Each does the real handshake
 * (hello with the token, then the welcome), and answers every step with a
 * precomputed gradient of the model's real size in the run's wire dtype, plus
 * the carried state of its streams, exactly as a worker's grads message; it
 * computes nothing. Frames are sent unmasked (a zero masking key), as the
 * real worker client sends them.
 *
 *   node --import tsx bench/lib/fake-workers.ts URL COUNT [NAME] [COMPUTE_MS]
 *   (token in DPTRAIN_TOKEN)
 *
 * With COMPUTE_MS, each connection answers a step that long after it arrived
 * (a timer, no CPU), as a worker computing its shard would: the fleet part. A
 * local SGD round (a step with `local`, --sync-every K) is answered after K
 * times that, with K steps' tokens: its change is sent as a gradient is.
 *
 * Prints `ready COUNT` once every connection is welcomed, and a line per
 * problem; exits when the coordinator closes the connections.
 */
import os from 'node:os';
import WebSocket from 'ws';
import { decodeCoordinatorMessage, encode, PROTOCOL_VERSION } from '../../src/shared/wire/protocol.js';
import { encodeTensor, type WireDtype, type WireTensor } from '../../src/shared/wire/tensor.js';
import { Rng } from '../../src/shared/data/rng.js';
import { FrameScratch } from '../../src/shared/frame-scratch.js';

const [url, countArg, name = 'fake', computeArg = '0'] = process.argv.slice(2);
const count = Number(countArg);
const computeMs = Number(computeArg);
const token = process.env.DPTRAIN_TOKEN ?? '';
if (!url || !(count > 0)) {
  console.error('usage: fake-workers.ts URL COUNT [NAME] (token in DPTRAIN_TOKEN)');
  process.exit(2);
}

/** The gradient, encoded once per dtype; a state tensor per row count. */
const gradients = new Map<string, WireTensor>();
const states = new Map<number, WireTensor>();
function gradientFor(paramCount: number, dtype: WireDtype): WireTensor {
  const key = `${paramCount}/${dtype}`;
  let g = gradients.get(key);
  if (!g) {
    const rng = new Rng(11);
    const values = Float32Array.from({ length: paramCount }, () => 1e-3 * rng.normal());
    g = encodeTensor(values, dtype);
    if (dtype === 'float32') g = { ...g, data: g.data.slice() };
    gradients.set(key, g);
  }
  return g;
}
function stateFor(rows: number, stateWidth: number): WireTensor {
  let s = states.get(rows);
  if (!s) {
    s = encodeTensor(new Float32Array(rows * stateWidth), 'float32');
    states.set(rows, s);
  }
  return s;
}

/** Frames above this size are parameters (a step message is a few hundred bytes). */
const PARAMS_FRAME_MIN = 64 * 1024;

/**
 * Every connection answers the same round with the same bytes when it holds as
 * many streams: encode each reply once per round and row count. The frames are
 * only read by the sockets, never written, so sharing them is safe.
 */
const replies = new Map<string, Buffer>();
let repliesRound = -1;
function replyFor(round: number, rows: number, model: { paramCount: number; stateWidth: number; numSteps: number }, dtype: WireDtype, steps = 1): Buffer {
  if (round !== repliesRound) {
    replies.clear();
    repliesRound = round;
  }
  const key = `${rows}/${steps}`;
  let frame = replies.get(key);
  if (!frame) {
    const tokenCount = rows * model.numSteps * steps;
    frame = encode({ type: 'grads', round, tokenCount, lossSum: tokenCount * Math.log(28), computeMs: computeMs * steps, grads: gradientFor(model.paramCount, dtype), state: stateFor(rows, model.stateWidth) });
    replies.set(key, frame);
  }
  return frame;
}

const zeroMask = (mask: Buffer) => mask.fill(0);
/** As a worker does (src/worker/node-socket.ts): the parameter frames arrive into one reused buffer, shared here by all the connections. */
const scratch = new FrameScratch();
let welcomed = 0;
let closed = 0;

for (let k = 0; k < count; k++) {
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 1 << 30, generateMask: zeroMask });
  ws.binaryType = 'nodebuffer';
  let model: { paramCount: number; stateWidth: number; numSteps: number } | null = null;
  let dtype: WireDtype = 'float32';
  ws.on('open', () => {
    scratch.attach(ws);
    ws.send(encode({ type: 'hello', version: PROTOCOL_VERSION, token, info: { backend: 'none', device: 'none', host: os.hostname(), pid: process.pid, name: `${name}-${k}` } }));
  });
  ws.on('message', (data: Buffer) => {
    // The parameters (the only large frames) are not needed: skip decoding them.
    if (model && data.length > PARAMS_FRAME_MIN) return;
    const v = decodeCoordinatorMessage(data);
    if (!v.ok) {
      console.log(`connection ${k}: bad message ${v.code}: ${v.message}`);
      return;
    }
    const msg = v.msg;
    if (msg.type === 'welcome') {
      model = msg.model;
      dtype = msg.wireDtype;
      gradientFor(model.paramCount, dtype);
      if (++welcomed === count) console.log(`ready ${count}`);
    } else if (msg.type === 'step' && model) {
      const rows = msg.hi - msg.lo;
      const m = model;
      // A local SGD round (--sync-every K): K inner steps' tokens, after K times the compute.
      const steps = msg.local ? msg.local.resets.length + 1 : 1;
      if (computeMs > 0) setTimeout(() => ws.send(replyFor(msg.round, rows, m, dtype, steps)), computeMs * steps);
      else ws.send(replyFor(msg.round, rows, model, dtype, steps));
    } else if (msg.type === 'error') {
      console.log(`connection ${k}: coordinator error ${msg.code}: ${msg.message}`);
    }
  });
  ws.on('error', (e) => console.log(`connection ${k}: ${e.message}`));
  ws.on('close', () => {
    if (++closed === count) process.exit(0);
  });
}
