/**
 * Hostile and malformed input from raw WebSocket clients (not our worker)
 * while two honest worker processes train: each offender gets its documented
 * close code and error, the honest workers keep training and are never
 * dropped, no offender's gradient is summed, and memory stays bounded.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CloseCodes, ErrorCodes } from '../src/shared/errors.js';
import { maxPayloadFor, PROTOCOL_VERSION } from '../src/shared/wire/protocol.js';
import { Rng } from '../src/shared/data/rng.js';
import { TOKEN, waitFor } from './support/cluster.js';
import { counter, heapAfterGc, honestCluster, recordAccepted, rejectedByCode, tokensTotal } from './support/hostile.js';
import { gradsFrame, helloFrame, INFO, pack, RawClient, tcpIdle, type Closed } from './support/raw-client.js';

const ROUND_TIMEOUT_S = 1;
const HELLO_TIMEOUT_S = 0.5;
const MAX_WORKERS = 3;

test('hostile input: every offender gets its close code, honest workers keep training, nothing of theirs is applied', async () => {
  const rec = recordAccepted();
  const cl = await honestCluster({ maxWorkers: MAX_WORKERS, roundTimeout: ROUND_TIMEOUT_S, helloTimeout: HELLO_TIMEOUT_S, heartbeatInterval: 1 });
  const { c, url, logs } = cl;
  const clients: RawClient[] = [];
  const open = (u = url) => {
    const k = new RawClient(u);
    clients.push(k);
    return k;
  };
  const P = c.model.paramCount;
  const maxPayload = maxPayloadFor(P + c.cfg.batchSize * c.model.stateWidth, 0, 'float32');
  const rng = new Rng(20240601);
  const results: { case: string; code: number; errors: string[] }[] = [];
  const offenderIds = new Set<string>();
  // Peers that send well-formed replies for the round in flight: those may be summed.
  const compliantIds = new Set<string>();

  /** Sends frames on a fresh connection (after a hello when auth is set) and waits for the coordinator to close it. */
  async function offend(name: string, frames: (Uint8Array | string)[], want: { code: number; error?: string }, auth = false): Promise<Closed> {
    const k = open();
    assert.ok(await k.opened, `${name}: connection refused`);
    if (auth) offenderIds.add(String((await k.join()).workerId));
    for (const f of frames) k.send(f);
    const closed = await k.waitClose(5000);
    results.push({ case: name, code: closed.code, errors: k.errorCodes() });
    assert.equal(closed.code, want.code, `${name}: close code ${closed.code} ${closed.reason}, errors ${k.errorCodes()}`);
    if (want.error) assert.deepEqual(k.errorCodes(), [want.error], `${name}: error messages`);
    if (!auth) assert.ok(!k.types().some((t) => t === 'welcome' || t === 'params' || t === 'step'), `${name}: model data before a valid hello`);
    return closed;
  }

  const memBefore = heapAfterGc();
  const stepBefore = c.state.step;
  const t0 = Date.now();
  try {
    // --- before authentication
    const random = Buffer.from(Array.from({ length: 64 }, () => rng.int(0, 255)));
    random[0] = 0xc1; // never-used msgpack byte: not a map whatever the seed drew
    await offend('random bytes', [random], { code: CloseCodes.MALFORMED, error: ErrorCodes.ERR_MALFORMED });
    await offend('text frame', ['{"type":"hello"}'], { code: CloseCodes.MALFORMED, error: ErrorCodes.ERR_MALFORMED });
    const hello = helloFrame();
    await offend('truncated msgpack', [hello.subarray(0, hello.length >> 1)], { code: CloseCodes.MALFORMED, error: ErrorCodes.ERR_MALFORMED });
    await offend('msgpack array, not a map', [pack([1, 2, 3])], { code: CloseCodes.MALFORMED, error: ErrorCodes.ERR_MALFORMED });
    await offend('msgpack extension type', [Buffer.from([0x81, 0xa4, 0x74, 0x79, 0x70, 0x65, 0xd4, 0x01, 0x00])], { code: CloseCodes.MALFORMED, error: ErrorCodes.ERR_MALFORMED });
    await offend('unknown message type', [pack({ type: 'takeover', please: true })], { code: CloseCodes.BAD_MESSAGE, error: ErrorCodes.ERR_UNKNOWN_TYPE });
    await offend('grads before hello', [gradsFrame({ round: 1, tokenCount: 5, length: P })], { code: CloseCodes.NOT_AUTHENTICATED, error: ErrorCodes.ERR_NOT_AUTHENTICATED });
    await offend('wrong protocol version', [helloFrame(TOKEN, { version: PROTOCOL_VERSION + 1 })], { code: CloseCodes.VERSION_MISMATCH, error: ErrorCodes.ERR_VERSION_MISMATCH });
    await offend('wrong token', [helloFrame('not-the-token')], { code: CloseCodes.BAD_TOKEN, error: ErrorCodes.ERR_BAD_TOKEN });
    await offend('token of the right length, one character off', [helloFrame(TOKEN.slice(0, -1) + 'X')], { code: CloseCodes.BAD_TOKEN, error: ErrorCodes.ERR_BAD_TOKEN });
    await offend('missing token', [pack({ type: 'hello', version: PROTOCOL_VERSION, info: { backend: 'x', device: 'x', host: 'x', pid: 1 } })], { code: CloseCodes.BAD_MESSAGE, error: ErrorCodes.ERR_BAD_MESSAGE });
    await offend('frame over maxPayload before hello', [Buffer.alloc(maxPayload + 1, 0x81)], { code: CloseCodes.MESSAGE_TOO_BIG });
    const tSilent = Date.now();
    await offend('socket that never speaks', [], { code: CloseCodes.HELLO_TIMEOUT, error: ErrorCodes.ERR_HELLO_TIMEOUT });
    const silentMs = Date.now() - tSilent;
    assert.ok(silentMs >= HELLO_TIMEOUT_S * 1000 - 50 && silentMs < HELLO_TIMEOUT_S * 1000 + 1500, `hello timeout took ${silentMs} ms`);
    // Below the WebSocket: sockets that never finish (or never start) the upgrade are not held either.
    const upgradeKey = 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n';
    const tcp = await Promise.all([
      tcpIdle(c.port, { giveUpMs: 5000 }),
      tcpIdle(c.port, { data: 'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n', giveUpMs: 5000 }),
      tcpIdle(c.port, { data: 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', giveUpMs: 5000 }),
      tcpIdle(c.port, { data: `GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${upgradeKey}\r\n`, giveUpMs: 5000 }),
    ]);
    const tcpCases = ['TCP socket that never sends a byte', 'HTTP upgrade request cut off mid-headers', 'plain HTTP request (426, no keep-alive)', 'upgraded, then silent (close frame never answered)'];
    tcp.forEach((ms, i) => {
      // The last one is closed by the hello timeout, then cut off 2 s later when it ignores the close frame.
      assert.ok(ms < HELLO_TIMEOUT_S * 1000 + (i === 3 ? 2500 : 500), `${tcpCases[i]}: open for ${ms} ms`);
      results.push({ case: tcpCases[i], code: 0, errors: [`closed after ${Math.round(ms)} ms`] });
    });
    await cl.progresses(3, 10_000, 'after the unauthenticated offenders');

    // --- the connection limit: --max-workers + 16 sockets in all
    const limit = MAX_WORKERS + 16;
    const flood = Array.from({ length: limit + 4 }, () => open());
    const floodClosed = await Promise.all(flood.map((k) => k.waitClose(5000)));
    const byCode = (code: number) => floodClosed.filter((x) => x.code === code).length;
    // The two honest workers hold two of the slots.
    assert.equal(byCode(CloseCodes.TOO_MANY_CONNECTIONS), flood.length - (limit - 2), JSON.stringify(floodClosed.map((x) => x.code)));
    assert.equal(byCode(CloseCodes.HELLO_TIMEOUT), limit - 2);
    for (const k of flood.filter((x) => x.closed?.code === CloseCodes.TOO_MANY_CONNECTIONS)) assert.deepEqual(k.errorCodes(), [ErrorCodes.ERR_TOO_MANY_CONNECTIONS]);
    results.push({ case: `connection flood (${flood.length} sockets, limit ${limit})`, code: CloseCodes.TOO_MANY_CONNECTIONS, errors: [`${byCode(CloseCodes.TOO_MANY_CONNECTIONS)} refused, ${byCode(CloseCodes.HELLO_TIMEOUT)} timed out`] });

    // --- --max-workers: a third member fits, a fourth is refused
    const third = open();
    offenderIds.add(String((await third.join()).workerId));
    const fourth = open();
    await fourth.opened;
    fourth.send(helloFrame());
    const fourthClosed = await fourth.waitClose(5000);
    assert.equal(fourthClosed.code, CloseCodes.TOO_MANY_CONNECTIONS);
    assert.deepEqual(fourth.errorCodes(), [ErrorCodes.ERR_TOO_MANY_CONNECTIONS]);
    assert.ok(!fourth.types().includes('welcome'));
    results.push({ case: `hello beyond --max-workers ${MAX_WORKERS}`, code: fourthClosed.code, errors: fourth.errorCodes() });
    // The third never replies: the round deadline drops it, and the honest two go on.
    const thirdClosed = await third.waitClose(ROUND_TIMEOUT_S * 1000 + 4000);
    assert.equal(thirdClosed.code, CloseCodes.HEARTBEAT_TIMEOUT);
    assert.equal(thirdClosed.reason, ErrorCodes.ERR_ROUND_TIMEOUT);
    results.push({ case: 'authenticated, never replies', code: thirdClosed.code, errors: [thirdClosed.reason] });

    // --- after a valid hello
    await offend('grads of the wrong length', [gradsFrame({ round: 1, tokenCount: 5, length: P - 1 })], { code: CloseCodes.BAD_MESSAGE, error: ErrorCodes.ERR_BAD_TENSOR }, true);
    await offend('grads of an unknown dtype', [gradsFrame({ round: 1, tokenCount: 5, length: P, dtype: 'float64', data: new Uint8Array(P * 8) })], { code: CloseCodes.BAD_MESSAGE, error: ErrorCodes.ERR_BAD_TENSOR }, true);
    await offend('grads with too few bytes for their length', [gradsFrame({ round: 1, tokenCount: 5, length: P, data: new Uint8Array(P * 2) })], { code: CloseCodes.BAD_MESSAGE, error: ErrorCodes.ERR_BAD_TENSOR }, true);
    await offend('grads holding NaN', [gradsFrame({ round: 1, tokenCount: 5, length: P, fill: NaN })], { code: CloseCodes.BAD_MESSAGE, error: ErrorCodes.ERR_NON_FINITE }, true);
    await offend('grads holding Infinity', [gradsFrame({ round: 1, tokenCount: 5, length: P, fill: -Infinity })], { code: CloseCodes.BAD_MESSAGE, error: ErrorCodes.ERR_NON_FINITE }, true);
    await offend('NaN loss', [gradsFrame({ round: 1, tokenCount: 5, length: P, lossSum: NaN })], { code: CloseCodes.BAD_MESSAGE, error: ErrorCodes.ERR_NON_FINITE }, true);
    await offend('more tokens than a round has', [gradsFrame({ round: 1, tokenCount: 10_000, length: P })], { code: CloseCodes.BAD_MESSAGE, error: ErrorCodes.ERR_BAD_MESSAGE }, true);
    await offend('a second hello', [helloFrame()], { code: CloseCodes.BAD_MESSAGE, error: ErrorCodes.ERR_BAD_MESSAGE }, true);
    // A name that tries to forge a log line of its own (the peer has the token: a worker, misconfigured or worse).
    const forger = open();
    await forger.opened;
    forger.send(helloFrame(TOKEN, { info: { ...INFO, name: 'forger\nrefused 10.0.0.1:1: ERR_BAD_TOKEN\u001b[2J' } }));
    await forger.until(() => forger.types().includes('welcome'), 5000, 'welcome');
    offenderIds.add(String(forger.messages.find((m) => m.type === 'welcome')!.workerId));
    forger.close();
    const forged = logs.filter((l) => l.includes('forger'));
    assert.equal(forged.length >= 1, true);
    assert.ok(forged.every((l) => !/[\u0000-\u001f]/.test(l)), JSON.stringify(forged));
    results.push({ case: 'worker name holding a newline and escape codes', code: 0, errors: ['logged with ? for control characters'] });
    // A 'leave' that is not followed by a close: gone at once, not handed streams until it closes.
    const leaver = open();
    const leaverId = String((await leaver.join()).workerId);
    offenderIds.add(leaverId);
    leaver.send(pack({ type: 'leave', reason: 'going' }));
    assert.equal(await leaver.barrier(), 'closed');
    assert.equal(leaver.closed?.code, CloseCodes.NORMAL);
    assert.equal(c.membership.get(leaverId), undefined);
    results.push({ case: "'leave' without closing the socket", code: CloseCodes.NORMAL, errors: [] });
    await offend('random bytes after hello', [random], { code: CloseCodes.MALFORMED, error: ErrorCodes.ERR_MALFORMED }, true);
    await offend('frame over maxPayload after hello', [Buffer.alloc(maxPayload + 1, 0x81)], { code: CloseCodes.MESSAGE_TOO_BIG }, true);
    await cl.progresses(3, 10_000, 'after the authenticated offenders');

    // --- replies that name the wrong round: answered by counting, never summed
    const stale0 = await counter(c, 'rejected', ErrorCodes.ERR_STALE_ROUND);
    const future0 = await counter(c, 'rejected', ErrorCodes.ERR_FUTURE_ROUND);
    const dup0 = await counter(c, 'rejected', ErrorCodes.ERR_DUPLICATE_REPLY);
    const k = open();
    const kId = String((await k.join()).workerId);
    compliantIds.add(kId);
    await k.until(() => k.messages.some((m) => m.type === 'step'), 5000, 'a step');
    const step = k.messages.find((m) => m.type === 'step')!;
    const round = Number(step.round);
    const rows = Number(step.hi) - Number(step.lo);
    // A well-formed zero gradient for its round: the one reply of this client that may count.
    k.send(gradsFrame({ round, tokenCount: rows * c.cfg.numSteps, length: P }));
    k.send(gradsFrame({ round, tokenCount: rows * c.cfg.numSteps, length: P, fill: 1e3 }));
    k.send(gradsFrame({ round: round - 1, tokenCount: rows * c.cfg.numSteps, length: P, fill: 1e3 }));
    k.send(gradsFrame({ round: round + 1000, tokenCount: rows * c.cfg.numSteps, length: P, fill: 1e3 }));
    assert.equal(await k.barrier(), 'pong', 'counted replies do not close the connection');
    assert.equal((await counter(c, 'rejected', ErrorCodes.ERR_DUPLICATE_REPLY)) - dup0, 1);
    assert.equal((await counter(c, 'rejected', ErrorCodes.ERR_STALE_ROUND)) - stale0, 1);
    assert.equal((await counter(c, 'rejected', ErrorCodes.ERR_FUTURE_ROUND)) - future0, 1);
    assert.deepEqual(
      rec.accepted.filter((a) => a.workerId === kId).map((a) => a.round),
      [round],
      'only the first, well-formed reply for the current round was summed',
    );
    results.push({ case: 'duplicate, past and future round replies', code: 0, errors: ['ERR_DUPLICATE_REPLY', 'ERR_STALE_ROUND', 'ERR_FUTURE_ROUND'] });
    // Round r + 1 is in flight for it now; a reply with a wrong token count is a protocol error, not a deadline wait.
    await k.until(() => k.messages.filter((m) => m.type === 'step').length >= 2, 5000, 'a second step');
    const step2 = k.messages.filter((m) => m.type === 'step')[1];
    const tBad = Date.now();
    k.send(gradsFrame({ round: Number(step2.round), tokenCount: 1, length: P }));
    const kClosed = await k.waitClose(5000);
    assert.equal(kClosed.code, CloseCodes.BAD_MESSAGE);
    assert.ok(k.errorCodes().includes(ErrorCodes.ERR_BAD_MESSAGE), k.errorCodes().join(','));
    assert.ok(Date.now() - tBad < ROUND_TIMEOUT_S * 1000, 'closed at once, not at the round deadline');
    results.push({ case: 'reply for the current round with the wrong token count', code: kClosed.code, errors: k.errorCodes() });

    // --- a reader that never drains: cut off by the round deadline, its send buffer bounded
    const slow = open();
    const slowId = String((await slow.join()).workerId);
    offenderIds.add(slowId);
    slow.pauseReading();
    const tSlow = Date.now();
    let maxBuffered = 0;
    const slowFailures0 = await counter(c, 'failures', 'timeout');
    await waitFor(
      () => {
        const m = c.membership.get(slowId);
        if (m) maxBuffered = Math.max(maxBuffered, m.peer.bufferedAmount());
        return !m;
      },
      ROUND_TIMEOUT_S * 1000 + 3000,
      'the slow reader to be dropped',
    );
    const slowDropMs = Date.now() - tSlow;
    assert.equal((await counter(c, 'failures', 'timeout')) - slowFailures0, 1);
    // Its socket is gone too (terminated when the close handshake went unanswered).
    await waitFor(() => c.ws.connectionCount === 2, 5000, 'the slow reader socket to be terminated');
    assert.ok(maxBuffered <= 8 * P * 4 + c.corpus.train.length * 2, `send buffer reached ${maxBuffered} bytes`);
    results.push({ case: 'slow reader (socket paused)', code: CloseCodes.HEARTBEAT_TIMEOUT, errors: [`dropped after ${slowDropMs} ms, buffered at most ${maxBuffered} B`] });
    await cl.progresses(3, 10_000, 'after the slow reader');

    // --- a peer that keeps replying but never reads: it meets every deadline, so only
    // the send-buffer limit can stop what the coordinator queues for it.
    const limitBytes = 8 * P * 4 + c.corpus.train.length * 2;
    const sprayer = open();
    const sprayerId = String((await sprayer.join()).workerId);
    compliantIds.add(sprayerId);
    await sprayer.until(() => sprayer.messages.some((m) => m.type === 'step'), 5000, 'a step');
    const first = sprayer.messages.find((m) => m.type === 'step')!;
    const sprayRows = Number(first.hi) - Number(first.lo);
    sprayer.pauseReading();
    const slowConsumer0 = await counter(c, 'rejected', ErrorCodes.ERR_SLOW_CONSUMER);
    let replied = 0;
    let sprayBuffered = 0;
    const tSpray = Date.now();
    // It answers each round as it starts, as a worker that read its step would (the round number comes
    // from the coordinator object here, since this peer reads nothing).
    while (c.membership.get(sprayerId) && Date.now() - tSpray < 20_000) {
      const r = c.state.round;
      if (r > replied) {
        sprayer.send(gradsFrame({ round: r, tokenCount: sprayRows * c.cfg.numSteps, length: P }));
        replied = r;
      }
      sprayBuffered = Math.max(sprayBuffered, c.membership.get(sprayerId)?.peer.bufferedAmount() ?? 0);
      await new Promise((r) => setImmediate(r));
    }
    assert.equal(c.membership.get(sprayerId), undefined, 'the non-reading peer was cut off');
    assert.equal((await counter(c, 'rejected', ErrorCodes.ERR_SLOW_CONSUMER)) - slowConsumer0, 1);
    assert.ok(logs.some((l) => /ERR_SLOW_CONSUMER/.test(l)));
    // Over the limit by at most what one round adds (its parameters and step).
    assert.ok(sprayBuffered <= limitBytes + 2 * (P * 4 + 4096), `send buffer reached ${sprayBuffered} bytes, limit ${limitBytes}`);
    results.push({ case: 'replies but never reads (slow consumer)', code: CloseCodes.SLOW_CONSUMER, errors: [`cut after ${Date.now() - tSpray} ms, buffered at most ${sprayBuffered} B of ${limitBytes} B allowed`] });
    await cl.progresses(3, 10_000, 'after the slow consumer');

    // --- invariants over the whole hostile phase
    const memAfter = heapAfterGc();
    const heapGrowthMb = (memAfter.heapUsed - memBefore.heapUsed) / 2 ** 20;
    assert.ok(heapGrowthMb < 32, `heap grew by ${heapGrowthMb.toFixed(1)} MiB`);
    assert.deepEqual(
      c.membership.list().map((m) => m.id).sort(),
      [...cl.honestIds].sort(),
      'the honest workers were never dropped and no offender is left',
    );
    const offendersSummed = rec.accepted.filter((a) => offenderIds.has(a.workerId));
    assert.deepEqual(offendersSummed, [], 'no offender gradient was summed');
    assert.ok(rec.accepted.every((a) => a.round === a.roundId && a.allFinite));
    const stepsDuringHostilePhase = c.state.step - stepBefore;
    const rejected = await rejectedByCode(c);
    // Every offender above was dropped for its own reason first; a heartbeat lapsing while it closes is not a second failure.
    assert.equal(rejected[ErrorCodes.ERR_HEARTBEAT_TIMEOUT], undefined, JSON.stringify(rejected));
    // A peer still owing a reply when the run is stopped twice (the second stop aborts the round):
    // it is told the coordinator is shutting down, not that it missed a deadline, so a worker exits
    // instead of reconnecting.
    const owing = open();
    offenderIds.add(String((await owing.join()).workerId));
    await owing.until(() => owing.messages.some((m) => m.type === 'step'), 5000, 'a step');
    // After the stop every reply a round accepted has been applied, so the two counts must agree.
    await cl.shutdown();
    const owingClosed = await owing.waitClose(5000);
    assert.equal(owingClosed.code, CloseCodes.SHUTTING_DOWN, `closed ${owingClosed.code} ${owingClosed.reason}`);
    results.push({ case: 'owes a reply when the run is stopped twice', code: owingClosed.code, errors: [] });
    const honestTokens = rec.accepted.filter((a) => cl.honestIds.includes(a.workerId)).reduce((s, a) => s + a.tokens, 0);
    const compliantTokens = rec.accepted.filter((a) => compliantIds.has(a.workerId)).reduce((s, a) => s + a.tokens, 0);
    assert.ok(rec.accepted.every((a) => cl.honestIds.includes(a.workerId) || compliantIds.has(a.workerId)));
    assert.equal(await tokensTotal(c), honestTokens + compliantTokens, 'the token count is the honest tokens plus the well-formed replies');
    assert.ok(c.server.params().every(Number.isFinite));
    assert.ok(!logs.some((l) => /internal error/.test(l)), logs.filter((l) => /internal error/.test(l)).join('\n'));
    assert.ok(!logs.some((l) => l.includes(TOKEN)), 'the token never appears in the log');

    console.log(
      'reliability-counts',
      JSON.stringify({
        test: 'hostile',
        cases: results.length,
        stepsDuringHostilePhase,
        seconds: Math.round((Date.now() - t0) / 100) / 10,
        heapGrowthMiB: Math.round(heapGrowthMb * 10) / 10,
        rssGrowthMiB: Math.round(((memAfter.rss - memBefore.rss) / 2 ** 20) * 10) / 10,
        rejected,
        offenderGradientsSummed: offendersSummed.length,
        results,
      }),
    );
  } finally {
    for (const k of clients) k.close();
    rec.restore();
    await cl.shutdown();
    c.dispose();
  }
});
