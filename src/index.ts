import { CreateTombstones1763769600000 } from '../migrations/1763769600000-create-tombstones.js';
import { CreateTombstoneCapture1763856000000 } from '../migrations/1763856000000-create-tombstone-capture.js';
import { CreateTombstoneMisses1764028800000 } from '../migrations/1764028800000-create-tombstone-misses.js';
import { CreateTombstoneNotify1764115200000 } from '../migrations/1764115200000-create-tombstone-notify.js';
import { Tombstone } from './tombstone.entity.js';
export { TOMBSTONE_KINDS, type TombstoneAnswer, type TombstoneKind, type TombstoneRequest, type TombstoneResolution, type TombstoneScopeSource } from './tombstone.types.js';

/** Entities to add to your DataSource's `entities`. */
export const TOMBSTONE_ENTITIES = [Tombstone] as const;

/** Migrations to add to your DataSource's `migrations`, in order. Never `synchronize`. */
export const TOMBSTONE_MIGRATIONS = [
  CreateTombstones1763769600000,
  CreateTombstoneCapture1763856000000,
  CreateTombstoneMisses1764028800000,
  CreateTombstoneNotify1764115200000,
] as const;

export {
  CreateTombstoneCapture1763856000000,
  CreateTombstoneMisses1764028800000,
  CreateTombstoneNotify1764115200000,
  CreateTombstones1763769600000,
};
export {
  LruTombstoneCacheStore,
  type LruTombstoneCacheStoreOptions,
  type TombstoneCacheEntry,
  TombstoneCacheStore,
} from './cache/tombstone.cache.js';
export { TombstoneLookup, type TombstoneLookupStats } from './cache/tombstone.lookup.js';
export { TOMBSTONE_CHANNEL, TombstoneNotifications } from './cache/tombstone.notifications.js';
export {
  CAPTURE_TRIGGERS,
  type EntityClass,
  installTombstoneCapture,
  KEY_REUSE_SQLSTATE,
  removeTombstoneCapture,
  type TombstoneCaptureKey,
  type TombstoneCaptureSpec,
  tombstoneCaptureSpec,
  TombstoneKeyReuseError,
  TombstoneTracked,
  type TombstoneTrackedOptions,
} from './capture/tombstone.capture.js';
export { TombstoneContext, type TombstoneContextValues } from './tombstone.context.js';
export { Tombstoned, type TombstonedOptions } from './tombstone.decorator.js';
export { Tombstone } from './tombstone.entity.js';
export {
  TombstoneConfigurationError,
  TombstoneCycleError,
  TombstoneError,
  TombstoneSelfTargetError,
  TombstoneValidationError,
} from './tombstone.exceptions.js';
export { TombstoneAnswerException, TombstoneExceptionFilter } from './tombstone.filter.js';
export { TombstoneHitCounter } from './counters/tombstone.hits.js';
export { TombstoneMissException } from './tombstone.miss.js';
export { TombstoneMissLog } from './counters/tombstone.misses.js';
export { TombstoneModule } from './tombstone.module.js';
export type { TombstoneCacheControl, TombstoneFilterOptions, TombstoneHitCountOptions, TombstoneLookupCacheOptions, TombstoneMissLogOptions, TombstoneModuleOptions } from './tombstone.options.js';
export { type RenderedAnswer, type TombstoneFormat, TombstoneRenderer } from './tombstone.renderer.js';
export { type TombstoneDeletionOptions, type TombstoneMergeOptions, type TombstoneMergeResult, type TombstoneMove, type TombstoneMoveOptions, TombstoneService, type TombstoneWriteOptions } from './tombstone.service.js';
