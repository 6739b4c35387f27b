import { Inject, Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { getDataSourceToken } from '@nestjs/typeorm';
import type {
  DataSource,
  EntityManager,
  EntitySubscriberInterface,
  EntityTarget,
  FindOptionsWhere,
  ObjectLiteral,
  QueryRunner,
  TransactionCommitEvent,
  TransactionRollbackEvent,
} from 'typeorm';
import { captureProblems, trackedDeclarations } from './capture/tombstone.capture.js';
import { LIMITS, TOMBSTONE_OPTIONS } from './tombstone.constants.js';
import { Tombstone } from './tombstone.entity.js';
import {
  TombstoneConfigurationError,
  TombstoneCycleError,
  TombstoneSelfTargetError,
  TombstoneValidationError,
  preview,
} from './tombstone.exceptions.js';
import { TombstoneContext, TombstoneContextSubscriber } from './tombstone.context.js';
import type { ResolvedTombstoneOptions } from './tombstone.options.js';
import {
  assertAlternative,
  assertDate,
  assertKey,
  assertMetadata,
  assertScope,
  assertText,
  assertType,
  isStorableKey,
  isStorableScope,
  isValidType,
} from './tombstone.validation.js';
import { NO_TOMBSTONE, type TombstoneChange, type TombstoneKind, type TombstoneLookupResult, type TombstoneResolution } from './tombstone.types.js';

/** What every recording call accepts. */
export interface TombstoneWriteOptions {
  /** Tenant, region or site of the key. Default: `''` (unscoped). */
  scope?: string;
  /** Why it happened; shown with a 410. */
  reason?: string | null;
  /** Who did it (a user id, a service name); stored, never shown to clients. */
  actor?: string | null;
  /** When it happened. Default: now (kept on an identical re-recording). */
  occurredAt?: Date;
  /** After this instant the tombstone no longer answers. Default: never. */
  expiresAt?: Date | null;
  /** Free-form JSON object stored with the tombstone. */
  metadata?: Record<string, unknown>;
  /**
   * The caller's transaction. Pass it so that the change and its tombstone commit or roll back
   * together. Default: a transaction of the module's own.
   */
  manager?: EntityManager;
}

export interface TombstoneDeletionOptions extends TombstoneWriteOptions {
  /** A link offered instead (in the body and a `Link` header): a path, or an http(s) URL. */
  alternative?: string | null;
}

export interface TombstoneMoveOptions extends TombstoneWriteOptions {
  /** Permanent (301/308) or temporary (302/307) redirect. Default: `true`. */
  permanent?: boolean;
}

/** What `merge()` is told: the rows to fold into one, and how to re-point what refers to them. */
export interface TombstoneMergeOptions<T> {
  /** Primary key of the row that survives (an object for composite keys). */
  into: unknown;
  /** Primary keys of the rows merged into it; they are deleted. */
  from: readonly unknown[];
  /**
   * Re-points what refers to the merged rows (orders, comments) to the survivor, in the merge's
   * transaction, before the merged rows are deleted.
   */
  repoint?: (manager: EntityManager, rows: { survivor: T; merged: T[] }) => unknown;
  reason?: string | null;
  actor?: string | null;
  /** The caller's transaction; default: a transaction of the module's own. */
  manager?: EntityManager;
}

export interface TombstoneMergeResult<T> {
  survivor: T;
  /** The merged rows as they were before they were deleted. */
  merged: T[];
  /** The `merged` tombstones written, one per tracked key of each merged row. */
  tombstones: Tombstone[];
}

export interface TombstoneMove {
  from: string;
  to: string;
}



const NO_LOOKUP: TombstoneLookupResult = Object.freeze({ resolution: NO_TOMBSTONE, via: null, validUntil: null, cacheable: true });


// One round trip whatever the chain: writes keep every target a key that has not moved, so the
// row and its target's own tombstone (deleted? hidden?) are all there is to read.
const LOOKUP_COLUMNS = `
  t.id, t.kind, t.target_key, t.permanent, t.reason, t.alternative, t.occurred_at, t.expires_at,
  f.kind AS final_kind, f.target_key AS final_target_key, f.permanent AS final_permanent,
  f.reason AS final_reason, f.alternative AS final_alternative, f.occurred_at AS final_occurred_at,
  f.expires_at AS final_expires_at`;
const FINAL_JOIN = `
  LEFT JOIN tombstones f
    ON f.scope = t.scope AND f.resource_type = t.resource_type AND f.resource_key = t.target_key
   AND (f.expires_at IS NULL OR f.expires_at > now())`;
const PREPARED_LOOKUP = 'nestjs_tombstones_lookup_1';
const LOOKUP_SQL = `
  SELECT ${LOOKUP_COLUMNS}
    FROM tombstones t ${FINAL_JOIN}
   WHERE t.scope = $1 AND t.resource_type = $2 AND t.resource_key = $3
     AND (t.expires_at IS NULL OR t.expires_at > now())`;
// The same lookup for many keys at once, still one round trip.
const LOOKUP_MANY_SQL = `
  SELECT k.n, ${LOOKUP_COLUMNS}
    FROM unnest($3::text[]) WITH ORDINALITY AS k(key, n)
    JOIN tombstones t
      ON t.scope = $1 AND t.resource_type = $2 AND t.resource_key = k.key
     AND (t.expires_at IS NULL OR t.expires_at > now()) ${FINAL_JOIN}`;

// An identical re-recording keeps the original occurred_at (and the hit count) unless the
// caller names a new one: recording is idempotent.
const UPSERT_COLUMNS = `(scope, resource_type, resource_key, kind, target_key, permanent, reason,
                         alternative, actor, occurred_at, expires_at, metadata)`;
const UPSERT_CONFLICT = `
  ON CONFLICT (scope, resource_type, resource_key) DO UPDATE SET
    occurred_at = CASE
      WHEN $13::boolean THEN EXCLUDED.occurred_at
      WHEN tombstones.kind = EXCLUDED.kind AND tombstones.target_key IS NOT DISTINCT FROM EXCLUDED.target_key
        THEN tombstones.occurred_at
      ELSE EXCLUDED.occurred_at END,
    kind = EXCLUDED.kind, target_key = EXCLUDED.target_key, permanent = EXCLUDED.permanent,
    reason = EXCLUDED.reason, alternative = EXCLUDED.alternative, actor = EXCLUDED.actor,
    expires_at = EXCLUDED.expires_at, metadata = EXCLUDED.metadata, updated_at = now()
  RETURNING *`;

const UPSERT_ONE_SQL = `
  INSERT INTO tombstones ${UPSERT_COLUMNS}
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, COALESCE($10, now()), $11, $12::jsonb)
  ${UPSERT_CONFLICT}`;

const UPSERT_MANY_SQL = `
  INSERT INTO tombstones ${UPSERT_COLUMNS}
  SELECT $1, $2, m.source, $4, m.target, $6, $7, $8, $9, COALESCE($10, now()), $11, $12::jsonb
    FROM unnest($3::text[], $5::text[]) AS m(source, target)
  ${UPSERT_CONFLICT}`;

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
export class TombstoneService implements OnModuleInit {
  private source?: DataSource;

  constructor(
    @Inject(TOMBSTONE_OPTIONS) private readonly options: ResolvedTombstoneOptions,
    private readonly moduleRef: ModuleRef,
  ) {}

  private readonly logger = new Logger('TombstoneModule');

  async onModuleInit(): Promise<void> {
    const source = (this.source = this.locateDataSource());
    if (!source.subscribers.some((s) => s instanceof TombstoneContextSubscriber)) {
      source.subscribers.push(new TombstoneContextSubscriber());
    }
    source.subscribers.push(this.commits);
    if (this.options.captureCheck === 'off' || !source.isInitialized) return;
    const problems = await captureProblems(source);
    if (problems.length === 0) return;
    const error = new TombstoneConfigurationError(`TombstoneModule: automatic capture is not in place.\n${problems.map((p) => `- ${p}`).join('\n')}`, [
      'Add a migration that calls installTombstoneCapture(queryRunner, Entity) for each entity above, and run it (after TOMBSTONE_MIGRATIONS).',
      'After changing an entity\'s @TombstoneTracked declarations, add a migration that calls installTombstoneCapture again.',
      "To start anyway, set the module's captureCheck option to 'warn' or 'off'.",
    ]);
    if (this.options.captureCheck === 'error') throw error;
    this.logger.warn(error.message);
  }

  /** The DataSource that holds the tombstone table. */
  get dataSource(): DataSource {
    return (this.source ??= this.locateDataSource());
  }

  /** The tombstone table's name as `regclass` reads it, schema and table each quoted. */
  get qualifiedTable(): string {
    const metadata = this.dataSource.getMetadata(Tombstone);
    return [metadata.schema, metadata.tableName]
      .filter(Boolean)
      .map((part) => `"${String(part).replace(/"/g, '""')}"`)
      .join('.');
  }

  /** Records that a key was deleted for good: it answers 410 Gone. */
  async recordDeletion(type: string, key: string, options: TombstoneDeletionOptions = {}): Promise<Tombstone> {
    const alternative = assertAlternative(options.alternative);
    return this.upsertOne(type, key, 'deleted', null, true, alternative, options);
  }

  /**
   * Records that a key is hidden (soft-deleted, masked): it answers a 404 that cannot be told
   * apart from a key that never existed.
   */
  async recordHidden(type: string, key: string, options: TombstoneWriteOptions = {}): Promise<Tombstone> {
    return this.upsertOne(type, key, 'hidden', null, true, null, options);
  }

  /**
   * Records that the resource at `from` now lives at `to`. Tombstones that pointed at `from`
   * now point at `to` (chains are collapsed as they are written), and `to` loses any tombstone
   * of its own: it is live again. Moving back to a former key is therefore just another move.
   */
  async recordMove(type: string, from: string, to: string, options: TombstoneMoveOptions = {}): Promise<Tombstone> {
    const [tombstone] = await this.recordRedirects(type, [{ from, to }], 'moved', options);
    return tombstone;
  }

  /**
   * Records several moves at once, atomically. The batch states where each key lives now: a key
   * that is both a source and a target is an intermediate hop (`a→b, b→c` means `a` and `b` now
   * live at `c`). A batch whose moves form a cycle is rejected with `TombstoneCycleError`.
   */
  async recordMoves(type: string, moves: readonly TombstoneMove[], options: TombstoneMoveOptions = {}): Promise<Tombstone[]> {
    return this.recordRedirects(type, moves, 'moved', options);
  }

  /** Records that every key of `sources` was merged into `into`; each answers a redirect to it. */
  async recordMerge(type: string, sources: readonly string[], into: string, options: TombstoneMoveOptions = {}): Promise<Tombstone[]> {
    if (!Array.isArray(sources) || sources.length === 0) {
      throw new TombstoneValidationError('sources', 'A merge needs at least one source key.');
    }
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
    if (typeof options !== 'object' || options === null) {
      throw new TombstoneValidationError('options', 'merge() needs { into, from }.');
    }
    if (!Array.isArray(options.from) || options.from.length === 0) {
      throw new TombstoneValidationError('from', 'A merge needs at least one row to merge.');
    }
    if (options.repoint !== undefined && typeof options.repoint !== 'function') {
      throw new TombstoneValidationError('repoint', 'repoint must be a function (manager, { survivor, merged }).');
    }
    const actor = assertText(options.actor, 'actor', LIMITS.actorLength);
    const reason = assertText(options.reason, 'reason', LIMITS.reasonLength);
    // Like the recording calls: what the call names (null included) wins over the context.
    const named = { ...(options.actor === undefined ? {} : { actor }), ...(options.reason === undefined ? {} : { reason }) };
    const run = (manager: EntityManager) =>
      TombstoneContext.run(named, async () => {
        const metadata = manager.connection.getMetadata(entity);
        const declarations = trackedDeclarations(metadata.target);
        if (declarations.length === 0) {
          throw new TombstoneConfigurationError(`merge(): ${metadata.name} is not @TombstoneTracked.`, [
            `Add @TombstoneTracked({ type, key }) to ${metadata.name}, or record with recordMerge().`,
          ]);
        }
        const repository = manager.getRepository(entity);
        const where = (id: unknown, field: string): FindOptionsWhere<T> => {
          if (typeof id === 'object' && id !== null) return id as FindOptionsWhere<T>;
          if (metadata.primaryColumns.length !== 1 || (typeof id !== 'string' && typeof id !== 'number' && typeof id !== 'bigint')) {
            throw new TombstoneValidationError(field, `${metadata.name} rows are named by an object of their primary key columns.`);
          }
          return { [metadata.primaryColumns[0].propertyName]: id } as FindOptionsWhere<T>;
        };
        const lock = { mode: 'pessimistic_write' } as const;
        const survivor = await repository.findOne({ where: where(options.into, 'into'), lock });
        if (!survivor) throw new TombstoneValidationError('into', `No ${metadata.name} row matches the survivor ${describe(options.into)}.`);
        const survivorId = JSON.stringify(metadata.getEntityIdMap(survivor));
        const merged: T[] = [];
        for (const id of options.from) {
          // A soft-deleted duplicate can be merged too: its links then lead to the survivor.
          const row = await repository.findOne({ where: where(id, 'from'), lock, withDeleted: true });
          if (!row) throw new TombstoneValidationError('from', `No ${metadata.name} row matches ${describe(id)}.`);
          const rowId = JSON.stringify(metadata.getEntityIdMap(row));
          if (rowId === survivorId) throw new TombstoneValidationError('from', 'A row cannot be merged into itself.');
          if (!merged.some((m) => JSON.stringify(metadata.getEntityIdMap(m)) === rowId)) merged.push(row);
        }
        await options.repoint?.(manager, { survivor, merged });
        const before = merged.map((row) => ({ ...row }) as T);
        await repository.remove(merged);

        const tombstones: Tombstone[] = [];
        for (const declaration of declarations) {
          const target = keyValue(survivor[declaration.key]);
          if (target === null) {
            throw new TombstoneValidationError('into', `The survivor has no ${declaration.key} to redirect ${declaration.type} keys to.`);
          }
          const scope = declaration.scope === undefined ? '' : (keyValue(survivor[declaration.scope]) ?? '');
          const sources: string[] = [];
          for (const row of before) {
            const rowScope = declaration.scope === undefined ? '' : (keyValue(row[declaration.scope]) ?? '');
            if (rowScope !== scope) {
              throw new TombstoneValidationError('from', `Rows of different ${declaration.scope} values cannot be merged.`);
            }
            const key = keyValue(row[declaration.key]);
            if (key !== null && key !== target) sources.push(key);
          }
          if (sources.length > 0) {
            tombstones.push(
              ...(await this.recordMerge(declaration.type, sources, target, { scope, manager, permanent: declaration.permanent })),
            );
          }
          // A merged row that shared the survivor's key left a tombstone on it: the key is live.
          if (before.some((row) => keyValue(row[declaration.key]) === target)) {
            await this.restore(declaration.type, target, { scope, manager });
          }
        }
        return { survivor, merged: before, tombstones };
      });
    return options.manager ? options.manager.transaction(run) : this.dataSource.transaction(run);
  }

  /** Removes a key's tombstone: the key is live again. Answers whether there was one. */
  async restore(type: string, key: string, options: Pick<TombstoneWriteOptions, 'scope' | 'manager'> = {}): Promise<boolean> {
    const scope = assertScope(options.scope ?? '');
    const manager = options.manager ?? this.dataSource.manager;
    const deleted = await rows(manager, `DELETE FROM tombstones WHERE scope = $1 AND resource_type = $2 AND resource_key = $3 RETURNING id`, [
      scope,
      assertType(type),
      assertKey(key),
    ]);
    if (deleted.length > 0) this.changed(manager, scope, type, [], [key]);
    return deleted.length > 0;
  }

  /** The stored tombstone of a key, expired or not; `null` when it has none. */
  async find(type: string, key: string, options: Pick<TombstoneWriteOptions, 'scope' | 'manager'> = {}): Promise<Tombstone | null> {
    const scope = assertScope(options.scope ?? '');
    const manager = options.manager ?? this.dataSource.manager;
    const [row] = await rows(manager, `SELECT * FROM tombstones WHERE scope = $1 AND resource_type = $2 AND resource_key = $3`, [
      scope,
      assertType(type),
      assertKey(key),
    ]);
    return row ? toTombstone(row) : null;
  }

  /**
   * What a request for (scope, type, key) is answered, chains followed to their end, in one
   * database round trip. Keys that cannot have a tombstone (too long, NUL bytes) answer `none`
   * without a query. Database errors are thrown: the HTTP layer turns them into a plain 404.
   */
  async resolve(type: string, key: string, scope = ''): Promise<TombstoneResolution> {
    return (await this.lookup(type, key, scope)).resolution;
  }

  /**
   * `resolve()` with what a cache needs to keep the answer: the key it was read through and
   * when it stops being true. Internal (`TombstoneLookup`).
   */
  async lookup(type: string, key: string, scope = ''): Promise<TombstoneLookupResult> {
    if (!isValidType(type) || !isStorableKey(key) || !isStorableScope(scope)) return NO_LOOKUP;
    const [row] = await this.lookupRows([scope, type, key]);
    if (!row) return NO_LOOKUP;
    const redirect = row.kind === 'moved' || row.kind === 'merged';
    const expiries = [row.expires_at, redirect ? row.final_expires_at : null].filter((d): d is Date => d !== null);
    return {
      resolution: interpret(row),
      via: redirect ? row.target_key : null,
      validUntil: expiries.length === 0 ? null : Math.min(...expiries.map((d) => d.getTime())),
      // A chain that was not collapsed (edited by hand) depends on more than one other key.
      cacheable: !(redirect && (row.final_kind === 'moved' || row.final_kind === 'merged')),
    };
  }

  /**
   * The lookup, as a named prepared statement when it can be: PostgreSQL then plans it once per
   * connection instead of at every lookup (planning is most of a cold lookup's time). Logged
   * through the DataSource's logger like any TypeORM query.
   */
  private async lookupRows(params: unknown[]): Promise<LookupRow[]> {
    const pool = (this.dataSource.driver as unknown as { master?: PgPool }).master;
    if (!this.options.preparedStatements || this.unprepared || typeof pool?.connect !== 'function') {
      return (await this.dataSource.query(LOOKUP_SQL, params)) as LookupRow[];
    }
    const logger = this.dataSource.logger;
    logger.logQuery(LOOKUP_SQL, params);
    const client = await pool.connect();
    let broken: Error | undefined;
    try {
      return (await client.query({ name: PREPARED_LOOKUP, text: LOOKUP_SQL, values: params })).rows as LookupRow[];
    } catch (error) {
      logger.logQueryError(error as Error, LOOKUP_SQL, params);
      const code = (error as { code?: unknown }).code;
      // Not a server's answer (the connection broke), or a prepared statement this connection
      // cannot use any more (the table changed under it): that connection is not reused.
      if (typeof code !== 'string' || code === '0A000' || code === '26000') broken = error as Error;
      if (code === '26000' && !this.unprepared) {
        // "prepared statement does not exist": a pooler that does not keep them (PgBouncer in
        // transaction mode before 1.21). Plain queries from now on.
        this.unprepared = true;
        this.logger.warn('Tombstone lookups: the connection does not keep prepared statements (a pooler?); using plain queries.');
      }
      throw error;
    } finally {
      client.release(broken);
    }
  }

  private unprepared = false;

  /**
   * Called with the keys each write of this service changed, right after the write: the
   * lookup cache of this instance drops them without waiting for the database's notification.
   * Internal.
   */
  onChange?: (change: TombstoneChange) => void;

  /**
   * Tells the cache about a write: at once, and again when the caller's transaction commits (a
   * lookup between the two may have read the row as it was before the commit).
   */
  private changed(manager: EntityManager, scope: string, type: string, listed: readonly string[], unlisted: readonly string[]): void {
    if (!this.onChange) return;
    const change = { scope, type, listed, unlisted };
    const runner = manager.queryRunner;
    if (runner?.isTransactionActive) this.commits.defer(runner, change);
    this.announce(change);
  }

  private announce(change: TombstoneChange): void {
    try {
      this.onChange?.(change);
    } catch (error) {
      this.logger.error(`Tombstone cache invalidation failed: ${(error as Error)?.message}`, (error as Error)?.stack);
    }
  }

  private readonly commits = new TombstoneCommitSubscriber((change) => this.announce(change));

  /**
   * `resolve()` for many keys of one (scope, type), in one round trip; the answers are in the
   * order of the keys. Keys that cannot have a tombstone answer `none`.
   */
  async resolveMany(type: string, keys: readonly string[], scope = ''): Promise<TombstoneResolution[]> {
    const answers: TombstoneResolution[] = keys.map(() => NO_TOMBSTONE);
    if (!isValidType(type) || !isStorableScope(scope)) return answers;
    const positions = keys.flatMap((key, i) => (isStorableKey(key) ? [i] : []));
    if (positions.length === 0) return answers;
    const rows = (await this.dataSource.query(LOOKUP_MANY_SQL, [scope, type, positions.map((i) => keys[i])])) as (LookupRow & {
      n: string;
    })[];
    for (const row of rows) answers[positions[Number(row.n) - 1]] = interpret(row);
    return answers;
  }

  private async upsertOne(
    type: string,
    key: string,
    kind: TombstoneKind,
    target: string | null,
    permanent: boolean,
    alternative: string | null,
    options: TombstoneWriteOptions,
  ): Promise<Tombstone> {
    const common = this.commonParams(options);
    const manager = options.manager ?? this.dataSource.manager;
    const [row] = await rows(manager, UPSERT_ONE_SQL, [
      common.scope,
      assertType(type),
      assertKey(key),
      kind,
      target,
      permanent,
      common.reason,
      alternative,
      common.actor,
      common.occurredAt,
      common.expiresAt,
      common.metadata,
      common.explicitOccurredAt,
    ]);
    this.changed(manager, common.scope, type, kind === 'hidden' ? [] : [key], kind === 'hidden' ? [key] : []);
    return toTombstone(row);
  }

  private async recordRedirects(
    type: string,
    moves: readonly TombstoneMove[],
    kind: 'moved' | 'merged',
    options: TombstoneMoveOptions,
  ): Promise<Tombstone[]> {
    assertType(type);
    if (!Array.isArray(moves) || moves.length === 0) {
      throw new TombstoneValidationError('moves', 'Record at least one move.');
    }
    const permanent = options.permanent ?? true;
    if (typeof permanent !== 'boolean') {
      throw new TombstoneValidationError('permanent', 'permanent must be true or false.');
    }
    const finals = finalTargets(type, moves);
    const common = this.commonParams(options);
    const sources = [...finals.keys()];
    const targets = sources.map((source) => finals.get(source) as string);
    const manager = options.manager ?? this.dataSource.manager;

    const written = await manager.transaction(async (tx) => {
      // Serialises chain edits of one (scope, type): two concurrent moves must not each see the
      // other's key as live and leave a chain or a cycle behind.
      await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [
        `nestjs-tombstones\u001f${common.scope}\u001f${type}`,
      ]);
      // A key moved onto is live again.
      await tx.query(`DELETE FROM tombstones WHERE scope = $1 AND resource_type = $2 AND resource_key = ANY($3::text[])`, [
        common.scope,
        type,
        [...new Set(targets)],
      ]);
      // Whatever pointed at a source now points where the source went.
      await tx.query(
        `UPDATE tombstones t SET target_key = m.target, updated_at = now()
           FROM unnest($3::text[], $4::text[]) AS m(source, target)
          WHERE t.scope = $1 AND t.resource_type = $2 AND t.target_key = m.source`,
        [common.scope, type, sources, targets],
      );
      const upserted = await rows(tx, UPSERT_MANY_SQL, [
        common.scope,
        type,
        sources,
        kind,
        targets,
        permanent,
        common.reason,
        null,
        common.actor,
        common.occurredAt,
        common.expiresAt,
        common.metadata,
        common.explicitOccurredAt,
      ]);
      return upserted.map(toTombstone);
    });
    this.changed(manager, common.scope, type, sources, [...new Set(targets)]);
    return written;
  }

  private commonParams(options: TombstoneWriteOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new TombstoneValidationError('options', 'Recording options must be an object.');
    }
    const occurredAt = assertDate(options.occurredAt, 'occurredAt');
    // Not named by the call: whatever the context says (the request's actor, a job's reason).
    const context = TombstoneContext.current();
    return {
      scope: assertScope(options.scope ?? ''),
      reason: options.reason === undefined ? context.reason : assertText(options.reason, 'reason', LIMITS.reasonLength),
      actor: options.actor === undefined ? context.actor : assertText(options.actor, 'actor', LIMITS.actorLength),
      occurredAt,
      explicitOccurredAt: occurredAt !== null,
      expiresAt: assertDate(options.expiresAt, 'expiresAt'),
      metadata: JSON.stringify(assertMetadata(options.metadata)),
    };
  }

  private locateDataSource(): DataSource {
    const name = this.options.dataSource;
    let dataSource: DataSource;
    try {
      dataSource = this.moduleRef.get<DataSource>(getDataSourceToken(name) as string, { strict: false });
    } catch {
      throw new TombstoneConfigurationError(
        `TombstoneModule: no TypeORM DataSource ${name ? `named '${name}'` : '(default)'} was found.`,
        [
          'Import TypeOrmModule.forRoot() (or forRootAsync()) in your application module.',
          "If your DataSource has a name, pass the same name as TombstoneModule's `dataSource` option.",
        ],
      );
    }
    if (dataSource.isInitialized && !dataSource.hasMetadata(Tombstone)) {
      throw new TombstoneConfigurationError(
        `TombstoneModule: the Tombstone entity is not registered in the DataSource ${name ? `'${name}'` : '(default)'}.`,
        [
          'Add ...TOMBSTONE_ENTITIES to the `entities` of that DataSource.',
          'Add ...TOMBSTONE_MIGRATIONS to its `migrations` and run them.',
        ],
      );
    }
    return dataSource;
  }
}

