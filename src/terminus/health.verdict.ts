import type { TombstoneCircuitState } from '../cache/tombstone.breaker.js';
import type { TombstoneLookupStats } from '../cache/tombstone.lookup.js';
import type { TombstoneEventsStats } from '../events/events.service.js';
import type { ResolvedTombstoneOptions } from '../tombstone.options.js';
import type { ProbeOutcome } from './health.probe.js';

type Part = 'up' | 'degraded' | 'off';

/**
 * What `TombstoneHealthIndicator.isHealthy()` reports under its key, beside `status` and, unless
 * everything is up, a `message` that says what is wrong and what it costs. Each part has its own
 * `status`; `off` is a part the options turned off. No connection string, address or error
 * message is reported (a health endpoint is often public): the log has them.
 */
export type TombstoneHealthDetails = {
  /** A `SELECT 1` on the module's DataSource. `down` makes the whole check `down`. */
  database: {
    status: 'up' | 'down';
    /** How long the check waited, in milliseconds. */
    responseTimeMs: number;
    /** The outcome of an earlier check, reused for `cacheMs`. */
    cached: boolean;
    /** Why it is down: `timeout`, an error code (`ECONNREFUSED`, `57P01`), a message of plain words, or the error's class name. */
    error?: string;
  };
  /** The connection that listens for changes of the table (the lookup cache's coherence). */
  listener: { status: 'up' | 'degraded' | 'off'; listening: boolean };
  /** The lookup cache and its membership filter. */
  cache: {
    status: 'up' | 'degraded' | 'off';
    state: 'off' | 'waiting' | 'coherent';
    entries: number;
    filter: { status: 'up' | 'degraded' | 'off'; ready: boolean; overCapacity: boolean };
  };
  /** The circuit breaker in front of lookups (`closed` is up). */
  breaker: { status: 'up' | 'degraded' | 'off'; state: 'closed' | 'open' | 'half-open' | 'off' };
  /** Hit counts and the misses log, waiting in memory; `dropped`: events dropped since start (bounded memory, see `maxPending`). Never degrades. */
  counters: { status: 'up'; hits: { pending: number; dropped: number } | 'off'; misses: { pending: number; dropped: number } | 'off' };
  /** The outbox, over every sink registered in the database; only with `TombstoneEventsModule`. */
  events?: {
    status: 'up' | 'degraded';
    cached: boolean;
    sinks: number;
    pending: number;
    deadLetters: number;
    /** Age of the oldest pending delivery, in milliseconds (0 when none is pending). */
    oldestPendingMs: number;
    /** Why the figures are missing, as `database.error` says it. */
    error?: string;
  };
};

/** What the indicator read, at one instant. */
export interface HealthFacts {
  options: Pick<ResolvedTombstoneOptions, 'cache' | 'circuitBreaker' | 'hitCounts' | 'missLog'>;
  database: ProbeOutcome<void>;
  listening: boolean;
  lookup: TombstoneLookupStats;
  breaker: TombstoneCircuitState;
  hits: { pending: number; dropped: number };
  misses: { pending: number; dropped: number };
  events?: ProbeOutcome<TombstoneEventsStats>;
}

/**
 * Up, degraded or down, and why. Down only when the database does not answer: a health check
 * that takes an instance out of its load balancer while it can still answer right is a bug, and
 * everything else here still answers right (more slowly, or with a plain 404 that a lookup would
 * have explained).
 */
