import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type INestApplication, Logger } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import pg from 'pg';
import request from 'supertest';
import { DataSource } from 'typeorm';
import { type EmbeddedPostgresHandle, startEmbeddedPostgres } from '#dev/embedded-postgres';
import { TOMBSTONE_ENTITIES, TOMBSTONE_MIGRATIONS, TombstoneModule, TombstoneService } from '../src/index.js';
import { ItemsController } from './fixtures/items.fixture.js';
import { bootApp } from './support/app.js';
import { eventually as poll } from './support/eventually.js';
import { TombstoneLookup } from '../src/cache/tombstone.lookup.js';

/** A restart and a reconnection with backoff take a few seconds. */
const eventually = (check: () => unknown) => poll(check, 20_000, 50);


// PostgreSQL stopped under the app and started again: a server of this suite's own, which it
// can stop (the shared one serves the other suites).
describe('PostgreSQL stopped during traffic', () => {
  let dir: string;
  let server: EmbeddedPostgresHandle;
  let url: string;
  let app: INestApplication;
  let http: ReturnType<typeof request>;
  const errors: string[] = [];
  const POOL = 4;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'tombstones-faults-'));
    server = await startEmbeddedPostgres({ dataDir: path.join(dir, 'pg') });
    url = server.url;
    const setup = new DataSource({ type: 'postgres', url, entities: [...TOMBSTONE_ENTITIES], migrations: [...TOMBSTONE_MIGRATIONS] });
    await setup.initialize();
    await setup.runMigrations();
    await setup.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'cached', 'deleted'), ('item', 'uncached', 'deleted')`);
    await setup.destroy();
    app = await bootApp('express', {
      imports: [
        TypeOrmModule.forRoot({ type: 'postgres', url, entities: [...TOMBSTONE_ENTITIES], poolSize: POOL, connectTimeoutMS: 1000 }),
        TombstoneModule.forRoot({ lookupTimeoutMs: 500 }),
      ],
      controllers: [ItemsController],
    });
    const sink = { log: () => undefined, warn: (m: unknown) => void errors.push(String(m)), error: (m: unknown) => void errors.push(String(m)) };
    app.useLogger(sink);
    Logger.overrideLogger(sink);
    http = request(app.getHttpServer());
  }, 120_000);

  afterAll(async () => {
    await app?.close();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers from the database, then recovers by itself after a restart', async () => {
    // Lookups that reach the database have 500 ms here: a busy machine may miss one (a plain 404).
    await eventually(async () => void (await http.get('/items/cached').expect(410)));
    expect(app.get(TombstoneLookup).stats().state).toBe('coherent');

    await server.stop();
    // The listening connection is gone: the cache is not trusted any more.
    await eventually(async () => expect(app.get(TombstoneLookup).stats().state).toBe('waiting'));
    // Each answers (a hang fails the test); how fast is not asserted.
    for (const key of ['cached', 'uncached', 'never']) {
      const res = await http.get(`/items/${key}`).expect(404);
      expect(res.body).toMatchObject({ error: 'not_found', id: key });
      expect(res.text).not.toMatch(/ECONNREFUSED|connect|postgres|stack/i);
    }
    expect(errors.join('\n')).toMatch(/Tombstone lookup failed, answering a plain 404/);
    // A write fails loudly.
    await expect(app.get(TombstoneService).recordDeletion('item', 'while-down')).rejects.toThrow();

    await server.start();
    await eventually(async () => {
      await http.get('/items/cached').expect(410);
      expect(app.get(TombstoneLookup).stats().state).toBe('coherent');
    });
    // Writes work again, and the new listening connection hears them (from SQL, another client).
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      await http.get('/items/after-restart').expect(404);
      await client.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'after-restart', 'deleted')`);
      await eventually(async () => void (await http.get('/items/after-restart').expect(410)));
      await app.get(TombstoneService).recordDeletion('item', 'recorded-after');
      await eventually(async () => void (await http.get('/items/recorded-after').expect(410)));
      // No connection grew: the pool's, plus one that listens.
      const [{ n }] = (
        await client.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = 'postgres' AND pid <> pg_backend_pid()`)
      ).rows;
      expect(n).toBeLessThanOrEqual(POOL + 1);
      const listeners = (
        await client.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'nestjs-tombstones listener'`)
      ).rows[0].n;
      expect(listeners).toBe(1);
    } finally {
      await client.end();
    }
  }, 120_000);
});
