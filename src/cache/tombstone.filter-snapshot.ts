import { createHash } from 'node:crypto';
import { BloomFilter } from 'bloomfilter';
import { filterShape, maxCapacity, type Queryable, SaltedFilter } from './tombstone.filter-keys.js';
import type { ResolvedFilterOptions } from '../tombstone.options.js';

// The stored copy of the membership filter (migration CreateTombstoneFilterSnapshot1765152000000):
// how it is read, checked and written. Which instance writes it, and when, is the loader's.

/** A snapshot this old (since the whole table was read for it) is built again. */
export const SNAPSHOT_MAX_AGE_MS = 6 * 3_600_000;
/** Slices the bits are read in, so that no string of the driver grows past what V8 holds. */
const CHUNK_BYTES = 8 * 1024 * 1024;

/**
 * How the bits are laid out and hashed: 32-bit buckets, little-endian, of the `bloomfilter`
 * package, and a fingerprint of its hashing. A release of the package that hashed differently
 * would read a snapshot written by this one wrongly: it then does not match, and is not used.
 */
export const SNAPSHOT_FORMAT = (() => {
  const probe = new BloomFilter(2_097_248, 7);
  for (const value of ['nestjs-tombstones', 'scope\u0000type\u0000key', 'é✓😀']) probe.add(value);
  return `bloomfilter/le32/${createHash('sha256').update(bytesOf(probe)).digest('hex').slice(0, 16)}`;
})();

/** What the snapshot's row says of itself, without its bits. */
export interface SnapshotHeader {
  format: string;
  bits: number;
  hashes: number;
  salt: string;
  falsePositiveRate: number;
  capacity: number;
  keys: number;
  /** Every row whose `changed_xid` this snapshot (a `pg_snapshot`, as text) sees as committed is in the bits. */
  watermark: string;
  builtAt: Date;
  ageMs: number;
  /** The transaction that wrote it: identifies this version of the row. */
  writtenXid: string;
  /** The row is the one that transaction wrote, in this database (not restored from a dump, not replicated, not edited). */
  own: boolean;
  /** The triggers that keep `changed_xid` are there and enabled. */
  tracked: boolean;
  checksum: Buffer;
}

export interface Snapshot extends SnapshotHeader {
  bytes: Buffer;
  /** A watermark taken by the same read (a `pg_snapshot`), for a snapshot written from this one. */
  readAt: string;
}

const TRIGGERS = `ARRAY['tombstones_changed_ins', 'tombstones_changed_upd']`;
/** The header's columns; `table` is the parameter that names the tombstone table. */
const header = (table: string) => `
  s.format, s.bit_count, s.hash_count, s.salt, s.false_positive_rate, s.capacity, s.key_count,
  s.watermark::text AS watermark, s.built_at, s.written_xid::text AS written_xid, s.checksum,
  (extract(epoch FROM now() - s.built_at) * 1000)::float8 AS age_ms,
  s.xmin = pg_catalog.xid(s.written_xid) AS own,
  (SELECT count(*) FROM pg_trigger
    WHERE tgrelid = to_regclass(${table}) AND tgname = ANY(${TRIGGERS}) AND tgenabled IN ('O', 'A')) = 2 AS tracked`;
// One statement, so one state of the row: its header on every slice.
const READ_SQL = `
  SELECT ${header('$2')}, pg_current_snapshot()::text AS read_at,
         n, substring(s.bits FROM n * $1 + 1 FOR $1) AS chunk
    FROM tombstone_filter_snapshots s CROSS JOIN LATERAL generate_series(0, (octet_length(s.bits) - 1) / $1) AS n
   WHERE s.id = 1 ORDER BY n`;
