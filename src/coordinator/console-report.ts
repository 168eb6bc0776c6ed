/**
 * What a person watching the coordinator sees: one line per log interval,
 * a progress line on a TTY, and d2l-style samples.
 */
import type { LogEntry } from './coordinator.js';

function fmtRate(tps: number): string {
  return tps >= 1000 ? `${(tps / 1000).toFixed(1)}k` : tps.toFixed(0);
}

export class ConsoleReporter {
  private drawn = false;

  constructor(
    private readonly log: (line: string) => void,
    private readonly tty: NodeJS.WriteStream | null,
  ) {}

  progress(epoch: number, epochs: number, batch: number, batches: number, ppl: number, tps: number, workers: number): void {
    if (!this.tty) return;
    const width = 20;
    const filled = Math.round((batch / batches) * width);
    const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
    this.tty.write(`\r\x1b[2Kepoch ${epoch + 1}/${epochs} [${bar}] ${batch}/${batches}  ppl ${ppl.toFixed(2)}  ${fmtRate(tps)} tokens/s  ${workers} workers`);
    this.drawn = true;
  }

  clear(): void {
    if (this.tty && this.drawn) this.tty.write('\r\x1b[2K');
    this.drawn = false;
  }

  line(e: LogEntry, epochs: number, workers: number): void {
    this.clear();
    const val = e.validationPerplexity === undefined ? '' : `  val ppl ${e.validationPerplexity.toFixed(2)}`;
    this.log(`epoch ${e.epoch}/${epochs}  step ${e.step}  train ppl ${e.trainPerplexity.toFixed(2)}${val}  ${fmtRate(e.tokensPerSecond ?? 0)} tokens/s  ${workers} workers`);
  }

  sample(text: string): void {
    this.clear();
    this.log(`sample: ${text}`);
  }
}
