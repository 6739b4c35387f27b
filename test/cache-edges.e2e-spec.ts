import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { getDataSourceToken, TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import type { DataSource } from 'typeorm';
import { TombstoneModule, type TombstoneModuleOptions, TombstoneNotifications, TombstoneService } from '../src/index.js';
import { ItemsController } from './fixtures/items.fixture.js';
import { bootApp } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';
import { type Proxy, startProxy } from './support/proxy.js';
import { type TombstoneInvalidation, type TombstoneLookupResult, type TombstoneResolution } from '../src/tombstone.types.js';
import { TombstoneLookup } from '../src/cache/tombstone.lookup.js';
import { TombstoneTable } from '../src/table/tombstone.table.js';

// Edge cases of the lookup cache (LISTEN/NOTIFY coherence, filter, store), found by review:
// each failed against the first version of the cache.


/** What a promise came to within a deadline: a hang shows as 'pending'. */
async function within<T>(promise: Promise<T>, timeoutMs: number): Promise<'settled' | 'pending'> {
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    promise.then(
      () => 'settled' as const,
      () => 'settled' as const,
    ),
    new Promise<'pending'>((resolve) => (timer = setTimeout(() => resolve('pending'), timeoutMs))),
  ]);
  clearTimeout(timer);
  return outcome;
}

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((res) => (resolve = res));
  return { promise, resolve };
}

type Internals = {
  client: { processID?: number } | null;
  received: (message: unknown) => void;
};
const internals = (app: INestApplication) => app.get(TombstoneNotifications, { strict: false }) as unknown as Internals;
const listenerPid = (app: INestApplication) => internals(app).client?.processID ?? null;

const moduleFor = (db: TestDatabase, options: TombstoneModuleOptions = {}) => ({
  imports: [TypeOrmModule.forRoot(db.options()), TombstoneModule.forRoot(options)],
  controllers: [ItemsController],
});

describe('lookup cache edges: coherence', () => {
  let db: TestDatabase;
  let a: INestApplication;
  let b: INestApplication;
  let writer: TombstoneService;
  let lookupB: TombstoneLookup;
  /** Every change instance B was told about (its notifications and its own writes). */
  const seenByB: TombstoneInvalidation[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    a = await bootApp('express', moduleFor(db));
    b = await bootApp('express', moduleFor(db));
    writer = a.get(TombstoneService);
    lookupB = b.get(TombstoneLookup);
    const invalidate = lookupB.invalidate.bind(lookupB);
    lookupB.invalidate = (change) => {
      seenByB.push(change);
      invalidate(change);
    };
  });

  afterAll(async () => {
    await a?.close();
    await b?.close();
    await db?.drop();
  });

  const announcedToB = (key: string) => seenByB.filter((c) => 'listed' in c && [...c.listed, ...c.unlisted].includes(key)).length;

  it('a lookup that starts after a write was announced never gets the answer read before the write', async () => {
    // In B's filter, not in its store.
    await writer.recordDeletion('item', 'r-inflight', { reason: 'First' });
    await eventually(() => expect(announcedToB('r-inflight')).toBe(1));

    // B's next query for the key reads the table, then takes a while to come back (a slow network).
    const tableB = b.get(TombstoneTable);
    const lookup = tableB.lookup.bind(tableB);
    const read = deferred();
    const gate = deferred();
    tableB.lookup = async (...args: Parameters<TombstoneTable['lookup']>): Promise<TombstoneLookupResult> => {
      const result = await lookup(...args);
      if (args[1] === 'r-inflight') {
        read.resolve();
        await gate.promise;
      }
      return result;
    };
    try {
      const before = lookupB.resolve('item', 'r-inflight');
      await read.promise;
      // The reason changes, the write commits and B is told.
      await writer.recordDeletion('item', 'r-inflight', { reason: 'Second' });
      await eventually(() => expect(announcedToB('r-inflight')).toBe(2));
      // A request that arrives now...
      const after = lookupB.resolve('item', 'r-inflight');
      gate.resolve();
      expect(((await before) as Extract<TombstoneResolution, { state: 'gone' }>).reason).toBe('First');
      // ...joins the query that was in flight, and answers what the table said before the write.
      expect(await after).toMatchObject({ state: 'gone', reason: 'Second' });
    } finally {
      gate.resolve();
      tableB.lookup = lookup;
    }
  });

  it('a write made through TombstoneService in the caller’s transaction is seen at once on the instance that made it', async () => {
    const httpA = request(a.getHttpServer());
    // Notifications come "a few milliseconds after the commit": here, a little later than that.
    const notifications = internals(a);
    const received = notifications.received;
    const held: unknown[] = [];
    notifications.received = (message) => void held.push(message);
    try {
      await httpA.get('/items/r-in-tx').expect(404);
      const dataSource = writer.dataSource;
      await dataSource.transaction(async (manager) => {
        await writer.recordDeletion('item', 'r-in-tx', { reason: 'Deleted in a transaction', manager });
        // Another request for the key while the transaction is still open: it reads the table as
        // committed (no tombstone yet), and the answer is kept.
        await httpA.get('/items/r-in-tx').expect(404);
      });
      // Committed, and made through the service of this very instance: README, "Writes made through
      // TombstoneService are also dropped at once on the instance that made them".
      const res = await httpA.get('/items/r-in-tx');
      expect({ status: res.status, reason: res.body.reason }).toEqual({ status: 410, reason: 'Deleted in a transaction' });
    } finally {
      notifications.received = received;
      for (const message of held) received.call(notifications, message);
    }
    await eventually(async () => void (await request(a.getHttpServer()).get('/items/r-in-tx').expect(410)));
  });

  it('loads its filter again when it reconnects while a filter load is running', async () => {
    const dataSource = b.get(TombstoneService).dataSource;
    const query = dataSource.query.bind(dataSource);
    const gate = deferred();
    let held = true;
    let blocked = 0;
    dataSource.query = (async (sql: string, parameters?: unknown[]) => {
      // The first read of a load: the stored snapshot (B starts from it), or the table.
      if (held && /FROM tombstone_filter_snapshots s CROSS JOIN|FROM tombstones\s+WHERE id > \$1/.test(sql)) {
        blocked++;
        await gate.promise;
      }
      return query(sql, parameters);
    }) as DataSource['query'];
    try {
      await lookupB.loaded();
      expect(lookupB.stats().filter.ready).toBe(true);
      // The listening connection drops: B reconnects, and starts a full load of its filter...
      const first = listenerPid(b);
      await db.sql.query(`SELECT pg_terminate_backend($1)`, [first]);
      await eventually(() => expect(blocked).toBe(1));
      // ...and drops again while that load runs (a flapping network, a failover).
      await eventually(() => expect(listenerPid(b)).not.toBeNull());
      const second = listenerPid(b);
      expect(second).not.toBe(first);
      await db.sql.query(`SELECT pg_terminate_backend($1)`, [second]);
      await eventually(() => {
        expect(listenerPid(b)).not.toBeNull();
        expect(listenerPid(b)).not.toBe(second);
        expect(lookupB.stats().state).toBe('coherent');
      });
      held = false;
      gate.resolve();
      await lookupB.loaded();
      // The load the second reconnection asked for never runs: the filter stays off (every miss
      // of an unknown key is a query again) until some other event asks for a load.
      await eventually(() => expect(lookupB.stats().filter).toMatchObject({ ready: true }));
    } finally {
      held = false;
      gate.resolve();
      dataSource.query = query;
    }
  });
});

