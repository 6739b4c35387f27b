import { randomBytes } from 'node:crypto';
import type { Logger } from '@nestjs/common';
import type { QueryRunner } from 'typeorm';
import {
  capacityFor,
  countChanged,
  emptyFilter,
  estimateKeys,
  keyId,
  type Queryable,
  readAllKeys,
  readChanged,
  readWatermark,
  type SaltedFilter,
} from './tombstone.filter-keys.js';
import { bitsProblem, filterOf, headerProblem, isMissingTable, readHeader, readSnapshot, readVersion, writeSnapshot } from './tombstone.filter-snapshot.js';
import type { ResolvedFilterOptions } from '../tombstone.options.js';
import type { TombstoneTable } from '../table/tombstone.table.js';

/** How long an instance waits for another one's read of the table before it reads the table itself. */
const BUILD_WAIT_MS = 60_000;
/** How often a waiting instance looks for the snapshot being built (jittered). */
const BUILD_POLL_MS = 250;

/**
 * Why a load runs: `invalid`, the instance has no filter it can use (it starts, or listens
 * again); `grow`, its filter is full; `refresh`, the stored snapshot is due to be written again
 * (or a newer one was), see `refreshDue()`.
 */
export type LoadReason = 'invalid' | 'grow' | 'refresh';

export interface LoadedFilter {
  filter: SaltedFilter;
  from: 'snapshot' | 'table';
  /** Rows of the tombstone table read. */
  rows: number;
  ms: number;
}

/** How a load reaches the instance's lookup cache. */
export interface LoadHooks {
  /** `false` once the load is abandoned (the instance stopped listening, or listens again). */
  current(): boolean;
  /** The filter being filled: changes announced from now on go into it too. */
  building(filter: SaltedFilter): void;
  /** The filter is complete: use it. */
  install(loaded: LoadedFilter): void;
}

/** Rows changed since a snapshot beyond which it is not used: a read of the table costs little more. */
export function changesAllowed(capacity: number): number {
  return Math.max(50_000, Math.floor(capacity / 20));
}

/** Rows changed since a snapshot from which the instance that read them writes it again. */
export function changesToRefresh(capacity: number): number {
  return Math.max(10_000, Math.floor(capacity / 200));
}

/**
 * Fills the membership filter: from the snapshot stored in the database and the rows changed
 * since it was written, when it can be used; otherwise from the whole table, read by one instance
 * at a time (a transaction-level advisory lock), which then stores the snapshot that the others,
 * waiting, load. See docs/cache.md, "Starting".
 */
export class TombstoneFilterLoader {
  private warnedMissing = false;
  private warnedWrite = false;
  /** `false` once the database refused a write for good (privileges, a read-only database). */
  private writable = true;

  constructor(
    private readonly table: TombstoneTable,
    private readonly settings: ResolvedFilterOptions,
    private readonly logger: Logger,
  ) {}

  /** Loads a filter for `reason`; `current` is the filter the instance has (sizes the next one). */
  async load(reason: LoadReason, current: SaltedFilter | null, hooks: LoadHooks): Promise<void> {
    const started = performance.now();
    const db = this.table.dataSource;
    if (!this.settings.snapshot) return void (await this.readTable(db, current, hooks, started, null));
    for (let attempt = 0; attempt < 3 && hooks.current(); attempt++) {
      let tried: Tried;
      try {
        tried = await this.fromSnapshot(db, reason, current, hooks, started);
      } catch (error) {
        // Whatever kept the snapshot from being used (the migration not run, a role without
        // access to its table, a statement timeout), the table itself may still be read: the
        // filter loads as it did before snapshots. A database that is down fails that read too.
        if (isMissingTable(error)) {
          if (!this.warnedMissing) {
            this.warnedMissing = true;
            this.logger.warn(
              'Tombstone filter snapshots off: the table tombstone_filter_snapshots or the column tombstones.changed_xid is missing, so every ' +
                'instance reads the whole tombstone table when it starts. Run TOMBSTONE_MIGRATIONS (CreateTombstoneFilterSnapshot1765152000000).',
            );
          }
        } else {
          this.logger.warn(`Tombstone filter snapshot not read (${(error as Error)?.message ?? String(error)}): reading the table.`);
        }
        return void (await this.readTable(db, current, hooks, started, null));
      }
      if (tried.done || !hooks.current()) return;
      // An instance that cannot store the snapshot would only make the others wait for nothing.
      if (!this.writable) return void (reason === 'refresh' ? undefined : await this.readTable(db, current, hooks, started, null));
      this.logger.log(`Tombstone filter snapshot not used: ${tried.problem}. ${reason === 'refresh' ? 'Building it again' : 'Reading the table'}.`);
      if ((await this.rebuild(reason === 'refresh' ? 'try' : 'wait', tried.seen, current, hooks, started)) === 'done') return;
    }
    // Snapshots written one after the other that this instance cannot use (another instance's
    // settings): it reads the table on its own.
    if (hooks.current() && reason !== 'refresh') await this.readTable(db, current, hooks, started, null);
  }