const HEADER_SQL = `SELECT ${header('$1')} FROM tombstone_filter_snapshots s WHERE s.id = 1`;
// `$12`: the version it replaces, when it must still be there (null: whatever is there).
const WRITE_SQL = `
  INSERT INTO tombstone_filter_snapshots AS s
         (id, format, bit_count, hash_count, salt, false_positive_rate, capacity, key_count, watermark, built_at, checksum, bits)
  VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8::pg_snapshot, $9, $10, $11)
  ON CONFLICT (id) DO UPDATE SET
    format = EXCLUDED.format, bit_count = EXCLUDED.bit_count, hash_count = EXCLUDED.hash_count, salt = EXCLUDED.salt,
    false_positive_rate = EXCLUDED.false_positive_rate, capacity = EXCLUDED.capacity, key_count = EXCLUDED.key_count,
    watermark = EXCLUDED.watermark, built_at = EXCLUDED.built_at, checksum = EXCLUDED.checksum, bits = EXCLUDED.bits,
    written_xid = pg_catalog.pg_current_xact_id(), written_at = now()
  WHERE $12::text IS NULL OR s.written_xid::text = $12::text
  RETURNING written_xid::text AS written_xid`;
const VERSION_SQL = `SELECT written_xid::text AS written_xid FROM tombstone_filter_snapshots WHERE id = 1`;

type HeaderRow = {
  format: string;
  bit_count: string;
  hash_count: number;
  salt: string;
  false_positive_rate: number;
  capacity: string;
  key_count: string;
  watermark: string;
  built_at: Date;
  written_xid: string;
  checksum: Buffer;
  age_ms: number;
  own: boolean;
  tracked: boolean;
};

function headerOf(row: HeaderRow): SnapshotHeader {
  return {
    format: row.format,
    bits: Number(row.bit_count),
    hashes: row.hash_count,
    salt: row.salt,
    falsePositiveRate: row.false_positive_rate,
    capacity: Number(row.capacity),
    keys: Number(row.key_count),
    watermark: row.watermark,
    builtAt: row.built_at,
    ageMs: row.age_ms,
    writtenXid: row.written_xid,
    own: row.own,
    tracked: row.tracked,
    checksum: row.checksum,
  };
}

/** The stored snapshot with its bits; `null` when there is none. Throws when the table is missing (see `isMissingTable`). */
export async function readSnapshot(db: Queryable, qualifiedName: string): Promise<Snapshot | null> {
  const rows = (await db.query(READ_SQL, [CHUNK_BYTES, qualifiedName])) as (HeaderRow & { read_at: string; chunk: Buffer })[];
  if (rows.length === 0) return null;
  return { ...headerOf(rows[0]), readAt: rows[0].read_at, bytes: rows.length === 1 ? rows[0].chunk : Buffer.concat(rows.map((row) => row.chunk)) };
}

/** The stored snapshot's header, without its bits; `null` when there is none. */
export async function readHeader(db: Queryable, qualifiedName: string): Promise<SnapshotHeader | null> {
  const [row] = (await db.query(HEADER_SQL, [qualifiedName])) as HeaderRow[];
  return row ? headerOf(row) : null;
}

/** The version (`written_xid`) of the stored snapshot; `null` when there is none. */
export async function readVersion(db: Queryable): Promise<string | null> {
  const [row] = (await db.query(VERSION_SQL)) as { written_xid: string }[];
  return row?.written_xid ?? null;
}

/**
 * Stores `filter` as the snapshot: every row whose `changed_xid` `watermark` sees as committed is in it. When `replaces`
 * is given, only over that version (a snapshot written meanwhile by a full read is not replaced
 * by one made from an older read). Answers whether it was written.
 */
export async function writeSnapshot(db: Queryable, filter: SaltedFilter, falsePositiveRate: number, watermark: string, replaces: string | null): Promise<boolean> {
  const bytes = bytesOf(filter.bloom);
  const header = { format: SNAPSHOT_FORMAT, bits: filter.bloom.m, hashes: filter.bloom.k, salt: filter.salt, falsePositiveRate, capacity: filter.capacity, keys: filter.keys, watermark, builtAt: filter.builtAt };
  const rows = (await db.query(WRITE_SQL, [
    header.format,
    header.bits,
    header.hashes,
    header.salt,
    header.falsePositiveRate,
    header.capacity,
    header.keys,
    header.watermark,
    header.builtAt,
    checksumOf(header, bytes),
    bytes,
    replaces,
  ])) as unknown[];
  return rows.length === 1;
}

