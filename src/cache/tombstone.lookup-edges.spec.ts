import { jest } from '@jest/globals';
import { LruTombstoneCacheStore } from './tombstone.cache.js';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import { TombstoneFences } from './tombstone.fences.js';
import { TombstoneReplicas } from './tombstone.replicas.js';
import { TombstoneLookup } from './tombstone.lookup.js';
import type { TombstoneModuleOptions } from '../tombstone.options.js';
import { resolveTombstoneOptions } from '../tombstone.options-resolve.js';
import { TombstoneChanges } from '../table/tombstone.changes.js';
import type { TombstoneTable } from '../table/tombstone.table.js';
import { type TombstoneLookupResult, type TombstoneResolution } from '../tombstone.types.js';

// Edge cases of the lookup cache found by review: each failed against its first version.

const GONE: TombstoneResolution = { state: 'gone', id: '1', deletedAt: new Date(0), reason: null, alternative: null };
const NONE: TombstoneResolution = { state: 'none' };
const NO_ROW: TombstoneLookupResult = { resolution: NONE, via: null, validUntil: null, cacheable: true };

function deferred<T>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((res) => (resolve = res));
  return { promise, resolve };
}

/** Polls `check` until it holds; throws past a deadline that only bounds a failure. */
async function until(check: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`still not true after ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** SQL the fake service does not know: it throws, and (a failed load is only logged) every test checks this is empty. */
const unexpected: string[] = [];
beforeEach(() => {
  unexpected.length = 0;
});
afterEach(() => {
  expect(unexpected).toEqual([]);
});

type Row = { id: string; scope: string; resource_type: string; resource_key: string };

/** A lookup over a fake service (same shape as src/tombstone.lookup.spec.ts). */
function setup(options: TombstoneModuleOptions = {}, rows: Row[] = [], resolved = resolveTombstoneOptions(options)) {
  const answers = new Map<string, TombstoneLookupResult>();
  /** When set, the full load's first batch query waits for it. */
  let loadGate: Promise<void> | null = null;
  let blockedLoads = 0;
  const service = {
    lookup: jest.fn(async (type: string, key: string, scope: string) => answers.get(`${scope}/${type}/${key}`) ?? NO_ROW),
    dataSource: {
      getMetadata: () => ({ schema: undefined, tableName: 'tombstones' }),
      query: jest.fn(async (sql: string, params: unknown[]) => {
        if (/reltuples/.test(sql)) return [{ n: String(rows.length) }];
        // A database whose migrations stop before the filter snapshot's: every load reads the table.
        if (/tombstone_filter_snapshots/.test(sql)) throw Object.assign(new Error('relation "tombstone_filter_snapshots" does not exist'), { code: '42P01' });
        if (/pg_current_snapshot\(\)::text AS watermark/.test(sql)) return [{ watermark: '1:1:', at: new Date() }];
        if (/WHERE id > \$1/.test(sql)) {
          if (loadGate) {
            blockedLoads++;
            await loadGate;
          }
          return rows.filter((r) => Number(r.id) > Number(params[0]));
        }
        if (/WHERE scope = \$1/.test(sql)) {
          return rows.filter((r) => r.scope === params[0] && r.resource_type === params[1] && r.resource_key > (params[2] as string));
        }
        unexpected.push(sql);
        throw new Error(`the fake service does not know this SQL: ${sql}`);
      }),
    },
  };
  const store = new LruTombstoneCacheStore({ maxEntries: resolved.cache ? resolved.cache.maxEntries : 1 });
  const table = service as unknown as TombstoneTable;
  const lookup = new TombstoneLookup(resolved, table, new TombstoneChanges(), store, new TombstoneFences(table), new TombstoneReplicas(resolved, table));
  lookup.onModuleInit();
  jest.spyOn((lookup as unknown as { logger: { error: () => void; log: () => void } }).logger, 'error').mockImplementation(() => undefined);
  jest.spyOn((lookup as unknown as { logger: { error: () => void; log: () => void } }).logger, 'log').mockImplementation(() => undefined);
  jest.spyOn((lookup as unknown as { logger: { warn: () => void } }).logger, 'warn').mockImplementation(() => undefined);
  return {
    lookup,
    service,
    answers,
    holdLoads: (gate: Promise<void> | null) => (loadGate = gate),
    blockedLoads: () => blockedLoads,
  };
}

describe('TombstoneLookup edges', () => {
  it('does not hand a lookup that was read before an invalidation to a caller that comes after it', async () => {
    const { lookup, service, answers } = setup({ cache: { filter: false } });
    lookup.listening();
    const slow = deferred<TombstoneLookupResult>();
    service.lookup.mockImplementationOnce(() => slow.promise);
    // A lookup reads "no tombstone"...
    const before = lookup.resolve('item', 'a');
    // ...then a tombstone is written and announced: `a` now answers 410.
    answers.set('/item/a', { resolution: GONE, via: null, validUntil: null, cacheable: true });
    lookup.invalidate({ scope: '', type: 'item', listed: ['a'], unlisted: [] });
    // A request that starts after the announcement...
    const after = lookup.resolve('item', 'a');
    slow.resolve(NO_ROW);
    expect(await before).toBe(NONE); // fine: it started before the write
    // ...must not get the answer read before it (it joins the in-flight query today).
    expect(await after).toBe(GONE);
  });

  it('loads its filter again after listening restarts while a load is running', async () => {
    const { lookup, holdLoads, blockedLoads } = setup({}, [{ id: '1', scope: '', resource_type: 'item', resource_key: 'a' }]);
    const gate = deferred<void>();
    holdLoads(gate.promise);
    lookup.listening();
    await until(() => blockedLoads() === 1, 'the first full load is under way');
    // The connection is lost and comes back while the first full load is still running.
    lookup.deaf();
    lookup.listening();
    holdLoads(null);
    gate.resolve();
    await lookup.loaded();
    // The load asked for by the second listening() must run: else the filter stays off for good.
    expect(lookup.stats().filter).toMatchObject({ ready: true, keys: 1 });
    lookup.deaf();
  });

  it('refuses a filter.minCapacity above 100,000,000 at start-up, with what to change', () => {
    // Past ~447 million keys (at the default 1%) the BloomFilter refuses the bit count: a load
    // would fail and be retried forever. The options stop well before.
    expect(() => resolveTombstoneOptions({ cache: { filter: { minCapacity: 100_000_001 } } })).toThrow(TombstoneConfigurationError);
    expect(() => resolveTombstoneOptions({ cache: { filter: { minCapacity: 100_000_001 } } })).toThrow(
      'cache.filter.minCapacity must be a whole number of keys from 1000 to 100000000, not 100000001.',
    );
    const resolved = resolveTombstoneOptions({ cache: { filter: { minCapacity: 100_000_000 } } });
    expect(resolved.cache && resolved.cache.filter).toEqual({ falsePositiveRate: 0.01, minCapacity: 100_000_000, snapshot: true });
  });

  it('builds the filter at the largest filter.minCapacity the options accept', async () => {
    // The largest rate keeps the largest capacity small in memory (about 18 MB).
    const resolved = resolveTombstoneOptions({ cache: { filter: { minCapacity: 100_000_000, falsePositiveRate: 0.5 } } });
    const { lookup } = setup({}, [{ id: '1', scope: '', resource_type: 'item', resource_key: 'a' }], resolved);
    const errors = jest.spyOn((lookup as unknown as { logger: { error: () => void } }).logger, 'error');
    lookup.listening();
    await lookup.loaded();
    expect(errors).not.toHaveBeenCalled();
    expect(lookup.stats().filter).toMatchObject({ ready: true, keys: 1, capacity: 100_000_000 });
    lookup.deaf();
  });
});
