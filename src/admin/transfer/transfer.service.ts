import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Inject, Injectable, type OnModuleInit, PayloadTooLargeException, UnsupportedMediaTypeException } from '@nestjs/common';
import { HttpAdapterHost, ModuleRef } from '@nestjs/core';
import { parse } from 'csv-parse/sync';
import { stringify } from 'csv-stringify/sync';
import { isISO8601 } from 'class-validator';
import type { PoolClient } from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { EntityManager } from 'typeorm';
import { LIMITS } from '../../tombstone.constants.js';
import { collapseChains } from '../../table/tombstone.chains.js';
import { lockTypes } from '../../table/tombstone.lock.js';
import { TombstoneTable } from '../../table/tombstone.table.js';
import { isSafeLink, isStorableKey, isStorableScope, isValidType, isWellFormed } from '../../tombstone.validation.js';
import { TOMBSTONE_ADMIN_OPTIONS } from '../admin.module-definition.js';
import type { ResolvedTombstoneAdminOptions } from '../admin.options.js';
import { invalid } from '../tombstones/tombstones.service.js';
import { TOMBSTONE_KINDS, type TombstoneKind } from '../../tombstone.types.js';

/** The columns an import reads; an export writes these and the read-only ones after them. */
export const IMPORT_COLUMNS = ['scope', 'type', 'key', 'kind', 'target', 'permanent', 'reason', 'alternative', 'expiresAt'] as const;
/** Written by an export, ignored by an import: what the table keeps for itself. */
export const READ_ONLY_COLUMNS = ['id', 'actor', 'occurredAt', 'hitCount', 'lastHitAt', 'createdAt', 'updatedAt'] as const;
const KNOWN_COLUMNS = new Set<string>([...IMPORT_COLUMNS, ...READ_ONLY_COLUMNS]);

/** Writes the batch, in the order it came. */
const INSERT_SQL = `
  INSERT INTO tombstones (scope, resource_type, resource_key, kind, target_key, permanent, reason, alternative, actor, expires_at)
  SELECT scope, resource_type, resource_key, kind, target_key, permanent, reason, alternative, $1, expires_at
    FROM tombstones_import ORDER BY line`;

/** An upsert: a row replaces its key's tombstone, metadata included; the hit count stays. */
const ON_CONFLICT_SQL = `
  ON CONFLICT (scope, resource_type, resource_key) DO UPDATE SET
    occurred_at = CASE WHEN tombstones.kind = EXCLUDED.kind AND tombstones.target_key IS NOT DISTINCT FROM EXCLUDED.target_key
                       THEN tombstones.occurred_at ELSE now() END,
    kind = EXCLUDED.kind, target_key = EXCLUDED.target_key, permanent = EXCLUDED.permanent,
    reason = EXCLUDED.reason, alternative = EXCLUDED.alternative, actor = EXCLUDED.actor,
    expires_at = EXCLUDED.expires_at, metadata = '{}'::jsonb, updated_at = now()`;

/** Whether the key of the import row `i` has a tombstone: one probe of the unique index. */
const PROBE_KEY_SQL = `
  SELECT FROM tombstones t WHERE t.scope = i.scope AND t.resource_type = i.resource_type AND t.resource_key = i.resource_key OFFSET 0`;

/** At most this many row errors are listed in an answer; the count is always complete. */
const LISTED_ERRORS = 1000;
const MAX_LINE_BYTES = 64 * 1024;
/** Rows per piece of COPY data handed to the connection. */
const COPY_CHUNK = 2000;
const EXPORT_BATCH = 1000;

export type ImportFormat = 'csv' | 'ndjson' | 'json';

interface ImportRow {
  line: number;
  scope: string;
  type: string;
  key: string;
  kind: TombstoneKind;
  target: string | null;
  permanent: boolean;
  reason: string | null;
  alternative: string | null;
  /** As PostgreSQL reads it (see timestampText). */
  expiresAt: string | null;
}

type Fail = (row: number, field: string, reason: string) => void;

