import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Packr } from 'msgpackr';
import { CloseCodes, closeCodeFor, ErrorCodes, errorSpec, exitCodeFor, finalRefusalFor, isDptrainError, type ErrorCode } from '../src/shared/errors.js';
import { Rng } from '../src/shared/data/rng.js';
import {
  LIMITS,
  PROTOCOL_VERSION,
  decode,
  decodeCoordinatorMessage,
  decodeWorkerMessage,
  encode,
  maxPayloadFor,
  tokensFromWire,
  tokensToWire,
  validateCoordinatorMessage,
  validateWorkerMessage,
  type CoordinatorMessage,
  type GradsMsg,
  type HelloMsg,
  type Message,
  type StepMsg,
  type Validation,
  type WelcomeMsg,
  type WorkerMessage,
} from '../src/shared/wire/protocol.js';
import { decodeTensor, encodeTensor, type WireDtype } from '../src/shared/wire/tensor.js';

const PARAMS = 16;
const WORKER_LIMITS = { paramCount: PARAMS, maxTokenCount: 1000 };
const VALUES = Float32Array.from({ length: PARAMS }, (_, i) => (i - 8) / 3);

// A second, independent msgpack writer for crafting frames the real encoder would never produce.
const raw = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false, encodeUndefinedAsNil: true });

const WORKER_TYPES = new Set(['hello', 'grads', 'leave']);
const isWorkerType = (t: string): boolean => WORKER_TYPES.has(t);

function hello(): HelloMsg {
  return {
    type: 'hello',
    version: PROTOCOL_VERSION,
    token: 's3cret',
    info: { backend: 'tensorflow', device: 'cpu', host: 'node-a', pid: 4242, name: 'w1' },
  };
}

function grads(dtype: WireDtype = 'float32', values: Float32Array = VALUES): GradsMsg {
  return { type: 'grads', round: 3, tokenCount: 640, lossSum: 1234.5, grads: encodeTensor(values, dtype), computeMs: 12.25 };
}

function welcome(vocabSize = 3): WelcomeMsg {
  const ids = Int32Array.from({ length: 50 }, (_, i) => (i * 7) % vocabSize);
  return {
    type: 'welcome',
    version: PROTOCOL_VERSION,
    workerId: 'w-1',
    model: { name: 'char-lstm', hyper: { hidden: 4 }, vocabSize, numSteps: 5, paramCount: PARAMS, stateWidth: 8 },
    ...tokensToWire(ids, vocabSize),
    wireDtype: 'float16',
    heartbeatMs: 5000,
  };
}

function step(): StepMsg {
  return {
    type: 'step',
    round: 3,
    paramsVersion: 7,
    lo: 4,
    hi: 8,
    starts: Int32Array.of(0, 100, 70000, 2 ** 31 - 1),
    fresh: Uint8Array.of(1, 0, 0, 1),
  };
}

function samples(): Message[] {
  const bare: HelloMsg = hello();
  delete bare.info.name;
  return [
    hello(),
    bare,
    grads('float32'),
    grads('float16'),
    grads('bfloat16'),
    { type: 'leave', reason: 'SIGTERM' },
    welcome(3),
    welcome(300),
    { type: 'params', version: 7, params: encodeTensor(VALUES, 'bfloat16') },
    { type: 'params', version: 0, params: encodeTensor(VALUES, 'float32') },
    step(),
    { type: 'pause', reason: 'too few workers', workers: 1, minWorkers: 2 },
    { type: 'bye', reason: 'done', message: 'training finished' },
    { type: 'error', code: ErrorCodes.ERR_BAD_TOKEN, message: 'wrong token' },
  ];
}

function decodeAs(bytes: Uint8Array, type: string): Validation<Message> {
  return isWorkerType(type) ? decodeWorkerMessage(bytes, WORKER_LIMITS) : decodeCoordinatorMessage(bytes);
}

function validateAs(x: unknown, type: string): Validation<Message> {
  return isWorkerType(type) ? validateWorkerMessage(x, WORKER_LIMITS) : validateCoordinatorMessage(x);
}

function assertRejected(v: Validation<unknown>, code: ErrorCode, what = ''): void {
  if (v.ok) assert.fail(`${what}: expected ${code}, but it was accepted`);
  assert.equal(v.code, code, `${what}: ${v.message}`);
  assert.equal(typeof v.message, 'string');
}

/**
 * Applies `mutate` to a freshly decoded copy of `msg` and checks both paths:
 * validating the object and decoding a frame written by another encoder.
 */
function expectMutation(msg: Message, mutate: (o: Record<string, any>) => void, code: ErrorCode, what: string): void {
  const o = decode(encode(msg)) as Record<string, any>;
  mutate(o);
  assertRejected(validateAs(o, msg.type), code, `${what} (validate)`);
  assertRejected(decodeAs(raw.pack(o), msg.type), code, `${what} (decode)`);
}

