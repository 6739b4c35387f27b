import type { INestApplication } from '@nestjs/common';
import { RouterModule } from '@nestjs/core';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { Test } from '@nestjs/testing';
import { TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import { TombstoneAdminModule, type TombstoneAdminOptions } from '../src/admin/index.js';
import { type TombstoneAnswer, TombstoneConfigurationError, TombstoneModule, TombstoneRenderer } from '../src/index.js';
import { ADMIN_TOKEN, bootAdminApp, TokenGuard } from './fixtures/admin.fixture.js';
import { ADAPTERS } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

const TOKEN = ADMIN_TOKEN;

const modules = (db: TestDatabase, admin: TombstoneAdminOptions) => [
  TypeOrmModule.forRoot(db.options()),
  TombstoneModule.forRoot({ isGlobal: true }),
  TombstoneAdminModule.forRoot(admin),
  RouterModule.register([{ path: 'admin', module: TombstoneAdminModule }]),
];

describe('admin module: start-up', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  const boot = async (admin: TombstoneAdminOptions) => {
    const moduleRef = await Test.createTestingModule({ imports: modules(db, admin) }).compile();
    moduleRef.useLogger(false);
    const app = moduleRef.createNestApplication();
    app.useLogger(false);
    try {
      await app.init();
      return app;
    } catch (error) {
      await app.close();
      throw error;
    }
  };

  // Refusals happen while the module is compiled, before any database work: compiled alone, so
  // that no half-started DataSource outlives the test.
  const refuse = (admin: TombstoneAdminOptions) =>
    Test.createTestingModule({ imports: [TombstoneAdminModule.forRoot(admin)] }).compile();

  it('refuses to start without an access control, and says what to pass', async () => {
    const error = await refuse({}).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TombstoneConfigurationError);
    expect((error as Error).message).toMatch(/need an access control/);
    expect((error as Error).message).toMatch(/Pass `guard`/);
  });

  it('refuses the development opt-out when NODE_ENV is production', async () => {
    const before = process.env.NODE_ENV;
    process.env.NODE_ENV = 'production';
    try {
      await expect(refuse({ allowWithoutAccessControl: true })).rejects.toThrow(/refused when NODE_ENV is production/);
    } finally {
      process.env.NODE_ENV = before;
    }
  });

  it('with the opt-out, starts and serves anyone', async () => {
    const app = await boot({ allowWithoutAccessControl: true });
    try {
      await request(app.getHttpServer()).get('/admin/tombstones').expect(200);
    } finally {
      await app.close();
    }
  });

  it.each([
    [{ guard: TokenGuard, allowWithoutAccessControl: true }, /either `guard` or/],
    [{ guard: 'yes' }, /guard must be a guard class/],
    [{ guard: TokenGuard, alternativeHosts: ['https://x'] }, /alternativeHosts must be a list of host names/],
    [{ guard: TokenGuard, maxResolveKeys: 0 }, /maxResolveKeys must be a whole number/],
    [{ guard: TokenGuard, actor: { header: 'bad header' } }, /actor must be/],
    [{ guard: TokenGuard, surprise: 1 }, /unknown option 'surprise'/],
  ])('refuses invalid options %#', async (options, message) => {
    await expect(refuse(options as never)).rejects.toThrow(message);
  });
});