export function judge(facts: HealthFacts, settings: { timeoutMs: number; maxEventLagMs: number }): { status: 'up' | 'degraded' | 'down'; message?: string; details: TombstoneHealthDetails } {
  const { options, database, lookup } = facts;
  const problems: string[] = [];
  const worse = (message: string): 'degraded' => {
    problems.push(message);
    return 'degraded';
  };

  const databaseDetails: TombstoneHealthDetails['database'] = database.ok
    ? { status: 'up', responseTimeMs: database.ms, cached: database.cached }
    : { status: 'down', responseTimeMs: database.ms, cached: database.cached, error: reasonOf(database) };
  if (!database.ok) {
    problems.push(
      database.timedOut
        ? `the database did not answer within ${settings.timeoutMs} ms: writes fail, and misses the cache cannot answer get the plain 404`
        : `the database check failed (${databaseDetails.error}): writes fail, and misses the cache cannot answer get the plain 404`,
    );
  }

  // The cache: off by option is up; off because the table does not announce its changes is not.
  const cacheWanted = options.cache !== false;
  const cacheBroken = cacheWanted && lookup.state === 'off';
  const listener: TombstoneHealthDetails['listener'] = {
    status: !cacheWanted || cacheBroken ? 'off' : facts.listening ? 'up' : worse('not listening for changes: every miss is a query until it listens again (answers stay right)'),
    listening: facts.listening,
  };
  const filterWanted = options.cache !== false && options.cache.filter !== false;
  // Whether it is over capacity, not how many keys it holds: whoever reads /health would see the
  // count move with every tombstone written, in every tenant.
  const { ready } = lookup.filter;
  const overCapacity = ready && lookup.filter.keys > lookup.filter.capacity;
  let filterStatus: Part = 'off';
  if (filterWanted && !cacheBroken) {
    filterStatus = 'up';
    // While not listening the filter is not used: said once, by the listener.
    if (facts.listening && !ready) filterStatus = worse('the membership filter is loading: unknown keys are queries until it has loaded (answers stay right)');
    else if (overCapacity) filterStatus = worse('the membership filter holds more keys than it was sized for: more unknown keys than planned reach the database (its size and use are in stats() and the metrics)');
  }
  const cache: TombstoneHealthDetails['cache'] = {
    status: !cacheWanted
      ? 'off'
      : cacheBroken
        ? worse('the lookup cache is off: the tombstone table does not announce its changes (run TOMBSTONE_MIGRATIONS), so every miss is a query')
        : filterStatus === 'degraded' || !facts.listening
          ? 'degraded'
          : 'up',
    state: lookup.state,
    entries: lookup.entries,
    filter: { status: filterStatus, ready, overCapacity },
  };

  const breaker: TombstoneHealthDetails['breaker'] =
    options.circuitBreaker === false
      ? { status: 'off', state: 'off' }
      : {
          status: facts.breaker === 'closed' ? 'up' : worse(`the circuit breaker is ${facts.breaker}: misses that need the database get the plain 404 without a query until a lookup finds it again`),
          state: facts.breaker,
        };

  const counters: TombstoneHealthDetails['counters'] = {
    status: 'up',
    hits: options.hitCounts === false ? 'off' : facts.hits,
    misses: options.missLog === false ? 'off' : facts.misses,
  };

  const details: TombstoneHealthDetails = { database: databaseDetails, listener, cache, breaker, counters };
  if (facts.events !== undefined) details.events = eventsDetails(facts.events, settings.maxEventLagMs, worse);
  const status = !database.ok ? 'down' : problems.length > 0 ? 'degraded' : 'up';
  return problems.length > 0 ? { status, message: `${problems.join('; ')}.`, details } : { status, details };
}

function eventsDetails(outcome: ProbeOutcome<TombstoneEventsStats>, maxLagMs: number, worse: (message: string) => 'degraded'): NonNullable<TombstoneHealthDetails['events']> {
  if (!outcome.ok) {
    const error = reasonOf(outcome);
    return {
      status: worse(`the outbox's figures could not be read (${error})`),
      cached: outcome.cached,
      sinks: 0,
      pending: 0,
      deadLetters: 0,
      oldestPendingMs: 0,
      error,
    };
  }
  const sinks = outcome.value.sinks;
  const pending = sinks.reduce((n, sink) => n + sink.pending, 0);
  const deadLetters = sinks.reduce((n, sink) => n + sink.dead, 0);
  const oldestPendingMs = sinks.reduce((n, sink) => Math.max(n, sink.lagMs), 0);
  let status: 'up' | 'degraded' = 'up';
  if (deadLetters > 0) status = worse(`${deadLetters} event deliveries are dead letters: retry or discard them (admin endpoints, /events)`);
  if (oldestPendingMs > maxLagMs) status = worse(`the oldest pending event delivery is ${Math.round(oldestPendingMs / 1000)} s old (more than ${maxLagMs / 1000} s): a sink is behind or failing`);
  return { status, cached: outcome.cached, sinks: sinks.length, pending, deadLetters, oldestPendingMs };
}

/**
 * Why a check failed, without anything it may carry (an address, a user name): `timeout`, the
 * error's code (`ECONNREFUSED`, `57P01`), its message when that is plain words
 * (`Connection terminated unexpectedly`), or else its class name.
 */
function reasonOf(outcome: { error: unknown; timedOut: boolean }): string {
  if (outcome.timedOut) return 'timeout';
  const error = outcome.error as { code?: unknown; message?: unknown; name?: unknown } | null;
  if (typeof error?.code === 'string' && /^[A-Za-z0-9_]{1,40}$/.test(error.code)) return error.code;
  // Letters, spaces and a little punctuation: no digit, dot, colon, slash, @ or quote, so no
  // address, host, port, path or quoted name.
  if (typeof error?.message === 'string' && /^[A-Za-z][A-Za-z ,'()-]{0,118}[A-Za-z)]$/.test(error.message)) return error.message;
  return typeof error?.name === 'string' && /^[A-Za-z0-9_]{1,60}$/.test(error.name) ? error.name : 'Error';
}