/** The rows of a (scope, type) of a batch, by key. */
interface Group {
  scope: string;
  type: string;
  keys: Map<string, ImportRow>;
}

/** The groups of a batch, by `scope \0 type`. */
type Batch = Map<string, Group>;

/** Each kind as the one string it is everywhere, rather than the copy each row was read into. */
const KINDS = new Map<string, TombstoneKind>(TOMBSTONE_KINDS.map((kind) => [kind, kind]));

/** Stands in for a CSV record once it is checked, so that it can be collected. */
const EMPTY: string[] = [];

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
    return this.moduleRef.get(TombstoneTable, { strict: false }).dataSource;
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
    await this.readRecords(body, format, fail, (line, record, columnsChecked) => {
      total++;
      const row = this.checkRow(record, line, columnsChecked, fail);
      if (!row) return;
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
    });
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
           target_key text, permanent boolean, reason text, alternative text, expires_at timestamptz) ON COMMIT DROP`,
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
      return answer(updated);
    });
    if (!dryRun && report.errorCount > 0) throw rejected(report);
    return report;
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
          yield stringify(records, { header: first, columns: columns as unknown as string[], cast: { boolean: (v) => String(v) } });
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

  /**
   * Hands each record of a body to `each`, with the line or position it came from, and whether
   * its fields are already known to be import columns (a CSV header was checked once).
   */
  private async readRecords(
    body: unknown,
    format: ImportFormat,
    fail: Fail,
    each: (line: number, record: Record<string, unknown>, columnsChecked: boolean) => void,
  ): Promise<void> {
    let count = 0;
    const counted = () => {
      if (++count > this.options.maxImportRows) {
        throw new PayloadTooLargeException({
          statusCode: 413,
          error: 'Payload Too Large',
          message: `An import takes at most ${this.options.maxImportRows} rows (the module option maxImportRows).`,
        });
      }
    };
    if (format === 'json') {
      if (!Array.isArray(body)) throw invalid('body', 'must be a JSON array of tombstones');
      for (const [i, record] of body.entries()) {
        counted();
        if (typeof record !== 'object' || record === null || Array.isArray(record)) fail(i + 1, 'row', 'must be an object');
        else each(i + 1, record as Record<string, unknown>, false);
      }
      return;
    }
    const stream = this.limited(body);
    if (format === 'ndjson') {
      let line = 0;
      for await (const texts of linesOf(stream)) {
        for (const text of texts) {
          line++;
          if (text === null) {
            counted();
            fail(line, 'row', `is longer than ${MAX_LINE_BYTES} bytes`);
            continue;
          }
          if (text.trim() === '') continue;
          counted();
          let record: unknown;
          try {
            record = JSON.parse(text);
          } catch {
            fail(line, 'row', 'is not valid JSON');
            continue;
          }
          if (typeof record !== 'object' || record === null || Array.isArray(record)) fail(line, 'row', 'must be a JSON object');
          else each(line, record as Record<string, unknown>, false);
        }
      }
      return;
    }
    // The body is read whole (it is bounded by maxImportBytes) and parsed in one go: several
    // times faster than record by record through a stream.
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    let parsed: string[][];
    try {
      // Arrays, not objects: csv-parse is about three times faster without `columns` and `info`.
      parsed = parse(Buffer.concat(chunks), { bom: true, skip_empty_lines: true, max_record_size: MAX_LINE_BYTES }) as string[][];
    } catch (error) {
      const { lines, message } = error as { lines?: number; message?: string };
      throw invalid('body', `the CSV cannot be read${lines ? ` at line ${lines}` : ''}: ${String(message ?? error).slice(0, 200)}`);
    }
    chunks.length = 0;
    const header = parsed[0] ?? [];
    const unknown = header.filter((c) => !KNOWN_COLUMNS.has(c));
    if (unknown.length > 0) {
      throw invalid('columns', `unknown column(s): ${unknown.slice(0, 5).join(', ')}; known: ${[...KNOWN_COLUMNS].join(', ')}`);
    }
    // Where each import column is, last first: of a column given twice, the last value set counts.
    const at = (column: string) => header.flatMap((c, i) => (c === column ? [i] : [])).reverse();
    const [scope, type, key, kind, target, permanent, reason, alternative, expiresAt] = IMPORT_COLUMNS.map(at);
    for (let i = 1; i < parsed.length; i++) {
      counted();
      const values = parsed[i];
      parsed[i] = EMPTY;
      if (values.length !== header.length) {
        fail(i + 1, 'row', `has ${values.length} fields, the header ${header.length}`);
        continue;
      }
      // Every record has the same shape, whatever cells are empty: an empty cell is no value.
      each(
        i + 1,
        {
          scope: cell(values, scope),
          type: cell(values, type),
          key: cell(values, key),
          kind: cell(values, kind),
          target: cell(values, target),
          permanent: cell(values, permanent),
          reason: cell(values, reason),
          alternative: cell(values, alternative),
          expiresAt: cell(values, expiresAt),
        },
        true,
      );
    }
  }

  /** The body as a stream that fails with 413 past the module's maxImportBytes. */
  private limited(body: unknown): Readable {
    const source = body as Readable;
    if (!source || typeof source.pipe !== 'function') throw invalid('body', 'is empty');
    const max = this.options.maxImportBytes;
    let total = 0;
    return Readable.from(
      (async function* () {
        for await (const chunk of source) {
          total += (chunk as Buffer).length;
          if (total > max) {
            throw new PayloadTooLargeException({
              statusCode: 413,
              error: 'Payload Too Large',
              message: `An import body is at most ${max} bytes (the module option maxImportBytes).`,
            });
          }
          yield chunk as Buffer;
        }
      })(),
    );
  }

  /** The create endpoint's rules, row by row; `null` (and the reasons given to `fail`) when the row is invalid. */
  private checkRow(record: Record<string, unknown>, line: number, columnsChecked: boolean, fail: Fail): ImportRow | null {
    let ok = true;
    const bad = (field: string, reason: string) => {
      ok = false;
      fail(line, field, reason);
    };
    if (!columnsChecked) for (const column of Object.keys(record)) if (!KNOWN_COLUMNS.has(column)) bad(column, 'is not a known field');
    const text = (value: unknown, field: string): string | undefined => {
      if (value === undefined || value === null) return undefined;
      if (typeof value !== 'string') {
        bad(field, 'must be a string');
        return undefined;
      }
      return value;
    };
    const scope = text(record.scope, 'scope') ?? '';
    const type = text(record.type, 'type');
    const key = text(record.key, 'key');
    const given = text(record.kind, 'kind');
    const target = text(record.target, 'target');
    const reason = text(record.reason, 'reason') || undefined; // an empty reason is no reason, as on create
    const alternative = text(record.alternative, 'alternative');
    const expiresAt = text(record.expiresAt, 'expiresAt');
    if (scope !== '' && !isStorableScope(scope)) bad('scope', 'must be at most 256 bytes, without NUL characters');
    if (!isValidType(type)) bad('type', "must be a resource type: letters, digits, '_', '.', ':' or '-', at most 128");
    if (!isStorableKey(key)) bad('key', 'must be a key of 1 to 2048 bytes, without NUL characters');
    const kind = KINDS.get(given as string);
    if (!kind) bad('kind', `must be one of ${TOMBSTONE_KINDS.join(', ')}`);
    const redirect = kind === 'moved' || kind === 'merged';
    if (redirect && target === undefined) bad('target', `is required for a ${kind} tombstone`);
    if (target !== undefined) {
      if (!redirect && kind) bad('target', `only moved and merged tombstones have one, not ${kind}`);
      if (!isStorableKey(target)) bad('target', 'must be a key of 1 to 2048 bytes, without NUL characters');
      if (target === key) bad('target', 'must differ from key');
    }
    let permanent = true;
    const flag = record.permanent;
    if (flag !== undefined && flag !== null) {
      if (flag === true || flag === 'true') permanent = true;
      else if (flag === false || flag === 'false') permanent = false;
      else bad('permanent', 'must be true or false');
    }
    if (reason !== undefined && (reason.length > LIMITS.reasonLength || reason.includes('\u0000') || !isWellFormed(reason))) {
      bad('reason', `must be at most ${LIMITS.reasonLength} characters, without NUL characters`);
    }
    if (alternative !== undefined) {
      if (kind !== 'deleted') bad('alternative', `only deleted tombstones offer one, not ${given}`);
      else if (!isSafeLink(alternative)) bad('alternative', 'must be a path or an absolute http(s) URL, in printable ASCII');
      else if (!alternative.startsWith('/')) {
        const host = new URL(alternative).host;
        if (!this.options.alternativeHosts.includes(host.toLowerCase())) bad('alternative', `the host ${host} is not in the module's alternativeHosts`);
      }
    }
    let expires: string | null = null;
    if (expiresAt !== undefined) {
      // The create endpoint's rule (class-validator's strict ISO 8601), then a real instant.
      const date = isISO8601(expiresAt, { strict: true }) ? new Date(expiresAt) : undefined;
      if (date && !Number.isNaN(date.getTime())) expires = timestampText(date);
      else bad('expiresAt', 'must be an ISO 8601 date-time');
    }
    if (!ok) return null;
    return {
      line,
      scope,
      type: type as string,
      key: key as string,
      kind: kind as TombstoneKind,
      target: target ?? null,
      permanent,
      reason: reason ?? null,
      alternative: alternative ?? null,
      expiresAt: expires,
    };
  }
}

