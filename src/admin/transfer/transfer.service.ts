import { Readable } from 'node:stream';
import { Inject, Injectable, type OnModuleInit, UnsupportedMediaTypeException } from '@nestjs/common';
import { HttpAdapterHost, ModuleRef } from '@nestjs/core';
import { stringify } from 'csv-stringify/sync';
import type { EntityManager } from 'typeorm';
import { TombstoneChanges } from '../../table/tombstone.changes.js';
import { lockTypes } from '../../table/tombstone.lock.js';
import { refuseBrokenWalks } from '../../table/tombstone.walk.js';
import { TombstoneCycleError, TombstoneValidationError } from '../../tombstone.exceptions.js';
import { TombstoneTable } from '../../table/tombstone.table.js';
import { TombstoneKeys } from '../../tombstone.keys.js';
import { coreProvider } from '../admin.core.js';
import { TOMBSTONE_ADMIN_OPTIONS } from '../admin.module-definition.js';
import type { ResolvedTombstoneAdminOptions } from '../admin.options.js';
import { invalid } from '../admin.validation.js';
import { csvSafe, type Fail, type ImportFormat, IMPORT_COLUMNS, READ_ONLY_COLUMNS, readRecords } from './transfer.records.js';
import { type Batch, checkRow, collapse, copyRows, type Group, groupOf, type ImportRow } from './transfer.rows.js';

export type { ImportFormat };

/** Writes the batch, in the order it came. */
const INSERT_SQL = `
  INSERT INTO tombstones (scope, resource_type, resource_key, kind, target_key, permanent, reason, alternative, actor, expires_at, prefix)
  SELECT scope, resource_type, resource_key, kind, target_key, permanent, reason, alternative, $1, expires_at, prefix
    FROM tombstones_import ORDER BY line`;

/** An upsert: a row replaces its key's tombstone, metadata included; the hit count stays. */
const ON_CONFLICT_SQL = `
  ON CONFLICT (scope, resource_type, resource_key) DO UPDATE SET
    occurred_at = CASE WHEN tombstones.kind = EXCLUDED.kind AND tombstones.target_key IS NOT DISTINCT FROM EXCLUDED.target_key
                            AND tombstones.prefix = EXCLUDED.prefix
                       THEN tombstones.occurred_at ELSE now() END,
    prefix = EXCLUDED.prefix,
    kind = EXCLUDED.kind, target_key = EXCLUDED.target_key, permanent = EXCLUDED.permanent,
    reason = EXCLUDED.reason, alternative = EXCLUDED.alternative, actor = EXCLUDED.actor,
    expires_at = EXCLUDED.expires_at, metadata = '{}'::jsonb, updated_at = now()`;

/** Whether the key of the import row `i` has a tombstone: one probe of the unique index. */
const PROBE_KEY_SQL = `
  SELECT FROM tombstones t WHERE t.scope = i.scope AND t.resource_type = i.resource_type AND t.resource_key = i.resource_key OFFSET 0`;

/** At most this many row errors are listed in an answer; the count is always complete. */
const LISTED_ERRORS = 1000;
const EXPORT_BATCH = 1000;

export interface TombstoneImportError {
  /** 1-based: the CSV record (the header is record 1), the NDJSON line, or the JSON array index + 1. */
  row: number;
  field: string;
  reason: string;
}

export interface TombstoneImportReport {
  dryRun: boolean;
  rows: number;
  /** Rows that would create (dry run) or created a tombstone. */
  created: number;
  /** Rows that would replace (dry run) or replaced an existing tombstone. */
  updated: number;
  /** Every problem found, counted; listed up to 1000. */
  errorCount: number;
  errors: TombstoneImportError[];
}

/** The media types an import reads as a stream, whatever body parsers the app has. */
export const STREAMED_IMPORT_TYPES = ['text/csv', 'application/x-ndjson'];

/**
 * Puts a row's key in its type's normal form (normalizeKeys) and checks that its target is in it
 * already, as the create endpoint does; `false` (and the reason given to `fail`) when it cannot.
 */
function normalised(keys: TombstoneKeys, row: ImportRow, fail: Fail): boolean {
  try {
    row.key = keys.key(row.type, row.key);
    if (row.target !== null) keys.target(row.type, row.target);
  } catch (error) {
    if (!(error instanceof TombstoneValidationError)) throw error;
    fail(row.line, error.field, error.message.split('\n')[0]);
    return false;
  }
  if (row.target === row.key) {
    fail(row.line, 'target', 'must differ from key');
    return false;
  }
  return true;
}

