/** Splitting a local SGD round (`step.local`) among a relay's workers. */
/** Rows [a, b) of each of `steps` blocks of `rows` row starts (a local SGD round's further inner steps). */
export function sliceSteps(starts: Int32Array, steps: number, rows: number, a: number, b: number): Int32Array {
  const out = new Int32Array(steps * (b - a));
  for (let k = 0; k < steps; k++) out.set(starts.subarray(k * rows + a, k * rows + b), k * (b - a));
  return out;
}
