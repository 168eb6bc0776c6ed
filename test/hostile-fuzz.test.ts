/**
 * Seeded fuzzing of the coordinator's WebSocket endpoint while two honest
 * workers train: thousands of random and mutated frames, before and after a
 * valid hello, over several connections at once. Every frame gets a verdict
 * (the connection survived it, or was closed with a documented code), and the
 * invariants of the hostile-input test hold over the whole run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CloseCodes, ErrorCodes } from '../src/shared/errors.js';
import { decode, PROTOCOL_VERSION, validateWorkerMessage } from '../src/shared/wire/protocol.js';
import { Rng } from '../src/shared/data/rng.js';
import { TOKEN, waitFor } from './support/cluster.js';
import { heapAfterGc, honestCluster, recordAccepted, rejectedByCode, tokensTotal } from './support/hostile.js';
import { INFO, pack, RawClient } from './support/raw-client.js';

const SEED = 7;
const MESSAGES = 3200;
const LANES = 6;
/** Frames sent on one authenticated connection before the lane moves on. */
const SESSION_FRAMES = 25;

// Whatever ends a fuzzed connection must be one of these.
const ALLOWED_CLOSE = new Set<number>([
  CloseCodes.NORMAL, // a mutated frame that is still a valid 'leave'
  CloseCodes.MESSAGE_TOO_BIG,
  CloseCodes.BAD_TOKEN,
  CloseCodes.VERSION_MISMATCH,
  CloseCodes.MALFORMED,
  CloseCodes.NOT_AUTHENTICATED,
  CloseCodes.HELLO_TIMEOUT,
  CloseCodes.TOO_MANY_CONNECTIONS,
  CloseCodes.HEARTBEAT_TIMEOUT, // an authenticated fuzzer holding streams past the round deadline
  CloseCodes.BAD_MESSAGE,
]);
const KNOWN_CODES = new Set<string>(Object.values(ErrorCodes));

function randomBytes(rng: Rng, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = rng.int(0, 255);
  return b;
}

function randomValue(rng: Rng, depth = 0): unknown {
  switch (rng.int(0, 11)) {
    case 0:
      return null;
    case 1:
      return rng.next() < 0.5;
    case 2:
      return rng.int(-1_000_000, 1_000_000);
    case 3:
      return [NaN, Infinity, -Infinity, 1e308, -0, 2 ** 53 + 2, -(2 ** 31), 2 ** 32][rng.int(0, 7)];
    case 4:
      return rng.next() * 1e6 - 5e5;
    case 5:
      return 'x'.repeat(rng.int(0, 1500));
    case 6:
      return randomBytes(rng, rng.int(0, 4000));
    case 7:
      return depth < 4 ? Array.from({ length: rng.int(0, 4) }, () => randomValue(rng, depth + 1)) : 1;
    case 8:
      return depth < 4 ? { dtype: randomValue(rng, depth + 1), length: randomValue(rng, depth + 1), data: randomValue(rng, depth + 1) } : 2;
    case 9:
      return depth < 4 ? Object.fromEntries(Array.from({ length: rng.int(0, 4) }, (_, k) => [`k${k}`, randomValue(rng, depth + 1)])) : 3;
    case 10:
      return ['float32', 'float16', 'bfloat16', 'float64', '', 'hello', 'grads', 'leave'][rng.int(0, 7)];
    default:
      return rng.int(0, 3) === 0 ? -1 : rng.int(0, 2 ** 31);
  }
}

/** Frames that look like the protocol, before mutation. */
function templates(P: number, round: number): Record<string, unknown>[] {
  return [
    { type: 'hello', version: PROTOCOL_VERSION, token: TOKEN, info: INFO },
    // A zero gradient that can never be summed: tokenCount 1 matches no stream range.
    { type: 'grads', round, tokenCount: 1, lossSum: 0, computeMs: 1, grads: { dtype: 'float32', length: P, data: Buffer.alloc(P * 4) } },
    { type: 'leave', reason: 'fuzz' },
    { type: 'params', version: 1, params: { dtype: 'float32', length: 2, data: Buffer.alloc(8) } },
    { type: 'error', code: 'ERR_MALFORMED', message: 'x' },
  ];
}

