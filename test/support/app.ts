import type { INestApplication, ModuleMetadata } from '@nestjs/common';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { Test } from '@nestjs/testing';
import { TombstoneLookup } from '../../src/cache/tombstone.lookup.js';
import { TombstoneNotifications } from '../../src/index.js';

export type AdapterName = 'express' | 'fastify';

/** Every e2e suite runs once per HTTP adapter. */
export const ADAPTERS: AdapterName[] = ['express', 'fastify'];

/** Boots a real Nest app on the given adapter, ready for supertest. */
export async function bootApp(adapter: AdapterName, metadata: ModuleMetadata): Promise<INestApplication> {
  const moduleRef = await Test.createTestingModule(metadata).compile();
  if (adapter === 'fastify') {
    const app = moduleRef.createNestApplication<NestFastifyApplication>(new FastifyAdapter());
    app.useLogger(false);
    await app.init();
    await app.getHttpAdapter().getInstance().ready();
    await filterLoaded(app);
    return app;
  }
  const app = moduleRef.createNestApplication();
  app.useLogger(false);
  await app.init();
  await filterLoaded(app);
  return app;
}

/** Waits for the lookup cache's filter to load, so that what a test counts does not depend on when. */
export async function filterLoaded(app: INestApplication): Promise<void> {
  let lookup: TombstoneLookup;
  try {
    lookup = app.get(TombstoneLookup, { strict: false });
  } catch {
    return; // No TombstoneModule in this app.
  }
  await lookup.loaded();
}

/**
 * Waits until the app has heard every change committed before the call: a write in SQL or by
 * another instance, or the notification of a write of its own, which would otherwise arrive in
 * the middle of a count of queries. `TombstoneNotifications.settle()`, which sends a notification
 * of its own and waits for it to come back. With the cache off there is nothing to wait for; a
 * cache that is not listening fails, where settle() would return at once and a test would go on
 * before the change arrived.
 */
export async function settled(app: INestApplication): Promise<void> {
  const { state } = app.get(TombstoneLookup, { strict: false }).stats();
  if (state === 'off') return;
  const notifications = app.get(TombstoneNotifications, { strict: false });
  if (state !== 'coherent' || !notifications.listening) throw new Error(`settled(): the app's cache is ${state}, not listening for changes.`);
  // Best effort with a deadline of its own: a generous one, so that a busy machine is not a failure.
  await notifications.settle(30_000);
}
