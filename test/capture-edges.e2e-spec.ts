import { Test } from '@nestjs/testing';
import { getDataSourceToken, TypeOrmModule } from '@nestjs/typeorm';
import pg from 'pg';
import { from, lastValueFrom } from 'rxjs';
import { Column, DataSource, type DeleteResult, Entity, PrimaryGeneratedColumn } from 'typeorm';
import type { PostgresDataSourceOptions } from 'typeorm/driver/postgres/PostgresDataSourceOptions.js';
import { installTombstoneCapture, TombstoneContext, TombstoneModule, TombstoneService, TombstoneTracked } from '../src/index.js';
import { TombstoneContextInterceptor } from '../src/tombstone.context.js';
import { Account, bootCaptureFixtures, CAPTURE_ENTITIES, Handle, Post } from './fixtures/capture.fixture.js';
import { backendPid, type TestDatabase, waitingForLock } from './support/database.js';
import { type TombstoneCaptureSpec } from '../src/capture/tombstone.capture.js';
import { captureProblems } from '../src/capture/tombstone.capture-check.js';

/** A legal PostgreSQL table name that contains a dot (no schema). */
@Entity({ name: 'rv.dotted' })
@TombstoneTracked({ type: 'rv-dotted', key: 'slug' })
class Dotted {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'text' })
  slug!: string;
}

