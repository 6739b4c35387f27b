// The events' vocabulary, shared by the outbox, its dispatcher and every sink. A leaf: it
// imports nothing.

/** What happened to a tombstone. */
export type TombstoneEventType = 'tombstone.created' | 'tombstone.changed' | 'tombstone.removed';

export const TOMBSTONE_EVENT_TYPES: readonly TombstoneEventType[] = ['tombstone.created', 'tombstone.changed', 'tombstone.removed'];

/** A tombstone as an event shows it, before or after the change (the admin JSON's names). */
export interface TombstoneEventState {
  /** The tombstone row's id. */
  readonly id: string;
  readonly kind: 'deleted' | 'hidden' | 'moved' | 'merged';
  readonly target: string | null;
  readonly permanent: boolean;
  readonly reason: string | null;
  readonly alternative: string | null;
  readonly actor: string | null;
  /** ISO 8601. */
  readonly occurredAt: string;
  /** ISO 8601, or `null`. */
  readonly expiresAt: string | null;
  readonly metadata: Record<string, unknown>;
}

/**
 * One change of one tombstone, written by the tombstone table's triggers in the transaction that
 * made it: a rolled-back change has no event, a committed one has exactly one. A change of a
 * tombstone's scope, type or key is two events: `removed` for the old key, `created` for the new.
 */
export interface TombstoneEvent {
  /** Stable and unique (a UUID): the idempotency key of every delivery of this event. */
  readonly id: string;
  /**
   * Position in the outbox (a decimal integer). The events of one (scope, type, key) are numbered
   * in the order their transactions committed, and delivered in that order to each sink.
   */
  readonly sequence: string;
  readonly type: TombstoneEventType;
  readonly scope: string;
  /** The resource type (`@Tombstoned('article')`'s `'article'`). */
  readonly resourceType: string;
  readonly key: string;
  /** The tombstone before the change; `null` for `created`. */
  readonly before: TombstoneEventState | null;
  /** The tombstone after the change; `null` for `removed`. */
  readonly after: TombstoneEventState | null;
  /**
   * Who made the change: `SET LOCAL nestjs_tombstones.actor` in the writing transaction when
   * set, else the tombstone's own `actor` (after the change; `null` for `removed`).
   */
  readonly actor: string | null;
  /** The tombstone's reason (after the change, else before). */
  readonly reason: string | null;
  /** When the change's transaction started (ISO 8601). */
  readonly occurredAt: string;
}

/**
 * Where events go: in-process listeners, a webhook endpoint, a CDN's purge API. Each sink has its
 * own deliveries in the outbox (its own retries, backoff and dead letters), so a failing sink
 * never holds another one back.
 */
export interface TombstoneEventSink {
  /**
   * Unique and stable across restarts and instances: the outbox keeps each sink's deliveries under
   * this name (`webhook:search-index`, `purge:fastly`, `listener:SearchIndexer.onTombstone`).
   */
  readonly name: string;
  /** Most events handed to one `deliver()` call. Default: 1. */
  readonly batchSize?: number;
  /** Most `deliver()` calls of this sink running at once, per instance. Default: 4. */
  readonly concurrency?: number;
  /**
   * Delivers `events` (at most `batchSize`, never two of the same key): resolves when every one
   * is delivered, rejects when none may be taken as delivered (they are retried as a whole).
   * Delivery is at least once: the same event (same `id`) may come again after a failure or a
   * crash. `signal` aborts when the delivery runs past its lease or the app shuts down.
   */
  deliver(events: readonly TombstoneEvent[], signal: AbortSignal): Promise<void>;
}
