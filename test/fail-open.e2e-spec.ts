import { type INestApplication, Logger } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import pg from 'pg';
import request from 'supertest';
import { TombstoneModule, TombstoneService } from '../src/index.js';
import { ItemsController } from './fixtures/items.fixture.js';
import { ADAPTERS, bootApp } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';

// Reads fail open: a broken lookup gives the plain 404 and a logged error, never a 5xx.
describe.each(ADAPTERS)('reads fail open (%s)', (adapter) => {
  let db: TestDatabase;
  let app: INestApplication;
  let http: ReturnType<typeof request>;
  const errors: string[] = [];
  // A lookup that reaches the database has 300 ms here: on a busy machine one may miss it (and
  // answer the plain 404, as designed), so the 410s that need the database are waited for.
  const gone = (client: ReturnType<typeof request>, key: string) => eventually(async () => void (await client.get(`/items/${key}`).expect(410)));

  beforeAll(async () => {
    db = await createTestDatabase();
    app = await bootApp(adapter, {
      imports: [TypeOrmModule.forRoot(db.options()), TombstoneModule.forRoot({ lookupTimeoutMs: 300 })],
      controllers: [ItemsController],
    });
    app.useLogger({
      log: () => undefined,
      warn: () => undefined,
      error: (message: unknown) => void errors.push(String(message)),
    });
    Logger.overrideLogger({ log: () => undefined, warn: () => undefined, error: (m: unknown) => void errors.push(String(m)) });
    http = request(app.getHttpServer());
    const tombstones = app.get(TombstoneService);
    for (const key of ['deleted', 'deleted-slow', 'deleted-away']) await tombstones.recordDeletion('item', key);
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  beforeEach(() => {
    errors.length = 0;
  });

  it('answers 410 while the store works', async () => {
    await gone(http, 'deleted');
  });

  it('answers the plain 404 and logs when the lookup times out, and what it knows from memory', async () => {
    await gone(http, 'deleted');
    const locker = new pg.Client({ connectionString: db.url });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE tombstones IN ACCESS EXCLUSIVE MODE');
      // Never looked up: the lookup waits for the lock, and gives up after 300 ms (the log says so).
      const res = await http.get('/items/deleted-slow').expect(404);
      expect(res.body).toMatchObject({ error: 'not_found', id: 'deleted-slow' });
      expect(res.text).not.toMatch(/timed out|tombstones/);
      expect(errors.join('\n')).toMatch(/Tombstone lookup failed, answering a plain 404: lookup timed out after 300 ms/);
      expect(errors.join('\n')).toMatch(/key="deleted-slow"/);
      // Answered before: the cache still knows.
      await http.get('/items/deleted').expect(410);
    } finally {
      await locker.query('ROLLBACK');
      await locker.end();
    }
    await gone(http, 'deleted-slow');
  });

  it('answers the plain 404 and logs when the table is gone', async () => {
    await db.sql.query('ALTER TABLE tombstones RENAME TO tombstones_away');
    try {
      const res = await http.get('/items/deleted-away').expect(404);
      expect(res.text).not.toMatch(/relation|SELECT|tombstones/);
      expect(errors.join('\n')).toMatch(/Tombstone lookup failed.*relation "tombstones" does not exist/s);
    } finally {
      await db.sql.query('ALTER TABLE tombstones_away RENAME TO tombstones');
    }
    await gone(http, 'deleted-away');
  });

  it('recovers when the table changes under its prepared lookup, and works with plain queries too', async () => {
    for (const preparedStatements of [true, false]) {
      const name = `prepared-${preparedStatements}`;
      const other = await bootApp(adapter, {
        imports: [TypeOrmModule.forRoot({ ...db.options(), name }), TombstoneModule.forRoot({ dataSource: name, cache: false, preparedStatements })],
        controllers: [ItemsController],
      });
      try {
        const client = request(other.getHttpServer());
        for (let i = 0; i < 3; i++) await client.get('/items/deleted').expect(410);
        // A column the lookup returns changes type: a plan prepared before cannot be used.
        await db.sql.query('ALTER TABLE tombstones ALTER COLUMN reason TYPE varchar(2000)');
        try {
          let failures = 0;
          while ((await client.get('/items/deleted')).status !== 410) {
            expect(++failures).toBeLessThanOrEqual(10);
          }
          for (let i = 0; i < 3; i++) await client.get('/items/deleted').expect(410);
        } finally {
          await db.sql.query('ALTER TABLE tombstones ALTER COLUMN reason TYPE text');
        }
        for (let i = 0; i < 12; i++) await client.get('/items/deleted');
        await client.get('/items/deleted').expect(410);
      } finally {
        await other.close();
      }
    }
  });

  it('answers every lookup from the database when the cache is off', async () => {
    const uncached = await bootApp(adapter, {
      imports: [TypeOrmModule.forRoot({ ...db.options(), name: 'uncached' }), TombstoneModule.forRoot({ dataSource: 'uncached', cache: false, lookupTimeoutMs: 300 })],
      controllers: [ItemsController],
    });
    try {
      const client = request(uncached.getHttpServer());
      await gone(client, 'deleted');
      await db.sql.query('ALTER TABLE tombstones RENAME TO tombstones_away');
      try {
        await client.get('/items/deleted').expect(404);
      } finally {
        await db.sql.query('ALTER TABLE tombstones_away RENAME TO tombstones');
      }
    } finally {
      await uncached.close();
    }
  });
});