/** Changes written in a transaction, told again once its outermost level commits. */
class TombstoneCommitSubscriber implements EntitySubscriberInterface {
  private readonly pending = new WeakMap<QueryRunner, TombstoneChange[]>();

  constructor(private readonly announce: (change: TombstoneChange) => void) {}

  defer(runner: QueryRunner, change: TombstoneChange): void {
    const changes = this.pending.get(runner);
    if (changes) changes.push(change);
    else this.pending.set(runner, [change]);
  }

  afterTransactionCommit(event: TransactionCommitEvent): void {
    const changes = this.pending.get(event.queryRunner);
    if (!changes || event.queryRunner.isTransactionActive) return;
    this.pending.delete(event.queryRunner);
    for (const change of changes) this.announce(change);
  }

  afterTransactionRollback(event: TransactionRollbackEvent): void {
    if (!event.queryRunner.isTransactionActive) this.pending.delete(event.queryRunner);
  }
}

function describe(id: unknown): string {
  try {
    return preview(typeof id === 'object' && id !== null ? JSON.stringify(id) : String(id));
  } catch {
    return '(unprintable)';
  }
}

/** A key column's value as a tombstone key: what the triggers compute with `::text`. */
function keyValue(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  return typeof value === 'string' ? value : String(value);
}

/** Validates a batch and maps each source to the key it finally lives at. */
function finalTargets(type: string, moves: readonly TombstoneMove[]): Map<string, string> {
  const next = new Map<string, string>();
  for (const move of moves) {
    if (typeof move !== 'object' || move === null) {
      throw new TombstoneValidationError('moves', 'Each move must be an object { from, to }.');
    }
    const from = assertKey(move.from, 'from');
    const to = assertKey(move.to, 'to');
    if (from === to) throw new TombstoneSelfTargetError(type, from);
    const earlier = next.get(from);
    if (earlier !== undefined && earlier !== to) {
      throw new TombstoneValidationError('moves', `The batch moves '${from.slice(0, 120)}' to two different keys.`, [
        'Give each source key one target.',
      ]);
    }
    next.set(from, to);
  }
  const finals = new Map<string, string>();
  for (const source of next.keys()) {
    const path = [source];
    let current = next.get(source) as string;
    while (next.has(current)) {
      if (current === source || path.includes(current)) {
        throw new TombstoneCycleError(type, [...path.slice(path.indexOf(current)), current]);
      }
      path.push(current);
      current = next.get(current) as string;
    }
    finals.set(source, current);
  }
  return finals;
}

