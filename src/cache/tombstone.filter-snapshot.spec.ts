import { BloomFilter } from 'bloomfilter';
import { emptyFilter, filterShape, keyId } from './tombstone.filter-keys.js';
import { changesAllowed, changesToRefresh } from './tombstone.filter-loader.js';
import { bitsProblem, filterOf, headerProblem, type Snapshot, SNAPSHOT_FORMAT, SNAPSHOT_MAX_AGE_MS, writeSnapshot } from './tombstone.filter-snapshot.js';
import type { ResolvedFilterOptions } from '../tombstone.options.js';

const SETTINGS: ResolvedFilterOptions = { falsePositiveRate: 0.01, minCapacity: 1000, snapshot: true };

/** What `writeSnapshot()` would store for `filter`, read back as `readSnapshot()` answers it. */
async function stored(keys: string[], capacity = 5000): Promise<Snapshot> {
  const filter = emptyFilter(capacity, 0.01, 'salt-of-the-test', new Date('2025-01-01T00:00:00.123Z'));
  for (const key of keys) filter.add(keyId('', 'item', key));
  let params: unknown[] = [];
  await writeSnapshot({ query: async (_sql, p) => ((params = p ?? []), [{ written_xid: '7' }]) }, filter, 0.01, '42:50:45', null);
  const [format, bits, hashes, salt, falsePositiveRate, cap, count, watermark, builtAt, checksum, bytes] = params as [
    string, number, number, string, number, number, number, string, Date, Buffer, Buffer,
  ];
  return {
    format, bits, hashes, salt, falsePositiveRate, capacity: cap, keys: count, watermark, builtAt, checksum, bytes,
    ageMs: 1000, writtenXid: '7', own: true, tracked: true, readAt: '50:50:',
  };
}

describe('filter snapshots', () => {
  it('reads back the filter it stored: the same answers, salt and counts', async () => {
    const keys = Array.from({ length: 1000 }, (_, i) => `key-${i}`);
    const snapshot = await stored(keys);
    expect(headerProblem(snapshot, SETTINGS)).toBeNull();
    expect(bitsProblem(snapshot)).toBeNull();
    const filter = filterOf(snapshot);
    expect({ salt: filter.salt, keys: filter.keys, capacity: filter.capacity, builtAt: filter.builtAt }).toEqual({
      salt: 'salt-of-the-test',
      keys: 1000,
      capacity: 5000,
      builtAt: new Date('2025-01-01T00:00:00.123Z'),
    });
    for (const key of keys) expect(filter.has(keyId('', 'item', key))).toBe(true);
    const unknown = Array.from({ length: 1000 }, (_, i) => `nope-${i}`).filter((key) => filter.has(keyId('', 'item', key)));
    expect(unknown.length).toBeLessThan(30);
  });

  it('lays the bits out little-endian, whatever the machine', async () => {
    const filter = emptyFilter(5000, 0.01, 'salt', new Date(0));
    filter.bloom.buckets[0] = 0x01020304;
    let bytes: Buffer = Buffer.alloc(0);
    await writeSnapshot({ query: async (_sql, p) => ((bytes = (p ?? [])[10] as Buffer), [{}]) }, filter, 0.01, '1:1:', null);
    expect([...bytes.subarray(0, 4)]).toEqual([4, 3, 2, 1]);
    const snapshot = await stored([]);
    expect(filterOf({ ...snapshot, bytes }).bloom.buckets[0]).toBe(0x01020304);
  });

  it('refuses bits or a watermark changed after the checksum was made', async () => {
    const snapshot = await stored(['a', 'b']);
    const bytes = Buffer.from(snapshot.bytes);
    bytes[3] ^= 1;
    expect(bitsProblem({ ...snapshot, bytes })).toMatch(/checksum does not match/);
    expect(bitsProblem({ ...snapshot, watermark: '42:50:' })).toMatch(/checksum does not match/);
    expect(bitsProblem({ ...snapshot, salt: 'another' })).toMatch(/checksum does not match/);
    expect(bitsProblem({ ...snapshot, bytes: snapshot.bytes.subarray(4) })).toMatch(/bits, not/);
  });

  it.each([
    [{ own: false }, /not written by this module in this database/],
    [{ tracked: false }, /triggers that mark changed rows/],
    [{ format: 'bloomfilter/le32/0000000000000000' }, /another format/],
    [{ falsePositiveRate: 0.001 }, /false-positive rate of 0.001/],
    [{ hashes: 8 }, /is not the one of its capacity/],
    [{ bits: 64 }, /is not the one of its capacity/],
    [{ keys: 5001 }, /more keys \(5001\) than it was sized for \(5000\)/],
    [{ ageMs: SNAPSHOT_MAX_AGE_MS + 1 }, /the table was read for it 6\.0 hours ago/],
  ] as const)('refuses a snapshot with %o', async (change, reason) => {
    const snapshot = await stored(['a']);
    expect(headerProblem({ ...snapshot, ...change }, SETTINGS)).toMatch(reason);
  });

  it('refuses one sized below this instance’s minCapacity', async () => {
    expect(headerProblem(await stored(['a'], 5000), { ...SETTINGS, minCapacity: 10_000 })).toMatch(/less than this instance's minCapacity \(10000\)/);
  });

  it('knows the size of a filter without making it, as the library makes it', () => {
    for (const rate of [0.5, 0.1, 0.01, 0.001, 0.000001]) {
      for (const capacity of [1, 1000, 4321, 100_000, 2_000_000]) {
        const bloom = BloomFilter.withTargetError(capacity, rate);
        expect(filterShape(capacity, rate)).toEqual({ bits: bloom.m, hashes: bloom.k });
      }
    }
  });

  it('names the layout and the hashing of the installed bloomfilter package', () => {
    expect(SNAPSHOT_FORMAT).toMatch(/^bloomfilter\/le32\/[0-9a-f]{16}$/);
  });

  it('uses a snapshot until the changes since cost about what a read of the table costs', () => {
    expect(changesAllowed(100_000)).toBe(50_000);
    expect(changesAllowed(2_000_000)).toBe(100_000);
    expect(changesToRefresh(100_000)).toBe(10_000);
    expect(changesToRefresh(2_000_000)).toBe(10_000);
    expect(changesToRefresh(20_000_000)).toBe(100_000);
  });
});
