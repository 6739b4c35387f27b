import { Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { HealthIndicatorService, type HealthIndicatorResult } from '@nestjs/terminus';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import { findTombstoneParts, type TombstoneParts } from '../tombstone.parts.js';
import { type Fail, withDefaults } from '../tombstone.options-resolve.js';
import { HealthProbe, type ProbeOutcome } from './health.probe.js';
import { judge, type TombstoneHealthDetails } from './health.verdict.js';

/** Options of one `isHealthy()` check. Every field is optional; its initialiser is its default. */
export class TombstoneHealthOptions {
  /** Longest wait for the database's answer to `SELECT 1`, and for the outbox's figures; 1 to 60000. Default: `1000`. */
  timeoutMs?: number = 1000;

  /**
   * How long an answer of the database (and the outbox's figures) is reused by later checks, so
   * that a storm of scrapes costs the database one query per period; 0 to 60000, `0` asks at
   * every check. Default: `1000`.
   */
  cacheMs?: number = 1000;

  /**
   * With `TombstoneEventsModule`: the events are degraded when the oldest pending delivery is
   * older than this (a sink is behind, or failing and retrying); 1000 to 2592000000 (30 days).
   * Default: `900000` (15 minutes: ten failed attempts at the default retry delays take about 17).
   */
  maxEventLagMs?: number = 900_000;
}

const RANGES: Record<keyof TombstoneHealthOptions, [number, number]> = {
  timeoutMs: [1, 60_000],
  cacheMs: [0, 60_000],
  maxEventLagMs: [1000, 30 * 86_400_000],
};

/**
 * A `@nestjs/terminus` health indicator of the module: the database (a bounded `SELECT 1`), the
 * listening connection, the lookup cache and its filter, the circuit breaker, the hit counts and
 * the misses log, and the outbox of `TombstoneEventsModule` when the app has it.
 *
 * `down` (Terminus answers 503) only when the database does not answer: writes fail then, and
 * every lookup the cache cannot answer gets the plain 404. `degraded` (still 200) when the app
 * answers right but works harder or less completely than it should: not listening (every miss is
 * a query), the filter loading or over its capacity, the circuit open (misses that need the
 * database get the plain 404 at once), dead letters or a sink far behind. Everything else `up`.
 * See docs/operations.md#health.
 *
 * @example
 * @Controller('health')
 * class HealthController {
 *   constructor(private readonly health: HealthCheckService, private readonly tombstones: TombstoneHealthIndicator) {}
 *
 *   @Get()
 *   @HealthCheck()
 *   check() {
 *     return this.health.check([() => this.tombstones.isHealthy('tombstones')]);
 *   }
 * }
 *
 * @Module({ imports: [TerminusModule], controllers: [HealthController], providers: [TombstoneHealthIndicator] })
 * class HealthModule {}
 */
@Injectable()
export class TombstoneHealthIndicator implements OnModuleInit {
  private readonly logger = new Logger('TombstoneModule');
  private parts?: TombstoneParts;
  private readonly database = new HealthProbe(() => this.ping());
  // Checked only when the app has the events module.
  private readonly outbox = new HealthProbe(() => this.parts!.events!.stats());
  private databaseWasDown = false;

  /** @internal Nest creates it: add it to the providers of a module that imports `TerminusModule`. */
  constructor(
    private readonly health: HealthIndicatorService,
    private readonly moduleRef: ModuleRef,
  ) {}

  /** Finds the module's parts, and the events module if the app has it (loaded only then). */
  async onModuleInit(): Promise<void> {
    this.parts = await findTombstoneParts(this.moduleRef, 'TombstoneHealthIndicator');
  }

  /**
   * The module's health under `key`: `up`, `degraded` or `down`, with the facts of each part.
   * Never rejects for the database's sake: a database that fails or does not answer within
   * `timeoutMs` is reported `down`. Throws a `TombstoneConfigurationError` for invalid options.
   */
  async isHealthy<const Key extends string = 'tombstones'>(key: Key = 'tombstones' as Key, options: TombstoneHealthOptions = {}): Promise<HealthIndicatorResult<Key>> {
    const settings = resolveHealthOptions(options);
    if (typeof key !== 'string' || key === '') throw new TombstoneConfigurationError('TombstoneHealthIndicator: the key must be a non-empty string.', ["e.g. isHealthy('tombstones')"]);
    const parts = this.parts;
    if (parts === undefined) throw new TombstoneConfigurationError('TombstoneHealthIndicator: isHealthy() was called before the app started.');
    const [database, events] = await Promise.all([
      this.database.check(settings.timeoutMs, settings.cacheMs),
      parts.events ? this.outbox.check(settings.timeoutMs, settings.cacheMs) : undefined,
    ]);
    this.logDatabase(database);
    const { status, message, details } = judge(
      {
        options: parts.options,
        database,
        listening: parts.notifications.listening,
        lookup: parts.lookup.stats(),
        breaker: parts.lookup.breaker.state,
        hits: { pending: parts.hits.pendingCount, dropped: parts.hits.droppedTotal },
        misses: { pending: parts.misses.pendingCount, dropped: parts.misses.droppedTotal },
        events,
      },
      settings,
    );
    const session = this.health.check(key);
    const data: TombstoneHealthDetails & { message?: string } = message === undefined ? details : { message, ...details };
    if (status === 'down') return session.down(data);
    return status === 'degraded' ? session.degraded(data) : session.up(data);
  }

  /** One round trip on a connection of the module's DataSource (its pool). */
  private async ping(): Promise<void> {
    const dataSource = (this.parts as NonNullable<TombstoneHealthIndicator['parts']>).table.dataSource;
    if (!dataSource.isInitialized) throw new Error('the DataSource is not initialized');
    await dataSource.query('SELECT 1');
  }

  /** The details say little of a failure (no addresses); the log says it all, once per outage. */
  private logDatabase(outcome: ProbeOutcome<void>): void {
    if (outcome.cached) return;
    if (!outcome.ok && !this.databaseWasDown) {
      this.logger.error(`Tombstone health: the database check failed: ${(outcome.error as Error)?.message ?? String(outcome.error)}`);
    } else if (outcome.ok && this.databaseWasDown) {
      this.logger.log('Tombstone health: the database answers again.');
    }
    this.databaseWasDown = !outcome.ok;
  }
}

function resolveHealthOptions(options: TombstoneHealthOptions): Required<TombstoneHealthOptions> {
  const fail: Fail = (message, ...solutions) => {
    throw new TombstoneConfigurationError(`TombstoneHealthIndicator: ${message}`, solutions);
  };
  if (typeof options !== 'object' || options === null) fail('the options of isHealthy() must be an object.');
  const resolved = withDefaults('isHealthy()', TombstoneHealthOptions, options, fail) as Required<TombstoneHealthOptions>;
  for (const [name, [min, max]] of Object.entries(RANGES)) {
    const value = resolved[name as keyof TombstoneHealthOptions];
    if (!Number.isInteger(value) || value < min || value > max) {
      fail(`${name} must be a whole number of milliseconds from ${min} to ${max}, not ${JSON.stringify(value)}.`);
    }
  }
  return resolved;
}
