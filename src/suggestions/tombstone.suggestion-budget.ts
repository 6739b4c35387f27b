/** In a flood, one suggestion query per this many misses that want suggestions: 0.1 per 1,000. */
export const FLOOD_MISSES_PER_QUERY = 10_000;
/** A second with more than this many misses that want suggestions, per query a second allowed, is a flood. */
export const FLOOD_FACTOR = 20;

/**
 * How many suggestion queries an instance may run. In quiet times, a token bucket: `burst`
 * queries at once, refilled at `perSecond`. In a flood (a second with more than
 * `FLOOD_FACTOR × perSecond` misses that want suggestions, or the second before it), only one
 * query per `FLOOD_MISSES_PER_QUERY` such misses, whatever the time: so a flood of any rate costs
 * at most the bucket it started with and 0.1 query per 1,000 requests. `now` is a clock in
 * milliseconds (a test passes its own).
 */
export class SuggestionBudget {
  private tokens: number;
  private refilledAt: number;
  /** Misses that wanted suggestions in the current second, and in the one before. */
  private second: number;
  private thisSecond = 0;
  private lastSecond = 0;
  /** Flood credit: a query's worth once it reaches 1. */
  private credit = 0;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.refilledAt = now();
    this.second = Math.floor(this.refilledAt / 1000);
  }

  /**
   * A miss wants suggestions (every one counts towards telling a flood): whether it may run a
   * query now, spent when `true`. `idle`: whether a query could run at all (none is running).
   */
  take(idle = true): boolean {
    const now = this.now();
    this.count(now);
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.refilledAt) * this.perSecond) / 1000);
    this.refilledAt = now;
    if (Math.max(this.thisSecond, this.lastSecond) > FLOOD_FACTOR * this.perSecond) {
      this.credit = Math.min(1, this.credit + 1 / FLOOD_MISSES_PER_QUERY);
      if (this.credit < 1 || !idle) return false;
      this.credit = 0;
      return true;
    }
    if (this.tokens < 1 || !idle) return false;
    this.tokens--;
    return true;
  }

  private count(now: number): void {
    const second = Math.floor(now / 1000);
    if (second !== this.second) {
      this.lastSecond = second === this.second + 1 ? this.thisSecond : 0;
      this.thisSecond = 0;
      this.second = second;
    }
    this.thisSecond++;
  }
}
