/** Small numeric and formatting helpers shared by the parts. */

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function mean(xs: readonly number[]): number {
  return xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Milliseconds taken by f (performance.now()). */
export function timeMs(f: () => void): number {
  const t0 = performance.now();
  f();
  return performance.now() - t0;
}

/** Fixed decimals, with thousands separators for large values. */
export function fmt(x: number, digits = 0): string {
  if (!Number.isFinite(x)) return String(x);
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** Significant-figure formatting for values of any magnitude. */
export function sig(x: number, figures = 3): string {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  const digits = Math.max(0, figures - 1 - Math.floor(Math.log10(Math.abs(x))));
  return fmt(x, digits);
}

export function pct(x: number, digits = 0): string {
  return `${fmt(100 * x, digits)}%`;
}

/** A markdown table; `align` per column: 'l' | 'r'. */
export function table(head: string[], rows: (string | number)[][], align?: ('l' | 'r')[]): string {
  const a = align ?? head.map((_, i) => (i === 0 ? 'l' : 'r'));
  const line = (cells: (string | number)[]) => `| ${cells.map(String).join(' | ')} |`;
  return [line(head), `|${a.map((x) => (x === 'r' ? '---:' : ':---')).join('|')}|`, ...rows.map(line)].join('\n');
}

const BARS = '▁▂▃▄▅▆▇█';

/** Unicode sparkline of `values`, optionally on a log scale. */
export function sparkline(values: readonly number[], log = false): string {
  const v = values.map((x) => (log ? Math.log(x) : x));
  const lo = Math.min(...v);
  const hi = Math.max(...v);
  return v.map((x) => BARS[hi === lo ? 0 : Math.round(((x - lo) / (hi - lo)) * (BARS.length - 1))]).join('');
}

/** Evenly spaced picks (the last value always included) to shorten a long series. */
export function downsample<T>(xs: readonly T[], n: number): T[] {
  if (xs.length <= n) return [...xs];
  const out: T[] = [];
  for (let k = 1; k <= n; k++) out.push(xs[Math.round((k * xs.length) / n) - 1]);
  return out;
}

export interface Sample {
  /** Wall-clock milliseconds. */
  wallMs: number;
  /** CPU milliseconds of this process (user + system), all threads. */
  cpuMs: number;
}

/** Wall-clock and process CPU time of f. */
export function measure(f: () => void): Sample {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  f();
  const wallMs = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { wallMs, cpuMs: (c.user + c.system) / 1000 };
}

/**
 * For work on one thread: min(wall clock, process CPU time). Both bound the
 * thread's own time from above: the wall clock also counts waiting for a core
 * held by another process, CPU time also counts the runtime's helper threads.
 */
export function computeMs(s: Sample): number {
  return Math.min(s.wallMs, s.cpuMs);
}

/** Linear-interpolated quantile, q in [0, 1]. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

export function sum(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

/** Bytes with a binary-free decimal unit (kB = 1e3, MB = 1e6, GB = 1e9). */
export function bytes(n: number, digits = 3): string {
  const units: [number, string][] = [[1e9, 'GB'], [1e6, 'MB'], [1e3, 'kB']];
  for (const [u, name] of units) if (Math.abs(n) >= u) return `${sig(n / u, digits)} ${name}`;
  return `${fmt(n)} B`;
}
