import { type BeforeApplicationShutdown, Inject, Injectable, Logger, type OnApplicationBootstrap } from '@nestjs/common';
import { DiscoveryService, MetadataScanner, ModuleRef } from '@nestjs/core';
import { TombstoneNotifications } from '../cache/tombstone.notifications.js';
import { cacheTagsOf } from '../tombstone.cache-tags.js';
import { TOMBSTONE_OPTIONS } from '../tombstone.constants.js';
import type { ResolvedTombstoneOptions } from '../tombstone.options.js';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import { TombstoneTable } from '../table/tombstone.table.js';
import { type TombstoneSinkCounters, TombstoneDispatcher } from './events.dispatcher.js';
import { eventEmitterSink, listenerSinks } from './events.listeners.js';
import { TOMBSTONE_EVENTS_OPTIONS } from './events.module-definition.js';
import type { ResolvedTombstoneEventsOptions } from './events.options.js';
import { TombstoneOutbox, type TombstoneSinkStats } from './events.outbox.js';
import { createPurgeSink } from './events.purge.js';
import type { TombstoneEvent, TombstoneEventSink } from './events.types.js';
import { TombstoneWebhookSink } from './events.webhooks.js';

/** Where each sink stands: the outbox's numbers (all instances) and this instance's since it started. */
export interface TombstoneEventsStats {
  readonly sinks: readonly (TombstoneSinkStats & { readonly configured: boolean; readonly thisInstance: TombstoneSinkCounters | null })[];
}

/**
 * Runs the outbox for this instance: registers its sinks at start (from then on, every change of
 * a tombstone writes an event for each), delivers their events while the app runs, and stops
 * taking new ones when it shuts down.
 */
@Injectable()
export class TombstoneEventsService implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger('TombstoneEvents');
  private dispatcher: TombstoneDispatcher | undefined;
  private made: TombstoneOutbox | undefined;
  private configured: readonly TombstoneEventSink[] = [];
  private unsubscribe: (() => void) | undefined;

  /** @internal Nest creates it: inject it. */
  constructor(
    @Inject(TOMBSTONE_EVENTS_OPTIONS) private readonly options: ResolvedTombstoneEventsOptions,
    @Inject(TOMBSTONE_OPTIONS) private readonly tombstoneOptions: ResolvedTombstoneOptions,
    private readonly tombstones: TombstoneTable,
    private readonly notifications: TombstoneNotifications,
    private readonly moduleRef: ModuleRef,
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
  ) {}

  /** The outbox on the module's DataSource (found once the app's modules are up). */
  private get outbox(): TombstoneOutbox {
    return (this.made ??= new TombstoneOutbox(this.tombstones.dataSource));
  }

  async onApplicationBootstrap(): Promise<void> {
    const sinks = await this.sinks();
    this.configured = sinks;
    if (sinks.length === 0) {
      this.logger.warn('No event sinks: no webhook, purge, listener or sink of your own is configured, so no event is written.');
      return;
    }
    await this.outbox.register(sinks.map((sink) => sink.name));
    const names = new Set(sinks.map((sink) => sink.name));
    const strangers = (await this.outbox.sinks()).filter((sink) => !names.has(sink.name));
    for (const stranger of strangers) {
      this.logger.warn(
        `Event sink "${stranger.name}" is registered in the database but not configured in this instance: events keep being ` +
          `written for it. If it is gone for good, remove it (DELETE /events/sinks/:name on the admin endpoints).`,
      );
    }
    if (!this.options.deliver) return;
    this.dispatcher = new TombstoneDispatcher(this.outbox, this.options);
    this.unsubscribe = this.notifications.onChange(() => this.dispatcher?.wake());
    this.dispatcher.start(sinks);
    this.logger.log(`Delivering tombstone events to ${sinks.map((sink) => sink.name).join(', ')}.`);
  }

  /** Stops before the DataSource closes, so that deliveries under way can be settled. */
  async beforeApplicationShutdown(): Promise<void> {
    this.unsubscribe?.();
    await this.dispatcher?.stop();
  }

  /** Pending and dead deliveries and the lag of every sink registered in the database. */
  async stats(): Promise<TombstoneEventsStats> {
    const names = new Set(this.configured.map((sink) => sink.name));
    return {
      sinks: (await this.outbox.stats()).map((stats) => ({
        ...stats,
        configured: names.has(stats.sink),
        thisInstance: this.dispatcher?.counters.get(stats.sink) ?? null,
      })),
    };
  }

  /**
   * The purge sinks, which name the tags the module's answers carry: a change of a key purges
   * what the CDN holds of it (its tombstone's answers, its found page when the route tags it, the
   * redirects that name it as their target), and the answers of the keys whose tombstones point
   * at it (`a` moved to `b`: when `b` is deleted or restored, `a`'s answer changes too).
   */
  private purgeSinks(): TombstoneEventSink[] {
    if (this.options.purge.length === 0) return [];
    if (!this.tombstoneOptions.cacheTags) {
      throw new TombstoneConfigurationError('TombstoneEventsModule: `purge` needs cache tags on the answers, and TombstoneModule has `cacheTags` off.', [
        "TombstoneModule.forRoot({ cacheTags: true }) (Fastly's Surrogate-Key), or { cacheTags: { header: 'Cache-Tag' } } for Cloudflare: see docs/cdn.md.",
      ]);
    }
    const outbox = this.outbox;
    // The keys that point at each event's key, read before each delivery (see referrers()).
    const pointing = new WeakMap<TombstoneEvent, string[]>();
    const tagsOf = (event: TombstoneEvent) =>
      [event.key, ...(pointing.get(event) ?? [])].flatMap((key) => cacheTagsOf(this.tombstoneOptions, event.resourceType, key));
    return this.options.purge.map((purge) => {
      const sink = createPurgeSink(purge, tagsOf);
      return {
        name: sink.name,
        batchSize: sink.batchSize,
        concurrency: sink.concurrency,
        async deliver(events: readonly TombstoneEvent[], signal: AbortSignal): Promise<void> {
          for (const [event, keys] of await outbox.referrers(events)) pointing.set(event, keys);
          await sink.deliver(events, signal);
        },
      };
    });
  }

  /** The `@OnTombstoneEvent()` methods; those of request-scoped providers get none, and say so. */
  private listenerSinks(): TombstoneEventSink[] {
    const { sinks, unreachable } = listenerSinks(this.discovery, this.scanner);
    for (const method of unreachable) {
      this.logger.warn(
        `@OnTombstoneEvent() on ${method} gets no events: its provider is request-scoped (or depends on one), and events ` +
          'arrive outside any request. Move the method to a singleton provider.',
      );
    }
    return sinks;
  }

  /** Every sink of this instance, each name once. */
  private async sinks(): Promise<TombstoneEventSink[]> {
    const sinks = [
      ...(this.options.listeners ? this.listenerSinks() : []),
      ...[await eventEmitterSink(this.options.eventEmitter, this.moduleRef)].filter((sink) => sink !== undefined),
      ...this.options.webhooks.map((webhook) => new TombstoneWebhookSink(webhook)),
      ...this.purgeSinks(),
      ...this.options.sinks,
    ];
    const seen = new Set<string>();
    for (const sink of sinks) {
      if (seen.has(sink.name)) {
        throw new TombstoneConfigurationError(`TombstoneEventsModule: two event sinks are named "${sink.name}".`, [
          'Sink names keep their deliveries in the outbox: give each webhook, purge or listener a name of its own (the `name` option).',
        ]);
      }
      seen.add(sink.name);
    }
    return sinks;
  }
}