/** Edge cases of automatic capture: partial and deferred unique keys, concurrency, odd tables, context. */
describe('automatic capture: edge cases', () => {
  let db: TestDatabase;
  let data: DataSource;
  let service: TombstoneService;
  let close: () => Promise<void>;
  let n = 0;
  let tenant: string;

  beforeAll(async () => {
    ({ db, data, service, close } = await bootCaptureFixtures());
  });

  afterAll(async () => {
    await close?.();
  });

  beforeEach(() => {
    tenant = `rv${++n}`;
  });

  const install = async (spec: TombstoneCaptureSpec) => {
    const runner = db.sql.createQueryRunner();
    try {
      await installTombstoneCapture(runner, spec);
    } finally {
      await runner.release();
    }
  };
  const slugKey = (type: string, scope: string | null = null) =>
    ({ type, column: 'slug', scope, onDelete: 'deleted', reuse: 'allow', permanent: true }) as const;
  const kinds = async (type: string, scope = '') =>
    (
      (await db.sql.query(
        `SELECT resource_key AS key, kind, target_key AS target FROM tombstones
          WHERE resource_type = $1 AND scope = $2 ORDER BY resource_key`,
        [type, scope],
      )) as { key: string; kind: string; target: string | null }[]
    ).map((r) => (r.target ? `${r.key}:${r.kind}:${r.target}` : `${r.key}:${r.kind}`));
  const client = async () => {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    return c;
  };

  describe('tombstones left on live keys', () => {
    it('purging a soft-deleted row whose key a live row has since taken (partial unique index) leaves the live key alone', async () => {
      await db.sql.query(`CREATE TABLE rv_soft (id serial PRIMARY KEY, slug text, deleted_at timestamptz)`);
      await db.sql.query(`CREATE UNIQUE INDEX rv_soft_live_slug ON rv_soft (slug) WHERE deleted_at IS NULL`);
      await install({ v: 1, table: 'rv_soft', soft: 'deleted_at', keys: [slugKey('rv-soft')] });

      const [{ id: a }] = await db.sql.query(`INSERT INTO rv_soft (slug) VALUES ('k') RETURNING id`);
      await db.sql.query(`UPDATE rv_soft SET deleted_at = now() WHERE id = $1`, [a]); // k: hidden
      const [{ id: b }] = await db.sql.query(`INSERT INTO rv_soft (slug) VALUES ('old-b') RETURNING id`);
      await db.sql.query(`UPDATE rv_soft SET slug = 'k' WHERE id = $1`, [b]); // B takes k ('allow'): old-b -> k
      expect(await kinds('rv-soft')).toEqual(['old-b:moved:k']);

      // The nightly purge of soft-deleted rows.
      await db.sql.query(`DELETE FROM rv_soft WHERE deleted_at IS NOT NULL`);

      // B is live at k: k must not answer 410, and B's old key must still redirect to it.
      expect(await service.resolve('rv-soft', 'k')).toEqual({ state: 'none' });
      expect(await service.resolve('rv-soft', 'old-b')).toMatchObject({ state: 'moved', target: 'k' });
    });

    it('renaming a soft-deleted row to free its key (partial unique index) does not hijack the live row that took the key', async () => {
      await db.sql.query(`CREATE TABLE rv_soft2 (id serial PRIMARY KEY, slug text, deleted_at timestamptz)`);
      await db.sql.query(`CREATE UNIQUE INDEX rv_soft2_live_slug ON rv_soft2 (slug) WHERE deleted_at IS NULL`);
      await install({ v: 1, table: 'rv_soft2', soft: 'deleted_at', keys: [slugKey('rv-soft2')] });

      const [{ id: a }] = await db.sql.query(`INSERT INTO rv_soft2 (slug) VALUES ('k') RETURNING id`);
      await db.sql.query(`UPDATE rv_soft2 SET deleted_at = now() WHERE id = $1`, [a]);
      const [{ id: b }] = await db.sql.query(`INSERT INTO rv_soft2 (slug) VALUES ('old-b') RETURNING id`);
      await db.sql.query(`UPDATE rv_soft2 SET slug = 'k' WHERE id = $1`, [b]); // old-b -> k (B)

      // Archive the soft-deleted row under another slug.
      await db.sql.query(`UPDATE rv_soft2 SET slug = slug || '-archived' WHERE deleted_at IS NOT NULL`);

      expect(await service.resolve('rv-soft2', 'k')).toEqual({ state: 'none' }); // B is live at k
      expect(await service.resolve('rv-soft2', 'old-b')).toMatchObject({ state: 'moved', target: 'k' });
    });

    it('a one-statement shift rename (deferrable unique key) redirects each old key to its own row', async () => {
      await db.sql.query(`CREATE TABLE rv_shift (id serial PRIMARY KEY, slug text UNIQUE DEFERRABLE INITIALLY IMMEDIATE)`);
      await install({ v: 1, table: 'rv_shift', soft: null, keys: [slugKey('rv-shift')] });
      await db.sql.query(`INSERT INTO rv_shift (slug) VALUES ('v1'), ('v2')`); // A = v1, B = v2

      // Every row moves one up: A v1 -> v2, B v2 -> v3.
      await db.sql.query(`UPDATE rv_shift SET slug = CASE slug WHEN 'v1' THEN 'v2' WHEN 'v2' THEN 'v3' END`);
      expect((await db.sql.query(`SELECT slug FROM rv_shift ORDER BY id`)).map((r: { slug: string }) => r.slug)).toEqual(['v2', 'v3']);

      // A's old key leads to A (now v2); v2 is live and has no tombstone.
      expect(await kinds('rv-shift')).toEqual(['v1:moved:v2']);
    });
  });

  describe('concurrency', () => {
    it("'forbid' under REPEATABLE READ: an insert that waited for a concurrent delete of the key is refused", async () => {
      const name = `rr-${tenant}`;
      await db.sql.query(`INSERT INTO cap_handles (name) VALUES ($1)`, [name]);
      const deleter = await client();
      const inserter = await client();
      try {
        const inserterPid = await backendPid(inserter);
        await inserter.query(`BEGIN ISOLATION LEVEL REPEATABLE READ`);
        await inserter.query(`SELECT 1 FROM cap_handles LIMIT 1`); // the snapshot
        await deleter.query(`BEGIN`);
        await deleter.query(`DELETE FROM cap_handles WHERE name = $1`, [name]); // handle: deleted
        const insert = inserter.query(`INSERT INTO cap_handles (name) VALUES ($1)`, [name]).then(
          () => null,
          (error: { code?: string }) => error,
        );
        // The insert waits on the unique index for the deleter.
        await waitingForLock(db.sql, inserterPid);
        await deleter.query(`COMMIT`);
        const error = await insert;
        await inserter.query(error ? 'ROLLBACK' : 'COMMIT');

        const live = Number((await db.sql.query(`SELECT count(*) AS n FROM cap_handles WHERE name = $1`, [name]))[0].n);
        const tombstone = await service.find('handle', name);
        // The tombstone the deleter committed is outside the inserter's snapshot: the claim's probe
        // meets it in the unique index, and the insert gets a serialization failure to retry.
        expect({ error: error?.code ?? null, live, tombstone: tombstone?.kind ?? null }).toEqual({ error: '40001', live: 0, tombstone: 'deleted' });
      } finally {
        await deleter.end();
        await inserter.end();
      }
    });

    it('a rename does not deadlock with a transaction that renamed another row and then touches this one', async () => {
      await db.sql.query(`CREATE TABLE rv_lock (id integer PRIMARY KEY, slug text UNIQUE, title text)`);
      await install({ v: 1, table: 'rv_lock', soft: null, keys: [slugKey('rv-lock')] });
      await db.sql.query(`INSERT INTO rv_lock VALUES (1, 'one', ''), (2, 'two', '')`);
      const t1 = await client();
      const t2 = await client();
      try {
        await t1.query(`BEGIN`);
        await t1.query(`UPDATE rv_lock SET slug = 'one-v2' WHERE id = 1`); // row 1 + the (scope, type) advisory lock
        const t2Pid = await backendPid(t2);
        await t2.query(`BEGIN`);
        // Locks row 2; its trigger takes the (scope, type) lock shared, as t1's did.
        let renamed = false;
        const rename = t2.query(`UPDATE rv_lock SET slug = 'two-v2' WHERE id = 2`).then(
          () => null,
          (error: { code?: string }) => error,
        );
        void rename.then(() => (renamed = true));
        // With one lock per (scope, type), t2 now waits for t1. With locks per key, t2's rename
        // does not wait at all.
        await waitingForLock(db.sql, t2Pid, () => renamed);
        // t1 now waits for t2's row lock: a deadlock if t2 waits for t1.
        const touch = t1.query(`UPDATE rv_lock SET title = 'touched' WHERE id = 2`).then(
          () => null,
          (error: { code?: string }) => error,
        );
        const second = await rename.then(async (error) => {
          await t2.query(error ? 'ROLLBACK' : 'COMMIT');
          return error;
        });
        const first = await touch.then(async (error) => {
          await t1.query(error ? 'ROLLBACK' : 'COMMIT');
          return error;
        });
        expect([first?.code ?? null, second?.code ?? null]).toEqual([null, null]);
        expect(await kinds('rv-lock')).toEqual(['one:moved:one-v2', 'two:moved:two-v2']);
      } finally {
        await t1.end();
        await t2.end();
      }
    });
  });

  describe('partitioned tables', () => {
    // A partition's own statements fire no statement trigger of its parent, and an UPDATE that
    // moves a row across partitions fires neither: capture would miss changes silently.
    beforeAll(async () => {
      await db.sql.query(`
        CREATE TABLE rv_part (id integer NOT NULL, tenant text NOT NULL, slug text, PRIMARY KEY (tenant, id))
        PARTITION BY LIST (tenant)`);
      await db.sql.query(`CREATE TABLE rv_part_a PARTITION OF rv_part FOR VALUES IN ('pa')`);
    });

    it('are refused at install, the parent and each partition, with a clear error', async () => {
      await expect(install({ v: 1, table: 'rv_part', soft: null, keys: [slugKey('rv-part', 'tenant')] })).rejects.toThrow(
        /rv_part is a partitioned table or a partition/,
      );
      await expect(install({ v: 1, table: 'rv_part_a', soft: null, keys: [slugKey('rv-part', 'tenant')] })).rejects.toThrow(
        /rv_part_a is a partitioned table or a partition/,
      );
    });

    it('views are refused too', async () => {
      await db.sql.query(`CREATE VIEW rv_view AS SELECT 1 AS id, 'x'::text AS slug`);
      await expect(install({ v: 1, table: 'rv_view', soft: null, keys: [slugKey('rv-view')] })).rejects.toThrow(/rv_view is not a table/);
    });
  });

  describe('the start-up check', () => {
    it('reports triggers that only fire in replica mode (ENABLE REPLICA TRIGGER)', async () => {
      await db.sql.query(`ALTER TABLE cap_handles ENABLE REPLICA TRIGGER tombstones_capture_del`);
      try {
        const name = `replica-${tenant}`;
        await db.sql.query(`INSERT INTO cap_handles (name) VALUES ($1)`, [name]);
        await db.sql.query(`DELETE FROM cap_handles WHERE name = $1`, [name]);
        expect(await service.find('handle', name)).toBeNull(); // capture is off for ordinary sessions...
        // ...so the check must say so, of that table only.
        expect(await captureProblems(data)).toEqual([
          'Handle (cap_handles) has capture triggers that do not match its @TombstoneTracked declarations, or are not enabled.',
        ]);
      } finally {
        await db.sql.query(`ALTER TABLE cap_handles ENABLE TRIGGER tombstones_capture_del`);
      }
    });

    it("starts with a DataSource whose `schema` option names the schema the triggers were installed in", async () => {
      const moduleRef = await Test.createTestingModule({
        imports: [
          TypeOrmModule.forRoot({ ...(db.options({ entities: CAPTURE_ENTITIES }) as PostgresDataSourceOptions), schema: 'public' }),
          TombstoneModule.forRoot(),
        ],
      }).compile();
      moduleRef.useLogger(false);
      try {
        // The start-up check (captureCheck: 'error') finds the triggers in that schema...
        await moduleRef.init();
        const source = moduleRef.get<DataSource>(getDataSourceToken());
        expect(source.options).toMatchObject({ schema: 'public' });
        expect(await captureProblems(source)).toEqual([]);
        // ...and what is deleted through that DataSource answers from its tombstone.
        const name = `schema-${tenant}`;
        await source.getRepository(Handle).save({ name });
        await source.getRepository(Handle).delete({ name });
        expect(await moduleRef.get(TombstoneService).resolve('handle', name)).toMatchObject({ state: 'gone' });
      } finally {
        await moduleRef.close();
      }
    });
  });

  describe('installTombstoneCapture', () => {
    it('installs on an entity whose table name contains a dot', async () => {
      await db.sql.query(`CREATE TABLE "rv.dotted" (id serial PRIMARY KEY, slug text NOT NULL)`);
      const source = new DataSource(db.options({ entities: [Dotted] }));
      await source.initialize();
      const runner = source.createQueryRunner();
      try {
        await installTombstoneCapture(runner, Dotted);
        expect(await captureProblems(source)).toEqual([]);
        // The triggers are on "rv.dotted" itself: its deletes and renames are captured.
        await db.sql.query(`INSERT INTO "rv.dotted" (slug) VALUES ('a'), ('b')`);
        await db.sql.query(`DELETE FROM "rv.dotted" WHERE slug = 'a'`);
        await db.sql.query(`UPDATE "rv.dotted" SET slug = 'b2' WHERE slug = 'b'`);
        expect(await kinds('rv-dotted')).toEqual(['a:deleted', 'b:moved:b2']);
      } finally {
        await runner.release();
        await source.destroy();
      }
    });
  });

  describe('actor and reason', () => {
    const seed = (...slugs: string[]) =>
      data.getRepository(Post).save(slugs.map((slug) => data.getRepository(Post).create({ tenant, slug, title: slug })));
    const actors = async () =>
      (
        (await db.sql.query(`SELECT resource_key AS key, actor FROM tombstones WHERE resource_type = 'post' AND scope = $1 ORDER BY 1`, [
          tenant,
        ])) as { key: string; actor: string | null }[]
      ).map((r) => [r.key, r.actor]);

    it('two writes of one transaction, each in its own context, each get their own actor', async () => {
      await seed('by-a', 'by-b');
      await data.transaction((manager) =>
        Promise.all([
          TombstoneContext.run({ actor: 'a' }, () => manager.delete(Post, { tenant, slug: 'by-a' })),
          TombstoneContext.run({ actor: 'b' }, () => manager.delete(Post, { tenant, slug: 'by-b' })),
        ]),
      );
      expect(await actors()).toEqual([
        ['by-a', 'a'],
        ['by-b', 'b'],
      ]);
    });

    it("merge() with actor: null records no actor, as a recording call's null does", async () => {
      const base = 10_000 + n * 10;
      await data.getRepository(Account).save([
        { id: base + 1, handle: `keep-${base}` },
        { id: base + 2, handle: `dup-${base}` },
      ]);
      await TombstoneContext.run({ actor: 'from-context' }, () =>
        service.merge(Account, { into: base + 1, from: [base + 2], actor: null }),
      );
      expect((await service.find('account', String(base + 2)))?.actor).toBeNull();
    });

    const inRequest = <T>(request: unknown, work: () => Promise<T>, actor: (req: never) => unknown) => {
      const interceptor = new TombstoneContextInterceptor({ actor } as never);
      const context = { getType: () => 'http', switchToHttp: () => ({ getRequest: () => request }) };
      return lastValueFrom(interceptor.intercept(context as never, { handle: () => from(work()) }));
    };

    it("the request's actor option records a numeric user id (TypeORM's default id type)", async () => {
      await seed('by-user-42');
      await inRequest(
        { user: { id: 42 } },
        () => data.getRepository(Post).delete({ tenant, slug: 'by-user-42' }),
        (req: { user?: { id: number } }) => req.user?.id, // the README's example, with a numeric id
      );
      expect(await actors()).toEqual([['by-user-42', '42']]);
    });

    it('an actor with a NUL character (from a request) does not make the write fail: it is recorded as no actor', async () => {
      await seed('nul-actor');
      const result = await inRequest(
        { headers: { 'x-service': 'svc\u0000' } },
        () => data.getRepository(Post).delete({ tenant, slug: 'nul-actor' }),
        (req: { headers: Record<string, string> }) => req.headers['x-service'],
      );
      expect((result as DeleteResult).affected).toBe(1);
      // What cannot be stored as an actor is no actor (actorText), not a failed write.
      expect(await actors()).toEqual([['nul-actor', null]]);
    });

    it('EXPLAIN ANALYZE of a DELETE runs the delete: it gets the actor too', async () => {
      await seed('explained');
      await TombstoneContext.run({ actor: 'dba' }, () =>
        data.query(`EXPLAIN ANALYZE DELETE FROM cap_posts WHERE tenant = $1 AND slug = 'explained'`, [tenant]),
      );
      expect(await actors()).toEqual([['explained', 'dba']]);
    });
  });
});
