import { jest } from '@jest/globals';
import { TombstoneCircuitOpenError } from './tombstone.breaker.js';
import { LruTombstoneCacheStore } from './tombstone.cache.js';
import { emptyFilter } from './tombstone.filter-keys.js';
import { TombstoneFences } from './tombstone.fences.js';
import { TombstoneReplicas } from './tombstone.replicas.js';
import { TombstoneLookup } from './tombstone.lookup.js';
import type { TombstoneModuleOptions } from '../tombstone.options.js';
import { resolveTombstoneOptions } from '../tombstone.options-resolve.js';
import { TombstoneChanges } from '../table/tombstone.changes.js';
import type { TombstoneTable } from '../table/tombstone.table.js';
import { type TombstoneLookupResult, type TombstoneResolution } from '../tombstone.types.js';

const GONE: TombstoneResolution = { state: 'gone', id: '1', deletedAt: new Date(0), reason: null, alternative: null };
const NONE: TombstoneResolution = { state: 'none' };

function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

/**
 * SQL the fake service was sent and does not know. It throws, but a load that fails is logged and
 * retried, never thrown to the test: so every test also checks this list is empty.
 */
const unexpected: string[] = [];
beforeEach(() => {
  unexpected.length = 0;
});
afterEach(() => {
  expect(unexpected).toEqual([]);
});

/** A lookup over a fake service: `rows` is what the table holds, `answers` what lookups read. */
function setup(options: TombstoneModuleOptions = {}, rows: { id: string; scope: string; resource_type: string; resource_key: string }[] = []) {
  const answers = new Map<string, TombstoneLookupResult>();
  const queries: string[] = [];
  let failLoads = 0;
  const service = {
    lookups: 0,
    lookup: jest.fn(async (type: string, key: string, scope: string) => {
      service.lookups++;
      return answers.get(`${scope}/${type}/${key}`) ?? { resolution: NONE, via: null, validUntil: null, cacheable: true };
    }),
    dataSource: {
      getMetadata: () => ({ schema: undefined, tableName: 'tombstones' }),
      query: jest.fn(async (sql: string, params: unknown[]) => {
        queries.push(sql);
        if (/reltuples/.test(sql)) return [{ n: String(rows.length) }];
        // A database whose migrations stop before the filter snapshot's: every load reads the table.
        if (/tombstone_filter_snapshots/.test(sql)) throw Object.assign(new Error('relation "tombstone_filter_snapshots" does not exist'), { code: '42P01' });
        if (/pg_current_snapshot\(\)::text AS watermark/.test(sql)) return [{ watermark: '1:1:', at: new Date() }];
        if (/pg_notify/.test(sql)) return [{ fence: JSON.parse(params[1] as string).barrier }];
        if (failLoads > 0) {
          failLoads--;
          throw new Error('connection refused');
        }
        if (/WHERE id > \$1/.test(sql)) return rows.filter((r) => Number(r.id) > Number(params[0]));
        if (/WHERE scope = \$1/.test(sql)) {
          return rows.filter((r) => r.scope === params[0] && r.resource_type === params[1] && r.resource_key > (params[2] as string));
        }
        unexpected.push(sql);
        throw new Error(`the fake service does not know this SQL: ${sql}`);
      }),
    },
  };
  const resolved = resolveTombstoneOptions(options);
  const store = new LruTombstoneCacheStore({ maxEntries: resolved.cache ? resolved.cache.maxEntries : 1 });
  const fences = new TombstoneFences(service as unknown as TombstoneTable);
  const table = service as unknown as TombstoneTable;
  const lookup = new TombstoneLookup(resolved, table, new TombstoneChanges(), store, fences, new TombstoneReplicas(resolved, table));
  lookup.onModuleInit();
  // The fake's table has no snapshot (see above): said once per lookup, not what these tests are about.
  jest.spyOn((lookup as unknown as { logger: { warn: () => void } }).logger, 'warn').mockImplementation(() => undefined);
  return {
    lookup,
    fences,
    service,
    store,
    answers,
    queries,
    failNextLoads: (n: number) => (failLoads = n),
    gone: (key: string, via: string | null = null, scope = '') =>
      answers.set(`${scope}/item/${key}`, { resolution: GONE, via, validUntil: null, cacheable: true }),
  };
}

