import type { Type } from '@nestjs/common';
import type { TombstoneCacheStore } from './cache/tombstone.cache.js';
import { TombstoneConfigurationError } from './tombstone.exceptions.js';
import type { TombstoneRenderer } from './tombstone.renderer.js';
import { type TombstoneScopeSource } from './tombstone.types.js';



/** `Cache-Control` values per answer; `false` sends none. */
export interface TombstoneCacheControl {
  /** 410 Gone. Default: `'max-age=86400'` (410 is cacheable; one day). */
  gone: string | false;
  /** 301 / 308. Default: `'max-age=86400'`. */
  permanentRedirect: string | false;
  /** 302 / 307. Default: `'no-store'`. */
  temporaryRedirect: string | false;
  /** 404. Default: `'no-store'`. */
  notFound: string | false;
}

/** How answers from tombstones are counted (`tombstones.hit_count`, `last_hit_at`). */
export interface TombstoneHitCountOptions {
  /** Longest time a counted hit waits in memory before it is written. Default: `10000`. */
  flushIntervalMs?: number;
  /**
   * Most tombstones counted in memory between two writes; reaching it writes at once, and hits
   * of further tombstones are dropped (and logged) until the write is done. Default: `10000`.
   */
  maxPending?: number;
}

/** How 404s that no tombstone explained are logged (table `tombstone_misses`). */
export interface TombstoneMissLogOptions {
  /** Longest time a miss waits in memory before it is written. Default: `10000`. */
  flushIntervalMs?: number;
  /**
   * Most distinct (scope, type, key) held in memory between two writes; reaching it writes at
   * once, and misses of further keys are dropped (and logged) until the write is done.
   * Default: `10000`.
   */
  maxPending?: number;
  /** Most rows the table keeps; the least recently seen beyond it are deleted. Default: `100000`. */
  maxRows?: number;
  /** Rows not seen for this many days are deleted. Default: `30`. */
  retentionDays?: number;
}

/** The membership filter: every (scope, type, key) with a tombstone that is not `hidden`. */
export interface TombstoneFilterOptions {
  /** Share of unknown keys the filter lets through to the cache and the database. Default: `0.01`. */
  falsePositiveRate?: number;
  /** Keys the filter is sized for at least; it is rebuilt larger when it fills. Default: `100000`. */
  minCapacity?: number;
}

/** The lookup cache and what keeps it coherent; see the README, "Lookup cache". */
export interface TombstoneLookupCacheOptions {
  /** Most answers kept (the default store). Default: `10000`. */
  maxEntries?: number;
  /** Most memory the answers take, estimated (the default store). Default: `16777216` (16 MiB). */
  maxBytes?: number;
  /** Longest time an answer is kept, positive or negative. Default: `300000` (5 minutes). */
  ttlMs?: number;
  /** A store of your own instead of the in-process LRU (`maxEntries` and `maxBytes` then do not apply). */
  store?: TombstoneCacheStore;
  /** The membership filter that answers unknown keys without a query; `false` turns it off. Default: on. */
  filter?: boolean | TombstoneFilterOptions;
  /**
   * Where the connection that LISTENs for changes goes, as a `pg` client config or a connection
   * string. It must reach PostgreSQL itself (not PgBouncer in transaction mode). Default: the
   * DataSource's own settings.
   */
  listen?: string | Record<string, unknown>;
}

/**
 * Options of `TombstoneModule.forRoot()` / `forRootAsync()`. Every field is optional; the
 * defaults below are the whole list.
 */
export class TombstoneModuleOptions {
  /**
   * Name of the TypeORM DataSource that holds the tombstone table (as given to
   * `TypeOrmModule.forRoot({ name })`). Default: the default DataSource.
   */
  dataSource?: string;

  /** Where a request's scope comes from; see `TombstoneScopeSource`. Default: unscoped. */
  scope?: TombstoneScopeSource;

  /**
   * RFC 9457 problem details (`application/problem+json`):
   * `'negotiate'` when the client's `Accept` asks for them, `'always'`, or `'never'`.
   * Default: `'negotiate'`.
   */
  problemDetails?: 'negotiate' | 'always' | 'never';