  /** Why the stored snapshot should be written again, or loaded by an instance whose filter is `current`; `null` when not. */
  async refreshDue(current: SaltedFilter): Promise<string | null> {
    if (!this.settings.snapshot || !this.writable) return null;
    let header;
    try {
      header = await readHeader(this.table.dataSource, this.table.qualifiedName);
    } catch {
      // Missing, or not readable by this role: nothing to refresh from (load() says why).
      return null;
    }
    if (header === null) return 'there is none';
    // Problems a new snapshot would not mend: the triggers would still not mark changed rows, and
    // an instance with other filter settings would write its own again, each reading the whole
    // table by turns. Such an instance loads from the table when it starts, and leaves it there.
    if (!header.tracked || header.falsePositiveRate !== this.settings.falsePositiveRate || header.capacity < this.settings.minCapacity) return null;
    const problem = headerProblem(header, this.settings);
    if (problem !== null) return problem;
    const changes = await countChanged(this.table.dataSource, header.watermark, changesToRefresh(header.capacity));
    if (header.keys + changes > header.capacity) return 'it is full';
    if (changes >= changesToRefresh(header.capacity)) return `${changes} rows changed since it was written`;
    if (header.builtAt.getTime() > current.builtAt.getTime()) return 'it was built from a newer read of the table than this instance’s filter';
    return null;
  }

  /** The snapshot and the rows changed since; or why it cannot be used. */
  private async fromSnapshot(db: Queryable, reason: LoadReason, current: SaltedFilter | null, hooks: LoadHooks, started: number): Promise<Tried> {
    const snapshot = await readSnapshot(db, this.table.qualifiedName);
    if (!hooks.current()) return { done: true };
    if (snapshot === null) return { problem: 'there is none yet', seen: null };
    const problem = headerProblem(snapshot, this.settings) ?? bitsProblem(snapshot);
    if (problem !== null) return { problem, seen: snapshot.writtenXid };
    // A filter that filled up is not replaced by one no larger.
    if (reason === 'grow' && current !== null && snapshot.capacity <= current.capacity) return { problem: 'it is no larger than the full filter', seen: snapshot.writtenXid };
    const filter = filterOf(snapshot);
    hooks.building(filter);
    const allowed = changesAllowed(filter.capacity);
    const changed = await readChanged(db, snapshot.watermark, allowed + 1);
    if (!hooks.current()) return { done: true };
    if (changed.length > allowed) return { problem: `more than ${allowed} rows changed since it was written`, seen: snapshot.writtenXid };
    for (const row of changed) if (row.listed) filter.add(keyId(row.scope, row.resource_type, row.resource_key));
    if (filter.keys > filter.capacity) return { problem: `it is full with the ${changed.length} rows changed since`, seen: snapshot.writtenXid };
    hooks.install({ filter, from: 'snapshot', rows: changed.length, ms: performance.now() - started });
    // Everything committed before that read is in the filter now: the next instance reads less.
    if (changed.length >= changesToRefresh(filter.capacity)) await this.store(null, filter, snapshot.readAt, snapshot.writtenXid);
    return { done: true };
  }

  /**
   * The whole table, read by the instance that takes the lock, which stores the snapshot; the
   * others wait for it (`wait`) or leave it (`try`). `again` when a snapshot was written meanwhile.
   */
  private async rebuild(mode: 'wait' | 'try', seen: string | null, current: SaltedFilter | null, hooks: LoadHooks, started: number): Promise<'done' | 'again'> {
    const deadline = performance.now() + BUILD_WAIT_MS;
    for (;;) {
      if (!hooks.current()) return 'done';
      const outcome = await this.locked(async (runner) => {
        // Another instance may have stored one since this one looked.
        if ((await readVersion(runner)) !== seen) return 'again';
        await this.readTable(runner, current, hooks, started, runner);
        return 'done';
      });
      if (outcome !== 'busy') return outcome;
      if (mode === 'try') return 'done';
      if (performance.now() > deadline) {
        this.logger.warn(`Tombstone filter: another instance has been reading the table for a snapshot for ${BUILD_WAIT_MS / 1000} s; reading it too.`);
        await this.readTable(this.table.dataSource, current, hooks, started, null);
        return 'done';
      }
      await new Promise((resolve) => setTimeout(resolve, BUILD_POLL_MS * (0.5 + Math.random())).unref());
      if (!hooks.current()) return 'done';
      const header = await readHeader(this.table.dataSource, this.table.qualifiedName);
      if (header !== null && header.writtenXid !== seen && headerProblem(header, this.settings) === null) return 'again';
    }
  }

