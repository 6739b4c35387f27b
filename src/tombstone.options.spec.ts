import { TombstoneConfigurationError, TombstoneError } from './tombstone.exceptions.js';
import type { TombstoneModuleOptions } from './tombstone.options.js';
import { resolveTombstoneOptions, validateScopeSource } from './tombstone.options-resolve.js';
import { TombstoneRenderer } from './tombstone.renderer.js';
import { LruTombstoneCacheStore } from './cache/tombstone.cache.js';
import { KEY_NORMALIZERS } from './tombstone.keys.js';

/** Resolves options that may be invalid on purpose; the cast keeps the type checker out of it. */
function resolve(options: unknown) {
  return resolveTombstoneOptions(options as TombstoneModuleOptions);
}

/** Expects resolving `options` to throw a TombstoneConfigurationError and returns its message. */
function configurationErrorOf(options: unknown): string {
  try {
    resolve(options);
  } catch (error) {
    expect(error).toBeInstanceOf(TombstoneConfigurationError);
    expect(error).toBeInstanceOf(TombstoneError);
    expect((error as Error).name).toBe('TombstoneConfigurationError');
    expect((error as Error).message.startsWith('TombstoneModule: ')).toBe(true);
    return (error as Error).message;
  }
  throw new Error(`expected ${JSON.stringify(options)} to be rejected, but it was accepted`);
}

