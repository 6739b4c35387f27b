import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import type {
  EntityMetadata,
  EntitySubscriberInterface,
  InsertEvent,
  ObjectLiteral,
  QueryRunner,
  RecoverEvent,
  RemoveEvent,
  SoftRemoveEvent,
  TransactionCommitEvent,
  TransactionRollbackEvent,
  UpdateEvent,
} from 'typeorm';
import { TombstoneFences } from '../cache/tombstone.fences.js';
import { TOMBSTONE_OPTIONS } from '../tombstone.constants.js';
import type { ResolvedTombstoneOptions } from '../tombstone.options.js';
import { TombstoneTable } from '../table/tombstone.table.js';
import { trackedDeclarations } from './tombstone.tracked.js';

/** The tracked types a write to one table may change, as the capture triggers will record it. */
export interface TombstoneCaptureReach {
  /** Every tracked type of the table (an insert, a soft delete, a restore). */
  readonly all: ReadonlySet<string>;
  /** By column: the types whose key or scope it holds (every type for the soft-delete column), and those of rows of other tables that follow it (`ON UPDATE`). */
  readonly byColumn: ReadonlyMap<string, ReadonlySet<string>>;
  /** A hard delete: the table's types, and those of the rows the database deletes or changes with it (`ON DELETE`). */
  readonly deleted: ReadonlySet<string>;
}

const NOWHERE: TombstoneCaptureReach = { all: new Set(), byColumn: new Map(), deleted: new Set() };

/**
 * What a write to each entity's table may change, from the `@TombstoneTracked` declarations and
 * the foreign keys TypeORM knows of. Entities that share a table (single-table inheritance) share
 * their declarations, as the table's triggers do.
 */
export function captureReach(metadatas: readonly EntityMetadata[]): Map<EntityMetadata, TombstoneCaptureReach> {
  const tables = new Map<string, { all: Set<string>; byColumn: Map<string, Set<string>> }>();
  const tableOf = (metadata: EntityMetadata) => {
    let table = tables.get(metadata.tablePath);
    if (!table) tables.set(metadata.tablePath, (table = { all: new Set(), byColumn: new Map() }));
    return table;
  };
  const add = (map: Map<string, Set<string>>, column: string | undefined, types: Iterable<string>) => {
    if (column === undefined) return;
    let set = map.get(column);
    if (!set) map.set(column, (set = new Set()));
    for (const type of types) set.add(type);
  };
  for (const metadata of metadatas) {
    const table = tableOf(metadata);
    for (const declaration of trackedDeclarations(metadata.target)) {
      table.all.add(declaration.type);
      add(table.byColumn, metadata.findColumnWithPropertyName(declaration.key)?.databaseName, [declaration.type]);
      if (declaration.scope !== undefined) add(table.byColumn, metadata.findColumnWithPropertyName(declaration.scope)?.databaseName, [declaration.type]);
    }
  }
  for (const metadata of metadatas) {
    const table = tableOf(metadata);
    if (table.all.size > 0) add(table.byColumn, metadata.deleteDateColumn?.databaseName, table.all);
  }
  // Rows of other tables that the database changes with a row of this one: a key or scope that
  // follows a key of this table (ON UPDATE), rows deleted with it or whose key or scope it clears (ON DELETE).
  const followers = new Map<string, { table: string; cascade: boolean; columns: string[] }[]>();
  for (const metadata of metadatas) {
    const child = tableOf(metadata);
    for (const relation of metadata.relations) {
      if (!(relation.isManyToOne || relation.isOneToOneOwner)) continue;
      const parent = tableOf(relation.inverseEntityMetadata);
      const changed = relation.joinColumns.flatMap((column) => [...(child.byColumn.get(column.databaseName) ?? [])]);
      if (relation.onUpdate === 'CASCADE' || relation.onUpdate === 'SET NULL' || relation.onUpdate === 'DEFAULT') {
        for (const column of relation.joinColumns) add(parent.byColumn, column.referencedColumn?.databaseName, changed);
      }
      if (relation.onDelete === 'CASCADE' || relation.onDelete === 'SET NULL' || relation.onDelete === 'DEFAULT') {
        const list = followers.get(relation.inverseEntityMetadata.tablePath) ?? [];
        list.push({ table: metadata.tablePath, cascade: relation.onDelete === 'CASCADE', columns: relation.joinColumns.map((c) => c.databaseName) });
        followers.set(relation.inverseEntityMetadata.tablePath, list);
      }
    }
  }
  const deleted = (path: string, into: Set<string>, seen: Set<string>) => {
    if (seen.has(path)) return into;
    seen.add(path);
    for (const type of tables.get(path)?.all ?? []) into.add(type);
    for (const follower of followers.get(path) ?? []) {
      if (follower.cascade) deleted(follower.table, into, seen);
      else for (const column of follower.columns) for (const type of tables.get(follower.table)?.byColumn.get(column) ?? []) into.add(type);
    }
    return into;
  };
  const reach = new Map<EntityMetadata, TombstoneCaptureReach>();
  for (const metadata of metadatas) {
    const table = tableOf(metadata);
    const gone = deleted(metadata.tablePath, new Set(), new Set());
    if (table.all.size > 0 || table.byColumn.size > 0 || gone.size > 0) reach.set(metadata, { all: table.all, byColumn: table.byColumn, deleted: gone });
  }
  return reach;
}