  /** `Cache-Control` per answer. Default: see `TombstoneCacheControl`. */
  cacheControl?: Partial<TombstoneCacheControl>;

  /**
   * Time budget of one tombstone lookup, in milliseconds. Past it the client gets the plain 404
   * and the timeout is logged. Default: `2000`.
   */
  lookupTimeoutMs?: number;

  /**
   * Most lookups that wait on the database at once, each holding one connection of the
   * DataSource's pool; further lookups queue (within `lookupTimeoutMs`). Keep it below your pool
   * size: the rest of the pool stays your app's, however slow the database or heavy the flood.
   * Default: `4`.
   */
  maxConcurrentLookups?: number;

  /**
   * Sends the lookup as a named prepared statement, planned once per connection (most of a cold
   * lookup's time is planning). Turn it off behind a pooler that does not keep prepared
   * statements (PgBouncer in transaction mode before 1.21); the module also does so by itself
   * when a connection says it lost one. Default: `true`.
   */
  preparedStatements?: boolean;

  /** Header that carries the request id, read from the client and always answered. Default: `'x-request-id'`. */
  requestIdHeader?: string;

  /** Renders answers; subclass `TombstoneRenderer` to change bodies. Default: `TombstoneRenderer`. */
  renderer?: Type<TombstoneRenderer>;

  /**
   * Who acts in a request, e.g. `(req) => req.user?.id`: recorded as the actor of every tombstone
   * written while serving it (captured or recorded). Read when the tombstone is written, so after
   * your guards ran. Default: none (no per-request work at all).
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the app's own request type (Express, Fastify, with its `user`)
  actor?: (request: any) => string | null | undefined;

  /**
   * What start-up does when a `@TombstoneTracked` entity's capture triggers are missing or do
   * not match its declarations: `'error'` (refuse to start), `'warn'` (log), `'off'`.
   * Default: `'error'`.
   */
  captureCheck?: 'error' | 'warn' | 'off';

  /**
   * Counts every answer a tombstone gave (410, redirect, hidden 404) in its row's `hit_count` and
   * `last_hit_at`. Counted in memory and written in one statement per batch, never during the
   * request. `false` turns it off. Default: on, with the defaults of `TombstoneHitCountOptions`.
   */
  hitCounts?: boolean | TombstoneHitCountOptions;

  /**
   * Logs 404s that no tombstone explained, per (scope, type, key), in `tombstone_misses`: the
   * broken links worth a tombstone. Batched like hit counts, with bounded memory and table size.
   * `true` turns it on with the defaults of `TombstoneMissLogOptions`. Default: `false` (off).
   */
  missLog?: boolean | TombstoneMissLogOptions;

  /**
   * Keeps lookup answers in memory and a membership filter of tombstoned keys, kept coherent
   * across instances by PostgreSQL `LISTEN`/`NOTIFY`. `false` turns it off (every miss of a
   * `@Tombstoned` route is then one query). Default: on, with the defaults of
   * `TombstoneLookupCacheOptions`.
   */
  cache?: boolean | TombstoneLookupCacheOptions;
}

export interface ResolvedCacheOptions {
  maxEntries: number;
  maxBytes: number;
  ttlMs: number;
  store?: TombstoneCacheStore;
  filter: { falsePositiveRate: number; minCapacity: number } | false;
  listen?: string | Record<string, unknown>;
}

export interface ResolvedHitCountOptions {
  flushIntervalMs: number;
  maxPending: number;
}

export interface ResolvedMissLogOptions extends ResolvedHitCountOptions {
  maxRows: number;
  retentionDays: number;
}

export interface ResolvedTombstoneOptions {
  dataSource?: string;
  scope?: TombstoneScopeSource;
  problemDetails: 'negotiate' | 'always' | 'never';
  cacheControl: TombstoneCacheControl;
  lookupTimeoutMs: number;
  maxConcurrentLookups: number;
  preparedStatements: boolean;
  requestIdHeader: string;
  renderer?: Type<TombstoneRenderer>;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- see TombstoneModuleOptions.actor
  actor?: (request: any) => string | null | undefined;
  captureCheck: 'error' | 'warn' | 'off';
  hitCounts: ResolvedHitCountOptions | false;
  missLog: ResolvedMissLogOptions | false;
  cache: ResolvedCacheOptions | false;
}