function expectAccepted(msg: Message, mutate: (o: Record<string, any>) => void, what: string): Message {
  const o = decode(encode(msg)) as Record<string, any>;
  mutate(o);
  const v = decodeAs(raw.pack(o), msg.type);
  if (!v.ok) assert.fail(`${what}: rejected with ${v.code}: ${v.message}`);
  return v.msg;
}

describe('round trips', () => {
  it('every message type comes back equal', () => {
    for (const msg of samples()) {
      const bytes = encode(msg);
      assert.ok(Buffer.isBuffer(bytes));
      const v = decodeAs(bytes, msg.type);
      if (!v.ok) assert.fail(`${msg.type}: ${v.code} ${v.message}`);
      assert.deepStrictEqual(v.msg, msg);
    }
  });

  it('typed arrays come back as plain, aligned arrays that do not alias the frame', () => {
    const bytes = encode(step());
    const v = decodeCoordinatorMessage(bytes);
    assert.ok(v.ok && v.msg.type === 'step');
    const s = v.msg as StepMsg;
    assert.equal(s.starts.constructor, Int32Array);
    assert.equal(s.starts.byteOffset % 4, 0);
    assert.equal(s.fresh.constructor, Uint8Array);
    assert.notEqual(s.starts.buffer, bytes.buffer);
    assert.notEqual(s.fresh.buffer, bytes.buffer);
  });

  it('gradients decode to the original values wherever the bytes land in the frame', () => {
    const offsets = new Set<number>();
    for (let pad = 0; pad < 4; pad++) {
      for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
        const msg = grads(dtype);
        // An ignored extra field of varying length shifts the tensor bytes to every alignment.
        const bytes = raw.pack({ ...(decode(encode(msg)) as object), zpad: 'x'.repeat(pad) });
        const v = decodeWorkerMessage(bytes, WORKER_LIMITS);
        assert.ok(v.ok && v.msg.type === 'grads', v.ok ? '' : v.message);
        const g = (v.msg as GradsMsg).grads;
        offsets.add(g.data.byteOffset % 4);
        assert.deepEqual(decodeTensor(g), decodeTensor(msg.grads));
      }
    }
    assert.ok(offsets.size > 1, 'expected some unaligned tensors');
  });

  it('extra fields are ignored and dropped; nil optionals count as absent', () => {
    const h = expectAccepted(
      hello(),
      (o) => {
        o.future = { nested: [1, 2, 3] };
        o.resumeId = 'a field of protocol version 1';
        o.info.name = null;
        o.info.gpu = 'none';
      },
      'extras',
    ) as HelloMsg;
    assert.equal('future' in h, false);
    assert.equal('resumeId' in h, false);
    assert.equal('name' in h.info, false);
    assert.equal('gpu' in h.info, false);
  });

  it('encode writes only protocol fields and no nil for unset optionals', () => {
    const bare = hello();
    bare.info.name = undefined;
    (bare as unknown as Record<string, unknown>).secret = 'not for the wire';
    const o = decode(encode(bare)) as Record<string, unknown>;
    assert.equal('name' in (o.info as Record<string, unknown>), false);
    assert.equal('secret' in o, false);
  });

  it('an encoded frame is independent of the source arrays and of later encodes', () => {
    const values = VALUES.slice();
    const msg = { type: 'params' as const, version: 1, params: encodeTensor(values, 'float32') };
    const frame = encode(msg);
    const copy = Buffer.from(frame);
    values.fill(99);
    encode({ type: 'params', version: 2, params: encodeTensor(values, 'float32') });
    encode(grads());
    assert.ok(frame.equals(copy));
  });

  it('writes plain msgpack: a map with a string type, tensors as bin', () => {
    const bytes = encode(grads('float16'));
    assert.ok((bytes[0] >= 0x80 && bytes[0] <= 0x8f) || bytes[0] === 0xde || bytes[0] === 0xdf, 'a msgpack map');
    const o = new Packr({ useRecords: false, mapsAsObjects: true }).unpack(bytes) as Record<string, any>;
    assert.equal(o.type, 'grads');
    assert.ok(o.grads.data instanceof Uint8Array);
    assert.equal(o.grads.data.byteLength, PARAMS * 2);
  });
});

