import { jest } from '@jest/globals';
import { LruTombstoneCacheStore } from './tombstone.cache.js';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import { TombstoneLookup } from './tombstone.lookup.js';
import type { ResolvedTombstoneOptions, TombstoneModuleOptions } from '../tombstone.options.js';
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

async function until(check: () => boolean, timeoutMs = 3_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

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
        return [];
      }),
    },
  };
  const store = new LruTombstoneCacheStore({ maxEntries: resolved.cache ? resolved.cache.maxEntries : 1 });
  const lookup = new TombstoneLookup(resolved, service as unknown as TombstoneTable, new TombstoneChanges(), store);
  lookup.onModuleInit();
  jest.spyOn((lookup as unknown as { logger: { error: () => void; log: () => void } }).logger, 'error').mockImplementation(() => undefined);
  jest.spyOn((lookup as unknown as { logger: { error: () => void; log: () => void } }).logger, 'log').mockImplementation(() => undefined);
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
    expect(await until(() => blockedLoads() === 1)).toBe(true);
    // The connection is lost and comes back while the first full load is still running.
    lookup.deaf();
    lookup.listening();
    holdLoads(null);
    gate.resolve();
    await lookup.loaded();
    await until(() => lookup.stats().filter.ready, 2_000);
    // The load asked for by the second listening() never runs: the filter stays off for good.
    expect(lookup.stats().filter).toMatchObject({ ready: true, keys: 1 });
    lookup.deaf();
  });

  it('builds a filter for every filter.minCapacity the options accept (or the options refuse it)', async () => {
    let resolved: ResolvedTombstoneOptions;
    try {
      resolved = resolveTombstoneOptions({ cache: { filter: { minCapacity: 500_000_000 } } });
    } catch (error) {
      // Refusing the value at start-up would be a fix too.
      expect(error).toBeInstanceOf(TombstoneConfigurationError);
      return;
    }
    const { lookup } = setup({}, [], resolved);
    const errors = jest.spyOn((lookup as unknown as { logger: { error: () => void } }).logger, 'error');
    lookup.listening();
    await until(() => errors.mock.calls.length > 0 || lookup.stats().filter.ready, 2_000);
    const logged = errors.mock.calls.map((call) => String((call as unknown[])[0])).join('\n');
    lookup.deaf(); // stops the retry loop
    // The options say 1000 to 1_000_000_000 keys; above ~447 million the BloomFilter refuses the
    // bit count, and the load fails, is logged and retried forever: no filter, ever.
    expect(logged).toBe('');
  });
});
