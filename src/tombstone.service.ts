import { Injectable } from '@nestjs/common';
import type { DataSource, EntityManager, EntityTarget, ObjectLiteral } from 'typeorm';
import { mergeRows, type TombstoneMergeOptions, type TombstoneMergeResult } from './capture/tombstone.merge.js';
import { TombstoneTable } from './table/tombstone.table.js';
import { type TombstoneFields, TombstoneWriter } from './table/tombstone.writer.js';
import { LIMITS } from './tombstone.constants.js';
import { TombstoneContext } from './tombstone.context.js';
import { TombstoneKeys } from './tombstone.keys.js';
import type { Tombstone } from './tombstone.entity.js';
import { TombstoneValidationError } from './tombstone.exceptions.js';
import type { TombstoneKind, TombstoneResolution } from './tombstone.types.js';
import { assertAlternative, assertDate, assertKey, assertMetadata, assertPrefix, assertScope, assertTarget, assertText, assertType } from './tombstone.validation.js';

export type { TombstoneMergeOptions, TombstoneMergeResult };

/** What the recording calls accept; each field has a default. */
export interface TombstoneWriteOptions {
  /** Tenant, region or site of the key. Default: `''` (unscoped). */
  scope?: string;
  /** Why it happened; shown with a 410. Default: the context's (`TombstoneContext`), else none. */
  reason?: string | null;
  /** Who did it (a user id, a service name); stored, never shown to clients. Default: the context's. */
  actor?: string | null;
  /** When it happened. Default: now (kept on an identical re-recording). */
  occurredAt?: Date;
  /** After this instant the tombstone no longer answers. Default: never. */
  expiresAt?: Date | null;
  /** Free-form JSON object stored with the tombstone. Default: `{}`. */
  metadata?: Record<string, unknown>;
  /**
   * Deletions only: a link offered instead (in the body and a `Link` header), a path or an
   * http(s) URL. Default: none.
   */
  alternative?: string | null;
  /** Moves and merges only: a permanent (301/308) or temporary (302/307) redirect. Default: `true`. */
  permanent?: boolean;
  /**
   * Deletions, hidings and moves: the key is a prefix (it ends with '/', at most 16 segments) and
   * the tombstone covers every key that starts with it. A moved prefix keeps the rest of the key
   * (its target is a prefix too): `docs/v1/` → `docs/v2/` sends `docs/v1/guide/intro` to
   * `docs/v2/guide/intro`. A key's own tombstone beats a prefix's, the longest prefix wins, and a
   * resource that is found is answered as found. See docs/recording.md. Default: `false`.
   *
   * @example
   * await tombstones.recordMove('page', 'docs/v1/', 'docs/v2/', { prefix: true });
   */
  prefix?: boolean;
  /**
   * The caller's transaction. Pass it so that the change and its tombstone commit or roll back
   * together. Default: a transaction of the module's own.
   */
  manager?: EntityManager;
}

/**
 * Records what happened to resources, and answers what a lookup of a key finds.
 *
 * @example
 * await dataSource.transaction(async (manager) => {
 *   await manager.delete(Article, { slug });
 *   await tombstones.recordDeletion('article', slug, { reason: 'Expired', manager });
 * });
 */
@Injectable()
export class TombstoneService {
  /** @internal Nest creates it: inject it. */
  constructor(
    private readonly table: TombstoneTable,
    private readonly writer: TombstoneWriter,
    private readonly keys: TombstoneKeys,
  ) {}

  /** The DataSource that holds the tombstone table. */
  get dataSource(): DataSource {
    return this.table.dataSource;
  }

  /** Records that a key was deleted for good: it answers 410 Gone. */
  async recordDeletion(type: string, key: string, options: TombstoneWriteOptions = {}): Promise<Tombstone> {
    const fields = this.fields('deleted', options);
    fields.alternative = assertAlternative(options.alternative);
    return this.writer.put(options.manager, assertScope(options.scope ?? ''), assertType(type), this.recordedKey(type, key, fields, 'key'), fields);
  }

