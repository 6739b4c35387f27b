import { Test } from '@nestjs/testing';
import { TypeOrmModule } from '@nestjs/typeorm';
import type request from 'supertest';
import { TombstoneModule, TombstoneService } from '../src/index.js';
import { lockName } from '../src/table/tombstone.lock.js';
import { ADMIN_TOKEN, bootAdminApp } from './fixtures/admin.fixture.js';
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

// What the write path's callers keep promising, found by a review of the move to src/table/.
describe('the write path', () => {
  describe('recording API', () => {
    let db: TestDatabase;
    let service: TombstoneService;
    let close: () => Promise<void>;

    beforeAll(async () => {
      db = await createTestDatabase();
      const moduleRef = await Test.createTestingModule({ imports: [TypeOrmModule.forRoot(db.options()), TombstoneModule.forRoot()] }).compile();
      await moduleRef.init();
      service = moduleRef.get(TombstoneService);
      close = () => moduleRef.close();
    });

    afterAll(async () => {
      await close?.();
      await db?.drop();
    });

    it.each([
      ['recordHidden', () => service.recordHidden('thing', 'a', null as never)],
      ['recordDeletion', () => service.recordDeletion('thing', 'a', null as never)],
      ['recordMove', () => service.recordMove('thing', 'a', 'b', null as never)],
    ])('%s with options = null: TombstoneValidationError on options, nothing written', async (_name, call) => {
      await expect(call()).rejects.toMatchObject({ name: 'TombstoneValidationError', field: 'options' });
      expect(await service.find('thing', 'a')).toBeNull();
    });

    it('find() with manager: null reads through the module DataSource', async () => {
      await service.recordDeletion('thing', 'found');
      await expect(service.find('thing', 'found', { manager: null as never })).resolves.toMatchObject({ key: 'found', kind: 'deleted' });
    });

    it('an option of another kind of tombstone is refused, not ignored', async () => {
      await expect(service.recordMove('thing', 'm', 'n', { alternative: '/x' })).rejects.toMatchObject({ field: 'alternative' });
      await expect(service.recordHidden('thing', 'h', { alternative: '/x' })).rejects.toMatchObject({ field: 'alternative' });
      await expect(service.recordDeletion('thing', 'd', { permanent: false })).rejects.toMatchObject({ field: 'permanent' });
      await expect(service.recordHidden('thing', 'h', { permanent: true })).rejects.toMatchObject({ field: 'permanent' });
      for (const key of ['m', 'h', 'd']) expect(await service.find('thing', key)).toBeNull();
      // null is "none" for every kind, as the admin endpoints read it.
      await expect(service.recordMove('thing', 'm', 'n', { alternative: null })).resolves.toMatchObject({ kind: 'moved' });
    });
  });

  describe('admin create', () => {
    let http: ReturnType<typeof request>;
    let close: () => Promise<void>;

    beforeAll(async () => {
      ({ http, close } = await bootAdminApp('express'));
    });

    afterAll(async () => {
      await close?.();
    });

    const create = (body: Record<string, unknown>) => http.post('/admin/tombstones').set('authorization', ADMIN_TOKEN).send({ type: 'rv', ...body });

    it('a key that has a tombstone is a 409 naming its id, even when the redirect would also loop', async () => {
      const k = await create({ key: 'k', kind: 'deleted' }).expect(201);
      await create({ key: 't', kind: 'moved', target: 'k' }).expect(201);
      const res = await create({ key: 'k', kind: 'moved', target: 't' }).expect(409);
      expect(res.body).toMatchObject({ statusCode: 409, id: k.body.id });
    });

    it("a cycle is a 409 that says so, without the recording API's advice (admin redirects never revive)", async () => {
      await create({ key: 'a', kind: 'moved', target: 'b' }).expect(201);
      const res = await create({ key: 'b', kind: 'moved', target: 'a' }).expect(409);
      expect(res.body.message).toBe("A redirect from 'b' to 'a' would form a cycle: that key redirects back.");
      expect(res.body).not.toHaveProperty('id');
    });
  });
});
