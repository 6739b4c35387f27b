import pg from 'pg';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';

// What tombstones_notify() announces (the lookup cache's coherence depends on it), on the fast
// paths SpeedUpTombstoneNotify1765065600000 added and on the general one.
describe('the notifications of the tombstone table', () => {
  let db: TestDatabase;
  let listener: pg.Client;
  const heard: unknown[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    listener = new pg.Client({ connectionString: db.url });
    await listener.connect();
    listener.on('notification', (message) => heard.push(JSON.parse(message.payload ?? 'null')));
    await listener.query('LISTEN nestjs_tombstones');
  });
  afterAll(async () => {
    await listener.end();
    await db.drop();
  });

  /** What `statements` announce, in order (each statement in its own transaction). */
  async function announced(...statements: string[]): Promise<unknown[]> {
    heard.length = 0;
    for (const statement of statements) await db.sql.query(statement);
    await db.sql.query(`SELECT pg_notify('nestjs_tombstones', '{"barrier":"end"}')`);
    await eventually(() => expect(heard.at(-1)).toEqual({ barrier: 'end' }));
    return heard.slice(0, -1);
  }

  it('one inserted row: listed unless hidden; one deleted row: unlisted', async () => {
    expect(
      await announced(
        `INSERT INTO tombstones (scope, resource_type, resource_key, kind) VALUES ('t1', 'a', 'gone', 'deleted')`,
        `INSERT INTO tombstones (scope, resource_type, resource_key, kind) VALUES ('', 'a', 'masked', 'hidden')`,
        `DELETE FROM tombstones WHERE resource_key = 'gone'`,
      ),
    ).toEqual([
      { s: 't1', t: 'a', a: ['gone'], k: [] },
      { s: '', t: 'a', a: [], k: ['masked'] },
      { s: 't1', t: 'a', a: [], k: ['gone'] },
    ]);
  });

  it('statements that change no row announce nothing (an upsert that inserts, a delete of nothing)', async () => {
    expect(
      await announced(
        `INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('a', 'upserted', 'deleted')
           ON CONFLICT (scope, resource_type, resource_key) DO UPDATE SET reason = 'x'`,
        `DELETE FROM tombstones WHERE resource_key = 'never'`,
        `UPDATE tombstones SET reason = 'y' WHERE resource_key = 'never'`,
      ),
    ).toEqual([{ s: '', t: 'a', a: ['upserted'], k: [] }]);
  });

  it('a key whose notification would be too long announces its whole (scope, type)', async () => {
    const key = '\u0001'.repeat(2000); // 2,000 bytes, 12,000 once escaped in JSON
    expect(await announced(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('long', '${key}', 'deleted')`)).toEqual([
      { s: '', t: 'long', all: true },
    ]);
  });

  it('several rows and updates take the general path, as before', async () => {
    expect(
      await announced(
        `INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('m', 'x1', 'deleted'), ('m', 'x2', 'hidden')`,
        `UPDATE tombstones SET kind = 'hidden' WHERE resource_key = 'x1'`,
      ),
    ).toEqual([
      { s: '', t: 'm', a: ['x1'], k: ['x2'] },
      { s: '', t: 'm', a: [], k: ['x1'] },
    ]);
  });
});
