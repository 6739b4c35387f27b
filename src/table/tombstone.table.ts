import { createHash } from 'node:crypto';
import { Inject, Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { getDataSourceToken } from '@nestjs/typeorm';
import type { DataSource, EntityManager } from 'typeorm';
import { TOMBSTONE_OPTIONS } from '../tombstone.constants.js';
import { TombstoneContextSubscriber } from '../tombstone.context.js';
import { Tombstone } from '../tombstone.entity.js';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import type { ResolvedTombstoneOptions } from '../tombstone.options.js';
import { NO_TOMBSTONE, type TombstoneLookupResult, type TombstoneResolution } from '../tombstone.types.js';
import { isStorableKey, isStorableScope, isValidType } from '../tombstone.validation.js';
import { TombstoneChanges } from './tombstone.changes.js';
import { rowsOf, type TombstoneRow, toTombstone } from './tombstone.rows.js';
import { resultOfWalk, WALK_ONE_SQL, WALK_SQL, type WalkRow, walksOf } from './tombstone.walk.js';

// One round trip whatever the chain: the key's walk (its row or its longest prefix tombstone,
// then its redirect's target matched the same way, and on) is one recursive query.
const LOOKUP_SQL = WALK_ONE_SQL;
// Named after its text: behind a pooler that shares server connections between clients without
// tracking their statements (PgBouncer before 1.21, or with max_prepared_statements = 0), another
// version of this module may have prepared a statement on the same server connection, and a
// name means one text only.
const PREPARED_LOOKUP = `nestjs_tombstones_lookup_${createHash('sha256').update(LOOKUP_SQL).digest('hex').slice(0, 16)}`;
/**
 * What a pooler that shares server connections without tracking prepared statements answers:
 * the name was prepared on another server connection (26000), or another client prepared it on
 * this one (42P05).
 */
const UNKEPT_STATEMENT = new Set(['26000', '42P05']);
const NO_LOOKUP: TombstoneLookupResult = Object.freeze({ resolution: NO_TOMBSTONE, via: null, validUntil: null, cacheable: true });

/**
 * The tombstone table: the DataSource that holds it, and every read of a key. Writes go through
 * `TombstoneWriter`. Internal.
 */
@Injectable()
export class TombstoneTable implements OnModuleInit {
  private readonly logger = new Logger('TombstoneModule');
  private source?: DataSource;
  private unprepared = false;

  constructor(
    @Inject(TOMBSTONE_OPTIONS) private readonly options: ResolvedTombstoneOptions,
    private readonly moduleRef: ModuleRef,
    private readonly changes: TombstoneChanges,
  ) {}

  onModuleInit(): void {
    const source = (this.source = this.locateDataSource());
    if (!source.subscribers.some((s) => s instanceof TombstoneContextSubscriber)) {
      source.subscribers.push(new TombstoneContextSubscriber());
    }
    if (!source.subscribers.includes(this.changes)) source.subscribers.push(this.changes);
  }

  /** The DataSource that holds the tombstone table. */
  get dataSource(): DataSource {
    return (this.source ??= this.locateDataSource());
  }

  /** The tombstone table's name as `regclass` reads it, schema and table each quoted. */
  get qualifiedName(): string {
    const metadata = this.dataSource.getMetadata(Tombstone);
    return [metadata.schema, metadata.tableName]
      .filter(Boolean)
      .map((part) => `"${String(part).replace(/"/g, '""')}"`)
      .join('.');
  }

  /** The stored tombstone of a key, expired or not; `null` when it has none. */
  async find(scope: string, type: string, key: string, manager?: EntityManager | null): Promise<Tombstone | null> {
    const [row] = (await (manager ?? this.dataSource.manager).query(`SELECT * FROM tombstones WHERE scope = $1 AND resource_type = $2 AND resource_key = $3`, [
      scope,
      type,
      key,
    ])) as TombstoneRow[];
    return row ? toTombstone(row) : null;
  }

  async findById(id: string): Promise<Tombstone | null> {
    const [row] = rowsOf<TombstoneRow>(await this.dataSource.query(`SELECT * FROM tombstones WHERE id = $1`, [id]));
    return row ? toTombstone(row) : null;
  }

  /**
   * What a request for (scope, type, key) is answered, chains followed to their end, in one
   * round trip, with what a cache needs to keep the answer: the key it was read through and when
   * it stops being true. Keys that cannot have a tombstone answer `none` without a query.
   */
  async lookup(type: string, key: string, scope = ''): Promise<TombstoneLookupResult> {
    if (!isValidType(type) || !isStorableKey(key) || !isStorableScope(scope)) return NO_LOOKUP;
    return resultOfWalk(sortedWalk(await this.lookupRows([scope, type, key])));
  }

  /**
   * `lookup()` on a connection the caller holds (a replica's): the same statement, prepared the
   * same way. The caller releases the connection, and does not reuse it after an error that
   * `isBrokenConnection()` recognises.
   */
  async lookupOn(client: PgClient, type: string, key: string, scope = ''): Promise<TombstoneLookupResult> {
    if (!isValidType(type) || !isStorableKey(key) || !isStorableScope(scope)) return NO_LOOKUP;
    return resultOfWalk(sortedWalk(await this.runLookup(client, [scope, type, key])));
  }

  /** `lookup()` for many keys of one (scope, type), in one round trip, in the order of the keys. */
  async lookupMany(type: string, keys: readonly string[], scope = ''): Promise<TombstoneResolution[]> {
    const answers: TombstoneResolution[] = keys.map(() => NO_TOMBSTONE);
    if (!isValidType(type) || !isStorableScope(scope)) return answers;
    const positions = keys.flatMap((key, i) => (isStorableKey(key) ? [i] : []));
    if (positions.length === 0) return answers;
    const walks = walksOf((await this.dataSource.query(WALK_SQL, [scope, type, positions.map((i) => keys[i])])) as WalkRow[]);
    for (const [n, walk] of walks) answers[positions[n - 1]] = resultOfWalk(walk).resolution;
    return answers;
  }

  /**
   * The lookup, as a named prepared statement when it can be: PostgreSQL then plans it once per
   * connection instead of at every lookup (planning is most of a cold lookup's time). Logged
   * through the DataSource's logger like any TypeORM query. Behind a pooler that does not keep
   * prepared statements, the lookup that finds out is answered by a plain query, and so is every
   * lookup after it.
   */
  private async lookupRows(params: unknown[]): Promise<WalkRow[]> {
    const pool = (this.dataSource.driver as unknown as { master?: PgPool }).master;
    if (!this.options.preparedStatements || this.unprepared || typeof pool?.connect !== 'function') return this.plainLookup(params);
    const client = await pool.connect();
    // A connection that dies under the query rejects it, and also emits 'error': the pool only
    // listens to its idle connections, and an 'error' nobody listens to ends the process.
    client.on('error', ignore);
    let broken: Error | undefined;
    try {
      return await this.runLookup(client, params);
    } catch (error) {
      if (isBrokenConnection(error)) broken = error as Error;
      if (!isUnkeptStatement(error)) throw error;
    } finally {
      client.off('error', ignore);
      client.release(broken);
    }
    // The connection did not keep the prepared statement: this lookup too is a plain query.
    return this.plainLookup(params);
  }

  /**
   * The lookup on `client`, prepared unless prepared statements are off or were found not to be
   * kept. A statement the connection did not keep (a pooler in transaction mode) turns them off
   * for good, with one warning, and is thrown for the caller to answer with a plain query.
   */
  private async runLookup(client: PgClient, params: unknown[]): Promise<WalkRow[]> {
    const logger = this.dataSource.logger;
    logger.logQuery(LOOKUP_SQL, params);
    const prepared = this.options.preparedStatements && !this.unprepared;
    try {
      return (await client.query(prepared ? { name: PREPARED_LOOKUP, text: LOOKUP_SQL, values: params } : { text: LOOKUP_SQL, values: params }))
        .rows as WalkRow[];
    } catch (error) {
      if (!isUnkeptStatement(error)) {
        logger.logQueryError(error as Error, LOOKUP_SQL, params);
        throw error;
      }
      if (!this.unprepared) {
        this.unprepared = true;
        this.logger.warn(
          `Tombstone lookups: the connection does not keep prepared statements (${(error as Error).message}: a pooler in transaction mode, ` +
            'such as PgBouncer before 1.21 or with max_prepared_statements = 0); using plain queries from now on. Set preparedStatements: false to start with them.',
        );
      }
      throw error;
    }
  }

  private async plainLookup(params: unknown[]): Promise<WalkRow[]> {
    return (await this.dataSource.query(LOOKUP_SQL, params)) as WalkRow[];
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

/** The steps of one key's walk, in order. */
function sortedWalk(rows: WalkRow[]): WalkRow[] {
  return rows.length > 1 ? rows.sort((a, b) => a.depth - b.depth) : rows;
}

/**
 * Whether a lookup's error says its connection must not be reused: not a server's answer (the
 * connection broke), or a prepared statement this connection cannot use any more (the table
 * changed under it, or a pooler lost it).
 */
export function isBrokenConnection(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code !== 'string' || code === '0A000' || isUnkeptStatement(error);
}

/**
 * A prepared statement the connection did not keep: "does not exist" (26000) or "already exists"
 * (42P05), as a pooler in transaction mode answers when the statement was prepared on another
 * server connection.
 */
function isUnkeptStatement(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && UNKEPT_STATEMENT.has(code);
}

/** The part of a `pg` connection the lookup uses. */
export interface PgClient {
  query(config: { name?: string; text: string; values?: unknown[] }): Promise<{ rows: unknown[] }>;
  release(error?: Error): void;
  on(event: 'error', listener: () => void): void;
  off(event: 'error', listener: () => void): void;
}

/** The part of a `pg` pool the lookups use (TypeORM's pools: `driver.master`, `driver.slaves`). */
export interface PgPool {
  connect(): Promise<PgClient>;
  readonly idleCount: number;
  readonly totalCount: number;
  /** Callers queued for a connection, an idle one included: pg-pool hands those over on the next tick. */
  readonly waitingCount: number;
  readonly options: { readonly max: number };
}

function ignore(): void {}
