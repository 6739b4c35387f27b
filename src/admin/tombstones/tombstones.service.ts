import { ConflictException, Inject, Injectable, NotFoundException } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import type { DataSource, EntityManager } from 'typeorm';
import { TombstoneConfigurationError } from '../../tombstone.exceptions.js';
import { TombstoneService } from '../../tombstone.service.js';
import { isStorableKey, isStorableScope, isValidType, isWellFormed } from '../../tombstone.validation.js';
import type { CreateTombstoneDto, ListTombstonesQuery, ResolveTombstonesDto, StaleTombstonesQuery, UpdateTombstoneDto } from './tombstones.dto.js';
import { TOMBSTONE_ADMIN_OPTIONS } from '../admin.module-definition.js';
import type { ResolvedTombstoneAdminOptions } from '../admin.options.js';
import { invalid, isRowId, parseDate } from '../admin.validation.js';
import { NO_TOMBSTONE, type TombstoneKind } from '../../tombstone.types.js';

export { invalid };

/** A tombstone as the admin endpoints show it. */
export interface TombstoneView {
  id: string;
  scope: string;
  type: string;
  key: string;
  kind: TombstoneKind;
  target: string | null;
  permanent: boolean;
  reason: string | null;
  alternative: string | null;
  actor: string | null;
  occurredAt: string;
  expiresAt: string | null;
  metadata: Record<string, unknown>;
  hitCount: number;
  lastHitAt: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface TombstonePage {
  items: TombstoneView[];
  /** Pass it as `cursor` for the next page; `null` on the last one. */
  nextCursor: string | null;
}

/** What a lookup of one key answers now, for clients cleaning their stored references. */
export interface TombstoneResolveResult {
  key: string;
  /**
   * `none`: no tombstone, the key answers for itself (200 if the resource exists, 404 if not);
   * `hidden`: 404; `gone`: 410; `moved`: a redirect to `target`.
   */
  state: 'none' | 'hidden' | 'gone' | 'moved';
  /** What a GET of the key answers when its resource is not found; `null` for `none`. */
  status: 404 | 410 | 301 | 302 | null;
  target?: string;
  merged?: boolean;
  deletedAt?: string;
  reason?: string | null;
  alternative?: string | null;
}

const METADATA_MAX_CHARS = 8192;

/** The admin endpoints' reads and writes of the tombstone table. */
@Injectable()
export class TombstoneAdminService {
  constructor(
    @Inject(TOMBSTONE_ADMIN_OPTIONS) private readonly options: ResolvedTombstoneAdminOptions,
    private readonly moduleRef: ModuleRef,
  ) {}

  private get tombstones(): TombstoneService {
    try {
      return this.moduleRef.get(TombstoneService, { strict: false });
    } catch {
      throw new TombstoneConfigurationError('TombstoneAdminModule needs TombstoneModule.', [
        'Import TombstoneModule.forRoot() in your application module.',
      ]);
    }
  }

  private get db(): DataSource {
    return this.tombstones.dataSource;
  }

  async list(query: ListTombstonesQuery): Promise<TombstonePage> {
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (sql: string, value: unknown) => {
      params.push(value);
      where.push(sql.replace('?', `$${params.length}`));
    };
    if (query.scope !== undefined) add('scope = ?', query.scope);
    if (query.type !== undefined) add('resource_type = ?', query.type);
    if (query.kind !== undefined) add('kind = ?', query.kind);
    if (query.keyPrefix !== undefined) add('starts_with(resource_key, ?)', query.keyPrefix);
    if (query.createdFrom !== undefined) add('created_at >= ?', parseDate(query.createdFrom, 'createdFrom'));
    if (query.createdTo !== undefined) add('created_at < ?', parseDate(query.createdTo, 'createdTo'));
    if (query.hitFrom !== undefined) add('last_hit_at >= ?', parseDate(query.hitFrom, 'hitFrom'));
    if (query.hitTo !== undefined) add('last_hit_at < ?', parseDate(query.hitTo, 'hitTo'));
    if (query.neverHitSince !== undefined) add('(last_hit_at IS NULL OR last_hit_at < ?)', parseDate(query.neverHitSince, 'neverHitSince'));
    return this.page(where, params, query.cursor, query.limit);
  }

