import { Inject, Injectable } from '@nestjs/common';
import type { DataSource } from 'typeorm';
import { type BufferedEntry, TombstoneBuffer, timeOf } from './tombstone.buffer.js';
import { TOMBSTONE_OPTIONS } from '../tombstone.constants.js';
import type { ResolvedTombstoneOptions } from '../tombstone.options.js';
import { TombstoneTable } from '../table/tombstone.table.js';

interface PendingHits extends BufferedEntry {
  id: string;
}

/** A tombstone id as PostgreSQL prints a positive bigint (18 digits stay below 2^63). */
const TOMBSTONE_ID = /^[1-9][0-9]{0,17}$/;

// One statement per batch, whatever its size. GREATEST ignores NULL: the first hit sets it.
// The ids are sorted, so that two instances flushing the same rows lock them in the same order.
const FLUSH_SQL = `
  UPDATE tombstones t
     SET hit_count = t.hit_count + v.n, last_hit_at = GREATEST(t.last_hit_at, v.at)
    FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[]) AS v(id, n, at)
   WHERE t.id = v.id`;

/**
 * Counts the answers tombstones give, in `tombstones.hit_count` and `last_hit_at`. The
 * miss resolver records a hit for every answer that came from a tombstone (410, redirect, hidden
 * 404); the counts wait in memory and are written in one `UPDATE` per batch: every
 * `hitCounts.flushIntervalMs`, as soon as `hitCounts.maxPending` tombstones are waiting, and at
 * application shutdown (call `app.enableShutdownHooks()` so that SIGTERM shuts down).
 *
 * @example
 * // Stale tombstones: not answered for 90 days.
 * await dataSource.query(`SELECT * FROM tombstones WHERE last_hit_at IS NULL OR last_hit_at < now() - interval '90 days'`);
 * // A lookup of your own that should count too:
 * const resolution = await tombstones.resolve('article', slug);
 * if (resolution.state !== 'none') hits.record(resolution.id);
 */
@Injectable()
export class TombstoneHitCounter extends TombstoneBuffer<PendingHits> {
  constructor(@Inject(TOMBSTONE_OPTIONS) options: ResolvedTombstoneOptions, table: TombstoneTable) {
    super(options.hitCounts, { option: 'hitCounts', entries: 'tombstone hit counts', events: 'hits' }, () => table.dataSource);
  }

  /**
   * Counts one answer of the tombstone `id` (from `TombstoneService.resolve()`), at `at`.
   * Synchronous and O(1): it only touches memory. Ids that are not a tombstone id are ignored.
   */
  record(id: string, at?: Date): void {
    if (!this.enabled || typeof id !== 'string') return;
    const last = at === undefined ? Date.now() : timeOf(at);
    // The commonest case, a tombstone answered again before the next write: one map read.
    if (this.bump(id, last)) return;
    if (TOMBSTONE_ID.test(id)) this.add(id, { id, count: 1, last });
  }

  protected async write(hits: PendingHits[], dataSource: DataSource): Promise<void> {
    hits.sort((a, b) => a.id.length - b.id.length || (a.id < b.id ? -1 : 1));
    await dataSource.query(FLUSH_SQL, [
      hits.map((hit) => hit.id),
      hits.map((hit) => hit.count),
      hits.map((hit) => new Date(hit.last).toISOString()),
    ]);
  }
}
