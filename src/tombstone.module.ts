import { type DynamicModule, Module } from '@nestjs/common';
import { APP_INTERCEPTOR, ModuleRef } from '@nestjs/core';
import { LruTombstoneCacheStore, TombstoneCacheStore } from './cache/tombstone.cache.js';
import { TOMBSTONE_OPTIONS } from './tombstone.constants.js';
import { TombstoneCacheTags } from './tombstone.cache-tags.js';
import { TombstonePreparedAnswers } from './tombstone.prepared.js';
import { TombstoneResponseWriter } from './tombstone.response-writer.js';
import { TombstoneKeys } from './tombstone.keys.js';
import { TombstoneMissResolver } from './tombstone.miss.js';
import { TombstoneAnswerTally } from './counters/tombstone.answers.js';
import { TombstoneHitCounter } from './counters/tombstone.hits.js';
import { TombstoneMissLog } from './counters/tombstone.misses.js';
import { TombstoneLookup } from './cache/tombstone.lookup.js';
import { TombstoneFences } from './cache/tombstone.fences.js';
import { TombstoneReplicas } from './cache/tombstone.replicas.js';
import { TombstoneNotifications } from './cache/tombstone.notifications.js';
import { ConfigurableModuleClass, MODULE_OPTIONS_TOKEN, type OPTIONS_TYPE } from './tombstone.module-definition.js';
import type { ResolvedTombstoneOptions } from './tombstone.options.js';
import { resolveTombstoneOptions } from './tombstone.options-resolve.js';
import { TombstoneContextInterceptor } from './tombstone.context.js';
import { TombstoneRenderer } from './tombstone.renderer.js';
import { TombstoneRequestIds } from './tombstone.request-id.js';
import { TombstoneSuggestions } from './suggestions/tombstone.suggestions.js';
import { TombstoneService } from './tombstone.service.js';
import { TombstoneCaptureCheck } from './capture/tombstone.capture-check.js';
import { TombstoneCaptureWrites } from './capture/tombstone.capture-writes.js';
import { TombstoneChanges } from './table/tombstone.changes.js';
import { TombstoneTable } from './table/tombstone.table.js';
import { TombstoneWriter } from './table/tombstone.writer.js';

/**
 * Remembers what happened to resources and makes `@Tombstoned()` routes answer 404, 410 or a
 * redirect accordingly. Needs a TypeORM DataSource with `TOMBSTONE_ENTITIES` and
 * `TOMBSTONE_MIGRATIONS`.
 *
 * @example
 * @Module({
 *   imports: [
 *     TypeOrmModule.forRoot({ type: 'postgres', url, entities: [...TOMBSTONE_ENTITIES], migrations: [...TOMBSTONE_MIGRATIONS], migrationsRun: true }),
 *     TombstoneModule.forRoot({ isGlobal: true, scope: { header: 'x-tenant-id' } }),
 *   ],
 * })
 * export class AppModule {}
 */
@Module({
  providers: [
    { provide: TOMBSTONE_OPTIONS, useFactory: resolveTombstoneOptions, inject: [MODULE_OPTIONS_TOKEN] },
    {
      provide: TombstoneRenderer,
      useFactory: async (options: ResolvedTombstoneOptions, moduleRef: ModuleRef) => {
        const renderer = options.renderer ? await moduleRef.create(options.renderer) : new TombstoneRenderer();
        renderer.problemTypeBase = options.problemTypeBase;
        return renderer;
      },
      inject: [TOMBSTONE_OPTIONS, ModuleRef],
    },
    {
      provide: TombstoneCacheStore,
      useFactory: ({ cache }: ResolvedTombstoneOptions) =>
        (cache && cache.store) || new LruTombstoneCacheStore(cache ? { maxEntries: cache.maxEntries, maxBytes: cache.maxBytes } : { maxEntries: 1 }),
      inject: [TOMBSTONE_OPTIONS],
    },
    {
      // Decided from the resolved options, so forRoot() and forRootAsync() agree. Without an
      // `actor` the factory gives nothing and Nest registers no interceptor: a global interceptor
      // would cost every route of the application a little.
      provide: APP_INTERCEPTOR,
      useFactory: (options: ResolvedTombstoneOptions) => (options.actor ? new TombstoneContextInterceptor(options) : null),
      inject: [TOMBSTONE_OPTIONS],
    },
    TombstoneChanges,
    TombstoneKeys,
    TombstoneTable,
    TombstoneWriter,
    TombstoneCaptureCheck,
    TombstoneService,
    TombstoneFences,
    TombstoneReplicas,
    TombstoneCaptureWrites,
    TombstoneLookup,
    TombstoneNotifications,
    TombstoneCacheTags,
    TombstoneResponseWriter,
    TombstonePreparedAnswers,
    TombstoneRequestIds,
    TombstoneMissResolver,
    TombstoneSuggestions,
    TombstoneAnswerTally,
    TombstoneHitCounter,
    TombstoneMissLog,
  ],
  // TOMBSTONE_OPTIONS: what purges by cache tag need to name the tags the answers carry (cacheTagsOf).
  exports: [
    TOMBSTONE_OPTIONS,
    TombstoneService,
    TombstoneTable,
    TombstoneWriter,
    TombstoneLookup,
    TombstoneNotifications,
    TombstoneCacheStore,
    TombstoneHitCounter,
    TombstoneMissLog,
    TombstoneAnswerTally,
  ],
})
export class TombstoneModule extends ConfigurableModuleClass {
  /** Registers the module; every option has a default, so `forRoot()` alone works. */
  static override forRoot(options: typeof OPTIONS_TYPE = {}): DynamicModule {
    return super.forRoot(options);
  }
}
