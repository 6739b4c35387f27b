import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import { type Fail, withDefaults } from '../tombstone.options-resolve.js';
import type { TombstoneEventSink } from './events.types.js';
import { type TombstonePurgeOptions, validatePurgeOptions } from './events.purge.js';
import { type TombstoneWebhookOptions, validateWebhookOptions } from './events.webhooks.js';

/**
 * Options of `TombstoneEventsModule.forRoot()`, or what `forRootAsync()`'s factory returns. Each
 * field's initialiser below is its default. Every instance of the app should have the same sinks:
 * each registers its own in the database, and an event is delivered once per sink, by whichever
 * instance takes it.
 *
 * @example
 * TombstoneEventsModule.forRoot({
 *   webhooks: [{ url: 'https://search.example.com/hooks/tombstones', secret: process.env.WEBHOOK_SECRET }],
 *   purge: [{ provider: 'fastly', serviceId: process.env.FASTLY_SERVICE_ID, token: process.env.FASTLY_TOKEN }],
 * })
 */
export class TombstoneEventsOptions {
  /** Delivers events to the app's `@OnTombstoneEvent()` methods. Default: `true`. */
  listeners?: boolean = true;

  /**
   * Emits every event on `@nestjs/event-emitter`'s `EventEmitter2` under its type
   * (`tombstone.created`, …) and waits for its async listeners: `'auto'` when the app imports
   * `EventEmitterModule`, `false` never, `true` fails at start without it. Default: `'auto'`.
   */
  eventEmitter?: boolean | 'auto' = 'auto';

  /**
   * Webhook endpoints, each a sink (`webhook:<name>`) that POSTs every event signed per the
   * Standard Webhooks specification (see docs/webhooks.md). Default: `[]`.
   */
  webhooks?: TombstoneWebhookOptions[] = [];

  /**
   * CDN purges (Fastly, Cloudflare, or any HTTP endpoint), each a sink (`purge:<provider>` or
   * `purge:<name>`) that purges the cache tags of every changed key: the tags `TombstoneModule`'s
   * `cacheTags` puts on the answers, which must be on (see docs/cdn.md). Default: `[]`.
   */
  purge?: TombstonePurgeOptions[] = [];

  /** Sinks of your own (see `TombstoneEventSink`). Default: `[]`. */
  sinks?: TombstoneEventSink[] = [];

  /** Attempts of a delivery before it becomes a dead letter. Default: `10`. */
  maxAttempts?: number = 10;

  /** Delay before the first retry; each retry doubles it, with jitter. Default: `1000` ms. */
  retryDelayMs?: number = 1000;

  /** Longest delay between two attempts. Default: `3600000` ms (one hour). */
  maxRetryDelayMs?: number = 3_600_000;

  /**
   * How long an instance holds the deliveries it took. One that dies holding them gives them up
   * when this runs out, and another instance retries them; a delivery still running then is
   * aborted. Default: `60000` ms.
   */
  leaseMs?: number = 60_000;

  /**
   * How often each sink looks for due deliveries when nothing woke it: new events wake it at once
   * while the lookup cache listens for changes (the default). Default: `1000` ms.
   */
  pollIntervalMs?: number = 1000;

  /** Deliveries a sink takes at a time (split into its batches). Default: `100`. */
  claimSize?: number = 100;

  /** How long delivered events are kept. Default: `7` days. */
  retentionDays?: number = 7;

  /** How long dead letters are kept for a retry. Default: `30` days. */
  deadLetterRetentionDays?: number = 30;

  /** Whether this instance delivers. `false` only registers the sinks (write-only instances). Default: `true`. */
  deliver?: boolean = true;
}

/** The options once resolved: every field set. Internal. */
export type ResolvedTombstoneEventsOptions = Required<TombstoneEventsOptions>;

