import type { TombstoneLookupStats } from '../cache/tombstone.lookup.js';
import { resolveTombstoneOptions } from '../tombstone.options-resolve.js';
import type { TombstoneModuleOptions } from '../tombstone.options.js';
import { type HealthFacts, judge } from './health.verdict.js';

const SETTINGS = { timeoutMs: 1000, maxEventLagMs: 900_000 };

function lookup(overrides: Partial<TombstoneLookupStats> = {}, filter: Partial<TombstoneLookupStats['filter']> = {}): TombstoneLookupStats {
  return {
    state: 'coherent',
    entries: 3,
    filtered: 0,
    cached: 0,
    queried: 0,
    ...overrides,
    filter: { ready: true, keys: 10, capacity: 100_000, bytes: 1024, lastLoadMs: 5, lastLoadFrom: 'table', lastLoadRows: 10, ...filter },
  };
}

/** Everything fine, unless `overrides` says otherwise. */
function facts(overrides: Partial<HealthFacts> = {}, options: TombstoneModuleOptions = {}): HealthFacts {
  return {
    options: resolveTombstoneOptions(options),
    database: { ok: true, value: undefined, ms: 2, cached: false },
    listening: true,
    lookup: lookup(),
    breaker: 'closed',
    hits: { pending: 1, dropped: 0 },
    misses: { pending: 0, dropped: 0 },
    ...overrides,
  };
}

const sinks = (...list: { pending?: number; dead?: number; lagMs?: number }[]) =>
  ({
    ok: true,
    value: { sinks: list.map((s, i) => ({ sink: `s${i}`, pending: 0, dead: 0, lagMs: 0, configured: true, thisInstance: null, ...s })) },
    ms: 3,
    cached: false,
  }) as const;