describe('TombstoneLookup', () => {
  it('asks the database for everything until it listens', async () => {
    const { lookup, service } = setup();
    expect(lookup.stats().state).toBe('waiting');
    await lookup.resolve('item', 'a');
    await lookup.resolve('item', 'a');
    expect(service.lookup).toHaveBeenCalledTimes(2);
  });

  it('answers from the filter once loaded, and from the store after one query', async () => {
    const { lookup, service, gone } = setup({}, [{ id: '1', scope: '', resource_type: 'item', resource_key: 'a' }]);
    gone('a');
    lookup.listening();
    await lookup.loaded();
    expect(lookup.resolve('item', 'unknown')).toStrictEqual(NONE);
    expect(await lookup.resolve('item', 'a')).toBe(GONE);
    expect(lookup.resolve('item', 'a')).toBe(GONE); // a value, not a promise
    expect(service.lookups).toBe(1);
    expect(lookup.stats()).toMatchObject({ filtered: 1, cached: 1, queried: 1 });
  });

  it('frees a filter a load began to fill and did not install (a snapshot it could not use)', async () => {
    const { lookup } = setup();
    const internals = lookup as unknown as { loader: { load: (...args: unknown[]) => Promise<void> }; building: unknown };
    const ended = deferred<void>();
    internals.loader = {
      load: async (_reason, _current, hooks) => {
        (hooks as { building: (filter: unknown) => void }).building(emptyFilter(1000, 0.01, 'salt', new Date()));
        expect(internals.building).not.toBeNull();
        ended.resolve();
      },
    };
    lookup.listening();
    await ended.promise;
    await new Promise((resolve) => setImmediate(resolve));
    expect(internals.building).toBeNull();
  });

  it('asks the database for a type written here until its fence comes back: unshared, not kept', async () => {
    const { lookup, service, fences, gone } = setup({ cache: { filter: false } });
    lookup.listening();
    fences.started();
    gone('a');
    expect(await lookup.resolve('item', 'a')).toBe(GONE);
    expect(await lookup.resolve('other', 'a')).toBe(NONE);
    // A lookup from before the write, still on its way: what follows the write does not share it.
    const slow = deferred<TombstoneLookupResult>();
    service.lookup.mockImplementationOnce(() => slow.promise);
    const early = lookup.resolve('item', 'b');
    fences.written(['item']);
    const sent = service.dataSource.query.mock.calls.filter(([sql]) => /pg_notify/.test(sql));
    expect(sent).toHaveLength(1);
    const token = JSON.parse(sent[0][1][1] as string).barrier as string;
    expect(await lookup.resolve('item', 'a')).toBe(GONE);
    expect(await lookup.resolve('item', 'a')).toBe(GONE);
    expect(await lookup.resolve('item', 'b')).toBe(NONE);
    expect(service.lookup).toHaveBeenCalledTimes(6);
    // Other types keep the store.
    expect(lookup.resolve('other', 'a')).toBe(NONE);
    fences.heard('another-instance/1');
    expect(fences.unsure('item')).toBe(true);
    fences.heard(token);
    slow.resolve({ resolution: NONE, via: null, validUntil: null, cacheable: true });
    await early;
    expect(lookup.resolve('item', 'a')).toBe(GONE);
    expect(service.lookup).toHaveBeenCalledTimes(6);
  });

  it('does not keep an answer read before an invalidation that came while it was read', async () => {
    const { lookup, service } = setup({ cache: { filter: false } });
    lookup.listening();
    const slow = deferred<TombstoneLookupResult>();
    service.lookup.mockImplementationOnce(() => slow.promise);
    const pending = lookup.resolve('item', 'a');
    lookup.invalidate({ scope: '', type: 'item', listed: ['a'], unlisted: [] });
    slow.resolve({ resolution: NONE, via: null, validUntil: null, cacheable: true });
    expect(await pending).toBe(NONE);
    // The stale "none" was not kept: the next lookup asks again.
    await lookup.resolve('item', 'a');
    expect(service.lookup).toHaveBeenCalledTimes(2);
  });

  it('drops the answers read through a key when that key changes', async () => {
    const { lookup, gone, service } = setup({ cache: { filter: false } });
    lookup.listening();
    gone('a', 'b');
    gone('c', 'b');
    await lookup.resolve('item', 'a');
    await lookup.resolve('item', 'c');
    lookup.invalidate({ scope: '', type: 'item', listed: [], unlisted: ['b'] });
    await lookup.resolve('item', 'a');
    await lookup.resolve('item', 'c');
    expect(service.lookups).toBe(4);
    // Another scope's b is another key.
    lookup.invalidate({ scope: 'acme', type: 'item', listed: [], unlisted: ['b'] });
    lookup.resolve('item', 'a');
    expect(service.lookups).toBe(4);
  });

  it('bounds the links it keeps for chained answers', async () => {
    const { lookup, gone } = setup({ cache: { filter: false, maxEntries: 10 } });
    lookup.listening();
    for (let i = 0; i < 100; i++) {
      gone(`k${i}`, `t${i}`);
      await lookup.resolve('item', `k${i}`);
    }
    const links = (lookup as unknown as { stored: { dependentCount: number } }).stored.dependentCount;
    expect(links).toBeLessThanOrEqual(20);
    expect(lookup.stats().entries).toBeLessThanOrEqual(10);
  });

  it('adds listed keys to the filter, and skips a (scope, type) it reloads after a large change', async () => {
    const rows = [{ id: '1', scope: '', resource_type: 'item', resource_key: 'a' }];
    const { lookup, service, gone } = setup({}, rows);
    lookup.listening();
    await lookup.loaded();
    gone('new');
    lookup.invalidate({ scope: '', type: 'item', listed: ['new'], unlisted: [] });
    expect(await lookup.resolve('item', 'new')).toBe(GONE);

    rows.push({ id: '2', scope: '', resource_type: 'item', resource_key: 'bulk' });
    gone('bulk');
    lookup.invalidate({ scope: '', type: 'item', all: true });
    // While the pair loads, its keys are looked up rather than trusted to the filter.
    expect(await lookup.resolve('item', 'bulk')).toBe(GONE);
    await lookup.loaded();
    // Distinct keys: the pair's reload reads `a` again, it is still one key.
    expect(lookup.stats().filter.keys).toBe(3);
    const before = service.lookups;
    expect(lookup.resolve('item', 'still-unknown')).toStrictEqual(NONE);
    expect(service.lookups).toBe(before);
  });

  it('retries a failed load, skipping the filter meanwhile', async () => {
    jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
    try {
      const { lookup, failNextLoads } = setup({}, [{ id: '1', scope: '', resource_type: 'item', resource_key: 'a' }]);
      failNextLoads(1);
      jest.spyOn((lookup as unknown as { logger: { error: () => void } }).logger, 'error').mockImplementation(() => undefined);
      lookup.listening();
      await new Promise((resolve) => setImmediate(resolve));
      expect(lookup.stats().filter.ready).toBe(false);
      await jest.advanceTimersByTimeAsync(600);
      await lookup.loaded();
      expect(lookup.stats().filter).toMatchObject({ ready: true, keys: 1 });
    } finally {
      jest.useRealTimers();
    }
  });

  it('after a reconnection, loads its filter only after the delay it is given; lookups meanwhile are right', async () => {
    jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
    try {
      const rows = [{ id: '1', scope: '', resource_type: 'item', resource_key: 'a' }];
      const { lookup, service, queries, gone, answers } = setup({}, rows);
      lookup.listening();
      await lookup.loaded();
      expect(lookup.stats().filter.ready).toBe(true);
      lookup.deaf();
      // Written while the instance did not listen: the filter it had does not hold it.
      rows.push({ id: '2', scope: '', resource_type: 'item', resource_key: 'b' });
      gone('b');
      queries.length = 0;
      lookup.listening(3000);
      await new Promise((resolve) => setImmediate(resolve));
      expect(queries).toEqual([]);
      expect(lookup.stats()).toMatchObject({ state: 'coherent', filter: { ready: false } });
      // Meanwhile: the database, then the store; and changes are heard.
      expect(await lookup.resolve('item', 'b')).toBe(GONE);
      expect(lookup.resolve('item', 'b')).toBe(GONE);
      answers.delete('/item/b');
      lookup.invalidate({ scope: '', type: 'item', listed: [], unlisted: ['b'] });
      expect(await lookup.resolve('item', 'b')).toStrictEqual(NONE);
      await jest.advanceTimersByTimeAsync(2999);
      expect(queries).toEqual([]);
      await jest.advanceTimersByTimeAsync(1);
      await lookup.loaded();
      expect(queries.length).toBeGreaterThan(0);
      expect(lookup.stats().filter).toMatchObject({ ready: true, keys: 2 });
      const before = service.lookups;
      expect(lookup.resolve('item', 'never-was')).toStrictEqual(NONE);
      expect(service.lookups).toBe(before);
    } finally {
      jest.useRealTimers();
    }
  });

  it.each([
    [-1, 'cache.reloadJitterMs must be a whole number of milliseconds from 0 to 600000, not -1.'],
    [1.5, 'cache.reloadJitterMs must be a whole number of milliseconds from 0 to 600000, not 1.5.'],
    [null, 'cache.reloadJitterMs must be a whole number of milliseconds from 0 to 600000, not null.'],
  ])('refuses cache.reloadJitterMs %j', (reloadJitterMs, message) => {
    expect(() => resolveTombstoneOptions({ cache: { reloadJitterMs: reloadJitterMs as number } })).toThrow(`TombstoneModule: ${message}`);
    expect(resolveTombstoneOptions({ cache: { reloadJitterMs: 0 } }).cache).toMatchObject({ reloadJitterMs: 0 });
  });

  it('grows the filter when more keys are added than it was sized for', async () => {
    const { lookup } = setup({ cache: { filter: { minCapacity: 1000 } } });
    lookup.listening();
    await lookup.loaded();
    expect(lookup.stats().filter.capacity).toBe(1000);
    lookup.invalidate({ scope: '', type: 'item', listed: Array.from({ length: 1100 }, (_, i) => `k${i}`), unlisted: [] });
    await lookup.loaded();
    expect(lookup.stats().filter.capacity).toBeGreaterThanOrEqual(2000);
  });

  it('forgets everything when it stops listening, and does nothing when off', async () => {
    const { lookup, gone, service } = setup({ cache: { filter: false } });
    lookup.listening();
    gone('a');
    await lookup.resolve('item', 'a');
    lookup.deaf();
    expect(lookup.stats()).toMatchObject({ state: 'waiting', entries: 0 });
    service.lookup.mockClear();
    await lookup.resolve('item', 'a');
    expect(service.lookup).toHaveBeenCalledTimes(1);
    lookup.disable();
    lookup.listening();
    expect(lookup.stats().state).toBe('off');
  });

  it('keeps nothing past a tombstone’s expiry', async () => {
    const { lookup, answers, service } = setup({ cache: { filter: false } });
    lookup.listening();
    answers.set('/item/soon', { resolution: GONE, via: null, validUntil: Date.now() - 1, cacheable: true });
    await lookup.resolve('item', 'soon');
    await lookup.resolve('item', 'soon');
    expect(service.lookups).toBe(2);
  });
});

