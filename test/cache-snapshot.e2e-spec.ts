import { jest } from '@jest/globals';
import { type INestApplication, Logger } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { getDataSourceToken, TypeOrmModule } from '@nestjs/typeorm';
import pg from 'pg';
import type { DataSource } from 'typeorm';
import { TombstoneModule, TombstoneNotifications } from '../src/index.js';
import { bootApp } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';
import { QueryCounter } from './support/query-counter.js';
import { LruTombstoneCacheStore } from '../src/cache/tombstone.cache.js';
import { TombstoneFences } from '../src/cache/tombstone.fences.js';
import { TombstoneReplicas } from '../src/cache/tombstone.replicas.js';
import { TombstoneLookup } from '../src/cache/tombstone.lookup.js';
import type { TombstoneFilterOptions } from '../src/tombstone.options.js';
import { resolveTombstoneOptions } from '../src/tombstone.options-resolve.js';
import { TombstoneChanges } from '../src/table/tombstone.changes.js';
import { TombstoneTable } from '../src/table/tombstone.table.js';

// Starting the lookup cache's filter from the snapshot stored in the database (docs/cache.md,
// "Starting from a snapshot"): what an instance reads, that nothing committed around its start is
// missed, and that a snapshot it cannot trust is never used.

const SEEDED = 3000;
/** The statement of a read of the whole table, sent once per batch of 50,000 rows. */
const TABLE_BATCH = /FROM tombstones\s+WHERE id > \$1/;
/** The statement that starts a read of the whole table (its watermark). */
const TABLE_READ = /SELECT pg_current_snapshot\(\)::text AS watermark, now\(\)/;
/** The read of the rows changed since a snapshot. */
const CHANGED = /changed_xid >= \$1::xid8 AND changed_xid < pg_snapshot_xmax\(pg_current_snapshot\(\)\)\s+ORDER BY/;

const lookupOf = (app: INestApplication) => app.get(TombstoneLookup, { strict: false });
const filterStats = (app: INestApplication) => lookupOf(app).stats().filter;

/** What the module logged (log and warn) since the spies were set. */
function logged(): string[] {
  const log = Logger.prototype.log as unknown as jest.Mock;
  const warn = Logger.prototype.warn as unknown as jest.Mock;
  return [...log.mock.calls, ...warn.mock.calls].map(([message]) => String(message));
}

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((res) => (resolve = res));
  return { promise, resolve };
}

/** How `app` answers `key`, and whether its filter answered (no query). */
async function answer(app: INestApplication, key: string): Promise<{ state: string; byFilter: boolean }> {
  const lookup = lookupOf(app);
  const before = lookup.stats().filtered;
  const resolution = await lookup.resolve('item', key);
  return { state: resolution.state, byFilter: lookup.stats().filtered > before };
}

