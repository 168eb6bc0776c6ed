/** The relay's own round deadline when --round-timeout is 0: 5x the median of its last 20 rounds, 2.5 s to 60 s (half the coordinator's default). */
export class RoundTimes {
  private readonly recent: number[] = [];

  constructor(private readonly configuredMs: number) {}

  record(ms: number): void {
    this.recent.push(ms);
    if (this.recent.length > 20) this.recent.shift();
  }

  deadlineMs(): number {
    if (this.configuredMs > 0) return this.configuredMs;
    if (this.recent.length < 3) return 60_000;
    const sorted = [...this.recent].sort((a, b) => a - b);
    return Math.min(60_000, Math.max(2_500, 5 * sorted[sorted.length >> 1]));
  }
}