/** Import and export of tombstones, in CSV, NDJSON and JSON. */
@Injectable()
export class TombstoneTransferService implements OnModuleInit {
  constructor(
    @Inject(TOMBSTONE_ADMIN_OPTIONS) private readonly options: ResolvedTombstoneAdminOptions,
    private readonly moduleRef: ModuleRef,
    private readonly adapterHost: HttpAdapterHost,
  ) {}

  /**
   * Fastify refuses media types it has no parser for: CSV and NDJSON bodies are handed to the
   * import as they come, unparsed and unbuffered (the import enforces its own size limit).
   */
  onModuleInit(): void {
    const adapter = this.adapterHost?.httpAdapter;
    if (adapter?.getType() !== 'fastify') return;
    const fastify = adapter.getInstance() as {
      hasContentTypeParser(type: string): boolean;
      addContentTypeParser(type: string, parse: (request: unknown, payload: Readable, done: (error: null, body: Readable) => void) => void): void;
    };
    for (const type of STREAMED_IMPORT_TYPES) {
      if (fastify.hasContentTypeParser(type)) continue;
      // Only the import gets the stream. Any other route answers 415, as Fastify does for a type
      // it cannot parse: a stream as a body reaches pipes (class-transformer) that walk it
      // down to its socket.
      fastify.addContentTypeParser(type, (request, payload, done) => {
        const route = (request as { routeOptions?: { url?: unknown } }).routeOptions?.url;
        if (typeof route === 'string' && route.endsWith('/tombstones/import')) return done(null, payload);
        payload.resume(); // drained, so that the connection can carry the next request
        done(new UnsupportedMediaTypeException(`This route does not take ${type}.`) as never, payload);
      });
    }
  }

  private get db() {
    return coreProvider(this.moduleRef, TombstoneTable).dataSource;
  }

