/**
 * The coordinator: master copy of the model, synchronous gradient-averaging
 * rounds over the current members, elastic membership, checkpoints, metrics.
 *
 * A round: encode the parameters once, send the same bytes to every worker,
 * send each its stream range; sum the gradient sums that come back before the
 * deadline; divide by the tokens that came back; clip; optimizer step.
 *
 * (Over 350 lines: the round loop, membership events and stop/pause share one
 * state machine, kept in one class. What is not that state machine lives
 * beside it: streams.ts (who holds which stream, state hand-over), round.ts
 * (one round's replies and deadline), membership.ts, run-observer.ts (metrics
 * and console), ws-server.ts (sockets), and src/shared/store/ (checkpoint
 * assembly, resume checks, temp-file cleanup).)
 */
import crypto from 'node:crypto';
import type { Corpus } from '../shared/data/corpus.js';
import { tokenizerFromConfig, type TextTokenizer } from '../shared/data/tokenizer.js';
import { defaultDataDir, loadCorpus } from '../shared/data/corpus-source.js';
import { TRAIN_KEYS, publicConfig, type CoordinatorConfig } from '../shared/config.js';
import { COORDINATOR_OPTIONS } from '../shared/options.js';
import { CloseCodes, closeCodeFor, DptrainError, ErrorCodes, type ErrorCode } from '../shared/errors.js';
import { encode, maxPayloadFor, tokensToWire, PROTOCOL_VERSION, type GradsMsg, type CapacityMsg, type HelloMsg, type LocalSteps, type WorkerMessage } from '../shared/wire/protocol.js';
import { decodeTensor, encodeTensor, tensorAllFinite } from '../shared/wire/tensor.js';
import { GradAccumulator } from '../shared/wire/accumulate.js';
import { ParamsFrames } from '../shared/wire/params-frame.js';
import { rowSparseBlocks } from '../shared/model/descriptor.js';
import type { ModelDescriptor } from '../shared/model/descriptor.js';
import { ParameterServer } from '../shared/train/param-server.js';
import { initialParams, modelOf } from '../shared/train/local-trainer.js';
import { Schedule, type ScheduledBatch } from '../shared/data/schedule.js';
import { isLocalSgd, outerOptimizerConfig, outerOptimizerName } from '../shared/train/outer-optimizer.js';
import { perplexityOf, predict } from '../shared/model/evaluate.js';
import { writeCheckpoint } from '../shared/store/checkpoint.js';
import { assembleCheckpoint, readResumePoint } from '../shared/store/run-state.js';
import { removeDeadTempFiles } from '../shared/store/temp-files.js';
import type { BackendInfo } from '../shared/backend.js';
import { checkModelFits } from './model-limits.js';
import { urlHost } from '../shared/listen.js';
import { openCheckpointDir, type CheckpointDirLock } from './checkpoint-dir.js';
import { Membership, recordStepTime, stateBufferOf, type LeaveReason, type Member, type Peer } from './membership.js';
import { Round, type Expected, type RoundOutcome } from './round.js';
import { StreamTable } from './streams.js';
import { WsServer, type HelloResult } from './ws-server.js';
import { realClock, type Clock, type Transport, type TransportFactory } from './transport.js';
import { createCoordinatorMetrics, initSeries, VERSION, workerInfoLabels, type CoordinatorMetrics } from './metrics.js';
import { ConsoleReporter } from './console-report.js';
import { RunObserver } from './run-observer.js';
import { LogThinning, RoundSeries } from './round-series.js';

export interface LogEntry {
  step: number;
  epoch: number;
  trainPerplexity: number;
  validationPerplexity?: number;
  tokensPerSecond?: number;
  time: number;
}

/** Where one round's wall time went, for the overhead benchmark. */
export interface RoundBreakdown {
  round: number;
  workers: number;
  /** Reading the parameters and encoding the params and step messages. */
  encodeMs: number;
  /** Handing the frames to the sockets. */
  sendMs: number;
  /** From the last send until the last reply (or the deadline). */
  waitMs: number;
  /** Decoding the returned stream states (inside waitMs). */
  decodeMs: number;
  /** Checking, decoding and adding the gradients, one pass each (inside waitMs). */
  sumMs: number;
  /** Decoding and adding the reply that completed the round: the part of decodeMs and sumMs on the round's critical path. */
  lastReplyMs: number;
  clipMs: number;
  optimizerMs: number;
  /** The slowest worker's reported compute time. */
  slowestComputeMs: number;
  totalMs: number;
}

export interface CoordinatorDeps {
  /** Called after every applied round. */
  onRound?: (b: RoundBreakdown) => void;
  log?: (line: string) => void;
  backend?: BackendInfo;
  /** Where a TTY progress line goes (default: stderr when it is a TTY). */
  progress?: NodeJS.WriteStream | null;
  /** The workers' connections (default: the WebSocket server); a test passes an in-process one. */
  transport?: TransportFactory;
  /** The round deadline's clock (default: performance.now and timers). */
  clock?: Clock;
  /** Offer workers row-sparse gradients (default true); only the benchmark turns it off, to measure the dense bytes. */
  sparseRows?: boolean;
}

