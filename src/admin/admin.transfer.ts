import { Readable } from 'node:stream';
import { Inject, Injectable, type OnModuleInit, PayloadTooLargeException } from '@nestjs/common';
import { HttpAdapterHost, ModuleRef } from '@nestjs/core';
import { parse } from 'csv-parse/sync';
import { stringify } from 'csv-stringify/sync';
import { isISO8601 } from 'class-validator';
import type { EntityManager } from 'typeorm';
import { LIMITS } from '../tombstone.constants.js';
import { TOMBSTONE_KINDS, type TombstoneKind } from '../tombstone.entity.js';
import { TombstoneService } from '../tombstone.service.js';
import { isSafeLink, isStorableKey, isStorableScope, isValidType, isWellFormed } from '../tombstone.validation.js';
import { TOMBSTONE_ADMIN_OPTIONS } from './admin.module-definition.js';
import type { ResolvedTombstoneAdminOptions } from './admin.options.js';
import { invalid } from './admin.service.js';

/** The columns an import reads; an export writes these and the read-only ones after them. */
export const IMPORT_COLUMNS = ['scope', 'type', 'key', 'kind', 'target', 'permanent', 'reason', 'alternative', 'expiresAt'] as const;
/** Written by an export, ignored by an import: what the table keeps for itself. */
export const READ_ONLY_COLUMNS = ['id', 'actor', 'occurredAt', 'hitCount', 'lastHitAt', 'createdAt', 'updatedAt'] as const;
const KNOWN_COLUMNS = new Set<string>([...IMPORT_COLUMNS, ...READ_ONLY_COLUMNS]);

/** At most this many row errors are listed in an answer; the count is always complete. */
const LISTED_ERRORS = 1000;
const MAX_LINE_BYTES = 64 * 1024;
const WRITE_CHUNK = 10_000;
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
  expiresAt: Date | null;
}

export interface ImportError {
  /** 1-based: the CSV record (the header is record 1), the NDJSON line, or the JSON array index + 1. */
  row: number;
  field: string;
  reason: string;
}