  /**
   * Reads, checks and (unless `dryRun`) writes a batch, all or nothing: one invalid row, or one
   * redirect that would form a cycle with the batch or the table, and nothing is written.
   */
  async import(body: unknown, format: ImportFormat, dryRun: boolean, actor: string | null): Promise<TombstoneImportReport> {
    const errors: TombstoneImportError[] = [];
    let errorCount = 0;
    const fail: Fail = (row, field, reason) => {
      errorCount++;
      if (errors.length < LISTED_ERRORS) errors.push({ row, field, reason });
    };
    const rows: ImportRow[] = [];
    const batch: Batch = new Map();
    let group: Group | undefined; // the last row's: rows of a (scope, type) tend to come together
    let total = 0;
    const keys = coreProvider(this.moduleRef, TombstoneKeys);
    await readRecords(body, format, fail, (line, record, columnsChecked) => {
      total++;
      const row = checkRow(record, line, columnsChecked, fail, this.options.alternativeHosts);
      if (!row || !normalised(keys, row, fail)) return;
      if (!group || group.scope !== row.scope || group.type !== row.type) group = groupOf(batch, row.scope, row.type);
      // One string per scope and type, rather than a copy per row.
      row.scope = group.scope;
      row.type = group.type;
      const earlier = group.keys.get(row.key);
      if (earlier) {
        fail(line, 'key', `repeats the key of row ${earlier.line}`);
        return;
      }
      group.keys.set(row.key, row);
      rows.push(row);
    }, this.options);
    if (total === 0 && errorCount === 0) throw invalid('body', 'has no rows');

    // The batch goes to the database once, by COPY into a temporary table; the checks against the
    // table and the writes are then a few set-based statements, whatever the number of rows.
    const report = await this.db.transaction(async (tx): Promise<TombstoneImportReport> => {
      const answer = (updated: number): TombstoneImportReport => ({ dryRun, rows: total, created: rows.length - updated, updated, errorCount, errors });
      if (rows.length === 0) return answer(0);
      if (!dryRun) {
        // One lock per (scope, type), taken in a fixed order, in one statement.
        await lockTypes(tx, batch.values());
      }
      await tx.query(
        `CREATE TEMPORARY TABLE tombstones_import (line integer, scope text, resource_type text, resource_key text, kind text,
           target_key text, permanent boolean, reason text, alternative text, expires_at timestamptz, prefix boolean) ON COMMIT DROP`,
      );
      await copyRows(tx, rows);
      // Whether a key has a tombstone already; whether something in the table leads to a key that
      // the batch makes a redirect; where the batch's targets lead when they redirect themselves.
      // Each is an index probe per row (OFFSET 0 keeps the planner from turning it into a hash
      // join, which reads the whole table): the cost follows the batch, not the table.
      const [found] = (await tx.query(
        `SELECT EXISTS (SELECT FROM tombstones_import i WHERE EXISTS (${PROBE_KEY_SQL})) AS known,
                EXISTS (SELECT FROM tombstones_import i
                         WHERE i.target_key IS NOT NULL
                           AND EXISTS (SELECT FROM tombstones t
                                        WHERE t.scope = i.scope AND t.resource_type = i.resource_type AND t.target_key = i.resource_key
                                       OFFSET 0)) AS pointed,
                coalesce(array_agg(i.line), '{}') AS lines, coalesce(array_agg(h.target_key), '{}') AS hops
           FROM tombstones_import i
          CROSS JOIN LATERAL (SELECT t.target_key FROM tombstones t
                               WHERE t.scope = i.scope AND t.resource_type = i.resource_type AND t.resource_key = i.target_key
                                 AND t.kind IN ('moved', 'merged')
                              OFFSET 0) AS h
          WHERE i.target_key IS NOT NULL`,
      )) as { known: boolean; pointed: boolean; lines: number[]; hops: string[] }[];
      const changed = collapse(batch, new Map(found.lines.map((line, i) => [line, found.hops[i]])), fail);
      if (dryRun || errorCount > 0) {
        if (!found.known) return answer(0);
        const [{ n }] = (await tx.query(`SELECT count(*)::int AS n FROM tombstones_import i WHERE EXISTS (${PROBE_KEY_SQL})`)) as { n: number }[];
        return answer(n);
      }
      if (changed.size > 0) {
        await tx.query(
          `UPDATE tombstones_import i SET target_key = c.final FROM unnest($1::int[], $2::text[]) AS c(line, final) WHERE i.line = c.line`,
          [[...changed.keys()].map((row) => row.line), [...changed.values()]],
        );
      }
      let updated = 0;
      if (found.known) updated = await upsert(tx, actor);
      else {
        // No key had a tombstone when the batch was checked: a plain INSERT, which skips the
        // conflict check of each row (a fifth of the write). A key recorded since then (recording a
        // deletion takes no lock) fails it; the upsert then runs instead.
        await tx.query(`SAVEPOINT tombstones_import`);
        try {
          await tx.query(INSERT_SQL, [actor]);
        } catch (error) {
          const { code, constraint } = error as { code?: string; constraint?: string };
          if (code !== '23505' || constraint !== 'tombstones_scope_type_key_key') throw error;
          await tx.query(`ROLLBACK TO SAVEPOINT tombstones_import`);
          updated = await upsert(tx, actor);
        }
      }
      if (found.pointed) {
        // What led to a key that now redirects leads where that key does. (A batch row that ends
        // on such a key got there through the table's redirect to it: `pointed` too.)
        await tx.query(
          `UPDATE tombstones t SET target_key = i.target_key, updated_at = now()
             FROM tombstones_import i
            WHERE i.target_key IS NOT NULL AND t.scope = i.scope AND t.resource_type = i.resource_type
              AND t.target_key = i.resource_key AND t.resource_key <> i.target_key`,
        );
      }
      await this.walkPrefixes(tx, batch, fail);
      if (errorCount > 0) throw new RefusedWalks();
      return answer(updated);
    }).catch((error: unknown) => {
      if (!(error instanceof RefusedWalks)) throw error;
      return { dryRun, rows: total, created: 0, updated: 0, errorCount, errors };
    });
    if (!dryRun && report.errorCount > 0) throw rejected(report);
    if (!dryRun && rows.length > 0) {
      // Committed: this instance's cache drops what it knew of the (scope, type) pairs written,
      // before the answer goes back (other instances hear the table's notifications).
      const changes = coreProvider(this.moduleRef, TombstoneChanges);
      for (const { scope, type } of batch.values()) changes.emit(this.db.manager, { scope, type, all: true });
    }
    return report;
  }

