/**
 * What a person watching the coordinator sees: one line per log interval,
 * a progress line on a TTY, and d2l-style samples.
 */
import { urlHost } from '../shared/listen.js';
import type { LogEntry, RunSummary } from './coordinator.js';
import type { CoordinatorConfig } from '../shared/config.js';

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

  sample(text: string, temperature = 0): void {
    this.clear();
    this.log(temperature > 0 ? `sample (drawn at temperature ${temperature}): ${text}` : `sample: ${text}`);
  }
}

/** What the closing lines need of a finished or stopped run. */
export interface ClosingRun {
  cfg: Pick<CoordinatorConfig, 'epochs' | 'spawn' | 'checkpointDir' | 'metricsHost' | 'metricsPort' | 'samplePrefix' | 'sampleTemperature' | 'corpus'>;
  history: readonly LogEntry[];
  lastSample: string;
  startedAt: number;
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function fmtElapsed(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

/**
 * The last lines of `coordinator start`: the final validation perplexity, the
 * last sample, where the status page was, and, for a local (--spawn) run,
 * one line of what to try next.
 */
export function closingLines(run: ClosingRun, summary: Pick<RunSummary, 'reason' | 'steps' | 'epochs'>, now = Date.now()): string[] {
  const { cfg } = run;
  const lines: string[] = [];
  const last = run.history.at(-1);
  const lastVal = [...run.history].reverse().find((h) => h.validationPerplexity !== undefined);
  const how = summary.reason === 'done' ? 'finished' : 'stopped';
  const val = lastVal?.validationPerplexity !== undefined ? `validation perplexity ${lastVal.validationPerplexity.toFixed(2)}${lastVal.epoch !== last?.epoch ? ` (at epoch ${lastVal.epoch})` : ''}` : 'no validation perplexity (validation split too small)';
  const train = last ? `, train perplexity ${last.trainPerplexity.toFixed(2)}` : '';
  lines.push(`${how}: ${val}${train} after ${summary.epochs} of ${cfg.epochs} epochs, ${summary.steps} steps, ${fmtElapsed(now - run.startedAt)}`);
  if (run.lastSample) {
    const t = cfg.sampleTemperature;
    lines.push(`last sample${t > 0 ? ` (drawn at temperature ${t})` : ' (greedy)'}: ${run.lastSample}`);
  }
  if (cfg.metricsPort >= 0) {
    const where = cfg.metricsPort > 0 ? `http://${urlHost(cfg.metricsHost)}:${cfg.metricsPort}/` : 'the address printed at the start';
    lines.push(`status page: ${where} (live charts while a run trains; it closes with the run)`);
  }
  if (cfg.spawn > 0) {
    const tries: string[] = [];
    if (cfg.checkpointDir) {
      const t = cfg.sampleTemperature > 0 ? cfg.sampleTemperature : 0.6;
      tries.push(`npx dptrain generate --checkpoint ${shellQuote(cfg.checkpointDir)} --prefix ${shellQuote(cfg.samplePrefix)} --length 200 --temperature ${t}`);
    }
    if (cfg.metricsPort >= 0) tries.push('the status page while a run trains');
    if (cfg.corpus !== 'timemachine') tries.push('the d2l setup: npx dptrain coordinator start --corpus timemachine --spawn 2');
    tries.push('more machines: README "Multi-machine"');
    lines.push(`try next: ${tries.join('  |  ')}`);
  }
  return lines;
}
