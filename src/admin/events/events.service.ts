import { Inject, Injectable, Logger, NotFoundException } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import type { DataSource } from 'typeorm';
import { eventOf, TombstoneOutbox } from '../../events/events.outbox.js';
import { TombstoneTable } from '../../table/tombstone.table.js';
import { coreProvider } from '../admin.core.js';
import { TOMBSTONE_ADMIN_OPTIONS } from '../admin.module-definition.js';
import type { ResolvedTombstoneAdminOptions } from '../admin.options.js';
import { invalid } from '../admin.validation.js';
import type { DeliveryState, ListDeadLettersQuery, ListTombstoneEventsQuery } from './events.dto.js';
import {
  decodeDeadCursor,
  decodeEventCursor,
  DELIVERY_COLUMNS,
  type DeliveryRow,
  deliveryView,
  encode,
  EVENT_COLUMNS,
  type EventRow,
  FINISHED_KEY,
  type TombstoneDeadLetterPage,
  type TombstoneDeliveryView,
  type TombstoneEventPage,
  type TombstoneEventView,
  type TombstoneSinkView,
} from './events.views.js';

/** Deliveries changed per statement by a bulk retry or discard (a few more if some die meanwhile). */
const BATCH = 10_000;

/**
 * The admin endpoints over the events outbox: its events and their deliveries, dead letters to
 * retry or discard, the registered sinks. Works from the tables alone: the dispatcher that
 * delivers the events need not run in this app.
 */
@Injectable()
export class TombstoneEventsAdminService {
  private readonly logger = new Logger('TombstoneAdminModule');

  constructor(
    @Inject(TOMBSTONE_ADMIN_OPTIONS) private readonly options: ResolvedTombstoneAdminOptions,
    private readonly moduleRef: ModuleRef,
  ) {}

  private get db(): DataSource {
    return coreProvider(this.moduleRef, TombstoneTable).dataSource;
  }

  /** A page of events, newest first (by sequence: a keyset, never shifted by new events). */
  async list(query: ListTombstoneEventsQuery): Promise<TombstoneEventPage> {
    const limit = this.limit(query.limit);
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (sql: string, ...values: unknown[]) => {
      where.push(sql.replace(/\?/g, () => `$${params.push(values.shift())}`));
    };
    if (query.scope !== undefined) add('e.scope = ?', query.scope);
    if (query.type !== undefined) add('e.resource_type = ?', query.type);
    if (query.key !== undefined) add('e.resource_key = ?', query.key);
    if (query.eventType !== undefined) add('e.type = ?', query.eventType);
    if (query.sink !== undefined || query.state !== undefined) {
      const of: string[] = ['d.event_id = e.id'];
      if (query.sink !== undefined) of.push(`d.sink = $${params.push(query.sink)}`);
      if (query.state !== undefined) of.push(`d.state = $${params.push(query.state)}`);
      where.push(`EXISTS (SELECT 1 FROM tombstone_event_deliveries d WHERE ${of.join(' AND ')})`);
    }
    if (query.cursor !== undefined) add('e.id < ?::bigint', decodeEventCursor(query.cursor));
    const rows = (await this.db.query(
      `SELECT ${EVENT_COLUMNS} FROM tombstone_events e ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
        ORDER BY e.id DESC LIMIT $${params.push(limit + 1)}`,
      params,
    )) as EventRow[];
    const page = rows.slice(0, limit);
    const items = await this.withDeliveries(page);
    return { items, nextCursor: rows.length > limit ? encode(page[page.length - 1].id) : null };
  }

  async get(id: string): Promise<TombstoneEventView> {
    const rows = (await this.db.query(`SELECT ${EVENT_COLUMNS} FROM tombstone_events e WHERE e.event_id = $1`, [id])) as EventRow[];
    if (rows.length === 0) throw noEvent(id);
    return (await this.withDeliveries(rows))[0];
  }