export interface RunSummary {
  steps: number;
  epochs: number;
  /** done: trained to the last epoch; stopped: by a signal or stop(); finished: it already had, nothing was trained. */
  reason: 'done' | 'stopped' | 'finished';
  finalTrainPerplexity: number;
  checkpoint?: string;
  /** The last checkpoint of the run could not be written: the work since the previous one is lost on exit. */
  checkpointFailed?: boolean;
}

/**
 * Replies read straight into the gradient accumulator's memory at once (one slot each, shared/direct-reads.ts):
 * a reply that finds none free lands in its connection's own buffer and is copied in when it is summed.
 */
const FRAME_SLOTS = 8;

export class Coordinator {
  readonly metrics: CoordinatorMetrics;
  readonly membership: Membership;
  readonly history: LogEntry[] = [];
  /** One point per round (thinned when long) for the status page's charts. */
  readonly series = new RoundSeries();
  /** Keeps `history` bounded (it is sent on every status poll and saved in checkpoints). */
  private readonly historyThinning = new LogThinning();
  corpus!: Corpus;
  model!: ModelDescriptor;
  tokenizer!: TextTokenizer;
  server!: ParameterServer;
  schedule!: Schedule;
  /** The workers' connections: a WsServer unless deps.transport says otherwise. */
  ws!: Transport;
  port = 0;
  token: string;
  lastSample = '';
  startedAt = Date.now();
  private count = 0;
  /** Optimizer steps: batches of the schedule trained on (with --sync-every K, K inner steps per round). */
  private optimizerSteps = 0;
  /** The batches of the round in flight: one, or a local SGD round's inner steps. */
  private roundBatches: ScheduledBatch[] = [];
  private corpusSha1 = '';
  private roundId = 0;
  private round: Round | null = null;
  /** The round before, kept to tell a duplicate reply from a late one after it ended. */
  private lastRound: Round | null = null;
  private stopping = false;
  /** start() found the run already finished (a resumed checkpoint at or past --epochs): run() is not to be called. */
  finished = false;
  private dirLock: CheckpointDirLock | null = null;
  private samplePrefix = '';
  private wake: (() => void) | null = null;
  private streams!: StreamTable;
  /** The training split as the welcome message carries it. */
  private trainOnWire: { tokens: Uint8Array; tokenWidth: 1 | 2 } | null = null;
  private paused = false;
  private readonly log: (line: string) => void;
  private readonly report: ConsoleReporter;
  private readonly observer: RunObserver;
  private lastCheckpointStep = -1;
  private recentRoundMs: number[] = [];
  private breakdown: RoundBreakdown | null = null;
  /** Checks, decodes and sums each reply's gradient in one pass from the frame, into a sum reused every round. */
  private gradAcc: GradAccumulator | null = null;
  private readonly paramsFrames = new ParamsFrames();

  constructor(
    readonly cfg: CoordinatorConfig,
    token: string | undefined,
    private readonly deps: CoordinatorDeps = {},
  ) {
    this.log = deps.log ?? ((l) => console.log(l));
    this.token = token ?? crypto.randomBytes(24).toString('base64url');
    this.metrics = createCoordinatorMetrics();
    initSeries(this.metrics);
    this.membership = new Membership(cfg.maxWorkers);
    this.report = new ConsoleReporter(this.log, deps.progress === undefined ? (process.stderr.isTTY ? process.stderr : null) : deps.progress);
    this.observer = new RunObserver(this.metrics, this.report, this.series);
  }

  get state(): { paused: boolean; stopping: boolean; step: number; epoch: number; round: number } {
    return { paused: this.paused, stopping: this.stopping, step: this.optimizerSteps, epoch: this.schedule?.peek().epoch ?? 0, round: this.roundId };
  }

