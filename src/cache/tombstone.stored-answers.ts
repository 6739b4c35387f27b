import type { ResolvedCacheOptions } from '../tombstone.options.js';
import type { TombstoneLookupResult } from '../tombstone.types.js';
import type { TombstoneCacheStore } from './tombstone.cache.js';

/**
 * What the lookup cache writes to its store: the answers of lookups, each for as long as it stays
 * true, and the links of answers read through another key (a redirect's target, whose own
 * tombstone decides a chain's end), so that a change of that key drops them too.
 */
export class StoredAnswers {
  /** Keys of stored answers read through a key, per that key. */
  private readonly dependents = new Map<string, Set<string>>();
  private dependentCount = 0;

  constructor(
    private readonly store: TombstoneCacheStore,
    private readonly settings: ResolvedCacheOptions,
  ) {}

  /** Keeps the answer of `id` (a key of the (scope, type) `prefix`), unless it may not be kept. */
  remember(id: string, result: TombstoneLookupResult, prefix: string): void {
    if (!result.cacheable) return;
    let ttl = this.settings.ttlMs;
    if (result.validUntil !== null) ttl = Math.min(ttl, result.validUntil - Date.now());
    if (ttl < 1) return;
    const via = result.via === null ? null : prefix + result.via;
    this.store.set(id, { resolution: result.resolution, via }, ttl);
    if (via === null) return;
    let sources = this.dependents.get(via);
    if (sources === undefined) this.dependents.set(via, (sources = new Set()));
    if (!sources.has(id)) {
      sources.add(id);
      if (++this.dependentCount > 2 * this.settings.maxEntries) this.pruneDependents();
    }
  }

  /** Drops the answer of `id`, and those read through it. */
  drop(id: string): void {
    this.store.delete(id);
    const sources = this.dependents.get(id);
    if (sources === undefined) return;
    this.dependents.delete(id);
    this.dependentCount -= sources.size;
    for (const source of sources) this.store.delete(source);
  }

  clear(): void {
    this.store.clear();
    this.dependents.clear();
    this.dependentCount = 0;
  }

  /** Forgets links of answers the store no longer holds; if that is not enough, everything. */
  private pruneDependents(): void {
    const limit = 2 * this.settings.maxEntries;
    for (const [via, sources] of this.dependents) {
      for (const source of sources) {
        if (this.store.get(source)?.via !== via) sources.delete(source);
      }
      if (sources.size === 0) this.dependents.delete(via);
    }
    this.dependentCount = [...this.dependents.values()].reduce((n, s) => n + s.size, 0);
    if (this.dependentCount > limit / 2) this.clear();
  }
}