interface LookupRow {
  /** bigint: node-postgres gives it as a string. */
  id: string;
  kind: TombstoneKind;
  target_key: string | null;
  permanent: boolean;
  reason: string | null;
  alternative: string | null;
  occurred_at: Date;
  expires_at: Date | null;
  final_kind: TombstoneKind | null;
  final_target_key: string | null;
  final_permanent: boolean | null;
  final_reason: string | null;
  final_alternative: string | null;
  final_occurred_at: Date | null;
  final_expires_at: Date | null;
}

function interpret(row: LookupRow): TombstoneResolution {
  const id = String(row.id);
  switch (row.kind) {
    case 'hidden':
      return { state: 'hidden', id };
    case 'deleted':
      return { state: 'gone', id, deletedAt: row.occurred_at, reason: row.reason, alternative: row.alternative };
    case 'moved':
    case 'merged':
      break;
    default:
      return NO_TOMBSTONE;
  }
  // The chain ends at the target; its own tombstone decides (moved, then deleted: 410).
  switch (row.final_kind) {
    case 'hidden':
      return { state: 'hidden', id };
    case 'deleted':
      return {
        state: 'gone',
        id,
        deletedAt: row.final_occurred_at as Date,
        reason: row.final_reason,
        alternative: row.final_alternative,
      };
    case 'moved':
    case 'merged':
      // Only rows written before chains were collapsed (or edited by hand) get here.
      return {
        state: 'moved',
        id,
        target: row.final_target_key as string,
        permanent: row.permanent && row.final_permanent !== false,
        merged: row.kind === 'merged' || row.final_kind === 'merged',
      };
    default:
      return { state: 'moved', id, target: row.target_key as string, permanent: row.permanent, merged: row.kind === 'merged' };
  }
}