describe('TombstoneLookup and its circuit breaker', () => {
  /** A lookup whose database fails every query from now on, until `heal()`; its breaker on a clock of the test's. */
  function broken(options: TombstoneModuleOptions, rows: { id: string; scope: string; resource_type: string; resource_key: string }[] = []) {
    const built = setup({ ...options, circuitBreaker: { failures: 3, cooldownMs: 1000 } }, rows);
    const { lookup, service } = built;
    const logger = (lookup as unknown as { logger: { warn: () => void; log: () => void } }).logger;
    jest.spyOn(logger, 'warn').mockImplementation(() => undefined);
    jest.spyOn(logger, 'log').mockImplementation(() => undefined);
    const clock = jest.spyOn(lookup.breaker, 'now').mockReturnValue(0);
    const open = async () => {
      service.lookup.mockRejectedValue(new Error('connection refused'));
      for (const key of ['x1', 'x2', 'x3']) await expect(lookup.resolve('item', key)).rejects.toThrow('connection refused');
      expect(lookup.breaker.state).toBe('open');
      service.lookup.mockClear();
    };
    const heal = () => service.lookup.mockImplementation(async () => ({ resolution: GONE, via: null, validUntil: null, cacheable: true }));
    return { ...built, clock, open, heal };
  }

  it('refuses, without a query, a miss that needs the database; the filter and the store still answer', async () => {
    const rows = ['a', 'b', 'x1', 'x2', 'x3'].map((key, i) => ({ id: String(i + 1), scope: '', resource_type: 'item', resource_key: key }));
    const { lookup, service, gone, open } = broken({}, rows);
    lookup.listening();
    await lookup.loaded();
    gone('a');
    expect(await lookup.resolve('item', 'a')).toBe(GONE);
    await open();
    expect(lookup.resolve('item', 'never-was')).toStrictEqual(NONE); // the filter
    expect(lookup.resolve('item', 'a')).toBe(GONE); // the store
    await expect(lookup.resolve('item', 'b')).rejects.toBeInstanceOf(TombstoneCircuitOpenError);
    expect(service.lookup).not.toHaveBeenCalled();
  });

  it('refuses every lookup while not listening (nothing in memory is trusted), until a probe answers', async () => {
    const { lookup, service, clock, open, heal } = broken({});
    await open();
    await expect(lookup.resolve('item', 'a')).rejects.toBeInstanceOf(TombstoneCircuitOpenError);
    expect(service.lookup).not.toHaveBeenCalled();
    heal();
    clock.mockReturnValue(1000);
    expect(await lookup.resolve('item', 'a')).toBe(GONE);
    expect(lookup.breaker.state).toBe('closed');
    expect(await lookup.resolve('item', 'b')).toBe(GONE);
    expect(service.lookup).toHaveBeenCalledTimes(2);
  });

  it('does not take a key that cannot have a tombstone for the probe', async () => {
    const { lookup, service, clock, open, heal } = broken({});
    await open();
    heal();
    clock.mockReturnValue(1000);
    // A NUL in the key: answered `none` without a query, so it says nothing about the database.
    expect(lookup.resolve('item', 'bad\u0000key')).toStrictEqual(NONE);
    expect(lookup.breaker.state).toBe('open');
    expect(await lookup.resolve('item', 'a')).toBe(GONE);
    expect(lookup.breaker.state).toBe('closed');
    expect(service.lookup).toHaveBeenCalledTimes(1);
  });
});
