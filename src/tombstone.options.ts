import type { Type } from '@nestjs/common';
import type { TombstoneCacheStore } from './cache/tombstone.cache.js';
import type { TombstoneRenderer } from './tombstone.renderer.js';
import type { TombstoneScopeSource } from './tombstone.types.js';

// The options, written once: each class's field initialisers are its defaults, the names it
// accepts are its fields (`Object.keys(new TombstoneModuleOptions())`), and the resolved types at
// the end of this file are derived from the classes. tombstone.options-resolve.ts checks them.

/**
 * `Cache-Control` directives of one kind of answer, as an object: turned into the header value
 * once, at start-up (`{ maxAge: 3600, sMaxAge: 86400 }` → `max-age=3600, s-maxage=86400`). Times
 * are in seconds, whole numbers from 0 to 2147483648 (RFC 9111 §1.2.2). A scoped answer leaves
 * out `public` and `s-maxage`, and is `private`.
 */
export interface TombstoneCacheDirectives {
  /** `max-age`: how long any cache, a browser's included, may reuse the answer (RFC 9111 §5.2.2.1). */
  maxAge?: number;
  /** `s-maxage`: how long a shared cache (a CDN) may reuse it, instead of `maxAge` (RFC 9111 §5.2.2.10). */
  sMaxAge?: number;
  /** `stale-while-revalidate`: how long past its freshness a cache may still send it while it asks again (RFC 5861 §3). */
  staleWhileRevalidate?: number;
  /** `stale-if-error`: how long past its freshness a cache may still send it when the origin fails (RFC 5861 §4). */
  staleIfError?: number;
  /** `public`: shared caches may store it even for a request with `Authorization` (RFC 9111 §3.5, §5.2.2.9). */
  public?: boolean;
}

/** `Cache-Control` of each answer: a header value, an object of directives, or `false` for none. */
export class TombstoneCacheControl {
  /** 410 Gone (cacheable: the key will not come back). Default: `'max-age=86400'` (one day). */
  gone?: string | TombstoneCacheDirectives | false = 'max-age=86400';

  /** 301 and 308. Default: `'max-age=86400'`. */
  permanentRedirect?: string | TombstoneCacheDirectives | false = 'max-age=86400';

  /** 302 and 307. Default: `'no-store'`. */
  temporaryRedirect?: string | TombstoneCacheDirectives | false = 'no-store';

  /** 404. Default: `'no-store'`. */
  notFound?: string | TombstoneCacheDirectives | false = 'no-store';
}

/**
 * The header of cache tags (surrogate keys) on answers, which a CDN stores with the cached answer
 * so that a purge by tag removes it when the tombstone changes; see docs/responses.md.
 */
export class TombstoneCacheTagsOptions {
  /**
   * The response header: `'Surrogate-Key'` for Fastly, `'Cache-Tag'` for Cloudflare. An HTTP
   * header name that the module does not set otherwise. Default: `'Surrogate-Key'`.
   */
  header?: string = 'Surrogate-Key';

  /**
   * The tags of a key: one string or several. Each must be printable ASCII without a space or a
   * comma, at most 1024 bytes; one that is not is left out (and logged). Default: none
   * (`` `${resourceType}/${encodeURIComponent(key)}` ``, or `` `${resourceType}/#` `` and 32 hex
   * digits of the key's SHA-256 when that is longer than 1024 bytes).
   */
  tag?: (resourceType: string, key: string) => string | readonly string[] = undefined;

  /** What separates the tags in the header: `' '`, `','` or `', '`. Default: `' '` for `Surrogate-Key`, `','` otherwise. */
  separator?: string = undefined;
}

/** How answers from tombstones are counted (`tombstones.hit_count`, `last_hit_at`). */
export class TombstoneHitCountOptions {
  /** Longest time a counted hit waits in memory before it is written. Default: `10000`. */
  flushIntervalMs?: number = 10_000;

  /**
   * Most tombstones counted in memory between two writes; reaching it writes at once, and hits
   * of further tombstones are dropped (and logged) until the write is done. Default: `10000`.
   */
  maxPending?: number = 10_000;
}

