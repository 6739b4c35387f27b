import type request from 'supertest';
import { ADMIN_TOKEN, bootAdminApp } from './fixtures/admin.fixture.js';
import { ADAPTERS } from './support/app.js';
import type { TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';

/** Edge cases of the admin endpoints, found by review: each failed before its fix. */
describe.each(ADAPTERS)('admin endpoints: edge cases (%s)', (adapter) => {
  let db: TestDatabase;
  let http: ReturnType<typeof request>;
  let type: string;
  let n = 0;

  let close: () => Promise<void>;

  beforeAll(async () => {
    ({ db, http, close } = await bootAdminApp(adapter, {
      core: { missLog: { flushIntervalMs: 100, retentionDays: 36_500 } },
    }));
  });

  afterAll(async () => {
    await close?.();
  });

  beforeEach(() => {
    type = `rev-${adapter}-${++n}`;
  });

  const as = (method: 'get' | 'post' | 'patch' | 'delete' | 'head', path: string) =>
    http[method](`/admin${path}`).set('authorization', ADMIN_TOKEN);
  const create = async (body: Record<string, unknown>) => (await as('post', '/tombstones').send({ type, ...body }).expect(201)).body;
  const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64url');

  describe('input that must be a 4xx, never a 5xx', () => {
    it('list: a cursor past the largest bigint is a 400', async () => {
      // '9223372036854775808' = 2^63: 19 digits, passes the cursor regex, overflows bigint in SQL.
      const res = await as('get', `/tombstones?cursor=${b64('9223372036854775808')}`);
      expect(res.status).toBe(400);
    });

  });

  describe("a redirect to '.' or '..' is refused (clients would resolve its Location to another route)", () => {
    it.each(['.', '..'])("'%s': a 400 naming target on create, on update, and in an import; nothing written", async (target) => {
      const created = await as('post', '/tombstones').send({ type, key: 'a', kind: 'moved', target });
      expect(created.status).toBe(400);
      expect(created.body.errors).toEqual([{ field: 'target', reason: "cannot be '.' or '..', which clients resolve to another URL" }]);

      const { id } = await create({ key: 'b', kind: 'moved', target: 'c' });
      const updated = await as('patch', `/tombstones/${id}`).send({ target });
      expect(updated.status).toBe(400);
      expect(updated.body.errors).toEqual([{ field: 'target', reason: "cannot be '.' or '..', which clients resolve to another URL" }]);
      expect((await as('get', `/tombstones/${id}`).expect(200)).body.target).toBe('c');

      const imported = await as('post', '/tombstones/import')
        .set('content-type', 'text/csv')
        .send(`scope,type,key,kind,target,permanent,reason,alternative,expiresAt\n,${type},d,moved,${target},,,,\n`);
      expect(imported.status).toBe(400);
      expect(imported.body.errors).toEqual([{ row: 2, field: 'target', reason: "cannot be '.' or '..', which clients resolve to another URL" }]);
      expect((await as('get', `/tombstones?type=${type}`).expect(200)).body.items.map((t: { key: string }) => t.key)).toEqual(['b']);
    });
  });

  describe('__proto__, constructor and prototype are refused like any unknown field', () => {
    const raw = (method: 'post' | 'patch', path: string, body: string) => as(method, path).set('content-type', 'application/json').send(body);

    it.each(['__proto__', 'constructor', 'prototype'])('%s: a 400 naming it on create, on update and inside metadata; nothing written', async (name) => {
      const created = await raw('post', '/tombstones', `{"type":"${type}","key":"a","kind":"deleted","${name}":{"x":1}}`);
      expect(created.status).toBe(400);
      // Fastify's JSON parser refuses __proto__ itself (its own 400); everything else is ours.
      if (!(adapter === 'fastify' && name === '__proto__')) expect(created.body.errors).toEqual([{ field: name, reason: `property ${name} should not exist` }]);
      expect((await as('get', `/tombstones?type=${type}`).expect(200)).body.items).toEqual([]);

      const inMetadata = await raw('post', '/tombstones', `{"type":"${type}","key":"a","kind":"deleted","metadata":{"note":"x","${name}":"builder"}}`);
      expect(inMetadata.status).toBe(400);
      if (!(adapter === 'fastify' && name === '__proto__')) {
        expect(inMetadata.body.errors).toEqual([{ field: `metadata.${name}`, reason: `property ${name} should not exist` }]);
      }
      expect((await as('get', `/tombstones?type=${type}`).expect(200)).body.items).toEqual([]);

      const { id } = await create({ key: 'b', kind: 'deleted', reason: 'kept' });
      const updated = await raw('patch', `/tombstones/${id}`, `{"reason":"changed","${name}":null}`);
      expect(updated.status).toBe(400);
      expect((await as('get', `/tombstones/${id}`).expect(200)).body.reason).toBe('kept');
    });

    it('other metadata keys are stored as they are', async () => {
      const { id } = await create({ key: 'm', kind: 'deleted', metadata: { note: 'x', constructors: 1, proto: 2 } });
      expect((await as('get', `/tombstones/${id}`).expect(200)).body.metadata).toEqual({ note: 'x', constructors: 1, proto: 2 });
    });
  });

  describe('guard', () => {
    it('HEAD and OPTIONS reach nothing without credentials', async () => {
      await create({ key: 'secret', kind: 'deleted', reason: 'secret reason' });
      for (const path of ['/tombstones', '/tombstones/export', '/tombstone-misses']) {
        const head = await http.head(`/admin${path}`);
        expect(head.status).toBe(401);
        // No OPTIONS route (no CORS here): Nest's plain 404, on both adapters.
        const options = await http.options(`/admin${path}`);
        expect({ status: options.status, body: options.body }).toEqual({
          status: 404,
          body: { message: `Cannot OPTIONS /admin${path}`, error: 'Not Found', statusCode: 404 },
        });
        expect(options.text).not.toContain('secret');
      }
    });
  });

  describe('export round trip', () => {
    it('CSV: tricky keys and reasons come back unchanged, an empty reason is none, on create and import alike', async () => {
      const tricky = ['a,b', 'say "hi"', 'line\nbreak', 'cr\r\nlf', '=1+1', ' padded ', 'ünï©ødé'];
      for (const [i, key] of tricky.entries()) await create({ key, kind: 'deleted', reason: i === 0 ? '' : `r ${key}` });
      const before = await db.sql.query(`SELECT resource_key, reason FROM tombstones WHERE resource_type = $1 ORDER BY id`, [type]);
      const exported = await as('get', `/tombstones/export?format=csv&type=${type}`).buffer(true).parse((res, cb) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (data += c));
        res.on('end', () => cb(null, data));
      });
      expect(exported.status).toBe(200);
      await db.sql.query(`DELETE FROM tombstones WHERE resource_type = $1`, [type]);
      const imported = await as('post', '/tombstones/import').set('content-type', 'text/csv').send(exported.body as string);
      expect(imported.status).toBe(200);
      const after = await db.sql.query(`SELECT resource_key, reason FROM tombstones WHERE resource_type = $1 ORDER BY id`, [type]);
      expect(after).toEqual(before);
    });
  });

  describe('import semantics', () => {
    it('NDJSON with a UTF-8 BOM is read like CSV with one', async () => {
      const res = await as('post', '/tombstones/import')
        .set('content-type', 'application/x-ndjson')
        .send(`\uFEFF${JSON.stringify({ type, key: 'bom', kind: 'deleted' })}\n`);
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ created: 1, errorCount: 0 });
    });

    it('upsert replaces: metadata of the replaced tombstone does not survive', async () => {
      await create({ key: 'm', kind: 'deleted', metadata: { ticket: 'OPS-1' } });
      await as('post', '/tombstones/import')
        .set('content-type', 'application/x-ndjson')
        .send(`${JSON.stringify({ type, key: 'm', kind: 'moved', target: 'n' })}\n`)
        .expect(200);
      const [row] = await db.sql.query(`SELECT kind, metadata FROM tombstones WHERE resource_type = $1 AND resource_key = 'm'`, [type]);
      expect(row).toEqual({ kind: 'moved', metadata: {} });
    });
  });

  describe('concurrency', () => {
    it('PATCH and an import of the same (scope, type) do not deadlock (lock order)', async () => {
      const row = await create({ key: 'a', kind: 'deleted' });
      // What an import does: advisory lock of the (scope, type) first, then it upserts the row.
      const importer = db.sql.createQueryRunner();
      await importer.connect();
      await importer.startTransaction();
      try {
        await importer.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [`nestjs-tombstones\u001f\u001f${type}`]);
        // PATCH: SELECT ... FOR UPDATE of the row, then waits for the advisory lock.
        const patch = as('patch', `/tombstones/${row.id}`).send({ reason: 'edited' }).then((r) => r);
        await eventually(async () => {
          const [{ waiting }] = await db.sql.query(
            `SELECT count(*)::int AS waiting FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'advisory'`,
          );
          expect(waiting).toBe(1);
        });
        let importError: unknown = null;
        try {
          await importer.query(
            `INSERT INTO tombstones (scope, resource_type, resource_key, kind) VALUES ('', $1, 'a', 'hidden')
             ON CONFLICT (scope, resource_type, resource_key) DO UPDATE SET kind = EXCLUDED.kind`,
            [type],
          );
        } catch (error) {
          importError = error;
        }
        await importer.rollbackTransaction();
        const res = await patch;
        expect({ patch: res.status, importDeadlocked: importError !== null }).toEqual({ patch: 200, importDeadlocked: false });
      } finally {
        if (importer.isTransactionActive) await importer.rollbackTransaction();
        await importer.release();
      }
    });
  });
});