/** The part of a `pg` pool the prepared lookup uses. */
interface PgPool {
  connect(): Promise<{
    query(config: { name: string; text: string; values: unknown[] }): Promise<{ rows: unknown[] }>;
    release(error?: Error): void;
  }>;
}

/** Rows of a raw query; TypeORM answers `[rows, count]` for UPDATE and DELETE. */
async function rows(manager: EntityManager, sql: string, params: unknown[]): Promise<Record<string, unknown>[]> {
  const result = (await manager.query(sql, params)) as unknown[];
  return (Array.isArray(result[0]) ? result[0] : result) as Record<string, unknown>[];
}

function toTombstone(row: Record<string, unknown>): Tombstone {
  return Object.assign(new Tombstone(), {
    id: String(row.id),
    scope: row.scope as string,
    type: row.resource_type as string,
    key: row.resource_key as string,
    kind: row.kind as TombstoneKind,
    target: (row.target_key as string | null) ?? null,
    permanent: row.permanent as boolean,
    reason: (row.reason as string | null) ?? null,
    alternative: (row.alternative as string | null) ?? null,
    actor: (row.actor as string | null) ?? null,
    occurredAt: row.occurred_at as Date,
    expiresAt: (row.expires_at as Date | null) ?? null,
    metadata: (row.metadata as Record<string, unknown>) ?? {},
    hitCount: Number(row.hit_count ?? 0),
    lastHitAt: (row.last_hit_at as Date | null) ?? null,
    createdAt: row.created_at as Date,
    updatedAt: row.updated_at as Date,
  });
}
