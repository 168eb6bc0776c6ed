/**
 * The contract between bench/run.ts and a benchmark part.
 *
 * A part is a module in bench/ that exports a BenchPart object (listed in
 * bench/parts.ts): a name, a title, optional flags, and a run() that
 * measures and returns a Section: markdown for BENCHMARKS.md plus a
 * JSON-able result object for bench/results/NAME.json. The runner adds the
 * environment header (date, machine, Node, tfjs, backend) to both.
 */
import type { BackendInfo } from '../../src/shared/backend.js';

export type FlagValue = string | number | boolean;

export interface FlagSpec {
  type: 'string' | 'number' | 'boolean';
  describe: string;
  default?: FlagValue;
}

export interface Section {
  /** Markdown body of the section, without the header the runner writes. */
  markdown: string;
  /** Raw numbers; must survive JSON.stringify (no typed arrays, no NaN you care about). */
  result: Record<string, unknown>;
}

export interface BenchPart {
  /** Marker and file name: lowercase letters, digits and dashes. */
  name: string;
  title: string;
  /** One line for `run.ts --help`. */
  summary: string;
  /** Part-specific flags (--name value), on top of the runner's own. */
  flags?: Record<string, FlagSpec>;
  run(ctx: BenchContext): Promise<Section>;
}

/** Where and on what a part runs; recorded in every section's header. */
export interface EnvInfo {
  date: string;
  cpu: string;
  cores: number;
  memoryGiB: number;
  os: string;
  node: string;
  tfjs: string;
  backend: string;
  backendPackage: string;
  backendVersion: string;
  /** e.g. "SIMD on, 1 thread" for wasm; '' when there is nothing to add. */
  backendDetail: string;
  /** os.loadavg() when the part started: other processes share the cores. */
  loadAverage: number[];
}

export interface BenchContext {
  backend: BackendInfo;
  env: EnvInfo;
  repoRoot: string;
  /** The runner's --data-dir, or $DPTRAIN_DATA_DIR, or ./data. */
  dataDir: string;
  /** Flag values, defaults applied (declared flags of this part and the runner's). */
  flag<T extends FlagValue>(name: string): T;
  /** Progress line on stderr. */
  log(line: string): void;
}