/**
 * Why the snapshot cannot be used by an instance with these settings, or `null` when it can (as
 * far as its header tells: see `bitsProblem()` for the bits).
 */
export function headerProblem(header: SnapshotHeader, settings: ResolvedFilterOptions): string | null {
  if (!header.tracked) return 'the triggers that mark changed rows (tombstones_changed_ins, tombstones_changed_upd) are missing or disabled';
  if (!header.own) return 'its row was not written by this module in this database (a restored dump, replication, or an edit)';
  if (header.format !== SNAPSHOT_FORMAT) return `it was written in another format (${header.format}, this version reads ${SNAPSHOT_FORMAT})`;
  if (header.falsePositiveRate !== settings.falsePositiveRate) {
    return `it was built for a false-positive rate of ${header.falsePositiveRate}, this instance's is ${settings.falsePositiveRate}`;
  }
  const shape = filterShape(header.capacity, header.falsePositiveRate);
  if (!(header.capacity >= 1 && header.capacity <= maxCapacity(header.falsePositiveRate)) || shape.bits !== header.bits || shape.hashes !== header.hashes) {
    return `its size (${header.bits} bits, ${header.hashes} hashes) is not the one of its capacity (${header.capacity} keys)`;
  }
  if (header.capacity < settings.minCapacity) return `it is sized for ${header.capacity} keys, less than this instance's minCapacity (${settings.minCapacity})`;
  if (header.keys > header.capacity) return `it holds more keys (${header.keys}) than it was sized for (${header.capacity})`;
  if (header.ageMs > SNAPSHOT_MAX_AGE_MS) return `the table was read for it ${(header.ageMs / 3_600_000).toFixed(1)} hours ago`;
  return null;
}

/** Why the snapshot's bits cannot be used: their checksum does not match. */
export function bitsProblem(snapshot: Snapshot): string | null {
  if (snapshot.bytes.length * 8 !== snapshot.bits) return `it has ${snapshot.bytes.length * 8} bits, not ${snapshot.bits}`;
  if (!checksumOf(snapshot, snapshot.bytes).equals(snapshot.checksum)) return 'its checksum does not match (the row is corrupt)';
  return null;
}

/** The filter the snapshot holds (check it first: `headerProblem()`, `bitsProblem()`). */
export function filterOf(snapshot: Snapshot): SaltedFilter {
  const bloom = new BloomFilter(snapshot.bits, snapshot.hashes);
  const view = new DataView(snapshot.bytes.buffer, snapshot.bytes.byteOffset, snapshot.bytes.byteLength);
  const buckets = bloom.buckets;
  for (let i = 0; i < buckets.length; i++) buckets[i] = view.getUint32(4 * i, true);
  const filter = new SaltedFilter(bloom, snapshot.salt, snapshot.capacity, snapshot.builtAt);
  filter.keys = snapshot.keys;
  return filter;
}

/** Whether an error says the snapshot's table or the `changed_xid` column is not there (the migration has not run). */
export function isMissingTable(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === '42P01' || code === '42703';
}

function bytesOf(bloom: BloomFilter): Buffer {
  const bytes = Buffer.alloc(bloom.buckets.length * 4);
  for (let i = 0; i < bloom.buckets.length; i++) bytes.writeUInt32LE(bloom.buckets[i], 4 * i);
  return bytes;
}

/** Covers everything a reader relies on: a bit or a watermark changed by accident is a wrong answer. */
function checksumOf(
  header: Pick<SnapshotHeader, 'format' | 'bits' | 'hashes' | 'salt' | 'falsePositiveRate' | 'capacity' | 'keys' | 'watermark' | 'builtAt'>,
  bytes: Buffer,
): Buffer {
  const fields = [header.format, header.bits, header.hashes, header.salt, header.falsePositiveRate, header.capacity, header.keys, header.watermark, header.builtAt.getTime()];
  return createHash('sha256').update(JSON.stringify(fields)).update(bytes).digest();
}