describe('resolveTombstoneOptions', () => {
  describe('defaults', () => {
    const expected = {
      dataSource: undefined,
      scope: undefined,
      problemDetails: 'negotiate',
      problemTypeBase: 'tag:nestjs-tombstones,2026:',
      cacheControl: {
        gone: 'max-age=86400',
        permanentRedirect: 'max-age=86400',
        temporaryRedirect: 'no-store',
        notFound: 'no-store',
      },
      lookupTimeoutMs: 2000,
      maxConcurrentLookups: 4,
      circuitBreaker: { failures: 5, cooldownMs: 1000, maxCooldownMs: 10_000 },
      preparedStatements: true,
      lookups: 'primary',
      requestIdHeader: 'x-request-id',
      requestId: undefined,
      html: true,
      renderer: undefined,
      actor: undefined,
      captureCheck: 'error',
      hitCounts: { flushIntervalMs: 10_000, maxPending: 10_000 },
      missLog: false,
      cache: {
        maxEntries: 10_000,
        maxBytes: 16 * 1024 * 1024,
        ttlMs: 300_000,
        store: undefined,
        filter: { falsePositiveRate: 0.01, minCapacity: 100_000, snapshot: true },
        listen: undefined,
        reloadJitterMs: 5000,
      },
      cacheTags: false,
      normalizeKeys: new Map(),
      suggestions: { maxQueriesPerSecond: 1, burst: 2, timeoutMs: 250, maxEntries: 1000, ttlMs: 60_000, trigram: true },
    };

    it('applies every default to undefined and to {}', () => {
      expect(resolveTombstoneOptions(undefined)).toStrictEqual(expected);
      expect(resolveTombstoneOptions({})).toStrictEqual(expected);
    });

    it('returns fresh cache control each time, never a shared object', () => {
      const resolved = resolveTombstoneOptions({});
      resolved.cacheControl.gone = 'no-store';
      expect(resolveTombstoneOptions({}).cacheControl.gone).toBe('max-age=86400');
    });

    it('returns fresh hit count settings each time', () => {
      const first = resolveTombstoneOptions({});
      (first.hitCounts as { maxPending: number }).maxPending = 1;
      expect(resolveTombstoneOptions({}).hitCounts).toStrictEqual({ flushIntervalMs: 10_000, maxPending: 10_000 });
    });
  });

  describe('valid options', () => {
    it('keeps every option it is given', () => {
      class MyRenderer extends TombstoneRenderer {}
      const scope = { header: 'x-tenant-id' };
      const actor = () => 'someone';
      const requestId = () => 'req-1';
      const tag = (type: string, key: string) => [`${type}:${key}`];
      expect(
        resolveTombstoneOptions({
          dataSource: 'tombstones',
          scope,
          problemDetails: 'always',
          problemTypeBase: 'https://api.example.com/problems/',
          cacheControl: { gone: false, notFound: 'private, max-age=60' },
          lookupTimeoutMs: 250,
          maxConcurrentLookups: 2,
          circuitBreaker: { failures: 10 },
          preparedStatements: false,
          lookups: 'replica',
          requestIdHeader: 'X-Correlation-Id',
          requestId,
          html: false,
          renderer: MyRenderer,
          actor,
          captureCheck: 'warn',
          hitCounts: { flushIntervalMs: 500 },
          missLog: { maxRows: 100, retentionDays: 7 },
          cache: { maxEntries: 50, ttlMs: 1000, filter: { falsePositiveRate: 0.001 }, listen: 'postgres://listener@db/app' },
          cacheTags: { header: 'Cache-Tag', tag },
          normalizeKeys: { article: 'lower' },
          suggestions: { maxQueriesPerSecond: 2, burst: 3, timeoutMs: 100, maxEntries: 10, ttlMs: 5000, trigram: false },
        }),
      ).toStrictEqual({
        dataSource: 'tombstones',
        scope,
        problemDetails: 'always',
        problemTypeBase: 'https://api.example.com/problems/',
        cacheControl: {
          gone: false,
          permanentRedirect: 'max-age=86400',
          temporaryRedirect: 'no-store',
          notFound: 'private, max-age=60',
        },
        lookupTimeoutMs: 250,
        maxConcurrentLookups: 2,
        circuitBreaker: { failures: 10, cooldownMs: 1000, maxCooldownMs: 10_000 },
        preparedStatements: false,
        lookups: 'replica',
        requestIdHeader: 'X-Correlation-Id',
        requestId,
        html: false,
        renderer: MyRenderer,
        actor,
        captureCheck: 'warn',
        hitCounts: { flushIntervalMs: 500, maxPending: 10_000 },
        missLog: { flushIntervalMs: 10_000, maxPending: 10_000, maxRows: 100, retentionDays: 7 },
        cache: {
          maxEntries: 50,
          maxBytes: 16 * 1024 * 1024,
          ttlMs: 1000,
          store: undefined,
          filter: { falsePositiveRate: 0.001, minCapacity: 100_000, snapshot: true },
          listen: 'postgres://listener@db/app',
          reloadJitterMs: 5000,
        },
        cacheTags: { header: 'Cache-Tag', tag, separator: ',' },
        normalizeKeys: new Map([['article', KEY_NORMALIZERS.lower]]),
        suggestions: { maxQueriesPerSecond: 2, burst: 3, timeoutMs: 100, maxEntries: 10, ttlMs: 5000, trigram: false },
      });
    });

    it('turns the cache or its filter off with false, and takes a store of the app’s', () => {
      expect(resolveTombstoneOptions({ cache: false }).cache).toBe(false);
      expect(resolveTombstoneOptions({ cache: { filter: false } }).cache).toMatchObject({ filter: false, maxEntries: 10_000 });
      const store = new LruTombstoneCacheStore();
      expect(resolveTombstoneOptions({ cache: { store } }).cache).toMatchObject({ store });
    });

    it.each([
      [{ preparedStatements: 'yes' }, 'preparedStatements must be true or false, not "yes".'],
      [{ html: 'text/html' }, 'html must be true or false, not "text/html".'],
      [{ lookups: 'replicas' }, `lookups must be 'primary' or 'replica', not "replicas".`],
      [{ lookups: 'replica', cache: false }, "lookups: 'replica' needs the lookup cache"],
      [{ maxConcurrentLookups: 0 }, 'maxConcurrentLookups must be a whole number from 1 to 1000, not 0.'],
      [{ maxConcurrentLookups: 2.5 }, 'maxConcurrentLookups must be a whole number from 1 to 1000, not 2.5.'],
      [{ cache: 'yes' }, 'cache must be false, true or an object'],
      [{ cache: { maxEntries: 0 } }, 'cache.maxEntries must be a whole number of entries from 1 to 10000000, not 0.'],
      [{ cache: { maxBytes: 10 } }, 'cache.maxBytes must be a whole number of bytes from 1024'],
      [{ cache: { ttlMs: 1.5 } }, 'cache.ttlMs must be a whole number of milliseconds from 1 to 86400000'],
      [{ cache: { store: {} } }, 'cache.store must be an instance of a TombstoneCacheStore'],
      [{ cache: { filter: 'on' } }, 'cache.filter must be false, true or { falsePositiveRate, minCapacity, snapshot }'],
      [{ cache: { filter: { snapshot: 'yes' } } }, 'cache.filter.snapshot must be true or false, not "yes".'],
      [{ cache: { filter: { falsePositiveRate: 1 } } }, 'cache.filter.falsePositiveRate must be a number from 0.000001 to 0.5, not 1.'],
      [{ cache: { filter: { minCapacity: 10 } } }, 'cache.filter.minCapacity must be a whole number of keys from 1000'],
      [{ cache: { filter: { size: 10 } } }, "unknown cache.filter entry 'size'"],
      [{ cache: { listen: '' } }, 'cache.listen must be a connection string or a pg client config object.'],
      [{ cache: { maxItems: 10 } }, "unknown cache entry 'maxItems'"],
    ])('rejects %j', (options, message) => {
      expect(configurationErrorOf(options)).toContain(message);
    });

    it('turns hit counts off with false, and the misses log on with true', () => {
      expect(resolveTombstoneOptions({ hitCounts: false }).hitCounts).toBe(false);
      expect(resolveTombstoneOptions({ hitCounts: true }).hitCounts).toStrictEqual({ flushIntervalMs: 10_000, maxPending: 10_000 });
      expect(resolveTombstoneOptions({ missLog: true }).missLog).toStrictEqual({
        flushIntervalMs: 10_000,
        maxPending: 10_000,
        maxRows: 100_000,
        retentionDays: 30,
      });
      expect(resolveTombstoneOptions({ missLog: {} }).missLog).toStrictEqual(resolveTombstoneOptions({ missLog: true }).missLog);
      expect(resolveTombstoneOptions({ missLog: false }).missLog).toBe(false);
    });

    it('turns cache tags on with true or an object, the separator following the header', () => {
      expect(resolveTombstoneOptions({ cacheTags: true }).cacheTags).toStrictEqual({ header: 'Surrogate-Key', tag: undefined, separator: ' ' });
      expect(resolveTombstoneOptions({ cacheTags: {} }).cacheTags).toStrictEqual(resolveTombstoneOptions({ cacheTags: true }).cacheTags);
      expect(resolveTombstoneOptions({ cacheTags: false }).cacheTags).toBe(false);
      expect(resolveTombstoneOptions({ cacheTags: { header: 'surrogate-key' } }).cacheTags).toMatchObject({ separator: ' ' });
      expect(resolveTombstoneOptions({ cacheTags: { header: 'Cache-Tag' } }).cacheTags).toMatchObject({ header: 'Cache-Tag', separator: ',' });
      expect(resolveTombstoneOptions({ cacheTags: { header: 'Edge-Cache-Tag', separator: ', ' } }).cacheTags).toMatchObject({ separator: ', ' });
      expect(resolveTombstoneOptions({ cacheTags: { separator: ',' } }).cacheTags).toMatchObject({ header: 'Surrogate-Key', separator: ',' });
    });

    it.each([
      ['flushIntervalMs', 100],
      ['flushIntervalMs', 3_600_000],
      ['maxPending', 1],
      ['maxPending', 1_000_000],
    ])('accepts hitCounts.%s %j', (key, value) => {
      expect(resolve({ hitCounts: { [key]: value } }).hitCounts).toMatchObject({ [key]: value });
      expect(resolve({ missLog: { [key]: value } }).missLog).toMatchObject({ [key]: value });
    });

    it.each([
      ['maxRows', 1],
      ['maxRows', 100_000_000],
      ['retentionDays', 1],
      ['retentionDays', 36_500],
    ])('accepts missLog.%s %j', (key, value) => {
      expect(resolve({ missLog: { [key]: value } }).missLog).toMatchObject({ [key]: value });
    });

    it.each(['negotiate', 'always', 'never'] as const)('accepts problemDetails %j', (problemDetails) => {
      expect(resolveTombstoneOptions({ problemDetails }).problemDetails).toBe(problemDetails);
    });

    it.each([1, 2000, 60_000])('accepts lookupTimeoutMs %j', (lookupTimeoutMs) => {
      expect(resolveTombstoneOptions({ lookupTimeoutMs }).lookupTimeoutMs).toBe(lookupTimeoutMs);
    });

    it('accepts false for every cacheControl entry', () => {
      expect(
        resolveTombstoneOptions({
          cacheControl: { gone: false, permanentRedirect: false, temporaryRedirect: false, notFound: false },
        }).cacheControl,
      ).toStrictEqual({ gone: false, permanentRedirect: false, temporaryRedirect: false, notFound: false });
    });

    it('writes an object of directives out once, in a fixed order, and leaves the object alone', () => {
      const gone = { staleIfError: 600, staleWhileRevalidate: 60, sMaxAge: 86_400, maxAge: 3600, public: true };
      const given = { ...gone };
      expect(resolveTombstoneOptions({ cacheControl: { gone, notFound: { maxAge: 0 }, temporaryRedirect: { public: false, sMaxAge: 2 ** 31 } } }).cacheControl).toStrictEqual({
        gone: 'public, max-age=3600, s-maxage=86400, stale-while-revalidate=60, stale-if-error=600',
        permanentRedirect: 'max-age=86400',
        temporaryRedirect: 's-maxage=2147483648',
        notFound: 'max-age=0',
      });
      expect(gone).toStrictEqual(given);
    });

    it.each([
      ['a header', { header: 'x-tenant-id' }],
      ['a mixed-case header', { header: 'X-Tenant-Id' }],
      ['a param', { param: 'tenant' }],
      ['a function', (request: { headers: Record<string, unknown> }) => String(request.headers.host)],
      ['an async function', async () => 'tenant-1'],
    ])('accepts %s as scope source', (_label, scope) => {
      const resolved = resolve({ scope });
      expect(resolved.scope).toBe(scope);
      expect(() => validateScopeSource(scope, 'scope')).not.toThrow();
    });
  });

  describe('undefined is not given, null is a value', () => {
    it('takes undefined as not given, at the top and in every group', () => {
      const unset = { cacheControl: { gone: undefined }, hitCounts: { maxPending: undefined }, missLog: { retentionDays: undefined } };
      const cache = { ttlMs: undefined, filter: { minCapacity: undefined } };
      expect(resolve({ ...unset, lookupTimeoutMs: undefined, cache })).toStrictEqual(resolve({ missLog: true }));
    });

    const scalars = ['problemDetails', 'problemTypeBase', 'lookupTimeoutMs', 'maxConcurrentLookups', 'preparedStatements', 'lookups', 'requestIdHeader', 'captureCheck', 'cacheTags'];
    it.each(scalars)('checks a null %s instead of taking its default', (name) => {
      expect(configurationErrorOf({ [name]: null })).toMatch(new RegExp(`${name} must be .*not null\\.`));
    });

    it('refuses an unknown entry even when it is undefined', () => {
      expect(configurationErrorOf({ cache: { maxItems: undefined } })).toContain("unknown cache entry 'maxItems'");
      expect(configurationErrorOf({ hitCounts: { maxRows: undefined } })).toContain("unknown hitCounts entry 'maxRows'");
    });
  });

  describe('invalid options', () => {
    it('rejects an unknown option, naming it and the known ones', () => {
      const message = configurationErrorOf({ lookupTimeout: 100 });
      expect(message).toContain("unknown option 'lookupTimeout'");
      expect(message).toContain('Potential solutions');
      expect(message).toContain(
        'Use only: dataSource, scope, problemDetails, problemTypeBase, cacheControl, lookupTimeoutMs, maxConcurrentLookups, circuitBreaker, preparedStatements, lookups, requestIdHeader, requestId, html, renderer, actor, captureCheck, hitCounts, missLog, cache, cacheTags, normalizeKeys, suggestions.',
      );
    });

    it.each([['on'], [null], [0], [[]], [1]])('rejects hitCounts and missLog %j', (value) => {
      const message = configurationErrorOf({ hitCounts: value });
      expect(message).toContain(`hitCounts must be false, true or an object of flushIntervalMs, maxPending, not ${JSON.stringify(value)}.`);
      expect(message).toContain('e.g. hitCounts: { flushIntervalMs: 30000 }');
      expect(configurationErrorOf({ missLog: value })).toContain(
        'missLog must be false, true or an object of flushIntervalMs, maxPending, maxRows, retentionDays',
      );
    });

    it('rejects an unknown hitCounts or missLog entry, naming it and the known ones', () => {
      const hits = configurationErrorOf({ hitCounts: { maxRows: 10 } });
      expect(hits).toContain("unknown hitCounts entry 'maxRows'");
      expect(hits).toContain('Use only: flushIntervalMs, maxPending.');
      const misses = configurationErrorOf({ missLog: { flushInterval: 10 } });
      expect(misses).toContain("unknown missLog entry 'flushInterval'");
      expect(misses).toContain('Use only: flushIntervalMs, maxPending, maxRows, retentionDays.');
      expect(configurationErrorOf({ missLog: { toString: 1 } })).toContain("unknown missLog entry 'toString'");
    });

    it.each([
      ['hitCounts', 'flushIntervalMs', 99, 'a whole number of milliseconds from 100 to 3600000'],
      ['hitCounts', 'flushIntervalMs', 1.5, 'a whole number of milliseconds from 100 to 3600000'],
      ['missLog', 'flushIntervalMs', '1000', 'a whole number of milliseconds from 100 to 3600000'],
      ['hitCounts', 'maxPending', 0, 'a whole number of entries from 1 to 1000000'],
      ['missLog', 'maxPending', 1_000_001, 'a whole number of entries from 1 to 1000000'],
      ['hitCounts', 'maxPending', Number.NaN, 'a whole number of entries from 1 to 1000000'],
      ['missLog', 'maxRows', 0, 'a whole number of rows from 1 to 100000000'],
      ['missLog', 'maxRows', Number.POSITIVE_INFINITY, 'a whole number of rows from 1 to 100000000'],
      ['missLog', 'retentionDays', 0, 'a whole number of days from 1 to 36500'],
      ['missLog', 'retentionDays', -1, 'a whole number of days from 1 to 36500'],
      ['missLog', 'retentionDays', null, 'a whole number of days from 1 to 36500'],
    ])('rejects %s.%s %j', (option, key, value, expected) => {
      const message = configurationErrorOf({ [option]: { [key]: value } });
      expect(message).toContain(`${option}.${key} must be ${expected}, not ${JSON.stringify(value)}.`);
    });

    it.each([['on'], [null], [1], [[]]])('rejects cacheTags %j', (cacheTags) => {
      const message = configurationErrorOf({ cacheTags });
      expect(message).toContain(`cacheTags must be false, true or { header, tag, separator }, not ${JSON.stringify(cacheTags)}.`);
      expect(message).toContain("e.g. cacheTags: { header: 'Cache-Tag' } for Cloudflare");
    });

    it.each([
      [{ header: 'Surrogate Key' }, 'cacheTags.header must be an HTTP header name, not "Surrogate Key".'],
      [{ header: '' }, 'cacheTags.header must be an HTTP header name, not "".'],
      [{ header: 'Cache-Tag\r\n' }, 'cacheTags.header must be an HTTP header name'],
      [{ header: 42 }, 'cacheTags.header must be an HTTP header name, not 42.'],
      [{ header: 'Cache-Control' }, 'cacheTags.header cannot be Cache-Control: the module sets that header itself.'],
      [{ header: 'vary' }, 'cacheTags.header cannot be vary: the module sets that header itself.'],
      [{ header: 'Link' }, 'cacheTags.header cannot be Link'],
      [{ header: 'Location' }, 'cacheTags.header cannot be Location'],
      [{ header: 'Content-Type' }, 'cacheTags.header cannot be Content-Type'],
      [{ header: 'X-Request-Id' }, 'cacheTags.header cannot be X-Request-Id'],
      [{ tag: 'item' }, 'cacheTags.tag must be a function of the resource type and the key.'],
      [{ separator: ';' }, "cacheTags.separator must be one of ' ', ',', ', ', not \";\"."],
      [{ separator: '' }, 'cacheTags.separator must be one of'],
      [{ separator: '  ' }, 'cacheTags.separator must be one of'],
      [{ maxTags: 10 }, "unknown cacheTags entry 'maxTags'"],
    ])('rejects cacheTags %j', (cacheTags, message) => {
      const error = configurationErrorOf({ cacheTags });
      expect(error).toContain(message);
      expect(error).toContain('Potential solutions');
    });

    it('rejects a tag header that is the request id header', () => {
      expect(configurationErrorOf({ requestIdHeader: 'X-Correlation-Id', cacheTags: { header: 'x-correlation-id' } })).toContain(
        'cacheTags.header cannot be x-correlation-id: the module sets that header itself.',
      );
      expect(resolveTombstoneOptions({ requestIdHeader: 'X-Correlation-Id', cacheTags: { header: 'X-Request-Id' } }).cacheTags).toMatchObject({ header: 'X-Request-Id' });
    });

    it.each([['sometimes'], [true]])('rejects captureCheck %j', (captureCheck) => {
      expect(configurationErrorOf({ captureCheck })).toContain("captureCheck must be 'error', 'warn' or 'off'");
    });

    it.each([['req.user.id'], [{}]])('rejects an actor that is not a function: %j', (actor) => {
      expect(configurationErrorOf({ actor })).toContain('actor must be a function of the request');
    });

    it('rejects options that are not an object', () => {
      expect(configurationErrorOf('always')).toContain('options must be an object');
      expect(configurationErrorOf(42)).toContain('options must be an object');
    });

    it.each([[''], [42]])('rejects dataSource %j', (dataSource) => {
      const message = configurationErrorOf({ dataSource });
      expect(message).toContain('dataSource must be the name of a TypeORM DataSource');
      expect(message).toContain('Potential solutions');
    });

    it.each([['sometimes'], ['Always'], [''], [true]])('rejects problemDetails %j', (problemDetails) => {
      const message = configurationErrorOf({ problemDetails });
      expect(message).toContain("problemDetails must be 'negotiate', 'always' or 'never'");
      expect(message).toContain(`not ${JSON.stringify(problemDetails)}`);
    });

    it('rejects a cacheControl that is not an object', () => {
      expect(configurationErrorOf({ cacheControl: 'no-store' })).toContain('cacheControl must be an object');
      expect(configurationErrorOf({ cacheControl: null })).toContain('cacheControl must be an object');
    });

    it('rejects an unknown cacheControl key, naming it', () => {
      const message = configurationErrorOf({ cacheControl: { redirect: 'no-store' } });
      expect(message).toContain("unknown cacheControl entry 'redirect'");
      expect(message).toContain('Use only: gone, permanentRedirect, temporaryRedirect, notFound.');
    });

    // `key in defaults` would also see Object.prototype's members.
    it.each(['toString', 'constructor', 'hasOwnProperty', 'valueOf'])(
      'rejects the cacheControl key %j inherited from Object.prototype',
      (key) => {
        const message = configurationErrorOf({ cacheControl: { [key]: 'no-store' } });
        expect(message).toContain(`unknown cacheControl entry '${key}'`);
      },
    );

    it.each([
      ['CRLF', 'no-store\r\nSet-Cookie: a=1'],
      ['LF', 'no-store\n'],
      ['tab', 'no-store,\tprivate'],
      ['NUL', 'no-store\u0000'],
      ['non-ASCII', 'max-age=٣'],
      ['empty', ''],
      ['true', true],
      ['a number', 86400],
      ['null', null],
      ['an array', ['max-age=60']],
    ])('rejects a cacheControl value with %s, naming the entry', (_label, value) => {
      const message = configurationErrorOf({ cacheControl: { gone: value } });
      expect(message).toContain('cacheControl.gone must be a Cache-Control header value (printable ASCII), an object of directives or false');
      expect(message).toContain(`not ${JSON.stringify(value)}.`);
      expect(configurationErrorOf({ cacheControl: { temporaryRedirect: value } })).toContain('cacheControl.temporaryRedirect');
    });

    it.each([
      [{ maxAge: -1 }, 'cacheControl.gone.maxAge must be a whole number of seconds from 0 to 2147483648, not -1.'],
      [{ sMaxAge: 1.5 }, 'cacheControl.gone.sMaxAge must be a whole number of seconds from 0 to 2147483648, not 1.5.'],
      [{ staleWhileRevalidate: '60' }, 'cacheControl.gone.staleWhileRevalidate must be a whole number of seconds from 0 to 2147483648, not "60".'],
      [{ staleIfError: 2 ** 31 + 1 }, 'cacheControl.gone.staleIfError must be a whole number of seconds from 0 to 2147483648, not 2147483649.'],
      [{ maxAge: Number.NaN }, 'cacheControl.gone.maxAge must be a whole number of seconds'],
      [{ maxAge: null }, 'cacheControl.gone.maxAge must be a whole number of seconds from 0 to 2147483648, not null.'],
      [{ public: 'yes' }, 'cacheControl.gone.public must be true or false, not "yes".'],
      [{ mustRevalidate: true }, "unknown cacheControl.gone directive 'mustRevalidate'"],
      [{ toString: 1 }, "unknown cacheControl.gone directive 'toString'"],
      [{}, 'cacheControl.gone has no directive to send.'],
      [{ public: false, maxAge: undefined }, 'cacheControl.gone has no directive to send.'],
    ])('rejects the directives %j, naming the entry', (gone, message) => {
      const error = configurationErrorOf({ cacheControl: { gone } });
      expect(error).toContain(message);
      expect(error).toContain('Potential solutions');
    });

    it.each([[0], [1.5], [70_000], [60_001], [-1], [Number.NaN], [Number.POSITIVE_INFINITY], ['2000']])(
      'rejects lookupTimeoutMs %j',
      (lookupTimeoutMs) => {
        const message = configurationErrorOf({ lookupTimeoutMs });
        expect(message).toContain('lookupTimeoutMs must be a whole number of milliseconds from 1 to 60000');
      },
    );

    it('quotes the rejected lookupTimeoutMs', () => {
      expect(configurationErrorOf({ lookupTimeoutMs: 1.5 })).toContain('not 1.5.');
      expect(configurationErrorOf({ lookupTimeoutMs: 70_000 })).toContain('not 70000.');
      expect(configurationErrorOf({ lookupTimeoutMs: 0 })).toContain('not 0.');
    });

    it.each([[''], ['/problems/'], ['problems'], ['https://api.example.com/a b/'], ['https://api.example.com/"x"/'], ['tag:ünï'], ['urn:x\r\n'], [42]])(
      'rejects problemTypeBase %j',
      (problemTypeBase) => {
        const message = configurationErrorOf({ problemTypeBase });
        expect(message).toContain('problemTypeBase must be an absolute URI of printable ASCII');
        expect(message).toContain(`not ${JSON.stringify(problemTypeBase)}`);
      },
    );

    it.each(['https://api.example.com/problems/', 'https://example.com/errors#', 'tag:example.com,2026:', 'urn:example:problem:'])('accepts problemTypeBase %j', (problemTypeBase) => {
      expect(resolve({ problemTypeBase }).problemTypeBase).toBe(problemTypeBase);
    });

    it.each([['x id'], [''], ['x-id\r\n'], ['x:id'], ['x(id)'], ['ïd'], [42]])('rejects requestIdHeader %j', (requestIdHeader) => {
      const message = configurationErrorOf({ requestIdHeader });
      expect(message).toContain('requestIdHeader must be an HTTP header name');
      expect(message).toContain(`not ${JSON.stringify(requestIdHeader)}`);
    });

    it.each([['a string', 'MyRenderer'], ['an instance', new TombstoneRenderer()], ['null', null]])(
      'rejects %s as renderer',
      (_label, renderer) => {
        expect(configurationErrorOf({ renderer })).toContain('renderer must be a class that extends TombstoneRenderer');
      },
    );

    it.each([
      ['a header name with a space', { header: 'x tenant' }],
      ['an empty header', { header: '' }],
      ['a non-string header', { header: 42 }],
      ['an empty param', { param: '' }],
      ['a non-string param', { param: 1 }],
      ['both header and param', { header: 'x-tenant', param: 'tenant' }],
      ['an extra key', { header: 'x-tenant', fallback: 'a' }],
      ['an unknown key', { cookie: 'tenant' }],
      ['an empty object', {}],
      ['a string', 'x-tenant-id'],
      ['null', null],
      ['a number', 1],
    ])('rejects %s as scope source', (_label, scope) => {
      const message = configurationErrorOf({ scope });
      expect(message).toContain('TombstoneModule: scope must be { header }, { param } or a function of the request.');
      expect(message).toContain('Potential solutions');
      expect(message).toContain("e.g. scope: { header: 'x-tenant-id' }");
    });
  });
});