/** How 404s that no tombstone explained are logged (table `tombstone_misses`). */
export class TombstoneMissLogOptions {
  /** Longest time a miss waits in memory before it is written. Default: `10000`. */
  flushIntervalMs?: number = 10_000;

  /**
   * Most distinct (scope, type, key) held in memory between two writes; reaching it writes at
   * once, and misses of further keys are dropped (and logged) until the write is done.
   * Default: `10000`.
   */
  maxPending?: number = 10_000;

  /** Most rows the table keeps; the least recently seen beyond it are deleted. Default: `100000`. */
  maxRows?: number = 100_000;

  /** Rows not seen for this many days are deleted. Default: `30`. */
  retentionDays?: number = 30;
}

/** The membership filter: every (scope, type, key) with a tombstone that is not `hidden`. */
export class TombstoneFilterOptions {
  /** Share of unknown keys the filter lets through to the cache and the database. Default: `0.01`. */
  falsePositiveRate?: number = 0.01;

  /** Keys the filter is sized for at least; it is rebuilt larger when it fills. Default: `100000`. */
  minCapacity?: number = 100_000;

  /**
   * Start from the copy of the filter stored in the database (table `tombstone_filter_snapshots`)
   * and the rows changed since, instead of reading the whole table; one instance at a time reads
   * the table and stores the copy. `false`: every instance reads the table. See docs/cache.md.
   * Default: `true`.
   */
  snapshot?: boolean = true;
}

/** The circuit breaker in front of the lookups that reach the database; see docs/operations.md. */
export class TombstoneCircuitBreakerOptions {
  /** Lookups that fail in a row (an error, or no answer within `lookupTimeoutMs`) to open the circuit. Default: `5`. */
  failures?: number = 5;

  /** How long the circuit stays open before one lookup probes the database. Default: `1000`. */
  cooldownMs?: number = 1000;

  /** Longest cool-down: each probe that fails doubles it, up to this. Default: `10000`. */
  maxCooldownMs?: number = 10_000;
}

/** The lookup cache and what keeps it coherent; see docs/cache.md. */
export class TombstoneLookupCacheOptions {
  /** Most answers kept (the default store). Default: `10000`. */
  maxEntries?: number = 10_000;

  /** Most memory the answers take, estimated (the default store). Default: `16777216` (16 MiB). */
  maxBytes?: number = 16 * 1024 * 1024;

  /** Longest time an answer is kept, positive or negative. Default: `300000` (5 minutes). */
  ttlMs?: number = 300_000;

  /**
   * A store of your own instead of the in-process LRU (`maxEntries` and `maxBytes` then do not
   * apply). Default: none (the built-in LRU).
   */
  store?: TombstoneCacheStore = undefined;

  /**
   * The membership filter that answers unknown keys without a query: `true`, `false` (off), or
   * some of `TombstoneFilterOptions`. Default: `true` (on, with the defaults of
   * `TombstoneFilterOptions`).
   */
  filter?: boolean | TombstoneFilterOptions = true;

  /**
   * Where the connection that LISTENs for changes goes, as a `pg` client config or a connection
   * string. It must reach PostgreSQL itself, or a pool in session mode: the application does not
   * start when it goes through a pooler that does not keep its session (PgBouncer in transaction
   * or statement mode). Default: none (the DataSource's own settings).
   */
  listen?: string | Record<string, unknown> = undefined;

  /**
   * After the listening connection comes back (not at start-up), the instance waits a random
   * delay up to this before it reloads its filter, so that instances that reconnect together
   * do not all read the table at the same instant. Answers stay right meanwhile (lookups skip the
   * filter until it has loaded). `0` reloads at once. Default: `5000`.
   */
  reloadJitterMs?: number = 5000;
}

/**
 * "Did you mean" on the 404s of routes with `@Tombstoned(type, { suggest })`; see
 * docs/suggestions.md. Misses that want suggestions share one budget of queries, so that a flood
 * of unknown keys costs almost none: in a second with more than 20 × `maxQueriesPerSecond` of
 * them, and the second after, one query per 10,000 of them.
 */
export class TombstoneSuggestionOptions {
  /** Suggestion queries a second, at most, over the whole instance, in quiet times; misses beyond it get none. Default: `1`. */
  maxQueriesPerSecond?: number = 1;