  /**
   * Records that a key is hidden (soft-deleted, masked): it answers a 404 that cannot be told
   * apart from a key that never existed.
   */
  async recordHidden(type: string, key: string, options: TombstoneWriteOptions = {}): Promise<Tombstone> {
    const fields = this.fields('hidden', options);
    return this.writer.put(options.manager, assertScope(options.scope ?? ''), assertType(type), this.recordedKey(type, key, fields, 'key'), fields);
  }

  /**
   * Records that the resource at `from` now lives at `to`. Tombstones that pointed at `from`
   * now point at `to` (chains are collapsed as they are written), and `to` loses any tombstone
   * of its own: it is live again. Moving back to a former key is therefore just another move.
   */
  async recordMove(type: string, from: string, to: string, options: TombstoneWriteOptions = {}): Promise<Tombstone> {
    const [tombstone] = await this.recordRedirects(type, [{ from, to }], 'moved', options);
    return tombstone;
  }

  /**
   * Records several moves at once, atomically. The batch states where each key lives now: a key
   * that is both a source and a target is an intermediate hop (`a→b, b→c` means `a` and `b` now
   * live at `c`). A batch whose moves form a cycle is rejected with `TombstoneCycleError`.
   */
  async recordMoves(type: string, moves: readonly { from: string; to: string }[], options: TombstoneWriteOptions = {}): Promise<Tombstone[]> {
    return this.recordRedirects(type, moves, 'moved', options);
  }

  /** Records that every key of `sources` was merged into `into`; each answers a redirect to it. */
  async recordMerge(type: string, sources: readonly string[], into: string, options: TombstoneWriteOptions = {}): Promise<Tombstone[]> {
    if (!Array.isArray(sources) || sources.length === 0) {
      throw new TombstoneValidationError('sources', 'A merge needs at least one source key.');
    }
    this.keys.target(assertType(type), assertTarget(into, 'into'), 'into');
    return this.recordRedirects(type, [...new Set(sources)].map((from) => ({ from, to: into })), 'merged', options);
  }

  /**
   * Merges rows of a `@TombstoneTracked` entity into one, in one transaction: locks them, lets
   * `repoint` move what refers to the merged rows, deletes them, and records a `merged`
   * tombstone from each of their keys to the survivor's key (for every tracked key). Links to a
   * merged row answer a redirect to the survivor from then on.
   *
   * @example
   * await tombstones.merge(User, {
   *   into: 1,
   *   from: [2, 3],
   *   repoint: (manager, { survivor, merged }) =>
   *     manager.update(Order, { userId: In(merged.map((u) => u.id)) }, { userId: survivor.id }),
   * });
   */
  async merge<T extends ObjectLiteral>(entity: EntityTarget<T>, options: TombstoneMergeOptions<T>): Promise<TombstoneMergeResult<T>> {
    return mergeRows(this, this.table.dataSource.manager, entity, options);
  }

  /** Removes a key's tombstone: the key is live again. Answers whether there was one. */
  async restore(type: string, key: string, options: Pick<TombstoneWriteOptions, 'scope' | 'manager'> = {}): Promise<boolean> {
    return this.writer.remove(options.manager, assertScope(options.scope ?? ''), assertType(type), this.key(type, key));
  }

  /** The stored tombstone of a key, expired or not; `null` when it has none. */
  async find(type: string, key: string, options: Pick<TombstoneWriteOptions, 'scope' | 'manager'> = {}): Promise<Tombstone | null> {
    return this.table.find(assertScope(options.scope ?? ''), assertType(type), this.key(type, key), options.manager);
  }

  /**
   * What a request for (scope, type, key) is answered, chains followed to their end, in one
   * database round trip. Keys that cannot have a tombstone (too long, NUL bytes) answer `none`
   * without a query. Database errors are thrown: the HTTP layer turns them into a plain 404. A
   * type with `normalizeKeys` looks up the key's normal form (a normaliser that fails throws a
   * `TombstoneValidationError`).
   */
  async resolve(type: string, key: string, scope = ''): Promise<TombstoneResolution> {
    return (await this.table.lookup(type, this.keys.lookup(type, key), scope)).resolution;
  }