/** The group of a (scope, type), created on first use. */
function groupOf(batch: Batch, scope: string, type: string): Group {
  const name = `${scope}\u0000${type}`;
  let group = batch.get(name);
  if (!group) batch.set(name, (group = { scope, type, keys: new Map() }));
  return group;
}

/**
 * Where each redirect of the batch ends, through the batch and the table's own redirects
 * (`hops`: the line of a row whose target redirects in the table → where that leads), so that
 * chains stay one hop. A redirect that comes back to a key already on its way, through any mix of
 * rows of the batch and of the table, is a cycle: a row error, reported in the order of the rows.
 */
function collapse(batch: Batch, hops: Map<number, string>, fail: Fail): Map<ImportRow, string> {
  const changed = new Map<ImportRow, string>();
  const cycles: [ImportRow, string[]][] = [];
  for (const group of batch.values()) {
    const targets = new Map<string, string | null>();
    const tableHops = new Map<string, string>();
    for (const [key, row] of group.keys) {
      targets.set(key, row.target);
      const hop = hops.get(row.line);
      if (hop !== undefined && row.target !== null) tableHops.set(row.target, hop);
    }
    const finals = collapseChains(
      targets,
      (key) => tableHops.get(key),
      (source, path) => cycles.push([group.keys.get(source) as ImportRow, path]),
    );
    for (const [source, final] of finals) {
      const row = group.keys.get(source) as ImportRow;
      if (final !== row.target) changed.set(row, final);
    }
  }
  for (const [row, path] of cycles.sort(([a], [b]) => a.line - b.line)) {
    fail(row.line, 'target', `would form a cycle: ${path.map((k) => `'${k.slice(0, 60)}'`).join(' → ')}`);
  }
  return changed;
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

/** Sends the rows to `tombstones_import` with COPY, in PostgreSQL's text format. */
async function copyRows(tx: EntityManager, rows: ImportRow[]): Promise<void> {
  if (!tx.queryRunner) throw new Error('An import runs in a transaction of its own.');
  const client = (await tx.queryRunner.connect()) as PoolClient;
  const sink = client.query(
    copyFrom(
      `COPY tombstones_import (line, scope, resource_type, resource_key, kind, target_key, permanent, reason, alternative, expires_at)
       FROM STDIN (ENCODING 'UTF8')`,
    ),
  );
  function* text(): Generator<string> {
    for (let start = 0; start < rows.length; start += COPY_CHUNK) {
      let chunk = '';
      for (let i = start; i < rows.length && i < start + COPY_CHUNK; i++) {
        const r = rows[i];
        chunk += `${r.line}\t${copyText(r.scope)}\t${copyText(r.type)}\t${copyText(r.key)}\t${r.kind}\t${copyText(r.target)}\t${
          r.permanent ? 't' : 'f'
        }\t${copyText(r.reason)}\t${copyText(r.alternative)}\t${r.expiresAt ?? '\\N'}\n`;
      }
      yield chunk;
    }
  }
  await pipeline(Readable.from(text()), sink);
}

const COPY_SPECIAL = /[\\\t\n\r]/;
const COPY_ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };

/** A value in COPY's text format: `\N` for NULL; backslash, tab, newline and carriage return escaped. */
function copyText(value: string | null): string {
  if (value === null) return '\\N';
  // Testing first is several times faster than replacing, for values that need nothing (most).
  return COPY_SPECIAL.test(value) ? value.replace(/[\\\t\n\r]/g, (c) => COPY_ESCAPES[c]) : value;
}

/**
 * An instant as PostgreSQL reads it, in UTC: as toISOString(), except that a year past 9999 has
 * no sign and JavaScript's year 0 is 1 BC (both can come out of a date-time that passes the ISO
 * 8601 check, such as `0000` or `0099001`), as node-postgres writes a Date.
 */
function timestampText(date: Date): string {
  const iso = date.toISOString();
  const year = date.getUTCFullYear();
  if (year >= 1 && year <= 9999) return iso;
  const rest = iso.slice(iso.indexOf('-', 1)); // -MM-DDTHH:mm:ss.sssZ
  return year >= 1 ? `${year}${rest}` : `${String(1 - year).padStart(4, '0')}${rest} BC`;
}

/** Of the cells at `at` (a column's positions, last first), the first that is not empty. */
function cell(values: string[], at: number[]): string | undefined {
  for (const i of at) if (values[i] !== '') return values[i];
  return undefined;
}