  /** Suggestion queries allowed at once after a quiet spell, on top of that rate. Default: `2`. */
  burst?: number = 2;

  /** Longest wait for suggestions; past it the 404 goes without them (and the timeout is logged). Default: `250`. */
  timeoutMs?: number = 250;

  /** Most keys whose suggestions are kept in memory (only while the lookup cache listens for changes). Default: `1000`. */
  maxEntries?: number = 1000;

  /** Longest time suggestions are kept, in milliseconds; any change to tombstones drops them all. Default: `60000`. */
  ttlMs?: number = 60_000;

  /**
   * Rank with PostgreSQL's `pg_trgm` (`similarity()`, `%`, `<->`) when the extension is installed
   * in a schema on the search path; `false`, or without it: the keys nearest in sort order, ranked
   * in memory by the same trigram similarity. Default: `true`.
   */
  trigram?: boolean = true;
}

/**
 * Options of `TombstoneModule.forRoot()`, or what `forRootAsync()`'s factory returns; the same
 * options behave the same through both. Every field is optional, and its initialiser below is
 * its default.
 *
 * @example
 * TombstoneModule.forRoot({ scope: { header: 'x-tenant-id' }, actor: (req) => req.user?.id, missLog: true });
 * TombstoneModule.forRootAsync({
 *   inject: [ConfigService],
 *   useFactory: (config: ConfigService): TombstoneModuleOptions => ({ lookupTimeoutMs: config.get('TOMBSTONE_TIMEOUT_MS') }),
 * });
 */
export class TombstoneModuleOptions {
  /**
   * Name of the TypeORM DataSource that holds the tombstone table (as given to
   * `TypeOrmModule.forRoot({ name })`). Default: none (the default DataSource).
   */
  dataSource?: string = undefined;

  /** Where a request's scope comes from; see `TombstoneScopeSource`. Default: none (unscoped). */
  scope?: TombstoneScopeSource = undefined;

  /**
   * RFC 9457 problem details (`application/problem+json`):
   * `'negotiate'` when the client's `Accept` asks for them, `'always'`, or `'never'`.
   * Default: `'negotiate'`.
   */
  problemDetails?: 'negotiate' | 'always' | 'never' = 'negotiate';

  /**
   * Base of the problem type URIs of problem details: each answer's `type` is this base followed
   * by `not-found`, `gone` or `moved`. An absolute URI; an `https://` base that serves your
   * documentation of each type is best. Default: `'tag:nestjs-tombstones,2026:'` (a tag URI,
   * RFC 4151: an identifier, never dereferenced).
   */
  problemTypeBase?: string = 'tag:nestjs-tombstones,2026:';

  /**
   * `Cache-Control` per answer, some of `TombstoneCacheControl`: each a header value, an object of
   * directives (`{ maxAge, sMaxAge, staleWhileRevalidate, staleIfError, public }`) or `false`.
   * Default: the defaults of `TombstoneCacheControl`.
   */
  cacheControl?: TombstoneCacheControl = new TombstoneCacheControl();

  /**
   * Time budget of one tombstone lookup, in milliseconds. Past it the client gets the plain 404
   * and the timeout is logged. Default: `2000`.
   */
  lookupTimeoutMs?: number = 2000;

  /**
   * Most lookups that wait on the database at once, each holding one connection of the
   * DataSource's pool; further lookups queue (within `lookupTimeoutMs`). Keep it below your pool
   * size: the rest of the pool stays your app's, however slow the database or heavy the flood.
   * Default: `4`.
   */
  maxConcurrentLookups?: number = 4;

  /**
   * Fails fast while the database is down: after `failures` lookups in a row fail or time out,
   * misses that need the database get the plain 404 at once, without a query, for a cool-down;
   * then one lookup at a time probes the database. Answers from the lookup cache are not
   * affected. `false` turns it off (every such miss then waits up to `lookupTimeoutMs`); an
   * object sets some of `TombstoneCircuitBreakerOptions`. Default: `true` (on, with the defaults
   * of `TombstoneCircuitBreakerOptions`).
   */
  circuitBreaker?: boolean | TombstoneCircuitBreakerOptions = true;

