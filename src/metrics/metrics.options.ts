import type { MeterProvider } from '@opentelemetry/api';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import { type Fail, withDefaults } from '../tombstone.options-resolve.js';

/**
 * Options of `TombstoneMetricsModule.forRoot()`. Each field's initialiser below is its default.
 *
 * @example
 * TombstoneMetricsModule.forRoot({ minIntervalMs: 30_000 })
 */
export class TombstoneMetricsOptions {
  /**
   * Where the instruments are created. Default: the global one (`metrics.getMeterProvider()` of
   * `@opentelemetry/api`), read when the app starts: register your SDK's provider before.
   */
  meterProvider?: MeterProvider = undefined;

  /**
   * The values that cost a round trip to the database (the notification lag, the outbox's
   * counts) are read again at most this often, whatever the number of collections. Default:
   * `10000` ms.
   */
  minIntervalMs?: number = 10_000;

  /** How long such a read may take before the last values are reported. Default: `2000` ms. */
  timeoutMs?: number = 2_000;
}

/** The options once resolved. Internal. */
export type ResolvedTombstoneMetricsOptions = Required<Omit<TombstoneMetricsOptions, 'meterProvider'>> & Pick<TombstoneMetricsOptions, 'meterProvider'>;

/** Token of the resolved options. Internal. */
export const TOMBSTONE_METRICS_OPTIONS = Symbol('TOMBSTONE_METRICS_OPTIONS');

/** Every option checked: a mistake fails the app's start with a message that says what to change. */
export function resolveTombstoneMetricsOptions(options: TombstoneMetricsOptions | undefined): ResolvedTombstoneMetricsOptions {
  const given = options ?? {};
  const fail: Fail = (message, ...solutions) => {
    throw new TombstoneConfigurationError(`TombstoneMetricsModule: ${message}`, solutions);
  };
  if (typeof given !== 'object' || given === null) fail('the options must be an object.');
  const resolved = withDefaults('', TombstoneMetricsOptions, given, fail) as ResolvedTombstoneMetricsOptions;
  for (const [name, min, max] of [['minIntervalMs', 0, 86_400_000], ['timeoutMs', 1, 60_000]] as const) {
    const value = resolved[name];
    if (!Number.isInteger(value) || value < min || value > max) fail(`\`${name}\` must be an integer from ${min} to ${max}; got ${JSON.stringify(value)}.`);
  }
  const provider = resolved.meterProvider as { getMeter?: unknown } | undefined;
  if (provider !== undefined && (typeof provider !== 'object' || provider === null || typeof provider.getMeter !== 'function')) {
    fail('`meterProvider` must be an OpenTelemetry MeterProvider (an object with getMeter()).');
  }
  return resolved;
}
