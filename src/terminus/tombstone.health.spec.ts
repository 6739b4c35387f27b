import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import type { ModuleRef } from '@nestjs/core';
import { HealthIndicatorService } from '@nestjs/terminus';
import { TombstoneCacheStore } from '../cache/tombstone.cache.js';
import { TombstoneLookup } from '../cache/tombstone.lookup.js';
import { TombstoneNotifications } from '../cache/tombstone.notifications.js';
import { TombstoneAnswerTally } from '../counters/tombstone.answers.js';
import { TombstoneHitCounter } from '../counters/tombstone.hits.js';
import { TombstoneMissLog } from '../counters/tombstone.misses.js';
import { TombstoneTable } from '../table/tombstone.table.js';
import { TOMBSTONE_OPTIONS } from '../tombstone.constants.js';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import { resolveTombstoneOptions } from '../tombstone.options-resolve.js';
import { TombstoneHealthIndicator } from './tombstone.health.js';

/** The module's parts as the indicator reads them; `query` is the DataSource's. */
function parts(query: () => Promise<unknown>) {
  const lookup = {
    stats: () => ({ state: 'coherent', entries: 0, filtered: 0, cached: 0, queried: 0, filter: { ready: true, keys: 0, capacity: 100_000, bytes: 0, lastLoadMs: 1 } }),
    breaker: { state: 'closed' },
  };
  return new Map<unknown, unknown>([
    [TOMBSTONE_OPTIONS, resolveTombstoneOptions({})],
    [TombstoneTable, { dataSource: { isInitialized: true, query } }],
    [TombstoneLookup, lookup],
    [TombstoneNotifications, { listening: true }],
    [TombstoneHitCounter, { pendingCount: 0, droppedTotal: 0 }],
    [TombstoneMissLog, { pendingCount: 0, droppedTotal: 0 }],
    [TombstoneCacheStore, { size: 0 }],
    [TombstoneAnswerTally, new TombstoneAnswerTally()],
  ]);
}

function moduleRefOf(known: Map<unknown, unknown>): ModuleRef {
  return {
    get: (token: unknown) => {
      if (!known.has(token)) throw new Error('unknown element');
      return known.get(token);
    },
  } as unknown as ModuleRef;
}

async function indicator(query: () => Promise<unknown> = async () => [{ '?column?': 1 }]) {
  const health = new TombstoneHealthIndicator(new HealthIndicatorService(), moduleRefOf(parts(query)));
  await health.onModuleInit();
  return health;
}

describe('TombstoneHealthIndicator', () => {
  let logs: { level: string; message: string }[];

  beforeEach(() => {
    logs = [];
    jest.spyOn(Logger.prototype, 'error').mockImplementation((message) => void logs.push({ level: 'error', message: String(message) }));
    jest.spyOn(Logger.prototype, 'log').mockImplementation((message) => void logs.push({ level: 'log', message: String(message) }));
  });

  afterEach(() => jest.restoreAllMocks());

  it('answers under the key it is given, in the shape Terminus expects', async () => {
    const health = await indicator();
    const result = await health.isHealthy('db-and-cache');
    expect(Object.keys(result)).toEqual(['db-and-cache']);
    expect(result['db-and-cache']).toMatchObject({ status: 'up', database: { status: 'up' } });
    expect(await health.isHealthy()).toHaveProperty('tombstones.status', 'up');
  });

  it('refuses to start without TombstoneModule, saying what to do', async () => {
    const health = new TombstoneHealthIndicator(new HealthIndicatorService(), moduleRefOf(new Map()));
    await expect(health.onModuleInit()).rejects.toThrow(TombstoneConfigurationError);
    await expect(health.onModuleInit()).rejects.toThrow(/needs TombstoneModule[\s\S]*Import TombstoneModule.forRoot\(\)/);
  });

  it.each([
    [{ timeoutMs: 0 }, /timeoutMs must be a whole number of milliseconds from 1 to 60000, not 0/],
    [{ cacheMs: -1 }, /cacheMs must be a whole number of milliseconds from 0 to 60000, not -1/],
    [{ maxEventLagMs: 1.5 }, /maxEventLagMs must be a whole number/],
    [{ timeout: 100 }, /unknown isHealthy\(\) entry 'timeout'[\s\S]*Use only: timeoutMs, cacheMs, maxEventLagMs/],
    [null, /the options of isHealthy\(\) must be an object/],
  ])('refuses the options %j', async (options, message) => {
    const health = await indicator();
    await expect(health.isHealthy('tombstones', options as never)).rejects.toThrow(message);
  });

  it('refuses an empty key', async () => {
    const health = await indicator();
    await expect(health.isHealthy('')).rejects.toThrow(/the key must be a non-empty string/);
  });

  it('logs the whole failure once per outage (the details keep it short), and the recovery', async () => {
    let fail = true;
    const health = await indicator(async () => {
      if (fail) throw new Error('connect ECONNREFUSED 10.0.0.5:5432');
      return [];
    });
    const down = await health.isHealthy('tombstones', { cacheMs: 0 });
    expect(down.tombstones).toMatchObject({ status: 'down', database: { status: 'down', error: 'Error' } });
    expect(JSON.stringify(down)).not.toContain('10.0.0.5');
    await health.isHealthy('tombstones', { cacheMs: 0 });
    fail = false;
    await health.isHealthy('tombstones', { cacheMs: 0 });
    await health.isHealthy('tombstones', { cacheMs: 0 });
    expect(logs).toEqual([
      { level: 'error', message: 'Tombstone health: the database check failed: connect ECONNREFUSED 10.0.0.5:5432' },
      { level: 'log', message: 'Tombstone health: the database answers again.' },
    ]);
  });
});
