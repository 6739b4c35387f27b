// nestjs-tombstones/terminus: a @nestjs/terminus health indicator of the module. A separate entry
// point, so that apps without Terminus load none of it (and need not install it).
// etc/nestjs-tombstones-terminus.api.md records this surface for review.
export { TombstoneHealthIndicator, TombstoneHealthOptions } from './tombstone.health.js';
export type { TombstoneHealthDetails } from './health.verdict.js';