describe.each(ADAPTERS)('admin endpoints (%s)', (adapter) => {
  let db: TestDatabase;
  let app: INestApplication;
  let http: ReturnType<typeof request>;
  let type: string;
  let n = 0;

  let close: () => Promise<void>;

  beforeAll(async () => {
    ({ db, app, http, close } = await bootAdminApp(adapter, { admin: { maxResolveKeys: 5, maxPageSize: 20 } }));
  });

  afterAll(async () => {
    await close?.();
  });

  beforeEach(() => {
    type = `thing-${++n}`;
  });

  const as = (method: 'get' | 'post' | 'patch' | 'delete', path: string) => http[method](`/admin/tombstones${path}`).set('authorization', TOKEN);
  const create = (body: Record<string, unknown>) => as('post', '').send({ type, ...body });

  describe('access', () => {
    it('401 without credentials, 403 with wrong ones, on every endpoint', async () => {
      for (const [method, path] of [
        ['get', ''],
        ['get', '/1'],
        ['post', ''],
        ['patch', '/1'],
        ['delete', '/1'],
        ['post', '/resolve'],
        ['get', '/stale?days=1'],
      ] as const) {
        await http[method](`/admin/tombstones${path}`).expect(401);
        await http[method](`/admin/tombstones${path}`).set('authorization', 'Bearer wrong').expect(403);
      }
    });
  });

  describe('create, read, update, delete', () => {
    it('creates a deletion with its actor; reads it back; the public route answers 410', async () => {
      const res = await create({ key: 'old', kind: 'deleted', reason: 'Expired', alternative: '/articles/current' }).expect(201);
      expect(res.body).toMatchObject({ type, key: 'old', kind: 'deleted', reason: 'Expired', alternative: '/articles/current', actor: 'ops-ana', scope: '' });
      expect(res.body.id).toMatch(/^\d+$/);
      const read = await as('get', `/${res.body.id}`).expect(200);
      expect(read.body).toEqual(res.body);
    });

    it('the answer changes for clients at once', async () => {
      await as('post', '').send({ type: 'article', key: `gone-${adapter}`, kind: 'deleted' }).expect(201);
      await http.get(`/articles/gone-${adapter}`).expect(410);
      const moved = await as('post', '').send({ type: 'article', key: `old-${adapter}`, kind: 'moved', target: `new-${adapter}` }).expect(201);
      const res = await http.get(`/articles/old-${adapter}`).expect(301);
      expect(res.headers.location).toBe(`/articles/new-${adapter}`);
      await as('delete', `/${moved.body.id}`).expect(204);
      await http.get(`/articles/old-${adapter}`).expect(404);
    });

    it('409 for a key that already has a tombstone, naming it', async () => {
      const first = await create({ key: 'dup', kind: 'hidden' }).expect(201);
      const res = await create({ key: 'dup', kind: 'deleted' }).expect(409);
      expect(res.body).toMatchObject({ statusCode: 409, id: first.body.id });
    });

    it('a redirect onto a redirected key is collapsed; one that leads back is a 409 cycle', async () => {
      await create({ key: 'a', kind: 'moved', target: 'b' }).expect(201);
      const c = await create({ key: 'c', kind: 'merged', target: 'a' }).expect(201);
      expect(c.body.target).toBe('b');
      const cycle = await create({ key: 'b', kind: 'moved', target: 'a' }).expect(409);
      expect(cycle.body.message).toMatch(/cycle/);
      // Redirecting an existing target re-points what led to it.
      await create({ key: 'b', kind: 'moved', target: 'd' }).expect(201);
      const rows = await db.sql.query(`SELECT resource_key AS key, target_key AS target FROM tombstones WHERE resource_type = $1 ORDER BY 1`, [type]);
      expect(rows).toEqual([
        { key: 'a', target: 'd' },
        { key: 'b', target: 'd' },
        { key: 'c', target: 'd' },
      ]);
    });

    it('a redirect to a deleted key keeps it deleted: the redirect answers 410', async () => {
      await as('post', '').send({ type: 'article', key: `dead-${adapter}`, kind: 'deleted', reason: 'Withdrawn' }).expect(201);
      await as('post', '').send({ type: 'article', key: `alias-${adapter}`, kind: 'moved', target: `dead-${adapter}` }).expect(201);
      const res = await http.get(`/articles/alias-${adapter}`).expect(410);
      expect(res.body.reason).toBe('Withdrawn');
    });

    it('updates what it is told, records the actor, and re-points on a new target', async () => {
      const t = await create({ key: 'x', kind: 'deleted', reason: 'old reason' }).expect(201);
      await create({ key: 'y', kind: 'moved', target: 'x' }).expect(201);
      const res = await as('patch', `/${t.body.id}`).send({ kind: 'moved', target: 'z', permanent: false }).expect(200);
      expect(res.body).toMatchObject({ kind: 'moved', target: 'z', permanent: false, reason: 'old reason', alternative: null });
      const rows = await db.sql.query(`SELECT resource_key AS key, target_key AS target FROM tombstones WHERE resource_type = $1 ORDER BY 1`, [type]);
      expect(rows).toEqual([
        { key: 'x', target: 'z' },
        { key: 'y', target: 'z' },
      ]);
      const back = await as('patch', `/${t.body.id}`).send({ kind: 'deleted', reason: null }).expect(200);
      expect(back.body).toMatchObject({ kind: 'deleted', target: null, reason: null });
    });

    it('update: 404 for a missing id, 409 for a cycle', async () => {
      await as('patch', '/999999999').send({ reason: 'x' }).expect(404);
      const a = await create({ key: 'p', kind: 'moved', target: 'q' }).expect(201);
      const q = await create({ key: 'q', kind: 'deleted' }).expect(201);
      expect(a.body.id).toBeDefined();
      await as('patch', `/${q.body.id}`).send({ kind: 'moved', target: 'p' }).expect(409);
    });

    it('delete: 204, then 404', async () => {
      const t = await create({ key: 'bye', kind: 'hidden' }).expect(201);
      await as('delete', `/${t.body.id}`).expect(204);
      await as('delete', `/${t.body.id}`).expect(404);
      await as('get', `/${t.body.id}`).expect(404);
    });
  });

  describe('validation: 400 with the field and the reason, never a 5xx', () => {
    const cases: [string, unknown, string][] = [
      ['an unknown field', { key: 'k', kind: 'deleted', colour: 'red' }, 'colour'],
      ['a kind that does not exist', { key: 'k', kind: 'vanished' }, 'kind'],
      ['a move without a target', { key: 'k', kind: 'moved' }, 'target'],
      ['a target on a deletion', { key: 'k', kind: 'deleted', target: 'x' }, 'target'],
      ['a self-target', { key: 'k', kind: 'moved', target: 'k' }, 'target'],
      ['an alternative on a move', { key: 'k', kind: 'moved', target: 'x', alternative: '/x' }, 'alternative'],
      ['an alternative on a host not allowed', { key: 'k', kind: 'deleted', alternative: 'https://evil.example/x' }, 'alternative'],
      ['a protocol-relative alternative', { key: 'k', kind: 'deleted', alternative: '//evil.example/x' }, 'alternative'],
      ['a javascript: alternative', { key: 'k', kind: 'deleted', alternative: 'javascript:alert(1)' }, 'alternative'],
      ['a key over 2048 bytes', { key: 'é'.repeat(1025), kind: 'deleted' }, 'key'],
      ['a key with NUL', { key: 'a\u0000b', kind: 'deleted' }, 'key'],
      ['an empty key', { key: '', kind: 'deleted' }, 'key'],
      ['a number as key', { key: 42, kind: 'deleted' }, 'key'],
      ['a bad type', { type: 'no spaces', key: 'k', kind: 'deleted' }, 'type'],
      ['a reason over 2000 characters', { key: 'k', kind: 'deleted', reason: 'r'.repeat(2001) }, 'reason'],
      ['a reason with NUL', { key: 'k', kind: 'deleted', reason: 'a\u0000' }, 'reason'],
      ['a date that is not one', { key: 'k', kind: 'deleted', expiresAt: 'tomorrow' }, 'expiresAt'],
      ['metadata that is not an object', { key: 'k', kind: 'deleted', metadata: [1, 2] }, 'metadata'],
      ['metadata nested 40 deep', { key: 'k', kind: 'deleted', metadata: JSON.parse('{"a":'.repeat(40) + '1' + '}'.repeat(40)) }, 'metadata'],
      ['metadata with NUL', { key: 'k', kind: 'deleted', metadata: { a: 'x\u0000' } }, 'metadata'],
      ['metadata over 8 KB', { key: 'k', kind: 'deleted', metadata: { a: 'x'.repeat(9000) } }, 'metadata'],
      ['permanent as a string', { key: 'k', kind: 'moved', target: 'x', permanent: 'yes' }, 'permanent'],
    ];
    it.each(cases)('create: %s', async (_name, body, field) => {
      const res = await create(body as Record<string, unknown>).expect(400);
      expect(res.body.errors).toEqual(expect.arrayContaining([expect.objectContaining({ field })]));
      expect(res.body.message).toEqual(expect.any(String));
      expect(JSON.stringify(res.body)).not.toMatch(/at .*\.ts:|SELECT|INSERT/);
    });

    it.each([
      ['an array', '[]'],
      ['a string', '"tombstone"'],
      ['null', 'null'],
      ['malformed JSON', '{"type":'],
    ])('create with %s as body: 400', async (_name, body) => {
      const res = await as('post', '').set('content-type', 'application/json').send(body);
      expect(res.status).toBe(400);
    });

    it.each([['abc'], ['0'], ['-1'], ['1.5'], ['99999999999999999999']])('id %j: 400', async (id) => {
      const res = await as('get', `/${encodeURIComponent(id)}`).expect(400);
      expect(res.body.errors[0].field).toBe('id');
    });

    it.each([
      ['limit=0', 'limit'],
      ['limit=abc', 'limit'],
      ['limit=21', 'limit'],
      ['kind=vanished', 'kind'],
      ['cursor=***', 'cursor'],
      ['cursor=YWJj', 'cursor'],
      ['createdFrom=yesterday', 'createdFrom'],
      ['color=red', 'color'],
    ])('list with %s: 400', async (query, field) => {
      const res = await as('get', `?${query}`).expect(400);
      expect(res.body.errors).toEqual(expect.arrayContaining([expect.objectContaining({ field })]));
    });

    it('update with an unknown field, or trying to change the key: 400', async () => {
      const t = await create({ key: 'k', kind: 'deleted' }).expect(201);
      await as('patch', `/${t.body.id}`).send({ key: 'other' }).expect(400);
      await as('patch', `/${t.body.id}`).send({ kind: 'hidden', alternative: '/x' }).expect(400);
    });
  });

  describe('listing', () => {
    it('filters by type, kind, scope and key prefix', async () => {
      await create({ key: 'shoe-1', kind: 'deleted' }).expect(201);
      await create({ key: 'shoe-2', kind: 'hidden' }).expect(201);
      await create({ key: 'hat-1', kind: 'deleted' }).expect(201);
      await create({ key: 'shoe-3', kind: 'deleted', scope: 'acme' }).expect(201);
      const keys = async (query: string) => (await as('get', `?type=${type}&${query}`).expect(200)).body.items.map((t: { key: string }) => t.key);
      expect(await keys('kind=deleted')).toEqual(['shoe-3', 'hat-1', 'shoe-1']);
      expect(await keys('keyPrefix=shoe&scope=')).toEqual(['shoe-2', 'shoe-1']);
      expect(await keys('scope=acme')).toEqual(['shoe-3']);
    });

    it('pages with a cursor that new rows do not disturb', async () => {
      for (let i = 1; i <= 7; i++) await create({ key: `k${i}`, kind: 'deleted' }).expect(201);
      const first = await as('get', `?type=${type}&limit=3`).expect(200);
      expect(first.body.items.map((t: { key: string }) => t.key)).toEqual(['k7', 'k6', 'k5']);
      await create({ key: 'k8', kind: 'deleted' }).expect(201); // inserted between pages
      const second = await as('get', `?type=${type}&limit=3&cursor=${first.body.nextCursor}`).expect(200);
      expect(second.body.items.map((t: { key: string }) => t.key)).toEqual(['k4', 'k3', 'k2']);
      const third = await as('get', `?type=${type}&limit=3&cursor=${second.body.nextCursor}`).expect(200);
      expect(third.body.items.map((t: { key: string }) => t.key)).toEqual(['k1']);
      expect(third.body.nextCursor).toBeNull();
    });

    it('filters by creation and hit dates; the stale view lists what nobody asked for', async () => {
      const old = await create({ key: 'old-never-hit', kind: 'deleted' }).expect(201);
      const oldHit = await create({ key: 'old-hit-recently', kind: 'deleted' }).expect(201);
      const oldStaleHit = await create({ key: 'old-hit-long-ago', kind: 'deleted' }).expect(201);
      await create({ key: 'new', kind: 'deleted' }).expect(201);
      await db.sql.query(`UPDATE tombstones SET created_at = now() - interval '400 days' WHERE id = ANY($1::bigint[])`, [
        [old.body.id, oldHit.body.id, oldStaleHit.body.id],
      ]);
      await db.sql.query(`UPDATE tombstones SET last_hit_at = now() - interval '1 day', hit_count = 3 WHERE id = $1`, [oldHit.body.id]);
      await db.sql.query(`UPDATE tombstones SET last_hit_at = now() - interval '200 days', hit_count = 1 WHERE id = $1`, [oldStaleHit.body.id]);
      const keys = async (path: string) => (await as('get', path).expect(200)).body.items.map((t: { key: string }) => t.key);
      expect(await keys(`/stale?days=90&type=${type}`)).toEqual(['old-hit-long-ago', 'old-never-hit']);
      const since = new Date(Date.now() - 90 * 86_400_000).toISOString();
      expect(await keys(`?type=${type}&neverHitSince=${since}`)).toEqual(['new', 'old-hit-long-ago', 'old-never-hit']);
      expect(await keys(`?type=${type}&hitFrom=${since}`)).toEqual(['old-hit-recently']);
      expect(await keys(`?type=${type}&createdTo=${since}`)).toEqual(['old-hit-long-ago', 'old-hit-recently', 'old-never-hit']);
      await as('get', '/stale').expect(400);
      await as('get', '/stale?days=0').expect(400);
    });
  });

  describe('batch resolve', () => {
    it('answers each key as a lookup would now, in order', async () => {
      await create({ key: 'gone', kind: 'deleted', reason: 'Old' }).expect(201);
      await create({ key: 'hid', kind: 'hidden' }).expect(201);
      await create({ key: 'from', kind: 'merged', target: 'to', permanent: false }).expect(201);
      const res = await as('post', '/resolve').send({ type, keys: ['from', 'nothing', 'gone', 'hid', 'a\u0000b'] }).expect(200);
      expect(res.body.results).toEqual([
        { key: 'from', state: 'moved', status: 302, target: 'to', merged: true },
        { key: 'nothing', state: 'none', status: null },
        { key: 'gone', state: 'gone', status: 410, deletedAt: expect.any(String), reason: 'Old', alternative: null },
        { key: 'hid', state: 'hidden', status: 404 },
        { key: 'a\u0000b', state: 'none', status: null },
      ]);
    });

    it('is bounded, and validated', async () => {
      await as('post', '/resolve').send({ type, keys: ['1', '2', '3', '4', '5', '6'] }).expect(400);
      await as('post', '/resolve').send({ type, keys: [] }).expect(400);
      await as('post', '/resolve').send({ type, keys: [1] }).expect(400);
      await as('post', '/resolve').send({ keys: ['a'] }).expect(400);
    });
  });

  describe('OpenAPI', () => {
    it('documents every admin endpoint, and the answers of @Tombstoned routes', async () => {
      const document = SwaggerModule.createDocument(app, new DocumentBuilder().setTitle('t').build());
      const paths = document.paths;
      expect(Object.keys(paths)).toEqual(
        expect.arrayContaining(['/admin/tombstones', '/admin/tombstones/{id}', '/admin/tombstones/resolve', '/admin/tombstones/stale']),
      );
      expect(Object.keys(paths['/admin/tombstones'])).toEqual(expect.arrayContaining(['get', 'post']));
      expect(Object.keys(paths['/admin/tombstones/{id}'])).toEqual(expect.arrayContaining(['get', 'patch', 'delete']));
      expect(Object.keys(paths['/admin/tombstones'].post?.responses ?? {})).toEqual(expect.arrayContaining(['201', '400', '401', '403', '409']));
      expect(document.components?.schemas?.CreateTombstoneDto).toBeDefined();
      expect(Object.keys(paths['/articles/{id}'].get?.responses ?? {})).toEqual(expect.arrayContaining(['301', '308', '404', '410']));
    });

    it("documents each answer's JSON body member for member, as the renderer writes it", () => {
      const document = SwaggerModule.createDocument(app, new DocumentBuilder().setTitle('t').build());
      const responses = (document.paths['/articles/{id}'].get?.responses ?? {}) as Record<string, { content?: Record<string, { schema?: { properties?: object } }> }>;
      const documented = (status: string) => Object.keys(Object.values(responses[status].content ?? {})[0]?.schema?.properties ?? {});
      const base = { resource: 'article', label: 'Article', id: 'a', path: '/articles/a', requestId: 'r', scoped: false } as const;
      const renderer = new TombstoneRenderer();
      const written = (answer: TombstoneAnswer) => Object.keys(renderer.render(answer, 'json').body);
      expect(documented('404')).toEqual(written({ ...base, status: 404, error: 'not_found' }));
      expect(documented('410')).toEqual(written({ ...base, status: 410, error: 'gone', deletedAt: '2026-01-01T00:00:00.000Z', reason: null, alternative: null }));
      for (const status of ['301', '308'] as const) {
        expect(documented(status)).toEqual(written({ ...base, status: Number(status) as 301 | 308, error: 'moved', location: '/articles/b', targetId: 'b' }));
      }
    });
  });
});