describe('normalizeKeys', () => {
  const normalizerOf = (given: unknown, type = 'article') => resolve({ normalizeKeys: given }).normalizeKeys.get(type) as (key: string) => string;

  it('resolves the built-ins, alone and in a list applied in order', () => {
    expect(normalizerOf({ article: 'lower' })('OLD-Hello')).toBe('old-hello');
    // 'é' written as 'e' + U+0301 (NFD) becomes U+00E9 (NFC).
    expect(normalizerOf({ article: 'nfc' })('cafe\u0301')).toBe('caf\u00e9');
    expect(normalizerOf({ article: 'nfc' })('CAFE')).toBe('CAFE');
    expect(normalizerOf({ article: ['lower', 'nfc'] })('CAFE\u0301')).toBe('caf\u00e9');
    // Capital iota with dialytika + acute has no composed form; its lower case has (U+0390).
    expect(normalizerOf({ article: ['lower', 'nfc'] })('\u03aa\u0301')).toBe('\u0390');
    expect(normalizerOf({ sku: ['lower', (key: string) => `${key}!`] }, 'sku')('AB')).toBe('ab!');
    expect(normalizerOf({ sku: [(key: string) => `${key}!`, (key: string) => `${key}?`] }, 'sku')('a')).toBe('a!?');
  });

  it('lower-cases without the locale: the same key on every instance', () => {
    // A Turkish locale would lower-case 'I' to a dotless 'ı'; toLowerCase() never does.
    expect(normalizerOf({ article: 'lower' })('TITLE')).toBe('title');
  });

  it('keeps a type without the option out of the map, and the map empty by default', () => {
    const resolved = resolve({ normalizeKeys: { article: 'lower' } }).normalizeKeys;
    expect([...resolved.keys()]).toEqual(['article']);
    expect(resolve({}).normalizeKeys.size).toBe(0);
    expect(resolve({ normalizeKeys: {} }).normalizeKeys.size).toBe(0);
  });

  it("stops a function's result that is not a string with a clear error", () => {
    const normalize = normalizerOf({ sku: [(() => 42) as never, 'lower'] }, 'sku');
    expect(() => normalize('a')).toThrow("the normalizeKeys function of type 'sku' returned a number, not a string");
    expect(() => normalizerOf({ sku: () => null }, 'sku')('a')).toThrow('returned null, not a string');
  });

  it.each([
    [null, /normalizeKeys must be an object that maps resource types to their normalisers, not null/],
    ['lower', /normalizeKeys must be an object/],
    [['lower'], /normalizeKeys must be an object/],
    [{ article: 'upper' }, /normalizeKeys.article must be 'lower', 'nfc', a function of the key that returns its normal form, or a list of these, not 'upper'/],
    [{ article: 'NFC' }, /not 'NFC'/],
    [{ article: true }, /not a boolean/],
    [{ article: null }, /not null/],
    [{ article: [] }, /normalizeKeys.article is an empty list/],
    [{ article: [['lower']] }, /not a nested list/],
    [{ article: ['lower', 'lower'] }, /normalizeKeys.article names a normaliser twice/],
    [{ article: ['nfc', 'lower'] }, /normalizeKeys.article applies 'lower' after 'nfc': lower case can undo NFC[^]*Put 'nfc' last/],
    [{ 'not a type': 'lower' }, /normalizeKeys names "not a type", which is not a resource type/],
  ])('refuses %j at start-up', (given, message) => {
    const error = configurationErrorOf({ normalizeKeys: given });
    expect(error).toMatch(message);
    expect(error).toContain('Potential solutions');
  });
});