/** One fuzzed frame: a byte-level mutation of a template, a field-level one, or noise. */
function fuzzFrame(rng: Rng, P: number, currentRound: number, preAuth: boolean): { frame: Buffer | string; kind: string } {
  // Rounds that are never the one in flight: the fuzzer must not be able to land a valid reply.
  const round = rng.next() < 0.5 ? rng.int(0, Math.max(0, currentRound - 1)) : currentRound + 1000 + rng.int(0, 1e6);
  const ts = templates(P, round);
  const base = preAuth ? (rng.next() < 0.7 ? ts[0] : ts[rng.int(1, ts.length - 1)]) : rng.next() < 0.6 ? ts[1] : ts[rng.int(0, ts.length - 1)];
  const op = rng.int(0, 9);
  if (op === 0) return { frame: randomBytes(rng, rng.int(0, 300)), kind: 'random-bytes' };
  if (op === 1) return { frame: rng.next() < 0.5 ? JSON.stringify(base, (_k, v) => (Buffer.isBuffer(v) ? undefined : v)) : 'x'.repeat(rng.int(0, 100)), kind: 'text' };
  if (op <= 4) {
    // Field-level: replace, delete or add one field, or one of the nested tensor/info fields.
    const o: Record<string, unknown> = structuredClone(base);
    const keys = Object.keys(o);
    const target = (o.grads && rng.next() < 0.3 ? o.grads : o.info && rng.next() < 0.3 ? o.info : o) as Record<string, unknown>;
    const tk = Object.keys(target);
    const what = rng.int(0, 2);
    if (what === 0) target[tk[rng.int(0, tk.length - 1)]] = randomValue(rng);
    else if (what === 1) delete target[tk[rng.int(0, tk.length - 1)]];
    else target[`extra${rng.int(0, 9)}`] = randomValue(rng);
    if (keys.length === 0) o.type = randomValue(rng);
    return { frame: pack(o), kind: 'field' };
  }
  if (op === 5) {
    // Structural traps: deep nesting, headers that claim more than the frame holds.
    const traps = [
      Buffer.concat([Buffer.from([0x81, 0xa1, 0x61]), Buffer.alloc(rng.int(9, 40), 0x91), Buffer.from([0xc0])]),
      Buffer.from([0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 0x61]),
      Buffer.from([0x81, 0xa1, 0x61, 0xdd, 0x7f, 0xff, 0xff, 0xff, 0xc0]),
      Buffer.from([0x81, 0xa1, 0x61, 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00]),
      Buffer.from([0x81, 0xa1, 0x61, 0xc7, 0x01, 0xff, 0x00]),
      Buffer.from([0x81, 0x01, 0x02]),
      Buffer.concat([pack(base), Buffer.from([0xc0])]),
    ];
    return { frame: traps[rng.int(0, traps.length - 1)], kind: 'structural' };
  }
  // Byte-level: flips, truncation, splices and interesting bytes in a valid frame.
  const b = Buffer.from(pack(base));
  const n = rng.int(1, 4);
  for (let k = 0; k < n; k++) {
    const i = rng.int(0, b.length - 1);
    const m = rng.int(0, 2);
    if (m === 0) b[i] ^= 1 << rng.int(0, 7);
    else if (m === 1) b[i] = [0x00, 0xff, 0xc1, 0xc0, 0xdd, 0xdf, 0x7f, 0x80, 0xcb, 0xd4][rng.int(0, 9)];
    else b[i] = rng.int(0, 255);
  }
  const cut = rng.int(0, 3);
  if (cut === 0) return { frame: b.subarray(0, rng.int(0, b.length - 1)), kind: 'bytes-truncated' };
  if (cut === 1) return { frame: Buffer.concat([b, randomBytes(rng, rng.int(1, 16))]), kind: 'bytes-extended' };
  return { frame: b, kind: 'bytes' };
}

function isValidHello(frame: Buffer | string): boolean {
  if (typeof frame === 'string') return false;
  try {
    const v = validateWorkerMessage(decode(frame), { paramCount: 1, maxTokenCount: 1 });
    return v.ok && v.msg.type === 'hello' && v.msg.token === TOKEN;
  } catch {
    return false;
  }
}

