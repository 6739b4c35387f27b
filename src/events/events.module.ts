import { type DynamicModule, Module } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import {
  ConfigurableEventsModuleClass,
  EVENTS_ASYNC_OPTIONS_TYPE,
  EVENTS_MODULE_OPTIONS,
  EVENTS_OPTIONS_TYPE,
  TOMBSTONE_EVENTS_OPTIONS,
} from './events.module-definition.js';
import { resolveTombstoneEventsOptions } from './events.options.js';
import { TombstoneEventsService } from './events.service.js';

/**
 * Delivers every change of a tombstone, whoever made it, from a transactional outbox: to the
 * app's `@OnTombstoneEvent()` methods, `@nestjs/event-emitter`, signed webhooks, and CDN purges.
 * At least once, in commit order per key, with retries, backoff and dead letters. Needs
 * `TombstoneModule` (with `isGlobal: true`) and `TOMBSTONE_MIGRATIONS` run.
 *
 * @example
 * @Module({
 *   imports: [
 *     TombstoneModule.forRoot({ isGlobal: true }),
 *     TombstoneEventsModule.forRoot({ webhooks: [{ url: 'https://hooks.example.com/tombstones', secret: process.env.WEBHOOK_SECRET! }] }),
 *   ],
 * })
 * export class AppModule {}
 */
@Module({
  imports: [DiscoveryModule],
  providers: [
    { provide: TOMBSTONE_EVENTS_OPTIONS, useFactory: resolveTombstoneEventsOptions, inject: [EVENTS_MODULE_OPTIONS] },
    TombstoneEventsService,
  ],
  exports: [TombstoneEventsService],
})
export class TombstoneEventsModule extends ConfigurableEventsModuleClass {
  static override forRoot(options: typeof EVENTS_OPTIONS_TYPE = {}): DynamicModule {
    return super.forRoot(options);
  }

  static override forRootAsync(options: typeof EVENTS_ASYNC_OPTIONS_TYPE): DynamicModule {
    return super.forRootAsync(options);
  }
}