  /**
   * Reads every key that belongs in the filter; with `runner` (which holds the lock), stores the
   * snapshot too. Its watermark is the database snapshot taken before the first read: whatever
   * that snapshot sees as committed is read (each batch sees at least as much); whatever it does
   * not was written by a transaction it saw running, or that began after it.
   */
  private async readTable(db: Queryable, current: SaltedFilter | null, hooks: LoadHooks, started: number, runner: QueryRunner | null): Promise<void> {
    const { watermark, at } = await readWatermark(db);
    const estimate = await estimateKeys(db, this.table.qualifiedName);
    // Twice the keys there are: the planner's estimate of the rows, or, when it is behind (0
    // right after a restore), the keys the current filter holds.
    const capacity = capacityFor(Math.max(estimate, current?.keys ?? 0), this.settings.minCapacity, this.settings.falsePositiveRate);
    // A new salt for each read of the table: a snapshot keeps it, and shares it.
    const filter = emptyFilter(capacity, this.settings.falsePositiveRate, randomBytes(12).toString('base64'), at);
    hooks.building(filter);
    const rows = await readAllKeys(db, filter, hooks.current);
    if (rows === null) return;
    hooks.install({ filter, from: 'table', rows, ms: performance.now() - started });
    if (runner !== null) await this.store(runner, filter, watermark, null);
  }

  /**
   * Writes the snapshot: on `runner`, which holds the lock; otherwise on a connection of its own,
   * if it gets the lock (a refresh never waits). A failure is logged: the filter is in use anyway.
   */
  private async store(runner: QueryRunner | null, filter: SaltedFilter, watermark: string, replaces: string | null): Promise<void> {
    // On the runner's own pg connection (same session and transaction), not through the runner:
    // TypeORM's logger writes a query's parameters, and these hold the salt and the bits.
    const write = async (runner: QueryRunner) => {
      const client = (await runner.connect()) as { query(sql: string, values?: unknown[]): Promise<{ rows: unknown[] }> };
      const unlogged: Queryable = { query: async (sql, parameters) => (await client.query(sql, parameters)).rows };
      return writeSnapshot(unlogged, filter, this.settings.falsePositiveRate, watermark, replaces);
    };
    try {
      // Not in a savepoint: the row must carry the id of the transaction that wrote it (`own`).
      if (runner !== null) await write(runner);
      else await this.locked(write);
    } catch (error) {
      // The lock's transaction is over: `locked()` has nothing left to commit.
      if (runner?.isTransactionActive) await runner.rollbackTransaction().catch(() => undefined);
      const code = (error as { code?: unknown } | null)?.code;
      if (code === '42501' || code === '25006') this.writable = false;
      if (!this.warnedWrite) {
        this.warnedWrite = true;
        this.logger.warn(`Tombstone filter snapshot not written (the filter is in use; other instances read the table): ${(error as Error)?.message ?? String(error)}`);
      }
    }
  }

  /** Runs `work` in a transaction that holds the snapshot's lock; `busy` when another instance holds it. */
  private async locked<T>(work: (runner: QueryRunner) => Promise<T>): Promise<T | 'busy'> {
    const runner = this.table.dataSource.createQueryRunner();
    try {
      await runner.connect();
      await runner.startTransaction();
      const [{ got }] = (await runner.query(`SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS got`, [
        `nestjs-tombstones-filter\u001f${this.table.qualifiedName}`,
      ])) as { got: boolean }[];
      const result = got ? await work(runner) : ('busy' as const);
      if (runner.isTransactionActive) await runner.commitTransaction();
      return result;
    } catch (error) {
      if (runner.isTransactionActive) await runner.rollbackTransaction().catch(() => undefined);
      throw error;
    } finally {
      await runner.release();
    }
  }
}

type Tried = { done: true } | { done?: false; problem: string; seen: string | null };
