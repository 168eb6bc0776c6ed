/**
 * The benchmark parts, in the order `all` runs them and BENCHMARKS.md lists
 * them. To add one: write bench/NAME.ts exporting a BenchPart (see
 * bench/lib/types.ts and bench/step.ts), then add it to this list.
 */
import type { BenchPart } from './lib/types.js';
import { stepPart } from './step.js';
import { d2lPart } from './d2l.js';

export const PARTS: BenchPart[] = [
  stepPart,
  d2lPart,
];
