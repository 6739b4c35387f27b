import type { eventOf } from '../../events/events.outbox.js';
import type { TombstoneEvent } from '../../events/events.types.js';
import { invalid, isRowId, isSinkName } from '../admin.validation.js';
import type { DeliveryState } from './events.dto.js';

// What the events endpoints answer, the outbox's rows they are made of, and their cursors.

/** One sink's delivery of an event. */
export interface TombstoneDeliveryView {
  sink: string;
  state: DeliveryState;
  /** Attempts made since the delivery was written or last retried. */
  attempts: number;
  /** When a pending delivery is due; `null` once it is delivered or dead. */
  nextAttemptAt: string | null;
  /** The last failure's message: kept when the delivery is retried, until its next attempt settles. */
  lastError: string | null;
  /** When it was delivered or given up; `null` while pending. */
  finishedAt: string | null;
}

/** An event of the outbox with its deliveries, one per sink registered when it was written. */
export type TombstoneEventView = TombstoneEvent & { deliveries: TombstoneDeliveryView[] };

export interface TombstoneEventPage {
  items: TombstoneEventView[];
  /** Pass it as `cursor` for the next page; `null` on the last one. */
  nextCursor: string | null;
}

/** A dead delivery and the event it failed to deliver. */
export type TombstoneDeadLetterView = TombstoneDeliveryView & { event: TombstoneEvent };

export interface TombstoneDeadLetterPage {
  items: TombstoneDeadLetterView[];
  nextCursor: string | null;
}

/** A registered sink and where it stands. */
export interface TombstoneSinkView {
  name: string;
  registeredAt: string;
  /** When an instance last said it delivers to this sink. */
  seenAt: string;
  pending: number;
  dead: number;
  /** Age of the oldest pending event, in ms (0 when nothing is pending). */
  lagMs: number;
}

export type EventRow = Parameters<typeof eventOf>[0];

export interface DeliveryRow {
  sink: string;
  state: DeliveryState;
  attempts: number;
  next_attempt_at: Date;
  last_error: string | null;
  finished_at: Date | null;
}

export const EVENT_COLUMNS = `e.id::text AS id, e.event_id::text AS event_id, e.type, e.scope, e.resource_type, e.resource_key,
  e.before, e.after, e.actor, e.reason, e.occurred_at`;
export const DELIVERY_COLUMNS = `d.sink, d.state, d.attempts, d.next_attempt_at, d.last_error, d.finished_at`;
// `finished_at` to the microsecond, as the dead letters' cursor carries it (see the misses log).
export const FINISHED_KEY = `to_char(d.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS finished_key`;
const FINISHED = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

export function deliveryView(row: DeliveryRow): TombstoneDeliveryView {
  return {
    sink: row.sink,
    state: row.state,
    attempts: row.attempts,
    nextAttemptAt: row.state === 'pending' ? row.next_attempt_at.toISOString() : null,
    lastError: row.last_error,
    finishedAt: row.finished_at === null ? null : row.finished_at.toISOString(),
  };
}

// Cursors in base64url, opaque to clients and checked strictly here: the events' is the last
// sequence; the dead letters' is `<finished_at, µs>|<sequence>|<sink>`.
export function encode(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64url');
}

function badCursor() {
  return invalid('cursor', 'must be the nextCursor of a previous page');
}

export function decodeEventCursor(cursor: string): string {
  const sequence = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!isRowId(sequence)) throw badCursor();
  return sequence;
}

export function decodeDeadCursor(cursor: string): { finished: string; sequence: string; sink: string } {
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const first = text.indexOf('|');
  const second = text.indexOf('|', first + 1);
  if (first < 0 || second < 0) throw badCursor();
  const [finished, sequence, sink] = [text.slice(0, first), text.slice(first + 1, second), text.slice(second + 1)];
  if (!isFinishedKey(finished) || !isRowId(sequence) || !isSinkName(sink)) throw badCursor();
  return { finished, sequence, sink };
}

/** A timestamp as `FINISHED_KEY` prints it, of an instant that exists (PostgreSQL would refuse 02-30). */
function isFinishedKey(value: string): boolean {
  if (!FINISHED.test(value)) return false;
  const at = new Date(`${value.slice(0, 23)}Z`);
  return !Number.isNaN(at.getTime()) && at.toISOString().slice(0, 19) === value.slice(0, 19);
}