const LIMITS = {
  maxAttempts: [1, 1000],
  retryDelayMs: [1, 86_400_000],
  maxRetryDelayMs: [1, 7 * 86_400_000],
  leaseMs: [1000, 3_600_000],
  pollIntervalMs: [10, 3_600_000],
  claimSize: [1, 10_000],
  retentionDays: [0, 3650],
  deadLetterRetentionDays: [0, 3650],
} satisfies Partial<Record<keyof TombstoneEventsOptions, [number, number]>>;

/** Every option checked and set: a mistake fails the app's start with a message that says what to change. */
export function resolveTombstoneEventsOptions(options: TombstoneEventsOptions | undefined): ResolvedTombstoneEventsOptions {
  const given = options ?? {};
  if (typeof given !== 'object') throw new TombstoneConfigurationError('TombstoneEventsModule: the options must be an object.');
  const fail: Fail = (message, ...solutions) => {
    throw new TombstoneConfigurationError(`TombstoneEventsModule: ${message}`, solutions);
  };
  const resolved = withDefaults('', TombstoneEventsOptions, given, fail) as ResolvedTombstoneEventsOptions;
  for (const [name, [min, max]] of Object.entries(LIMITS) as [keyof typeof LIMITS, [number, number]][]) {
    const value = resolved[name];
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new TombstoneConfigurationError(`TombstoneEventsModule: \`${name}\` must be an integer from ${min} to ${max}; got ${JSON.stringify(value)}.`);
    }
  }
  if (resolved.maxRetryDelayMs < resolved.retryDelayMs) {
    throw new TombstoneConfigurationError('TombstoneEventsModule: `maxRetryDelayMs` must be at least `retryDelayMs`.');
  }
  for (const name of ['listeners', 'deliver'] as const) {
    if (typeof resolved[name] !== 'boolean') throw new TombstoneConfigurationError(`TombstoneEventsModule: \`${name}\` must be true or false.`);
  }
  if (resolved.eventEmitter !== 'auto' && typeof resolved.eventEmitter !== 'boolean') {
    throw new TombstoneConfigurationError("TombstoneEventsModule: `eventEmitter` must be true, false or 'auto'.");
  }
  if (!Array.isArray(resolved.webhooks)) throw new TombstoneConfigurationError('TombstoneEventsModule: `webhooks` must be an array.');
  resolved.webhooks.forEach((webhook, i) => validateWebhookOptions(webhook, `TombstoneEventsModule \`webhooks[${i}]\``));
  if (!Array.isArray(resolved.purge)) throw new TombstoneConfigurationError('TombstoneEventsModule: `purge` must be an array.');
  resolved.purge.forEach((purge, i) => validatePurgeOptions(purge, `TombstoneEventsModule \`purge[${i}]\``));
  if (!Array.isArray(resolved.sinks)) throw new TombstoneConfigurationError('TombstoneEventsModule: `sinks` must be an array.');
  for (const sink of resolved.sinks) validateSink(sink, 'TombstoneEventsModule `sinks`');
  return resolved;
}

/** A sink's shape: a name the outbox can keep, a `deliver()` function, sane batch and concurrency. */
export function validateSink(sink: unknown, where: string): asserts sink is TombstoneEventSink {
  const candidate = sink as Partial<TombstoneEventSink> | null;
  if (typeof candidate !== 'object' || candidate === null || typeof candidate.deliver !== 'function') {
    throw new TombstoneConfigurationError(`${where}: a sink is an object with a \`name\` and a \`deliver(events, signal)\` method.`);
  }
  if (typeof candidate.name !== 'string' || !/^[\x21-\x7e][\x20-\x7e]{0,199}$/.test(candidate.name)) {
    throw new TombstoneConfigurationError(`${where}: a sink's \`name\` must be 1 to 200 printable ASCII characters; got ${JSON.stringify(candidate.name)}.`);
  }
  for (const field of ['batchSize', 'concurrency'] as const) {
    const value = candidate[field];
    if (value !== undefined && (!Number.isInteger(value) || value < 1 || value > 1000)) {
      throw new TombstoneConfigurationError(`${where}: sink ${JSON.stringify(candidate.name)}'s \`${field}\` must be an integer from 1 to 1000.`);
    }
  }
}