export const DEFAULT_CACHE_CONTROL: TombstoneCacheControl = {
  gone: 'max-age=86400',
  permanentRedirect: 'max-age=86400',
  temporaryRedirect: 'no-store',
  notFound: 'no-store',
};

const KNOWN_OPTIONS = new Set([
  'dataSource', 'scope', 'problemDetails', 'cacheControl', 'lookupTimeoutMs', 'maxConcurrentLookups', 'preparedStatements', 'requestIdHeader', 'renderer', 'actor',
  'captureCheck', 'hitCounts', 'missLog', 'cache',
]);
const HIT_COUNT_DEFAULTS: ResolvedHitCountOptions = { flushIntervalMs: 10_000, maxPending: 10_000 };
const MISS_LOG_DEFAULTS: ResolvedMissLogOptions = { ...HIT_COUNT_DEFAULTS, maxRows: 100_000, retentionDays: 30 };
/** Whole-number range of each batching setting. */
const BATCH_LIMITS: Record<keyof ResolvedMissLogOptions, { min: number; max: number; unit: string }> = {
  flushIntervalMs: { min: 100, max: 3_600_000, unit: 'milliseconds' },
  maxPending: { min: 1, max: 1_000_000, unit: 'entries' },
  maxRows: { min: 1, max: 100_000_000, unit: 'rows' },
  retentionDays: { min: 1, max: 36_500, unit: 'days' },
};
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
 
const HEADER_VALUE = /^[\u0020-\u007e]*$/;