  /**
   * Dead deliveries with their events, oldest first: by when they were given up, then by event
   * and sink (the `(state, finished_at)` index). A keyset: a delivery that dies meanwhile comes
   * at the end; one retried meanwhile drops out.
   */
  async deadLetters(query: ListDeadLettersQuery): Promise<TombstoneDeadLetterPage> {
    const limit = this.limit(query.limit);
    const where = [`d.state = 'dead'`];
    const params: unknown[] = [];
    if (query.sink !== undefined) where.push(`d.sink = $${params.push(query.sink)}`);
    if (query.cursor !== undefined) {
      const { finished, sequence, sink } = decodeDeadCursor(query.cursor);
      where.push(`(d.finished_at, d.event_id, d.sink) > ($${params.push(finished)}::timestamptz, $${params.push(sequence)}::bigint, $${params.push(sink)}::text)`);
    }
    const rows = (await this.db.query(
      `SELECT ${EVENT_COLUMNS}, ${DELIVERY_COLUMNS}, ${FINISHED_KEY}
         FROM tombstone_event_deliveries d JOIN tombstone_events e ON e.id = d.event_id
        WHERE ${where.join(' AND ')}
        ORDER BY d.finished_at, d.event_id, d.sink LIMIT $${params.push(limit + 1)}`,
      params,
    )) as (EventRow & DeliveryRow & { finished_key: string })[];
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return {
      items: page.map((row) => ({ ...deliveryView(row), event: eventOf(row) })),
      nextCursor: rows.length > limit ? encode(`${last.finished_key}|${last.id}|${last.sink}`) : null,
    };
  }

  /**
   * A delivery back to pending, due now, its attempts from zero; `last_error` stays for the
   * record. Any state: a delivered event is sent again on purpose. A delivery that an instance
   * is sending right now keeps its lease, so that no second instance sends it alongside.
   */
  async retry(id: string, sink: string, actor: string | null): Promise<TombstoneDeliveryView> {
    const rows = (await this.db.query(
      `WITH old AS (
         SELECT d.sink, d.event_id, d.state FROM tombstone_event_deliveries d JOIN tombstone_events e ON e.id = d.event_id
          WHERE e.event_id = $1 AND d.sink = $2 FOR UPDATE OF d)
       UPDATE tombstone_event_deliveries d
          SET state = 'pending', attempts = 0, next_attempt_at = now(), finished_at = NULL,
              leased_until = CASE WHEN d.state = 'pending' AND d.leased_until > clock_timestamp() THEN d.leased_until END
         FROM old WHERE d.sink = old.sink AND d.event_id = old.event_id
       RETURNING old.state AS was, ${DELIVERY_COLUMNS}`,
      [id, sink],
    )) as [(DeliveryRow & { was: DeliveryState })[], number];
    const row = rows[0][0];
    if (!row) throw await this.noDelivery(id, sink);
    this.logger.log(`Event ${id}: its ${row.was} delivery to sink ${quoted(sink)} was set to pending by ${actorName(actor)}.`);
    return deliveryView(row);
  }

  async discard(id: string, sink: string, actor: string | null): Promise<void> {
    const [rows] = (await this.db.query(
      `DELETE FROM tombstone_event_deliveries d USING tombstone_events e
        WHERE e.event_id = $1 AND d.event_id = e.id AND d.sink = $2
       RETURNING d.state`,
      [id, sink],
    )) as [{ state: DeliveryState }[], number];
    if (rows.length === 0) throw await this.noDelivery(id, sink);
    this.logger.log(`Event ${id}: its ${rows[0].state} delivery to sink ${quoted(sink)} was discarded by ${actorName(actor)}.`);
  }

  /** Every dead letter of `sink` back to pending (as `retry`), about `BATCH` per statement. */
  async retryDead(sink: string, actor: string | null): Promise<{ retried: number }> {
    const retried = await this.eachDeadBatch(
      sink,
      (range) => `UPDATE tombstone_event_deliveries
          SET state = 'pending', attempts = 0, next_attempt_at = now(), finished_at = NULL, leased_until = NULL
        WHERE ${range}`,
    );
    this.logger.log(`Sink ${quoted(sink)}: ${deliveries(retried)} set to pending by ${actorName(actor)}.`);
    return { retried };
  }

  /** Deletes every dead letter of `sink`, about `BATCH` per statement. */
  async discardDead(sink: string, actor: string | null): Promise<{ discarded: number }> {
    const discarded = await this.eachDeadBatch(sink, (range) => `DELETE FROM tombstone_event_deliveries WHERE ${range}`);
    this.logger.log(`Sink ${quoted(sink)}: ${deliveries(discarded)} discarded by ${actorName(actor)}.`);
    return { discarded };
  }

