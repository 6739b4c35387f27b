// nestjs-tombstones: the public API. Everything not listed here is internal and may change in
// any release; etc/nestjs-tombstones.api.md records this surface for review.
import { CreateTombstones1763769600000 } from '../migrations/1763769600000-create-tombstones.js';
import { CreateTombstoneCapture1763856000000 } from '../migrations/1763856000000-create-tombstone-capture.js';
import { CreateTombstoneMisses1764028800000 } from '../migrations/1764028800000-create-tombstone-misses.js';
import { CreateTombstoneNotify1764115200000 } from '../migrations/1764115200000-create-tombstone-notify.js';
import { CreateTombstoneEvents1764979200000 } from '../migrations/1764979200000-create-tombstone-events.js';
import { SpeedUpTombstoneNotify1765065600000 } from '../migrations/1765065600000-speed-up-tombstone-notify.js';
import { CreateTombstoneFilterSnapshot1765152000000 } from '../migrations/1765152000000-create-tombstone-filter-snapshot.js';
import { AddTombstonePrefix1765238400000 } from '../migrations/1765238400000-add-tombstone-prefix.js';
import { Tombstone } from './tombstone.entity.js';

/** Entities to add to your DataSource's `entities`. */
export const TOMBSTONE_ENTITIES = [Tombstone] as const;

/** Migrations to add to your DataSource's `migrations`, in order. Never `synchronize`. */
export const TOMBSTONE_MIGRATIONS = [
  CreateTombstones1763769600000,
  CreateTombstoneCapture1763856000000,
  CreateTombstoneMisses1764028800000,
  CreateTombstoneNotify1764115200000,
  CreateTombstoneEvents1764979200000,
  SpeedUpTombstoneNotify1765065600000,
  CreateTombstoneFilterSnapshot1765152000000,
  AddTombstonePrefix1765238400000,
] as const;

// The module and its routes
export { TombstoneModule } from './tombstone.module.js';
export type { TombstoneModuleOptions } from './tombstone.options.js';
export { Tombstoned, type TombstonedOptions } from './tombstone.decorator.js';
export type { TombstoneKind, TombstoneRequest, TombstoneResolution } from './tombstone.types.js';

// The table, and recording what happened
export { Tombstone } from './tombstone.entity.js';
export { TombstoneService, type TombstoneMergeOptions, type TombstoneMergeResult, type TombstoneWriteOptions } from './tombstone.service.js';
export { TombstoneContext } from './tombstone.context.js';

// Automatic capture
export { installTombstoneCapture, removeTombstoneCapture } from './capture/tombstone.capture.js';
export { TombstoneKeyReuseError, TombstoneTracked, type TombstoneTrackedOptions } from './capture/tombstone.tracked.js';

// Extension points
export { type RenderedAnswer, TombstoneRenderer } from './tombstone.renderer.js';
export type { TombstoneAnswer } from './tombstone.types.js';
export { type TombstoneCacheEntry, TombstoneCacheStore } from './cache/tombstone.cache.js';
export { TombstoneNotifications } from './cache/tombstone.notifications.js';

// Errors
export { TombstoneConfigurationError, TombstoneCycleError, TombstoneError, TombstoneValidationError } from './tombstone.exceptions.js';
