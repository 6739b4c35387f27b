import { readFileSync } from 'node:fs';
import { jest } from '@jest/globals';
import { type INestApplication, Logger } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import pg from 'pg';
import request from 'supertest';
import { TombstoneLookup } from '../src/cache/tombstone.lookup.js';
import { TOMBSTONE_ENTITIES, TombstoneModule, TombstoneService } from '../src/index.js';
import { ItemsController } from './fixtures/items.fixture.js';
import { bootApp, settled } from './support/app.js';
import { eventually } from './support/eventually.js';
import { type LogicalPair, query, startLogicalPair } from './support/logical.js';

/**
 * The replica trigger, as docs/operations.md gives it to copy ("Logical-replication subscribers"):
 * the SQL block that creates `tombstones_notify_replica()`, so that what the docs say is what runs.
 */
function replicaTriggerSql(): string {
  const docs = readFileSync(new URL('../docs/operations.md', import.meta.url), 'utf8');
  const blocks = [...docs.matchAll(/```sql\n([\s\S]*?)```/g)].map((match) => match[1].replace(/^ {3}/gm, ''));
  const sql = blocks.filter((block) => block.includes('CREATE FUNCTION tombstones_notify_replica()'));
  if (sql.length !== 1) throw new Error(`docs/operations.md has ${sql.length} SQL blocks that create tombstones_notify_replica(), not 1`);
  return sql[0];
}

/**
 * Instances on a logical-replication subscriber of the tombstone table (test/support/logical.ts:
 * two private PostgreSQL 18 servers, the publisher with `wal_level = logical`). The app reads the
 * subscriber; the tombstones are written on the publisher, in SQL, so that the app hears of them
 * only through the subscriber's notifications. One adapter: how it hears does not depend on it.
 */
describe('logical-replication subscribers', () => {
  let pair: LogicalPair;
  let app: INestApplication;
  /** Writes on the publisher. */
  let publisher: pg.Client;
  /** Listens on the subscriber beside the app, to see who sends each notification. */
  let listener: pg.Client;
  /** What the listener heard: the sender's process id, and the payload, parsed. */
  const heard: { pid: number; change: unknown }[] = [];

  beforeAll(async () => {
    pair = await startLogicalPair();
    await query(pair.subscriber, replicaTriggerSql());
    app = await bootApp('express', {
      imports: [
        TypeOrmModule.forRoot({ type: 'postgres', url: pair.subscriber, entities: [...TOMBSTONE_ENTITIES], logging: false }),
        // Nothing written on the subscriber (docs: "What the subscriber's instances may write").
        TombstoneModule.forRoot({ isGlobal: true, hitCounts: false }),
      ],
      controllers: [ItemsController],
    });
    publisher = new pg.Client({ connectionString: pair.publisher });
    await publisher.connect();
    listener = new pg.Client({ connectionString: pair.subscriber });
    await listener.connect();
    listener.on('notification', (message) => heard.push({ pid: message.processId, change: JSON.parse(message.payload ?? 'null') as unknown }));
    await listener.query('LISTEN nestjs_tombstones');
  });

  afterAll(async () => {
    await listener?.end();
    await publisher?.end();
    await app?.close();
    await pair?.stop();
  });

  const answer = async (key: string) => {
    const res = await request(app.getHttpServer()).get(`/items/${key}`);
    return `${res.status}${res.headers.location ? ` ${res.headers.location as string}` : ''}`;
  };
  const answers = async (keys: string[]) => Object.fromEntries(await Promise.all(keys.map(async (key) => [key, await answer(key)])));
  const onSubscriber = async (key: string) =>
    (await query<{ n: number }>(pair.subscriber, `SELECT count(*)::int AS n FROM tombstones WHERE resource_key = $1`, [key]))[0].n;
  const applyWorker = async () =>
    (await query<{ pid: number }>(pair.subscriber, `SELECT pid FROM pg_stat_subscription WHERE subname = $1 AND relid IS NULL`, [pair.subscription]))[0].pid;

  it('with the replica trigger, the apply worker announces each row it writes: the instance on the subscriber answers 410 and 301 for what the publisher wrote, with nothing called', async () => {
    const lookup = app.get(TombstoneLookup, { strict: false });
    expect(lookup.stats().state).toBe('coherent');
    expect(await answers(['gone', 'moved'])).toEqual({ gone: '404', moved: '404' });
    const filtered = lookup.stats().filtered;

    await publisher.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'gone', 'deleted')`);
    await publisher.query(`INSERT INTO tombstones (resource_type, resource_key, kind, target_key) VALUES ('item', 'moved', 'moved', 'live')`);
    await eventually(async () => expect(await answers(['gone', 'moved'])).toEqual({ gone: '410', moved: '301 /items/live' }));
    // Until they were heard of, the filter answered both, with no query: the cache was in use.
    expect(lookup.stats().filtered).toBeGreaterThan(filtered);
    // Each announced by the apply worker, in the notifications every instance reads.
    const worker = await applyWorker();
    for (const key of ['gone', 'moved']) {
      expect(heard).toContainEqual({ pid: worker, change: { s: '', t: 'item', a: [key], k: [] } });
    }

    // Changed and deleted on the publisher.
    await publisher.query(`UPDATE tombstones SET kind = 'moved', target_key = 'target' WHERE resource_key = 'gone'`);
    await publisher.query(`DELETE FROM tombstones WHERE resource_key = 'moved'`);
    await eventually(async () => expect(await answers(['gone', 'moved'])).toEqual({ gone: '301 /items/target', moved: '404' }));

    // A TRUNCATE is announced by the module's own statement trigger, which the apply worker fires.
    await publisher.query(`TRUNCATE tombstones`);
    await eventually(async () => expect(await answers(['gone', 'moved'])).toEqual({ gone: '404', moved: '404' }));
    expect(heard).toContainEqual({ pid: worker, change: { all: true } });
    expect(lookup.stats().state).toBe('coherent');
  });

  it('without it, the instance never hears of them: it answers stale until it reconnects, then finds the trigger missing and turns its cache off', async () => {
    const lookup = app.get(TombstoneLookup, { strict: false });
    await query(pair.subscriber, `ALTER TABLE tombstones DISABLE TRIGGER tombstones_notify_replica`);
    expect(await answer('stale')).toBe('404');

    await publisher.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'stale', 'deleted')`);
    await eventually(async () => expect(await onSubscriber('stale')).toBe(1));
    // Every notification committed before this point has been heard: none was about it.
    await settled(app);
    expect(heard.filter((message) => JSON.stringify(message.change).includes('"stale"'))).toEqual([]);
    expect(await answer('stale')).toBe('404');
    expect(await app.get(TombstoneService).resolve('item', 'stale')).toMatchObject({ state: 'gone' });

    // Its listening connection dropped, the instance reconnects and checks the triggers again.
    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    try {
      await query(pair.subscriber, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'nestjs-tombstones listener'`);
      await eventually(() => expect(lookup.stats().state).toBe('off'));
      expect(warn).toHaveBeenCalledWith(expect.stringContaining(`the tombstone table is a logical-replication subscriber's`));
      expect(warn).toHaveBeenCalledWith(expect.stringContaining('tombstones_notify_replica'));
    } finally {
      warn.mockRestore();
    }
    // Every miss is a query now: right, never stale.
    expect(await answer('stale')).toBe('410');
  });
});