  /** Load the corpus, build or resume the model, open the WebSocket server. */
  async start(): Promise<number> {
    const cfg = this.cfg;
    // The directory first: a mistake there must stop the run before minutes of corpus loading.
    if (cfg.checkpointDir) this.dirLock = await openCheckpointDir(cfg.checkpointDir, { resume: cfg.resume, overwrite: cfg.overwrite, log: this.log });
    const loaded = await loadCorpus(cfg.corpus, {
      dataDir: cfg.dataDir ?? defaultDataDir(),
      maxTokens: cfg.maxTokens,
      valFraction: cfg.valFraction,
      preprocess: cfg.preprocess,
      tokens: cfg.tokenizer === 'word' ? 'word' : 'char',
      minFreq: cfg.minFreq,
      maxBytes: cfg.maxCorpusBytes,
      onWarning: (m) => this.log(`corpus: ${m}`),
    });
    this.corpusSha1 = loaded.sha1;
    this.corpus = loaded.corpus;
    this.model = modelOf(cfg, this.corpus);
    this.count = this.model.paramCount;
    checkModelFits({ paramCount: this.count, stateCount: cfg.batchSize * this.model.stateWidth, trainTokens: this.corpus.train.length, backend: this.deps.backend?.name ?? 'wasm', sizeFlags: this.model.sizeFlags, vocab: { size: this.corpus.vocab.size, tokens: cfg.tokenizer, minFreq: cfg.minFreq } });
    this.log(`corpus: ${loaded.summary}`);
    // The sample prefix goes through the corpus's own preprocessing, or 'Call Me' would reach the model as '<unk>all <unk>e'.
    this.tokenizer = tokenizerFromConfig(cfg, this.corpus.vocab);
    const prefix = this.tokenizer.preparePrompt(cfg.samplePrefix);
    this.samplePrefix = prefix.text;
    for (const w of prefix.warnings) this.log(`--sample-prefix: ${w}`);
    // With local SGD the coordinator's optimizer is the outer one; the run's --optimizer runs on the workers.
    this.server = new ParameterServer(this.model, initialParams(cfg, this.model), isLocalSgd(cfg) ? outerOptimizerConfig(cfg) : cfg);
    this.schedule = new Schedule(this.corpus.train.length, cfg.batchSize, cfg.numSteps, cfg.partition, { seed: cfg.seed });
    this.streams = new StreamTable(cfg.batchSize, this.model.stateWidth);
    if (cfg.checkpointDir) await removeDeadTempFiles(cfg.checkpointDir, this.log);
    if (cfg.resume) await this.resume();
    if (this.schedule.peek().epoch >= cfg.epochs) {
      // Nothing to train: say so instead of opening a server that workers would join only to be sent away.
      this.finished = true;
      this.log(`resume: the run in ${cfg.checkpointDir} already finished (step ${this.optimizerSteps}, epoch ${this.schedule.peek().epoch} of --epochs ${cfg.epochs}); nothing to do (raise --epochs to train further)`);
      return 0;
    }
    this.metrics.learningRate.set(cfg.lr);
    this.metrics.info.set(
      {
        backend: this.deps.backend?.name ?? 'unknown',
        device: this.deps.backend?.device ?? 'cpu',
        version: VERSION,
        model: this.model.name,
        model_hyper: Object.entries(this.model.hyper).map(([k, v]) => `${k}=${v}`).join(','),
        tokenizer: `${this.tokenizer.name},min_freq=${this.tokenizer.minFreq}`,
      },
      1,
    );
    this.log(`model: ${this.model.summary} (tokens: ${this.tokenizer.label}), ${this.count} parameters; ${cfg.optimizer} lr ${cfg.lr}, clip ${cfg.clip}, batch ${cfg.batchSize} x ${cfg.numSteps}`);
    if (isLocalSgd(cfg)) {
      const outer = `${cfg.outerOptimizer} lr ${cfg.outerLr}${cfg.outerOptimizer === 'nesterov' ? ` momentum ${cfg.outerMomentum}` : ''}`;
      this.log(`local SGD: ${cfg.syncEvery} inner steps (${cfg.optimizer}, clipped there) per round on each worker, then outer ${outer} on the averaged change`);
    }

    const gradBytes = this.count * 4;
    const maxPayload = maxPayloadFor(this.count + cfg.batchSize * this.model.stateWidth, 0, 'float32');
    // Replies are received into the accumulator's memory, where a float32 gradient is summed without a copy;
    // the parameter server moves there too, so that the round's sum is averaged where it lies.
    const gradAcc = new GradAccumulator(this.count, rowSparseBlocks(this.model.blocks), maxPayload, this.server.simdBytes, FRAME_SLOTS);
    const host = gradAcc.hostRegion();
    if (host) this.server.moveInto(host.simd, host.at);
    this.gradAcc = gradAcc;
    this.ws = (this.deps.transport ?? ((o, h) => new WsServer(o, h)))(
      {
        host: cfg.host,
        port: cfg.port,
        tls: cfg.tlsCert && cfg.tlsKey ? { certFile: cfg.tlsCert, keyFile: cfg.tlsKey } : undefined,
        token: this.token,
        maxPayload,
        receiveBuffer: (n) => gradAcc.frameBuffer(n),
        receiveSlots: gradAcc,
        maxConnections: cfg.maxWorkers + 16,
        helloTimeoutMs: cfg.helloTimeout * 1000,
        heartbeatMs: cfg.heartbeatInterval * 1000,
        maxBufferedBytes: 8 * gradBytes + (this.corpus.train.length * 2),
        limits: {
          paramCount: this.count,
          maxTokenCount: cfg.batchSize * cfg.numSteps * cfg.syncEvery,
          stateCount: cfg.batchSize * this.model.stateWidth,
          rowSparse: rowSparseBlocks(this.model.blocks),
          gradsFinitenessChecked: true,
        },
        log: this.log,
      },
      {
        onHello: (msg, peer, remote) => this.onHello(msg, peer, remote),
        onMessage: (id, msg, bytes) => this.onMessage(id, msg, bytes),
        onClose: (id, reason) => this.onClose(id, reason),
        onReject: (code, remote) => this.onReject(code, remote),
      },
    );
    this.port = await this.ws.listen();
    this.log(`listening on ${this.ws.scheme}://${urlHost(cfg.host)}:${this.port}${cfg.host === '0.0.0.0' || cfg.host === '::' ? ' (all interfaces)' : ''} (min workers ${cfg.minWorkers}, max ${cfg.maxWorkers})`);
    return this.port;
  }

