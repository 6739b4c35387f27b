import { Inject, Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { TOMBSTONE_OPTIONS } from '../tombstone.constants.js';
import type { ResolvedTombstoneOptions } from '../tombstone.options.js';
import { isBrokenConnection, type PgClient, type PgPool, TombstoneTable } from '../table/tombstone.table.js';
import type { TombstoneLookupResult } from '../tombstone.types.js';

/** The primary's WAL position now: past the commit of every change already announced. */
const FENCE_SQL = 'SELECT pg_current_wal_insert_lsn()::text AS lsn';
/** How far a replica has replayed (null on a server that is not a standby). */
const PROBE_SQL = 'SELECT pg_last_wal_replay_lsn()::text AS lsn';
/** Least time between two probes of a replica found behind the fence. */
const PROBE_INTERVAL_MS = 20;
/** Longest a probe may take; a replica that does not answer in time is taken out. */
const PROBE_TIMEOUT_MS = 5_000;
/** A replica that failed is probed again after this, doubling up to `RETRY_MAX_MS`. */
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 30_000;
/** A fence that could not be read is read again after this (replicas wait meanwhile). */
const FENCE_RETRY_MS = 1_000;

interface Replica {
  /** `replica 1`, … in the order of TypeORM's `replication.slaves`: for the log. */
  readonly name: string;
  readonly pool: PgPool;
  probing: boolean;
  /** No probe before this (`performance.now()`): it was behind a moment ago, or it failed. */
  probeAfter: number;
  /** It failed, or is not a standby: lookups skip it until a probe answers. */
  out: boolean;
  failures: number;
}

/** What `TombstoneReplicas.stats()` reports. */
export interface TombstoneReplicaStats {
  /** Replicas the DataSource has, and those taken out (failed, or not a standby) now. */
  replicas: number;
  out: number;
  /** Lookups answered by a replica, and by the primary, since start (with `lookups: 'replica'`). */
  replicaReads: number;
  primaryReads: number;
  /** The WAL position replica reads must have passed, as PostgreSQL writes it; `null` before the first. */
  fence: string | null;
}

/**
 * Cold lookups on read replicas (`lookups: 'replica'`), never older than a change this instance
 * has heard of, and so never kept in the cache older than one.
 *
 * The fence is a WAL position. Whenever the instance learns of a change (a notification, a write
 * of its own, listening again after a gap), it reads `pg_current_wal_insert_lsn()` on the
 * primary. That read starts after the change committed, so the position is past the change's
 * commit record; until it has come back, every lookup goes to the primary. A replica's
 * connection is used only once a probe on that very connection (`pg_last_wal_replay_lsn()`),
 * answered before the lookup is sent, saw the replica past the fence: the lookup's snapshot is
 * taken later, on the same server, so it holds every change the fence covers. (A replay position
 * read by the lookup itself would not do: it is read after the snapshot is taken.) Otherwise the
 * lookup goes to the primary, still one round trip, and the replica is probed in the background,
 * at most one probe at a time per replica, every `PROBE_INTERVAL_MS` while it stays behind. A
 * replica that fails is left out, and probed again with backoff. Internal.
 */
@Injectable()
export class TombstoneReplicas implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('TombstoneModule');
  private readonly enabled: boolean;
  /** Half the lookup's time budget: the primary gets the other half when a replica does not answer. */
  private readonly replicaTimeoutMs: number;
  private replicas: Replica[] = [];
  /** How far each replica connection was last seen to have replayed, read on that connection. */
  private readonly replayed = new WeakMap<PgClient, bigint>();
  private fence: bigint | null = null;
  /** Changes learned of, and how many of them `fence` covers: replicas wait while they differ. */
  private learned = 1;
  private covered = 0;
  private hearing = false;
  private reading = false;
  private failing = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly counters = { replicaReads: 0, primaryReads: 0 };

  constructor(
    @Inject(TOMBSTONE_OPTIONS) options: ResolvedTombstoneOptions,
    private readonly table: TombstoneTable,
  ) {
    this.enabled = options.lookups === 'replica';
    this.replicaTimeoutMs = Math.max(1, Math.floor(options.lookupTimeoutMs / 2));
  }

  onApplicationBootstrap(): void {
    if (!this.enabled || !this.table.dataSource.isInitialized) return;
    const slaves = (this.table.dataSource.driver as unknown as { slaves?: PgPool[] }).slaves ?? [];
    this.replicas = slaves.map((pool, i) => ({ name: `replica ${i + 1}`, pool, probing: false, probeAfter: 0, out: false, failures: 0 }));
    if (this.replicas.length === 0) {
      this.logger.warn(
        "Tombstone lookups: lookups is 'replica', but the DataSource has no replicas (TypeORM's `replication.slaves`); lookups use the primary.",
      );
    }
  }

  onApplicationShutdown(): void {
    this.stopped = true;
    this.hearing = false;
    clearTimeout(this.timer);
  }

  /** What (scope, type, key) is answered: by a replica when one may answer it (see the class), else by the primary. */
  async lookup(type: string, key: string, scope: string): Promise<TombstoneLookupResult> {
    const replica = this.pick();
    if (replica !== undefined) {
      const result = await this.fromReplica(replica, type, key, scope);
      if (result !== undefined) return result;
    }
    if (this.enabled) this.counters.primaryReads++;
    return this.table.lookup(type, key, scope);
  }

  /** The instance learned of a change: replicas wait until the fence has been read past it. */
  changed(): void {
    if (!this.enabled || this.stopped) return;
    this.learned++;
    this.readFence();
  }

  /** The instance listens for changes (again): nothing it missed meanwhile may be read from a replica. */
  listening(): void {
    this.hearing = true;
    this.changed();
  }

  /** The instance stopped listening: changes may go unheard, so lookups go to the primary. */
  deaf(): void {
    this.hearing = false;
  }

  stats(): TombstoneReplicaStats {
    return {
      replicas: this.replicas.length,
      out: this.replicas.filter((r) => r.out).length,
      ...this.counters,
      fence: this.fence === null ? null : formatLsn(this.fence),
    };
  }

  /** Whether a replica's answer, read through a connection seen at `replayed`, may be used now. */
  protected fenced(replayed: bigint | undefined): boolean {
    return this.hearing && this.covered === this.learned && this.fence !== null && replayed !== undefined && replayed >= this.fence;
  }

  /** A replica with an idle connection (whether it may answer is decided on that connection); the others are probed as needed. */
  private pick(): Replica | undefined {
    const count = this.replicas.length;
    if (count === 0) return undefined;
    const start = count === 1 ? 0 : Math.floor(Math.random() * count);
    for (let i = 0; i < count; i++) {
      const replica = this.replicas[(start + i) % count];
      // A lookup never waits for a new connection, nor for one to a replica that failed: a probe opens it.
      // pg-pool hands an idle connection over on the next tick, in the order connections were asked
      // for: an idle one is this lookup's only when no one asked before it (another lookup, the app).
      if (!replica.out && replica.pool.idleCount > replica.pool.waitingCount) return replica;
      this.probe(replica);
    }
    return undefined;
  }

  /** The lookup on `replica`; `undefined` when it may not answer (behind, failed): the primary then does. */
  private async fromReplica(replica: Replica, type: string, key: string, scope: string): Promise<TombstoneLookupResult | undefined> {
    let client: PgClient;
    try {
      client = await replica.pool.connect();
    } catch (error) {
      this.failed(replica, error);
      return undefined;
    }
    // Decided now, as the query leaves: a change heard while the connection was handed over counts.
    if (!this.fenced(this.replayed.get(client))) {
      this.probe(replica, client);
      return undefined;
    }
    client.on('error', ignore);
    let broken: Error | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      const result = await Promise.race([
        this.table.lookupOn(client, type, key, scope),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer in ${this.replicaTimeoutMs} ms`)), this.replicaTimeoutMs);
        }),
      ]);
      this.counters.replicaReads++;
      return result;
    } catch (error) {
      if (isBrokenConnection(error)) broken = error as Error;
      this.failed(replica, error);
      return undefined;
    } finally {
      clearTimeout(timer);
      client.off('error', ignore);
      client.release(broken);
    }
  }

  /**
   * Asks `replica` how far it has replayed, on `client` (then released) or on a connection of its
   * own, unless a probe is running or was made too recently; off the request path.
   */
  private probe(replica: Replica, client?: PgClient): void {
    const pool = replica.pool;
    // A pool that is full serves the app's own reads (TypeORM sends them to replicas): no wait for it.
    const full = client === undefined && pool.idleCount === 0 && pool.totalCount >= pool.options.max;
    if (replica.probing || full || performance.now() < replica.probeAfter || this.stopped) {
      client?.release();
      return;
    }
    replica.probing = true;
    void this.runProbe(replica, client).finally(() => (replica.probing = false));
  }

  private async runProbe(replica: Replica, given: PgClient | undefined): Promise<void> {
    let client = given;
    let broken: Error | undefined;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer in ${PROBE_TIMEOUT_MS} ms`)), PROBE_TIMEOUT_MS);
      timer.unref();
    });
    try {
      if (client === undefined) {
        let abandoned = false;
        const connecting = replica.pool.connect();
        // A connection that arrives after the probe gave up goes back to the pool.
        connecting.then((late) => abandoned && late.release(), ignore);
        client = await Promise.race([connecting, timeout]).catch((error: unknown) => {
          abandoned = true;
          throw error;
        });
      }
      client.on('error', ignore);
      const { rows } = await Promise.race([client.query({ text: PROBE_SQL }), timeout]);
      const lsn = (rows[0] as { lsn: string | null } | undefined)?.lsn ?? null;
      if (lsn === null) throw new Error('it is not a standby (pg_last_wal_replay_lsn() is null)');
      const position = parseLsn(lsn);
      const before = this.replayed.get(client);
      this.replayed.set(client, before !== undefined && before > position ? before : position);
      // Behind the fence (paused, or lagging): asked again a little later.
      replica.probeAfter = this.fence === null || position < this.fence ? performance.now() + PROBE_INTERVAL_MS : 0;
      if (replica.out) {
        this.logger.log(`Tombstone lookups: ${replica.name} answers again; lookups use it once it has replayed what this instance has heard of.`);
        replica.out = false;
        replica.failures = 0;
      }
    } catch (error) {
      broken = error as Error;
      this.failed(replica, error);
    } finally {
      clearTimeout(timer);
      client?.off('error', ignore);
      client?.release(broken);
    }
  }

  /** A replica failed: left out, and probed again after a backoff. Logged once per outage. */
  private failed(replica: Replica, error: unknown): void {
    const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** replica.failures);
    replica.failures = Math.min(replica.failures + 1, 16);
    replica.probeAfter = performance.now() + delay;
    if (replica.out) return;
    replica.out = true;
    this.logger.warn(
      `Tombstone lookups: ${replica.name} failed (${(error as Error)?.message ?? String(error)}); lookups use the primary, and it is probed again in ${delay} ms.`,
    );
  }

  /** Reads the fence on the primary, once every change learned of before the read started. */
  private readFence(): void {
    if (this.reading || this.stopped || this.covered === this.learned) return;
    this.reading = true;
    const upTo = this.learned;
    // One chain, so that anything thrown while reading the answer is handled like a failed read
    // (never an unhandled rejection, never `reading` left set).
    this.table.dataSource
      .query(FENCE_SQL)
      .then((rows: { lsn: string }[]) => {
        const lsn = parseLsn(rows[0].lsn);
        if (this.fence === null || lsn > this.fence) this.fence = lsn;
        this.covered = upTo;
        this.failing = false;
        this.reading = false;
        this.readFence();
      })
      .catch((error: unknown) => {
        this.reading = false;
        if (this.stopped) return;
        if (!this.failing) {
          this.failing = true;
          this.logger.warn(
            `Tombstone lookups: could not read the primary's WAL position; lookups use the primary until it can: ${(error as Error)?.message ?? String(error)}`,
          );
        }
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.readFence(), FENCE_RETRY_MS);
        this.timer.unref();
      });
  }
}

/** A `pg_lsn` as text (`16/B374D848`) as a number that compares as PostgreSQL does. */
export function parseLsn(text: string): bigint {
  const match = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text);
  if (!match) throw new Error(`not a WAL position: ${JSON.stringify(text)}`);
  return (BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`);
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

function ignore(): void {}
