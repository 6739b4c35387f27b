import { type BeforeApplicationShutdown, Logger, type OnApplicationShutdown } from '@nestjs/common';
import type { DataSource } from 'typeorm';

/** What every buffered entry carries: how many events it stands for, and when the last one was. */
export interface BufferedEntry {
  count: number;
  /** Epoch milliseconds. */
  last: number;
}

export interface BufferSettings {
  flushIntervalMs: number;
  maxPending: number;
}

/** How log messages name a buffer: its option, its entries and its events. */
export interface BufferNames {
  option: 'hitCounts' | 'missLog';
  /** e.g. 'tombstone hit counts'. */
  entries: string;
  /** e.g. 'hits'. */
  events: string;
}

/**
 * Events counted in memory and written in batches, so that a request never waits for a write:
 *
 * - bounded: at most `maxPending` entries; events of further entries are dropped, counted, and
 *   logged once by the next write;
 * - written `flushIntervalMs` after the first pending event, at once when `maxPending` is
 *   reached, and at application shutdown;
 * - one write at a time, and a write takes its entries out of memory before it starts: an event
 *   is pending or in exactly one write, never counted twice;
 * - a failed write is logged and its entries are merged back (within the same bound), to be
 *   written by the next one.
 */
export abstract class TombstoneBuffer<E extends BufferedEntry> implements BeforeApplicationShutdown, OnApplicationShutdown {
  protected readonly logger = new Logger('TombstoneModule');
  private entries = new Map<string, E>();
  private dropped = 0;
  private droppedSinceStart = 0;
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private queued?: Promise<void>;
  private closed = false;

  protected constructor(
    private readonly settings: BufferSettings | false,
    private readonly names: BufferNames,
    private readonly dataSource: () => DataSource,
  ) {}

  /** Entries waiting to be written; never more than `maxPending`. */
  get pendingCount(): number {
    return this.entries.size;
  }

  /** Events dropped since the last write because `maxPending` entries were already waiting. */
  get droppedCount(): number {
    return this.dropped;
  }

  /** Events dropped since the app started (what a health check reports: it does not reset). */
  get droppedTotal(): number {
    return this.droppedSinceStart;
  }

  /**
   * Writes everything pending now. Resolves when it is written, or when the write failed: the
   * error is logged and the entries wait for the next write. Never rejects.
   */
  flush(): Promise<void> {
    if (this.queued) return this.queued;
    const queued: Promise<void> = (this.running ?? Promise.resolve()).then(async () => {
      this.queued = undefined;
      this.running = queued;
      try {
        await this.writePending();
      } finally {
        if (this.running === queued) this.running = undefined;
      }
    });
    return (this.queued = queued);
  }

  /** While the DataSource is still open: `app.close()`, or a signal with `enableShutdownHooks()`. */
  async beforeApplicationShutdown(): Promise<void> {
    await this.flush();
  }

  async onApplicationShutdown(): Promise<void> {
    // Requests that were still being answered while the HTTP server closed counted after the
    // flush above. Their DataSource may be closed already (hook order follows module order).
    if (this.entries.size > 0) {
      if (this.dataSource().isInitialized) await this.flush();
      else this.logger.warn(`${this.entries.size} ${this.names.entries} were not written: the DataSource closed first.`);
    }
    this.closed = true;
    clearTimeout(this.timer);
  }

  protected get enabled(): boolean {
    return this.settings !== false && !this.closed;
  }

  /** Counts one event (or several, `entry.count`) of `key`. Synchronous and O(1); never throws. */
  protected add(key: string, entry: E): void {
    if (this.settings === false || this.closed) return;
    const existing = this.entries.get(key);
    if (existing !== undefined) {
      this.merge(existing, entry);
      return;
    }
    if (this.entries.size >= this.settings.maxPending) {
      this.dropped += entry.count;
      this.droppedSinceStart += entry.count;
      return;
    }
    this.entries.set(key, entry);
    if (this.entries.size >= this.settings.maxPending) void this.flush();
    else this.schedule();
  }

  /**
   * Counts one more event of a key that is waiting already, in place (no allocation): `false`
   * when the key is not waiting (then `add()` it).
   */
  protected bump(key: string, last: number): boolean {
    const existing = this.entries.get(key);
    if (existing === undefined) return false;
    existing.count++;
    if (last > existing.last) existing.last = last;
    return true;
  }

  /** Folds `from` into `into`, whichever is older. */
  protected merge(into: E, from: E): void {
    into.count += from.count;
    into.last = Math.max(into.last, from.last);
  }

  /** Writes a batch (distinct keys) in as few statements as possible; throws if it was not written. */
  protected abstract write(entries: E[], dataSource: DataSource): Promise<void>;

  private async writePending(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.dropped > 0 && this.settings !== false) {
      const { option, entries, events } = this.names;
      this.logger.warn(
        `${this.dropped} ${events} were not recorded: ${this.settings.maxPending} ${entries} were already waiting ` +
          `to be written (${option}.maxPending).`,
      );
      this.dropped = 0;
    }
    if (this.entries.size === 0) return;
    const batch = this.entries;
    this.entries = new Map();
    try {
      await this.write([...batch.values()], this.dataSource());
    } catch (error) {
      this.logger.error(
        `Could not write ${batch.size} ${this.names.entries}; they are kept for the next write: ${(error as Error)?.message ?? String(error)}`,
        (error as Error)?.stack,
      );
      this.restore(batch);
    }
    if (this.entries.size > 0) this.schedule();
  }

  /** Merges a batch that could not be written back in, within the bound; never triggers a write. */
  private restore(batch: Map<string, E>): void {
    if (this.settings === false) return;
    for (const [key, entry] of batch) {
      const existing = this.entries.get(key);
      if (existing !== undefined) this.merge(existing, entry);
      else if (this.entries.size < this.settings.maxPending) this.entries.set(key, entry);
      else {
        this.dropped += entry.count;
        this.droppedSinceStart += entry.count;
      }
    }
  }

  private schedule(): void {
    if (this.timer !== undefined || this.settings === false || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.settings.flushIntervalMs);
    // Pending counts never keep a process alive; shutdown hooks write them.
    this.timer.unref();
  }
}

/** Epoch milliseconds of a Date; an invalid one counts as now. */
export function timeOf(at: Date): number {
  const ms = at instanceof Date ? at.getTime() : Number.NaN;
  return Number.isFinite(ms) ? ms : Date.now();
}
