/**
 * How often a line that a request can cause is logged: up to `burst` at once, then one per
 * `intervalMs`, so that a flood of bad requests never becomes a flood of log lines. The next line
 * logged says how many were not.
 */
export class LogBudget {
  private budget: number;
  private last = 0;
  private skipped = 0;

  constructor(
    private readonly burst = 10,
    private readonly intervalMs = 1000,
  ) {
    this.budget = burst;
  }

  /**
   * Whether a line may be logged now: `undefined` when not (it is counted), otherwise how many
   * were not logged since the last one.
   */
  take(): number | undefined {
    const now = Date.now();
    this.budget = Math.min(this.burst, this.budget + (now - this.last) / this.intervalMs);
    this.last = now;
    if (this.budget < 1) {
      this.skipped++;
      return undefined;
    }
    this.budget--;
    const skipped = this.skipped;
    this.skipped = 0;
    return skipped;
  }
}