  /** Tombstones no lookup answered from in `days` days (counting from their creation when never hit). */
  async stale(query: StaleTombstonesQuery): Promise<TombstonePage> {
    const since = new Date(Date.now() - query.days * 86_400_000);
    const where = ['coalesce(last_hit_at, created_at) < $1'];
    const params: unknown[] = [since];
    if (query.scope !== undefined) where.push(`scope = $${params.push(query.scope)}`);
    if (query.type !== undefined) where.push(`resource_type = $${params.push(query.type)}`);
    return this.page(where, params, query.cursor, query.limit);
  }

  // Newest first, by id: a keyset page never shifts when rows are inserted meanwhile.
  private async page(where: string[], params: unknown[], cursor: string | undefined, requested?: number): Promise<TombstonePage> {
    const limit = requested ?? Math.min(50, this.options.maxPageSize);
    if (limit > this.options.maxPageSize) throw invalid('limit', `must be at most ${this.options.maxPageSize}`);
    if (cursor !== undefined) where.push(`id < $${params.push(decodeCursor(cursor))}`);
    const rows = (await this.db.query(
      `SELECT * FROM tombstones ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT $${params.push(limit + 1)}`,
      params,
    )) as Row[];
    const items = rows.slice(0, limit).map(view);
    return { items, nextCursor: rows.length > limit ? encodeCursor(items[items.length - 1].id) : null };
  }

  async get(id: string): Promise<TombstoneView> {
    const [row] = (await this.db.query(`SELECT * FROM tombstones WHERE id = $1`, [id])) as Row[];
    if (!row) throw missing(id);
    return view(row);
  }

  async create(dto: CreateTombstoneDto, actor: string | null): Promise<TombstoneView> {
    const scope = dto.scope ?? '';
    const redirect = dto.kind === 'moved' || dto.kind === 'merged';
    if (redirect && dto.target === undefined) throw invalid('target', `is required for a ${dto.kind} tombstone`);
    if (!redirect && dto.target !== undefined) throw invalid('target', `only moved and merged tombstones have one, not ${dto.kind}`);
    if (redirect && dto.target === dto.key) throw invalid('target', 'must differ from key');
    this.checkAlternative(dto.kind, dto.alternative);
    const metadata = checkMetadata(dto.metadata);
    return this.db.transaction(async (tx) => {
      await lockType(tx, scope, dto.type);
      const [existing] = (await tx.query(`SELECT id FROM tombstones WHERE scope = $1 AND resource_type = $2 AND resource_key = $3`, [
        scope,
        dto.type,
        dto.key,
      ])) as { id: string }[];
      if (existing) {
        throw new ConflictException({
          statusCode: 409,
          error: 'Conflict',
          message: 'This key already has a tombstone; update it instead.',
          id: String(existing.id),
        });
      }
      const target = redirect ? await finalTarget(tx, scope, dto.type, dto.key, dto.target as string) : null;
      const [row] = (await tx.query(
        `INSERT INTO tombstones (scope, resource_type, resource_key, kind, target_key, permanent, reason, alternative,
                                 actor, expires_at, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb) RETURNING *`,
        [
          scope,
          dto.type,
          dto.key,
          dto.kind,
          target,
          dto.permanent ?? true,
          dto.reason || null,
          dto.alternative ?? null,
          actor,
          dto.expiresAt ? parseDate(dto.expiresAt, 'expiresAt') : null,
          JSON.stringify(metadata),
        ],
      )) as Row[];
      if (target !== null) await repoint(tx, scope, dto.type, dto.key, target);
      return view(row);
    });
  }

