import { jest } from '@jest/globals';
import { type INestApplication, Logger } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import pg from 'pg';
import request from 'supertest';
import type { DataSource } from 'typeorm';
import type { PostgresDataSourceOptions } from 'typeorm/driver/postgres/PostgresDataSourceOptions.js';
import { TombstoneModule, TombstoneService } from '../src/index.js';
import { ItemsController } from './fixtures/items.fixture.js';
import { bootApp } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';

// A slow database and a flood of misses: the module keeps to its share of the pool, answers
// within its time budget, leaks no connection, and does not flood the log.
describe('a slow database and the pool', () => {
  let db: TestDatabase;
  let app: INestApplication;
  let dataSource: DataSource;
  const errors: string[] = [];
  const POOL = 4;

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) SELECT 'item', 'gone-' || i, 'deleted' FROM generate_series(1, 200) i`);
    app = await bootApp('express', {
      imports: [
        TypeOrmModule.forRoot({ ...(db.options() as PostgresDataSourceOptions), poolSize: POOL, extra: { application_name: 'pool-suite' } }),
        TombstoneModule.forRoot({ lookupTimeoutMs: 300, maxConcurrentLookups: 2 }),
      ],
      controllers: [ItemsController],
    });
    const sink = { log: () => undefined, warn: () => undefined, error: (m: unknown) => void errors.push(String(m)) };
    app.useLogger(sink);
    Logger.overrideLogger(sink);
    dataSource = app.get(TombstoneService).dataSource;
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  const appConnections = async () =>
    (
      (await db.sql.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'pool-suite' AND datname = current_database()`)) as {
        n: number;
      }[]
    )[0].n;

  it('holds at most maxConcurrentLookups connections while the database is stuck, and the app keeps the rest', async () => {
    const locker = new pg.Client({ connectionString: db.url });
    await locker.connect();
    const server = app.getHttpServer();
    // The log's budget is counted in time (a burst, then one line a second): the clock stands
    // still during the flood, and moves on when the test says, so the count does not depend on
    // how fast this machine answers.
    const now = Date.now();
    const clock = jest.spyOn(Date, 'now').mockReturnValue(now);
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE tombstones IN ACCESS EXCLUSIVE MODE');
      errors.length = 0;
      // 200 distinct tombstoned keys: none cached, each would be a query.
      const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => request(server).get(`/items/gone-${i + 1}`)));
      expect(answers.every((r) => r.status === 404)).toBe(true);
      expect(answers.every((r) => r.body.error === 'not_found')).toBe(true);

      // Stuck on the lock: the module's lookups, exactly maxConcurrentLookups of them.
      await eventually(async () => {
        const [{ waiting }] = (await db.sql.query(
          `SELECT count(*)::int AS waiting FROM pg_stat_activity WHERE application_name = 'pool-suite' AND wait_event_type = 'Lock'`,
        )) as { waiting: number }[];
        expect(waiting).toBe(2);
      });
      // The app's own queries still get a connection, at once.
      await expect(dataSource.query('SELECT 1 AS ok')).resolves.toEqual([{ ok: 1 }]);

      // The log got a burst of 10 lines, then a count, not 200 lines.
      expect(errors).toHaveLength(10);
      expect(errors.every((e) => /^Tombstone lookup failed, answering a plain 404/.test(e))).toBe(true);
    } finally {
      await locker.query('ROLLBACK');
      await locker.end();
    }
    try {
      // Back to normal, with no connection leaked.
      await eventually(async () => void (await request(server).get('/items/gone-1').expect(410)));
      expect(await appConnections()).toBeLessThanOrEqual(POOL + 1);
      // A second later, the next failure is logged, and says how many were not.
      clock.mockReturnValue(now + 1_100);
      errors.length = 0;
      const locker2 = new pg.Client({ connectionString: db.url });
      await locker2.connect();
      try {
        await locker2.query('BEGIN');
        await locker2.query('LOCK TABLE tombstones IN ACCESS EXCLUSIVE MODE');
        await request(server).get('/items/gone-150').expect(404);
      } finally {
        await locker2.query('ROLLBACK');
        await locker2.end();
      }
      expect(errors).toHaveLength(1);
      const [, unlogged] = /\(and (\d+) more failed lookups not logged since the last one\)/.exec(errors[0]) ?? [];
      expect(Number(unlogged)).toBeGreaterThanOrEqual(190);
    } finally {
      clock.mockRestore();
    }
  }, 60_000);
});