describe('filter snapshot: starting', () => {
  let db: TestDatabase;
  const apps: INestApplication[] = [];

  const boot = async (filter: TombstoneFilterOptions = {}, counter?: QueryCounter) => {
    const app = await bootApp('express', {
      imports: [
        TypeOrmModule.forRoot(counter ? { ...db.options(), logging: true, logger: counter } : db.options()),
        TombstoneModule.forRoot({ hitCounts: false, cache: { filter } }),
      ],
    });
    apps.push(app);
    return app;
  };
  const snapshot = async () =>
    ((await db.sql.query(
      `SELECT written_xid::text AS version, pg_snapshot_xmax(watermark)::text AS xmax, built_at AS "builtAt", salt, key_count::int AS keys FROM tombstone_filter_snapshots`,
    )) as { version: string; xmax: string; builtAt: Date; salt: string; keys: number }[])[0] ?? null;
  /** Rows that belong in the filter: neither hidden nor expired. */
  const listed = async () =>
    ((await db.sql.query(`SELECT count(*)::int AS n FROM tombstones WHERE kind <> 'hidden' AND (expires_at IS NULL OR expires_at > now())`)) as { n: number }[])[0].n;
  /** A snapshot of the table as it is now, written by an instance that read it. */
  const fresh = async () => {
    await db.sql.query(`DELETE FROM tombstone_filter_snapshots`);
    const app = await boot();
    expect(filterStats(app).lastLoadFrom).toBe('table');
    await app.close();
    return (await snapshot())!;
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    // Eight in ten deleted, one hidden, one moved.
    await db.sql.query(
      `INSERT INTO tombstones (resource_type, resource_key, kind, target_key)
       SELECT 'item', 'key-' || g, CASE g % 10 WHEN 0 THEN 'moved' WHEN 1 THEN 'hidden' ELSE 'deleted' END,
              CASE g % 10 WHEN 0 THEN 'live' END
         FROM generate_series(0, $1 - 1) g`,
      [SEEDED],
    );
    await db.sql.query('ANALYZE tombstones');
  });

  beforeEach(() => {
    jest.spyOn(Logger.prototype, 'log');
    jest.spyOn(Logger.prototype, 'warn');
  });

  afterEach(async () => {
    jest.restoreAllMocks();
    for (const app of apps.splice(0)) await app.close();
  });

  afterAll(async () => {
    await db?.drop();
  });

  it('the first instance reads the table and stores the snapshot; the next starts from it without reading the table', async () => {
    await db.sql.query(`DELETE FROM tombstone_filter_snapshots`);
    const LISTED = await listed();
    expect(LISTED).toBe(2700);
    const first = await boot();
    expect(filterStats(first)).toMatchObject({ ready: true, lastLoadFrom: 'table', lastLoadRows: LISTED });
    expect(logged()).toContainEqual(expect.stringMatching(/snapshot not used: there is none yet/));
    expect((await snapshot())!.keys).toBe(LISTED);
    await first.close();

    const counter = new QueryCounter();
    const next = await boot({}, counter);
    expect(filterStats(next)).toMatchObject({ ready: true, lastLoadFrom: 'snapshot', lastLoadRows: 0, keys: LISTED });
    expect(counter.queries.filter((q) => TABLE_BATCH.test(q) || TABLE_READ.test(q))).toEqual([]);
    expect(counter.queries.filter((q) => CHANGED.test(q))).toHaveLength(1);
    // It answers as the table does: hidden keys exactly like unknown ones, from the filter.
    expect(await answer(next, 'key-5')).toEqual({ state: 'gone', byFilter: false });
    expect(await answer(next, 'key-10')).toMatchObject({ state: 'moved' });
    expect(await answer(next, 'key-11')).toEqual({ state: 'none', byFilter: true });
    expect(await answer(next, 'never-was')).toEqual({ state: 'none', byFilter: true });
  });

  it('prefix tombstones: one in the snapshot and one written after it both answer the keys under them', async () => {
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind, target_key, prefix) VALUES ('item', 'snap-old/', 'moved', 'snap-new/', true)`);
    await fresh();
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind, prefix) VALUES ('item', 'snap-gone/', 'deleted', true)`);
    const next = await boot();
    expect(filterStats(next)).toMatchObject({ ready: true, lastLoadFrom: 'snapshot', lastLoadRows: 1 });
    expect(await answer(next, 'snap-old/a/b')).toEqual({ state: 'moved', byFilter: false });
    expect(await answer(next, 'snap-gone/a/b')).toEqual({ state: 'gone', byFilter: false });
    expect(await answer(next, 'snap-never/a/b')).toEqual({ state: 'none', byFilter: true });
    await db.sql.query(`DELETE FROM tombstones WHERE resource_key IN ('snap-old/', 'snap-gone/')`);
  });

  it("writes the snapshot past TypeORM's logger: the salt and the bits reach no log", async () => {
    await db.sql.query(`DELETE FROM tombstone_filter_snapshots`);
    const logged: string[] = [];
    const record = (query: string, parameters?: unknown[]) => void logged.push(query, JSON.stringify(parameters ?? []));
    const logger = { logQuery: record, logQueryError: (_error: unknown, query: string, parameters?: unknown[]) => record(query, parameters), logQuerySlow() {}, logSchemaBuild() {}, logMigration() {}, log() {} };
    const app = await bootApp('express', {
      imports: [TypeOrmModule.forRoot({ ...db.options(), logging: true, logger }), TombstoneModule.forRoot({ hitCounts: false })],
    });
    apps.push(app);
    expect(filterStats(app)).toMatchObject({ ready: true, lastLoadFrom: 'table' });
    const { salt } = (await snapshot())!;
    expect(salt.length).toBeGreaterThan(8);
    // The logger saw the table's reads, not the write.
    expect(logged.some((entry) => /FROM "?tombstones"?/.test(entry))).toBe(true);
    expect(logged.join('\n')).not.toContain(salt);
  });

  it('reads the rows changed since the snapshot, and only those: hidden and expired ones stay out of the filter', async () => {
    await fresh();
    const LISTED = await listed();
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'after-deleted', 'deleted')`);
    await db.sql.query(`UPDATE tombstones SET kind = 'deleted' WHERE resource_type = 'item' AND resource_key = 'key-21'`); // was hidden
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'after-hidden', 'hidden')`);
    await db.sql.query(
      `INSERT INTO tombstones (resource_type, resource_key, kind, expires_at) VALUES ('item', 'after-expired', 'deleted', now() - interval '1 hour')`,
    );
    // Hit counts, actors, metadata: no change of what the filter holds, nothing to read again.
    await db.sql.query(`UPDATE tombstones SET hit_count = hit_count + 1, actor = 'someone', metadata = '{"a":1}'`);

    const app = await boot();
    expect(filterStats(app)).toMatchObject({ lastLoadFrom: 'snapshot', lastLoadRows: 4, keys: LISTED + 2 });
    expect(await answer(app, 'after-deleted')).toMatchObject({ state: 'gone', byFilter: false });
    expect(await answer(app, 'key-21')).toMatchObject({ state: 'gone', byFilter: false });
    expect(await answer(app, 'after-hidden')).toEqual({ state: 'none', byFilter: true });
    expect(await answer(app, 'after-expired')).toEqual({ state: 'none', byFilter: true });
  });

  it('does not miss a transaction that was running when the table was read for the snapshot and commits after it was stored', async () => {
    await db.sql.query(`DELETE FROM tombstone_filter_snapshots`);
    const writer = new pg.Client({ connectionString: db.url });
    await writer.connect();
    try {
      await writer.query('BEGIN');
      await writer.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'in-flight', 'deleted')`);
      const {
        rows: [{ xid }],
      } = await writer.query<{ xid: string }>('SELECT pg_current_xact_id()::text AS xid');
      // A later transaction commits first: the newest transaction id is past the running one.
      await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'overtaking', 'deleted')`);
      // An instance reads the table (without the row: not committed) and stores the snapshot.
      const reader = await boot();
      expect(filterStats(reader).lastLoadFrom).toBe('table');
      // The trap: a watermark taken as "the newest transaction" would be past this one.
      const [{ seen }] = (await db.sql.query(`SELECT pg_visible_in_snapshot($1::xid8, watermark) AS seen FROM tombstone_filter_snapshots`, [xid])) as {
        seen: boolean;
      }[];
      expect(seen).toBe(false);
      await writer.query('COMMIT');
    } finally {
      await writer.end();
    }
    const app = await boot();
    expect(filterStats(app)).toMatchObject({ lastLoadFrom: 'snapshot' });
    expect(await answer(app, 'in-flight')).toMatchObject({ state: 'gone', byFilter: false });
    expect(await answer(app, 'overtaking')).toMatchObject({ state: 'gone', byFilter: false });
  });

  it('sees writes committed while it starts: before its read of the changed rows, and after', async () => {
    await fresh();
    const moduleRef = await Test.createTestingModule({
      imports: [TypeOrmModule.forRoot(db.options()), TombstoneModule.forRoot({ hitCounts: false })],
    }).compile();
    const dataSource = moduleRef.get<DataSource>(getDataSourceToken());
    const query = dataSource.query.bind(dataSource);
    const gates = { before: deferred(), after: deferred() };
    const reached: string[] = [];
    dataSource.query = (async (sql: string, parameters?: unknown[]) => {
      if (!CHANGED.test(sql)) return query(sql, parameters);
      reached.push('before');
      await gates.before.promise;
      const rows = await query(sql, parameters);
      reached.push('after');
      await gates.after.promise;
      return rows;
    }) as DataSource['query'];
    const app = moduleRef.createNestApplication();
    app.useLogger(false);
    apps.push(app);
    try {
      await app.init();
      await eventually(() => expect(reached).toEqual(['before']));
      // Committed after the snapshot was read, before the changed rows are: that read sees it.
      await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'during-1', 'deleted')`);
      gates.before.resolve();
      await eventually(() => expect(reached).toEqual(['before', 'after']));
      // Committed after that read: only its notification tells, and it goes into the filter being built.
      await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'during-2', 'deleted')`);
      await app.get(TombstoneNotifications).settle(30_000);
      expect(filterStats(app).ready).toBe(false);
      gates.after.resolve();
      await lookupOf(app).loaded();
      expect(filterStats(app)).toMatchObject({ ready: true, lastLoadFrom: 'snapshot', lastLoadRows: 1 });
      expect(await answer(app, 'during-1')).toMatchObject({ state: 'gone', byFilter: false });
      expect(await answer(app, 'during-2')).toMatchObject({ state: 'gone', byFilter: false });
    } finally {
      gates.before.resolve();
      gates.after.resolve();
      dataSource.query = query;
    }
  });

  it('does not use a corrupt snapshot: it reads the table, says why, and stores the snapshot again', async () => {
    const before = await fresh();
    const LISTED = await listed();
    // One byte of the bits changed, by the module's own hand as far as the row tells.
    await db.sql.query(
      `UPDATE tombstone_filter_snapshots SET bits = set_byte(bits, 100, get_byte(bits, 100) # 255), written_xid = pg_current_xact_id()`,
    );
    const app = await boot();
    expect(filterStats(app)).toMatchObject({ lastLoadFrom: 'table', lastLoadRows: LISTED });
    expect(logged()).toContainEqual(expect.stringMatching(/snapshot not used: its checksum does not match/));
    const after = (await snapshot())!;
    expect(after.version).not.toBe(before.version);
    expect(after.salt).not.toBe(before.salt);
    expect(filterStats(await boot())).toMatchObject({ lastLoadFrom: 'snapshot', lastLoadRows: 0 });
  });

  it.each([
    {
      case: 'another format (hash function)',
      sql: `UPDATE tombstone_filter_snapshots SET format = 'bloomfilter/le32/0000000000000000', written_xid = pg_current_xact_id()`,
      reason: /written in another format/,
    },
    { case: 'a row this module did not write here (a restored dump)', sql: `UPDATE tombstone_filter_snapshots SET key_count = key_count`, reason: /not written by this module/ },
    {
      case: 'a size that is not the one of its capacity',
      sql: `UPDATE tombstone_filter_snapshots SET capacity = capacity * 2, written_xid = pg_current_xact_id()`,
      reason: /is not the one of its capacity/,
    },
    { case: 'another false-positive rate', filter: { falsePositiveRate: 0.02 }, reason: /false-positive rate of 0.01, this instance's is 0.02/ },
    { case: 'a capacity below minCapacity', filter: { minCapacity: 500_000 }, reason: /less than this instance's minCapacity/ },
    {
      case: 'triggers that do not mark changed rows',
      sql: `ALTER TABLE tombstones DISABLE TRIGGER tombstones_changed_upd`,
      undo: `ALTER TABLE tombstones ENABLE ALWAYS TRIGGER tombstones_changed_upd`,
      reason: /triggers that mark changed rows .* are missing or disabled/,
    },
  ])('does not use a snapshot with $case', async ({ sql, undo, filter, reason }) => {
    await fresh();
    const LISTED = await listed();
    if (sql) await db.sql.query(sql);
    try {
      const app = await boot(filter);
      expect(filterStats(app)).toMatchObject({ lastLoadFrom: 'table', lastLoadRows: LISTED });
      expect(logged()).toContainEqual(expect.stringMatching(reason));
    } finally {
      if (undo) await db.sql.query(undo);
    }
  });

  it.each([
    { case: 'another false-positive rate', filter: { falsePositiveRate: 0.02 } },
    { case: 'a capacity below minCapacity', filter: { minCapacity: 500_000 } },
    {
      case: 'triggers that do not mark changed rows',
      sql: `ALTER TABLE tombstones DISABLE TRIGGER tombstones_changed_upd`,
      undo: `ALTER TABLE tombstones ENABLE ALWAYS TRIGGER tombstones_changed_upd`,
    },
  ])('does not read the table again and again for a snapshot it cannot use, with $case', async ({ sql, undo, filter }) => {
    await fresh();
    if (sql) await db.sql.query(sql);
    try {
      // Another instance, with the default settings, stores its snapshot after this one started.
      const app = await boot(filter);
      expect(filterStats(app).lastLoadFrom).toBe('table');
      await fresh();
      const stored = (await snapshot())!;
      const loaded = filterStats(app).lastLoadMs;
      const lookup = lookupOf(app);
      await lookup.checkSnapshot();
      await lookup.loaded();
      expect(logged()).not.toContainEqual(expect.stringMatching(/loading the filter again/));
      expect(filterStats(app).lastLoadMs).toBe(loaded);
      expect(await snapshot()).toEqual(stored);
    } finally {
      if (undo) await db.sql.query(undo);
    }
  });

  it('stores the snapshot again once many rows changed since, and does not use one with too many', async () => {
    const first = await fresh();
    const LISTED = await listed();
    await db.sql.query(
      `INSERT INTO tombstones (resource_type, resource_key, kind) SELECT 'item', 'many-' || g, 'deleted' FROM generate_series(1, 10000) g`,
    );
    // 10,000 rows changed: read, and the snapshot is stored with them.
    const app = await boot();
    expect(filterStats(app)).toMatchObject({ lastLoadFrom: 'snapshot', lastLoadRows: 10_000, keys: LISTED + 10_000 });
    const second = (await snapshot())!;
    expect(second).toMatchObject({ keys: LISTED + 10_000, salt: first.salt, builtAt: first.builtAt });
    expect(BigInt(second.xmax)).toBeGreaterThan(BigInt(first.xmax));
    expect(filterStats(await boot())).toMatchObject({ lastLoadFrom: 'snapshot', lastLoadRows: 0 });

    // More than 50,000 since: a read of the table costs about as much, and makes a better filter.
    await db.sql.query(
      `INSERT INTO tombstones (resource_type, resource_key, kind) SELECT 'item', 'more-' || g, 'deleted' FROM generate_series(1, 50001) g`,
    );
    const late = await boot();
    expect(filterStats(late)).toMatchObject({ lastLoadFrom: 'table', lastLoadRows: LISTED + 60_001 });
    expect(logged()).toContainEqual(expect.stringMatching(/snapshot not used: more than 50000 rows changed since it was written/));
    await db.sql.query(`DELETE FROM tombstones WHERE resource_key LIKE 'many-%' OR resource_key LIKE 'more-%'`);
  });

  it('an instance loads a snapshot newer than its filter when it looks at it', async () => {
    const old = await fresh();
    const app = await boot();
    expect(filterStats(app).lastLoadFrom).toBe('snapshot');
    // Another instance reads the table and stores a new snapshot (the old one was corrupt).
    await db.sql.query(`UPDATE tombstone_filter_snapshots SET bits = set_byte(bits, 0, get_byte(bits, 0) # 1), written_xid = pg_current_xact_id()`);
    await boot();
    const stored = (await snapshot())!;
    expect(stored.salt).not.toBe(old.salt);
    const lookup = lookupOf(app);
    await lookup.checkSnapshot();
    await lookup.loaded();
    expect(logged()).toContainEqual(expect.stringMatching(/built from a newer read of the table/));
    expect((lookup as unknown as { filter: { salt: string } }).filter.salt).toBe(stored.salt);
    expect(filterStats(app)).toMatchObject({ ready: true, lastLoadFrom: 'snapshot', lastLoadRows: 0 });
    // Up to date now: nothing more to do.
    jest.restoreAllMocks();
    const log = jest.spyOn(Logger.prototype, 'log');
    await lookup.checkSnapshot();
    expect(lookup.stats().filter.lastLoadFrom).toBe('snapshot');
    expect(log.mock.calls.map(([message]) => String(message))).toEqual([]);
  });
});

