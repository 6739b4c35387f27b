// nestjs-tombstones/admin: the admin endpoints. A separate entry point, so that the core module
// never loads class-validator, class-transformer or @nestjs/swagger. etc/nestjs-tombstones-admin.api.md
// records this surface for review.
export { TombstoneAdminModule } from './admin.module.js';
export type { TombstoneAdminOptions } from './admin.options.js';
export type { TombstoneMissPage, TombstoneMissView } from './misses/misses.service.js';
export type { TombstonePage, TombstoneResolveResult, TombstoneView } from './tombstones/tombstones.service.js';
export type { TombstoneImportError, TombstoneImportReport } from './transfer/transfer.service.js';