  async update(id: string, dto: UpdateTombstoneDto, actor: string | null): Promise<TombstoneView> {
    return this.db.transaction(async (tx) => {
      // The (scope, type) lock first, then the row's, in the order every other writer takes them.
      const [named] = (await tx.query(`SELECT scope, resource_type FROM tombstones WHERE id = $1`, [id])) as Row[];
      if (!named) throw missing(id);
      await lockType(tx, named.scope, named.resource_type);
      const [current] = (await tx.query(`SELECT * FROM tombstones WHERE id = $1 FOR UPDATE`, [id])) as Row[];
      if (!current) throw missing(id);
      const kind = dto.kind ?? current.kind;
      const redirect = kind === 'moved' || kind === 'merged';
      let target = redirect ? (dto.target ?? current.target_key) : null;
      if (redirect && target === null) throw invalid('target', `is required for a ${kind} tombstone`);
      if (!redirect && dto.target !== undefined) throw invalid('target', `only moved and merged tombstones have one, not ${kind}`);
      if (target === current.resource_key) throw invalid('target', 'must differ from key');
      if (target !== null) target = await finalTarget(tx, current.scope, current.resource_type, current.resource_key, target);
      const alternative = kind === 'deleted' ? (dto.alternative === undefined ? current.alternative : dto.alternative) : null;
      if (dto.alternative !== undefined && dto.alternative !== null) this.checkAlternative(kind, dto.alternative);
      const metadata = dto.metadata === undefined ? current.metadata : checkMetadata(dto.metadata);
      const changed = kind !== current.kind || target !== current.target_key;
      const [row] = rowsOf<Row>(await tx.query(
        `UPDATE tombstones SET kind = $2, target_key = $3, permanent = $4, reason = $5, alternative = $6, actor = $7,
                expires_at = $8, metadata = $9::jsonb, occurred_at = CASE WHEN $10::boolean THEN now() ELSE occurred_at END,
                updated_at = now()
          WHERE id = $1 RETURNING *`,
        [
          id,
          kind,
          target,
          dto.permanent ?? current.permanent,
          dto.reason === undefined ? current.reason : dto.reason || null,
          alternative,
          actor,
          dto.expiresAt === undefined ? current.expires_at : dto.expiresAt === null ? null : parseDate(dto.expiresAt, 'expiresAt'),
          JSON.stringify(metadata),
          changed,
        ],
      ));
      if (target !== null) await repoint(tx, current.scope, current.resource_type, current.resource_key, target);
      return view(row);
    });
  }

  /** Deletes a tombstone: its key is live (or a plain 404) again. */
  async remove(id: string): Promise<void> {
    const deleted = rowsOf(await this.db.query(`DELETE FROM tombstones WHERE id = $1 RETURNING id`, [id]));
    if (deleted.length === 0) throw missing(id);
  }

  async resolve(dto: ResolveTombstonesDto): Promise<{ results: TombstoneResolveResult[] }> {
    if (dto.keys.length > this.options.maxResolveKeys) throw invalid('keys', `at most ${this.options.maxResolveKeys} keys per request`);
    const scope = dto.scope ?? '';
    if (!isValidType(dto.type) || !isStorableScope(scope)) throw invalid('type', 'invalid');
    const resolutions = await this.tombstones.resolveMany(dto.type, dto.keys, scope);
    return {
      results: dto.keys.map((key, i): TombstoneResolveResult => {
        const resolution = isStorableKey(key) ? resolutions[i] : NO_TOMBSTONE;
        switch (resolution.state) {
          case 'none':
            return { key, state: 'none', status: null };
          case 'hidden':
            return { key, state: 'hidden', status: 404 };
          case 'gone':
            return {
              key,
              state: 'gone',
              status: 410,
              deletedAt: resolution.deletedAt.toISOString(),
              reason: resolution.reason,
              alternative: resolution.alternative,
            };
          default:
            return {
              key,
              state: 'moved',
              status: resolution.permanent ? 301 : 302,
              target: resolution.target,
              merged: resolution.merged,
            };
        }
      }),
    };
  }

