import { TombstoneConfigurationError } from './tombstone.exceptions.js';
import { describe, KEY_NORMALIZERS, type KeyNormalizer } from './tombstone.keys.js';
import { isValidType } from './tombstone.validation.js';
import {
  type ResolvedCacheControl,
  type ResolvedCacheOptions,
  type ResolvedCacheTagsOptions,
  type ResolvedCircuitBreakerOptions,
  type ResolvedFilterOptions,
  type ResolvedTombstoneOptions,
  TombstoneCacheControl,
  type TombstoneCacheDirectives,
  TombstoneCacheTagsOptions,
  TombstoneCircuitBreakerOptions,
  TombstoneFilterOptions,
  TombstoneHitCountOptions,
  TombstoneLookupCacheOptions,
  TombstoneMissLogOptions,
  TombstoneModuleOptions,
  type ResolvedSuggestionOptions,
  TombstoneSuggestionOptions,
} from './tombstone.options.js';

export type Fail = (message: string, ...solutions: string[]) => never;

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HEADER_VALUE = /^[\u0020-\u007e]*$/;

/** Whole-number range of each numeric option, by its name (the same wherever it appears). */
const RANGES: Record<string, { min: number; max: number; unit?: string }> = {
  lookupTimeoutMs: { min: 1, max: 60_000, unit: 'milliseconds' },
  maxConcurrentLookups: { min: 1, max: 1000 },
  failures: { min: 1, max: 1000, unit: 'lookups' },
  cooldownMs: { min: 1, max: 3_600_000, unit: 'milliseconds' },
  maxCooldownMs: { min: 1, max: 3_600_000, unit: 'milliseconds' },
  flushIntervalMs: { min: 100, max: 3_600_000, unit: 'milliseconds' },
  maxPending: { min: 1, max: 1_000_000, unit: 'entries' },
  maxRows: { min: 1, max: 100_000_000, unit: 'rows' },
  retentionDays: { min: 1, max: 36_500, unit: 'days' },
  maxEntries: { min: 1, max: 10_000_000, unit: 'entries' },
  maxBytes: { min: 1024, max: 8 * 1024 ** 3, unit: 'bytes' },
  ttlMs: { min: 1, max: 86_400_000, unit: 'milliseconds' },
  minCapacity: { min: 1000, max: 100_000_000, unit: 'keys' },
  reloadJitterMs: { min: 0, max: 600_000, unit: 'milliseconds' },
  maxQueriesPerSecond: { min: 1, max: 10_000, unit: 'queries' },
  burst: { min: 1, max: 10_000, unit: 'queries' },
  timeoutMs: { min: 1, max: 60_000, unit: 'milliseconds' },
};

/**
 * Applies the defaults and checks every option once, at bootstrap. An option that is
 * `undefined` is not given; any other value is checked.
 */
