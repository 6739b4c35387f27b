import type { Type } from '@nestjs/common';
import { TombstoneConfigurationError } from './tombstone.exceptions.js';
import type { TombstoneRenderer } from './tombstone.renderer.js';

/** Anything with HTTP headers and route params: an Express request or a Fastify request. */
export interface TombstoneRequest {
  method: string;
  url: string;
  originalUrl?: string;
  headers: Record<string, string | string[] | undefined>;
  params?: Record<string, string | undefined>;
  [key: string]: unknown;
}

/**
 * Where the scope (tenant, region, site) of a request comes from. A request-scoped tombstone is
 * only ever looked up in that scope; every other scope's tombstones stay invisible to it.
 * - `{ header: 'x-tenant-id' }`: a request header;
 * - `{ param: 'tenant' }`: a route parameter;
 * - a function of the request (e.g. `(req) => req.user?.tenantId`), sync or async.
 * A missing value means the unscoped (`''`) scope.
 */
export type TombstoneScopeSource =
  | { header: string }
  | { param: string }
  | ((request: TombstoneRequest) => string | null | undefined | Promise<string | null | undefined>);

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
  requestIdHeader: string;
  renderer?: Type<TombstoneRenderer>;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- see TombstoneModuleOptions.actor
  actor?: (request: any) => string | null | undefined;
  captureCheck: 'error' | 'warn' | 'off';
  hitCounts: ResolvedHitCountOptions | false;
  missLog: ResolvedMissLogOptions | false;
}

export const DEFAULT_CACHE_CONTROL: TombstoneCacheControl = {
  gone: 'max-age=86400',
  permanentRedirect: 'max-age=86400',
  temporaryRedirect: 'no-store',
  notFound: 'no-store',
};

const KNOWN_OPTIONS = new Set([
  'dataSource', 'scope', 'problemDetails', 'cacheControl', 'lookupTimeoutMs', 'requestIdHeader', 'renderer', 'actor',
  'captureCheck', 'hitCounts', 'missLog',
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
    requestIdHeader,
    renderer: given.renderer,
    actor: given.actor,
    captureCheck,
    hitCounts: resolveBatching('hitCounts', given.hitCounts, HIT_COUNT_DEFAULTS, fail),
    missLog: given.missLog === undefined ? false : resolveBatching('missLog', given.missLog, MISS_LOG_DEFAULTS, fail),
  };
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