describe('validateScopeSource', () => {
  it('names the place it was given in the error', () => {
    expect(() => validateScopeSource({ header: 'a b' }, "@Tombstoned('article').scope")).toThrow(
      "TombstoneModule: @Tombstoned('article').scope must be { header }, { param } or a function of the request.",
    );
    expect(() => validateScopeSource(undefined, 'scope')).toThrow(TombstoneConfigurationError);
  });

  describe('suggestions', () => {
    it('takes some of its settings, the rest by default', () => {
      expect(resolve({ suggestions: { maxQueriesPerSecond: 3, trigram: false } }).suggestions).toStrictEqual({
        maxQueriesPerSecond: 3,
        burst: 2,
        timeoutMs: 250,
        maxEntries: 1000,
        ttlMs: 60_000,
        trigram: false,
      });
    });

    it('refuses what is not an object, unknown entries, numbers out of range, a trigram that is not a boolean', () => {
      expect(configurationErrorOf({ suggestions: true })).toContain('suggestions must be an object, not true.');
      expect(configurationErrorOf({ suggestions: { rate: 1 } })).toContain("unknown suggestions entry 'rate'.");
      expect(configurationErrorOf({ suggestions: { maxQueriesPerSecond: 0 } })).toContain('suggestions.maxQueriesPerSecond must be a whole number of queries from 1 to 10000, not 0.');
      expect(configurationErrorOf({ suggestions: { burst: 1.5 } })).toContain('suggestions.burst must be a whole number');
      expect(configurationErrorOf({ suggestions: { timeoutMs: 60_001 } })).toContain('suggestions.timeoutMs must be a whole number of milliseconds from 1 to 60000');
      expect(configurationErrorOf({ suggestions: { trigram: 'auto' } })).toContain('suggestions.trigram must be true or false, not "auto".');
    });
  });
});