test(`fuzz: ${MESSAGES} seeded random and mutated frames over ${LANES} connections at a time, before and after hello`, async () => {
  const rec = recordAccepted();
  const cl = await honestCluster({ maxWorkers: LANES + 2, roundTimeout: 1, helloTimeout: 1, heartbeatInterval: 1 });
  const { c, url, logs } = cl;
  const P = c.model.paramCount;
  const rng = new Rng(SEED);
  // Only the open ones: keeping every finished client would hide the coordinator's heap growth behind the test's own.
  const clients = new Set<RawClient>();
  const fuzzIds = new Set<string>();
  const counts = {
    messages: 0,
    preAuth: 0,
    postAuth: 0,
    connections: 0,
    survived: 0,
    welcomedByMutatedHello: 0,
    closeCodes: {} as Record<string, number>,
    kinds: {} as Record<string, number>,
  };
  const violations: string[] = [];
  const memBefore = heapAfterGc();
  const stepBefore = c.state.step;
  const t0 = Date.now();

  const closedWith = (k: RawClient) => {
    const code = k.closed!.code;
    counts.closeCodes[code] = (counts.closeCodes[code] ?? 0) + 1;
    if (!ALLOWED_CLOSE.has(code)) violations.push(`close code ${code} (${k.closed!.reason})`);
    for (const e of k.errorCodes()) if (!KNOWN_CODES.has(e)) violations.push(`unknown error code ${e}`);
  };

  async function lane(): Promise<void> {
    while (counts.messages < MESSAGES) {
      const k = new RawClient(url);
      clients.add(k);
      counts.connections++;
      try {
        await session(k);
      } finally {
        k.close();
        clients.delete(k);
      }
    }
  }

  async function session(k: RawClient): Promise<void> {
    if (!(await k.opened)) {
      closedWith(k);
      return;
    }
    if (rng.next() < 0.5) {
      // Before authentication: one frame decides the connection's fate.
      const { frame, kind } = fuzzFrame(rng, P, c.state.round, true);
      counts.kinds[kind] = (counts.kinds[kind] ?? 0) + 1;
      k.send(frame);
      counts.messages++;
      counts.preAuth++;
      const verdict = await k.barrier(5000);
      if (verdict === 'closed') {
        closedWith(k);
        if (k.types().some((t) => t !== 'error')) violations.push(`pre-auth connection got ${k.types().join(',')}`);
        return;
      }
      // Still open: only a hello that is valid, mutation or not, may have done that.
      await k.until(() => k.types().includes('welcome') || k.closed !== null, 5000, 'welcome after a surviving hello');
      if (!k.types().includes('welcome') || !isValidHello(frame)) {
        violations.push(`a pre-auth ${kind} frame was not refused`);
        return;
      }
      counts.welcomedByMutatedHello++;
    } else {
      try {
        await k.join();
      } catch {
        // Refused (e.g. --max-workers reached by the other lanes): a verdict like any other.
        await k.waitClose(5000);
        closedWith(k);
        return;
      }
    }
    fuzzIds.add(String(k.messages.find((m) => m.type === 'welcome')!.workerId));
    for (let i = 0; i < SESSION_FRAMES && counts.messages < MESSAGES; i++) {
      const { frame, kind } = fuzzFrame(rng, P, c.state.round, false);
      counts.kinds[kind] = (counts.kinds[kind] ?? 0) + 1;
      k.send(frame);
      counts.messages++;
      counts.postAuth++;
      if ((await k.barrier(5000)) === 'closed') break;
      counts.survived++;
    }
    if (k.closed) closedWith(k);
  }

  try {
    await Promise.all(Array.from({ length: LANES }, () => lane()));
    const fuzzSeconds = (Date.now() - t0) / 1000;
    await waitFor(() => c.ws.connectionCount === 2, 5000, 'every fuzz connection to be gone');
    await cl.progresses(3, 10_000, 'after the fuzzing');
    const stepsDuringFuzz = c.state.step - stepBefore;
    const memAfter = heapAfterGc();
    const heapGrowthMb = (memAfter.heapUsed - memBefore.heapUsed) / 2 ** 20;
    const rejected = await rejectedByCode(c);

    assert.deepEqual(violations, []);
    assert.ok(counts.messages >= 3000, `${counts.messages} messages`);
    assert.ok(counts.preAuth > 1000 && counts.postAuth > 1000, JSON.stringify(counts));
    assert.ok(stepsDuringFuzz >= 20, `only ${stepsDuringFuzz} steps while fuzzing`);
    assert.deepEqual(
      c.membership.list().map((m) => m.id).sort(),
      [...cl.honestIds].sort(),
      'the honest workers were never dropped and no fuzzer is left',
    );
    assert.ok(heapGrowthMb < 16, `heap grew by ${heapGrowthMb.toFixed(1)} MiB`);
    assert.ok(!logs.some((l) => /internal error/.test(l)), logs.filter((l) => /internal error/.test(l)).join('\n'));
    assert.ok(!logs.some((l) => l.includes(TOKEN)), 'the token never appears in the log: ' + logs.filter((l) => l.includes(TOKEN)).join('\n'));
    assert.ok(c.server.params().every(Number.isFinite));

    await cl.shutdown();
    const fuzzSummed = rec.accepted.filter((a) => fuzzIds.has(a.workerId));
    assert.deepEqual(fuzzSummed, [], 'no fuzzer gradient was summed');
    assert.ok(rec.accepted.every((a) => cl.honestIds.includes(a.workerId) && a.round === a.roundId && a.allFinite));
    assert.equal(await tokensTotal(c), rec.accepted.reduce((s, a) => s + a.tokens, 0), 'the token count is exactly the honest tokens');

    console.log(
      'reliability-counts',
      JSON.stringify({
        test: 'fuzz',
        seed: SEED,
        ...counts,
        fuzzSeconds: Math.round(fuzzSeconds * 10) / 10,
        stepsDuringFuzz,
        heapGrowthMiB: Math.round(heapGrowthMb * 10) / 10,
        rssGrowthMiB: Math.round(((memAfter.rss - memBefore.rss) / 2 ** 20) * 10) / 10,
        rejected,
        fuzzGradientsSummed: fuzzSummed.length,
      }),
    );
  } finally {
    for (const k of clients) k.close();
    rec.restore();
    await cl.shutdown();
    c.dispose();
  }
});