export interface ImportReport {
  dryRun: boolean;
  rows: number;
  /** Rows that would create (dry run) or created a tombstone. */
  created: number;
  /** Rows that would replace (dry run) or replaced an existing tombstone. */
  updated: number;
  /** Every problem found, counted; listed up to 1000. */
  errorCount: number;
  errors: ImportError[];
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
      if (!fastify.hasContentTypeParser(type)) fastify.addContentTypeParser(type, (_request, payload, done) => done(null, payload));
    }
  }

  private get db() {
    return this.moduleRef.get(TombstoneService, { strict: false }).dataSource;
  }

  /**
   * Reads, checks and (unless `dryRun`) writes a batch, all or nothing: one invalid row, or one
   * redirect that would form a cycle with the batch or the table, and nothing is written.
   */
  async import(body: unknown, format: ImportFormat, dryRun: boolean, actor: string | null): Promise<ImportReport> {
    const errors: ImportError[] = [];
    let errorCount = 0;
    const fail = (row: number, field: string, reason: string) => {
      errorCount++;
      if (errors.length < LISTED_ERRORS) errors.push({ row, field, reason });
    };
    const rows: ImportRow[] = [];
    const seen = new Map<string, number>();
    let total = 0;
    for await (const { line, record } of this.records(body, format, fail)) {
      total++;
      const row = this.checkRow(record, line, fail);
      if (!row) continue;
      const identity = `${row.scope}\u0000${row.type}\u0000${row.key}`;
      const earlier = seen.get(identity);
      if (earlier !== undefined) {
        fail(line, 'key', `repeats the key of row ${earlier}`);
        continue;
      }
      seen.set(identity, line);
      rows.push(row);
    }
    if (total === 0 && errorCount === 0) throw invalid('body', 'has no rows');

    const run = async (tx: EntityManager): Promise<ImportReport> => {
      const groups = [...new Set(rows.map((r) => `${r.scope}\u0000${r.type}`))].sort();
      if (!dryRun) {
        for (const group of groups) {
          await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [`nestjs-tombstones\u001f${group.replace('\u0000', '\u001f')}`]);
        }
      }
      const finals = await this.finalTargets(tx, rows, fail);
      const existing = await keysThatExist(tx, rows);
      const report: ImportReport = {
        dryRun,
        rows: total,
        created: rows.length - existing,
        updated: existing,
        errorCount,
        errors,
      };
      if (dryRun || errorCount > 0) return report;
      await this.write(tx, rows, finals, actor);
      return report;
    };
    const report = dryRun ? await run(this.db.manager) : await this.db.transaction(run);
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

  /** The records of a body, with the line or position each came from. */
  private async *records(
    body: unknown,
    format: ImportFormat,
    fail: (row: number, field: string, reason: string) => void,
  ): AsyncGenerator<{ line: number; record: Record<string, unknown> }> {
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
        else yield { line: i + 1, record: record as Record<string, unknown> };
      }
      return;
    }
    const stream = this.limited(body);
    if (format === 'ndjson') {
      let line = 0;
      for await (const text of linesOf(stream)) {
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
        else yield { line, record: record as Record<string, unknown> };
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
    for (let i = 1; i < parsed.length; i++) {
      counted();
      const clean: Record<string, unknown> = {};
      const values = parsed[i];
      for (let c = 0; c < header.length; c++) if (values[c] !== undefined && values[c] !== '') clean[header[c]] = values[c];
      if (values.length !== header.length) fail(i + 1, 'row', `has ${values.length} fields, the header ${header.length}`);
      else yield { line: i + 1, record: clean };
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

  private checkRow(record: Record<string, unknown>, line: number, fail: (row: number, field: string, reason: string) => void): ImportRow | null {
    let ok = true;
    const bad = (field: string, reason: string) => {
      ok = false;
      fail(line, field, reason);
    };
    for (const column of Object.keys(record)) if (!KNOWN_COLUMNS.has(column)) bad(column, 'is not a known field');
    const text = (field: string): string | undefined => {
      const value = record[field];
      if (value === undefined || value === null) return undefined;
      if (typeof value !== 'string') {
        bad(field, 'must be a string');
        return undefined;
      }
      return value;
    };
    const scope = text('scope') ?? '';
    const type = text('type');
    const key = text('key');
    const kind = text('kind');
    const target = text('target');
    const reason = text('reason') || undefined; // an empty reason is no reason, as on create
    const alternative = text('alternative');
    const expiresAt = text('expiresAt');
    if (!isStorableScope(scope)) bad('scope', 'must be at most 256 bytes, without NUL characters');
    if (!isValidType(type)) bad('type', "must be a resource type: letters, digits, '_', '.', ':' or '-', at most 128");
    if (!isStorableKey(key)) bad('key', 'must be a key of 1 to 2048 bytes, without NUL characters');
    if (!TOMBSTONE_KINDS.includes(kind as TombstoneKind)) bad('kind', `must be one of ${TOMBSTONE_KINDS.join(', ')}`);
    const redirect = kind === 'moved' || kind === 'merged';
    if (redirect && target === undefined) bad('target', `is required for a ${kind} tombstone`);
    if (!redirect && target !== undefined && TOMBSTONE_KINDS.includes(kind as TombstoneKind)) bad('target', `only moved and merged tombstones have one, not ${kind}`);
    if (target !== undefined && !isStorableKey(target)) bad('target', 'must be a key of 1 to 2048 bytes, without NUL characters');
    if (target !== undefined && target === key) bad('target', 'must differ from key');
    let permanent = true;
    const given = record.permanent;
    if (given !== undefined && given !== null) {
      if (given === true || given === 'true') permanent = true;
      else if (given === false || given === 'false') permanent = false;
      else bad('permanent', 'must be true or false');
    }
    if (reason !== undefined && (reason.length > LIMITS.reasonLength || reason.includes('\u0000') || !isWellFormed(reason))) {
      bad('reason', `must be at most ${LIMITS.reasonLength} characters, without NUL characters`);
    }
    if (alternative !== undefined) {
      if (kind !== 'deleted') bad('alternative', `only deleted tombstones offer one, not ${kind}`);
      else if (!isSafeLink(alternative)) bad('alternative', 'must be a path or an absolute http(s) URL, in printable ASCII');
      else if (!alternative.startsWith('/') && !this.options.alternativeHosts.includes(new URL(alternative).host.toLowerCase())) {
        bad('alternative', `the host ${new URL(alternative).host} is not in the module's alternativeHosts`);
      }
    }
    let expires: Date | null = null;
    if (expiresAt !== undefined) {
      // The create endpoint's rule (class-validator's strict ISO 8601), then a real instant.
      expires = isISO8601(expiresAt, { strict: true }) ? new Date(expiresAt) : new Date(Number.NaN);
      if (Number.isNaN(expires.getTime())) bad('expiresAt', 'must be an ISO 8601 date-time');
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

  /**
   * Where each redirect of the batch ends, through the batch and the table's own redirects, so
   * that chains stay one hop. A redirect that comes back to its key is a cycle: a row error.
   */
  private async finalTargets(
    tx: EntityManager,
    rows: ImportRow[],
    fail: (row: number, field: string, reason: string) => void,
  ): Promise<Map<ImportRow, string>> {
    const id = (scope: string, type: string, key: string) => `${scope}\u0000${type}\u0000${key}`;
    const batch = new Map(rows.map((row) => [id(row.scope, row.type, row.key), row]));
    const redirects = rows.filter((row) => row.target !== null);
    const outside = redirects.filter((row) => !batch.has(id(row.scope, row.type, row.target as string)));
    const table = new Map<string, string>();
    for (let i = 0; i < outside.length; i += WRITE_CHUNK) {
      const chunk = outside.slice(i, i + WRITE_CHUNK);
      const found = (await tx.query(
        `SELECT t.scope, t.resource_type, t.resource_key, t.target_key
           FROM unnest($1::text[], $2::text[], $3::text[]) AS q(scope, type, key)
           JOIN tombstones t ON t.scope = q.scope AND t.resource_type = q.type AND t.resource_key = q.key
          WHERE t.kind IN ('moved', 'merged')`,
        [chunk.map((r) => r.scope), chunk.map((r) => r.type), chunk.map((r) => r.target)],
      )) as { scope: string; resource_type: string; resource_key: string; target_key: string }[];
      for (const t of found) table.set(id(t.scope, t.resource_type, t.resource_key), t.target_key);
    }
    const finals = new Map<ImportRow, string>();
    for (const row of redirects) {
      const path = [row.key];
      let current = row.target as string;
      for (;;) {
        if (path.includes(current)) {
          fail(row.line, 'target', `would form a cycle: ${[...path, current].map((k) => `'${k.slice(0, 60)}'`).join(' → ')}`);
          break;
        }
        const next = batch.get(id(row.scope, row.type, current));
        if (next) {
          if (next.target === null) break;
          path.push(current);
          current = next.target;
          continue;
        }
        const hop = table.get(id(row.scope, row.type, current));
        if (hop !== undefined && hop !== row.key) current = hop;
        else if (hop === row.key) {
          fail(row.line, 'target', `would form a cycle: '${row.key.slice(0, 60)}' → '${current.slice(0, 60)}' → back`);
        }
        break;
      }
      finals.set(row, current);
    }
    return finals;
  }

  /** Upserts the rows, a chunk per statement, and re-points what led to a key that now redirects. */
  private async write(tx: EntityManager, rows: ImportRow[], finals: Map<ImportRow, string>, actor: string | null): Promise<void> {
    for (let i = 0; i < rows.length; i += WRITE_CHUNK) {
      const chunk = rows.slice(i, i + WRITE_CHUNK);
      await tx.query(
        `INSERT INTO tombstones (scope, resource_type, resource_key, kind, target_key, permanent, reason, alternative,
                                 actor, expires_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[], $7::text[],
                              $8::text[], $9::text[], $10::timestamptz[])
         ON CONFLICT (scope, resource_type, resource_key) DO UPDATE SET
           occurred_at = CASE WHEN tombstones.kind = EXCLUDED.kind AND tombstones.target_key IS NOT DISTINCT FROM EXCLUDED.target_key
                              THEN tombstones.occurred_at ELSE now() END,
           kind = EXCLUDED.kind, target_key = EXCLUDED.target_key, permanent = EXCLUDED.permanent,
           reason = EXCLUDED.reason, alternative = EXCLUDED.alternative, actor = EXCLUDED.actor,
           expires_at = EXCLUDED.expires_at, metadata = '{}'::jsonb, updated_at = now()`,
        [
          chunk.map((r) => r.scope),
          chunk.map((r) => r.type),
          chunk.map((r) => r.key),
          chunk.map((r) => r.kind),
          chunk.map((r) => finals.get(r) ?? null),
          chunk.map((r) => r.permanent),
          chunk.map((r) => r.reason),
          chunk.map((r) => r.alternative),
          chunk.map(() => actor),
          chunk.map((r) => r.expiresAt),
        ],
      );
    }
    const redirects = rows.filter((row) => finals.has(row));
    for (let i = 0; i < redirects.length; i += WRITE_CHUNK) {
      const chunk = redirects.slice(i, i + WRITE_CHUNK);
      await tx.query(
        `UPDATE tombstones t SET target_key = m.final, updated_at = now()
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS m(scope, type, source, final)
          WHERE t.scope = m.scope AND t.resource_type = m.type AND t.target_key = m.source AND t.resource_key <> m.final`,
        [chunk.map((r) => r.scope), chunk.map((r) => r.type), chunk.map((r) => r.key), chunk.map((r) => finals.get(r))],
      );
    }
  }
}

/**
 * The lines of a stream, decoded as UTF-8; a line longer than the limit is answered `null` and
 * skipped without being kept in memory.
 */
async function* linesOf(stream: Readable): AsyncGenerator<string | null> {
  let first = true;
  // A line's text, without its CR, and without the byte order mark a first line may carry.
  const text = (bytes: Buffer) => {
    const line = bytes.toString('utf8').replace(/\r$/, '');
    if (!first) return line;
    first = false;
    return line.startsWith('\uFEFF') ? line.slice(1) : line;
  };
  let pending: Buffer[] = [];
  let size = 0;
  let tooLong = false;
  for await (const chunk of stream) {
    let data = chunk as Buffer;
    for (let at = data.indexOf(10); at !== -1; at = data.indexOf(10)) {
      const tail = data.subarray(0, at);
      if (!tooLong && size + tail.length <= MAX_LINE_BYTES) yield text(Buffer.concat([...pending, tail]));
      else yield null;
      pending = [];
      size = 0;
      tooLong = false;
      data = data.subarray(at + 1);
    }
    if (tooLong) continue;
    size += data.length;
    if (size > MAX_LINE_BYTES) {
      tooLong = true;
      pending = [];
    } else if (data.length > 0) pending.push(Buffer.from(data));
  }
  if (tooLong) yield null;
  else if (size > 0) yield text(Buffer.concat(pending));
}

async function keysThatExist(tx: EntityManager, rows: ImportRow[]): Promise<number> {
  let count = 0;
  for (let i = 0; i < rows.length; i += WRITE_CHUNK) {
    const chunk = rows.slice(i, i + WRITE_CHUNK);
    const [{ n }] = (await tx.query(
      `SELECT count(*)::int AS n FROM unnest($1::text[], $2::text[], $3::text[]) AS q(scope, type, key)
         JOIN tombstones t ON t.scope = q.scope AND t.resource_type = q.type AND t.resource_key = q.key`,
      [chunk.map((r) => r.scope), chunk.map((r) => r.type), chunk.map((r) => r.key)],
    )) as { n: number }[];
    count += n;
  }
  return count;
}

function rejected(report: ImportReport) {
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
