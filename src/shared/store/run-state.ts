/**
 * A training run <-> a checkpoint: what a checkpoint is assembled from, and
 * what a resume reads back and checks before anything is applied.
 */
import { DptrainError, ErrorCodes } from '../errors.js';
import type { ModelDescriptor } from '../model/descriptor.js';
import type { Schedule } from '../data/schedule.js';
import type { ParameterServer } from '../train/param-server.js';
import { CHECKPOINT_FORMAT, checkCompatible, readCheckpoint, tokenizerField, type CheckpointData, type HistoryEntry } from './checkpoint.js';

/** Everything of a run that a checkpoint holds. */
export interface RunState {
  server: ParameterServer;
  schedule: Schedule;
  model: ModelDescriptor;
  vocab: readonly string[];
  corpusSha1: string;
  /** The effective config (JSON-safe, no secrets). */
  config: Record<string, unknown>;
  optimizer: string;
  /** Every stream's carried state, batch x stateWidth. */
  streamState: Float32Array;
  history: HistoryEntry[];
}

export async function assembleCheckpoint(s: RunState): Promise<CheckpointData> {
  const pos = s.schedule.position();
  return {
    format: CHECKPOINT_FORMAT,
    createdAt: new Date().toISOString(),
    step: s.server.version,
    epoch: pos.epoch,
    batchIndex: pos.batchIndex,
    epochRngState: pos.epochRngState,
    rngState: s.schedule.rngState(),
    params: s.server.params(),
    optimizer: { name: s.optimizer, state: await s.server.optimizerState() },
    vocab: [...s.vocab],
    tokenizer: tokenizerField(s.config),
    corpusSha1: s.corpusSha1,
    config: s.config,
    streamState: s.streamState,
    model: { name: s.model.name, hyper: { ...s.model.hyper } },
    history: s.history,
  };
}

/**
 * The checkpoint in `dir` to resume from, checked against this run (corpus,
 * vocabulary, the config keys that define the model and the data order, the
 * stream state's size); null when the directory holds none yet.
 */
export async function readResumePoint(
  dir: string,
  expect: { vocab: readonly string[]; corpusSha1: string; config: Record<string, unknown>; model: ModelDescriptor; streams: number },
  keys: string[],
  log: (line: string) => void,
): Promise<CheckpointData | null> {
  let ck: CheckpointData;
  try {
    ck = await readCheckpoint(dir, { log });
  } catch (e) {
    if (e instanceof DptrainError && e.code === 'ERR_CHECKPOINT_NOT_FOUND') return null;
    throw e;
  }
  checkCompatible(ck, { vocab: [...expect.vocab], corpusSha1: expect.corpusSha1, config: expect.config, paramCount: expect.model.paramCount }, keys);
  const want = expect.streams * expect.model.stateWidth;
  if (ck.streamState && ck.streamState.length !== want) {
    throw new DptrainError(
      ErrorCodes.ERR_CHECKPOINT_MISMATCH,
      `The checkpoint's stream state holds ${ck.streamState.length} values, but batch ${expect.streams} x state width ${expect.model.stateWidth} need ${want}.`,
    );
  }
  return ck;
}
