/**
 * The benchmark parts, in the order `all` runs them and BENCHMARKS.md lists
 * them (`summary` runs last whenever it is selected with others: it reads
 * their results). To add one: write bench/NAME.ts exporting a BenchPart (see
 * bench/lib/types.ts and bench/step.ts), then add it to this list.
 */
import type { BenchPart } from './lib/types.js';
import { summaryPart } from './summary.js';
import { stepPart } from './step.js';
import { d2lPart } from './d2l.js';
import { modelsPart } from './models.js';
import { wordmodelPart } from './wordmodel.js';
import { scalingPart } from './scaling.js';
import { faninPart } from './fanin.js';
import { fleetPart } from './fleet.js';
import { memoryPart } from './memory.js';
import { wirePart } from './wire.js';
import { ttpPart, ttpAdamPart, ttpFullPart } from './ttp.js';
import { slowlinkPart } from './slowlink.js';
import { browserPart } from './browser.js';

export const PARTS: BenchPart[] = [
  summaryPart,
  stepPart,
  d2lPart,
  modelsPart,
  wordmodelPart,
  scalingPart,
  faninPart,
  fleetPart,
  wirePart,
  ttpPart,
  ttpAdamPart,
  ttpFullPart,
  slowlinkPart,
  memoryPart,
  browserPart,
];
