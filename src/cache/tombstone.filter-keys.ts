import type { TombstoneTable } from '../table/tombstone.table.js';

// What the membership filter reads from the table, and how large it may grow.

/** What `TombstoneLookup.stats()` reports. */
export interface TombstoneLookupStats {
  /**
   * `off`: no cache (option, or the notification triggers are missing); `waiting`: not listening
   * for changes (starting, or the connection is lost), so every miss is a query; `coherent`.
   */
  state: 'off' | 'waiting' | 'coherent';
  /** Answers held by the store. */
  entries: number;
  /** Lookups answered by the filter, by the store, and by the database, since start. */
  filtered: number;
  cached: number;
  queried: number;
  filter: {
    /** `false` while it is (re)loaded, or when it is off: lookups then skip it. */
    ready: boolean;
    /** Distinct keys added to it (loaded, then announced), against the capacity it was sized for. */
    keys: number;
    capacity: number;
    bytes: number;
    /** How long its last full load took, in milliseconds. */
    lastLoadMs: number | null;
  };
}

export const LOAD_BATCH = 50_000;
// Only tombstones that answer something other than a plain 404: a hidden key must cost exactly
// what a key that never existed costs, so it is not in the filter (no query tells them apart).
const LOAD_SQL = `
  SELECT id, scope, resource_type, resource_key FROM tombstones
   WHERE id > $1 AND kind <> 'hidden' AND (expires_at IS NULL OR expires_at > now())
   ORDER BY id LIMIT ${LOAD_BATCH}`;
const LOAD_PAIR_SQL = `
  SELECT resource_key FROM tombstones
   WHERE scope = $1 AND resource_type = $2 AND resource_key > $3 AND kind <> 'hidden'
     AND (expires_at IS NULL OR expires_at > now())
   ORDER BY resource_key LIMIT ${LOAD_BATCH}`;
// The planner's row count: free, and close enough to size the filter.
const ESTIMATE_SQL = `SELECT GREATEST(reltuples, 0)::bigint AS n FROM pg_class WHERE oid = to_regclass($1)`;

/** The planner's estimate of the table's rows (0 when it has none yet). */
export async function estimateKeys(table: TombstoneTable): Promise<number> {
  const [estimate] = (await table.dataSource.query(ESTIMATE_SQL, [table.qualifiedName])) as { n: string }[];
  return Number(estimate?.n ?? 0);
}

/** The next batch of keys that belong in the filter, in id order after `after`. */
export async function readKeys(table: TombstoneTable, after: string): Promise<{ id: string; scope: string; resource_type: string; resource_key: string }[]> {
  return (await table.dataSource.query(LOAD_SQL, [after])) as { id: string; scope: string; resource_type: string; resource_key: string }[];
}

/** The next batch of one (scope, type)'s keys that belong in the filter, in key order after `after`. */
export async function readPairKeys(table: TombstoneTable, scope: string, type: string, after: string): Promise<{ resource_key: string }[]> {
  return (await table.dataSource.query(LOAD_PAIR_SQL, [scope, type, after])) as { resource_key: string }[];
}

export /** The most keys a filter of `bloomfilter` (2^32 bits at most) holds at this false-positive rate. */
function maxCapacity(falsePositiveRate: number): number {
  return Math.floor((0.99 * 2 ** 32 * Math.LN2) / -Math.log2(falsePositiveRate));
}
