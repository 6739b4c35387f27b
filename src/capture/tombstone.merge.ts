import type { EntityManager, EntityTarget, FindOptionsWhere, ObjectLiteral } from 'typeorm';
import { LIMITS } from '../tombstone.constants.js';
import { TombstoneContext } from '../tombstone.context.js';
import type { Tombstone } from '../tombstone.entity.js';
import { TombstoneConfigurationError, TombstoneValidationError, preview } from '../tombstone.exceptions.js';
import { assertText } from '../tombstone.validation.js';
import { trackedDeclarations } from './tombstone.tracked.js';

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

/** What a merge records with: the recording API's merge and restore, in the merge's transaction. */
export interface MergeRecorder {
  recordMerge(type: string, sources: string[], into: string, options: { scope: string; manager: EntityManager; permanent: boolean }): Promise<Tombstone[]>;
  restore(type: string, key: string, options: { scope: string; manager: EntityManager }): Promise<boolean>;
}

/**
 * Merges rows of a `@TombstoneTracked` entity into one, in one transaction (see
 * `TombstoneService.merge()`).
 */
export async function mergeRows<T extends ObjectLiteral>(
  recorder: MergeRecorder,
  manager: EntityManager,
  entity: EntityTarget<T>,
  options: TombstoneMergeOptions<T>,
): Promise<TombstoneMergeResult<T>> {
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
  const run = (tx: EntityManager) => TombstoneContext.run(named, () => mergeIn(recorder, tx, entity, options));
  return (options.manager ?? manager).transaction(run);
}

async function mergeIn<T extends ObjectLiteral>(
  recorder: MergeRecorder,
  manager: EntityManager,
  entity: EntityTarget<T>,
  options: TombstoneMergeOptions<T>,
): Promise<TombstoneMergeResult<T>> {
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
      tombstones.push(...(await recorder.recordMerge(declaration.type, sources, target, { scope, manager, permanent: declaration.permanent })));
    }
    // A merged row that shared the survivor's key left a tombstone on it: the key is live.
    if (before.some((row) => keyValue(row[declaration.key]) === target)) {
      await recorder.restore(declaration.type, target, { scope, manager });
    }
  }
  return { survivor, merged: before, tombstones };
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
