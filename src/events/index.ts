// nestjs-tombstones/events: the outbox of tombstone events and where they go. A separate entry
// point, so that apps that do not use events load none of it. etc/nestjs-tombstones-events.api.md
// records this surface for review.
export { TombstoneEventsModule } from './events.module.js';
export type { TombstoneEventsOptions } from './events.options.js';
export { TombstoneEventsService, type TombstoneEventsStats } from './events.service.js';
export { OnTombstoneEvent, type OnTombstoneEventOptions } from './events.listeners.js';
export type { TombstoneEvent, TombstoneEventSink, TombstoneEventState, TombstoneEventType } from './events.types.js';
export type { TombstoneWebhookOptions } from './events.webhooks.js';
export type { TombstonePurgeOptions } from './events.purge.js';
