import type { DataSource } from 'typeorm';
import type { TombstoneEvent, TombstoneEventState, TombstoneEventType } from './events.types.js';

/** A delivery a sink took: the event, which attempt this is (1 for the first), and its lease. */
export interface ClaimedDelivery {
  readonly event: TombstoneEvent;
  readonly attempt: number;
  /**
   * The lease's end as the outbox wrote it: settling the delivery checks it is still there, so an
   * instance whose lease ran out (and another instance took the delivery) changes nothing.
   */
  readonly lease: string;
}

/** Where a sink stands, read from the outbox. */
export interface TombstoneSinkStats {
  readonly sink: string;
  /** Deliveries not made yet (waiting, leased or backing off). */
  readonly pending: number;
  /** Deliveries that failed `maxAttempts` times, kept for the admin endpoints' retry or discard. */
  readonly dead: number;
  /** Age of the oldest pending event, in ms (0 when nothing is pending): the sink's lag. */
  readonly lagMs: number;
}

/** How failed deliveries are retried. */
export interface RetryPolicy {
  readonly maxAttempts: number;
  readonly retryDelayMs: number;
  readonly maxRetryDelayMs: number;
}

interface EventRow {
  id: string;
  event_id: string;
  type: TombstoneEventType;
  scope: string;
  resource_type: string;
  resource_key: string;
  before: RawState | null;
  after: RawState | null;
  actor: string | null;
  reason: string | null;
  occurred_at: Date;
  attempts?: number;
  lease?: string;
}

type RawState = Omit<TombstoneEventState, 'occurredAt' | 'expiresAt'> & { occurredAt: string; expiresAt: string | null };

const EVENT_COLUMNS = `e.id::text AS id, e.event_id::text AS event_id, e.type, e.scope, e.resource_type, e.resource_key,
  e.before, e.after, e.actor, e.reason, e.occurred_at`;

/**
 * The outbox's SQL: sinks register, take their due deliveries under a lease, and settle them.
 * Every statement is one round trip outside any transaction of the caller's, so a delivery never
 * holds a connection or a lock while it waits for a webhook or a CDN.
 *
 * A sink takes a delivery only when it is due (its backoff has passed), not leased by another
 * instance (or its lease ran out: the instance died), and no earlier event of the same (scope,
 * type, key) is still pending for that sink: each key's events reach each sink in commit order,
 * while other keys go on. `FOR UPDATE SKIP LOCKED` lets instances take batches side by side
 * without waiting for each other.
 */
export class TombstoneOutbox {
  constructor(private readonly dataSource: DataSource) {}

  /** Registers sinks (events are written for registered sinks only) and marks them seen. */
  async register(sinks: readonly string[]): Promise<void> {
    await this.dataSource.query(
      `INSERT INTO tombstone_event_sinks (name) SELECT unnest($1::text[])
       ON CONFLICT (name) DO UPDATE SET seen_at = now()`,
      [sinks],
    );
  }

  /** Registered sinks, with when an instance last said it delivers to each. */
  async sinks(): Promise<{ name: string; registeredAt: Date; seenAt: Date }[]> {
    const rows = (await this.dataSource.query(
      `SELECT name, registered_at, seen_at FROM tombstone_event_sinks ORDER BY name`,
    )) as { name: string; registered_at: Date; seen_at: Date }[];
    return rows.map((row) => ({ name: row.name, registeredAt: row.registered_at, seenAt: row.seen_at }));
  }

  /** Stops writing events for a sink and drops its deliveries, `batch` rows per statement. */
  async unregister(sink: string, batch = 10_000): Promise<boolean> {
    const [, removed] = (await this.dataSource.query(`DELETE FROM tombstone_event_sinks WHERE name = $1`, [sink])) as [unknown, number];
    for (;;) {
      const [, deleted] = (await this.dataSource.query(
        `DELETE FROM tombstone_event_deliveries WHERE (sink, event_id) IN (
           SELECT sink, event_id FROM tombstone_event_deliveries WHERE sink = $1 LIMIT $2)`,
        [sink, batch],
      )) as [unknown, number];
      if (deleted < batch) break;
    }
    return removed > 0;
  }

