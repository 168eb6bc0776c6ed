/**
 * Dropout masks between the layers of a stack, as a pure function of
 * (seed, step, stream, layer, time, unit): a counter-based hash, no generator
 * state. A worker computing streams 8..15 draws exactly the masks one process
 * draws for those rows, so N workers still equal one process, and a resumed
 * run draws the masks the uninterrupted run would have drawn.
 *
 * As d2l's deep RNN (PyTorch's `dropout` argument of nn.LSTM/GRU/RNN): on the
 * output of every layer but the last, independently at each time step,
 * inverted (kept units scaled by 1/(1 − p)), in training only.
 */

/** A bijective 32-bit mixer (lowbias32, from Chris Wellons' hash prospector). */
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** Chained: each value is mixed in at its own position, so (a, b) and (b, a) differ. */
function chain(h: number, v: number): number {
  return mix32((h ^ v) >>> 0);
}

export interface MaskKey {
  seed: number;
  step: number;
  /** The layer whose output the mask applies to (0 = between layers 0 and 1). */
  layer: number;
}

/**
 * The masks of one layer boundary for a batch, time-major (row t*B + r is
 * stream streams[r] at time t), width `units`: 0 for a dropped unit, 1/(1 − p)
 * for a kept one.
 */
export function dropoutMasks(key: MaskKey, streams: Int32Array, numSteps: number, units: number, p: number): Float32Array {
  if (!(p >= 0 && p < 1)) throw new RangeError(`dropout must be in [0, 1), got ${p}`);
  const B = streams.length;
  const out = new Float32Array(numSteps * B * units);
  const keep = 1 / (1 - p);
  // u < p · 2^32 drops the unit: probability p for a uniform 32-bit u.
  const threshold = p * 4294967296;
  const base = chain(chain(chain(0x5eed, key.seed >>> 0), key.step >>> 0), key.layer >>> 0);
  for (let t = 0; t < numSteps; t++) {
    const bt = chain(base, t);
    for (let r = 0; r < B; r++) {
      const bs = chain(bt, streams[r] >>> 0);
      const row = (t * B + r) * units;
      for (let j = 0; j < units; j++) out[row + j] = mix32((bs + Math.imul(j + 1, 0x9e3779b9)) >>> 0) < threshold ? 0 : keep;
    }
  }
  return out;
}
