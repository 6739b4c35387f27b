import { Inject, Injectable, Logger, NotFoundException } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import type { DataSource } from 'typeorm';
import { TombstoneTable } from '../../table/tombstone.table.js';
import { TombstoneKeys } from '../../tombstone.keys.js';
import { coreProvider } from '../admin.core.js';
import { TombstoneSuggestions } from '../../suggestions/tombstone.suggestions.js';
import { type ListTombstoneMissesQuery, type ResolveTombstoneMissDto, TOMBSTONE_MISS_SORTS, type TombstoneMissSort } from './misses.dto.js';
import { TOMBSTONE_ADMIN_OPTIONS } from '../admin.module-definition.js';
import type { ResolvedTombstoneAdminOptions } from '../admin.options.js';
import { TombstoneAdminService, type TombstoneView } from '../tombstones/tombstones.service.js';
import { invalid, isRowId, parseDate } from '../admin.validation.js';

/** A row of the misses log as the admin endpoints show it: a 404 that no tombstone explained. */
export interface TombstoneMissView {
  id: string;
  scope: string;
  type: string;
  key: string;
  /** How many 404s of this key were logged. */
  hits: number;
  firstSeen: string;
  lastSeen: string;
  /** The newest `Referer` of those 404s (printable ASCII, at most 512 characters). */
  lastReferrer: string | null;
}

export interface TombstoneMissPage {
  items: TombstoneMissView[];
  /** Pass it as `cursor` (with the same `sort`) for the next page; `null` on the last one. */
  nextCursor: string | null;
}

interface MissRow {
  id: string;
  scope: string;
  resource_type: string;
  resource_key: string;
  hits: string;
  first_seen: Date;
  last_seen: Date;
  last_referrer: string | null;
  /** `last_seen` to the microsecond, as the cursor carries it. */
  seen_key: string;
}

// `last_seen` leaves the database as text to the microsecond: a JavaScript Date keeps
// milliseconds, and a cursor rounded down would repeat rows of the same millisecond.
const MISS_COLUMNS = `id, scope, resource_type, resource_key, hits, first_seen, last_seen, last_referrer,
  to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS seen_key`;

// Both orders are keysets that end on the unique id. `recent` walks the (last_seen, id) index
// backwards; `hits` sorts the rows that pass the filters (the table is capped by missLog.maxRows).
const ORDERS: Record<TombstoneMissSort, { by: string; after: string; cast: string }> = {
  recent: { by: 'last_seen DESC, id DESC', after: '(last_seen, id) <', cast: 'timestamptz' },
  hits: { by: 'hits DESC, id DESC', after: '(hits, id) <', cast: 'bigint' },
};

/** Rows deleted per statement by a purge: each statement stays short, whatever the purge's size. */
const PURGE_BATCH = 10_000;

/**
 * The admin endpoints' reads and writes of the misses log (`tombstone_misses`): list, read,
 * resolve into a tombstone, delete, purge.
 */
@Injectable()
export class TombstoneMissesAdminService {
  private readonly logger = new Logger('TombstoneAdminModule');

  constructor(
    @Inject(TOMBSTONE_ADMIN_OPTIONS) private readonly options: ResolvedTombstoneAdminOptions,
    private readonly moduleRef: ModuleRef,
    private readonly tombstones: TombstoneAdminService,
  ) {}

  private get db(): DataSource {
    return coreProvider(this.moduleRef, TombstoneTable).dataSource;
  }

  /**
   * A page of misses, last seen first (`sort=recent`) or most missed first (`sort=hits`). Keyset
   * pages: rows inserted meanwhile never shift a page, and since `last_seen` and `hits` only ever
   * grow, no row is shown twice in one walk. The trade-off: a row not shown yet whose sort key
   * grows past the cursor during the walk (missed again) is skipped by it; a new walk lists it
   * near the top.
   */
  async list(query: ListTombstoneMissesQuery): Promise<TombstoneMissPage> {
    const sort = query.sort ?? 'recent';
    const limit = query.limit ?? Math.min(50, this.options.maxPageSize);
    if (limit > this.options.maxPageSize) throw invalid('limit', `must be at most ${this.options.maxPageSize}`);
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (sql: string, ...values: unknown[]) => {
      where.push(sql.replace(/\?/g, () => `$${params.push(values.shift())}`));
    };
    if (query.scope !== undefined) add('scope = ?', query.scope);
    if (query.type !== undefined) add('resource_type = ?', query.type);
    // Misses are logged by their key's normal form (normalizeKeys), as tombstones are stored.
    if (query.keyPrefix !== undefined) add('starts_with(resource_key, ?)', coreProvider(this.moduleRef, TombstoneKeys).prefix(query.type, query.keyPrefix));
    if (query.seenSince !== undefined) add('last_seen >= ?', parseDate(query.seenSince, 'seenSince'));
    if (query.minHits !== undefined) add('hits >= ?', query.minHits);
    const order = ORDERS[sort];
    if (query.cursor !== undefined) {
      const cursor = decodeCursor(query.cursor, sort);
      add(`${order.after} (?::${order.cast}, ?::bigint)`, cursor.value, cursor.id);
    }
    const rows = (await this.db.query(
      `SELECT ${MISS_COLUMNS} FROM tombstone_misses ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
        ORDER BY ${order.by} LIMIT $${params.push(limit + 1)}`,
      params,
    )) as MissRow[];
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return {
      items: page.map(view),
      nextCursor: rows.length > limit ? encodeCursor(sort, sort === 'recent' ? last.seen_key : String(last.hits), String(last.id)) : null,
    };
  }