describe('filter snapshot: many instances at once', () => {
  let db: TestDatabase;
  let app: INestApplication;
  const counter = new QueryCounter();
  let instances: TombstoneLookup[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.sql.query(
      `INSERT INTO tombstones (resource_type, resource_key, kind) SELECT 'item', 'key-' || g, 'deleted' FROM generate_series(1, $1) g`,
      [SEEDED],
    );
    app = await bootApp('express', {
      imports: [TypeOrmModule.forRoot({ ...db.options(), logging: true, logger: counter }), TombstoneModule.forRoot({ hitCounts: false })],
    });
  });

  afterEach(() => {
    for (const lookup of instances) lookup.deaf();
    instances = [];
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  /** Twenty instances' lookup caches, on this app's DataSource, that start listening at the same instant (a reconnection). */
  async function reconnectTwenty(): Promise<TombstoneLookup[]> {
    const table = app.get(TombstoneTable, { strict: false });
    const options = resolveTombstoneOptions({ hitCounts: false });
    // Their logs go where the app's go: nowhere (bootApp).
    instances = Array.from({ length: 20 }, () => new TombstoneLookup(options, table, new TombstoneChanges(), new LruTombstoneCacheStore(), new TombstoneFences(table), new TombstoneReplicas(options, table)));
    counter.reset();
    for (const lookup of instances) lookup.listening(0);
    await Promise.all(instances.map((lookup) => lookup.loaded()));
    return instances;
  }

  it('with a snapshot: twenty reads of it, and none of the table', async () => {
    expect(app.get(TombstoneLookup, { strict: false }).stats().filter.lastLoadFrom).toBe('table');
    const lookups = await reconnectTwenty();
    expect(lookups.map((l) => l.stats().filter)).toEqual(lookups.map(() => expect.objectContaining({ ready: true, lastLoadFrom: 'snapshot', lastLoadRows: 0 })));
    expect(counter.queries.filter((q) => TABLE_READ.test(q) || TABLE_BATCH.test(q))).toEqual([]);
  });

  it.each([
    ['none', `DELETE FROM tombstone_filter_snapshots`],
    ['a corrupt one', `UPDATE tombstone_filter_snapshots SET bits = set_byte(bits, 9, get_byte(bits, 9) # 16), written_xid = pg_current_xact_id()`],
  ])('with %s: one instance reads the table, the others wait for its snapshot', async (_, sql) => {
    await db.sql.query(sql);
    const lookups = await reconnectTwenty();
    const from = lookups.map((l) => l.stats().filter.lastLoadFrom);
    expect(from.filter((f) => f === 'table')).toHaveLength(1);
    expect(from.filter((f) => f === 'snapshot')).toHaveLength(19);
    expect(counter.queries.filter((q) => TABLE_READ.test(q))).toHaveLength(1);
    expect(lookups.reduce((rows, l) => rows + (l.stats().filter.lastLoadRows ?? 0), 0)).toBe(SEEDED);
    for (const lookup of lookups) expect(lookup.stats().filter).toMatchObject({ ready: true, keys: SEEDED });
  });
});

describe('filter snapshot: before the migration', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    // The schema as the migrations before CreateTombstoneFilterSnapshot1765152000000 left it.
    await db.sql.query(`DROP TABLE tombstone_filter_snapshots`);
    await db.sql.query(`DROP TRIGGER tombstones_changed_ins ON tombstones`);
    await db.sql.query(`DROP TRIGGER tombstones_changed_upd ON tombstones`);
    await db.sql.query(`ALTER TABLE tombstones DROP COLUMN changed_xid`);
    await db.sql.query(`DROP FUNCTION tombstones_changed_insert(), tombstones_changed_update()`);
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'old', 'deleted')`);
  });

  afterAll(async () => {
    await db?.drop();
  });

  it('reads the table, and says which migration to run', async () => {
    const warn = jest.spyOn(Logger.prototype, 'warn');
    try {
      const app = await bootApp('express', { imports: [TypeOrmModule.forRoot(db.options()), TombstoneModule.forRoot({ hitCounts: false })] });
      try {
        expect(filterStats(app)).toMatchObject({ ready: true, lastLoadFrom: 'table', lastLoadRows: 1 });
        expect(warn.mock.calls.map(([message]) => String(message))).toContainEqual(expect.stringMatching(/CreateTombstoneFilterSnapshot1765152000000/));
        expect(await answer(app, 'old')).toMatchObject({ state: 'gone', byFilter: false });
        expect(await answer(app, 'new')).toEqual({ state: 'none', byFilter: true });
      } finally {
        await app.close();
      }
    } finally {
      warn.mockRestore();
    }
  });
});

describe('filter snapshot: a role that may not write it', () => {
  let db: TestDatabase;
  const role = `tombstones_reader_${process.pid}_${Date.now()}`;

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'old', 'deleted')`);
    await db.sql.query(`CREATE ROLE ${role} LOGIN PASSWORD 'reader'`);
    await db.sql.query(`GRANT SELECT ON tombstones, tombstone_filter_snapshots TO ${role}`);
  });

  afterAll(async () => {
    await db?.drop();
    const admin = new pg.Client({ connectionString: db.url.replace(/\/[^/]*$/, '/postgres') });
    await admin.connect();
    await admin.query(`DROP ROLE IF EXISTS ${role}`).finally(() => admin.end());
  });

  it('reads the table, warns once, and never waits for a snapshot it cannot write', async () => {
    const url = new URL(db.url);
    url.username = role;
    url.password = 'reader';
    const warn = jest.spyOn(Logger.prototype, 'warn');
    const app = await bootApp('express', {
      imports: [TypeOrmModule.forRoot(Object.assign(db.options(), { url: url.toString() })), TombstoneModule.forRoot({ hitCounts: false })],
    });
    try {
      expect(filterStats(app)).toMatchObject({ ready: true, lastLoadFrom: 'table', lastLoadRows: 1 });
      const warnings = () => warn.mock.calls.map(([message]) => String(message)).filter((m) => /snapshot not written/.test(m));
      expect(warnings()).toEqual([expect.stringMatching(/permission denied for table tombstone_filter_snapshots/)]);
      expect(await db.sql.query(`SELECT 1 FROM tombstone_filter_snapshots`)).toEqual([]);
      // Listening again: the table, at once, with no lock to take and no warning again.
      const lookup = lookupOf(app);
      lookup.listening(0);
      await lookup.loaded();
      expect(filterStats(app)).toMatchObject({ ready: true, lastLoadFrom: 'table', lastLoadRows: 1 });
      expect(warnings()).toHaveLength(1);
      // Nothing for it to refresh.
      await lookup.checkSnapshot();
      expect(lookup.stats().filter.lastLoadFrom).toBe('table');
      expect(await answer(app, 'old')).toMatchObject({ state: 'gone', byFilter: false });
    } finally {
      warn.mockRestore();
      await app.close();
    }
  });
});