  private async resume(): Promise<void> {
    const dir = this.cfg.checkpointDir!;
    const ck = await readResumePoint(
      dir,
      { vocab: this.corpus.vocab.idxToToken, corpusSha1: this.corpusSha1, config: publicConfig(this.cfg, COORDINATOR_OPTIONS), model: this.model, streams: this.cfg.batchSize },
      TRAIN_KEYS,
      this.log,
    );
    if (!ck) {
      this.log(`resume: no checkpoint in ${dir} yet; starting fresh`);
      return;
    }
    this.server.setParams(ck.params);
    await this.server.loadOptimizerState(ck.optimizer.state);
    // A local SGD checkpoint counts its rounds (the parameter version) apart from its optimizer steps.
    this.server.version = ck.rounds ?? ck.step;
    this.optimizerSteps = ck.step;
    this.schedule = new Schedule(this.corpus.train.length, this.cfg.batchSize, this.cfg.numSteps, this.cfg.partition, {
      epoch: ck.epoch,
      batchIndex: ck.batchIndex,
      epochRngState: ck.epochRngState,
    });
    if (ck.streamState) this.streams.restore(ck.streamState);
    for (const h of ck.history ?? []) this.history.push({ ...h, time: 0 });
    this.lastCheckpointStep = ck.step;
    this.metrics.steps.inc(ck.step);
    this.metrics.rounds.inc(this.server.version);
    this.metrics.step.set(ck.step);
    this.metrics.epoch.set(ck.epoch);
    const writtenAt = Date.parse(ck.createdAt);
    if (Number.isFinite(writtenAt)) this.metrics.lastCheckpoint.set(writtenAt / 1000);
    this.log(`resume: step ${ck.step}, epoch ${ck.epoch}, batch ${ck.batchIndex} from ${dir}`);
  }

  private onReject(code: ErrorCode, remote: string): void {
    this.metrics.rejected.inc({ code });
    this.log(`refused ${remote}: ${code}`);
  }

  private onHello(msg: HelloMsg, peer: Peer, remote: string): HelloResult {
    if (this.stopping) return { ok: false, code: ErrorCodes.ERR_SHUTTING_DOWN, message: 'coordinator is shutting down' };
    if (this.membership.full) return { ok: false, code: ErrorCodes.ERR_TOO_MANY_CONNECTIONS, message: `--max-workers ${this.cfg.maxWorkers} reached` };
    const id = crypto.randomUUID();
    const m = this.membership.add(id, msg.info, peer, Date.now(), msg.capacity);
    // Encoded once per run, not per join: every welcome carries the same bytes.
    this.trainOnWire ??= tokensToWire(this.corpus.train, this.model.vocabSize);
    const { tokens, tokenWidth } = this.trainOnWire;
    peer.send(
      encode({
        type: 'welcome',
        version: PROTOCOL_VERSION,
        workerId: id,
        model: { name: this.model.name, hyper: { ...this.model.hyper }, vocabSize: this.model.vocabSize, numSteps: this.cfg.numSteps, paramCount: this.count, stateWidth: this.model.stateWidth },
        tokens,
        tokenWidth,
        wireDtype: this.cfg.wireDtype,
        heartbeatMs: this.cfg.heartbeatInterval * 1000,
        streams: this.cfg.batchSize,
        sparseRows: this.deps.sparseRows ?? true,
      }),
    );
    this.metrics.joins.inc();
    this.metrics.workersConnected.set(this.membership.workers);
    this.metrics.membershipEpoch.set(this.membership.epoch);
    const i = msg.info;
    this.metrics.workerInfo.set(workerInfoLabels(m), 1);
    if (m.relay) this.metrics.relayWorkers.set({ relay: m.slot }, m.capacity);
    this.log(`${m.relay ? `relay ${m.slot} (${m.capacity} workers)` : `worker ${m.slot}`} joined from ${remote} (${printable(i.name ?? `${i.host}:${i.pid}`)}, ${printable(i.backend)}/${printable(i.device)}); ${this.membership.size} connected`);
    if (this.paused && this.membership.workers < this.cfg.minWorkers) this.sendPause(m);
    return { ok: true, id };
  }

