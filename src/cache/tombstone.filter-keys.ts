import { BloomFilter } from 'bloomfilter';

// What the membership filter is, what it reads from the table, and how large it may grow.

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
    /** Where its last full load came from: the stored snapshot (and the rows changed since), or the whole table. */
    lastLoadFrom: 'snapshot' | 'table' | null;
    /** Rows of the tombstone table its last full load read. */
    lastLoadRows: number | null;
  };
}

/** What the loads send their SQL to: the DataSource, or one connection of it (a QueryRunner). */
export interface Queryable {
  query(sql: string, parameters?: unknown[]): Promise<unknown>;
}

/**
 * A Bloom filter and the salt its values are hashed with: a filter read from a snapshot keeps the
 * salt it was built with, so every filter carries its own.
 */
/**
 * The part of `bloomfilter`'s BloomFilter the module uses. Declared here so that the module's
 * .d.ts files do not name that package, which ships no types of its own.
 */
export interface BloomBits {
  readonly m: number;
  readonly k: number;
  readonly buckets: Uint32Array;
  add(value: string): void;
  test(value: string): boolean;
}

export class SaltedFilter {
  /** Distinct keys added (a key added twice, or announced and read, counts once). */
  keys = 0;

  constructor(
    readonly bloom: BloomBits,
    /** Keeps an attacker from crafting keys that collide in the filter (FNV is not keyed). */
    readonly salt: string,
    /** The keys it was sized for. */
    readonly capacity: number,
    /** When the reads of the whole table it descends from began (the database's clock). */
    readonly builtAt: Date,
  ) {}

  has(id: string): boolean {
    return this.bloom.test(this.salt + id);
  }

  add(id: string): void {
    const value = this.salt + id;
    if (this.bloom.test(value)) return;
    this.bloom.add(value);
    this.keys++;
  }
}

