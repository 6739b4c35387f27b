import { type INestApplication, Logger } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import type { PostgresDataSourceOptions } from 'typeorm/driver/postgres/PostgresDataSourceOptions.js';
import { TombstoneConfigurationError, TombstoneModule, type TombstoneModuleOptions, TombstoneService } from '../src/index.js';
import { TombstoneLookup } from '../src/cache/tombstone.lookup.js';
import { TombstoneTable } from '../src/table/tombstone.table.js';
import { ItemsController } from './fixtures/items.fixture.js';
import { bootApp, settled } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';
import { findPgbouncer, type Pgbouncer, type PgbouncerOptions, startPgbouncer, versionOf } from './support/pgbouncer.js';
import { type Proxy, startProxy } from './support/proxy.js';

// A real PgBouncer (Debian's package, installed when missing: scripts/install-pgbouncer.sh) in
// front of the test server, in session and in transaction pooling mode. Where it cannot be
// installed, the suite says why and its tests are skipped.
const binary = findPgbouncer();
const found = 'path' in binary ? binary : null;
// eslint-disable-next-line no-console -- why the suite is skipped must show in the run's output
if (!found) console.warn(`test/pgbouncer.e2e-spec.ts: skipped, ${'reason' in binary ? binary.reason : ''}`);
const [major, minor] = found ? versionOf(found) : [0, 0];
/** PgBouncer 1.21+ can keep protocol-level prepared statements in transaction mode (max_prepared_statements). */
const tracksStatements = major > 1 || (major === 1 && minor >= 21);
const describeWith = found ? describe : describe.skip;