  private onMessage(id: string, msg: WorkerMessage, bytes: number): void {
    const m = this.membership.get(id);
    if (!m) return;
    m.lastSeen = Date.now();
    if (msg.type === 'grads') this.onGrads(m, msg, bytes);
    else if (msg.type === 'capacity') this.onCapacity(m, msg);
  }

  /** A relay's worker count: applied at the next round; with a round, it holds nothing for that one. */
  private onCapacity(m: Member, msg: CapacityMsg): void {
    if (!m.relay) {
      m.peer.send(encode({ type: 'error', code: ErrorCodes.ERR_BAD_MESSAGE, message: "'capacity' comes from relays only (a hello without a capacity is a worker)" }));
      m.peer.close(closeCodeFor(ErrorCodes.ERR_BAD_MESSAGE), ErrorCodes.ERR_BAD_MESSAGE);
      return;
    }
    if (m.capacity !== msg.capacity) this.log(`relay ${m.slot} carries ${msg.capacity} workers`);
    this.metrics.relayWorkers.set({ relay: m.slot }, msg.capacity);
    this.membership.setCapacity(m.id, msg.capacity);
    this.metrics.workersConnected.set(this.membership.workers);
    if (msg.round !== undefined && this.round?.id === msg.round) this.round.drop(m.id);
  }

  private onGrads(m: Member, msg: GradsMsg, bytes: number): void {
    this.metrics.gradBytes.inc(bytes);
    const round = this.round;
    const checked = round ? round.check(m.id, msg.round) : msg.round < this.roundId ? ErrorCodes.ERR_STALE_ROUND : ErrorCodes.ERR_FUTURE_ROUND;
    const early = checked && this.lastRound ? this.lastRound.reclassify(m.id, msg.round, checked) : checked;
    if (early || !round) {
      // The validator leaves the gradient's finiteness to the summing pass; a reply
      // that is not summed still gets that check, so a NaN is refused as ever.
      if (!tensorAllFinite(msg.grads) || (msg.rows ?? []).some((r) => !tensorAllFinite(r.values))) {
        this.refuse(m, ErrorCodes.ERR_NON_FINITE, 'grads.grads contains NaN or Infinity');
        return;
      }
      // Late replies are expected after a deadline: count them, apply nothing.
      this.metrics.rejected.inc({ code: early ?? ErrorCodes.ERR_STALE_ROUND });
      return;
    }
    const t0 = performance.now();
    const state = msg.state ? decodeTensor(msg.state, stateBufferOf(m, msg.state.length)) : undefined;
    const t1 = performance.now();
    const bad = round.accept({ workerId: m.id, round: msg.round, tokenCount: msg.tokenCount, lossSum: msg.lossSum, computeMs: msg.computeMs, grad: msg.grads, rows: msg.rows, state });
    if (this.breakdown) {
      const t2 = performance.now();
      this.breakdown.decodeMs += t1 - t0;
      this.breakdown.sumMs += t2 - t1;
      // Each accepted reply overwrites it: when the round ends it is the last one's.
      if (!bad) this.breakdown.lastReplyMs = t2 - t0;
    }
    // A reply for this round that does not fit it (token count, tensor size, a NaN)
    // is a protocol error like any other: the round must not wait for it until the deadline.
    if (bad === ErrorCodes.ERR_BAD_MESSAGE || bad === ErrorCodes.ERR_BAD_TENSOR) this.refuse(m, bad, `reply for round ${msg.round} does not match the streams it was given`);
    else if (bad === ErrorCodes.ERR_NON_FINITE) this.refuse(m, bad, 'grads.grads contains NaN or Infinity');
    else if (bad) this.metrics.rejected.inc({ code: bad });
  }

  private refuse(m: Member, code: ErrorCode, message: string): void {
    this.metrics.rejected.inc({ code });
    m.peer.send(encode({ type: 'error', code, message }));
    m.peer.close(closeCodeFor(code), code);
  }

  private onClose(id: string, reason: LeaveReason): void {
    const m = this.membership.remove(id);
    if (!m) return;
    this.round?.drop(id);
    this.streams.release(id);
    if (m.relay) this.metrics.relayWorkers.remove({ relay: m.slot });
    this.metrics.workerInfo.remove(workerInfoLabels(m));
    if (reason === 'leave' || reason === 'shutdown') this.metrics.leaves.inc();
    else this.metrics.failures.inc({ reason: reason === 'protocol' ? 'protocol' : reason === 'timeout' ? 'timeout' : 'disconnect' });
    this.metrics.workersConnected.set(this.membership.workers);
    this.metrics.membershipEpoch.set(this.membership.epoch);
    this.log(`${m.relay ? 'relay' : 'worker'} ${m.slot} left (${reason}); ${this.membership.size} connected`);
  }