export function resolveTombstoneOptions(options: TombstoneModuleOptions | undefined): ResolvedTombstoneOptions {
  const fail: Fail = (message, ...solutions) => {
    throw new TombstoneConfigurationError(`TombstoneModule: ${message}`, solutions);
  };
  const given = options ?? {};
  if (typeof given !== 'object') fail('options must be an object.');
  const o = withDefaults('', TombstoneModuleOptions, given, fail);
  if (o.dataSource !== undefined && (typeof o.dataSource !== 'string' || o.dataSource === '')) {
    fail('dataSource must be the name of a TypeORM DataSource.', 'Omit it for the default DataSource, or pass the `name` you gave TypeOrmModule.forRoot().');
  }
  if (o.scope !== undefined) validateScopeSource(o.scope, 'scope');
  oneOf('problemDetails', o.problemDetails, ['negotiate', 'always', 'never'], fail);
  if (typeof o.problemTypeBase !== 'string' || !/^[A-Za-z][A-Za-z0-9+.-]*:[\x21-\x7e]+$/.test(o.problemTypeBase) || /["\\<>`{}|^]/.test(o.problemTypeBase)) {
    fail(
      `problemTypeBase must be an absolute URI of printable ASCII, not ${JSON.stringify(o.problemTypeBase)}.`,
      "e.g. 'https://api.example.com/problems/' (then types are https://api.example.com/problems/gone, …).",
    );
  }
  if (typeof o.html !== 'boolean') fail(`html must be true or false, not ${JSON.stringify(o.html)}.`, 'false answers browsers with JSON too, for a pure API.');
  const cacheControl = resolveCacheControl(o.cacheControl, fail);
  whole('lookupTimeoutMs', o.lookupTimeoutMs, fail);
  whole('maxConcurrentLookups', o.maxConcurrentLookups, fail, 'Keep it below the pool size of your DataSource.');
  if (typeof o.preparedStatements !== 'boolean') fail(`preparedStatements must be true or false, not ${JSON.stringify(o.preparedStatements)}.`);
  oneOf('lookups', o.lookups, ['primary', 'replica'], fail);
  if (o.lookups === 'replica' && o.cache === false) {
    fail(
      "lookups: 'replica' needs the lookup cache: it is what hears of changes, and keeps replica reads from answering older than them.",
      'Remove cache: false, or use lookups: \'primary\'.',
    );
  }
  if (typeof o.requestIdHeader !== 'string' || !HEADER_NAME.test(o.requestIdHeader)) {
    fail(`requestIdHeader must be an HTTP header name, not ${JSON.stringify(o.requestIdHeader)}.`);
  }
  if (o.requestId !== undefined && typeof o.requestId !== 'function') {
    fail(
      `requestId must be a function of the request that returns its id (got a value of type ${o.requestId === null ? 'null' : typeof o.requestId}).`,
      'e.g. requestId: (req) => req.id',
      'To take the id from a request header, set requestIdHeader instead.',
    );
  }
  if (o.renderer !== undefined && typeof o.renderer !== 'function') fail('renderer must be a class that extends TombstoneRenderer.');
  if (o.actor !== undefined && typeof o.actor !== 'function') fail('actor must be a function of the request, e.g. (req) => req.user?.id.');
  oneOf('captureCheck', o.captureCheck, ['error', 'warn', 'off'], fail);
  return {
    ...(o as unknown as ResolvedTombstoneOptions),
    cacheControl,
    circuitBreaker: resolveCircuitBreaker(o.circuitBreaker, fail),
    hitCounts: resolveBatching('hitCounts', o.hitCounts, TombstoneHitCountOptions, fail),
    missLog: resolveBatching('missLog', o.missLog, TombstoneMissLogOptions, fail),
    cache: resolveCache(o.cache, fail),
    cacheTags: resolveCacheTags(o.cacheTags, o.requestIdHeader, fail),
    normalizeKeys: resolveNormalizeKeys(o.normalizeKeys, fail),
    suggestions: resolveSuggestions(o.suggestions, fail),
  };
}

function resolveSuggestions(value: unknown, fail: Fail): ResolvedSuggestionOptions {
  const example = 'e.g. suggestions: { maxQueriesPerSecond: 2 }';
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(`suggestions must be an object, not ${JSON.stringify(value)}.`, example);
  const settings = withDefaults('suggestions', TombstoneSuggestionOptions, value as object, fail) as ResolvedSuggestionOptions;
  for (const [key, setting] of Object.entries(settings)) {
    if (key === 'trigram') {
      if (typeof setting !== 'boolean') fail(`suggestions.trigram must be true or false, not ${JSON.stringify(setting)}.`);
    } else {
      whole(`suggestions.${key}`, setting, fail, example);
    }
  }
  return settings;
}

/**
 * Checks a scope source, of the module or of a `@Tombstoned()` route (`where` names it in the
 * error).
 */
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

/**
 * `given` over a fresh instance of `Defaults`, as a plain object: a name that is not one of the
 * class's fields is refused, naming those that are; `undefined` leaves the default.
 */
export function withDefaults<T extends object>(path: string, Defaults: new () => T, given: object, fail: Fail): T {
  const defaults = new Defaults();
  const resolved = { ...defaults } as Record<string, unknown>;
  for (const [key, value] of Object.entries(given)) {
    if (!Object.hasOwn(defaults, key)) {
      fail(path ? `unknown ${path} entry '${key}'.` : `unknown option '${key}'.`, `Use only: ${Object.keys(defaults).join(', ')}.`);
    }
    if (value !== undefined) resolved[key] = value;
  }
  return resolved as T;
}

/** An option that takes `false` (off), `true` (on, with the defaults) or an object of some of the defaults. */
function switchable<T extends object>(
  path: string,
  value: unknown,
  Defaults: new () => T,
  fail: Fail,
  shape: (fields: string) => string,
  ...solutions: string[]
): T | false {
  if (value === false) return false;
  if (value !== true && (typeof value !== 'object' || value === null || Array.isArray(value))) {
    fail(`${path} must be false, true or ${shape(Object.keys(new Defaults()).join(', '))}, not ${JSON.stringify(value)}.`, ...solutions);
  }
  return withDefaults(path, Defaults, value === true ? {} : (value as object), fail);
}

/** Hit counts and the misses log: every setting a whole number in its range. */
function resolveBatching<T extends object>(path: string, value: unknown, Defaults: new () => T, fail: Fail): Required<T> | false {
  const settings = switchable(path, value, Defaults, fail, (fields) => `an object of ${fields}`, `e.g. ${path}: { flushIntervalMs: 30000 }`);
  if (settings) for (const [key, setting] of Object.entries(settings)) whole(`${path}.${key}`, setting, fail);
  return settings as Required<T> | false;
}

function resolveCircuitBreaker(value: unknown, fail: Fail): ResolvedCircuitBreakerOptions | false {
  const example = 'e.g. circuitBreaker: { failures: 10, cooldownMs: 5000 }';
  const breaker = switchable('circuitBreaker', value, TombstoneCircuitBreakerOptions, fail, (fields) => `{ ${fields} }`, example) as ResolvedCircuitBreakerOptions | false;
  if (!breaker) return false;
  for (const [key, setting] of Object.entries(breaker)) whole(`circuitBreaker.${key}`, setting, fail, example);
  if (breaker.maxCooldownMs < breaker.cooldownMs) {
    fail(
      `circuitBreaker.maxCooldownMs (${breaker.maxCooldownMs}) must be at least circuitBreaker.cooldownMs (${breaker.cooldownMs}).`,
      'Raise maxCooldownMs, or lower cooldownMs.',
    );
  }
  return breaker;
}

function resolveCacheControl(value: unknown, fail: Fail): ResolvedCacheControl {
  if (typeof value !== 'object' || value === null) fail('cacheControl must be an object.');
  const resolved = withDefaults('cacheControl', TombstoneCacheControl, value as object, fail) as Record<string, unknown>;
  for (const [key, header] of Object.entries(resolved)) {
    if (typeof header === 'object' && header !== null && !Array.isArray(header)) {
      resolved[key] = writeDirectives(key, header, fail);
    } else if (header !== false && (typeof header !== 'string' || header === '' || !HEADER_VALUE.test(header))) {
      fail(
        `cacheControl.${key} must be a Cache-Control header value (printable ASCII), an object of directives or false, not ${JSON.stringify(header)}.`,
        `e.g. cacheControl: { ${key}: 'max-age=3600' } or { ${key}: { maxAge: 3600, sMaxAge: 86400 } }`,
      );
    }
  }
  return resolved as ResolvedCacheControl;
}

/** The directives an object of `TombstoneCacheDirectives` may hold, in the order they are written. */
const DIRECTIVES: Record<keyof TombstoneCacheDirectives, string> = {
  public: 'public',
  maxAge: 'max-age',
  sMaxAge: 's-maxage',
  staleWhileRevalidate: 'stale-while-revalidate',
  staleIfError: 'stale-if-error',
};

/** Largest delta-seconds a cache must understand (RFC 9111 §1.2.2: larger values mean 2^31). */
const MAX_DELTA_SECONDS = 2 ** 31;

/** An object of directives written out as a Cache-Control value, once. */
function writeDirectives(entry: string, given: object, fail: Fail): string {
  const path = `cacheControl.${entry}`;
  const known = Object.keys(DIRECTIVES).join(', ');
  const example = `e.g. cacheControl: { ${entry}: { maxAge: 3600, sMaxAge: 86400 } }`;
  const directives: string[] = [];
  const values = given as Record<string, unknown>;
  for (const name of Object.keys(values)) {
    if (!Object.hasOwn(DIRECTIVES, name)) fail(`unknown ${path} directive '${name}'.`, `Use only: ${known}.`);
  }
  for (const [name, directive] of Object.entries(DIRECTIVES)) {
    const value = values[name];
    if (value === undefined) continue;
    if (name === 'public') {
      if (typeof value !== 'boolean') fail(`${path}.public must be true or false, not ${JSON.stringify(value)}.`, example);
      if (value) directives.push(directive);
    } else if (!Number.isInteger(value) || (value as number) < 0 || (value as number) > MAX_DELTA_SECONDS) {
      fail(`${path}.${name} must be a whole number of seconds from 0 to ${MAX_DELTA_SECONDS}, not ${JSON.stringify(value)}.`, example);
    } else {
      directives.push(`${directive}=${value as number}`);
    }
  }
  if (directives.length === 0) {
    fail(`${path} has no directive to send.`, `Give some of ${known}: ${example}.`, 'Or false, to send no Cache-Control.');
  }
  return directives.join(', ');
}

/** Headers the module writes itself on its answers: a tag header must be another one. */
const OWN_HEADERS = ['content-type', 'content-length', 'x-content-type-options', 'vary', 'cache-control', 'location', 'link'];

/** Separators of tags that no valid tag can hold (a tag has no space and no comma). */
const SEPARATORS = [' ', ',', ', '];

function resolveCacheTags(value: unknown, requestIdHeader: string, fail: Fail): ResolvedCacheTagsOptions | false {
  const tags = switchable('cacheTags', value, TombstoneCacheTagsOptions, fail, (fields) => `{ ${fields} }`, "e.g. cacheTags: { header: 'Cache-Tag' } for Cloudflare");
  if (!tags) return false;
  const { header, tag, separator } = tags;
  if (typeof header !== 'string' || !HEADER_NAME.test(header)) {
    fail(`cacheTags.header must be an HTTP header name, not ${JSON.stringify(header)}.`, "'Surrogate-Key' for Fastly, 'Cache-Tag' for Cloudflare.");
  }
  if ([...OWN_HEADERS, requestIdHeader.toLowerCase()].includes(header.toLowerCase())) {
    fail(`cacheTags.header cannot be ${header}: the module sets that header itself.`, "'Surrogate-Key' for Fastly, 'Cache-Tag' for Cloudflare.");
  }
  if (tag !== undefined && typeof tag !== 'function') {
    fail('cacheTags.tag must be a function of the resource type and the key.', 'e.g. cacheTags: { tag: (type, key) => `${type}-${key}` }', 'Omit it for the default tags.');
  }
  if (separator !== undefined && !SEPARATORS.includes(separator)) {
    fail(`cacheTags.separator must be one of ${SEPARATORS.map((s) => `'${s}'`).join(', ')}, not ${JSON.stringify(separator)}.`, "Omit it: ' ' for Surrogate-Key, ',' otherwise.");
  }
  return { header, tag, separator: separator ?? (header.toLowerCase() === 'surrogate-key' ? ' ' : ',') };
}

function resolveCache(value: unknown, fail: Fail): ResolvedCacheOptions | false {
  const cache = switchable('cache', value, TombstoneLookupCacheOptions, fail, () => 'an object', 'e.g. cache: { maxEntries: 50000 }');
  if (!cache) return false;
  whole('cache.maxEntries', cache.maxEntries, fail);
  whole('cache.maxBytes', cache.maxBytes, fail);
  whole('cache.ttlMs', cache.ttlMs, fail);
  whole('cache.reloadJitterMs', cache.reloadJitterMs, fail);
  const store = cache.store as unknown as Record<string, unknown> | null | undefined;
  if (store !== undefined && (typeof store !== 'object' || store === null || ['get', 'set', 'delete', 'clear'].some((m) => typeof store[m] !== 'function'))) {
    fail('cache.store must be an instance of a TombstoneCacheStore (get, set, delete, clear).', 'e.g. cache: { store: new LruTombstoneCacheStore({ maxEntries: 50000 }) }');
  }
  const listen: unknown = cache.listen;
  if (listen !== undefined && !(typeof listen === 'string' && listen !== '') && (typeof listen !== 'object' || listen === null || Array.isArray(listen))) {
    fail('cache.listen must be a connection string or a pg client config object.');
  }
  return { ...(cache as ResolvedCacheOptions), filter: resolveFilter(cache.filter, fail) };
}

function resolveFilter(value: unknown, fail: Fail): ResolvedFilterOptions | false {
  const filter = switchable('cache.filter', value, TombstoneFilterOptions, fail, (fields) => `{ ${fields} }`);
  if (!filter) return false;
  const rate = filter.falsePositiveRate;
  if (typeof rate !== 'number' || !(rate >= 0.000001 && rate <= 0.5)) {
    fail(`cache.filter.falsePositiveRate must be a number from 0.000001 to 0.5, not ${JSON.stringify(rate)}.`);
  }
  whole('cache.filter.minCapacity', filter.minCapacity, fail);
  if (typeof filter.snapshot !== 'boolean') fail(`cache.filter.snapshot must be true or false, not ${JSON.stringify(filter.snapshot)}.`);
  return filter as ResolvedFilterOptions;
}

/**
 * `normalizeKeys`: one function per type, a built-in as it is (the miss path calls it directly),
 * a list composed in its order.
 */
function resolveNormalizeKeys(value: unknown, fail: Fail): ReadonlyMap<string, KeyNormalizer> {
  const normalizers = new Map<string, KeyNormalizer>();
  if (value === undefined) return normalizers;
  const builtIns = Object.keys(KEY_NORMALIZERS).map((name) => `'${name}'`);
  const example = "e.g. normalizeKeys: { article: 'lower' }, or { article: ['lower', 'nfc'] }, or { sku: (key) => key.toUpperCase() }";
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail(`normalizeKeys must be an object that maps resource types to their normalisers, not ${JSON.stringify(value)}.`, example);
  }
  for (const [type, given] of Object.entries(value as object)) {
    if (!isValidType(type)) fail(`normalizeKeys names ${JSON.stringify(type)}, which is not a resource type.`, example);
    const steps: unknown[] = Array.isArray(given) ? given : [given];
    if (steps.length === 0) fail(`normalizeKeys.${type} is an empty list.`, 'Name at least one normaliser, or leave the type out.');
    const fns = steps.map((step): KeyNormalizer => {
      if (typeof step === 'function') return checkedStep(type, step as KeyNormalizer);
      if (typeof step === 'string' && Object.hasOwn(KEY_NORMALIZERS, step)) return KEY_NORMALIZERS[step as keyof typeof KEY_NORMALIZERS];
      return fail(
        `normalizeKeys.${type} must be ${builtIns.join(', ')}, a function of the key that returns its normal form, or a list of these, not ${stepName(step)}.`,
        example,
      );
    });
    if (new Set(steps).size !== steps.length) fail(`normalizeKeys.${type} names a normaliser twice.`, 'Name each once: they are applied in order.');
    // Lower-casing can take a string out of NFC ('Ϊ' + U+0301 has no composed form, 'ϊ' + U+0301
    // has): NFC first would give two normal forms to two spellings of one key.
    if (steps.indexOf('nfc') !== -1 && steps.indexOf('lower') > steps.indexOf('nfc')) {
      fail(`normalizeKeys.${type} applies 'lower' after 'nfc': lower case can undo NFC.`, `Put 'nfc' last: normalizeKeys: { ${type}: ['lower', 'nfc'] }.`);
    }
    normalizers.set(type, fns.length === 1 ? fns[0] : compose(fns));
  }
  return normalizers;
}