  /** Registered sinks, by name, with their pending and dead deliveries and their lag. */
  async sinks(): Promise<{ items: TombstoneSinkView[] }> {
    const outbox = new TombstoneOutbox(this.db);
    const sinks = await outbox.sinks();
    const stats = new Map((await outbox.stats()).map((s) => [s.sink, s]));
    return {
      items: sinks.map((sink) => {
        // Unregistered between the two reads: nothing left to count.
        const s = stats.get(sink.name) ?? { pending: 0, dead: 0, lagMs: 0 };
        return {
          name: sink.name,
          registeredAt: sink.registeredAt.toISOString(),
          seenAt: sink.seenAt.toISOString(),
          pending: s.pending,
          dead: s.dead,
          lagMs: s.lagMs,
        };
      }),
    };
  }

  /** Stops writing events for a sink and drops its deliveries. */
  async unregister(name: string, actor: string | null): Promise<void> {
    if (!(await new TombstoneOutbox(this.db).unregister(name))) {
      throw new NotFoundException({ statusCode: 404, error: 'Not Found', message: `No sink is registered as ${quoted(name)}.` });
    }
    this.logger.log(`Sink ${quoted(name)} was unregistered, its deliveries dropped, by ${actorName(actor)}.`);
  }

  private limit(requested: number | undefined): number {
    const limit = requested ?? Math.min(50, this.options.maxPageSize);
    if (limit > this.options.maxPageSize) throw invalid('limit', `must be at most ${this.options.maxPageSize}`);
    return limit;
  }

  private async withDeliveries(rows: EventRow[]): Promise<TombstoneEventView[]> {
    if (rows.length === 0) return [];
    const deliveries = (await this.db.query(
      `SELECT d.event_id::text AS sequence, ${DELIVERY_COLUMNS} FROM tombstone_event_deliveries d
        WHERE d.event_id = ANY($1::bigint[]) ORDER BY d.event_id, d.sink`,
      [rows.map((row) => row.id)],
    )) as (DeliveryRow & { sequence: string })[];
    const of = new Map<string, TombstoneDeliveryView[]>();
    for (const d of deliveries) {
      const list = of.get(d.sequence) ?? [];
      list.push(deliveryView(d));
      of.set(d.sequence, list);
    }
    return rows.map((row) => ({ ...eventOf(row), deliveries: of.get(row.id) ?? [] }));
  }

  /**
   * Runs `write` over `sink`'s dead deliveries, one range of sequences at a time, each ending at
   * the `BATCH`-th dead one, until none is left: a range, not a join with the chosen rows, so the
   * plan stays an index range scan whatever the table's statistics say (a join planned on stale
   * ones took seconds a batch). Walks the sink's deliveries once: one that dies again while the
   * loop runs is not taken twice. Answers how many rows `write` changed.
   */
  private async eachDeadBatch(sink: string, write: (range: string) => string): Promise<number> {
    let after = '0';
    let total = 0;
    for (;;) {
      const [row] = (await this.db.query(
        `WITH bound AS (
           SELECT event_id FROM tombstone_event_deliveries
            WHERE sink = $1 AND state = 'dead' AND event_id > $2::bigint ORDER BY event_id OFFSET $3 - 1 LIMIT 1),
         w AS (${write(`sink = $1 AND state = 'dead' AND event_id > $2::bigint
                AND event_id <= coalesce((SELECT event_id FROM bound), 9223372036854775807)`)} RETURNING 1)
         SELECT (SELECT event_id FROM bound)::text AS last, (SELECT count(*) FROM w)::int AS n`,
        [sink, after, BATCH],
      )) as { last: string | null; n: number }[];
      total += row.n;
      if (row.last === null) return total;
      after = row.last;
    }
  }

  private async noDelivery(id: string, sink: string): Promise<NotFoundException> {
    const [{ found }] = (await this.db.query(`SELECT EXISTS (SELECT 1 FROM tombstone_events WHERE event_id = $1) AS found`, [id])) as {
      found: boolean;
    }[];
    if (!found) return noEvent(id);
    return new NotFoundException({ statusCode: 404, error: 'Not Found', message: `Event ${id} has no delivery to sink ${quoted(sink)}.` });
  }
}

function noEvent(id: string): NotFoundException {
  return new NotFoundException({ statusCode: 404, error: 'Not Found', message: `No event has the id ${id}.` });
}

/** A sink name in a message: quoted and escaped, so that it never forges a log line. */
function quoted(name: string): string {
  return JSON.stringify(name);
}

function deliveries(n: number): string {
  return n === 1 ? '1 dead delivery was' : `${n} dead deliveries were`;
}

function actorName(actor: string | null): string {
  return actor === null ? 'an unnamed actor' : JSON.stringify(actor);
}