  /**
   * `resolve()` for many keys of one (scope, type), in one round trip; the answers are in the
   * order of the keys. Keys that cannot have a tombstone answer `none`.
   */
  async resolveMany(type: string, keys: readonly string[], scope = ''): Promise<TombstoneResolution[]> {
    return this.table.lookupMany(type, Array.isArray(keys) ? keys.map((key) => this.keys.lookup(type, key)) : keys, scope);
  }

  private async recordRedirects(
    type: string,
    moves: readonly { from: string; to: string }[],
    kind: 'moved' | 'merged',
    options: TombstoneWriteOptions,
  ): Promise<Tombstone[]> {
    assertType(type);
    if (!Array.isArray(moves) || moves.length === 0) {
      throw new TombstoneValidationError('moves', 'Record at least one move.');
    }
    const fields = this.fields(kind, options);
    const checked = moves.map((move) => {
      if (typeof move !== 'object' || move === null) {
        throw new TombstoneValidationError('moves', 'Each move must be an object { from, to }.');
      }
      return { from: this.recordedKey(type, move.from, fields, 'from'), to: recorded(this.keys.target(type, assertTarget(move.to, 'to'), 'to'), fields, 'to') };
    });
    const permanent = options.permanent ?? true;
    if (typeof permanent !== 'boolean') {
      throw new TombstoneValidationError('permanent', 'permanent must be true or false.');
    }
    fields.permanent = permanent;
    return this.writer.redirect(options.manager, assertScope(options.scope ?? ''), type, checked, fields);
  }

  /** A key to write, checked, in its type's normal form (`normalizeKeys`). */
  private key(type: string, key: unknown, field = 'key'): string {
    return this.keys.key(type, assertKey(key, field), field);
  }

  /** A key a tombstone is recorded for: in its normal form, then checked as a prefix when it is one. */
  private recordedKey(type: string, key: unknown, fields: TombstoneFields, field: string): string {
    return recorded(this.key(type, key, field), fields, field);
  }

  /** The fields every recording call shares, checked; unnamed actor and reason come from the context. */
  private fields(kind: TombstoneKind, options: TombstoneWriteOptions): TombstoneFields {
    if (typeof options !== 'object' || options === null) {
      throw new TombstoneValidationError('options', 'Recording options must be an object.');
    }
    // One options type for every call: what only another kind of tombstone has is refused, not ignored.
    if (kind !== 'deleted' && options.alternative !== undefined && options.alternative !== null) {
      throw new TombstoneValidationError('alternative', 'Only deletions offer an alternative.');
    }
    if (kind !== 'moved' && kind !== 'merged' && options.permanent !== undefined) {
      throw new TombstoneValidationError('permanent', 'Only moves and merges are permanent or temporary redirects.');
    }
    if (options.prefix !== undefined && typeof options.prefix !== 'boolean') {
      throw new TombstoneValidationError('prefix', 'prefix must be true or false.');
    }
    if (kind === 'merged' && options.prefix === true) {
      throw new TombstoneValidationError('prefix', 'A merge is of keys, never of prefixes.', ['Record a move of the prefix instead.']);
    }
    const context = TombstoneContext.current();
    return {
      kind,
      target: null,
      permanent: true,
      reason: options.reason === undefined ? context.reason : assertText(options.reason, 'reason', LIMITS.reasonLength),
      actor: options.actor === undefined ? context.actor : assertText(options.actor, 'actor', LIMITS.actorLength),
      occurredAt: assertDate(options.occurredAt, 'occurredAt'),
      expiresAt: assertDate(options.expiresAt, 'expiresAt'),
      alternative: null,
      metadata: assertMetadata(options.metadata),
      prefix: options.prefix === true,
    };
  }
}

/** A recorded key: any key, or with `prefix` a prefix (see `assertPrefix()`). */
/** A prefix tombstone's key (or target) ends at a segment boundary: checked after normalisation, which could change that. */
function recorded(key: string, fields: TombstoneFields, field: string): string {
  return fields.prefix === true ? assertPrefix(key, field) : key;
}