  /**
   * Sends the lookup as a named prepared statement, planned once per connection (most of a cold
   * lookup's time is planning). Behind a pooler in transaction mode that does not keep prepared
   * statements (PgBouncer before 1.21, or with `max_prepared_statements = 0`), the module sees it
   * at the first lookup that meets the problem, answers that lookup with a plain query, and uses
   * plain queries from then on (with a warning); `false` starts with them. Default: `true`.
   */
  preparedStatements?: boolean = true;

  /**
   * Where cold lookups (misses the lookup cache cannot answer) are read: `'primary'`, or
   * `'replica'`, a replica of the DataSource's TypeORM `replication.slaves` once it has replayed
   * every change this instance has heard of (the primary otherwise, and whenever no replica may
   * answer). Needs the lookup cache, which hears the changes; see docs/operations.md.
   * Default: `'primary'`.
   */
  lookups?: 'primary' | 'replica' = 'primary';

  /** Header that carries the request id, read from the client and always answered. Default: `'x-request-id'`. */
  requestIdHeader?: string = 'x-request-id';

  /**
   * The request id of an answer, from your app, so that the id in a 410's body and header is the
   * one in your logs: e.g. `(req) => req.id` on Fastify. Called on the miss path only. A sane id
   * (printable ASCII without spaces, at most 128 characters) is used as it is; `undefined` falls
   * back to the `requestIdHeader` header or a new UUID, and so do a throw and any other value
   * (both logged, at a bounded rate). Without it, nestjs-cls's request id is used when
   * `ClsModule` is imported and active for the request. Default: none.
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the app's own request type (Express, Fastify, with its `id`)
  requestId?: (request: any) => string | undefined = undefined;

  /**
   * HTML pages for browsers: a request whose `Accept` prefers `text/html` gets its 404, 410 (and
   * redirect) as a small HTML page, with the same status and headers and a strict
   * `Content-Security-Policy`; `*\/*`, no `Accept` and JSON stay JSON. `false`: every answer is
   * JSON (or problem details), for a pure API. See docs/responses.md. Default: `true`.
   */
  html?: boolean = true;

  /** Renders answers; subclass `TombstoneRenderer` to change bodies. Default: none (`TombstoneRenderer`). */
  renderer?: Type<TombstoneRenderer> = undefined;

  /**
   * Who acts in a request, e.g. `(req) => req.user?.id`: recorded as the actor of every tombstone
   * written while serving it (captured or recorded). Read when the tombstone is written, so after
   * your guards ran. Default: none (and then no per-request work at all).
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the app's own request type (Express, Fastify, with its `user`)
  actor?: (request: any) => string | null | undefined = undefined;

  /**
   * What start-up does when a `@TombstoneTracked` entity's capture triggers are missing or do
   * not match its declarations: `'error'` (refuse to start), `'warn'` (log), `'off'`.
   * Default: `'error'`.
   */
  captureCheck?: 'error' | 'warn' | 'off' = 'error';

  /**
   * Counts every answer a tombstone gave (410, redirect, hidden 404) in its row's `hit_count` and
   * `last_hit_at`. Counted in memory and written in one statement per batch, never during the
   * request. `false` turns it off; an object turns it on with some of `TombstoneHitCountOptions`.
   * Default: `true` (on, with the defaults of `TombstoneHitCountOptions`).
   */
  hitCounts?: boolean | TombstoneHitCountOptions = true;

  /**
   * Logs 404s that no tombstone explained, per (scope, type, key), in `tombstone_misses`: the
   * broken links worth a tombstone. Batched like hit counts, with bounded memory and table size.
   * `true` turns it on with the defaults of `TombstoneMissLogOptions`, an object with some of
   * them. Default: `false` (off).
   */
  missLog?: boolean | TombstoneMissLogOptions = false;

  /**
   * Keeps lookup answers in memory and a membership filter of tombstoned keys, kept coherent
   * across instances by PostgreSQL `LISTEN`/`NOTIFY`. `false` turns it off (every miss of a
   * `@Tombstoned` route is then one query); an object turns it on with some of
   * `TombstoneLookupCacheOptions`. Default: `true` (on, with the defaults of
   * `TombstoneLookupCacheOptions`).
   */
  cache?: boolean | TombstoneLookupCacheOptions = true;

