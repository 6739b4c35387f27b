import { randomUUID } from 'node:crypto';
import { Inject, Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import type { Client, ClientConfig, Notification } from 'pg';
import { TOMBSTONE_CHANNEL, TOMBSTONE_OPTIONS } from '../tombstone.constants.js';
import { TombstoneFences } from './tombstone.fences.js';
import { assertSessionKept, close, describeTarget, discard, sessionOf, STEP_TIMEOUT_MS, within } from './tombstone.listener-session.js';
import { TombstoneLookup } from './tombstone.lookup.js';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import type { ResolvedTombstoneOptions } from '../tombstone.options.js';
import { TombstoneTable } from '../table/tombstone.table.js';
import { type TombstoneInvalidation } from '../tombstone.types.js';

const NOTIFY_TRIGGERS = ['tombstones_notify_ins', 'tombstones_notify_upd', 'tombstones_notify_del', 'tombstones_notify_trunc'];
/**
 * The row trigger a logical-replication subscriber needs (docs/operations.md, "Logical-replication
 * subscribers"): the apply worker fires row triggers only, so the statement triggers above never
 * announce the rows it applies.
 */
const REPLICA_TRIGGER = 'tombstones_notify_replica';
const TRIGGERS_SQL = `
  SELECT (SELECT count(*)::int FROM pg_trigger
           WHERE tgrelid = to_regclass($1) AND tgname = ANY($2::text[]) AND tgenabled IN ('O', 'A')) AS n,
         EXISTS (SELECT 1 FROM pg_subscription_rel WHERE srrelid = to_regclass($1)) AS subscribed,
         EXISTS (SELECT 1 FROM pg_trigger
                  WHERE tgrelid = to_regclass($1) AND tgname = $3 AND tgenabled IN ('R', 'A')) AS replicated`;
/** How often the listening connection is checked (each check may take `STEP_TIMEOUT_MS`). */
const HEALTH_INTERVAL_MS = 15_000;
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 10_000;

/**
 * Keeps one connection per instance that `LISTEN`s for the tombstone table's changes, and
 * passes each change to the lookup cache. While it is not listening (at start, after the
 * connection is lost, while it reconnects with backoff), the cache is not used; once it listens
 * again, the cache starts empty and the filter loads again, so nothing announced in between is
 * missed. The connection is its own, outside the DataSource's pool.
 */
@Injectable()
export class TombstoneNotifications implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('TombstoneModule');
  private client: Client | null = null;
  /** The backend of the listening connection's session: it must never change. */
  private session = 0;
  private stopped = false;
  private attempts = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private healthTimer: NodeJS.Timeout | undefined;
  private connecting: Promise<void> | null = null;
  private table = '"tombstones"';
  /** Barriers this instance sent and waits for (see `settle()`). */
  private readonly instance = randomUUID();
  private barrierCount = 0;
  private readonly barriers = new Map<string, () => void>();
  private readonly heard = new Set<() => void>();

  /** @internal Nest creates it: inject it. */
  constructor(
    @Inject(TOMBSTONE_OPTIONS) private readonly options: ResolvedTombstoneOptions,
    private readonly tombstones: TombstoneTable,
    private readonly lookup: TombstoneLookup,
    private readonly fences: TombstoneFences,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    if (!this.options.cache) return;
    const dataSource = this.tombstones.dataSource;
    if (!dataSource.isInitialized) {
      this.logger.warn('Tombstone lookup cache off: the DataSource is not initialized.');
      this.lookup.disable();
      return;
    }
    this.table = this.tombstones.qualifiedName;
    // Bounded (see attempt()): start-up never waits on a connection that does not answer. A
    // pooler that does not keep the listener's session throws: the app does not start.
    await this.connect(true);
    this.healthTimer = setInterval(() => void this.check(), HEALTH_INTERVAL_MS);
    this.healthTimer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    // An attempt under way sees `stopped` and closes its own client.
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.healthTimer);
    const client = this.client;
    this.client = null;
    this.lookup.deaf();
    this.fences.stopped();
    if (client) await close(client);
  }

  /**
   * Calls `listener` after every change this instance hears of, and whenever it starts listening
   * again (changes may have gone unheard meanwhile); answers the function that stops it.
   * @internal The events' dispatcher wakes on it.
   */
  onChange(listener: () => void): () => void {
    this.heard.add(listener);
    return () => this.heard.delete(listener);
  }

  /** Whether the instance is listening now. */
  get listening(): boolean {
    return this.client !== null;
  }

  /**
   * Resolves once this instance has heard every change committed before the call: it sends a
   * notification of its own and waits for it to come back (notifications arrive in commit
   * order). Writes through `TombstoneService`, the admin endpoints, and TypeORM's repositories,
   * entity managers and query builders on tracked entities need none: this instance sees them
   * once they commit. Call it after a write it cannot see (raw SQL through `query()`, a
   * function, another process) when the next request to this instance must see it. Best
   * effort: it waits at most `timeoutMs`, and returns at once when the instance is not listening
   * (its cache is not used then).
   *
   * @example
   * await dataSource.query(`DELETE FROM articles WHERE slug = $1`, [slug]); // raw SQL: captured, not seen
   * await notifications.settle();                                           // this instance now answers 410 for it
   */
  async settle(timeoutMs = 1_000): Promise<void> {
    // Best effort: the change arrives on its own a moment later.
    await this.roundTrip(timeoutMs);
  }

  /**
   * How long a notification takes to come back to this instance now, in milliseconds: a
   * notification of nothing sent through the module's DataSource, timed until the listener hears
   * it. `null` when the instance is not listening, or it did not come back within `timeoutMs`.
   * The metrics' notification lag.
   */
  async roundTrip(timeoutMs = 1_000): Promise<number | null> {
    if (this.client === null) return null;
    const id = `${this.instance}:${++this.barrierCount}`;
    const heard = new Promise<void>((resolve) => this.barriers.set(id, resolve));
    const start = performance.now();
    try {
      // Both bounded: a pool with no free connection, or a database that stalls, must not hold
      // the caller (a metrics collection, a test) longer than it asked.
      await within(this.tombstones.dataSource.query(`SELECT pg_notify($1, $2)`, [TOMBSTONE_CHANNEL, JSON.stringify({ barrier: id })]), 'settling', timeoutMs);
      await within(heard, 'settling', Math.max(1, timeoutMs - (performance.now() - start)));
      return performance.now() - start;
    } catch {
      return null;
    } finally {
      this.barriers.delete(id);
    }
  }

  private connect(atStart = false): Promise<void> {
    this.connecting ??= this.attempt(atStart).finally(() => (this.connecting = null));
    return this.connecting;
  }

  /**
   * One attempt to listen. The connection is trusted only once it has shown that it keeps its
   * session (not a pooler in transaction mode: `assertSessionKept()`) and that it hears what the
   * DataSource announces (a notification round trip). A pooler that does not keep the session
   * fails the start (`atStart`); found later, it is logged, and the module keeps trying.
   */
  private async attempt(atStart: boolean): Promise<void> {
    if (this.stopped) return;
    let client: Client | undefined;
    try {
      client = this.createClient();
      const current = client;
      current.on('notification', (message: Notification) => this.received(message));
      current.on('error', (error: Error) => this.lost(current, error));
      current.on('end', () => this.lost(current));
      await within(current.connect(), 'connecting');
      await within(current.query(`LISTEN ${TOMBSTONE_CHANNEL}`), 'LISTEN');
      // Checked on every connection: triggers dropped or disabled since are noticed too.
      const [check] = (await within(current.query(TRIGGERS_SQL, [this.table, NOTIFY_TRIGGERS, REPLICA_TRIGGER]), 'the trigger check')).rows as {
        n: number;
        subscribed: boolean;
        replicated: boolean;
      }[];
      const unannounced =
        check.n !== NOTIFY_TRIGGERS.length
          ? 'the tombstone table does not announce its changes. Run TOMBSTONE_MIGRATIONS (CreateTombstoneNotify1764115200000), or set the module option cache: false.'
          : check.subscribed && !check.replicated
            ? `the tombstone table is a logical-replication subscriber's, and the rows its apply worker writes are not announced (PostgreSQL fires no statement trigger there). ` +
              `Create the ${REPLICA_TRIGGER} trigger (docs/operations.md, "Logical-replication subscribers"), or set the module option cache: false.`
            : undefined;
      if (unannounced !== undefined) {
        this.logger.warn(`Tombstone lookup cache off: ${unannounced}`);
        this.stopped = true;
        this.lookup.disable();
        await discard(current);
        return;
      }
      const session = await sessionOf(current);
      await assertSessionKept(current, session, () => this.createClient('nestjs-tombstones listener probe'), describeTarget(this.listenConfig()));
      await this.checkHeard();
      if (this.stopped) {
        await discard(current);
        return;
      }
      this.client = current;
      this.session = session.pid;
      const again = this.attempts > 0;
      if (again) this.logger.log('Tombstone lookup cache: listening for changes again.');
      // The backoff resets only once the connection has held (a health check passed): a
      // connection that is accepted and dropped at once does not reconnect in a tight loop.
      // Every instance reconnects when the database comes back: each reloads its filter after a
      // delay of its own, not all at the same instant. At start-up, at once.
      const jitter = this.options.cache ? this.options.cache.reloadJitterMs : 0;
      this.lookup.listening(again ? Math.floor(Math.random() * jitter) : 0);
      this.fences.started();
      if (again) this.changed();
    } catch (error) {
      if (client) void discard(client);
      if (this.stopped) return;
      if (error instanceof TombstoneConfigurationError && atStart) {
        // A setup that can never keep the cache coherent is refused like an invalid option.
        this.stopped = true;
        this.lookup.disable();
        throw error;
      }
      this.logger.error(
        `Tombstone lookup cache: could not listen for changes (every miss is a query until it can): ${(error as Error)?.message ?? String(error)}`,
      );
      this.schedule();
    }
  }

  /**
   * Sends a barrier through the DataSource and waits for it on the new connection: proof that it
   * hears what the app's writes announce (same database; a session that keeps its LISTEN). The
   * listener sends nothing meanwhile: a pooler in transaction mode could link it, by chance, to
   * the server connection that listens, just as the notification arrives.
   */
  private async checkHeard(): Promise<void> {
    const id = `${this.instance}:${++this.barrierCount}`;
    const heard = new Promise<void>((resolve) => this.barriers.set(id, resolve));
    try {
      await within(this.tombstones.dataSource.query(`SELECT pg_notify($1, $2)`, [TOMBSTONE_CHANNEL, JSON.stringify({ barrier: id })]), 'the notification check');
      await within(heard, 'the notification check').catch(() => {
        throw new Error(
          `the listening connection did not hear a notification sent through the DataSource within ${STEP_TIMEOUT_MS} ms ` +
            "(cache.listen must reach the DataSource's database, directly or through a pool in session mode)",
        );
      });
    } finally {
      this.barriers.delete(id);
    }
  }

  /** The listening connection's settings: `cache.listen`, or the DataSource pool's own. */
  private listenConfig(): ClientConfig {
    const listen = this.options.cache ? this.options.cache.listen : undefined;
    if (listen === undefined) return { ...this.pool().options };
    return typeof listen === 'string' ? { connectionString: listen } : { ...(listen as ClientConfig) };
  }

  private pool(): { Client: new (config: ClientConfig) => Client; options: ClientConfig } {
    const driver = this.tombstones.dataSource.driver as unknown as { master?: { Client: new (config: ClientConfig) => Client; options: ClientConfig } };
    if (!driver.master) throw new Error('the DataSource has no PostgreSQL pool');
    return driver.master;
  }

  private createClient(applicationName = 'nestjs-tombstones listener'): Client {
    const config = this.listenConfig();
    return new (this.pool().Client)({
      ...config,
      keepAlive: true,
      connectionTimeoutMillis: config.connectionTimeoutMillis || STEP_TIMEOUT_MS,
      application_name: applicationName,
    });
  }

  private received(message: Notification): void {
    if (message.channel !== TOMBSTONE_CHANNEL) return;
    const change = parse(message.payload);
    // Some instance's barrier: nothing changed.
    if ('barrier' in change) {
      this.fences.heard(change.barrier);
      return this.barriers.get(change.barrier)?.();
    }
    this.lookup.invalidate(change);
    this.changed();
  }

  private changed(): void {
    for (const listener of this.heard) {
      try {
        listener();
      } catch (error) {
        this.logger.error(`Tombstone change listener failed: ${(error as Error)?.message}`, (error as Error)?.stack);
      }
    }
  }

  private lost(client: Client, error?: Error): void {
    if (this.client !== client) return;
    this.client = null;
    this.lookup.deaf();
    this.fences.stopped();
    void discard(client);
    if (this.stopped) return;
    this.logger.warn(`Tombstone lookup cache: stopped listening for changes${error ? ` (${error.message})` : ''}; reconnecting.`);
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    clearTimeout(this.reconnectTimer);
    const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** this.attempts++);
    this.reconnectTimer = setTimeout(() => void this.connect(), delay * (0.8 + 0.4 * Math.random()));
    this.reconnectTimer.unref();
  }

  /**
   * A connection that went quiet without an error (a half-open socket) is replaced, and so is one
   * whose statements no longer run in the session that listens (a pooler changed under it).
   */
  private async check(): Promise<void> {
    const client = this.client;
    if (client === null || this.stopped) return;
    try {
      const { pid, listening } = await sessionOf(client);
      if (pid !== this.session || !listening) {
        throw new Error(`its statements ran on PostgreSQL backend ${this.session}, then on backend ${pid}${listening ? '' : ', which does not listen'}`);
      }
      this.attempts = 0;
    } catch (error) {
      this.lost(client, error as Error);
    }
  }
}

/** A notification's change; anything unexpected drops everything (safe, only slower). */
function parse(payload: string | undefined): TombstoneInvalidation | { barrier: string } {
  try {
    const value = JSON.parse(payload ?? '') as Record<string, unknown>;
    if (typeof value.barrier === 'string') return { barrier: value.barrier };
    if (typeof value.s === 'string' && typeof value.t === 'string') {
      if (value.all === true) return { scope: value.s, type: value.t, all: true };
      if (isStrings(value.a) && isStrings(value.k)) return { scope: value.s, type: value.t, listed: value.a, unlisted: value.k };
    }
  } catch {
    // Falls through.
  }
  return { all: true };
}

function isStrings(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === 'string');
}
