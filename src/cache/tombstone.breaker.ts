import { Logger } from '@nestjs/common';
import type { ResolvedCircuitBreakerOptions } from '../tombstone.options.js';

/** Lookups that may wait for a turn on the database; past it, a lookup fails at once (404). */
const MAX_WAITING = 10_000;

/**
 * What a lookup is refused with while the circuit is open: the miss gets the plain 404 at once.
 * Not logged per request: the breaker logs its changes of state instead.
 */
export class TombstoneCircuitOpenError extends Error {
  override readonly name = 'TombstoneCircuitOpenError';

  constructor() {
    super('the circuit breaker is open: lookups do not reach the database');
  }
}

export type TombstoneCircuitState = 'closed' | 'open' | 'half-open';

/**
 * The way a lookup reaches the database: within its time budget (`lookupTimeoutMs`), on one of
 * `maxConcurrentLookups` turns, and through a circuit breaker.
 *
 * Closed, every lookup runs, and `failures` failed in a row (an error or a timeout) open the
 * circuit. Open, lookups are refused at once: no connection asked for, no wait, the plain 404.
 * After the cool-down, half-open: one lookup at a time probes the database while the others are
 * still refused; a probe that answers closes the circuit, one that fails opens it again for twice
 * the cool-down (at most `maxCooldownMs`). A lookup that started before the circuit last opened
 * changes nothing when it ends. Each change of state is logged once; a closed circuit costs a
 * lookup a few field reads.
 */
export class TombstoneBreaker {
  state: TombstoneCircuitState = 'closed';
  /** Lookups refused since the circuit opened, for the log line that says it closed. */
  refused = 0;
  private failures = 0;
  /** Changes each time the circuit opens: only lookups started since then (the probe) count. */
  private epoch = 0;
  private probing = false;
  private cooldownMs = 0;
  private openedAt = 0;
  private openUntil = 0;
  private readonly threshold: number;
  /** One instance: a refusal costs no stack trace. */
  private readonly refusal = new TombstoneCircuitOpenError();
  /** Lookups on the database now, and those waiting for their turn (oldest first). */
  private active = 0;
  private readonly queue: { start: () => void; fail: (error: Error) => void; deadline: number }[] = [];

  constructor(
    private readonly settings: ResolvedCircuitBreakerOptions | false,
    private readonly timeoutMs: number,
    private readonly maxActive: number,
    private readonly logger: Pick<Logger, 'log' | 'warn'> = new Logger('TombstoneModule'),
    /** A monotonic clock: `Date.now()` may be stopped or set back (tests, NTP), this is not. */
    readonly now: () => number = () => performance.now(),
  ) {
    this.threshold = settings ? settings.failures : Infinity;
  }

  /**
   * Runs a database lookup, or refuses it (rejects with `TombstoneCircuitOpenError`, at once)
   * while the circuit is open. It rejects after `lookupTimeoutMs` if the database has not
   * answered (the query itself is not stopped).
   */
  run<T>(lookup: () => Promise<T>): Promise<T> {
    if (this.state !== 'closed' && !this.admit()) return Promise.reject(this.refusal);
    const epoch = this.epoch;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        const error = new Error(`lookup timed out after ${this.timeoutMs} ms`);
        if (epoch === this.epoch) this.failed(error);
        reject(error);
      }, this.timeoutMs);
      timer.unref?.();
      this.turn(lookup).then(
        (value) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          // A lookup that started before the circuit last opened says nothing about the database now.
          if (epoch === this.epoch) {
            if (this.state === 'closed') this.failures = 0;
            else this.close();
          }
          resolve(value);
        },
        (error: unknown) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          if (epoch === this.epoch) this.failed(error);
          reject(error);
        },
      );
    });
  }

  /** Open: the cool-down is over, and no probe is running. Counts the refusals. */
  private admit(): boolean {
    if (this.state === 'open' && this.now() >= this.openUntil) {
      this.state = 'half-open';
      this.logger.log('Tombstone lookups: circuit half-open, one lookup probes the database.');
    }
    if (this.state === 'half-open' && !this.probing) return (this.probing = true);
    this.refused++;
    return false;
  }

  /** A lookup of the current epoch failed: when the circuit is not closed, that is the probe. */
  private failed(error: unknown): void {
    if (this.state !== 'closed' || ++this.failures >= this.threshold) this.open(error);
  }

  private open(error: unknown): void {
    const { cooldownMs, maxCooldownMs } = this.settings as ResolvedCircuitBreakerOptions;
    const reason = (error as Error)?.message ?? String(error);
    const now = this.now();
    if (this.state === 'closed') {
      this.openedAt = now;
      this.refused = 0;
      this.cooldownMs = cooldownMs;
      this.logger.warn(
        `Tombstone lookups: circuit open after ${this.failures} failed lookups in a row (the last: ${reason}). ` +
          `Misses that need the database get the plain 404 without a query for ${this.cooldownMs} ms, then one lookup probes it.`,
      );
    } else {
      this.cooldownMs = Math.min(maxCooldownMs, 2 * this.cooldownMs);
      this.logger.warn(`Tombstone lookups: circuit open again, the probe failed (${reason}); the next probe in ${this.cooldownMs} ms.`);
    }
    this.state = 'open';
    this.epoch++;
    this.probing = false;
    this.openUntil = now + this.cooldownMs;
  }

  private close(): void {
    const seconds = ((this.now() - this.openedAt) / 1000).toFixed(1);
    this.logger.log(
      `Tombstone lookups: circuit closed, the database answers again (open for ${seconds} s; ${this.refused} lookups got the plain 404 without a query).`,
    );
    this.state = 'closed';
    this.failures = 0;
    this.probing = false;
  }

  /**
   * Runs a lookup when fewer than `maxConcurrentLookups` are running; otherwise it waits its
   * turn, and gives up (throws) if that takes longer than `lookupTimeoutMs` or too many wait. So
   * the module never holds more of the DataSource's pool than that, however slow the database.
   */
  private async turn<T>(run: () => Promise<T>): Promise<T> {
    if (this.active >= this.maxActive) {
      if (this.queue.length >= MAX_WAITING) throw new Error(`${MAX_WAITING} lookups are already waiting for the database`);
      // The slot is handed over by the lookup that frees it (see `release`).
      await new Promise<void>((start, fail) => this.queue.push({ start, fail, deadline: Date.now() + this.timeoutMs }));
    } else {
      this.active++;
    }
    try {
      return await run();
    } finally {
      this.release();
    }
  }

  private release(): void {
    for (;;) {
      const next = this.queue.shift();
      if (next === undefined) {
        this.active--;
        return;
      }
      if (Date.now() <= next.deadline) return next.start();
      next.fail(new Error(`waited more than ${this.timeoutMs} ms for one of ${this.maxActive} lookup connections`));
    }
  }
}
