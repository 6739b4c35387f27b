import { ConflictException, Inject, Injectable, NotFoundException } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { isRedirect, type TombstoneRow, toTombstone } from '../../table/tombstone.rows.js';
import { coreProvider } from '../admin.core.js';
import { TombstoneTable } from '../../table/tombstone.table.js';
import { TombstoneExistsError, type TombstoneFields, TombstoneWriter } from '../../table/tombstone.writer.js';
import type { Tombstone } from '../../tombstone.entity.js';
import { preview, TombstoneCycleError, TombstoneValidationError } from '../../tombstone.exceptions.js';
import { TombstoneKeys } from '../../tombstone.keys.js';
import { DOT_TARGET_REASON, isPrefixKey, isStorableKey, isStorableScope, isTargetKey, isValidType, isWellFormed, PREFIX_KEY_REASON } from '../../tombstone.validation.js';
import type { CreateTombstoneDto, ListTombstonesQuery, ResolveTombstonesDto, StaleTombstonesQuery, UpdateTombstoneDto } from './tombstones.dto.js';
import { TOMBSTONE_ADMIN_OPTIONS } from '../admin.module-definition.js';
import type { ResolvedTombstoneAdminOptions } from '../admin.options.js';
import { invalid, isRowId, parseDate } from '../admin.validation.js';
import { NO_TOMBSTONE, type TombstoneKind } from '../../tombstone.types.js';


/** A tombstone as the admin endpoints show it. */
export interface TombstoneView {
  id: string;
  scope: string;
  type: string;
  key: string;
  kind: TombstoneKind;
  /** Whether it covers every key that starts with `key` (a prefix tombstone). */
  prefix: boolean;
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

  private get table(): TombstoneTable {
    return coreProvider(this.moduleRef, TombstoneTable);
  }

  private get writer(): TombstoneWriter {
    return coreProvider(this.moduleRef, TombstoneWriter);
  }

  private get keys(): TombstoneKeys {
    return coreProvider(this.moduleRef, TombstoneKeys);
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
    if (query.keyPrefix !== undefined) add('starts_with(resource_key, ?)', this.keys.prefix(query.type, query.keyPrefix));
    if (query.prefix !== undefined) add('prefix = ?', query.prefix === 'true');
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
    const rows = (await this.table.dataSource.query(
      `SELECT * FROM tombstones ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT $${params.push(limit + 1)}`,
      params,
    )) as TombstoneRow[];
    const items = rows.slice(0, limit).map((row) => view(toTombstone(row)));
    return { items, nextCursor: rows.length > limit ? encodeCursor(items[items.length - 1].id) : null };
  }

  async get(id: string): Promise<TombstoneView> {
    const tombstone = await this.table.findById(id);
    if (!tombstone) throw missing(id);
    return view(tombstone);
  }

  async create(dto: CreateTombstoneDto, actor: string | null): Promise<TombstoneView> {
    const redirect = isRedirect(dto.kind);
    if (redirect && dto.target === undefined) throw invalid('target', `is required for a ${dto.kind} tombstone`);
    if (!redirect && dto.target !== undefined) throw invalid('target', `only moved and merged tombstones have one, not ${dto.kind}`);
    // Keys in their type's normal form (normalizeKeys); a target must be in it already.
    const key = normal(() => this.keys.key(dto.type, dto.key));
    if (redirect && dto.target === key) throw invalid('target', 'must differ from key');
    if (redirect && !isTargetKey(dto.target)) throw invalid('target', DOT_TARGET_REASON);
    if (redirect) normal(() => this.keys.target(dto.type, dto.target as string));
    // A prefix is checked in its normal form: a normaliser could change where it ends.
    if (dto.prefix === true) checkPrefix(dto.kind, key, redirect ? (dto.target as string) : null);
    this.checkAlternative(dto.kind, dto.alternative);
    const fields: TombstoneFields = {
      kind: dto.kind,
      target: redirect ? (dto.target as string) : null,
      permanent: dto.permanent ?? true,
      reason: dto.reason || null,
      alternative: dto.alternative ?? null,
      actor,
      occurredAt: null,
      expiresAt: dto.expiresAt ? parseDate(dto.expiresAt, 'expiresAt') : null,
      metadata: checkMetadata(dto.metadata),
      prefix: dto.prefix === true,
    };
    return view(await conflicts(() => this.writer.create(dto.scope ?? '', dto.type, key, fields)));
  }

