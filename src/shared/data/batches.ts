/**
 * Minibatch plans with the semantics of d2l's `seq_data_iter_sequential` and
 * `seq_data_iter_random`. A plan holds only the start of each row, so the
 * coordinator can send a worker its few row starts instead of token data, and
 * any shard of streams can be gathered independently.
 */
import { DptrainError } from '../errors.js';
import type { Rng } from './rng.js';

export type Partition = 'sequential' | 'random';

export interface BatchPlan {
  /** Row r covers inputs tokens[starts[r] .. starts[r]+numSteps) and targets shifted by one. */
  starts: Int32Array;
  /** Hidden state must not carry into this batch: every random batch, and the first sequential one. */
  resetState: boolean;
}

export interface EpochPlan {
  offset: number;
  batches: BatchPlan[];
}

function checkShape(numTokens: number, batchSize: number, numSteps: number, partition: Partition): void {
  for (const [name, v] of [
    ['batch size', batchSize],
    ['number of steps', numSteps],
  ] as const) {
    if (!Number.isInteger(v) || v < 1) throw new DptrainError('ERR_BAD_CONFIG', `The ${name} must be a positive integer, got ${v}.`);
  }
  if (partition !== 'sequential' && partition !== 'random') {
    throw new DptrainError('ERR_BAD_CONFIG', `The partition must be "sequential" or "random", got ${JSON.stringify(partition)}.`);
  }
  // Checked against the largest possible offset before any draw, so the error does not depend on the seed.
  const needed = minTokens(batchSize, numSteps, partition);
  if (!Number.isInteger(numTokens) || numTokens < needed) {
    throw new DptrainError(
      'ERR_CORPUS_TOO_SMALL',
      `The training corpus has ${numTokens} tokens but batch size ${batchSize} with ${numSteps} steps (${partition} partition) ` +
        `needs at least ${needed}; use a larger corpus or --max-tokens, or a smaller batch size or step count.`,
    );
  }
}

/** batchSize*numSteps inputs, one more for the last target, and room for the largest random offset. */
function minTokens(batchSize: number, numSteps: number, partition: Partition): number {
  return batchSize * numSteps + 1 + maxOffset(numSteps, partition);
}

function maxOffset(numSteps: number, partition: Partition): number {
  return partition === 'sequential' ? numSteps : numSteps - 1;
}

function countBatches(numTokens: number, batchSize: number, numSteps: number, partition: Partition, offset: number): number {
  if (partition === 'sequential') {
    const rowLen = Math.floor((numTokens - offset - 1) / batchSize);
    return Math.floor(rowLen / numSteps);
  }
  const numSubseqs = Math.floor((numTokens - offset - 1) / numSteps);
  return Math.floor(numSubseqs / batchSize);
}

/**
 * The count depends on the epoch's random offset; without `offset` this is
 * the count for the largest offset, i.e. the fewest any epoch can have (an
 * epoch may have one more).
 */
export function batchesPerEpoch(
  numTokens: number,
  batchSize: number,
  numSteps: number,
  partition: Partition,
  offset?: number,
): number {
  checkShape(numTokens, batchSize, numSteps, partition);
  return countBatches(numTokens, batchSize, numSteps, partition, offset ?? maxOffset(numSteps, partition));
}

/** Plans one epoch. Draws from rng exactly as d2l does, so the plan is reproducible from the rng state. */
export function planEpoch(numTokens: number, batchSize: number, numSteps: number, partition: Partition, rng: Rng): EpochPlan {
  checkShape(numTokens, batchSize, numSteps, partition);
  return partition === 'sequential'
    ? planSequential(numTokens, batchSize, numSteps, rng)
    : planRandom(numTokens, batchSize, numSteps, rng);
}

function planSequential(numTokens: number, batchSize: number, numSteps: number, rng: Rng): EpochPlan {
  const offset = rng.int(0, numSteps);
  // d2l reshapes corpus[offset : offset + rowLen*batchSize] to (batchSize, rowLen) and walks its columns.
  const rowLen = Math.floor((numTokens - offset - 1) / batchSize);
  const numBatches = Math.floor(rowLen / numSteps);
  const batches: BatchPlan[] = [];
  for (let i = 0; i < numBatches; i++) {
    const starts = new Int32Array(batchSize);
    for (let r = 0; r < batchSize; r++) starts[r] = offset + r * rowLen + i * numSteps;
    batches.push({ starts, resetState: i === 0 });
  }
  return { offset, batches };
}

function planRandom(numTokens: number, batchSize: number, numSteps: number, rng: Rng): EpochPlan {
  const offset = rng.int(0, numSteps - 1);
  const numSubseqs = Math.floor((numTokens - offset - 1) / numSteps);
  const initial = new Int32Array(numSubseqs);
  for (let k = 0; k < numSubseqs; k++) initial[k] = k * numSteps;
  rng.shuffle(initial);
  const numBatches = Math.floor(numSubseqs / batchSize);
  const batches: BatchPlan[] = [];
  for (let i = 0; i < numBatches; i++) {
    const starts = new Int32Array(batchSize);
    for (let r = 0; r < batchSize; r++) starts[r] = initial[i * batchSize + r] + offset;
    batches.push({ starts, resetState: true });
  }
  return { offset, batches };
}

/** Materialises the rows whose starts are given (pass starts.subarray(lo, hi) for a shard): X and Y are (rows x numSteps), row-major. */
export function gatherRows(tokens: Int32Array, starts: ArrayLike<number>, numSteps: number): { x: Int32Array; y: Int32Array } {
  const rows = starts.length;
  const x = new Int32Array(rows * numSteps);
  const y = new Int32Array(rows * numSteps);
  for (let r = 0; r < rows; r++) {
    const s = starts[r];
    if (!Number.isInteger(s) || s < 0 || s + numSteps >= tokens.length) {
      throw new RangeError(`row start ${s} with ${numSteps} steps does not fit in ${tokens.length} tokens`);
    }
    x.set(tokens.subarray(s, s + numSteps), r * numSteps);
    y.set(tokens.subarray(s + 1, s + numSteps + 1), r * numSteps);
  }
  return { x, y };
}

/**
 * Contiguous ranges keep each worker on the same streams every batch, which
 * is what lets sequential partitioning carry hidden state per worker.
 * Earlier parts take the remainder: 32 over 3 gives [0,11), [11,22), [22,32).
 */
export function splitStreams(batchSize: number, parts: number): Array<[number, number]> {
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new DptrainError('ERR_BAD_CONFIG', `The batch size must be a positive integer, got ${batchSize}.`);
  }
  if (!Number.isInteger(parts) || parts < 1 || parts > batchSize) {
    throw new DptrainError(
      'ERR_BAD_CONFIG',
      `Cannot split a batch of ${batchSize} streams into ${parts} parts; use between 1 and ${batchSize} workers.`,
    );
  }
  const base = Math.floor(batchSize / parts);
  const extra = batchSize % parts;
  const ranges: Array<[number, number]> = [];
  let lo = 0;
  for (let p = 0; p < parts; p++) {
    const hi = lo + base + (p < extra ? 1 : 0);
    ranges.push([lo, hi]);
    lo = hi;
  }
  return ranges;
}
