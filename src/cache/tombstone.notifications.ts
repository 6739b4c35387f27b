import { randomUUID } from 'node:crypto';
import { Inject, Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import type { Client, ClientConfig, Notification } from 'pg';
import { TOMBSTONE_CHANNEL, TOMBSTONE_OPTIONS } from '../tombstone.constants.js';
import { TombstoneFences } from './tombstone.fences.js';
import { TombstoneLookup } from './tombstone.lookup.js';
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
/** How often the listening connection is checked, and how long a check may take. */
const HEALTH_INTERVAL_MS = 15_000;
const HEALTH_TIMEOUT_MS = 5_000;
const CLOSE_TIMEOUT_MS = 1_000;
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
    // Bounded (see attempt()): start-up never waits on a connection that does not answer.
    await this.connect();
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
      await this.tombstones.dataSource.query(`SELECT pg_notify($1, $2)`, [TOMBSTONE_CHANNEL, JSON.stringify({ barrier: id })]);
      await within(heard, 'settling', timeoutMs);
      return performance.now() - start;
    } catch {
      return null;
    } finally {
      this.barriers.delete(id);
    }
  }

  private connect(): Promise<void> {
    this.connecting ??= this.attempt().finally(() => (this.connecting = null));
    return this.connecting;
  }

  private async attempt(): Promise<void> {
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
        current.removeAllListeners();
        current.on('error', () => undefined);
        await close(current);
        return;
      }
      if (this.stopped) {
        current.removeAllListeners();
        current.on('error', () => undefined);
        await close(current);
        return;
      }
      this.client = current;
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
      client?.removeAllListeners();
      client?.on('error', () => undefined);
      if (client) void close(client);
      this.logger.error(
        `Tombstone lookup cache: could not listen for changes (every miss is a query until it can): ${(error as Error)?.message ?? String(error)}`,
      );
      this.schedule();
    }
  }

  private createClient(): Client {
    const driver = this.tombstones.dataSource.driver as unknown as { master?: { Client: new (config: ClientConfig) => Client; options: ClientConfig } };
    const pool = driver.master;
    if (!pool) throw new Error('the DataSource has no PostgreSQL pool');
    const listen = this.options.cache ? this.options.cache.listen : undefined;
    const config: ClientConfig =
      listen === undefined ? { ...pool.options } : typeof listen === 'string' ? { connectionString: listen } : { ...(listen as ClientConfig) };
    return new pool.Client({
      ...config,
      keepAlive: true,
      connectionTimeoutMillis: config.connectionTimeoutMillis || HEALTH_TIMEOUT_MS,
      application_name: 'nestjs-tombstones listener',
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
    client.removeAllListeners();
    client.on('error', () => undefined);
    void close(client);
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

  /** A connection that went quiet without an error (a half-open socket) is replaced. */
  private async check(): Promise<void> {
    const client = this.client;
    if (client === null || this.stopped) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        client.query('SELECT 1'),
        new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer in ${HEALTH_TIMEOUT_MS} ms`)), HEALTH_TIMEOUT_MS))),
      ]);
      this.attempts = 0;
    } catch (error) {
      this.lost(client, error as Error);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Waits for a step of the listening connection at most `ms`. */
async function within<T>(step: Promise<T>, what: string, ms = HEALTH_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      step,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} got no answer in ${ms} ms`)), ms);
        timer.unref();
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Ends a client politely, and destroys its socket if the server does not answer in time. */
async function close(client: Client): Promise<void> {
  try {
    await within(client.end(), 'closing', CLOSE_TIMEOUT_MS);
  } catch {
    (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
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