  /** Takes up to `limit` due deliveries of `sink` for `leaseMs`, oldest first, at most one per key. */
  async claim(sink: string, limit: number, leaseMs: number): Promise<ClaimedDelivery[]> {
    const rows = (await this.dataSource.query(
      `WITH c AS (
         SELECT d.sink, d.event_id FROM tombstone_event_deliveries d
          WHERE d.sink = $1 AND d.state = 'pending' AND d.next_attempt_at <= now()
            AND (d.leased_until IS NULL OR d.leased_until < clock_timestamp())
            AND NOT EXISTS (
              SELECT 1 FROM tombstone_event_deliveries p
               WHERE p.sink = d.sink AND p.state = 'pending' AND p.scope = d.scope
                 AND p.resource_type = d.resource_type AND p.resource_key = d.resource_key AND p.event_id < d.event_id)
          ORDER BY d.event_id
          LIMIT $2
          FOR UPDATE OF d SKIP LOCKED),
       u AS (
         UPDATE tombstone_event_deliveries d
            SET attempts = d.attempts + 1, leased_until = now() + $3 * interval '1 millisecond'
           FROM c WHERE d.sink = c.sink AND d.event_id = c.event_id
         RETURNING d.event_id, d.attempts, d.leased_until::text AS lease)
       SELECT ${EVENT_COLUMNS}, u.attempts, u.lease FROM u JOIN tombstone_events e ON e.id = u.event_id ORDER BY e.id`,
      // now(): one lease end for the whole claim (clock_timestamp() would differ row by row), on
      // the database's clock (every instance compares leases with it).
      [sink, limit, leaseMs],
    )) as EventRow[];
    return rows.map((row) => ({ event: eventOf(row), attempt: row.attempts ?? 1, lease: row.lease ?? '' }));
  }

  /** The deliveries, taken under `lease`, succeeded. */
  async delivered(sink: string, sequences: readonly string[], lease: string): Promise<void> {
    await this.dataSource.query(
      `UPDATE tombstone_event_deliveries
          SET state = 'delivered', finished_at = now(), leased_until = NULL, last_error = NULL
        WHERE sink = $1 AND event_id = ANY($2::bigint[]) AND state = 'pending' AND leased_until = $3::timestamptz`,
      [sink, sequences, lease],
    );
  }

  /**
   * The deliveries failed: each is retried after an exponential backoff with jitter (half the
   * delay fixed, half random, so instances that failed together do not retry together), or
   * becomes a dead letter once it has had `maxAttempts` attempts.
   */
  async failed(sink: string, sequences: readonly string[], lease: string, error: string, policy: RetryPolicy): Promise<void> {
    await this.dataSource.query(
      `UPDATE tombstone_event_deliveries
          SET state = CASE WHEN attempts >= $4 THEN 'dead' ELSE 'pending' END,
              finished_at = CASE WHEN attempts >= $4 THEN now() END,
              next_attempt_at = now() + least($6::float8, $5::float8 * 2 ^ (attempts - 1)) * (0.5 + random() / 2)
                                  * interval '1 millisecond',
              leased_until = NULL,
              last_error = left($3, 1000)
        WHERE sink = $1 AND event_id = ANY($2::bigint[]) AND state = 'pending' AND leased_until = $7::timestamptz`,
      [sink, sequences, error, policy.maxAttempts, policy.retryDelayMs, policy.maxRetryDelayMs, lease],
    );
  }

  /** Gives deliveries taken under `lease` back untouched (the app is stopping): the attempt does not count. */
  async release(sink: string, sequences: readonly string[], lease: string): Promise<void> {
    await this.dataSource.query(
      `UPDATE tombstone_event_deliveries SET leased_until = NULL, attempts = greatest(attempts - 1, 0)
        WHERE sink = $1 AND event_id = ANY($2::bigint[]) AND state = 'pending' AND leased_until = $3::timestamptz`,
      [sink, sequences, lease],
    );
  }

