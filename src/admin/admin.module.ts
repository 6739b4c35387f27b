import { type DynamicModule, Module } from '@nestjs/common';
import { TombstoneEventsAdminController } from './events/events.controller.js';
import { TombstoneEventsAdminService } from './events/events.service.js';
import { TombstoneMissesAdminController } from './misses/misses.controller.js';
import { TombstoneMissesAdminService } from './misses/misses.service.js';
import { TombstoneAdminController } from './tombstones/tombstones.controller.js';
import {
  ADMIN_ASYNC_OPTIONS_TYPE,
  ADMIN_MODULE_OPTIONS,
  ADMIN_OPTIONS_TYPE,
  ConfigurableAdminModuleClass,
  TOMBSTONE_ADMIN_OPTIONS,
} from './admin.module-definition.js';
import { resolveTombstoneAdminOptions } from './admin.options.js';
import { TombstoneAdminService } from './tombstones/tombstones.service.js';
import { TombstoneAdminWrites } from './admin.settle.js';
import { TombstoneTransferService } from './transfer/transfer.service.js';
import { TombstoneAdminUiController } from './ui/ui.controller.js';

/**
 * Admin endpoints for tombstones: list, read, create, update, delete, batch resolve, the stale
 * view, import and export; over the misses log: list, read, resolve into a tombstone, delete,
 * purge; and over the events outbox: events and their deliveries, dead letters to retry or
 * discard, sinks to unregister; with `ui`, a web page over them at `<mount>/ui/`. Refuses to start without an access control. Needs `TombstoneModule`, and
 * `class-validator`, `class-transformer` and `@nestjs/swagger` installed.
 *
 * @example
 * @Module({
 *   imports: [
 *     TombstoneModule.forRoot({ isGlobal: true }),
 *     TombstoneAdminModule.forRoot({ guard: AdminTokenGuard }),
 *     RouterModule.register([{ path: 'admin', module: TombstoneAdminModule }]),
 *   ],
 * })
 * export class AppModule {}
 */
@Module({
  controllers: [TombstoneAdminController, TombstoneMissesAdminController, TombstoneEventsAdminController, TombstoneAdminUiController],
  providers: [
    { provide: TOMBSTONE_ADMIN_OPTIONS, useFactory: resolveTombstoneAdminOptions, inject: [ADMIN_MODULE_OPTIONS] },
    TombstoneAdminService,
    TombstoneTransferService,
    TombstoneMissesAdminService,
    TombstoneEventsAdminService,
    TombstoneAdminWrites,
  ],
  exports: [TombstoneAdminService, TombstoneTransferService, TombstoneMissesAdminService, TombstoneEventsAdminService],
})
export class TombstoneAdminModule extends ConfigurableAdminModuleClass {
  static override forRoot(options: typeof ADMIN_OPTIONS_TYPE): DynamicModule {
    return super.forRoot(options);
  }

  static override forRootAsync(options: typeof ADMIN_ASYNC_OPTIONS_TYPE): DynamicModule {
    return super.forRootAsync(options);
  }
}
