import { Inject, Injectable } from '@nestjs/common';
import type { DataSource } from 'typeorm';
import { type BufferedEntry, TombstoneBuffer, timeOf } from './tombstone.buffer.js';
import { LIMITS, TOMBSTONE_OPTIONS } from '../tombstone.constants.js';
import type { ResolvedMissLogOptions, ResolvedTombstoneOptions } from '../tombstone.options.js';
import { TombstoneTable } from '../table/tombstone.table.js';
import { isStorableKey, isStorableScope, isValidType } from '../tombstone.validation.js';

interface PendingMiss extends BufferedEntry {
  scope: string;
  type: string;
  key: string;
  first: number;
  referrer: string | null;
}

const PRINTABLE_ASCII = /^[\x20-\x7e]+$/;

// One statement per batch. Rows are inserted in key order, so that two instances flushing the
// same keys lock them in the same order. The newest referrer wins; a miss without one keeps
// the last known.
const UPSERT_SQL = `
  INSERT INTO tombstone_misses AS m (scope, resource_type, resource_key, hits, first_seen, last_seen, last_referrer)
  SELECT u.* FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[], $6::timestamptz[], $7::text[])
           AS u(scope, type, key, hits, first_seen, last_seen, referrer)
   -- A key that got a tombstone meanwhile (an operator resolved the miss) is no miss any more.
   WHERE NOT EXISTS (SELECT 1 FROM tombstones t
                      WHERE t.scope = u.scope AND t.resource_type = u.type AND t.resource_key = u.key
                        AND (t.expires_at IS NULL OR t.expires_at > now()))
   ORDER BY 1, 2, 3
  ON CONFLICT (scope, resource_type, resource_key) DO UPDATE SET
    hits = m.hits + EXCLUDED.hits,
    first_seen = LEAST(m.first_seen, EXCLUDED.first_seen),
    last_seen = GREATEST(m.last_seen, EXCLUDED.last_seen),
    last_referrer = CASE WHEN EXCLUDED.last_seen >= m.last_seen
                         THEN COALESCE(EXCLUDED.last_referrer, m.last_referrer)
                         ELSE COALESCE(m.last_referrer, EXCLUDED.last_referrer) END`;

// Retention and the row cap, at most $3 rows per write, from both ends of the (last_seen, id)
// index: the oldest past retention, and whatever lies beyond the $2 most recently seen. A write
// adds at most maxPending rows and $3 is twice that: a table within the cap stays within it
// (any row deleted counts against the excess), and one over it (maxRows lowered) shrinks.
const TRIM_SQL = `
  DELETE FROM tombstone_misses WHERE id IN (
    SELECT id FROM (
      (SELECT id FROM tombstone_misses WHERE last_seen < now() - make_interval(days => $1::int)
        ORDER BY last_seen, id LIMIT $3)
      UNION
      (SELECT id FROM tombstone_misses ORDER BY last_seen DESC, id DESC OFFSET $2 LIMIT $3)
    ) AS doomed LIMIT $3)`;

/**
 * Logs the 404s that no tombstone explained, per (scope, type, key), in `tombstone_misses`:
 * how often, first and last seen, and the last referrer. Those are the broken links worth a
 * tombstone (or a redirect). Off unless the module's `missLog` option is set.
 *
 * Memory and disk stay bounded under a flood of random keys: at most `missLog.maxPending` keys
 * wait in memory (misses of further keys are dropped and counted), and each write deletes rows
 * not seen for `missLog.retentionDays` and the least recently seen beyond `missLog.maxRows`.
 *
 * @example
 * TombstoneModule.forRoot({ missLog: { maxRows: 50_000, retentionDays: 14 } });
 * // The most missed keys of the last week:
 * await dataSource.query(`SELECT resource_type, resource_key, hits, last_referrer FROM tombstone_misses
 *                          WHERE last_seen > now() - interval '7 days' ORDER BY hits DESC LIMIT 50`);
 */
@Injectable()
export class TombstoneMissLog extends TombstoneBuffer<PendingMiss> {
  private readonly limits: ResolvedMissLogOptions | false;

  constructor(@Inject(TOMBSTONE_OPTIONS) options: ResolvedTombstoneOptions, table: TombstoneTable) {
    super(options.missLog, { option: 'missLog', entries: 'tombstone misses', events: 'misses' }, () => table.dataSource);
    this.limits = options.missLog;
  }

  /**
   * Counts one miss of (scope, type, key), at `at`. Synchronous: it only touches memory. A key,
   * scope or type that could not be stored (too long, NUL characters) is not logged; the
   * referrer is kept only when it is printable ASCII, cut to 512 characters.
   */
  record(scope: string, type: string, key: string, referrer?: unknown, at: Date = new Date()): void {
    if (!this.enabled || !isValidType(type) || !isStorableKey(key) || !isStorableScope(scope)) return;
    const ms = timeOf(at);
    this.add(`${scope}\u0000${type}\u0000${key}`, { scope, type, key, count: 1, first: ms, last: ms, referrer: referrerOf(referrer) });
  }

  protected override merge(into: PendingMiss, from: PendingMiss): void {
    if (from.referrer !== null && (into.referrer === null || from.last >= into.last)) into.referrer = from.referrer;
    into.first = Math.min(into.first, from.first);
    super.merge(into, from);
  }

  protected async write(misses: PendingMiss[], dataSource: DataSource): Promise<void> {
    const iso = (ms: number) => new Date(ms).toISOString();
    await dataSource.query(UPSERT_SQL, [
      misses.map((miss) => miss.scope),
      misses.map((miss) => miss.type),
      misses.map((miss) => miss.key),
      misses.map((miss) => miss.count),
      misses.map((miss) => iso(miss.first)),
      misses.map((miss) => iso(miss.last)),
      misses.map((miss) => miss.referrer),
    ]);
    if (this.limits === false) return;
    // The misses are written: a failed trim is only logged (the next write trims again).
    try {
      await dataSource.query(TRIM_SQL, [this.limits.retentionDays, this.limits.maxRows, 2 * this.limits.maxPending]);
    } catch (error) {
      this.logger.error(`Could not trim tombstone_misses: ${(error as Error)?.message ?? String(error)}`, (error as Error)?.stack);
    }
  }
}

/** A referrer worth storing: printable ASCII (no control characters), cut to 512 characters; else null. */
export function referrerOf(value: unknown): string | null {
  if (typeof value !== 'string' || !PRINTABLE_ASCII.test(value)) return null;
  return value.slice(0, LIMITS.referrerLength);
}