/** (scope, type, key) as the filter holds it. */
export function keyId(scope: string, type: string, key: string): string {
  return `${scope}\u0000${type}\u0000${key}`;
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
// The rows changed by the transactions a snapshot's watermark (a `pg_snapshot`) did not see as
// committed: those that began after it ($1, its xmax) and those it saw running ($2, its xip);
// at most $3 of each (more: the snapshot is not worth it). Two index scans, the first in index
// order so that it stops at the limit whatever the planner thinks of the range. Hidden and
// expired rows are read too, and counted: they are work all the same. Ids from this database's
// future were not written here (a restored dump keeps the source's): they were in the table
// before any snapshot of this database was built.
const CHANGED_SQL = `
  (SELECT scope, resource_type, resource_key, kind <> 'hidden' AND (expires_at IS NULL OR expires_at > now()) AS listed
     FROM tombstones
    WHERE changed_xid >= $1::xid8 AND changed_xid < pg_snapshot_xmax(pg_current_snapshot())
    ORDER BY changed_xid LIMIT $3)
  UNION ALL
  (SELECT scope, resource_type, resource_key, kind <> 'hidden' AND (expires_at IS NULL OR expires_at > now())
     FROM tombstones
    WHERE changed_xid = ANY ($2::xid8[])
    LIMIT $3)`;
const COUNT_CHANGED_SQL = `
  SELECT count(*)::int AS n FROM (
    (SELECT 1 FROM tombstones WHERE changed_xid >= $1::xid8 AND changed_xid < pg_snapshot_xmax(pg_current_snapshot())
      ORDER BY changed_xid LIMIT $3)
    UNION ALL
    (SELECT 1 FROM tombstones WHERE changed_xid = ANY ($2::xid8[]) LIMIT $3)) AS c`;
// The planner's row count: free, and close enough to size the filter.
const ESTIMATE_SQL = `SELECT GREATEST(reltuples, 0)::bigint AS n FROM pg_class WHERE oid = to_regclass($1)`;
// The transactions committed now, and the time: what they committed is seen by any read that
// starts after this one; any other was running, or begins later.
const WATERMARK_SQL = `SELECT pg_current_snapshot()::text AS watermark, now() AS at`;

type KeyRow = { id: string; scope: string; resource_type: string; resource_key: string };

/** The planner's estimate of the table's rows (0 when it has none yet). */
export async function estimateKeys(db: Queryable, qualifiedName: string): Promise<number> {
  const [estimate] = (await db.query(ESTIMATE_SQL, [qualifiedName])) as { n: string }[];
  return Number(estimate?.n ?? 0);
}

/** The next batch of keys that belong in the filter, in id order after `after`. */
export async function readKeys(db: Queryable, after: string): Promise<KeyRow[]> {
  return (await db.query(LOAD_SQL, [after])) as KeyRow[];
}

/** The next batch of one (scope, type)'s keys that belong in the filter, in key order after `after`. */
export async function readPairKeys(db: Queryable, scope: string, type: string, after: string): Promise<{ resource_key: string }[]> {
  return (await db.query(LOAD_PAIR_SQL, [scope, type, after])) as { resource_key: string }[];
}

/** The parts of a watermark (`pg_snapshot` as text, `xmin:xmax:xip,…`) that the reads of the changes take. */
function unseen(watermark: string): [string, string[]] {
  const match = /^(\d+):(\d+):((?:\d+(?:,\d+)*)?)$/.exec(watermark);
  if (!match) throw new Error(`not a pg_snapshot: ${JSON.stringify(watermark)}`);
  return [match[2], match[3] === '' ? [] : match[3].split(',')];
}

/**
 * Up to `limit` rows changed by the transactions `watermark` did not see as committed (and up to
 * `limit` more of those it saw running), with whether each belongs in the filter.
 */
export async function readChanged(db: Queryable, watermark: string, limit: number): Promise<(Omit<KeyRow, 'id'> & { listed: boolean })[]> {
  return (await db.query(CHANGED_SQL, [...unseen(watermark), limit])) as (Omit<KeyRow, 'id'> & { listed: boolean })[];
}

/** How many rows changed since `watermark`, counted up to about `limit`. */
export async function countChanged(db: Queryable, watermark: string, limit: number): Promise<number> {
  const [row] = (await db.query(COUNT_CHANGED_SQL, [...unseen(watermark), limit])) as { n: number }[];
  return row.n;
}

/** A watermark for reads that start after this call (see WATERMARK_SQL), and the database's time. */
export async function readWatermark(db: Queryable): Promise<{ watermark: string; at: Date }> {
  const [row] = (await db.query(WATERMARK_SQL)) as { watermark: string; at: Date }[];
  return row;
}

/**
 * Reads every key that belongs in the filter into `filter`, in batches of 50,000 by id; answers
 * the rows read, or `null` when `current()` turned false between two batches (the load is
 * abandoned). Batches may each see a later state of the table: a row changed meanwhile is
 * announced, and a row that was never changed is read by exactly one batch.
 */
export async function readAllKeys(db: Queryable, filter: SaltedFilter, current: () => boolean): Promise<number | null> {
  let rows = 0;
  let after = '0';
  for (;;) {
    const batch = await readKeys(db, after);
    if (!current()) return null;
    for (const row of batch) filter.add(keyId(row.scope, row.resource_type, row.resource_key));
    rows += batch.length;
    if (batch.length < LOAD_BATCH) return rows;
    after = batch[batch.length - 1].id;
  }
}

/** An empty filter for `capacity` keys at this false-positive rate. */
export function emptyFilter(capacity: number, falsePositiveRate: number, salt: string, builtAt: Date): SaltedFilter {
  return new SaltedFilter(BloomFilter.withTargetError(capacity, falsePositiveRate), salt, capacity, builtAt);
}

/** The number of bits and of hashes `BloomFilter.withTargetError(capacity, rate)` makes, without making it. */
export function filterShape(capacity: number, falsePositiveRate: number): { bits: number; hashes: number } {
  const m = Math.ceil((-capacity * Math.log2(falsePositiveRate)) / Math.LN2);
  return { bits: Math.ceil(m / 32) * 32, hashes: Math.ceil((Math.LN2 * m) / capacity) };
}

/** The keys the filter is sized for: twice what there are, within the bounds. */
export function capacityFor(keys: number, minCapacity: number, falsePositiveRate: number): number {
  return Math.min(Math.max(minCapacity, 2 * keys), maxCapacity(falsePositiveRate));
}

/** The most keys a filter of `bloomfilter` (2^32 bits at most) holds at this false-positive rate. */
export function maxCapacity(falsePositiveRate: number): number {
  return Math.floor((0.99 * 2 ** 32 * Math.LN2) / -Math.log2(falsePositiveRate));
}