  async update(id: string, dto: UpdateTombstoneDto, actor: string | null): Promise<TombstoneView> {
    const updated = await conflicts(() =>
      this.writer.update(id, (current): TombstoneFields => {
        const kind = dto.kind ?? current.kind;
        const redirect = isRedirect(kind);
        const target = redirect ? (dto.target ?? current.target) : null;
        if (redirect && target === null) throw invalid('target', `is required for a ${kind} tombstone`);
        if (!redirect && dto.target !== undefined) throw invalid('target', `only moved and merged tombstones have one, not ${kind}`);
        if (target === current.key) throw invalid('target', 'must differ from key');
        if (dto.target !== undefined && redirect && !isTargetKey(target)) throw invalid('target', DOT_TARGET_REASON);
        if (dto.target !== undefined && redirect) normal(() => this.keys.target(current.type, target as string));
        if (current.prefix) checkPrefix(kind, current.key, target);
        if (dto.alternative !== undefined && dto.alternative !== null) this.checkAlternative(kind, dto.alternative);
        return {
          kind,
          target,
          permanent: dto.permanent ?? current.permanent,
          reason: dto.reason === undefined ? current.reason : dto.reason || null,
          alternative: kind === 'deleted' ? (dto.alternative === undefined ? current.alternative : dto.alternative) : null,
          actor,
          occurredAt: null,
          expiresAt: dto.expiresAt === undefined ? current.expiresAt : dto.expiresAt === null ? null : parseDate(dto.expiresAt, 'expiresAt'),
          metadata: dto.metadata === undefined ? current.metadata : checkMetadata(dto.metadata),
        };
      }),
    );
    if (!updated) throw missing(id);
    return view(updated);
  }

  /** Deletes a tombstone: its key is live (or a plain 404) again. */
  async remove(id: string): Promise<void> {
    if (!(await this.writer.removeById(id))) throw missing(id);
  }

  async resolve(dto: ResolveTombstonesDto): Promise<{ results: TombstoneResolveResult[] }> {
    if (dto.keys.length > this.options.maxResolveKeys) throw invalid('keys', `at most ${this.options.maxResolveKeys} keys per request`);
    const scope = dto.scope ?? '';
    if (!isValidType(dto.type) || !isStorableScope(scope)) throw invalid('type', 'invalid');
    const stored = dto.keys.map((key) => (isStorableKey(key) ? normal(() => this.keys.lookup(dto.type, key), 'keys') : key));
    const resolutions = await this.table.lookupMany(dto.type, stored, scope);
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

/** A tombstone as the admin endpoints show it: the entity, dates as ISO 8601. */
export function view(tombstone: Tombstone): TombstoneView {
  return {
    id: tombstone.id,
    scope: tombstone.scope,
    type: tombstone.type,
    key: tombstone.key,
    kind: tombstone.kind,
    prefix: tombstone.prefix,
    target: tombstone.target,
    permanent: tombstone.permanent,
    reason: tombstone.reason,
    alternative: tombstone.alternative,
    actor: tombstone.actor,
    occurredAt: tombstone.occurredAt.toISOString(),
    expiresAt: tombstone.expiresAt?.toISOString() ?? null,
    metadata: tombstone.metadata,
    hitCount: tombstone.hitCount,
    lastHitAt: tombstone.lastHitAt?.toISOString() ?? null,
    createdAt: tombstone.createdAt.toISOString(),
    updatedAt: tombstone.updatedAt.toISOString(),
  };
}

/** A write the table refused as a conflict: the key has a tombstone, or the redirect would loop. */
async function conflicts<T>(write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (error) {
    if (error instanceof TombstoneExistsError) {
      throw new ConflictException({ statusCode: 409, error: 'Conflict', message: error.message, id: error.id });
    }
    if (error instanceof TombstoneCycleError) {
      const [key, target] = error.cycle;
      throw new ConflictException({
        statusCode: 409,
        error: 'Conflict',
        message: `A redirect from '${preview(key)}' to '${preview(target)}' would form a cycle: that key redirects back.`,
      });
    }
    if (error instanceof TombstoneValidationError) throw invalid(error.field, error.message);
    throw error;
  }
}

/** A key or target in its type's normal form: one that cannot be had is a 400 that names the field. */
function normal<T>(check: () => T, field?: string): T {
  try {
    return check();
  } catch (error) {
    if (error instanceof TombstoneValidationError) throw invalid(field ?? error.field, error.message.split('\n')[0]);
    throw error;
  }
}

/** What a prefix tombstone must be: its key (and a move's target) a prefix, its kind not merged. */
function checkPrefix(kind: TombstoneKind, key: string, target: string | null): void {
  if (!isPrefixKey(key)) throw invalid('key', PREFIX_KEY_REASON);
  if (kind === 'merged') throw invalid('kind', 'a prefix tombstone is deleted, hidden or moved, never merged');
  if (target !== null && !isPrefixKey(target)) throw invalid('target', `a moved prefix leads to a prefix: ${PREFIX_KEY_REASON}`);
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
