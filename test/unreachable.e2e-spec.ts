import { jest } from '@jest/globals';
import { type INestApplication, Logger } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import type { PostgresDataSourceOptions } from 'typeorm/driver/postgres/PostgresDataSourceOptions.js';
import { TombstoneModule, type TombstoneModuleOptions } from '../src/index.js';
import { TombstoneLookup } from '../src/cache/tombstone.lookup.js';
import { TombstoneTable } from '../src/table/tombstone.table.js';
import { ItemsController } from './fixtures/items.fixture.js';
import { bootApp } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';
import { type Proxy, startProxy } from './support/proxy.js';

// A real PostgreSQL that the app stops reaching: through a proxy that stops answering, or
// refuses connections. The circuit breaker: the first misses fail as before, then misses get the
// plain 404 without their lookup being run, and once a probe reaches the database again, answers
// are right again. The breaker's clock is the test's: nothing here depends on how fast the
// machine is, only on what the app did.
describe('a database the app stops reaching', () => {
  let db: TestDatabase;
  let proxy: Proxy;
  let app: INestApplication | undefined;
  const lines: string[] = [];
  const KEYS = Array.from({ length: 30 }, (_, i) => `gone-${i + 1}`);

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) SELECT 'item', unnest($1::text[]), 'deleted'`, [['cached', ...KEYS]]);
  });

  beforeEach(async () => {
    lines.length = 0;
    proxy = await startProxy(db.url);
  });

  afterEach(async () => {
    proxy.state.frozen = false;
    proxy.state.refusing = false;
    proxy.cut();
    await app?.close();
    app = undefined;
    await proxy?.close();
  });

  afterAll(async () => {
    await db?.drop();
  });

  /** An app whose DataSource reaches PostgreSQL through the proxy; its log, and its breaker on a clock of the test's. */
  async function boot(cache: TombstoneModuleOptions['cache']) {
    app = await bootApp('express', {
      imports: [
        TypeOrmModule.forRoot({ ...(db.options() as PostgresDataSourceOptions), url: proxy.url(db.url) }),
        TombstoneModule.forRoot({ lookupTimeoutMs: 1000, circuitBreaker: { failures: 3, cooldownMs: 1000 }, cache }),
      ],
      controllers: [ItemsController],
    });
    const sink = {
      log: (m: unknown) => void lines.push(`log: ${String(m)}`),
      warn: (m: unknown) => void lines.push(`warn: ${String(m)}`),
      error: (m: unknown) => void lines.push(`error: ${String(m)}`),
    };
    app.useLogger(sink);
    Logger.overrideLogger(sink);
    const lookup = app.get(TombstoneLookup);
    let now = 0;
    jest.spyOn(lookup.breaker, 'now').mockImplementation(() => now);
    const table = app.get(TombstoneTable);
    return {
      http: request(app.getHttpServer()),
      lookup,
      /** The lookups that reached the table (each one asks the pool for a connection). */
      queries: jest.spyOn(table, 'lookup'),
      pool: (table.dataSource.driver as unknown as { master: { totalCount: number; idleCount: number } }).master,
      /** Moves the breaker's clock past any cool-down. */
      later: () => (now += 60_000),
      failedLines: () => lines.filter((line) => line.includes('Tombstone lookup failed')),
    };
  }

  it('a partition: the first misses time out, then misses get the plain 404 without a query, and a probe closes the circuit', async () => {
    // The listening connection goes straight to PostgreSQL: the lookup cache stays trusted.
    const { http, lookup, queries, later, failedLines } = await boot({ listen: db.url });
    await eventually(async () => void (await http.get('/items/cached').expect(410)));
    expect(lookup.stats().state).toBe('coherent');

    proxy.state.frozen = true;
    queries.mockClear();
    const first = await Promise.all(KEYS.slice(0, 3).map((key) => http.get(`/items/${key}`)));
    expect(first.map((r) => r.status)).toEqual([404, 404, 404]);
    expect(queries).toHaveBeenCalledTimes(3);
    expect(failedLines()).toHaveLength(3);
    expect(failedLines().every((line) => line.includes('lookup timed out after 1000 ms'))).toBe(true);
    expect(lookup.breaker.state).toBe('open');
    expect(lines.filter((line) => line.includes('circuit open'))).toEqual([
      'warn: Tombstone lookups: circuit open after 3 failed lookups in a row (the last: lookup timed out after 1000 ms). ' +
        'Misses that need the database get the plain 404 without a query for 1000 ms, then one lookup probes it.',
    ]);

    // Open: tombstoned keys the cache does not hold get the plain 404, and no lookup runs.
    queries.mockClear();
    for (const key of KEYS.slice(3, 23)) {
      const res = await http.get(`/items/${key}`).expect(404);
      expect(res.body).toMatchObject({ error: 'not_found', id: key });
    }
    expect(queries).not.toHaveBeenCalled();
    expect(failedLines()).toHaveLength(3);
    // What the cache holds is still answered from it.
    await http.get('/items/cached').expect(410);
    await http.get('/items/never-was').expect(404);
    expect(queries).not.toHaveBeenCalled();

    // The network comes back; after the cool-down, a probe finds the database, and closes it.
    proxy.state.frozen = false;
    proxy.cut();
    await eventually(async () => {
      later();
      await http.get('/items/gone-24').expect(410);
    });
    expect(lookup.breaker.state).toBe('closed');
    expect(lines).toContain('log: Tombstone lookups: circuit half-open, one lookup probes the database.');
    const [closed] = lines.filter((line) => line.includes('circuit closed'));
    expect(closed).toMatch(/^log: Tombstone lookups: circuit closed, the database answers again \(open for [\d.]+ s; \d+ lookups got the plain 404 without a query\)\.$/);
    expect(Number(/; (\d+) lookups/.exec(closed)?.[1])).toBeGreaterThanOrEqual(20);
    await eventually(async () => void (await http.get('/items/gone-25').expect(410)));
  }, 60_000);

  it('connections refused: the listener is lost too, so nothing in memory is trusted, and every miss gets the plain 404 at once', async () => {
    const { http, lookup, queries, later } = await boot(true);
    await eventually(async () => void (await http.get('/items/cached').expect(410)));

    proxy.state.refusing = true;
    proxy.cut();
    await eventually(() => expect(lookup.stats().state).toBe('waiting'));
    queries.mockClear();
    for (const key of KEYS.slice(0, 3)) await http.get(`/items/${key}`).expect(404);
    expect(queries).toHaveBeenCalledTimes(3);
    expect(lookup.breaker.state).toBe('open');

    queries.mockClear();
    // `cached` too: the store is not used while nothing says what changed.
    for (const key of ['cached', ...KEYS.slice(3, 13)]) await http.get(`/items/${key}`).expect(404);
    expect(queries).not.toHaveBeenCalled();
    // Written while this app could not hear of it.
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'written-meanwhile', 'deleted')`);

    proxy.state.refusing = false;
    await eventually(async () => {
      later();
      await http.get('/items/written-meanwhile').expect(410);
    });
    expect(lookup.breaker.state).toBe('closed');
    await eventually(() => expect(lookup.stats().state).toBe('coherent'));
    await http.get('/items/cached').expect(410);
  }, 60_000);

  it('when the listening connection comes back, the filter reloads after a random delay (at start-up, at once); answers stay right meanwhile', async () => {
    const listening = jest.spyOn(TombstoneLookup.prototype, 'listening');
    try {
      const { http, lookup, queries } = await boot({ listen: db.url, reloadJitterMs: 600_000 });
      expect(listening.mock.calls).toEqual([[0]]);
      expect(lookup.stats().filter.ready).toBe(true);
      await http.get('/items/never-was').expect(404);
      expect(queries).not.toHaveBeenCalled(); // the filter answered

      const random = jest.spyOn(Math, 'random').mockReturnValue(0.5);
      try {
        await db.sql.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'nestjs-tombstones listener' AND datname = current_database()`);
        await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'written-while-away', 'deleted')`);
        await eventually(() => expect(listening).toHaveBeenCalledTimes(2));
      } finally {
        random.mockRestore();
      }
      // Half of reloadJitterMs: the delay comes from Math.random().
      expect(listening.mock.calls[1]).toEqual([300_000]);
      expect(lookup.stats()).toMatchObject({ state: 'coherent', filter: { ready: false } });
      // Until the filter has reloaded, misses go to the store and the database: nothing stale.
      await eventually(async () => void (await http.get('/items/written-while-away').expect(410)));
      queries.mockClear();
      await http.get('/items/never-was').expect(404);
      expect(queries).toHaveBeenCalledTimes(1);
    } finally {
      listening.mockRestore();
    }
  }, 60_000);

  it('a connection cut under a running lookup: the plain 404, and the app keeps running', async () => {
    const { http, queries, pool } = await boot({ listen: db.url });
    await eventually(async () => void (await http.get('/items/cached').expect(410)));
    proxy.state.frozen = true;
    queries.mockClear();
    const pending = http.get('/items/gone-1').then((res) => res);
    // The lookup holds a connection of the pool, and its query is on the wire: then the network dies.
    await eventually(() => expect(pool.totalCount - pool.idleCount).toBe(1));
    expect(queries).toHaveBeenCalledTimes(1);
    proxy.cut();
    expect((await pending).status).toBe(404);
    proxy.state.frozen = false;
    await eventually(async () => void (await http.get('/items/gone-1').expect(410)));
  }, 60_000);
});