describe('malformed frames', () => {
  const malformed = (bytes: Uint8Array, what: string): void => {
    assertRejected(decodeWorkerMessage(bytes, WORKER_LIMITS), 'ERR_MALFORMED', `${what} (worker)`);
    assertRejected(decodeCoordinatorMessage(bytes), 'ERR_MALFORMED', `${what} (coordinator)`);
    assert.throws(() => decode(bytes), (e) => isDptrainError(e, 'ERR_MALFORMED'), what);
  };

  it('rejects random bytes, text and an empty frame', () => {
    malformed(new Uint8Array(0), 'empty');
    malformed(Buffer.from('{"type":"hello"}'), 'json');
    const rng = new Rng(1);
    for (let k = 0; k < 50; k++) {
      const bytes = new Uint8Array(1 + rng.int(0, 200));
      for (let i = 0; i < bytes.length; i++) bytes[i] = rng.int(0, 255);
      const v = decodeWorkerMessage(bytes, WORKER_LIMITS);
      assert.equal(v.ok, false);
    }
  });

  it('rejects every truncation of a message', () => {
    for (const msg of [hello(), grads('float16'), step()]) {
      const bytes = encode(msg);
      for (let n = 0; n < bytes.length; n++) malformed(bytes.subarray(0, n), `${msg.type} cut at ${n}`);
    }
  });

  it('rejects trailing bytes', () => {
    malformed(Buffer.concat([encode(hello()), Buffer.of(0xc0)]), 'trailing nil');
    malformed(Buffer.concat([encode(hello()), encode(hello())]), 'two messages');
  });

  it('rejects valid msgpack that is not a map', () => {
    for (const value of [42, 'hello', null, true, 1.5, [1, 2], [], Buffer.from('xx')]) {
      malformed(raw.pack(value), `top level ${JSON.stringify(value)}`);
    }
  });

  it('rejects extensions, msgpackr records and non-string keys', () => {
    malformed(raw.pack({ type: 'leave', reason: 'x', at: new Date(0) }), 'timestamp ext');
    malformed(new Packr({ useRecords: true }).pack({ type: 'leave', reason: 'x' }), 'records');
    malformed(new Packr({ moreTypes: true }).pack({ type: 'leave', reason: 'x', f: new Float32Array(2) }), 'typed array ext');
    malformed(Uint8Array.of(0x81, 0x01, 0xa1, 0x78), 'integer key');
    malformed(Uint8Array.of(0x81, 0x80, 0xa1, 0x78), 'map key');
    malformed(Uint8Array.of(0x81, 0xa1, 0x78, 0xc1), 'reserved 0xc1');
  });

  it('rejects headers claiming more than the frame holds, without allocating for them', () => {
    malformed(Uint8Array.of(0xdf, 0xff, 0xff, 0xff, 0xff), 'map32 of 4G entries');
    malformed(Uint8Array.of(0x81, 0xa1, 0x78, 0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0), 'array32 of 4G entries');
    malformed(Uint8Array.of(0x81, 0xa1, 0x78, 0xc6, 0x7f, 0xff, 0xff, 0xff, 0x00), 'bin32 of 2 GiB');
    malformed(Uint8Array.of(0x81, 0xa1, 0x78, 0xdb, 0xff, 0xff, 0xff, 0xff, 0x61), 'str32 of 4 GiB');
  });

  it('rejects deep nesting and frames with too many values', () => {
    let nested: unknown = 1;
    for (let d = 0; d <= LIMITS.MAX_DEPTH; d++) nested = { a: nested };
    malformed(raw.pack(nested), 'deeply nested maps');
    let ok: unknown = 1;
    for (let d = 0; d < LIMITS.MAX_DEPTH; d++) ok = { a: ok };
    assert.doesNotThrow(() => decode(raw.pack(ok)));
    malformed(raw.pack({ type: 'leave', reason: 'x', junk: new Array(LIMITS.MAX_VALUES).fill(0) }), 'too many values');
  });

  it('decode accepts plain Uint8Array as well as Buffer', () => {
    const bytes = new Uint8Array(encode(hello()));
    const v = decodeWorkerMessage(bytes, WORKER_LIMITS);
    assert.ok(v.ok);
  });
});

