import { lockName } from '../src/table/tombstone.lock.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

// The (scope, type) lock's name is spelled twice: in TypeScript (lockName) and in the capture
// trigger's SQL (a released migration). The two must name the same lock, or the recording API
// and captured moves stop serialising their chain edits.
describe('the (scope, type) lock', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
  });

  afterAll(async () => {
    await db?.drop();
  });

  it('the capture trigger locks the same key as lockName()', async () => {
    const functions = (await db.sql.query(
      `SELECT p.proname, p.prosrc FROM pg_proc p WHERE p.proname = 'tombstones_capture_change' AND p.pronamespace = current_schema()::regnamespace`,
    )) as { proname: string; prosrc: string }[];
    expect(functions).toHaveLength(1);
    for (const { prosrc } of functions) {
      const match = /pg_advisory_xact_lock_shared\(\s*hashtextextended\(([\s\S]+?),\s*0\)\)/.exec(prosrc);
      expect(match).not.toBeNull();
      const expression = match![1].replace(/\bnew_scope\b/g, '$1::text').replace(/\btyp\b/g, '$2::text');
      expect(expression).toContain('$1::text');
      expect(expression).toContain('$2::text');
      for (const [scope, type] of [
        ['', 'article'],
        ['acme', 'user'],
        ['tenant with spaces', 'a:b.c-d_e'],
        ['ü', 'x'],
      ]) {
        const [row] = (await db.sql.query(`SELECT (${expression}) AS name, hashtextextended(${expression}, 0)::text AS key`, [scope, type])) as {
          name: string;
          key: string;
        }[];
        expect(row.name).toBe(lockName(scope, type));
        const [ts] = (await db.sql.query(`SELECT hashtextextended($1, 0)::text AS key`, [lockName(scope, type)])) as { key: string }[];
        expect(row.key).toBe(ts.key);
      }
    }
  });
});
