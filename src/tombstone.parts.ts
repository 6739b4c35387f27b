import type { ModuleRef } from '@nestjs/core';
import { TombstoneCacheStore } from './cache/tombstone.cache.js';
import { TombstoneLookup } from './cache/tombstone.lookup.js';
import { TombstoneNotifications } from './cache/tombstone.notifications.js';
import { TombstoneAnswerTally } from './counters/tombstone.answers.js';
import { TombstoneHitCounter } from './counters/tombstone.hits.js';
import { TombstoneMissLog } from './counters/tombstone.misses.js';
import type { TombstoneEventsService } from './events/events.service.js';
import { TombstoneTable } from './table/tombstone.table.js';
import { TOMBSTONE_OPTIONS } from './tombstone.constants.js';
import { TombstoneConfigurationError } from './tombstone.exceptions.js';
import type { ResolvedTombstoneOptions } from './tombstone.options.js';

/** The module's services that its companions (metrics, health) read. */
export interface TombstoneParts {
  options: ResolvedTombstoneOptions;
  table: TombstoneTable;
  lookup: TombstoneLookup;
  notifications: TombstoneNotifications;
  store: TombstoneCacheStore;
  hits: TombstoneHitCounter;
  misses: TombstoneMissLog;
  tally: TombstoneAnswerTally;
  /** `TombstoneEventsService`, when the app imports `TombstoneEventsModule`. */
  events: TombstoneEventsService | null;
}

/**
 * Finds TombstoneModule's services wherever the app imported it (global or not), and the events
 * module's when it is there: its code is loaded only then. `who` names the companion in the error
 * an app without TombstoneModule gets at start.
 */
export async function findTombstoneParts(moduleRef: ModuleRef, who: string): Promise<TombstoneParts> {
  const find = <T>(token: unknown): T => moduleRef.get(token as never, { strict: false });
  let parts: Omit<TombstoneParts, 'events'>;
  try {
    parts = {
      options: find(TOMBSTONE_OPTIONS),
      table: find(TombstoneTable),
      lookup: find(TombstoneLookup),
      notifications: find(TombstoneNotifications),
      store: find(TombstoneCacheStore),
      hits: find(TombstoneHitCounter),
      misses: find(TombstoneMissLog),
      tally: find(TombstoneAnswerTally),
    };
  } catch {
    throw new TombstoneConfigurationError(`${who} needs TombstoneModule, which the app does not import.`, [
      'Import TombstoneModule.forRoot() in your application module.',
    ]);
  }
  let events: TombstoneEventsService | null = null;
  try {
    const { TombstoneEventsService } = await import('./events/events.service.js');
    events = find(TombstoneEventsService);
  } catch {
    // No TombstoneEventsModule.
  }
  return { ...parts, events };
}
