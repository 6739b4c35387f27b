/** What one check of a probe found: its value, or why not; and how long it took. */
export type ProbeOutcome<T> = ({ ok: true; value: T } | { ok: false; error: unknown; timedOut: boolean }) & {
  /** Milliseconds the check waited. */
  readonly ms: number;
  /** The outcome of an earlier check, kept for `cacheMs`. */
  readonly cached: boolean;
};

/**
 * A check that reaches the database, made safe to call from a health endpoint that anyone may
 * scrape as often as they like:
 *
 * - its outcome is kept for `cacheMs`, and callers in between share it;
 * - concurrent callers share one check;
 * - a check waits at most `timeoutMs`, and the work it started is never started again while it
 *   is still on its way: a database that does not answer holds one query of the pool, never one
 *   per scrape.
 */
export class HealthProbe<T> {
  /** The work on its way: it may outlive the check that started it (a timeout). */
  private running?: Promise<T>;
  private checking?: Promise<ProbeOutcome<T>>;
  private last?: { at: number; outcome: ProbeOutcome<T> };

  constructor(
    private readonly work: () => Promise<T>,
    /** A monotonic clock. */
    private readonly now: () => number = () => performance.now(),
  ) {}

  check(timeoutMs: number, cacheMs: number): Promise<ProbeOutcome<T>> {
    const last = this.last;
    if (last !== undefined && this.now() - last.at < cacheMs) return Promise.resolve({ ...last.outcome, cached: true });
    this.checking ??= this.run(timeoutMs).then((outcome) => {
      this.last = { at: this.now(), outcome };
      this.checking = undefined;
      return outcome;
    });
    return this.checking;
  }

  private async run(timeoutMs: number): Promise<ProbeOutcome<T>> {
    const started = this.now();
    const ms = () => Math.round(this.now() - started);
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    try {
      this.running ??= this.work().finally(() => (this.running = undefined));
      const value = await Promise.race([
        this.running,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            timedOut = true;
            reject(new Error(`no answer within ${timeoutMs} ms`));
          }, timeoutMs);
          timer.unref();
        }),
      ]);
      return { ok: true, value, ms: ms(), cached: false };
    } catch (error) {
      return { ok: false, error, timedOut, ms: ms(), cached: false };
    } finally {
      clearTimeout(timer);
    }
  }
}