/** Applies the defaults and checks every option once, at bootstrap. */
export function resolveTombstoneOptions(options: TombstoneModuleOptions | undefined): ResolvedTombstoneOptions {
  const given = options ?? {};
  const fail = (message: string, ...solutions: string[]): never => {
    throw new TombstoneConfigurationError(`TombstoneModule: ${message}`, solutions);
  };
  if (typeof given !== 'object') fail('options must be an object.');
  for (const key of Object.keys(given)) {
    if (!KNOWN_OPTIONS.has(key)) {
      fail(`unknown option '${key}'.`, `Use only: ${[...KNOWN_OPTIONS].join(', ')}.`);
    }
  }
  if (given.dataSource !== undefined && (typeof given.dataSource !== 'string' || given.dataSource === '')) {
    fail('dataSource must be the name of a TypeORM DataSource.', "Omit it for the default DataSource, or pass the `name` you gave TypeOrmModule.forRoot().");
  }
  if (given.scope !== undefined) validateScopeSource(given.scope, 'scope');
  const problemDetails = given.problemDetails ?? 'negotiate';
  if (!['negotiate', 'always', 'never'].includes(problemDetails)) {
    fail(`problemDetails must be 'negotiate', 'always' or 'never', not ${JSON.stringify(problemDetails)}.`);
  }
  const cacheControl = { ...DEFAULT_CACHE_CONTROL };
  if (given.cacheControl !== undefined) {
    if (typeof given.cacheControl !== 'object' || given.cacheControl === null) fail('cacheControl must be an object.');
    for (const [key, value] of Object.entries(given.cacheControl)) {
      if (!Object.hasOwn(DEFAULT_CACHE_CONTROL, key)) {
        fail(`unknown cacheControl entry '${key}'.`, `Use only: ${Object.keys(DEFAULT_CACHE_CONTROL).join(', ')}.`);
      }
      if (value !== false && (typeof value !== 'string' || value === '' || !HEADER_VALUE.test(value))) {
        fail(`cacheControl.${key} must be a Cache-Control header value (printable ASCII) or false.`);
      }
      cacheControl[key as keyof TombstoneCacheControl] = value as string | false;
    }
  }
  const lookupTimeoutMs = given.lookupTimeoutMs ?? 2000;
  if (!Number.isInteger(lookupTimeoutMs) || lookupTimeoutMs < 1 || lookupTimeoutMs > 60_000) {
    fail(`lookupTimeoutMs must be a whole number of milliseconds from 1 to 60000, not ${JSON.stringify(lookupTimeoutMs)}.`);
  }
  const maxConcurrentLookups = given.maxConcurrentLookups ?? 4;
  if (!Number.isInteger(maxConcurrentLookups) || maxConcurrentLookups < 1 || maxConcurrentLookups > 1000) {
    fail(`maxConcurrentLookups must be a whole number from 1 to 1000, not ${JSON.stringify(maxConcurrentLookups)}.`, 'Keep it below the pool size of your DataSource.');
  }
  const preparedStatements = given.preparedStatements ?? true;
  if (typeof preparedStatements !== 'boolean') fail(`preparedStatements must be true or false, not ${JSON.stringify(preparedStatements)}.`);
  const requestIdHeader = given.requestIdHeader ?? 'x-request-id';
  if (typeof requestIdHeader !== 'string' || !HEADER_NAME.test(requestIdHeader)) {
    fail(`requestIdHeader must be an HTTP header name, not ${JSON.stringify(requestIdHeader)}.`);
  }
  if (given.renderer !== undefined && typeof given.renderer !== 'function') {
    fail('renderer must be a class that extends TombstoneRenderer.');
  }
  if (given.actor !== undefined && typeof given.actor !== 'function') {
    fail('actor must be a function of the request, e.g. (req) => req.user?.id.');
  }
  const captureCheck = given.captureCheck ?? 'error';
  if (!['error', 'warn', 'off'].includes(captureCheck)) {
    fail(`captureCheck must be 'error', 'warn' or 'off', not ${JSON.stringify(captureCheck)}.`);
  }
  return {
    dataSource: given.dataSource,
    scope: given.scope,
    problemDetails,
    cacheControl,
    lookupTimeoutMs,
    maxConcurrentLookups,
    preparedStatements,
    requestIdHeader,
    renderer: given.renderer,
    actor: given.actor,
    captureCheck,
    hitCounts: resolveBatching('hitCounts', given.hitCounts, HIT_COUNT_DEFAULTS, fail),
    missLog: given.missLog === undefined ? false : resolveBatching('missLog', given.missLog, MISS_LOG_DEFAULTS, fail),
    cache: resolveCache(given.cache, fail),
  };
}

const CACHE_LIMITS = {
  maxEntries: { min: 1, max: 10_000_000, unit: 'entries' },
  maxBytes: { min: 1024, max: 8 * 1024 ** 3, unit: 'bytes' },
  ttlMs: { min: 1, max: 86_400_000, unit: 'milliseconds' },
  minCapacity: { min: 1000, max: 100_000_000, unit: 'keys' },
} as const;

