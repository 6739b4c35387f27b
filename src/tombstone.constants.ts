/** Token of the resolved (validated, defaulted) module options. Internal. */
export const TOMBSTONE_OPTIONS = Symbol('TOMBSTONE_OPTIONS');

/** The channel the migration `CreateTombstoneNotify1764115200000` announces changes on. */
export const TOMBSTONE_CHANNEL = 'nestjs_tombstones';

/** The table every tombstone lives in. */
export const TOMBSTONE_TABLE = 'tombstones';

/**
 * Upper bounds the database enforces too (see the migration). They keep every key inside one
 * B-tree index entry and bound what a hostile request can make the module store or echo.
 */
export const LIMITS = {
  /** Bytes of a resource key or target key (UTF-8). */
  keyBytes: 2048,
  /** Bytes of a scope (UTF-8). */
  scopeBytes: 256,
  /** Characters of a resource type. */
  typeLength: 128,
  /** Characters of a reason. */
  reasonLength: 2000,
  /** Characters of an alternative link. */
  alternativeLength: 2048,
  /** Characters of an actor. */
  actorLength: 256,
  /** Characters of a referrer kept by the misses log. */
  referrerLength: 512,
} as const;