  private sendPause(m: Member): void {
    m.peer.send(encode({ type: 'pause', reason: `waiting for workers: ${this.membership.workers} of ${this.cfg.minWorkers}`, workers: this.membership.workers, minWorkers: this.cfg.minWorkers }));
  }

  /** A round of `steps` inner steps (local SGD) waits `steps` times as long as one step would. */
  private roundDeadlineMs(steps: number): number {
    if (this.cfg.roundTimeout > 0) return this.cfg.roundTimeout * 1000 * steps;
    if (this.recentRoundMs.length < 3) return 120_000 * steps;
    const sorted = [...this.recentRoundMs].sort((a, b) => a - b);
    return Math.min(120_000, Math.max(5_000, 10 * sorted[Math.floor(sorted.length / 2)])) * steps;
  }

  /** Wait until membership changes or stop() is called; no busy loop, no timeout needed. */
  private waitForChange(): Promise<void> {
    return new Promise((resolve) => {
      const off = this.membership.onChange(() => {
        off();
        this.wake = null;
        resolve();
      });
      this.wake = () => {
        off();
        this.wake = null;
        resolve();
      };
    });
  }

  /** Train until the last epoch or stop(); returns after the final checkpoint. */
  async run(): Promise<RunSummary> {
    const cfg = this.cfg;
    this.observer.start();
    while (!this.stopping && this.schedule.peek().epoch < cfg.epochs) {
      const assignment = this.membership.assign(cfg.batchSize);
      // A relay counts the workers under it.
      const workers = assignment.reduce((n, a) => n + a.member.capacity, 0);
      if (workers < cfg.minWorkers) {
        if (!this.paused) {
          this.paused = true;
          this.metrics.paused.set(1);
          this.report.clear();
          this.log(`paused: ${workers} of ${cfg.minWorkers} workers connected; waiting`);
          for (const m of this.membership.list()) this.sendPause(m);
        }
        await this.waitForChange();
        continue;
      }
      if (this.paused) {
        this.paused = false;
        this.metrics.paused.set(0);
        this.log(`resumed with ${workers} workers`);
      }
      const before = this.optimizerSteps;
      const outcome = await this.runRound(assignment);
      this.finishRound(outcome);
      const every = cfg.checkpointEvery;
      // A local SGD round moves by K steps at once: a multiple of --checkpoint-every passed inside it counts.
      const due = every > 0 && (this.optimizerSteps % every === 0 || Math.floor(this.optimizerSteps / every) > Math.floor(before / every));
      if (cfg.checkpointDir && due && this.optimizerSteps !== this.lastCheckpointStep) {
        await this.checkpoint();
      }
    }
    const done = this.schedule.peek().epoch >= cfg.epochs;
    this.report.clear();
    let checkpoint: string | undefined;
    let checkpointFailed = false;
    if (cfg.checkpointDir && this.optimizerSteps !== this.lastCheckpointStep) {
      checkpoint = await this.checkpoint();
      checkpointFailed = checkpoint === undefined;
    } else if (cfg.checkpointDir) checkpoint = cfg.checkpointDir;
    const last = this.history.at(-1);
    this.log(done ? `done: ${this.optimizerSteps} steps, ${cfg.epochs} epochs` : `stopped at step ${this.optimizerSteps}`);
    await this.ws.close(done ? CloseCodes.TRAINING_DONE : CloseCodes.SHUTTING_DOWN, done ? 'training done' : 'coordinator shutting down');
    return { steps: this.optimizerSteps, epochs: this.schedule.peek().epoch, reason: done ? 'done' : 'stopped', finalTrainPerplexity: last?.trainPerplexity ?? NaN, checkpoint, checkpointFailed };
  }