function compose(fns: readonly KeyNormalizer[]): KeyNormalizer {
  return (key) => {
    for (const fn of fns) key = fn(key);
    return key;
  };
}

/** An application's normaliser: a result that is not a string stops the chain with a clear error. */
function checkedStep(type: string, fn: KeyNormalizer): KeyNormalizer {
  return (key) => {
    const normal: unknown = fn(key);
    if (typeof normal !== 'string') throw new TypeError(`the normalizeKeys function of type '${type}' returned ${describe(normal)}, not a string`);
    return normal;
  };
}

function stepName(step: unknown): string {
  return typeof step === 'string' ? `'${step}'` : step === null ? 'null' : Array.isArray(step) ? 'a nested list' : `a ${typeof step}`;
}

/** Refuses anything but a whole number in the range of the option (named by the last part of `path`). */
function whole(path: string, value: unknown, fail: Fail, ...solutions: string[]): void {
  const { min, max, unit } = RANGES[path.slice(path.lastIndexOf('.') + 1)];
  if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) {
    fail(`${path} must be a whole number${unit ? ` of ${unit}` : ''} from ${min} to ${max}, not ${JSON.stringify(value)}.`, ...solutions);
  }
}

function oneOf(name: string, value: unknown, allowed: readonly string[], fail: Fail): void {
  if (!allowed.includes(value as string)) {
    const quoted = allowed.map((a) => `'${a}'`);
    fail(`${name} must be ${quoted.slice(0, -1).join(', ')} or ${quoted.at(-1)}, not ${JSON.stringify(value)}.`);
  }
}