  private checkAlternative(kind: TombstoneKind, alternative: string | null | undefined): void {
    if (alternative === undefined || alternative === null) return;
    if (kind !== 'deleted') throw invalid('alternative', `only deleted tombstones offer one, not ${kind}`);
    if (alternative.startsWith('/')) return;
    const host = new URL(alternative).host.toLowerCase();
    if (!this.options.alternativeHosts.includes(host)) {
      throw invalid('alternative', `the host ${host} is not in the module's alternativeHosts`);
    }
  }
}

interface Row {
  id: string;
  scope: string;
  resource_type: string;
  resource_key: string;
  kind: TombstoneKind;
  target_key: string | null;
  permanent: boolean;
  reason: string | null;
  alternative: string | null;
  actor: string | null;
  occurred_at: Date;
  expires_at: Date | null;
  metadata: Record<string, unknown>;
  hit_count: string;
  last_hit_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

function view(row: Row): TombstoneView {
  return {
    id: String(row.id),
    scope: row.scope,
    type: row.resource_type,
    key: row.resource_key,
    kind: row.kind,
    target: row.target_key,
    permanent: row.permanent,
    reason: row.reason,
    alternative: row.alternative,
    actor: row.actor,
    occurredAt: row.occurred_at.toISOString(),
    expiresAt: row.expires_at?.toISOString() ?? null,
    metadata: row.metadata,
    hitCount: Number(row.hit_count),
    lastHitAt: row.last_hit_at?.toISOString() ?? null,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}

/** Rows of a raw query; TypeORM answers `[rows, count]` for UPDATE and DELETE. */
function rowsOf<T>(result: unknown): T[] {
  const list = result as unknown[];
  return (Array.isArray(list[0]) ? list[0] : list) as T[];
}

function missing(id: string): NotFoundException {
  return new NotFoundException({ statusCode: 404, error: 'Not Found', message: `No tombstone has the id ${id}.` });
}


function checkMetadata(metadata: Record<string, unknown> | undefined): Record<string, unknown> {
  if (metadata === undefined) return {};
  // What jsonb refuses (NUL, lone surrogates) and what would take the stack (deep nesting) is a
  // 400 here rather than an error from the database.
  const walk = (value: unknown, depth: number): boolean => {
    if (depth > 32) return false;
    if (typeof value === 'string') return !value.includes('\u0000') && isWellFormed(value);
    if (typeof value === 'number') return Number.isFinite(value);
    if (value === null || typeof value === 'boolean') return true;
    if (Array.isArray(value)) return value.every((item) => walk(item, depth + 1));
    if (typeof value === 'object') return Object.entries(value).every(([k, v]) => walk(k, depth) && walk(v, depth + 1));
    return false;
  };
  if (!walk(metadata, 0)) {
    throw invalid('metadata', 'must be JSON of at most 32 levels, with text without NUL characters or lone surrogates');
  }
  if (JSON.stringify(metadata).length > METADATA_MAX_CHARS) {
    throw invalid('metadata', `must be at most ${METADATA_MAX_CHARS} characters of JSON`);
  }
  return metadata;
}

function encodeCursor(id: string): string {
  return Buffer.from(id, 'utf8').toString('base64url');
}

function decodeCursor(cursor: string): string {
  const id = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!isRowId(id)) throw invalid('cursor', 'must be the nextCursor of a previous page');
  return id;
}

/** The same lock the recording API's batches take: admin writes edit chains of a (scope, type). */
async function lockType(tx: EntityManager, scope: string, type: string): Promise<void> {
  await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [`nestjs-tombstones\u001f${scope}\u001f${type}`]);
}

/**
 * Where a redirect from `key` to `target` ends: at the target, or where the target's own
 * redirect leads (chains stay one hop). A redirect that would lead back to `key` is a cycle: 409.
 * Unlike a captured move, an operator's redirect never revives its target: a target that is
 * deleted stays deleted, and the redirect then answers 410.
 */
async function finalTarget(tx: EntityManager, scope: string, type: string, key: string, target: string): Promise<string> {
  const [hop] = (await tx.query(
    `SELECT kind, target_key FROM tombstones WHERE scope = $1 AND resource_type = $2 AND resource_key = $3`,
    [scope, type, target],
  )) as { kind: TombstoneKind; target_key: string | null }[];
  const final = hop && (hop.kind === 'moved' || hop.kind === 'merged') && hop.target_key ? hop.target_key : target;
  if (final === key) {
    throw new ConflictException({
      statusCode: 409,
      error: 'Conflict',
      message: `A redirect from '${key.slice(0, 120)}' to '${target.slice(0, 120)}' would form a cycle: that key redirects back.`,
    });
  }
  return final;
}

/** What redirected to `key` now leads where `key` does. */
async function repoint(tx: EntityManager, scope: string, type: string, key: string, target: string): Promise<void> {
  await tx.query(
    `UPDATE tombstones SET target_key = $4, updated_at = now()
      WHERE scope = $1 AND resource_type = $2 AND target_key = $3 AND resource_key <> $4`,
    [scope, type, key, target],
  );
}
