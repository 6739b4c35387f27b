// nestjs-tombstones/admin: the admin endpoints. A separate entry point, so that the core module
// never loads class-validator, class-transformer or @nestjs/swagger.
export {
  ListTombstoneMissesQuery,
  PurgeTombstoneMissesQuery,
  ResolveTombstoneMissDto,
  TOMBSTONE_MISS_SORTS,
  type TombstoneMissSort,
} from './misses/misses.dto.js';
export { TombstoneMissesAdminController } from './misses/misses.controller.js';
export { type TombstoneMissPage, TombstoneMissesAdminService, type TombstoneMissView } from './misses/misses.service.js';
export {
  CreateTombstoneDto,
  ListTombstonesQuery,
  ResolveTombstonesDto,
  StaleTombstonesQuery,
  UpdateTombstoneDto,
} from './tombstones/tombstones.dto.js';
export { TombstoneAdminController } from './tombstones/tombstones.controller.js';
export { TombstoneAdminModule } from './admin.module.js';
export type { TombstoneAdminOptions } from './admin.options.js';
export {
  TombstoneAdminService,
  type TombstonePage,
  type TombstoneResolveResult,
  type TombstoneView,
} from './tombstones/tombstones.service.js';
