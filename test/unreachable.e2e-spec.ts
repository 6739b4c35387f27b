import { jest } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import type { PostgresDataSourceOptions } from 'typeorm/driver/postgres/PostgresDataSourceOptions.js';
import { TombstoneModule, type TombstoneModuleOptions } from '../src/index.js';
import { TombstoneTable } from '../src/table/tombstone.table.js';
import { ItemsController } from './fixtures/items.fixture.js';
import { bootApp } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';
import { type Proxy, startProxy } from './support/proxy.js';

// A real PostgreSQL that the app stops reaching: through a proxy that stops answering, or
// refuses connections.
describe('a database the app stops reaching', () => {
  let db: TestDatabase;
  let proxy: Proxy;
  let app: INestApplication | undefined;
  const KEYS = Array.from({ length: 30 }, (_, i) => `gone-${i + 1}`);

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) SELECT 'item', unnest($1::text[]), 'deleted'`, [['cached', ...KEYS]]);
  });

  beforeEach(async () => {
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

  /** An app whose DataSource reaches PostgreSQL through the proxy. */
  async function boot(cache: TombstoneModuleOptions['cache']) {
    app = await bootApp('express', {
      imports: [
        TypeOrmModule.forRoot({ ...(db.options() as PostgresDataSourceOptions), url: proxy.url(db.url) }),
        TombstoneModule.forRoot({ lookupTimeoutMs: 1000, cache }),
      ],
      controllers: [ItemsController],
    });
    const table = app.get(TombstoneTable);
    return {
      http: request(app.getHttpServer()),
      /** The lookups that reached the table (each one asks the pool for a connection). */
      queries: jest.spyOn(table, 'lookup'),
      pool: (table.dataSource.driver as unknown as { master: { totalCount: number; idleCount: number } }).master,
    };
  }

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