describe('filter snapshot: a role that may not read it', () => {
  let db: TestDatabase;
  const role = `tombstones_blind_${process.pid}_${Date.now()}`;

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'old', 'deleted')`);
    await db.sql.query(`CREATE ROLE ${role} LOGIN PASSWORD 'blind'`);
    // The common grant of an upgrade: the tombstone table only, not the new snapshot table.
    await db.sql.query(`GRANT SELECT ON tombstones TO ${role}`);
  });

  afterAll(async () => {
    await db?.drop();
    const admin = new pg.Client({ connectionString: db.url.replace(/\/[^/]*$/, '/postgres') });
    await admin.connect();
    await admin.query(`DROP ROLE IF EXISTS ${role}`).finally(() => admin.end());
  });

  it('reads the table, says why, and answers from its filter', async () => {
    const url = new URL(db.url);
    url.username = role;
    url.password = 'blind';
    const warn = jest.spyOn(Logger.prototype, 'warn');
    const app = await bootApp('express', {
      imports: [TypeOrmModule.forRoot(Object.assign(db.options(), { url: url.toString() })), TombstoneModule.forRoot({ hitCounts: false })],
    });
    try {
      expect(filterStats(app)).toMatchObject({ ready: true, lastLoadFrom: 'table', lastLoadRows: 1 });
      expect(warn.mock.calls.map(([message]) => String(message))).toContainEqual(
        expect.stringMatching(/snapshot not read \(permission denied for table tombstone_filter_snapshots\): reading the table/),
      );
      // Nothing to refresh from, and no error for it.
      await lookupOf(app).checkSnapshot();
      expect(await answer(app, 'old')).toMatchObject({ state: 'gone', byFilter: false });
      expect(await answer(app, 'never-was')).toEqual({ state: 'none', byFilter: true });
    } finally {
      warn.mockRestore();
      await app.close();
    }
  });
});
