import { Inject, Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { type Attributes, type BatchObservableCallback, type Meter, metrics, type Observable } from '@opentelemetry/api';
import { within } from '../cache/tombstone.listener-session.js';
import { findTombstoneParts, type TombstoneParts } from '../tombstone.parts.js';
import { TOMBSTONE_METRICS_OPTIONS, type ResolvedTombstoneMetricsOptions } from './metrics.options.js';

/** The instruments' names and attributes: see docs/metrics.md. */
const ATTR = {
  type: 'tombstones.resource.type',
  outcome: 'tombstones.outcome',
  source: 'tombstones.source',
  status: 'http.response.status_code',
  state: 'tombstones.cache.state',
  sink: 'tombstones.sink',
  error: 'error.type',
} as const;

/** Cold lookups take a fraction of a millisecond to a few: buckets in seconds around that. */
const LOOKUP_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const CACHE_STATES = ['off', 'waiting', 'coherent'] as const;

/** Values read from the database (notification lag, outbox), at most once per `minIntervalMs`. */
interface Slow {
  lagSeconds: number;
  sinks: { sink: string; pending: number; dead: number; lagSeconds: number }[];
}

/**
 * Reports the module through OpenTelemetry. Nothing is added to a request: the answers are counted
 * in memory by the module anyway (a few array writes per miss), and every instrument but the cold
 * lookups' histogram is observed, read only when the app's metric reader collects.
 */
@Injectable()
export class TombstoneMetrics implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('TombstoneMetrics');
  private sources?: TombstoneParts;
  private meter?: Meter;
  private readonly callbacks: { callback: BatchObservableCallback; observables: Observable[] }[] = [];
  private slow: Slow = { lagSeconds: 0, sinks: [] };
  private slowReadAt = -Infinity;
  private slowReading: Promise<void> | null = null;
  /** When a notification last came back (`performance.now()`): the start, until one has. */
  private lastHeardAt = performance.now();

  constructor(
    @Inject(TOMBSTONE_METRICS_OPTIONS) private readonly options: ResolvedTombstoneMetricsOptions,
    private readonly moduleRef: ModuleRef,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    const sources = (this.sources = await findTombstoneParts(this.moduleRef, 'TombstoneMetricsModule'));
    const meter = (this.meter = (this.options.meterProvider ?? metrics.getMeterProvider()).getMeter('nestjs-tombstones'));

    const duration = meter.createHistogram('tombstones.lookup.duration', {
      description: 'How long the query of a cold lookup took (a miss neither the filter nor the store could answer).',
      unit: 's',
      advice: { explicitBucketBoundaries: LOOKUP_BUCKETS },
    });
    sources.lookup.onQueried = (seconds, error) =>
      duration.record(seconds, error === null ? {} : { [ATTR.error]: (error as Error)?.name || '_OTHER' });

    const answers = meter.createObservableCounter('tombstones.answers', {
      description: 'Answers given to misses of @Tombstoned() routes, by resource type, outcome, source and status (found resources are not counted).',
      unit: '{answer}',
    });
    const state = meter.createObservableUpDownCounter('tombstones.cache.state', {
      description: 'The lookup cache: 1 for its current state (coherent: listening for changes; waiting: not listening, every miss a query; off), 0 for the others.',
      unit: '{state}',
    });
    const storeEntries = meter.createObservableUpDownCounter('tombstones.store.entries', { description: 'Answers held by the lookup store.', unit: '{entry}' });
    const storeSize = meter.createObservableUpDownCounter('tombstones.store.size', { description: 'Estimated memory held by the default lookup store.', unit: 'By' });
    const filterKeys = meter.createObservableUpDownCounter('tombstones.filter.keys', { description: 'Keys in the membership filter.', unit: '{key}' });
    const filterCapacity = meter.createObservableUpDownCounter('tombstones.filter.capacity', { description: 'Keys the membership filter was sized for.', unit: '{key}' });
    const filterSize = meter.createObservableUpDownCounter('tombstones.filter.size', { description: 'Memory held by the membership filter.', unit: 'By' });
    const filterUse = meter.createObservableGauge('tombstones.filter.utilization', {
      description: 'Keys in the membership filter over its capacity (above 1, it answers more unknown keys with a query).',
      unit: '1',
    });
    const hitsDropped = meter.createObservableCounter('tombstones.hits.dropped', {
      description: 'Hits of tombstones not counted because hitCounts.maxPending tombstones were already waiting to be written.',
      unit: '{hit}',
    });
    const missesDropped = meter.createObservableCounter('tombstones.misses.dropped', {
      description: 'Misses not logged because missLog.maxPending keys were already waiting to be written.',
      unit: '{miss}',
    });
    this.observe((observer) => {
      for (const count of sources.tally.read()) {
        observer.observe(answers, count.count, {
          [ATTR.type]: count.type,
          [ATTR.outcome]: count.outcome,
          [ATTR.source]: count.source,
          [ATTR.status]: count.status,
        });
      }
      const stats = sources.lookup.stats();
      for (const name of CACHE_STATES) observer.observe(state, stats.state === name ? 1 : 0, { [ATTR.state]: name });
      observer.observe(storeEntries, stats.entries);
      const bytes = (sources.store as { bytes?: unknown }).bytes;
      if (typeof bytes === 'number') observer.observe(storeSize, bytes);
      observer.observe(filterKeys, stats.filter.keys);
      observer.observe(filterCapacity, stats.filter.capacity);
      observer.observe(filterSize, stats.filter.bytes);
      if (stats.filter.capacity > 0) observer.observe(filterUse, stats.filter.keys / stats.filter.capacity);
      observer.observe(hitsDropped, sources.hits.droppedTotal);
      observer.observe(missesDropped, sources.misses.droppedTotal);
    }, [answers, state, storeEntries, storeSize, filterKeys, filterCapacity, filterSize, filterUse, hitsDropped, missesDropped]);

    const lag = meter.createObservableGauge('tombstones.notification.lag', {
      description:
        'How long a change notification takes to reach this instance, measured with a notification of nothing; while none comes back, the time since one last did.',
      unit: 's',
    });
    const slow: Observable[] = [lag];
    const pending = meter.createObservableUpDownCounter('tombstones.events.pending', { description: 'Event deliveries not made yet, per sink.', unit: '{delivery}' });
    const outboxLag = meter.createObservableGauge('tombstones.events.lag', { description: 'Age of the oldest event not delivered yet, per sink.', unit: 's' });
    const dead = meter.createObservableUpDownCounter('tombstones.events.dead_letters', { description: 'Deliveries that failed every attempt, per sink.', unit: '{delivery}' });
    if (sources.events) slow.push(pending, outboxLag, dead);
    this.observe(async (observer) => {
      const read = await this.readSlow();
      observer.observe(lag, read.lagSeconds);
      if (!sources.events) return;
      for (const sink of read.sinks) {
        const attributes: Attributes = { [ATTR.sink]: sink.sink };
        observer.observe(pending, sink.pending, attributes);
        observer.observe(outboxLag, sink.lagSeconds, attributes);
        observer.observe(dead, sink.dead, attributes);
      }
    }, slow);
  }

  onApplicationShutdown(): void {
    if (this.sources) this.sources.lookup.onQueried = null;
    for (const { callback, observables } of this.callbacks.splice(0)) this.meter?.removeBatchObservableCallback(callback, observables);
  }

  private observe(callback: BatchObservableCallback, observables: Observable[]): void {
    this.meter!.addBatchObservableCallback(callback, observables);
    this.callbacks.push({ callback, observables });
  }

  /**
   * The values that cost a round trip (a notification, the outbox's counts), read again only when
   * the last read is older than `minIntervalMs`, so that frequent collections (several readers,
   * a scrape storm) cost the database nothing more. A failed read keeps the last values.
   */
  private async readSlow(): Promise<Slow> {
    if (performance.now() - this.slowReadAt >= this.options.minIntervalMs) {
      this.slowReading ??= (async () => {
        const { notifications, events } = this.sources!;
        const lagMs = await notifications.roundTrip(this.options.timeoutMs);
        const now = performance.now();
        if (lagMs !== null) this.lastHeardAt = now;
        let sinks = this.slow.sinks;
        if (events) {
          try {
            sinks = (await within(events.stats(), 'the outbox read', this.options.timeoutMs)).sinks.map((sink) => ({
              sink: sink.sink,
              pending: sink.pending,
              dead: sink.dead,
              lagSeconds: sink.lagMs / 1000,
            }));
          } catch (error) {
            this.logger.warn(`Could not read the outbox for the metrics: ${(error as Error)?.message ?? String(error)}`);
          }
        }
        // Not heard: the time since a notification last came back (since the start if none
        // has), at least the time it was waited for. It grows until the instance hears again.
        const lagSeconds = (lagMs ?? Math.max(this.options.timeoutMs, now - this.lastHeardAt)) / 1000;
        this.slow = { lagSeconds, sinks };
        this.slowReadAt = performance.now();
      })().finally(() => (this.slowReading = null));
    }
    if (this.slowReading) await this.slowReading;
    return this.slow;
  }
}
