import { LRUCache } from 'lru-cache';
import { type TombstoneResolution } from '../tombstone.types.js';

/**
 * One cached lookup: what the key answers, and the key its answer was read through (the
 * target of a move, whose own tombstone decides a chain's end), if any.
 */
export interface TombstoneCacheEntry {
  readonly resolution: TombstoneResolution;
  readonly via: string | null;
}

/**
 * Where the module keeps the answers of recent lookups, negative ones included. Synchronous:
 * a cached miss is answered without waiting for anything. The default is an in-process LRU
 * (`LruTombstoneCacheStore`); provide your own through the module's `cache.store` option, or
 * inject this token to look inside.
 *
 * A store must honour `ttlMs`: the module relies on it to drop a tombstone's answer when the
 * tombstone expires. It needs no coherence of its own across instances: the module deletes what
 * every write makes stale (see the README, "Lookup cache").
 *
 * @example
 * class CountingStore extends LruTombstoneCacheStore {
 *   hits = 0;
 *   override get(key: string) {
 *     const entry = super.get(key);
 *     if (entry) this.hits++;
 *     return entry;
 *   }
 * }
 * TombstoneModule.forRoot({ cache: { store: new CountingStore({ maxEntries: 50_000 }) } });
 */
export abstract class TombstoneCacheStore {
  /** The live entry of `key`, or `undefined`. */
  abstract get(key: string): TombstoneCacheEntry | undefined;
  /** Stores an entry for at most `ttlMs` milliseconds. */
  abstract set(key: string, entry: TombstoneCacheEntry, ttlMs: number): void;
  abstract delete(key: string): void;
  abstract clear(): void;
  /** How many entries are held (for stats). */
  abstract get size(): number;
}

export interface LruTombstoneCacheStoreOptions {
  /** Most entries held. Default: `10000`. */
  maxEntries?: number;
  /** Most bytes held, as estimated from each entry's strings. Default: `16 MiB`. */
  maxBytes?: number;
}

/**
 * The default store: an LRU (`lru-cache`), bounded in entries and in memory.
 * An entry costs about 200 bytes plus twice the length of its key, reason and links.
 */
export class LruTombstoneCacheStore extends TombstoneCacheStore {
  private readonly lru: LRUCache<string, TombstoneCacheEntry>;

  constructor(options: LruTombstoneCacheStoreOptions = {}) {
    super();
    this.lru = new LRUCache<string, TombstoneCacheEntry>({
      max: options.maxEntries ?? 10_000,
      maxSize: options.maxBytes ?? 16 * 1024 * 1024,
      sizeCalculation: (entry, key) => entrySize(key, entry),
      // Expired entries are dropped when met, or pushed out by newer ones: no timer.
      ttlAutopurge: false,
    });
  }

  get(key: string): TombstoneCacheEntry | undefined {
    return this.lru.get(key);
  }

  set(key: string, entry: TombstoneCacheEntry, ttlMs: number): void {
    this.lru.set(key, entry, { ttl: ttlMs });
  }

  delete(key: string): void {
    this.lru.delete(key);
  }

  clear(): void {
    this.lru.clear();
  }

  get size(): number {
    return this.lru.size;
  }

  /** Estimated bytes held (see `entrySize()`). */
  get bytes(): number {
    return this.lru.calculatedSize;
  }
}

/** Estimated bytes of an entry: V8 strings take up to two bytes a character. */
export function entrySize(key: string, entry: TombstoneCacheEntry): number {
  const r = entry.resolution as Partial<Record<'reason' | 'alternative' | 'target' | 'id', string | null>>;
  return (
    200 + 2 * (key.length + (entry.via?.length ?? 0) + (r.reason?.length ?? 0) + (r.alternative?.length ?? 0) + (r.target?.length ?? 0))
  );
}
