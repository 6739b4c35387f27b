import type { INestApplication } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import pg from 'pg';
import request from 'supertest';
import { TombstoneModule, type TombstoneModuleOptions, TombstoneService } from '../src/index.js';
import { ItemsController } from './fixtures/items.fixture.js';
import { bootApp, settled } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';
import { QueryCounter } from './support/query-counter.js';
import { TombstoneHitCounter } from '../src/counters/tombstone.hits.js';
import { TombstoneLookup } from '../src/cache/tombstone.lookup.js';
import { LruTombstoneCacheStore } from '../src/cache/tombstone.cache.js';
import { TOMBSTONE_CHANNEL } from '../src/tombstone.constants.js';


// Two instances of one app on one database: a write on one must change the other's answers,
// whoever writes (the recording API, SQL), and a rolled-back write must change nothing.
describe('lookup cache across instances', () => {
  let db: TestDatabase;
  let a: INestApplication;
  let b: INestApplication;
  let httpB: ReturnType<typeof request>;
  let writer: TombstoneService;
  let lookupB: TombstoneLookup;
  const counterB = new QueryCounter();

  const boot = (options: TombstoneModuleOptions = {}, counter?: QueryCounter) =>
    bootApp('express', {
      imports: [
        TypeOrmModule.forRoot(counter ? { ...db.options(), logging: true, logger: counter } : db.options()),
        TombstoneModule.forRoot({ scope: { header: 'x-tenant-id' }, ...options }),
      ],
      controllers: [ItemsController],
    });
  const lookupsB = () => counterB.queries.filter((q) => /FROM tombstones t/.test(q)).length;

  beforeAll(async () => {
    db = await createTestDatabase();
    a = await boot();
    b = await boot({}, counterB);
    httpB = request(b.getHttpServer());
    writer = a.get(TombstoneService);
    lookupB = b.get(TombstoneLookup);
  });

  afterAll(async () => {
    await a?.close();
    await b?.close();
    await db?.drop();
  });

  beforeEach(() => counterB.reset());

  it('listens, and answers unknown keys from its filter without a query', async () => {
    expect(lookupB.stats()).toMatchObject({ state: 'coherent', filter: { ready: true } });
    for (let i = 0; i < 200; i++) await httpB.get(`/items/unknown-${i}`).expect(404);
    expect(lookupsB()).toBe(0);
    expect(counterB.queries).toEqual([]);
  });

  it('answers a hidden key exactly as an unknown key: no query either', async () => {
    await writer.recordHidden('item', 'c-hidden');
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'c-hidden-sql', 'hidden')`);
    await settled(b); // B has heard both writes
    counterB.reset();
    for (const key of ['c-hidden', 'c-hidden-sql', 'c-never']) {
      const res = await httpB.get(`/items/${key}`).expect(404);
      expect(res.body).toMatchObject({ error: 'not_found', id: key });
    }
    expect(counterB.queries).toEqual([]);
  });

  it('keeps a 410 in memory: one query for many answers', async () => {
    await writer.recordDeletion('item', 'c-gone');
    await eventually(async () => void (await httpB.get('/items/c-gone').expect(410)));
    counterB.reset();
    for (let i = 0; i < 50; i++) await httpB.get('/items/c-gone').expect(410);
    expect(lookupsB()).toBe(0);
  });

  it('shares one query between concurrent lookups of one key', async () => {
    await writer.recordDeletion('item', 'c-herd');
    // B has heard the write: no invalidation comes in the middle of the herd.
    await settled(b);
    await lookupB.loaded();
    counterB.reset();
    const server = b.getHttpServer();
    const answers = await Promise.all(Array.from({ length: 20 }, () => request(server).get('/items/c-herd')));
    expect(answers.map((r) => r.status)).toEqual(Array(20).fill(410));
    expect(lookupsB()).toBe(1);
  });

  it('a write on one instance changes the other’s answer: unknown → 410 → restored', async () => {
    await httpB.get('/items/c-flip').expect(404);
    await writer.recordDeletion('item', 'c-flip', { reason: 'Expired' });
    await eventually(async () => void (await httpB.get('/items/c-flip').expect(410)));
    await httpB.get('/items/c-flip').expect(410); // now cached
    await writer.restore('item', 'c-flip');
    await eventually(async () => void (await httpB.get('/items/c-flip').expect(404)));
    // A new reason shows at once on the other instance too.
    await writer.recordDeletion('item', 'c-flip', { reason: 'First' });
    await eventually(async () => expect((await httpB.get('/items/c-flip').expect(410)).body.reason).toBe('First'));
    await writer.recordDeletion('item', 'c-flip', { reason: 'Second' });
    await eventually(async () => expect((await httpB.get('/items/c-flip').expect(410)).body.reason).toBe('Second'));
  });

  it('a change of a redirect’s target changes the redirect’s cached answer (chains)', async () => {
    await writer.recordMove('item', 'c-old', 'c-new');
    await eventually(async () => expect((await httpB.get('/items/c-old').expect(301)).headers.location).toBe('/items/c-new'));
    // c-old's own row does not change: only c-new's does.
    await writer.recordDeletion('item', 'c-new', { reason: 'Gone for good' });
    await eventually(async () => expect((await httpB.get('/items/c-old').expect(410)).body.reason).toBe('Gone for good'));
    await writer.restore('item', 'c-new');
    await eventually(async () => expect((await httpB.get('/items/c-old').expect(301)).headers.location).toBe('/items/c-new'));
    await writer.recordMove('item', 'c-new', 'c-newer');
    await eventually(async () => expect((await httpB.get('/items/c-old').expect(301)).headers.location).toBe('/items/c-newer'));
  });

  it('a rolled-back write changes nothing, on either instance', async () => {
    await httpB.get('/items/c-rolled-back').expect(404);
    const dataSource = a.get(TombstoneService).dataSource;
    await expect(
      dataSource.transaction(async (manager) => {
        await writer.recordDeletion('item', 'c-rolled-back', { manager });
        throw new Error('the delete failed');
      }),
    ).rejects.toThrow('the delete failed');
    // Notifications come in commit order: once a later write is seen, an earlier one would be.
    await writer.recordDeletion('item', 'c-barrier');
    await eventually(async () => void (await httpB.get('/items/c-barrier').expect(410)));
    counterB.reset();
    await httpB.get('/items/c-rolled-back').expect(404);
    expect(lookupsB()).toBe(0); // not even in B's filter
    await request(a.getHttpServer()).get('/items/c-rolled-back').expect(404);
  });

  it('sees writes made in SQL, including large ones and TRUNCATE', async () => {
    await httpB.get('/items/c-sql-1').expect(404);
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'c-sql-1', 'deleted')`);
    await eventually(async () => void (await httpB.get('/items/c-sql-1').expect(410)));

    // Too many keys for one notification: the instance reloads that (scope, type).
    await httpB.get('/items/bulk-0').expect(404);
    await httpB.get('/items/bulk-4999').expect(404);
    await db.sql.query(`
      INSERT INTO tombstones (resource_type, resource_key, kind)
      SELECT 'item', 'bulk-' || i, 'deleted' FROM generate_series(0, 4999) AS i`);
    await eventually(async () => {
      await httpB.get('/items/bulk-0').expect(410);
      await httpB.get('/items/bulk-4999').expect(410);
      await httpB.get('/items/bulk-2500').expect(410);
    });
    await lookupB.loaded();
    expect(lookupB.stats().filter.ready).toBe(true);
    counterB.reset();
    await httpB.get('/items/bulk-5000').expect(404);
    expect(lookupsB()).toBe(0);

    await db.sql.query(`TRUNCATE tombstones`);
    await eventually(async () => {
      await httpB.get('/items/bulk-0').expect(404);
      await httpB.get('/items/c-sql-1').expect(404);
    });
    await lookupB.loaded();
    expect(lookupB.stats()).toMatchObject({ state: 'coherent', filter: { ready: true } });
  });

  it('never serves one scope’s answer to another', async () => {
    await writer.recordDeletion('item', 'c-scoped', { scope: 'acme' });
    await writer.recordMove('item', 'c-scoped-move', 'c-there', { scope: 'globex' });
    await eventually(async () => void (await httpB.get('/items/c-scoped').set('X-Tenant-Id', 'acme').expect(410)));
    for (let i = 0; i < 3; i++) {
      await httpB.get('/items/c-scoped').set('X-Tenant-Id', 'acme').expect(410);
      await httpB.get('/items/c-scoped').set('X-Tenant-Id', 'globex').expect(404);
      await httpB.get('/items/c-scoped').expect(404);
      await httpB.get('/items/c-scoped-move').set('X-Tenant-Id', 'globex').expect(301);
      await httpB.get('/items/c-scoped-move').set('X-Tenant-Id', 'acme').expect(404);
    }
    // A key that looks like another scope's cache key is just a key.
    await httpB.get(`/items/${encodeURIComponent('acme\u0001item\u0001c-scoped')}`).expect(404);
  });

  it('drops an answer when its tombstone expires, with no write to announce it', async () => {
    // B must answer (and keep) the 410 before the expiry: on a machine too busy for that, the
    // same again with a longer life.
    for (const lifeMs of [2_000, 10_000, 30_000]) {
      const key = `c-expiring-${lifeMs}`;
      const expiresAt = Date.now() + lifeMs;
      await writer.recordDeletion('item', key, { expiresAt: new Date(expiresAt) });
      await settled(b);
      const first = await httpB.get(`/items/${key}`);
      if (Date.now() >= expiresAt) continue;
      expect(first.status).toBe(410);
      await eventually(async () => void (await httpB.get(`/items/${key}`).expect(404)));
      return;
    }
    throw new Error('B never answered before the tombstone expired');
  });

  it('announces nothing for hit counts: an UPDATE that changes no answer', async () => {
    const listener = new pg.Client({ connectionString: db.url });
    const payloads: string[] = [];
    await listener.connect();
    try {
      listener.on('notification', (message) => payloads.push(message.payload ?? ''));
      await listener.query(`LISTEN ${TOMBSTONE_CHANNEL}`);
      await writer.recordDeletion('item', 'c-counted');
      await eventually(async () => void (await httpB.get('/items/c-counted').expect(410)));
      await httpB.get('/items/c-counted').expect(410);
      await b.get(TombstoneHitCounter).flush();
      await db.sql.query(`UPDATE tombstones SET actor = 'someone', metadata = '{"a":1}' WHERE resource_key = 'c-counted'`);
      await db.sql.query(`UPDATE tombstones SET reason = 'Changed' WHERE resource_key = 'c-counted'`);
      await eventually(async () => expect(payloads).toHaveLength(2));
      expect(payloads.map((p) => JSON.parse(p))).toEqual([
        { s: '', t: 'item', a: ['c-counted'], k: [] },
        { s: '', t: 'item', a: ['c-counted'], k: [] },
      ]);
      const [{ hit_count }] = await db.sql.query(`SELECT hit_count::int FROM tombstones WHERE resource_key = 'c-counted'`);
      expect(hit_count).toBe(2);
    } finally {
      await listener.end();
    }
  });

  it('lists a large change’s keys in several notifications, and a very large one as its whole (scope, type)', async () => {
    const listener = new pg.Client({ connectionString: db.url });
    const payloads: string[] = [];
    await listener.connect();
    try {
      listener.on('notification', (message) => payloads.push(message.payload ?? ''));
      await listener.query(`LISTEN ${TOMBSTONE_CHANNEL}`);
      await db.sql.query(`
        INSERT INTO tombstones (scope, resource_type, resource_key, kind)
        SELECT 'chunks', 'item', 'chunked-key-' || i, 'deleted' FROM generate_series(1, 5000) AS i`);
      const listed = new Set<string>();
      await eventually(async () => {
        for (const payload of payloads.splice(0)) {
          expect(Buffer.byteLength(payload)).toBeLessThan(8000);
          const change = JSON.parse(payload) as { s: string; a?: string[]; all?: boolean };
          expect(change).toMatchObject({ s: 'chunks', t: 'item' });
          expect(change.all).toBeUndefined();
          for (const key of change.a ?? []) listed.add(key);
        }
        expect(listed.size).toBe(5000);
      });
      await db.sql.query(`
        INSERT INTO tombstones (scope, resource_type, resource_key, kind)
        SELECT 'chunks', 'item', 'a-rather-longer-key-' || i, 'deleted' FROM generate_series(1, 20000) AS i`);
      await eventually(async () => expect(payloads.map((p) => JSON.parse(p))).toEqual([{ s: 'chunks', t: 'item', all: true }]));
      await eventually(async () => void (await httpB.get('/items/a-rather-longer-key-777').set('X-Tenant-Id', 'chunks').expect(410)));
    } finally {
      await listener.end();
    }
  });

  it('reconnects after losing its connection, and catches up on what it missed', async () => {
    await httpB.get('/items/c-missed').expect(404);
    const states: string[] = [];
    await db.sql.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'nestjs-tombstones listener' AND datname = current_database()`);
    // Written while (some) listeners are reconnecting.
    await writer.recordDeletion('item', 'c-missed');
    await eventually(async () => {
      states.push(lookupB.stats().state);
      await httpB.get('/items/c-missed').expect(410);
      expect(lookupB.stats().state).toBe('coherent');
    });
    await lookupB.loaded();
    counterB.reset();
    await httpB.get('/items/c-never-after').expect(404);
    expect(lookupsB()).toBe(0);
  });
});

describe('lookup cache options', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'gone', 'deleted')`);
  });

  afterAll(async () => {
    await db?.drop();
  });

  const boot = (options: TombstoneModuleOptions, name: string) =>
    bootApp('express', {
      imports: [TypeOrmModule.forRoot({ ...db.options(), name }), TombstoneModule.forRoot({ dataSource: name, ...options })],
      controllers: [ItemsController],
    });

  it('uses the store it is given', async () => {
    class CountingStore extends LruTombstoneCacheStore {
      gets = 0;
      sets = 0;
      override get(key: string) {
        this.gets++;
        return super.get(key);
      }
      override set(...args: Parameters<LruTombstoneCacheStore['set']>) {
        this.sets++;
        super.set(...args);
      }
    }
    const store = new CountingStore({ maxEntries: 10 });
    const app = await boot({ cache: { store, filter: false } }, 'store');
    try {
      const http = request(app.getHttpServer());
      for (let i = 0; i < 3; i++) await http.get('/items/gone').expect(410);
      await http.get('/items/nope').expect(404);
      expect(store.sets).toBe(2);
      expect(store.gets).toBe(4);
    } finally {
      await app.close();
    }
  });

  it('stays off, and says why, when the table does not announce its changes', async () => {
    await db.sql.query(`ALTER TABLE tombstones DISABLE TRIGGER tombstones_notify_ins`);
    const app = await boot({}, 'no-trigger');
    try {
      expect(app.get(TombstoneLookup).stats().state).toBe('off');
      await request(app.getHttpServer()).get('/items/gone').expect(410);
    } finally {
      await app.close();
      await db.sql.query(`ALTER TABLE tombstones ENABLE TRIGGER tombstones_notify_ins`);
    }
  });

  it('is off with cache: false: every miss is a query', async () => {
    const app = await boot({ cache: false }, 'off');
    try {
      expect(app.get(TombstoneLookup).stats()).toMatchObject({ state: 'off', filter: { ready: false } });
      await request(app.getHttpServer()).get('/items/gone').expect(410);
    } finally {
      await app.close();
    }
  });

  it('keeps its memory bounded under a flood of distinct keys', async () => {
    const app = await boot({ cache: { maxEntries: 100, filter: false } }, 'bounded');
    try {
      const http = request(app.getHttpServer());
      for (let i = 0; i < 300; i++) await http.get(`/items/flood-${i}`).expect(404);
      expect(app.get(TombstoneLookup).stats().entries).toBeLessThanOrEqual(100);
    } finally {
      await app.close();
    }
  });
});