describe('message validation', () => {
  it('rejects unknown and misdirected types', () => {
    assertRejected(validateWorkerMessage({ type: 'bogus' }, WORKER_LIMITS), 'ERR_UNKNOWN_TYPE', 'bogus');
    assertRejected(validateCoordinatorMessage({ type: 'bogus' }), 'ERR_UNKNOWN_TYPE', 'bogus');
    assertRejected(decodeWorkerMessage(encode(step()), WORKER_LIMITS), 'ERR_UNKNOWN_TYPE', 'step to coordinator');
    assertRejected(decodeCoordinatorMessage(encode(hello())), 'ERR_UNKNOWN_TYPE', 'hello to worker');
    assertRejected(validateWorkerMessage({ type: 'toString' }, WORKER_LIMITS), 'ERR_UNKNOWN_TYPE', 'prototype name');
    assertRejected(validateWorkerMessage({}, WORKER_LIMITS), 'ERR_BAD_MESSAGE', 'no type');
    assertRejected(validateWorkerMessage({ type: 3 }, WORKER_LIMITS), 'ERR_BAD_MESSAGE', 'numeric type');
  });

  it('never throws on arbitrary values', () => {
    const hostile = Object.defineProperty({ type: 'leave' }, 'reason', {
      get() {
        throw new Error('boom');
      },
      enumerable: true,
    });
    const inputs: unknown[] = [undefined, null, 0, 'hello', [], [1], new Uint8Array(3), Object.create(null), hostile];
    for (const x of inputs) {
      assert.equal(validateWorkerMessage(x, WORKER_LIMITS).ok, false);
      assert.equal(validateCoordinatorMessage(x).ok, false);
    }
  });

  it('rejects each missing required field', () => {
    const optional = new Set<string>();
    for (const msg of samples()) {
      for (const key of Object.keys(msg)) {
        if (key === 'type' || optional.has(key)) continue;
        const code = key === 'version' && (msg.type === 'hello' || msg.type === 'welcome') ? 'ERR_VERSION_MISMATCH' : 'ERR_BAD_MESSAGE';
        expectMutation(msg, (o) => delete o[key], code, `${msg.type} without ${key}`);
      }
    }
    for (const key of ['backend', 'device', 'host', 'pid']) {
      expectMutation(hello(), (o) => delete o.info[key], 'ERR_BAD_MESSAGE', `hello.info without ${key}`);
    }
    for (const key of ['name', 'hyper', 'vocabSize', 'numSteps', 'paramCount', 'stateWidth']) {
      expectMutation(welcome(), (o) => delete o.model[key], 'ERR_BAD_MESSAGE', `welcome.model without ${key}`);
    }
  });

  it('rejects each field of the wrong type', () => {
    for (const msg of samples()) {
      for (const [key, value] of Object.entries(msg)) {
        if (key === 'type') continue;
        const wrong = typeof value === 'string' ? 12345 : 'x';
        let code: ErrorCode = 'ERR_BAD_MESSAGE';
        if (key === 'version' && (msg.type === 'hello' || msg.type === 'welcome')) code = 'ERR_VERSION_MISMATCH';
        if (key === 'grads' || key === 'params') code = 'ERR_BAD_TENSOR';
        expectMutation(msg, (o) => (o[key] = wrong), code, `${msg.type}.${key} = ${JSON.stringify(wrong)}`);
      }
    }
    expectMutation(hello(), (o) => (o.info.pid = '1'), 'ERR_BAD_MESSAGE', 'pid as string');
    expectMutation(hello(), (o) => (o.info.name = 5), 'ERR_BAD_MESSAGE', 'name as number');
    expectMutation(hello(), (o) => (o.info = [1]), 'ERR_BAD_MESSAGE', 'info as array');
    expectMutation(welcome(), (o) => (o.model.hyper.hidden = '4'), 'ERR_BAD_MESSAGE', 'hyperparameter as string');
    expectMutation(welcome(), (o) => (o.model.hyper = [4]), 'ERR_BAD_MESSAGE', 'hyper as array');
    expectMutation(step(), (o) => (o.starts = [0, 1, 2, 3]), 'ERR_BAD_MESSAGE', 'starts as array');
    expectMutation(grads(), (o) => (o.lossSum = true), 'ERR_BAD_MESSAGE', 'lossSum as boolean');
  });

  it('rejects another protocol version', () => {
    for (const version of [0, PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 0.5, -1]) {
      expectMutation(hello(), (o) => (o.version = version), 'ERR_VERSION_MISMATCH', `hello v${version}`);
      expectMutation(welcome(), (o) => (o.version = version), 'ERR_VERSION_MISMATCH', `welcome v${version}`);
    }
    // The version is judged before anything else a newer peer might have reshaped.
    expectMutation(hello(), (o) => {
      o.version = PROTOCOL_VERSION + 1;
      delete o.token;
      o.info = 'next version info';
    }, 'ERR_VERSION_MISMATCH', 'next version hello');
  });

  it('checks the gradient tensor', () => {
    expectMutation(grads(), (o) => (o.grads.length = PARAMS - 1), 'ERR_BAD_TENSOR', 'length below paramCount');
    const longer = grads('float32', new Float32Array(PARAMS + 1));
    assertRejected(decodeWorkerMessage(encode(longer), WORKER_LIMITS), 'ERR_BAD_TENSOR', 'longer gradient');
    expectMutation(grads(), (o) => (o.grads.dtype = 'float64'), 'ERR_BAD_TENSOR', 'dtype float64');
    expectMutation(grads(), (o) => (o.grads.dtype = 32), 'ERR_BAD_TENSOR', 'numeric dtype');
    expectMutation(grads(), (o) => (o.grads.data = o.grads.data.subarray(1)), 'ERR_BAD_TENSOR', 'one byte short');
    expectMutation(grads('float16'), (o) => (o.grads.dtype = 'float32'), 'ERR_BAD_TENSOR', 'bytes for another dtype');
    expectMutation(grads(), (o) => (o.grads.data = 'abcd'), 'ERR_BAD_TENSOR', 'data as string');
    expectMutation(grads(), (o) => (o.grads.length = 1.5), 'ERR_BAD_TENSOR', 'fractional length');
    expectMutation(grads(), (o) => delete o.grads.data, 'ERR_BAD_TENSOR', 'no data');
  });

  it('rejects NaN and Infinity in gradients of every dtype', () => {
    for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
      for (const bad of [NaN, Infinity, -Infinity]) {
        const values = VALUES.slice();
        values[PARAMS - 1] = bad;
        assertRejected(decodeWorkerMessage(encode(grads(dtype, values)), WORKER_LIMITS), 'ERR_NON_FINITE', `${dtype} ${bad}`);
      }
    }
    const tooBigForHalf = VALUES.slice();
    tooBigForHalf[0] = 1e6;
    assertRejected(decodeWorkerMessage(encode(grads('float16', tooBigForHalf)), WORKER_LIMITS), 'ERR_NON_FINITE', 'f16 overflow');
    expectMutation(grads(), (o) => (o.lossSum = NaN), 'ERR_NON_FINITE', 'lossSum NaN');
    expectMutation(grads(), (o) => (o.lossSum = -Infinity), 'ERR_NON_FINITE', 'lossSum -Inf');
    expectMutation(grads(), (o) => (o.computeMs = Infinity), 'ERR_BAD_MESSAGE', 'computeMs Inf');
    expectMutation(grads(), (o) => (o.computeMs = -1), 'ERR_BAD_MESSAGE', 'negative computeMs');
  });

  it('checks integers and ranges in grads', () => {
    expectMutation(grads(), (o) => (o.round = -1), 'ERR_BAD_MESSAGE', 'negative round');
    expectMutation(grads(), (o) => (o.round = 1.5), 'ERR_BAD_MESSAGE', 'fractional round');
    expectMutation(grads(), (o) => (o.round = 2 ** 60), 'ERR_BAD_MESSAGE', 'unsafe round');
    expectMutation(grads(), (o) => (o.tokenCount = 0), 'ERR_BAD_MESSAGE', 'tokenCount 0');
    expectMutation(grads(), (o) => (o.tokenCount = WORKER_LIMITS.maxTokenCount + 1), 'ERR_BAD_MESSAGE', 'tokenCount over max');
    expectAccepted(grads(), (o) => (o.tokenCount = WORKER_LIMITS.maxTokenCount), 'tokenCount at max');
    expectAccepted(grads(), (o) => (o.round = 0), 'round 0');
  });

  it('checks the step range and its arrays', () => {
    expectMutation(step(), (o) => (o.hi = o.lo), 'ERR_BAD_MESSAGE', 'lo == hi');
    expectMutation(step(), (o) => ((o.lo = 9), (o.hi = 5)), 'ERR_BAD_MESSAGE', 'lo > hi');
    expectMutation(step(), (o) => (o.lo = -1), 'ERR_BAD_MESSAGE', 'negative lo');
    expectMutation(step(), (o) => (o.hi = 9), 'ERR_BAD_MESSAGE', 'starts shorter than hi - lo');
    expectMutation(step(), (o) => (o.starts = o.starts.subarray(0, 12)), 'ERR_BAD_MESSAGE', 'starts of 3');
    expectMutation(step(), (o) => (o.starts = o.starts.subarray(0, 15)), 'ERR_BAD_MESSAGE', 'starts not whole int32s');
    expectMutation(step(), (o) => (o.fresh = o.fresh.subarray(0, 3)), 'ERR_BAD_MESSAGE', 'fresh of 3');
    expectMutation(step(), (o) => (o.fresh = Uint8Array.of(0, 2, 0, 1)), 'ERR_BAD_MESSAGE', 'fresh value 2');
    expectMutation(step(), (o) => (o.starts = new Uint8Array(Int32Array.of(0, -5, 1, 2).buffer)), 'ERR_BAD_MESSAGE', 'negative start');
    expectMutation(step(), (o) => (o.hi = 2 ** 40), 'ERR_BAD_MESSAGE', 'huge range');
  });

  it('a step built in memory validates with an Int32Array', () => {
    const s = step();
    const v = validateCoordinatorMessage(s);
    assert.ok(v.ok);
    assert.deepStrictEqual(v.msg, s);
    assert.notEqual((v.msg as StepMsg).starts, s.starts);
  });

  it('bounds strings', () => {
    const over = (n: number): string => 'x'.repeat(n + 1);
    expectAccepted(hello(), (o) => (o.token = 'x'.repeat(LIMITS.MAX_TOKEN_CHARS)), 'token at limit');
    expectMutation(hello(), (o) => (o.token = over(LIMITS.MAX_TOKEN_CHARS)), 'ERR_BAD_MESSAGE', 'token');
    for (const key of ['backend', 'device', 'host', 'name']) {
      expectAccepted(hello(), (o) => (o.info[key] = 'x'.repeat(LIMITS.MAX_NAME_CHARS)), `info.${key} at limit`);
      expectMutation(hello(), (o) => (o.info[key] = over(LIMITS.MAX_NAME_CHARS)), 'ERR_BAD_MESSAGE', `info.${key}`);
    }
    expectMutation({ type: 'leave', reason: '' }, (o) => (o.reason = over(LIMITS.MAX_TEXT_CHARS)), 'ERR_BAD_MESSAGE', 'leave.reason');
    expectMutation(
      { type: 'pause', reason: '', workers: 0, minWorkers: 1 },
      (o) => (o.reason = over(LIMITS.MAX_TEXT_CHARS)),
      'ERR_BAD_MESSAGE',
      'pause.reason',
    );
    expectMutation({ type: 'bye', reason: 'done', message: '' }, (o) => (o.message = over(LIMITS.MAX_TEXT_CHARS)), 'ERR_BAD_MESSAGE', 'bye.message');
    expectMutation({ type: 'error', code: 'ERR_X', message: '' }, (o) => (o.code = over(LIMITS.MAX_CODE_CHARS)), 'ERR_BAD_MESSAGE', 'error.code');
    expectMutation(welcome(), (o) => (o.workerId = over(LIMITS.MAX_NAME_CHARS)), 'ERR_BAD_MESSAGE', 'workerId');
    expectMutation(welcome(), (o) => (o.model.name = over(LIMITS.MAX_NAME_CHARS)), 'ERR_BAD_MESSAGE', 'model name');
    expectMutation(welcome(), (o) => (o.model.hyper = Object.fromEntries(Array.from({ length: LIMITS.MAX_HYPER + 1 }, (_, i) => [`h${i}`, 1]))), 'ERR_BAD_MESSAGE', 'too many hyperparameters');
  });

  it('checks welcome consistency', () => {
    expectMutation(welcome(), (o) => (o.model.hyper.hidden = -1), 'ERR_BAD_MESSAGE', 'hidden -1');
    expectMutation(welcome(), (o) => (o.model.hyper.hidden = Infinity), 'ERR_BAD_MESSAGE', 'hidden Infinity');
    expectMutation(welcome(300), (o) => (o.tokenWidth = 1), 'ERR_BAD_MESSAGE', 'width 1 for 300 ids');
    expectMutation(welcome(300), (o) => (o.tokens = o.tokens.subarray(1)), 'ERR_BAD_MESSAGE', 'odd uint16 bytes');
    expectMutation(welcome(), (o) => (o.tokenWidth = 4), 'ERR_BAD_MESSAGE', 'width 4');
    expectMutation(welcome(), (o) => (o.wireDtype = 'int8'), 'ERR_BAD_MESSAGE', 'wire dtype');
    expectMutation(welcome(), (o) => (o.model.vocabSize = LIMITS.MAX_VOCAB + 1), 'ERR_BAD_MESSAGE', 'vocab too large');
    expectMutation(welcome(), (o) => (o.heartbeatMs = 0), 'ERR_BAD_MESSAGE', 'heartbeat 0');
    expectMutation(welcome(), (o) => (o.workerId = ''), 'ERR_BAD_MESSAGE', 'empty workerId');
  });

  it('checks params length only when the worker knows it', () => {
    const msg: CoordinatorMessage = { type: 'params', version: 1, params: encodeTensor(VALUES, 'float16') };
    assert.ok(decodeCoordinatorMessage(encode(msg)).ok);
    assert.ok(decodeCoordinatorMessage(encode(msg), { paramCount: PARAMS }).ok);
    assertRejected(decodeCoordinatorMessage(encode(msg), { paramCount: PARAMS + 1 }), 'ERR_BAD_TENSOR', 'params length');
    expectMutation(msg, (o) => (o.params.data = new Uint8Array(3)), 'ERR_BAD_TENSOR', 'params bytes');
    expectMutation(msg, (o) => (o.version = -1), 'ERR_BAD_MESSAGE', 'negative params version');
  });

  it('checks bye reasons', () => {
    expectMutation({ type: 'bye', reason: 'done', message: '' }, (o) => (o.reason = 'later'), 'ERR_BAD_MESSAGE', 'bye reason');
    for (const reason of ['done', 'shutdown', 'rejected']) {
      expectAccepted({ type: 'bye', reason: 'done', message: '' }, (o) => (o.reason = reason), reason);
    }
  });
});