describe('lookup cache edges: filter size', () => {
  let db: TestDatabase;
  let app: INestApplication;

  beforeAll(async () => {
    db = await createTestDatabase();
    app = await bootApp('express', moduleFor(db, { cache: { filter: { minCapacity: 1000 } } }));
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  it('grows the filter when a large change fills it past its capacity', async () => {
    const lookup = app.get(TombstoneLookup);
    expect(lookup.stats().filter).toMatchObject({ ready: true, capacity: 1000 });
    // One statement, too many keys to list: the (scope, type) is reloaded into the filter.
    await db.sql.query(`
      INSERT INTO tombstones (resource_type, resource_key, kind)
      SELECT 'item', 'bulk-' || i, 'deleted' FROM generate_series(1, 5000) AS i`);
    await eventually(async () => expect(await lookup.resolve('item', 'bulk-5000')).toMatchObject({ state: 'gone' }));
    await lookup.loaded();
    // README: "rebuilt twice as large in the background when more keys than that have been added".
    await eventually(async () => {
      await lookup.loaded();
      const { ready, keys, capacity } = lookup.stats().filter;
      expect({ ready, keys, capacity, capacityCoversKeys: capacity >= keys }).toMatchObject({ ready: true, capacityCoversKeys: true });
    });
    // Unknown keys the filter should answer (1% may get through)...
    const filtered = lookup.stats().filtered;
    for (let i = 0; i < 200; i++) await lookup.resolve('item', `never-${i}`);
    const letThrough = 200 - (lookup.stats().filtered - filtered);
    // ...but 5000 keys sit in a filter sized for 1000, and nothing rebuilds it until an
    // unrelated single-key change comes: about 80% of unknown keys go to the database.
    expect(letThrough).toBeLessThanOrEqual(20);
  });
});

describe('lookup cache edges: writes never fail because of the cache', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
  });

  afterAll(async () => {
    await db?.drop();
  });

  // Heavy: about 1 GB of memory in the PostgreSQL backend for a few seconds.
  it('commits one statement that changes many long keys', async () => {
    // 90,000 keys of 2048 bytes; the control characters make each one 12 KB of JSON, so the
    // trigger's json_agg passes PostgreSQL's 1 GB limit. The same happens with ~520,000 plain
    // 2 KB keys, or an UPDATE of ~260,000 of them (an UPDATE lists every key twice).
    const insert = db.sql.query(`
      INSERT INTO tombstones (resource_type, resource_key, kind)
      SELECT 'item', lpad(i::text, 8, '0') || repeat(chr(1), 2040), 'deleted' FROM generate_series(1, 90000) AS i`);
    await expect(insert).resolves.toBeDefined();
    const [{ n }] = await db.sql.query(`SELECT count(*)::int AS n FROM tombstones`);
    expect(n).toBe(90_000);
  }, 300_000);
});