  private async runRound(assignment: { member: Member; lo: number; hi: number }[]): Promise<RoundOutcome> {
    const cfg = this.cfg;
    const W = this.model.stateWidth;
    const local = isLocalSgd(cfg);
    // A local SGD round: the next K batches (fewer at the end of training), one inner step each.
    const batches = local ? this.schedule.ahead(cfg.syncEvery, cfg.epochs) : [this.schedule.peek()];
    this.roundBatches = batches;
    const { plan } = batches[0];
    const roundId = ++this.roundId;
    const t0 = performance.now();
    const b: RoundBreakdown = { round: roundId, workers: assignment.length, encodeMs: 0, sendMs: 0, waitMs: 0, decodeMs: 0, sumMs: 0, lastReplyMs: 0, clipMs: 0, optimizerMs: 0, slowestComputeMs: 0, totalMs: 0 };
    this.breakdown = b;
    // Encoded once per round, in place, into a frame no socket still holds; the same bytes go to every member.
    const paramsFrame = this.paramsFrames.build(this.server.version, this.server.params(), cfg.wireDtype);
    const paramsBytes = paramsFrame.bytes;
    const deadlineMs = this.roundDeadlineMs(batches.length);
    const expected = new Map<string, Expected>();
    let sent = 0;
    for (const { member, lo, hi } of assignment) {
      const rows = hi - lo;
      // Streams this worker did not compute last travel with their state.
      const { fresh, state } = this.streams.handOver(member.id, lo, hi, plan.resetState);
      const stepBytes = encode({
        type: 'step',
        round: roundId,
        paramsVersion: this.server.version,
        lo,
        hi,
        starts: plan.starts.slice(lo, hi),
        fresh,
        ...(state ? { state: encodeTensor(state, 'float32') } : {}),
        ...(local ? { local: innerSteps(batches, lo, hi, cfg) } : {}),
        ...(member.relay ? { deadlineMs: Math.ceil(deadlineMs) } : {}),
      });
      const ts = performance.now();
      member.peer.send(paramsBytes, paramsFrame.hold());
      member.peer.send(stepBytes);
      b.sendMs += performance.now() - ts;
      sent += paramsBytes.byteLength + stepBytes.byteLength;
      expected.set(member.id, { lo, hi, tokenCount: rows * cfg.numSteps * batches.length, stateLength: rows * W, partial: member.relay });
    }
    this.metrics.paramBytes.inc(sent);
    // A member may have gone between assign() and here; the round must not wait for it.
    b.encodeMs = performance.now() - t0 - b.sendMs;
    const tw = performance.now();
    this.gradAcc ??= new GradAccumulator(this.count, rowSparseBlocks(this.model.blocks));
    this.round = new Round(roundId, expected, this.count, deadlineMs, this.deps.clock ?? realClock, this.gradAcc);
    for (const id of expected.keys()) if (!this.membership.get(id)) this.round.drop(id);
    const outcome = await this.round.done;
    this.lastRound = this.round;
    this.round = null;
    b.waitMs = performance.now() - tw;
    return outcome;
  }

  private finishRound(o: RoundOutcome): void {
    const cfg = this.cfg;
    for (const id of o.late) {
      const m = this.membership.get(id);
      // A round aborted by a second stop signal: its workers were not late, and
      // they must hear 'shutting down' (and exit), not 'round timeout' (and reconnect).
      if (!m || this.stopping) continue;
      this.log(`worker ${m.slot} missed the round deadline (${Math.round(o.durationMs)} ms); dropping it`);
      this.streams.release(id);
      m.peer.close(CloseCodes.HEARTBEAT_TIMEOUT, ErrorCodes.ERR_ROUND_TIMEOUT);
    }
    for (const id of o.gone) this.streams.release(id);
    for (const [id, { lo, state }] of o.states) {
      // Round.accept refused any state whose length does not match the streams sent.
      this.streams.store(lo, state);
      const m = this.membership.get(id);
      if (m) {
        m.rounds++;
        const ms = o.computeMs.get(id);
        if (ms !== undefined) recordStepTime(m, ms);
        m.lastWaitMs = o.waitMs.get(id);
      }
    }
    for (const [id, ms] of o.computeMs) {
      const m = this.membership.get(id);
      if (!m) continue;
      // What its summed gradient covered, whether or not it sent its final state back.
      const tokens = o.tokensBy.get(id) ?? 0;
      m.tokens += tokens;
      this.observer.workerRound(m.slot, ms, o.waitMs.get(id) ?? 0, tokens);
    }
    if (o.tokens === 0) {
      // Nobody answered: the same batch is tried again with whoever is left.
      return;
    }
    const applied = this.server.apply(o.gradSum, o.tokens);
    const gradNorm = applied.gradNorm;
    const b = this.breakdown;
    if (b) {
      b.clipMs = applied.clipMs;
      b.optimizerMs = applied.optimizerMs;
      b.slowestComputeMs = Math.max(0, ...o.computeMs.values());
      b.totalMs = b.encodeMs + b.sendMs + b.waitMs + b.clipMs + b.optimizerMs;
      this.deps.onRound?.(b);
    }
    const batches = this.roundBatches;
    const n = batches.length;
    this.recentRoundMs.push(o.durationMs / n);
    if (this.recentRoundMs.length > 20) this.recentRoundMs.shift();
    const stepBefore = this.optimizerSteps;
    this.optimizerSteps += n;
    // The round's loss is one sum over its inner steps: the epochs they belong to share it by their steps.
    const share = (k: number) => ({ lossSum: (o.lossSum * k) / n, tokens: (o.tokens * k) / n });
    const inFirstEpoch = batches.filter((x) => x.epoch === batches[0].epoch).length;
    const { epoch, batchIndex, batchesInEpoch } = batches[n - 1];
    this.observer.roundApplied({
      step: this.optimizerSteps,
      innerSteps: n,
      epoch,
      epochs: cfg.epochs,
      batch: batchIndex + 1,
      batches: batchesInEpoch,
      lossSum: o.lossSum,
      tokens: o.tokens,
      epochShare: n === inFirstEpoch ? undefined : share(inFirstEpoch),
      durationMs: o.durationMs,
      gradNorm,
      workers: this.membership.workers,
    });
    // An epoch that ended inside a round has no parameters of its own: it is validated with the round's.
    let validation: number | undefined | null = null;
    const validate = () => (validation ??= this.validationPerplexity());
    batches.forEach((x, k) => {
      if (!this.schedule.advance()) return;
      this.endEpoch(x.epoch, stepBefore + k + 1, validate);
      if (k < n - 1) this.observer.addToEpoch(share(batches.filter((y) => y.epoch === x.epoch + 1).length));
    });
  }