  /**
   * Cache tags on the answers of `@Tombstoned()` routes, for a CDN to purge them by tag when a
   * tombstone changes: a header (`Surrogate-Key` by default) with the tags of the key asked for.
   * `true` turns it on with the defaults of `TombstoneCacheTagsOptions`, an object with some of
   * them. A found resource's answer carries it too where the route says `cacheTags: true`.
   * Default: `false` (off).
   */
  cacheTags?: boolean | TombstoneCacheTagsOptions = false;

  /**
   * Key normalisation, per resource type: the keys of a type listed here are stored in their
   * normal form when tombstones are written (recording API, admin, import, misses log), and a
   * request's key is put in that form before it is looked up, so that `/articles/OLD-HELLO` finds
   * the tombstone of `old-hello`. Redirect targets are not rewritten: a target must already be in
   * its normal form (a write with another one is refused). Each type takes `'lower'`
   * (`toLowerCase()`, locale-independent), `'nfc'` (Unicode NFC), a function of the key that
   * returns its normal form (it must be idempotent), or a list of these applied in order (e.g.
   * `['lower', 'nfc']`; `'nfc'` must come after `'lower'`). Keys captured by triggers are stored as their column holds them: keep
   * such columns in normal form. See docs/recording.md. Default: none (keys are compared as they
   * are).
   *
   * @example
   * TombstoneModule.forRoot({ normalizeKeys: { article: 'lower', tag: ['lower', 'nfc'], sku: (key) => key.toUpperCase() } });
   */
  normalizeKeys?: Record<string, 'lower' | 'nfc' | ((key: string) => string) | readonly ('lower' | 'nfc' | ((key: string) => string))[]> = undefined;

  /**
   * The budget and the cache of "did you mean" suggestions, some of `TombstoneSuggestionOptions`.
   * Routes opt in with `@Tombstoned(type, { suggest: true })`; without such a route nothing runs.
   * Default: the defaults of `TombstoneSuggestionOptions`.
   */
  suggestions?: TombstoneSuggestionOptions = new TombstoneSuggestionOptions();
}

/**
 * The options of `T` once resolved: every field set, to its default where it was not given,
 * except the `Unset` ones, whose default is none; `Groups` replaces the fields that resolve to
 * settings of their own.
 */
type Resolved<T, Unset extends keyof T = never, Groups = unknown> = Flat<Omit<Required<T>, Unset | keyof Groups> & Pick<T, Unset> & Groups>;
type Flat<T> = { [K in keyof T]: T[K] };

export type ResolvedHitCountOptions = Resolved<TombstoneHitCountOptions>;
export type ResolvedMissLogOptions = Resolved<TombstoneMissLogOptions>;
export type ResolvedFilterOptions = Resolved<TombstoneFilterOptions>;
export type ResolvedCircuitBreakerOptions = Resolved<TombstoneCircuitBreakerOptions>;
export type ResolvedCacheOptions = Resolved<TombstoneLookupCacheOptions, 'store' | 'listen', { filter: ResolvedFilterOptions | false }>;
export type ResolvedCacheTagsOptions = Resolved<TombstoneCacheTagsOptions, 'tag'>;
export type ResolvedSuggestionOptions = Resolved<TombstoneSuggestionOptions>;
/** Each answer's `Cache-Control` as a header value (objects of directives written out), or `false`. */
export type ResolvedCacheControl = { [K in keyof TombstoneCacheControl]-?: string | false };

/** What the module's parts are given (token `TOMBSTONE_OPTIONS`). Internal. */
export type ResolvedTombstoneOptions = Resolved<
  TombstoneModuleOptions,
  'dataSource' | 'scope' | 'renderer' | 'actor' | 'requestId',
  {
    cacheControl: ResolvedCacheControl;
    circuitBreaker: ResolvedCircuitBreakerOptions | false;
    hitCounts: ResolvedHitCountOptions | false;
    missLog: ResolvedMissLogOptions | false;
    cache: ResolvedCacheOptions | false;
    cacheTags: ResolvedCacheTagsOptions | false;
    /** The normaliser of each type that has one, the built-ins and functions composed into one. */
    normalizeKeys: ReadonlyMap<string, (key: string) => string>;
    suggestions: ResolvedSuggestionOptions;
  }
>;
