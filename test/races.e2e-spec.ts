import { randomInt } from 'node:crypto';
import { type INestApplication, Logger } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';
import type { PostgresDataSourceOptions } from 'typeorm/driver/postgres/PostgresDataSourceOptions.js';
import { TombstoneModule, TombstoneService } from '../src/index.js';
import { bootApp } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

/** Rows whose target is itself tombstoned as moved or merged (a chain), or a cycle: never allowed. */
const CHAINS_SQL = `
  SELECT t.resource_key, t.target_key FROM tombstones t
    JOIN tombstones f ON f.scope = t.scope AND f.resource_type = t.resource_type AND f.resource_key = t.target_key
   WHERE t.kind IN ('moved', 'merged') AND f.kind IN ('moved', 'merged')`;

// Many transactions at once, through one app's pool: nothing lost, nothing half-written.
describe('races and atomicity', () => {
  let db: TestDatabase;
  let app: INestApplication;
  let tombstones: TombstoneService;
  let dataSource: DataSource;

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.sql.query(`CREATE TABLE things (id int PRIMARY KEY, slug text NOT NULL UNIQUE)`);
    app = await bootApp('express', {
      imports: [TypeOrmModule.forRoot({ ...(db.options() as PostgresDataSourceOptions), poolSize: 20 }), TombstoneModule.forRoot()],
    });
    Logger.overrideLogger(false);
    tombstones = app.get(TombstoneService);
    dataSource = tombstones.dataSource;
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  it('1,000 concurrent delete-and-record transactions, a random half rolled back or killed: every deleted row has its tombstone, no survivor has one', async () => {
    const N = 1000;
    await db.sql.query(`INSERT INTO things SELECT i, 'thing-' || i FROM generate_series(1, $1) i`, [N]);
    const fates = Array.from({ length: N }, () => (['commit', 'rollback', 'kill'] as const)[randomInt(4) % 3]);
    const outcomes = await Promise.allSettled(
      fates.map((fate, i) =>
        dataSource.transaction(async (manager) => {
          const slug = `thing-${i + 1}`;
          await manager.query(`DELETE FROM things WHERE slug = $1`, [slug]);
          await tombstones.recordDeletion('thing', slug, { manager, reason: 'race' });
          if (fate === 'rollback') throw new Error('rolled back on purpose');
          if (fate === 'kill') {
            const [{ pid }] = (await manager.query(`SELECT pg_backend_pid() AS pid`)) as { pid: number }[];
            await db.sql.query(`SELECT pg_terminate_backend($1)`, [pid]);
            await manager.query(`SELECT 1`); // the connection is gone: this fails, nothing commits
          }
        }),
      ),
    );
    const committed = outcomes.filter((o) => o.status === 'fulfilled').length;
    expect(committed).toBe(fates.filter((f) => f === 'commit').length);
    expect(committed).toBeGreaterThan(100);
    expect(committed).toBeLessThan(N - 100);

    const [{ orphans }] = await db.sql.query(`
      SELECT count(*)::int AS orphans FROM generate_series(1, $1) i
       WHERE NOT EXISTS (SELECT 1 FROM things WHERE slug = 'thing-' || i)
         AND NOT EXISTS (SELECT 1 FROM tombstones WHERE resource_type = 'thing' AND resource_key = 'thing-' || i)`, [N]);
    const [{ haunted }] = await db.sql.query(`
      SELECT count(*)::int AS haunted FROM things s
        JOIN tombstones t ON t.resource_type = 'thing' AND t.resource_key = s.slug`);
    const [{ deleted, stones }] = await db.sql.query(`
      SELECT (SELECT $1::int - count(*)::int FROM things) AS deleted,
             (SELECT count(*)::int FROM tombstones WHERE resource_type = 'thing') AS stones`, [N]);
    expect({ orphans, haunted }).toEqual({ orphans: 0, haunted: 0 });
    expect(deleted).toBe(committed);
    expect(stones).toBe(committed);
    // The pool recovered from the killed connections.
    await expect(dataSource.query('SELECT 1 AS ok')).resolves.toEqual([{ ok: 1 }]);
  }, 120_000);

  it('concurrent moves that would together form a cycle never leave one, nor a chain', async () => {
    // Each move states where a key lives now; a move onto a key makes it live. Whatever order the
    // moves commit in, the table must end with no chain and no cycle.
    const keys = ['a', 'b', 'c', 'd'];
    for (let round = 0; round < 20; round++) {
      const moves = Array.from({ length: 12 }, () => {
        const from = keys[randomInt(keys.length)];
        let to = keys[randomInt(keys.length)];
        if (to === from) to = keys[(keys.indexOf(from) + 1) % keys.length];
        return { from, to };
      });
      const results = await Promise.allSettled(moves.map((m) => tombstones.recordMove('cyc', m.from, m.to, { scope: `r${round}` })));
      for (const result of results) {
        if (result.status === 'rejected') throw result.reason;
      }
      expect(await db.sql.query(CHAINS_SQL)).toEqual([]);
      const rows = (await db.sql.query(`SELECT resource_key, target_key FROM tombstones WHERE scope = $1 AND resource_type = 'cyc'`, [
        `r${round}`,
      ])) as { resource_key: string; target_key: string }[];
      // Every target is live (no tombstone), and a key never points at itself.
      const tombstoned = new Set(rows.map((r) => r.resource_key));
      for (const row of rows) {
        expect(row.target_key).not.toBe(row.resource_key);
        expect(tombstoned.has(row.target_key)).toBe(false);
      }
    }
  }, 120_000);

  it('a batch whose moves form a cycle is refused, and leaves nothing', async () => {
    await expect(
      tombstones.recordMoves('cyc', [
        { from: 'x', to: 'y' },
        { from: 'y', to: 'x' },
      ]),
    ).rejects.toMatchObject({ name: 'TombstoneCycleError' });
    expect(await db.sql.query(`SELECT 1 FROM tombstones WHERE resource_type = 'cyc' AND scope = '' `)).toEqual([]);
  });

  it('concurrent upserts of one key leave exactly one row: one of the writes, whole', async () => {
    const writes = Array.from({ length: 50 }, (_, i) => ({ reason: `reason ${i}`, alternative: `/alt/${i}`, metadata: { i } }));
    const written = await Promise.all(writes.map((w) => tombstones.recordDeletion('upsert', 'same', w)));
    const rows = (await db.sql.query(`SELECT reason, alternative, metadata FROM tombstones WHERE resource_type = 'upsert'`)) as {
      reason: string;
      alternative: string;
      metadata: { i: number };
    }[];
    expect(rows).toHaveLength(1);
    // Never a mix of two writes: the row is one write's, and that write saw it as written.
    const { i } = rows[0].metadata;
    expect(rows[0]).toEqual({ reason: `reason ${i}`, alternative: `/alt/${i}`, metadata: { i } });
    expect(written.some((t) => t.reason === `reason ${i}`)).toBe(true);
    // Once they are done, the next write wins, whole.
    await tombstones.recordDeletion('upsert', 'same', { reason: 'last', metadata: { i: -1 } });
    expect(await db.sql.query(`SELECT reason, alternative, metadata FROM tombstones WHERE resource_type = 'upsert'`)).toEqual([
      { reason: 'last', alternative: null, metadata: { i: -1 } },
    ]);
  });
});