  private validationPerplexity(): number | undefined {
    const cfg = this.cfg;
    return this.corpus.validation.length > cfg.numSteps + 1 ? perplexityOf(this.server.params(), this.model, this.corpus.validation, cfg.numSteps, cfg.batchSize) : undefined;
  }

  private endEpoch(epoch: number, step: number, validate: () => number | undefined): void {
    const cfg = this.cfg;
    const trainPerplexity = this.observer.endEpoch();
    const last = epoch + 1 === cfg.epochs;
    if ((epoch + 1) % cfg.logEvery === 0 || last || epoch === 0) {
      const tokensPerSecond = this.observer.tokensPerSecond();
      const validationPerplexity = validate();
      this.metrics.tokensPerSecond.set(tokensPerSecond);
      if (validationPerplexity !== undefined) this.metrics.validationPerplexity.set(validationPerplexity);
      const entry: LogEntry = { step, epoch: epoch + 1, trainPerplexity, validationPerplexity, tokensPerSecond, time: Date.now() };
      this.historyThinning.push(this.history, entry);
      this.report.line(entry, cfg.epochs, this.membership.workers);
      this.observer.restartInterval();
    }
    if (cfg.sampleEvery > 0 && ((epoch + 1) % cfg.sampleEvery === 0 || last)) {
      // Greedy is d2l's predict_ch8 (50 characters); drawn at a temperature, a longer sample shows more of what the model learnt.
      const t = cfg.sampleTemperature;
      this.lastSample = predict(this.server.params(), this.model, this.tokenizer, this.samplePrefix, t > 0 ? 100 : 50, { temperature: t, seed: cfg.seed + epoch });
      this.report.sample(this.lastSample, t);
    }
  }

  async checkpoint(): Promise<string | undefined> {
    const dir = this.cfg.checkpointDir;
    if (!dir) return undefined;
    try {
      const data = await assembleCheckpoint({
        server: this.server,
        schedule: this.schedule,
        model: this.model,
        vocab: this.corpus.vocab.idxToToken,
        corpusSha1: this.corpusSha1,
        config: publicConfig(this.cfg, COORDINATOR_OPTIONS),
        optimizer: isLocalSgd(this.cfg) ? outerOptimizerName(this.cfg) : this.cfg.optimizer,
        steps: this.optimizerSteps,
        ...(isLocalSgd(this.cfg) ? { rounds: this.server.version } : {}),
        streamState: this.streams.state,
        history: this.history.map(({ time: _t, ...h }) => h),
      });
      const path = await writeCheckpoint(dir, data);
      this.lastCheckpointStep = this.optimizerSteps;
      this.metrics.lastCheckpoint.set(Date.now() / 1000);
      return path;
    } catch (e) {
      // Training state in memory is intact; the previous checkpoint on disk is intact. Say so and go on.
      this.metrics.checkpointFailures.inc();
      this.log(`checkpoint failed: ${(e as Error).message}${e instanceof DptrainError ? ` (${e.code})` : ''}`);
      return undefined;
    }
  }

  /** Finish the round in flight, checkpoint, tell workers to leave. Idempotent; a second call aborts the round. */
  stop(reason: string): void {
    if (this.stopping) {
      this.round?.abort();
      return;
    }
    this.stopping = true;
    this.log(`stopping: ${reason}`);
    this.wake?.();
  }

  /** Free the model's tensors and the checkpoint directory's lock. */
  async dispose(): Promise<void> {
    this.server?.dispose();
    await this.dirLock?.release();
  }
}

/** A local SGD round's inner steps after the first, for streams [lo, hi), and the inner optimizer. */
function innerSteps(batches: ScheduledBatch[], lo: number, hi: number, cfg: CoordinatorConfig): LocalSteps {
  const rows = hi - lo;
  const rest = batches.slice(1);
  const starts = new Int32Array(rest.length * rows);
  rest.forEach((b, k) => starts.set(b.plan.starts.subarray(lo, hi), k * rows));
  return { starts, resets: Uint8Array.from(rest, (b) => (b.plan.resetState ? 1 : 0)), optimizer: cfg.optimizer, lr: cfg.lr, clip: cfg.clip };
}

/** A peer's own words, made safe for a log line: a newline in a worker name must not forge the next line. */
function printable(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, '?');
}