function resolveCache(value: unknown, fail: (message: string, ...solutions: string[]) => never): ResolvedCacheOptions | false {
  const resolved: ResolvedCacheOptions = {
    maxEntries: 10_000,
    maxBytes: 16 * 1024 * 1024,
    ttlMs: 300_000,
    filter: { falsePositiveRate: 0.01, minCapacity: 100_000 },
  };
  if (value === false) return false;
  if (value === undefined || value === true) return resolved;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail(`cache must be false, true or an object, not ${JSON.stringify(value)}.`, 'e.g. cache: { maxEntries: 50000 }');
  }
  const whole = (name: keyof typeof CACHE_LIMITS, setting: unknown): number => {
    const { min, max, unit } = CACHE_LIMITS[name];
    if (!Number.isInteger(setting) || (setting as number) < min || (setting as number) > max) {
      fail(`cache.${name === 'minCapacity' ? 'filter.minCapacity' : name} must be a whole number of ${unit} from ${min} to ${max}, not ${JSON.stringify(setting)}.`);
    }
    return setting as number;
  };
  for (const [key, setting] of Object.entries(value as Record<string, unknown>)) {
    if (setting === undefined) continue;
    switch (key) {
      case 'maxEntries':
      case 'maxBytes':
      case 'ttlMs':
        resolved[key] = whole(key, setting);
        break;
      case 'store': {
        const store = setting as Record<string, unknown> | null;
        const methods = ['get', 'set', 'delete', 'clear'];
        if (typeof store !== 'object' || store === null || methods.some((m) => typeof store[m] !== 'function')) {
          fail('cache.store must be an instance of a TombstoneCacheStore (get, set, delete, clear).', 'e.g. cache: { store: new LruTombstoneCacheStore({ maxEntries: 50000 }) }');
        }
        resolved.store = setting as TombstoneCacheStore;
        break;
      }
      case 'filter': {
        if (setting === false) {
          resolved.filter = false;
          break;
        }
        if (setting === true) break;
        if (typeof setting !== 'object' || setting === null || Array.isArray(setting)) {
          fail(`cache.filter must be false, true or { falsePositiveRate, minCapacity }, not ${JSON.stringify(setting)}.`);
        }
        const filter = { falsePositiveRate: 0.01, minCapacity: 100_000 };
        for (const [name, given] of Object.entries(setting as Record<string, unknown>)) {
          if (name === 'minCapacity') filter.minCapacity = whole('minCapacity', given);
          else if (name === 'falsePositiveRate') {
            if (typeof given !== 'number' || !(given >= 0.000001 && given <= 0.5)) {
              fail(`cache.filter.falsePositiveRate must be a number from 0.000001 to 0.5, not ${JSON.stringify(given)}.`);
            }
            filter.falsePositiveRate = given as number;
          } else fail(`unknown cache.filter entry '${name}'.`, 'Use only: falsePositiveRate, minCapacity.');
        }
        resolved.filter = filter;
        break;
      }
      case 'listen':
        if (!(typeof setting === 'string' && setting !== '') && (typeof setting !== 'object' || setting === null || Array.isArray(setting))) {
          fail('cache.listen must be a connection string or a pg client config object.');
        }
        resolved.listen = setting as string | Record<string, unknown>;
        break;
      default:
        fail(`unknown cache entry '${key}'.`, 'Use only: maxEntries, maxBytes, ttlMs, store, filter, listen.');
    }
  }
  return resolved;
}

/** `false`, `true` (the defaults) or an object of some of the defaults' fields, each in range. */
function resolveBatching<T extends ResolvedHitCountOptions>(
  name: string,
  value: unknown,
  defaults: T,
  fail: (message: string, ...solutions: string[]) => never,
): T | false {
  if (value === false) return false;
  if (value === undefined || value === true) return { ...defaults };
  const fields = Object.keys(defaults).join(', ');
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail(`${name} must be false, true or an object of ${fields}, not ${JSON.stringify(value)}.`, `e.g. ${name}: { flushIntervalMs: 30000 }`);
  }
  const resolved = { ...defaults };
  for (const [key, setting] of Object.entries(value as Record<string, number>)) {
    if (!Object.hasOwn(defaults, key)) fail(`unknown ${name} entry '${key}'.`, `Use only: ${fields}.`);
    const { min, max, unit } = BATCH_LIMITS[key as keyof ResolvedMissLogOptions];
    if (!Number.isInteger(setting) || setting < min || setting > max) {
      fail(`${name}.${key} must be a whole number of ${unit} from ${min} to ${max}, not ${JSON.stringify(setting)}.`);
    }
    Object.assign(resolved, { [key]: setting });
  }
  return resolved;
}

export function validateScopeSource(source: unknown, where: string): void {
  if (typeof source === 'function') return;
  if (typeof source === 'object' && source !== null) {
    const keys = Object.keys(source);
    const { header, param } = source as { header?: unknown; param?: unknown };
    if (keys.length === 1 && typeof header === 'string' && HEADER_NAME.test(header)) return;
    if (keys.length === 1 && typeof param === 'string' && param !== '') return;
  }
  throw new TombstoneConfigurationError(`TombstoneModule: ${where} must be { header }, { param } or a function of the request.`, [
    "e.g. scope: { header: 'x-tenant-id' }",
    'e.g. scope: (req) => req.user?.tenantId',
  ]);
}