describe('close codes', () => {
  it('maps protocol errors to their close codes', () => {
    assert.equal(closeCodeFor('ERR_MALFORMED'), CloseCodes.MALFORMED);
    assert.equal(closeCodeFor('ERR_VERSION_MISMATCH'), CloseCodes.VERSION_MISMATCH);
    assert.equal(closeCodeFor('ERR_BAD_TOKEN'), CloseCodes.BAD_TOKEN);
    assert.equal(closeCodeFor('ERR_NOT_AUTHENTICATED'), CloseCodes.NOT_AUTHENTICATED);
    assert.equal(closeCodeFor('ERR_HELLO_TIMEOUT'), CloseCodes.HELLO_TIMEOUT);
    assert.equal(closeCodeFor('ERR_TOO_MANY_CONNECTIONS'), CloseCodes.TOO_MANY_CONNECTIONS);
    assert.equal(closeCodeFor('ERR_HEARTBEAT_TIMEOUT'), CloseCodes.HEARTBEAT_TIMEOUT);
    assert.equal(closeCodeFor('ERR_PAYLOAD_TOO_LARGE'), CloseCodes.MESSAGE_TOO_BIG);
    assert.equal(closeCodeFor('ERR_SLOW_CONSUMER'), CloseCodes.SLOW_CONSUMER);
    assert.equal(closeCodeFor('ERR_SHUTTING_DOWN'), CloseCodes.SHUTTING_DOWN);
    for (const code of ['ERR_BAD_MESSAGE', 'ERR_UNKNOWN_TYPE', 'ERR_BAD_TENSOR', 'ERR_NON_FINITE'] as const) {
      assert.equal(closeCodeFor(code), CloseCodes.BAD_MESSAGE, code);
    }
  });

  it('codes that are not about the wire close as going away; only a bad token and another version stop a worker', () => {
    for (const code of ['ERR_BAD_CONFIG', 'ERR_CORPUS_NOT_FOUND', 'ERR_CHECKPOINT_WRITE', 'ERR_PORT_IN_USE'] as const) {
      assert.equal(closeCodeFor(code), CloseCodes.GOING_AWAY, code);
    }
    assert.equal(finalRefusalFor(CloseCodes.BAD_TOKEN), 'ERR_BAD_TOKEN');
    assert.equal(finalRefusalFor(CloseCodes.VERSION_MISMATCH), 'ERR_VERSION_MISMATCH');
    for (const close of [CloseCodes.SHUTTING_DOWN, CloseCodes.BAD_MESSAGE, CloseCodes.HEARTBEAT_TIMEOUT, CloseCodes.GOING_AWAY, CloseCodes.TRAINING_DONE]) {
      assert.equal(finalRefusalFor(close), null, String(close));
    }
  });

  it('exit codes: 2 for what the user gave, 1 for what failed while running', () => {
    for (const code of ['ERR_BAD_CONFIG', 'ERR_CHECKPOINT_DIR', 'ERR_CHECKPOINT_LOCKED', 'ERR_MODEL_TOO_LARGE', 'ERR_PORT_IN_USE'] as const) assert.equal(exitCodeFor(code), 2, code);
    for (const code of ['ERR_CHECKPOINT_WRITE', 'ERR_WORKERS_EXITED', 'ERR_COORDINATOR_GONE', 'ERR_EXPORT_WRITE', 'ERR_BAD_TOKEN'] as const) assert.equal(exitCodeFor(code), 1, code);
    assert.equal(errorSpec('ERR_BAD_TOKEN').final, true);
  });
});