describe('lookup cache edges: a listening connection that stops answering', () => {
  let db: TestDatabase;
  let proxy: Proxy;

  beforeAll(async () => {
    db = await createTestDatabase();
  });

  beforeEach(async () => {
    proxy = await startProxy(db.url);
  });

  afterEach(async () => {
    await proxy?.close();
  });

  afterAll(async () => {
    await db?.drop();
  });

  const listenThroughProxy = () => moduleFor(db, { cache: { listen: proxy.url(db.url) } });

  it('start-up goes on when the listening connection connects but its LISTEN is never answered', async () => {
    proxy.state.freezeNextListen = true;
    const moduleRef = await Test.createTestingModule(listenThroughProxy()).compile();
    const app = moduleRef.createNestApplication();
    app.useLogger(false);
    const init = app.init();
    try {
      // README: "The listening connection is opened during application bootstrap; if it cannot
      // be, start-up goes on". The LISTEN has no time limit: app.init() waits for it forever.
      expect(await within(init, 30_000)).toBe('settled');
    } finally {
      proxy.cut();
      await init.catch(() => undefined);
      await app.close();
    }
  }, 60_000);

  it('reconnects when a new listening connection’s LISTEN is never answered', async () => {
    const app = await bootApp('express', listenThroughProxy());
    try {
      const lookup = app.get(TombstoneLookup);
      expect(lookup.stats().state).toBe('coherent');
      // The connection drops; the next one connects, and then the network stops answering.
      proxy.state.freezeNextListen = true;
      await db.sql.query(`SELECT pg_terminate_backend($1)`, [listenerPid(app)]);
      await eventually(() => expect(lookup.stats().state).toBe('waiting'));
      // Neither the connect timeout nor the health check covers the LISTEN: the attempt never
      // ends, so no reconnection is ever scheduled, and the cache stays off for good.
      await eventually(() => expect(lookup.stats().state).toBe('coherent'));
    } finally {
      proxy.cut();
      await app.close();
    }
  }, 60_000);

  it('app.close() returns when the listening connection has stopped answering', async () => {
    const app = await bootApp('express', listenThroughProxy());
    const lookup = app.get(TombstoneLookup);
    expect(lookup.stats().state).toBe('coherent');
    // A partition, before the 15 s health check has noticed it.
    proxy.state.frozen = true;
    const closing = app.close();
    try {
      // onApplicationShutdown awaits client.end(), which waits for the server to close its side.
      expect(await within(closing, 30_000)).toBe('settled');
    } finally {
      proxy.cut();
      await closing;
    }
  }, 60_000);
});

describe('lookup cache edges: start-up check', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    // The table does not announce inserts (a trigger disabled for a bulk load, a half-run migration).
    await db.sql.query(`ALTER TABLE tombstones DISABLE TRIGGER tombstones_notify_ins`);
  });

  afterAll(async () => {
    await db?.drop();
  });

  it('never runs the cache while the table does not announce its changes, even when the first check fails', async () => {
    const moduleRef = await Test.createTestingModule(moduleFor(db)).compile();
    // The trigger check fails once (a statement timeout, the database restarting during a deploy).
    const dataSource = moduleRef.get<DataSource>(getDataSourceToken());
    const query = dataSource.query.bind(dataSource);
    let failed = false;
    dataSource.query = (async (sql: string, parameters?: unknown[]) => {
      if (!failed && /FROM pg_trigger/.test(sql)) {
        failed = true;
        throw new Error('canceling statement due to statement timeout');
      }
      return query(sql, parameters);
    }) as DataSource['query'];
    const app = moduleRef.createNestApplication();
    app.useLogger(false);
    await app.init();
    try {
      await app.get(TombstoneLookup).loaded();
      const http = request(app.getHttpServer());
      await http.get('/items/r-unannounced').expect(404);
      await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'r-unannounced', 'deleted')`);
      // README: "Without them it logs a warning and runs without the cache (never a cache that
      // could serve stale answers)". The failed check is taken as a pass once LISTEN works: the
      // filter answers 404 for this key until the next full reload.
      await eventually(async () => void (await http.get('/items/r-unannounced').expect(410)));
    } finally {
      dataSource.query = query;
      await app.close();
    }
  });
});