describe('judge', () => {
  it('up: every part up, and no message', () => {
    const { status, message, details } = judge(facts(), SETTINGS);
    expect(status).toBe('up');
    expect(message).toBeUndefined();
    expect(details).toEqual({
      database: { status: 'up', responseTimeMs: 2, cached: false },
      listener: { status: 'up', listening: true },
      cache: { status: 'up', state: 'coherent', entries: 3, filter: { status: 'up', ready: true, overCapacity: false } },
      breaker: { status: 'up', state: 'closed' },
      counters: { status: 'up', hits: { pending: 1, dropped: 0 }, misses: 'off' },
    });
  });

  it('down: the database does not answer, and only then', () => {
    const timedOut = judge(facts({ database: { ok: false, error: new Error('no answer within 1000 ms'), timedOut: true, ms: 1000, cached: false } }), SETTINGS);
    expect(timedOut.status).toBe('down');
    expect(timedOut.details.database).toEqual({ status: 'down', responseTimeMs: 1000, cached: false, error: 'timeout' });
    expect(timedOut.message).toMatch(/^the database did not answer within 1000 ms: writes fail/);
    const refused = judge(
      facts({ database: { ok: false, error: Object.assign(new Error('connect ECONNREFUSED 10.0.0.5:5432'), { code: 'ECONNREFUSED' }), timedOut: false, ms: 1, cached: true } }),
      SETTINGS,
    );
    expect(refused.details.database).toEqual({ status: 'down', responseTimeMs: 1, cached: true, error: 'ECONNREFUSED' });
    // Nothing the error carries: no address.
    expect(JSON.stringify(refused)).not.toContain('10.0.0.5');
    const failed = (error: unknown) => judge(facts({ database: { ok: false, error, timedOut: false, ms: 1, cached: false } }), SETTINGS).details.database.error;
    // Plain words are kept; anything that may name a place or a person is not.
    expect(failed(new Error('Connection terminated unexpectedly'))).toBe('Connection terminated unexpectedly');
    expect(failed(new Error('getaddrinfo failed for db.internal'))).toBe('Error');
    expect(failed(new TypeError('could not reach 10.0.0.5'))).toBe('TypeError');
    expect(failed(new Error('password authentication failed for user "app"'))).toBe('Error');
    expect(failed(Object.assign(new Error('password authentication failed for user "app"'), { code: '28P01' }))).toBe('28P01');
    expect(failed('a string')).toBe('Error');
  });

  it('down with the other parts degraded: all of it said', () => {
    const { status, message } = judge(
      facts({
        database: { ok: false, error: new Error('x'), timedOut: true, ms: 1000, cached: false },
        listening: false,
        lookup: lookup({ state: 'waiting' }, { ready: false }),
        breaker: 'open',
      }),
      SETTINGS,
    );
    expect(status).toBe('down');
    expect(message).toContain('the database did not answer');
    expect(message).toContain('not listening for changes');
    expect(message).toContain('the circuit breaker is open');
  });

  it.each<[string, Partial<HealthFacts>, RegExp]>([
    ['not listening', { listening: false, lookup: lookup({ state: 'waiting' }, { ready: false }) }, /^not listening for changes: every miss is a query/],
    ['the filter loading', { lookup: lookup({}, { ready: false }) }, /^the membership filter is loading/],
    ['the filter over its capacity', { lookup: lookup({}, { keys: 100_001 }) }, /^the membership filter holds more keys than it was sized for/],
    ['the circuit open', { breaker: 'open' }, /^the circuit breaker is open: misses that need the database get the plain 404/],
    ['the circuit half-open', { breaker: 'half-open' }, /^the circuit breaker is half-open/],
    ['the cache off for want of notify triggers', { listening: false, lookup: lookup({ state: 'off' }, { ready: false }) }, /^the lookup cache is off: the tombstone table does not announce its changes/],
  ])('degraded, not down: %s', (_label, overrides, reason) => {
    const { status, message } = judge(facts(overrides), SETTINGS);
    expect(status).toBe('degraded');
    expect(message).toMatch(reason);
    expect(message?.split('; ')).toHaveLength(1);
  });

  it('not listening says so once: the filter, unused meanwhile, is not reported too', () => {
    const { details } = judge(facts({ listening: false, lookup: lookup({ state: 'waiting' }, { ready: false }) }), SETTINGS);
    expect(details.listener.status).toBe('degraded');
    expect(details.cache.status).toBe('degraded');
    expect(details.cache.filter.status).toBe('up');
  });

  it('what the options turned off is off, and up', () => {
    const { status, details } = judge(
      facts({ listening: false, lookup: lookup({ state: 'off', entries: 0 }, { ready: false, keys: 0, capacity: 0 }) }, { cache: false, circuitBreaker: false, hitCounts: false }),
      SETTINGS,
    );
    expect(status).toBe('up');
    expect(details).toMatchObject({
      listener: { status: 'off' },
      cache: { status: 'off', filter: { status: 'off' } },
      breaker: { status: 'off', state: 'off' },
      counters: { hits: 'off', misses: 'off' },
    });
    const noFilter = judge(facts({ lookup: lookup({}, { ready: false }) }, { cache: { filter: false } }), SETTINGS);
    expect(noFilter.status).toBe('up');
    expect(noFilter.details.cache.filter.status).toBe('off');
  });

  it('dropped hits and misses are reported, and never degrade', () => {
    const { status, details } = judge(facts({ hits: { pending: 10, dropped: 5000 }, misses: { pending: 10, dropped: 7 } }, { missLog: true }), SETTINGS);
    expect(status).toBe('up');
    expect(details.counters).toEqual({ status: 'up', hits: { pending: 10, dropped: 5000 }, misses: { pending: 10, dropped: 7 } });
  });

  describe('events', () => {
    it('up: totals over every sink', () => {
      const { status, details } = judge(facts({ events: sinks({ pending: 2, lagMs: 1500 }, { pending: 1, lagMs: 300 }) }), SETTINGS);
      expect(status).toBe('up');
      expect(details.events).toEqual({ status: 'up', cached: false, sinks: 2, pending: 3, deadLetters: 0, oldestPendingMs: 1500 });
    });

    it('dead letters: degraded, and what to do', () => {
      const { status, message, details } = judge(facts({ events: sinks({ dead: 2 }, { dead: 1 }) }), SETTINGS);
      expect(status).toBe('degraded');
      expect(details.events).toMatchObject({ status: 'degraded', deadLetters: 3 });
      expect(message).toBe('3 event deliveries are dead letters: retry or discard them (admin endpoints, /events).');
    });

    it('a sink behind maxEventLagMs: degraded', () => {
      expect(judge(facts({ events: sinks({ pending: 1, lagMs: 900_000 }) }), SETTINGS).status).toBe('up');
      const { status, message } = judge(facts({ events: sinks({ pending: 1, lagMs: 900_001 }) }), SETTINGS);
      expect(status).toBe('degraded');
      expect(message).toMatch(/^the oldest pending event delivery is 900 s old \(more than 900 s\)/);
    });

    it("figures that cannot be read: degraded (the database's own check decides down)", () => {
      const { status, details } = judge(facts({ events: { ok: false, error: new Error('slow'), timedOut: true, ms: 1000, cached: false } }), SETTINGS);
      expect(status).toBe('degraded');
      expect(details.events).toMatchObject({ status: 'degraded', error: 'timeout' });
    });
  });
});