describe('tokens on the wire', () => {
  it('uses one byte per id for small vocabularies', () => {
    const ids = Int32Array.of(0, 5, 255, 17);
    const w = tokensToWire(ids, 256);
    assert.equal(w.tokenWidth, 1);
    assert.deepEqual([...w.tokens], [0, 5, 255, 17]);
    assert.deepEqual(tokensFromWire(w.tokens, 1, 256), ids);
  });

  it('uses two little-endian bytes per id above 256', () => {
    const ids = Int32Array.of(0, 300, 65535, 256);
    const w = tokensToWire(ids, 65536);
    assert.equal(w.tokenWidth, 2);
    assert.deepEqual([...w.tokens], [0, 0, 0x2c, 0x01, 0xff, 0xff, 0x00, 0x01]);
    assert.deepEqual(tokensFromWire(w.tokens, 2, 65536), ids);
    // From an odd offset, as a frame slice may be.
    const buf = Buffer.alloc(w.tokens.length + 1);
    buf.set(w.tokens, 1);
    assert.deepEqual(tokensFromWire(buf.subarray(1), 2, 65536), ids);
  });

  it('round-trips through a welcome', () => {
    const msg = welcome(300);
    const v = decodeCoordinatorMessage(encode(msg));
    assert.ok(v.ok && v.msg.type === 'welcome');
    const w = v.msg as WelcomeMsg;
    assert.deepEqual(tokensFromWire(w.tokens, w.tokenWidth, w.model.vocabSize), tokensFromWire(msg.tokens, 2, 300));
  });

  it('rejects ids outside the vocabulary and bad shapes', () => {
    const bad = (f: () => unknown): void => {
      assert.throws(f, (e) => isDptrainError(e, 'ERR_BAD_MESSAGE'));
    };
    bad(() => tokensToWire(Int32Array.of(1, 3), 3));
    bad(() => tokensToWire(Int32Array.of(-1), 3));
    bad(() => tokensToWire(Int32Array.of(0), 0));
    bad(() => tokensToWire(Int32Array.of(0), 65537));
    bad(() => tokensFromWire(Uint8Array.of(0, 3), 1, 3));
    bad(() => tokensFromWire(Uint8Array.of(0x2c, 0x01), 2, 300));
    bad(() => tokensFromWire(Uint8Array.of(0, 0, 0), 2, 300));
    bad(() => tokensFromWire(Uint8Array.of(0), 3 as never, 3));
  });
});