/**
 * Tells the lookup cache of the writes through TypeORM (repositories, entity managers, query
 * builders) to tracked tables, once they have committed: the repository and query-builder events
 * of TypeORM, on the writing query runner, and its transaction's end. The capture triggers
 * record the write; its notification comes back a moment later; until then, lookups of its types
 * on this instance ask the database (see `TombstoneFences`). Raw SQL (`query()`) raises no
 * event. Internal.
 */
@Injectable()
export class TombstoneCaptureWrites implements EntitySubscriberInterface, OnModuleInit {
  private reach?: Map<EntityMetadata, TombstoneCaptureReach>;
  /** Types written in each open transaction, told when it commits. */
  private readonly pending = new WeakMap<QueryRunner, Set<string>>();

  constructor(
    @Inject(TOMBSTONE_OPTIONS) private readonly options: ResolvedTombstoneOptions,
    private readonly table: TombstoneTable,
    private readonly fences: TombstoneFences,
  ) {}

  onModuleInit(): void {
    const source = this.table.dataSource;
    if (this.options.cache && !source.subscribers.includes(this)) source.subscribers.push(this);
  }

  afterInsert(event: InsertEvent<ObjectLiteral>): void {
    this.wrote(event.queryRunner, this.reachOf(event.metadata).all);
  }

  afterUpdate(event: UpdateEvent<ObjectLiteral>): void {
    const reach = this.reachOf(event.metadata);
    if (reach.byColumn.size === 0) return;
    const columns = changedColumns(event);
    // Not known what it set: whatever any column reaches.
    const types = new Set<string>(columns === null ? reach.all : []);
    for (const [column, reached] of reach.byColumn) {
      if (columns === null || columns.includes(column)) for (const type of reached) types.add(type);
    }
    this.wrote(event.queryRunner, types);
  }

  afterRemove(event: RemoveEvent<ObjectLiteral>): void {
    this.wrote(event.queryRunner, this.reachOf(event.metadata).deleted);
  }

  afterSoftRemove(event: SoftRemoveEvent<ObjectLiteral>): void {
    this.wrote(event.queryRunner, this.reachOf(event.metadata).all);
  }

  afterRecover(event: RecoverEvent<ObjectLiteral>): void {
    this.wrote(event.queryRunner, this.reachOf(event.metadata).all);
  }

  afterTransactionCommit(event: TransactionCommitEvent): void {
    const types = this.pending.get(event.queryRunner);
    // A savepoint released: the transaction goes on.
    if (!types || event.queryRunner.isTransactionActive) return;
    this.pending.delete(event.queryRunner);
    this.fences.written(types);
  }

  afterTransactionRollback(event: TransactionRollbackEvent): void {
    // Rolled back to a savepoint: what was written before it may still commit; kept.
    if (!event.queryRunner.isTransactionActive) this.pending.delete(event.queryRunner);
  }

  private wrote(runner: QueryRunner, types: ReadonlySet<string>): void {
    if (types.size === 0) return;
    if (!runner.isTransactionActive) return this.fences.written(types);
    const pending = this.pending.get(runner);
    if (!pending) this.pending.set(runner, new Set(types));
    else for (const type of types) pending.add(type);
  }

  private reachOf(metadata: EntityMetadata): TombstoneCaptureReach {
    this.reach ??= captureReach(this.table.dataSource.entityMetadatas);
    return this.reach.get(metadata) ?? NOWHERE;
  }
}

/**
 * The columns an update set, or `null` when that cannot be told. A repository's update names
 * them; a query builder's names the properties it set.
 */
function changedColumns(event: UpdateEvent<ObjectLiteral>): string[] | null {
  if (event.updatedColumns.length > 0 || event.updatedRelations.length > 0) {
    return [...event.updatedColumns, ...event.updatedRelations.flatMap((relation) => relation.joinColumns)].map((column) => column.databaseName);
  }
  const values = event.entity;
  if (typeof values !== 'object' || values === null) return null;
  const columns: string[] = [];
  for (const path of Object.keys(values)) {
    const found = event.metadata.findColumnsWithPropertyPath(path);
    // An embedded object, or a name TypeORM does not know: anything may have changed.
    if (found.length === 0) return null;
    for (const column of found) columns.push(column.databaseName);
  }
  return columns;
}
