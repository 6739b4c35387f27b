import { Inject, Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import { TombstoneBreaker } from './tombstone.breaker.js';
import { TombstoneCacheStore } from './tombstone.cache.js';
import { TombstoneFences } from './tombstone.fences.js';
import { TombstoneReplicas } from './tombstone.replicas.js';
import { StoredAnswers } from './tombstone.stored-answers.js';
import { LOAD_BATCH, maxCapacity, readPairKeys, type SaltedFilter, type TombstoneLookupStats } from './tombstone.filter-keys.js';
import { type LoadedFilter, type LoadReason, TombstoneFilterLoader } from './tombstone.filter-loader.js';
import { SOURCE_FILTER, SOURCE_STORE } from '../counters/tombstone.answers.js';
import { TOMBSTONE_OPTIONS } from '../tombstone.constants.js';
import type { ResolvedCacheOptions, ResolvedTombstoneOptions } from '../tombstone.options.js';
import { TombstoneChanges } from '../table/tombstone.changes.js';
import { TombstoneTable } from '../table/tombstone.table.js';
import { candidatePrefixes } from '../table/tombstone.walk.js';
import { isStorableKey, isStorableScope, isValidType } from '../tombstone.validation.js';
import { NO_TOMBSTONE, type TombstoneInvalidation, type TombstoneLookupResult, type TombstoneResolution } from '../tombstone.types.js';

export type { TombstoneLookupStats };

function isPrefixLike(key: string): boolean {
  return key.endsWith('/');
}

/** How often, about, each instance looks at the stored snapshot of the filter. */
const SNAPSHOT_CHECK_MS = 10 * 60_000;

/**
 * Answers lookups from memory when it can: a membership filter of tombstoned keys answers
 * unknown keys, a bounded store keeps recent answers (negative ones too), and concurrent lookups
 * of one key share one query. The filter and the store are trusted only while the instance
 * listens for changes (`TombstoneNotifications`): every write, from any instance or from SQL,
 * then drops what it made stale. Without that, every lookup is a query.
 */
@Injectable()
export class TombstoneLookup implements OnModuleInit {
  private readonly logger = new Logger('TombstoneModule');
  private readonly settings: ResolvedCacheOptions | false;
  private state: TombstoneLookupStats['state'];
  /** Changes at every invalidation: a lookup that started before one must not be kept. */
  private epoch = 0;
  /** Changes when listening stops or starts again: loads of an older one are abandoned. */
  private generation = 0;
  /** Lookups on their way, shared by later lookups of the same key while nothing changed. */
  private readonly inflight = new Map<string, { epoch: number; promise: Promise<TombstoneResolution> }>();
  /** Where answers are kept, with the links of those read through another key (`null` without a cache). */
  private readonly stored: StoredAnswers | null;
  private readonly counters = { filtered: 0, cached: 0, queried: 0 };
  /** Between lookups and the database: their time budget, their share of the pool, the circuit breaker. */
  readonly breaker: TombstoneBreaker;

  private filter: SaltedFilter | null = null;
  /** A full load in progress: changes are added to it as well. */
  private building: SaltedFilter | null = null;
  private filterValid = false;
  private lastLoad: Omit<LoadedFilter, 'filter'> | null = null;
  private readonly loader: TombstoneFilterLoader | null;
  /** The next look at the stored snapshot (see `checkSnapshot()`). */
  private checkTimer: NodeJS.Timeout | undefined;
  /** (scope, type) pairs reloaded after a change too large to list: the filter skips them. */
  private readonly unsure = new Set<string>();
  private loading: Promise<void> | null = null;
  /** How long the next run of loads waits before it starts (see `listening()`). */
  private reloadDelay = 0;
  private pending: { full: LoadReason | null; pairs: Set<string> } = { full: null, pairs: new Set() };

  constructor(
    @Inject(TOMBSTONE_OPTIONS) options: ResolvedTombstoneOptions,
    private readonly table: TombstoneTable,
    private readonly changes: TombstoneChanges,
    private readonly store: TombstoneCacheStore,
    private readonly fences: TombstoneFences,
    private readonly replicas: TombstoneReplicas,
  ) {
    this.settings = options.cache;
    this.stored = options.cache ? new StoredAnswers(store, options.cache) : null;
    this.state = options.cache ? 'waiting' : 'off';
    this.breaker = new TombstoneBreaker(options.circuitBreaker, options.lookupTimeoutMs, options.maxConcurrentLookups, this.logger);
    this.loader = options.cache && options.cache.filter ? new TombstoneFilterLoader(table, options.cache.filter, this.logger) : null;
  }

  onModuleInit(): void {
    // The module's own writes are dropped at once, before their notification comes back.
    if (this.settings) this.changes.subscribe((change) => this.invalidate(change));
  }

  /**
   * What a request for (scope, type, key) is answered: from the filter or the store when they
   * know, or from one query (shared by concurrent lookups of the same key). A value, or a
   * promise when the database is asked. A type written here whose notification may still be on
   * its way is asked of the database, unshared and not kept (see `TombstoneFences`).
   */
  resolve(type: string, key: string, scope = ''): TombstoneResolution | Promise<TombstoneResolution> {
    // Before the breaker: a key that cannot have a tombstone must not pass for its probe.
    if (!isValidType(type) || !isStorableKey(key) || !isStorableScope(scope)) {
      this.lastSource = SOURCE_FILTER;
      return NO_TOMBSTONE;
    }
    if (this.state !== 'coherent' || this.fences.unsure(type)) return this.breaker.run(async () => (await this.timed(() => this.table.lookup(type, key, scope))).resolution);
    const id = `${scope}\u0000${type}\u0000${key}`;
    if (this.filter !== null && this.filterValid && (this.unsure.size === 0 || !this.unsure.has(`${scope}\u0000${type}`))) {
      if (!this.filter.has(id) && !this.coveredInFilter(this.filter, scope, type, key)) {
        this.counters.filtered++;
        this.lastSource = SOURCE_FILTER;
        return NO_TOMBSTONE;
      }
    }
    const entry = this.store.get(id);
    if (entry !== undefined) {
      this.counters.cached++;
      this.lastSource = SOURCE_STORE;
      return entry.resolution;
    }
    // A lookup that started before a change may read what the change replaced: not shared.
    const pending = this.inflight.get(id);
    if (pending !== undefined && pending.epoch === this.epoch) return pending.promise;
    const flight = { epoch: this.epoch, promise: this.load(id, type, key, scope) };
    this.inflight.set(id, flight);
    const landed = () => {
      if (this.inflight.get(id) === flight) this.inflight.delete(id);
    };
    flight.promise.then(landed, landed);
    return flight.promise;
  }

  /** Drops what a change made stale, and adds its new tombstones to the filter. */
  invalidate(change: TombstoneInvalidation): void {
    if (!this.settings) return;
    this.epoch++;
    this.replicas.changed();
    if (!('scope' in change)) {
      this.stored?.clear();
      this.requestLoad('invalid');
      return;
    }
    if ('all' in change) {
      this.stored?.clear();
      if (this.settings.filter) {
        this.unsure.add(`${change.scope}\u0000${change.type}`);
        this.pending.pairs.add(`${change.scope}\u0000${change.type}`);
        this.requestLoad(null);
      }
      return;
    }
    // A key that ends with '/' may be a prefix tombstone's, whose change changes the answers of
    // every key under it (and of the keys that lead under it): none kept is sure any more.
    if (change.listed.some(isPrefixLike) || change.unlisted.some(isPrefixLike)) this.stored?.clear();
    const prefix = `${change.scope}\u0000${change.type}\u0000`;
    for (const key of change.listed) {
      this.stored?.drop(prefix + key);
      this.addToFilter(prefix + key);
    }
    for (const key of change.unlisted) this.stored?.drop(prefix + key);
    if (this.filterValid && this.pending.full === null) this.growIfFull();
  }

  /**
   * The instance listens for changes: from now on, what it keeps stays true. The full load of
   * the filter starts after `reloadDelayMs` (spread over instances that reconnect at the same
   * time); until it has run, lookups skip the filter, as during any load.
   */
  listening(reloadDelayMs = 0): void {
    if (!this.settings || this.state === 'off') return;
    this.generation++;
    this.epoch++;
    this.stored?.clear();
    this.state = 'coherent';
    // Changes made while nobody listened are never announced: replicas must have replayed them.
    this.replicas.listening();
    this.reloadDelay = reloadDelayMs;
    this.requestLoad('invalid');
  }

  /** The instance stopped listening (connection lost, shutdown): it keeps nothing. */
  deaf(): void {
    if (!this.settings) return;
    this.generation++;
    this.epoch++;
    this.stored?.clear();
    this.replicas.deaf();
    clearTimeout(this.checkTimer);
    if (this.state !== 'off') this.state = 'waiting';
    this.filterValid = false;
    this.building = null;
    this.pending = { full: null, pairs: new Set() };
  }

  /** The cache cannot be kept coherent (no notification triggers): every lookup is a query. */
  disable(): void {
    this.deaf();
    this.state = 'off';
  }

  /** Resolves when the filter has loaded (or failed to, or there is none): for tests and warm-up. */
  async loaded(): Promise<void> {
    while (this.loading) await this.loading;
  }

  /**
   * Where the last lookup that `resolve()` answered with a value got it: the filter (or a key no
   * tombstone can have) or the store. Read at once by the miss resolver, for the answers' counts.
   */
  lastSource: typeof SOURCE_FILTER | typeof SOURCE_STORE = SOURCE_FILTER;

  /** Told how long each query of a lookup took, in seconds, and whether it failed (metrics). */
  onQueried: ((seconds: number, error: unknown) => void) | null = null;

  /** A lookup's query, timed for `onQueried`. */
  private async timed(query: () => Promise<TombstoneLookupResult>): Promise<TombstoneLookupResult> {
    const observe = this.onQueried;
    if (observe === null) return query();
    const start = performance.now();
    try {
      const result = await query();
      observe((performance.now() - start) / 1000, null);
      return result;
    } catch (error) {
      observe((performance.now() - start) / 1000, error);
      throw error;
    }
  }

  stats(): TombstoneLookupStats {
    const filter = this.filter;
    return {
      state: this.state,
      entries: this.store.size,
      ...this.counters,
      filter: {
        ready: filter !== null && this.filterValid && this.state === 'coherent',
        keys: filter?.keys ?? 0,
        capacity: filter?.capacity ?? 0,
        bytes: filter ? filter.bloom.buckets.byteLength : 0,
        lastLoadMs: this.lastLoad && Math.round(this.lastLoad.ms),
        lastLoadFrom: this.lastLoad && this.lastLoad.from,
        lastLoadRows: this.lastLoad && this.lastLoad.rows,
      },
    };
  }

  private async load(id: string, type: string, key: string, scope: string): Promise<TombstoneResolution> {
    const epoch = this.epoch;
    const result = await this.breaker.run(() => {
      this.counters.queried++;
      return this.timed(() => this.replicas.lookup(type, key, scope));
    });
    if (epoch === this.epoch && this.state === 'coherent') this.stored?.remember(id, result, `${scope}\u0000${type}\u0000`);
    return result.resolution;
  }

  /**
   * Whether one of the key's candidate prefixes is in the filter (a prefix tombstone may cover
   * it). A key without '/' has none: its lookup costs one probe, as before prefixes.
   */
  private coveredInFilter(filter: SaltedFilter, scope: string, type: string, key: string): boolean {
    if (!key.includes('/')) return false;
    for (const prefix of candidatePrefixes(key)) if (prefix !== key && filter.has(`${scope}\u0000${type}\u0000${prefix}`)) return true;
    return false;
  }

  private addToFilter(id: string): void {
    this.filter?.add(id);
    this.building?.add(id);
  }

  /**
   * Asks for a load: `invalid` (the filter missed changes: skip it until a full load is done),
   * `grow` (it is full: load a larger one, keep using this one), `refresh` (see
   * `checkSnapshot()`; keep using this one), or `null` (the pairs pending).
   */
  private requestLoad(full: LoadReason | null): void {
    if (!this.settings || !this.settings.filter || this.state !== 'coherent') return;
    if (full === 'invalid') {
      // Everything is loaded again: no pair needs a load of its own.
      this.filterValid = false;
      this.pending.full = 'invalid';
      this.pending.pairs.clear();
      this.unsure.clear();
    } else if (full === 'grow' && (this.pending.full === null || this.pending.full === 'refresh')) {
      this.pending.full = 'grow';
    } else if (full === 'refresh' && this.pending.full === null) {
      this.pending.full = 'refresh';
    }
    this.loading ??= this.runLoads().finally(() => {
      this.loading = null;
      // A run ends when listening restarts under it: what the new start asked for still runs.
      if (this.state === 'coherent' && (this.pending.full !== null || this.pending.pairs.size > 0)) this.requestLoad(null);
    });
  }

  private async runLoads(): Promise<void> {
    const generation = this.generation;
    const delay = this.reloadDelay;
    this.reloadDelay = 0;
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay).unref());
    let failures = 0;
    while (generation === this.generation && (this.pending.full !== null || this.pending.pairs.size > 0)) {
      // Taken off the queue first: a change announced during the load asks for it again.
      const full = this.pending.full;
      const [pair] = full === null ? this.pending.pairs : [];
      try {
        if (full !== null) {
          this.pending.full = null;
          await this.loadAll(generation, full);
        } else {
          this.pending.pairs.delete(pair);
          await this.loadPair(generation, pair);
          if (generation === this.generation && !this.pending.pairs.has(pair)) this.unsure.delete(pair);
          if (generation === this.generation && this.filterValid && this.pending.full === null) this.growIfFull();
        }
        failures = 0;
      } catch (error) {
        if (generation !== this.generation) return;
        this.logger.error(
          `Loading the tombstone filter failed; lookups skip what it may miss until it loads: ${(error as Error)?.message ?? String(error)}`,
          (error as Error)?.stack,
        );
        this.building = null;
        if (full !== null) this.pending.full = this.pending.full === 'invalid' ? 'invalid' : full;
        else this.pending.pairs.add(pair);
        await new Promise((resolve) => setTimeout(resolve, Math.min(30_000, 500 * 2 ** failures++)).unref());
      }
    }
  }

  private async loadAll(generation: number, reason: LoadReason): Promise<void> {
    const current = () => generation === this.generation;
    await (this.loader as TombstoneFilterLoader).load(reason, this.filter, {
      current,
      building: (filter) => {
        if (current()) this.building = filter;
      },
      install: (loaded) => {
        if (!current() || this.building !== loaded.filter) return;
        // Changes announced during the load went into it too (see addToFilter).
        this.filter = loaded.filter;
        this.building = null;
        // Unless a change too large to list came during the load: the next load makes it valid.
        if (this.pending.full !== 'invalid') this.filterValid = true;
        const { filter, ...load } = loaded;
        this.lastLoad = load;
        this.logger.log(
          `Tombstone filter loaded from ${load.from === 'snapshot' ? 'the stored snapshot and the rows changed since' : 'the table'}: ` +
            `${filter.keys} keys, ${load.rows} rows read in ${Math.round(load.ms)} ms (${Math.round(filter.bloom.buckets.byteLength / 1024)} KiB).`,
        );
        this.growIfFull();
        this.scheduleCheck();
      },
    });
    // A load that ended without installing its filter (a snapshot it could not use, and no read
    // of the table after it) leaves nothing to fill: changes stop going into it, and it is freed.
    if (current()) this.building = null;
  }

  /** A filter holding more keys than it was sized for lets more unknown keys through: grow it. */
  private growIfFull(): void {
    const settings = (this.settings as ResolvedCacheOptions).filter;
    const filter = this.filter;
    if (!settings || filter === null || filter.keys <= filter.capacity || filter.capacity >= maxCapacity(settings.falsePositiveRate)) return;
    this.requestLoad('grow');
  }

  /** Looks at the stored snapshot now and then (see `checkSnapshot()`), at times that differ between instances. */
  private scheduleCheck(): void {
    clearTimeout(this.checkTimer);
    if (this.state !== 'coherent') return;
    this.checkTimer = setTimeout(() => void this.checkSnapshot(), SNAPSHOT_CHECK_MS * (0.5 + Math.random()));
    this.checkTimer.unref();
  }

  /**
   * Loads the filter again in the background when the stored snapshot calls for it: it is stale
   * (this instance then writes it again, unless another one is at it) or newer than this
   * instance's filter (which sheds the keys deleted or hidden since). @internal Tests call it.
   */
  async checkSnapshot(): Promise<void> {
    const generation = this.generation;
    const filter = this.filter;
    try {
      if (this.loader === null || filter === null || !this.filterValid || this.loading || this.state !== 'coherent') return;
      const due = await this.loader.refreshDue(filter);
      if (due === null || generation !== this.generation || this.filter !== filter) return;
      this.logger.log(`Tombstone filter snapshot: ${due}; loading the filter again.`);
      this.requestLoad('refresh');
    } catch (error) {
      this.logger.warn(`Tombstone filter snapshot: could not look at it: ${(error as Error)?.message ?? String(error)}`);
    } finally {
      if (generation === this.generation) this.scheduleCheck();
    }
  }

  private async loadPair(generation: number, pair: string): Promise<void> {
    const [scope, type] = pair.split('\u0000');
    const prefix = `${pair}\u0000`;
    let after = '';
    for (;;) {
      const rows = await readPairKeys(this.table.dataSource, scope, type, after);
      if (generation !== this.generation) return;
      for (const row of rows) this.addToFilter(prefix + row.resource_key);
      if (rows.length < LOAD_BATCH) break;
      after = rows[rows.length - 1].resource_key;
    }
  }
}