describe('maxPayloadFor', () => {
  it('fits the largest frames of the real model', () => {
    const paramCount = 299036;
    const trainTokens = 200000;
    const values = new Float32Array(paramCount).fill(0.5);
    const params = encode({ type: 'params', version: 1, params: encodeTensor(values, 'float32') });
    const g = encode({ ...grads('float16', values) });
    const w = welcome(300);
    const big = encode({ ...w, ...tokensToWire(new Int32Array(trainTokens).fill(299), 300) });
    for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
      const limit = maxPayloadFor(paramCount, trainTokens, dtype);
      assert.ok(params.length <= limit, `params ${params.length} > ${limit}`);
      assert.ok(g.length <= limit);
      assert.ok(big.length <= limit, `welcome ${big.length} > ${limit}`);
      assert.ok(limit < 2 * paramCount * 4, 'the bound should stay tight enough to matter');
    }
    assert.ok(maxPayloadFor(paramCount, 0, 'float16') >= paramCount * 4);
    assert.throws(() => maxPayloadFor(-1, 0, 'float32'));
    assert.throws(() => maxPayloadFor(1, 0, 'float8' as never));
  });
});

describe('mini-fuzz', () => {
  it('2,000 mutated frames never make decode or validation throw', () => {
    const rng = new Rng(0x5eed);
    const bases = samples().map((m) => encode(m));
    const interesting = [0x00, 0x7f, 0x80, 0x8f, 0x90, 0xa0, 0xc0, 0xc1, 0xc4, 0xc6, 0xca, 0xcb, 0xcf, 0xd4, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xff];
    const counts = { accepted: 0, rejected: 0 };
    for (let iter = 0; iter < 2000; iter++) {
      let bytes: Uint8Array = Uint8Array.from(bases[rng.int(0, bases.length - 1)]);
      const rounds = rng.int(1, 3);
      for (let r = 0; r < rounds; r++) {
        const kind = rng.int(0, 3);
        if (kind === 0) {
          const flips = rng.int(1, 4);
          for (let f = 0; f < flips && bytes.length > 0; f++) bytes[rng.int(0, bytes.length - 1)] ^= 1 << rng.int(0, 7);
        } else if (kind === 1) {
          bytes = bytes.slice(0, rng.int(0, bytes.length));
        } else if (kind === 2) {
          const at = rng.int(0, bytes.length);
          const ins = new Uint8Array(rng.int(1, 8));
          for (let i = 0; i < ins.length; i++) ins[i] = rng.int(0, 255);
          const out = new Uint8Array(bytes.length + ins.length);
          out.set(bytes.subarray(0, at));
          out.set(ins, at);
          out.set(bytes.subarray(at), at + ins.length);
          bytes = out;
        } else if (bytes.length > 0) {
          bytes[rng.int(0, bytes.length - 1)] = interesting[rng.int(0, interesting.length - 1)];
        }
      }
      // Offer every mutant at an odd offset too, as frames can arrive.
      const shifted = Buffer.alloc(bytes.length + 1);
      shifted.set(bytes, 1);
      for (const frame of [bytes, shifted.subarray(1)]) {
        try {
          decode(frame);
        } catch (e) {
          if (!isDptrainError(e, 'ERR_MALFORMED')) assert.fail(`decode threw ${String(e)} at iteration ${iter}`);
        }
        const results: Validation<WorkerMessage | CoordinatorMessage>[] = [
          decodeWorkerMessage(frame, WORKER_LIMITS),
          decodeCoordinatorMessage(frame),
          decodeCoordinatorMessage(frame, { paramCount: PARAMS }),
        ];
        for (const v of results) {
          if (v.ok) {
            counts.accepted++;
            // Whatever validates must encode and validate again unchanged.
            const again = decodeAs(encode(v.msg), v.msg.type);
            assert.ok(again.ok, `re-encoded ${v.msg.type} rejected at iteration ${iter}`);
            assert.deepStrictEqual(again.msg, v.msg);
          } else {
            counts.rejected++;
            assert.ok(v.code in ErrorCodes, `unknown code ${v.code}`);
            assert.equal(typeof v.message, 'string');
          }
        }
      }
    }
    assert.ok(counts.rejected > 0 && counts.accepted > 0, JSON.stringify(counts));
  });
});