describeWith(`behind a real PgBouncer (${found ? found.version : `skipped: ${'reason' in binary ? binary.reason : ''}`})`, () => {
  let db: TestDatabase;
  let session: Pgbouncer;
  let transaction: Pgbouncer;
  let statement: Pgbouncer;
  /** One server connection for every client: named statements of several clients meet on it. */
  let single: Pgbouncer;
  let app: INestApplication | undefined;
  let proxy: Proxy | undefined;
  const lines: string[] = [];
  const sink = {
    log: (m: unknown) => void lines.push(`log: ${String(m)}`),
    warn: (m: unknown) => void lines.push(`warn: ${String(m)}`),
    error: (m: unknown) => void lines.push(`error: ${String(m)}`),
  };
  const KEYS = Array.from({ length: 150 }, (_, i) => `key-${i}`);
  /** What a key answers: deleted, moved to `target`, hidden, in turn. */
  const expected = (i: number) => [410, 301, 404][i % 3];

  const start = (options: PgbouncerOptions) => startPgbouncer(found!, db.url, options);
  // Before 1.21 the setting does not exist; from 1.24 on it is on by default.
  const noStatementTracking: Record<string, number> = tracksStatements ? { max_prepared_statements: 0 } : {};

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.sql.query(
      `INSERT INTO tombstones (resource_type, resource_key, kind, target_key)
       SELECT 'item', k, (ARRAY['deleted', 'moved', 'hidden'])[(n - 1) % 3 + 1], CASE WHEN (n - 1) % 3 = 1 THEN 'target' END
         FROM unnest($1::text[]) WITH ORDINALITY AS u(k, n)`,
      [KEYS],
    );
    [session, transaction, single, statement] = await Promise.all([
      start({ poolMode: 'session' }),
      start({ poolMode: 'transaction', poolSize: 3, settings: noStatementTracking }),
      start({ poolMode: 'transaction', poolSize: 1, settings: noStatementTracking }),
      start({ poolMode: 'statement', poolSize: 3 }),
    ]);
  });

  afterEach(async () => {
    await app?.close();
    app = undefined;
    await proxy?.close();
    proxy = undefined;
    lines.length = 0;
  });

  afterAll(async () => {
    await Promise.all([session?.stop(), transaction?.stop(), single?.stop(), statement?.stop()]);
    await db?.drop();
  });

  /** An app whose DataSource connects to `url`; its log goes to `lines`. */
  async function boot(url: string, options: TombstoneModuleOptions) {
    app = await bootApp('express', {
      imports: [TypeOrmModule.forRoot({ ...(db.options() as PostgresDataSourceOptions), url }), TombstoneModule.forRoot(options)],
      controllers: [ItemsController],
    });
    app.useLogger(sink);
    Logger.overrideLogger(sink);
    return { app, http: request(app.getHttpServer()), lookup: app.get(TombstoneLookup) };
  }

  /** What `app.init()` throws for an app whose DataSource connects to `url`. */
  async function refused(url: string, options: TombstoneModuleOptions): Promise<Error> {
    const moduleRef = await Test.createTestingModule({
      imports: [TypeOrmModule.forRoot({ ...(db.options() as PostgresDataSourceOptions), url }), TombstoneModule.forRoot(options)],
      controllers: [ItemsController],
    }).compile();
    const failing = moduleRef.createNestApplication();
    failing.useLogger(false);
    const failure = await failing.init().then(
      () => new Error('the app started'),
      (error: unknown) => error as Error,
    );
    await failing.close();
    return failure;
  }

  /** Every seeded key and some unknown ones, `concurrency` requests at a time, each answer checked. */
  async function answersRight(http: ReturnType<typeof request>, concurrency = 8): Promise<void> {
    const wanted = [...KEYS.map((key, i) => [key, expected(i)] as const), ...Array.from({ length: 30 }, (_, i) => [`unknown-${i}`, 404] as const)];
    for (let i = 0; i < wanted.length; i += concurrency) {
      const batch = wanted.slice(i, i + concurrency);
      const statuses = await Promise.all(batch.map(([key]) => http.get(`/items/${key}`).then((res) => res.status)));
      expect(statuses).toEqual(batch.map(([, status]) => status));
    }
  }

  it('transaction or statement mode: an app whose listening connection goes through the pooler does not start, and says what to do', async () => {
    const database = new URL(db.url).pathname.slice(1);
    // The DataSource through the pooler, and the listener with it (the default); then the
    // DataSource straight to PostgreSQL and only `cache.listen` through the pooler (a pool in
    // statement mode too).
    for (const [url, pooler, cache] of [
      [transaction.url(db.url), transaction, true],
      [db.url, transaction, { listen: transaction.url(db.url) }],
      [db.url, statement, { listen: statement.url(db.url) }],
    ] as const) {
      const error = await refused(url, { cache });
      expect(error).toBeInstanceOf(TombstoneConfigurationError);
      expect(error.message).toContain(`the lookup cache's listening connection (127.0.0.1:${pooler.port}/${database}) goes through a connection pooler that does not keep its session`);
      expect(error.message).toMatch(/PostgreSQL backend \d+, which ran its LISTEN, served another connection meanwhile|its statements ran on PostgreSQL backend \d+, then on backend \d+/);
      expect(error.message).toContain('Point `cache.listen` at PostgreSQL itself, past the pooler');
      expect(error.message).toContain('`pool_mode = session`');
      expect(error.message).toContain('`cache: false`');
    }
    // The same pooler with the cache off, or listening straight to PostgreSQL: it starts.
    const { http } = await boot(transaction.url(db.url), { cache: false });
    await http.get('/items/key-0').expect(410);
  });

  it('session mode: the cache listens through the pooler, and hears every change', async () => {
    const { app, http, lookup } = await boot(session.url(db.url), {});
    expect(lookup.stats()).toMatchObject({ state: 'coherent', filter: { ready: true } });
    await http.get('/items/key-0').expect(410);
    await http.get('/items/written-later').expect(404);

    // Written past the pooler and past the app: only the notification tells it.
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'written-later', 'deleted')`);
    await db.sql.query(`DELETE FROM tombstones WHERE resource_type = 'item' AND resource_key = 'key-0'`);
    await settled(app);
    await http.get('/items/written-later').expect(410);
    await http.get('/items/key-0').expect(404);

    // The listener's server connection dies: PgBouncer closes the client, the module listens
    // again through it (checked again), and hears the next change.
    await db.sql.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'nestjs-tombstones listener' AND datname = current_database()`,
    );
    await eventually(() => expect(lines).toContain('log: Tombstone lookup cache: listening for changes again.'));
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'key-0', 'deleted')`);
    await settled(app);
    await http.get('/items/key-0').expect(410);
    // And through the recording API, on the DataSource's pooled connections.
    const writer = app.get(TombstoneService);
    await writer.recordDeletion('item', 'recorded-through');
    await http.get('/items/recorded-through').expect(410);
    await writer.restore('item', 'recorded-through');
    await http.get('/items/recorded-through').expect(404);
    expect(lines.filter((line) => line.startsWith('error:'))).toEqual([]);
    await db.sql.query(`DELETE FROM tombstones WHERE resource_key = 'written-later'`);
  });

  it('checked again on reconnect: a listener that comes back through a transaction pooler is not trusted, and answers stay right', async () => {
    proxy = await startProxy(session.url(db.url));
    const { app, http, lookup } = await boot(db.url, { cache: { listen: proxy.url(db.url), reloadJitterMs: 0 } });
    expect(lookup.stats().state).toBe('coherent');
    await http.get('/items/meanwhile').expect(404);

    // The same address now leads to a pool in transaction mode.
    proxy.retarget(transaction.url(db.url));
    proxy.cut();
    await eventually(() => expect(lines.some((line) => line.startsWith('error:') && line.includes('goes through a connection pooler that does not keep its session'))).toBe(true));
    expect(lookup.stats().state).toBe('waiting');
    // Not heard, and not needed: the cache is not used, the database answers.
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'meanwhile', 'deleted')`);
    await http.get('/items/meanwhile').expect(410);

    // Back to a pool that keeps sessions: the cache is trusted again.
    proxy.retarget(session.url(db.url));
    await eventually(() => expect(lookup.stats().state).toBe('coherent'));
    await settled(app);
    await answersRight(request(app.getHttpServer()));
    await http.get('/items/meanwhile').expect(410);
    await db.sql.query(`DELETE FROM tombstones WHERE resource_key = 'meanwhile'`);
  });

  describe.each([
    ['one server connection for every client, the cache listening past the pooler', () => single, true, true, 1],
    ['three server connections, cache off', () => transaction, false, true, 'at most 1'],
    ['three server connections, preparedStatements: false', () => transaction, false, false, 0],
  ] as const)('transaction mode, %s', (_, pooler, listensPast, preparedStatements, warnings) => {
    it('answers every lookup right, concurrently, and the pool still works after', async () => {
      const { app, http } = await boot(pooler().url(db.url), {
        cache: listensPast ? { listen: db.url } : false,
        preparedStatements,
        maxConcurrentLookups: 4,
      });
      // Twice: while the lookup is a named statement, then once the module has seen it is not kept.
      await answersRight(http);
      await answersRight(http);
      expect(lines.filter((line) => line.includes('Tombstone lookup failed'))).toEqual([]);
      const fallback = lines.filter((line) => line.includes('the connection does not keep prepared statements'));
      // One server connection for all: the second client that prepares the lookup meets the
      // first one's statement there (42P05), at once. With three, it is likely, not certain.
      if (warnings === 'at most 1') expect(fallback.length).toBeLessThanOrEqual(1);
      else expect(fallback).toHaveLength(warnings);
      if (fallback.length > 0) expect(fallback[0]).toMatch(/^warn: Tombstone lookups: the connection does not keep prepared statements \(prepared statement "nestjs_tombstones_lookup_[0-9a-f]{16}" (already exists|does not exist): /);

      // Writes through the recording API go through the pooler too, each in its transaction.
      const writer = app.get(TombstoneService);
      await writer.recordDeletion('item', 'written-through', { reason: 'Gone for good' });
      expect((await http.get('/items/written-through').expect(410)).body).toMatchObject({ reason: 'Gone for good' });
      await writer.restore('item', 'written-through');
      await http.get('/items/written-through').expect(404);

      const dataSource = app.get(TombstoneTable).dataSource;
      const pool = (dataSource.driver as unknown as { master: { totalCount: number; idleCount: number; waitingCount: number } }).master;
      await eventually(() => expect(pool.idleCount).toBe(pool.totalCount));
      expect(pool.waitingCount).toBe(0);
      expect(await dataSource.query(`SELECT count(*)::int AS n FROM tombstones`)).toEqual([{ n: KEYS.length }]);
    });
  });

  (tracksStatements ? it : it.skip)(
    `transaction mode with max_prepared_statements (PgBouncer 1.21+${tracksStatements ? '' : `; this is ${found?.version}`}): the named lookup is kept`,
    async () => {
      const tracking = await start({ poolMode: 'transaction', poolSize: 1, settings: { max_prepared_statements: 100 } });
      try {
        const { http } = await boot(tracking.url(db.url), { cache: false, maxConcurrentLookups: 4 });
        await answersRight(http);
        expect(lines.filter((line) => line.includes('Tombstone lookup failed') || line.includes('does not keep prepared statements'))).toEqual([]);
      } finally {
        await app?.close();
        app = undefined;
        await tracking.stop();
      }
    },
  );
});