/**
 * The lines of a stream, decoded as UTF-8, a chunk's worth at a time; a line longer than the
 * limit is answered `null` and skipped without being kept in memory.
 */
async function* linesOf(stream: Readable): AsyncGenerator<(string | null)[]> {
  let first = true;
  // A line's text, without its CR, and without the byte order mark a first line may carry.
  const text = (bytes: Buffer) => {
    let line = bytes.toString('utf8');
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (!first) return line;
    first = false;
    return line.startsWith('\uFEFF') ? line.slice(1) : line;
  };
  let pending: Buffer[] = [];
  let size = 0;
  let tooLong = false;
  for await (const chunk of stream) {
    let data = chunk as Buffer;
    const lines: (string | null)[] = [];
    for (let at = data.indexOf(10); at !== -1; at = data.indexOf(10)) {
      const tail = data.subarray(0, at);
      if (tooLong || size + tail.length > MAX_LINE_BYTES) lines.push(null);
      else lines.push(text(pending.length === 0 ? tail : Buffer.concat([...pending, tail])));
      pending = [];
      size = 0;
      tooLong = false;
      data = data.subarray(at + 1);
    }
    if (lines.length > 0) yield lines;
    if (tooLong) continue;
    size += data.length;
    if (size > MAX_LINE_BYTES) {
      tooLong = true;
      pending = [];
    } else if (data.length > 0) pending.push(Buffer.from(data));
  }
  if (tooLong) yield [null];
  else if (size > 0) yield [text(Buffer.concat(pending))];
}

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
    id: String(row.id),
    actor: row.actor,
    occurredAt: iso(row.occurred_at),
    hitCount: Number(row.hit_count),
    lastHitAt: iso(row.last_hit_at),
    createdAt: iso(row.created_at),
    updatedAt: iso(row.updated_at),
  };
}