  async get(id: string): Promise<TombstoneMissView> {
    const [row] = (await this.db.query(`SELECT ${MISS_COLUMNS} FROM tombstone_misses WHERE id = $1`, [id])) as MissRow[];
    if (!row) throw missing(id);
    return view(row);
  }

  /**
   * Live keys like the missed one, most alike first (up to 3): where the miss may redirect to.
   * Drawn as a 404's "did you mean" is (see `TombstoneSuggestions`), from the type's tracked table
   * and its live redirects' targets in the miss's scope; none for a type the module knows no
   * table of and that has no redirects like it.
   */
  async suggestions(id: string): Promise<{ keys: readonly string[] }> {
    const miss = await this.get(id);
    return { keys: await coreProvider(this.moduleRef, TombstoneSuggestions).forOperator(miss.type, miss.key, miss.scope) };
  }

  /**
   * Turns a miss into the tombstone of its (scope, type, key), created as `POST /tombstones`
   * creates one (same checks, same 409s, the actor recorded), then deletes the miss.
   *
   * Two transactions, not one: the tombstone's (the admin service's own), then the miss's
   * deletion. In between, the key already answers from its tombstone and the miss row is merely
   * stale; if the deletion fails, the tombstone stays (it is what was asked for), the failure is
   * logged, and the stale row can be deleted like any other.
   */
  async resolve(id: string, dto: ResolveTombstoneMissDto, actor: string | null): Promise<TombstoneView> {
    const miss = await this.get(id);
    const tombstone = await this.tombstones.create({ ...dto, scope: miss.scope, type: miss.type, key: miss.key }, actor);
    // By key, not by id: should retention have deleted the row and a new miss re-created it
    // meanwhile, that one is explained by the tombstone too.
    try {
      await this.db.query(`DELETE FROM tombstone_misses WHERE scope = $1 AND resource_type = $2 AND resource_key = $3`, [
        miss.scope,
        miss.type,
        miss.key,
      ]);
    } catch (error) {
      this.logger.error(
        `Tombstone ${tombstone.id} was created, but its miss ${id} could not be deleted: ${(error as Error)?.message ?? String(error)}`,
        (error as Error)?.stack,
      );
    }
    return tombstone;
  }

  async remove(id: string): Promise<void> {
    const [row] = (await this.db.query(
      `WITH deleted AS (DELETE FROM tombstone_misses WHERE id = $1 RETURNING id) SELECT count(*)::int AS n FROM deleted`,
      [id],
    )) as { n: number }[];
    if (row.n === 0) throw missing(id);
  }

  /**
   * Deletes the misses last seen before `before` (a future instant counts as now), in batches of
   * 10 000 rows along the (last_seen, id) index. Answers how many were deleted.
   */
  async purge(before: string): Promise<{ deleted: number }> {
    const cutoff = new Date(Math.min(parseDate(before, 'before').getTime(), Date.now()));
    let deleted = 0;
    for (;;) {
      const [row] = (await this.db.query(
        `WITH deleted AS (
           DELETE FROM tombstone_misses WHERE id IN (
             SELECT id FROM tombstone_misses WHERE last_seen < $1 ORDER BY last_seen, id LIMIT $2)
           RETURNING 1)
         SELECT count(*)::int AS n FROM deleted`,
        [cutoff, PURGE_BATCH],
      )) as { n: number }[];
      deleted += row.n;
      if (row.n < PURGE_BATCH) return { deleted };
    }
  }
}

function view(row: MissRow): TombstoneMissView {
  return {
    id: String(row.id),
    scope: row.scope,
    type: row.resource_type,
    key: row.resource_key,
    hits: Number(row.hits),
    firstSeen: row.first_seen.toISOString(),
    lastSeen: row.last_seen.toISOString(),
    lastReferrer: row.last_referrer,
  };
}

function missing(id: string): NotFoundException {
  return new NotFoundException({ statusCode: 404, error: 'Not Found', message: `No miss has the id ${id}.` });
}


// A cursor names its sort and the last row's place in it: `recent|<last_seen, µs>|<id>` or
// `hits|<hits>|<id>`, in base64url. Opaque to clients; checked strictly here, so that nothing
// malformed reaches the database.
const SEEN_KEY = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.\d{6}Z$/;

function encodeCursor(sort: TombstoneMissSort, value: string, id: string): string {
  return Buffer.from(`${sort}|${value}|${id}`, 'utf8').toString('base64url');
}

function decodeCursor(cursor: string, sort: TombstoneMissSort): { value: string; id: string } {
  const [kind, value, id, ...rest] = Buffer.from(cursor, 'base64url').toString('utf8').split('|');
  const fail = (reason = 'must be the nextCursor of a previous page') => invalid('cursor', reason);
  if (rest.length > 0 || !isRowId(id) || value === undefined) throw fail();
  if (kind !== sort) {
    if ((TOMBSTONE_MISS_SORTS as readonly string[]).includes(kind)) throw fail(`belongs to sort=${kind}, not sort=${sort}`);
    throw fail();
  }
  if (sort === 'hits' ? !isRowId(value) : !isSeenKey(value)) throw fail();
  return { value, id };
}

/** A timestamp as `MISS_COLUMNS` prints it, of a day that exists (PostgreSQL would refuse 02-30). */
function isSeenKey(value: string): boolean {
  const match = SEEN_KEY.exec(value);
  if (!match) return false;
  const [year, month, day, hour, minute, second] = match.slice(1).map(Number);
  const at = new Date(Date.UTC(year, month - 1, day, hour, minute, second));
  return (
    at.getUTCFullYear() === year &&
    at.getUTCMonth() === month - 1 &&
    at.getUTCDate() === day &&
    at.getUTCHours() === hour &&
    at.getUTCMinutes() === minute &&
    at.getUTCSeconds() === second
  );
}