  /**
   * Where prefix tombstones are involved (the batch has some, or the table has some of its
   * (scope, type) pairs), the redirects written are walked as a lookup walks them: a cycle or a
   * chain a lookup cannot finish is a row error (and the transaction is rolled back).
   */
  private async walkPrefixes(tx: EntityManager, batch: Batch, fail: Fail): Promise<void> {
    for (const group of batch.values()) {
      const rows = [...group.keys.values()];
      const prefixMoves = rows.filter((row) => row.prefix && row.target !== null).map((row) => ({ from: row.key, to: row.target as string }));
      if (prefixMoves.length === 0 && rows.every((row) => !row.prefix)) {
        const [{ any }] = (await tx.query(`SELECT EXISTS (SELECT FROM tombstones WHERE scope = $1 AND resource_type = $2 AND prefix) AS any`, [
          group.scope,
          group.type,
        ])) as { any: boolean }[];
        if (!any) continue;
      }
      const redirects = rows.filter((row) => row.target !== null).map((row) => row.key);
      try {
        await refuseBrokenWalks(tx, group.scope, group.type, redirects, prefixMoves);
      } catch (error) {
        if (!(error instanceof TombstoneCycleError) && !(error instanceof TombstoneValidationError)) throw error;
        const start = error instanceof TombstoneCycleError ? error.cycle[0] : undefined;
        const row = (start !== undefined ? group.keys.get(start) : undefined) ?? rows.find((r) => r.prefix && r.target !== null) ?? rows[0];
        fail(row.line, 'target', error instanceof TombstoneCycleError ? `would form a cycle: ${error.cycle.map((k) => `'${k.slice(0, 60)}'`).join(' → ')}` : error.message);
      }
    }
  }

  /** Streams the table (or the rows of a scope, type, kind) in id order, a batch at a time. */
  export(format: ImportFormat, filter: { scope?: string; type?: string; kind?: string }): Readable {
    const db = this.db;
    const columns = [...IMPORT_COLUMNS, ...READ_ONLY_COLUMNS];
    async function* lines(): AsyncGenerator<string> {
      let last = '0';
      let first = true;
      if (format === 'json') yield '[';
      for (;;) {
        const where = ['id > $1'];
        const params: unknown[] = [last];
        if (filter.scope !== undefined) where.push(`scope = $${params.push(filter.scope)}`);
        if (filter.type !== undefined) where.push(`resource_type = $${params.push(filter.type)}`);
        if (filter.kind !== undefined) where.push(`kind = $${params.push(filter.kind)}`);
        const batch = (await db.query(
          `SELECT * FROM tombstones WHERE ${where.join(' AND ')} ORDER BY id LIMIT ${EXPORT_BATCH}`,
          params,
        )) as Record<string, unknown>[];
        if (batch.length === 0 && !first) break;
        const records = batch.map(exportRecord);
        if (format === 'csv') {
          yield stringify(records, { header: first, columns: columns as unknown as string[], cast: { boolean: (v) => String(v), string: csvSafe } });
        } else if (format === 'ndjson') {
          if (records.length > 0) yield `${records.map((r) => JSON.stringify(r)).join('\n')}\n`;
        } else if (records.length > 0) {
          yield `${first ? '\n' : ',\n'}${records.map((r) => JSON.stringify(r)).join(',\n')}`;
        }
        first = false;
        if (batch.length < EXPORT_BATCH) break;
        last = String(batch[batch.length - 1].id);
      }
      if (format === 'json') yield '\n]\n';
    }
    return Readable.from(lines());
  }
}

/**
 * Upserts the batch; answers how many rows replaced a tombstone. A row the statement inserted has
 * the transaction's own `now()` as `created_at` (its default); one it updated keeps the time its
 * tombstone was created, before this transaction began.
 */
async function upsert(tx: EntityManager, actor: string | null): Promise<number> {
  const [{ updated }] = (await tx.query(
    `WITH written AS (${INSERT_SQL} ${ON_CONFLICT_SQL} RETURNING created_at = now() AS created)
     SELECT count(*) FILTER (WHERE NOT created)::int AS updated FROM written`,
    [actor],
  )) as { updated: number }[];
  return updated;
}

/** A write whose redirects a lookup could not follow: rolled back, its rows reported. */
class RefusedWalks extends Error {}

function rejected(report: TombstoneImportReport) {
  const first = report.errors[0];
  const exception = invalid(first.field, `row ${first.row}: ${first.reason}`);
  const response = exception.getResponse() as Record<string, unknown>;
  Object.assign(response, { message: `The import has ${report.errorCount} invalid row(s); nothing was written.`, ...report });
  return exception;
}

function exportRecord(row: Record<string, unknown>): Record<string, unknown> {
  const iso = (value: unknown) => (value instanceof Date ? value.toISOString() : null);
  return {
    scope: row.scope,
    type: row.resource_type,
    key: row.resource_key,
    kind: row.kind,
    target: row.target_key,
    permanent: row.permanent,
    reason: row.reason,
    alternative: row.alternative,
    expiresAt: iso(row.expires_at),
    prefix: row.prefix === true,
    id: String(row.id),
    actor: row.actor,
    occurredAt: iso(row.occurred_at),
    hitCount: Number(row.hit_count),
    lastHitAt: iso(row.last_hit_at),
    createdAt: iso(row.created_at),
    updatedAt: iso(row.updated_at),
  };
}
