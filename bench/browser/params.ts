/** Deterministic parameters and a batch for a step, the same in Node and in the browser. */
export function initialParamsFor(paramCount: number, vocab: number, rows: number, numSteps: number, seed: number) {
  let s = seed >>> 0 || 1;
  const rnd = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
  const params = new Float32Array(paramCount);
  for (let i = 0; i < paramCount; i++) params[i] = (rnd() - 0.5) * 0.2;
  const x = new Int32Array(rows * numSteps);
  const y = new Int32Array(rows * numSteps);
  for (let i = 0; i < x.length; i++) {
    x[i] = Math.floor(rnd() * vocab);
    y[i] = Math.floor(rnd() * vocab);
  }
  return { params, x, y };
}