  /**
   * Deletes finished deliveries older than their retention, then the events left with no
   * delivery, `batch` rows per statement. Answers how many rows went.
   */
  async sweep(deliveredMs: number, deadMs: number, batch = 10_000): Promise<number> {
    let total = 0;
    for (const [state, ms] of [['delivered', deliveredMs], ['dead', deadMs]] as const) {
      for (;;) {
        const [, deleted] = (await this.dataSource.query(
          `DELETE FROM tombstone_event_deliveries WHERE (sink, event_id) IN (
             SELECT sink, event_id FROM tombstone_event_deliveries
              WHERE state = $1 AND finished_at < now() - $2 * interval '1 millisecond' LIMIT $3)`,
          [state, ms, batch],
        )) as [unknown, number];
        total += deleted;
        if (deleted < batch) break;
      }
    }
    for (;;) {
      const [, deleted] = (await this.dataSource.query(
        `DELETE FROM tombstone_events WHERE id IN (
           SELECT e.id FROM tombstone_events e
            WHERE e.occurred_at < now() - $1 * interval '1 millisecond'
              AND NOT EXISTS (SELECT 1 FROM tombstone_event_deliveries d WHERE d.event_id = e.id)
            ORDER BY e.id
            LIMIT $2)`,
        [Math.min(deliveredMs, deadMs), batch],
      )) as [unknown, number];
      total += deleted;
      if (deleted < batch) break;
    }
    return total;
  }

  /**
   * The keys whose tombstones point at each event's key now (a move or merge to it), at most
   * `limit` in all: their answers were read through it (`a` → `b`, and `b` deleted: `a` answers
   * 410), so a change of it changes theirs. Chains are collapsed when written: one level is all.
   */
  async referrers(events: readonly TombstoneEvent[], limit = 10_000): Promise<Map<TombstoneEvent, string[]>> {
    const rows = (await this.dataSource.query(
      `SELECT e.ord::int AS ord, t.resource_key AS key
         FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS e(scope, resource_type, resource_key, ord)
         JOIN tombstones t ON t.scope = e.scope AND t.resource_type = e.resource_type AND t.target_key = e.resource_key
        LIMIT $4`,
      [events.map((event) => event.scope), events.map((event) => event.resourceType), events.map((event) => event.key), limit],
    )) as { ord: number; key: string }[];
    const found = new Map<TombstoneEvent, string[]>();
    for (const row of rows) {
      const event = events[row.ord - 1];
      const keys = found.get(event);
      if (keys) keys.push(row.key);
      else found.set(event, [row.key]);
    }
    return found;
  }

  /** Pending and dead deliveries, and the lag, of every registered sink. */
  async stats(): Promise<TombstoneSinkStats[]> {
    const rows = (await this.dataSource.query(
      `SELECT k.name AS sink,
              (SELECT count(*) FROM tombstone_event_deliveries d WHERE d.sink = k.name AND d.state = 'pending')::int AS pending,
              (SELECT count(*) FROM tombstone_event_deliveries d WHERE d.sink = k.name AND d.state = 'dead')::int AS dead,
              coalesce((SELECT floor(extract(epoch FROM clock_timestamp() - e.occurred_at) * 1000)
                          FROM tombstone_event_deliveries d JOIN tombstone_events e ON e.id = d.event_id
                         WHERE d.sink = k.name AND d.state = 'pending' ORDER BY d.event_id LIMIT 1), 0)::float8 AS lag_ms
         FROM tombstone_event_sinks k ORDER BY k.name`,
    )) as { sink: string; pending: number; dead: number; lag_ms: number }[];
    return rows.map((row) => ({ sink: row.sink, pending: row.pending, dead: row.dead, lagMs: Math.max(0, row.lag_ms) }));
  }
}

/** An outbox row as sinks see it. */
export function eventOf(row: EventRow): TombstoneEvent {
  return {
    id: row.event_id,
    sequence: row.id,
    type: row.type,
    scope: row.scope,
    resourceType: row.resource_type,
    key: row.resource_key,
    before: stateOf(row.before),
    after: stateOf(row.after),
    actor: row.actor,
    reason: row.reason,
    occurredAt: new Date(row.occurred_at).toISOString(),
  };
}

function stateOf(raw: RawState | null): TombstoneEventState | null {
  if (raw === null) return null;
  return {
    id: raw.id,
    kind: raw.kind,
    target: raw.target,
    permanent: raw.permanent,
    reason: raw.reason,
    alternative: raw.alternative,
    actor: raw.actor,
    occurredAt: new Date(raw.occurredAt).toISOString(),
    expiresAt: raw.expiresAt === null ? null : new Date(raw.expiresAt).toISOString(),
    metadata: raw.metadata,
  };
}
