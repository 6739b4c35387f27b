import type { INestApplication } from '@nestjs/common';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import type request from 'supertest';
import { ADMIN_TOKEN, bootAdminApp } from './fixtures/admin.fixture.js';
import { ADAPTERS } from './support/app.js';
import type { TestDatabase } from './support/database.js';
import { TombstoneMissLog } from '../src/counters/tombstone.misses.js';

const TOKEN = ADMIN_TOKEN;

interface Miss {
  id: string;
  scope: string;
  type: string;
  key: string;
  hits: number;
  firstSeen: string;
  lastSeen: string;
  lastReferrer: string | null;
}

describe.each(ADAPTERS)('admin endpoints of the misses log (%s)', (adapter) => {
  let db: TestDatabase;
  let app: INestApplication;
  let http: ReturnType<typeof request>;
  let misses: TombstoneMissLog;
  // Every test logs its misses in a scope of its own (the x-tenant-id header), and lists that scope.
  let scope: string;
  let n = 0;

  let close: () => Promise<void>;

  beforeAll(async () => {
    ({ db, app, http, close } = await bootAdminApp(adapter, {
      // Retention of 100 years: rows seen at explicit instants in 2000 stay until purged.
      core: { scope: { header: 'x-tenant-id' }, missLog: { flushIntervalMs: 100, retentionDays: 36_500 } },
      admin: { maxPageSize: 20 },
    }));
    misses = app.get(TombstoneMissLog);
  });

  afterAll(async () => {
    await close?.();
  });

  beforeEach(() => {
    scope = `tenant-${adapter}-${++n}`;
  });

  const as = (method: 'get' | 'post' | 'delete', path: string) => http[method](`/admin/tombstone-misses${path}`).set('authorization', TOKEN);
  /** 404s of `/articles/<key>` in this test's scope, then written. */
  const miss = async (key: string, { times = 1, referer }: { times?: number; referer?: string } = {}) => {
    for (let i = 0; i < times; i++) {
      const req = http.get(`/articles/${encodeURIComponent(key)}`).set('x-tenant-id', scope);
      await (referer ? req.set('referer', referer) : req).expect(404);
    }
    await misses.flush();
  };
  /** Misses of this scope seen at explicit instants, so that orders never depend on the clock. */
  const missAt = async (entries: [key: string, at: Date, times?: number][]) => {
    for (const [key, at, times = 1] of entries) for (let i = 0; i < times; i++) misses.record(scope, 'article', key, undefined, at);
    await misses.flush();
  };
  const list = async (query = ''): Promise<{ items: Miss[]; nextCursor: string | null }> =>
    (await as('get', `?scope=${scope}${query ? `&${query}` : ''}`).expect(200)).body;
  const keys = async (query = '') => (await list(query)).items.map((m) => m.key);
  const idOf = async (key: string) => (await list(`keyPrefix=${encodeURIComponent(key)}`)).items.find((m) => m.key === key)!.id;
  const rowsOf = async (key: string) =>
    (await db.sql.query(`SELECT count(*)::int AS n FROM tombstone_misses WHERE scope = $1 AND resource_key = $2`, [scope, key]))[0].n as number;
  /** `minutes` minutes before a fixed instant of this test run. */
  const base = Date.now() - 3_600_000;
  const ago = (minutes: number) => new Date(base - minutes * 60_000);

  describe('access', () => {
    it('401 without credentials, 403 with wrong ones, on every endpoint', async () => {
      for (const [method, path] of [
        ['get', ''],
        ['get', '/1'],
        ['post', '/1/resolve'],
        ['delete', '/1'],
        ['delete', '?before=2000-01-01T00:00:00Z'],
      ] as const) {
        await http[method](`/admin/tombstone-misses${path}`).expect(401);
        await http[method](`/admin/tombstone-misses${path}`).set('authorization', 'Bearer wrong').expect(403);
      }
    });
  });

  describe('listing and reading', () => {
    it('shows what the route logged: hits, first and last seen, the last referrer', async () => {
      await miss('typo', { times: 3, referer: 'https://blog.example.com/post' });
      await miss('other');
      const { items, nextCursor } = await list();
      expect(nextCursor).toBeNull();
      expect(items.map((m) => m.key).sort()).toEqual(['other', 'typo']);
      const typo = items.find((m) => m.key === 'typo')!;
      expect(typo).toEqual({
        id: expect.stringMatching(/^\d+$/),
        scope,
        type: 'article',
        key: 'typo',
        hits: 3,
        firstSeen: expect.any(String),
        lastSeen: expect.any(String),
        lastReferrer: 'https://blog.example.com/post',
      });
      expect(Date.parse(typo.firstSeen)).toBeLessThanOrEqual(Date.parse(typo.lastSeen));
      const read = await as('get', `/${typo.id}`).expect(200);
      expect(read.body).toEqual(typo);
    });

    it('sorts by last seen (the default) or by hits; filters by type, key prefix, hits and last seen', async () => {
      await missAt([
        ['shoe-1', ago(50), 5],
        ['shoe-2', ago(40), 1],
        ['hat-1', ago(30), 3],
        ['shoe-3', ago(20), 3],
      ]);
      expect(await keys()).toEqual(['shoe-3', 'hat-1', 'shoe-2', 'shoe-1']);
      expect(await keys('sort=recent')).toEqual(['shoe-3', 'hat-1', 'shoe-2', 'shoe-1']);
      // Equal hits: the newer row first.
      expect(await keys('sort=hits')).toEqual(['shoe-1', 'shoe-3', 'hat-1', 'shoe-2']);
      expect(await keys('keyPrefix=shoe&sort=hits')).toEqual(['shoe-1', 'shoe-3', 'shoe-2']);
      expect(await keys('minHits=3')).toEqual(['shoe-3', 'hat-1', 'shoe-1']);
      expect(await keys(`seenSince=${ago(40).toISOString()}`)).toEqual(['shoe-3', 'hat-1', 'shoe-2']);
      expect(await keys('type=article&minHits=4')).toEqual(['shoe-1']);
      expect(await keys('type=page')).toEqual([]);
      // Without the scope filter the other tests' misses show up too; with another scope, none of these.
      const other = (await as('get', `?scope=elsewhere-${adapter}`).expect(200)).body;
      expect(other.items).toEqual([]);
    });

    it('recent: pages never repeat a row, whatever is logged between them', async () => {
      await missAt(Array.from({ length: 7 }, (_, i): [string, Date] => [`k${i + 1}`, ago(70 - i * 10)]));
      const first = await list('limit=3');
      expect(first.items.map((m) => m.key)).toEqual(['k7', 'k6', 'k5']);
      // Between pages: a new key, a new key seen earlier than the cursor (an instance flushing late),
      // a shown key missed again, and a key not shown yet missed again.
      await missAt([
        ['k8', ago(0)],
        ['k0', ago(100)],
        ['k6', ago(-1)],
        ['k2', ago(-2)],
      ]);
      const second = await list(`limit=3&cursor=${first.nextCursor}`);
      expect(second.items.map((m) => m.key)).toEqual(['k4', 'k3', 'k1']);
      const third = await list(`limit=3&cursor=${second.nextCursor}`);
      expect(third.items.map((m) => m.key)).toEqual(['k0']);
      expect(third.nextCursor).toBeNull();
      // k2 moved ahead of the cursor: not shown again in this walk (the documented trade-off); a new
      // walk starts with it.
      expect(await keys('limit=4')).toEqual(['k2', 'k6', 'k8', 'k7']);
    });

    it('recent: rows of the same millisecond are paged to the microsecond, then by id', async () => {
      const at = ago(5);
      await missAt(['a', 'b', 'c'].map((key): [string, Date] => [key, at]));
      // Within the same millisecond (written by hand; the misses log writes milliseconds): g 2 µs
      // later, then f 1 µs later. A cursor cut to the millisecond would lose f after g.
      for (const [key, micros] of [
        ['g', 2],
        ['f', 1],
      ] as const) {
        await db.sql.query(
          `INSERT INTO tombstone_misses (scope, resource_type, resource_key, first_seen, last_seen)
           VALUES ($1, 'article', $2, $3::timestamptz + $4 * interval '1 microsecond', $3::timestamptz + $4 * interval '1 microsecond')`,
          [scope, key, at, micros],
        );
      }
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const page: { items: Miss[]; nextCursor: string | null } = await list(`limit=1${cursor ? `&cursor=${cursor}` : ''}`);
        seen.push(...page.items.map((m) => m.key));
        cursor = page.nextCursor;
      } while (cursor);
      expect(seen).toEqual(['g', 'f', 'c', 'b', 'a']);
    });

    it('hits: pages never repeat a row, whatever is logged between them', async () => {
      await missAt([
        ['h5', ago(10), 5],
        ['h4', ago(10), 4],
        ['h3', ago(10), 3],
        ['h2', ago(10), 2],
        ['h1', ago(10), 1],
      ]);
      const first = await list('sort=hits&limit=2');
      expect(first.items.map((m) => [m.key, m.hits])).toEqual([
        ['h5', 5],
        ['h4', 4],
      ]);
      // A new key with 2 hits lands after the cursor (shown later, once); h4, already shown, gains hits.
      await missAt([
        ['new', ago(0), 2],
        ['h4', ago(0), 10],
      ]);
      const second = await list(`sort=hits&limit=2&cursor=${first.nextCursor}`);
      const third = await list(`sort=hits&limit=2&cursor=${second.nextCursor}`);
      expect([...second.items, ...third.items].map((m) => m.key)).toEqual(['h3', 'new', 'h2', 'h1']);
      expect(third.nextCursor).toBeNull();
      // The cursor of one sort is refused by the other.
      const wrong = await as('get', `?scope=${scope}&limit=2&cursor=${first.nextCursor}`).expect(400);
      expect(wrong.body.errors).toEqual([{ field: 'cursor', reason: 'belongs to sort=hits, not sort=recent' }]);
    });

    it('404 for an id that is no miss', async () => {
      const res = await as('get', '/999999999').expect(404);
      expect(res.body).toMatchObject({ statusCode: 404, message: expect.stringMatching(/No miss/) });
    });
  });

  describe('resolve', () => {
    it('turns a miss into a move: the route answers 301, the miss is gone, the actor recorded', async () => {
      await miss('helo-world', { times: 2, referer: 'https://news.example.com/' });
      const id = await idOf('helo-world');
      const res = await as('post', `/${id}/resolve`).send({ kind: 'moved', target: 'hello-world', reason: 'Typo in an old link' }).expect(201);
      expect(res.body).toMatchObject({
        id: expect.stringMatching(/^\d+$/),
        scope,
        type: 'article',
        key: 'helo-world',
        kind: 'moved',
        target: 'hello-world',
        permanent: true,
        reason: 'Typo in an old link',
        actor: 'ops-ana',
        hitCount: 0,
      });
      // The same view as the tombstone endpoints give.
      expect((await http.get(`/admin/tombstones/${res.body.id}`).set('authorization', TOKEN).expect(200)).body).toEqual(res.body);

      const redirect = await http.get('/articles/helo-world').set('x-tenant-id', scope).expect(301);
      expect(redirect.headers.location).toBe('/articles/hello-world');
      await misses.flush();
      expect(await rowsOf('helo-world')).toBe(0);
      await as('get', `/${id}`).expect(404);
      // Only this scope's key was explained: elsewhere it is still a plain 404.
      await http.get('/articles/helo-world').set('x-tenant-id', `${scope}-other`).expect(404);
    });

    it('into a deletion with a reason and an alternative: the route answers 410', async () => {
      await miss('summer-sale');
      const res = await as('post', `/${await idOf('summer-sale')}/resolve`)
        .send({ kind: 'deleted', reason: 'The sale has ended', alternative: 'https://shop.example.com/sales' })
        .expect(201);
      expect(res.body).toMatchObject({ kind: 'deleted', target: null, alternative: 'https://shop.example.com/sales' });
      const gone = await http.get('/articles/summer-sale').set('x-tenant-id', scope).expect(410);
      expect(gone.body.reason).toBe('The sale has ended');
      expect(await rowsOf('summer-sale')).toBe(0);
    });

    it('409 when the key already has a tombstone (an expired one: the route logged a miss), naming it; the miss stays', async () => {
      const expired = await http
        .post('/admin/tombstones')
        .set('authorization', TOKEN)
        .send({ scope, type: 'article', key: 'expired', kind: 'deleted', expiresAt: '2001-01-01T00:00:00Z' })
        .expect(201);
      await miss('expired');
      const id = await idOf('expired');
      const res = await as('post', `/${id}/resolve`).send({ kind: 'hidden' }).expect(409);
      expect(res.body).toMatchObject({ statusCode: 409, id: expired.body.id });
      await as('get', `/${id}`).expect(200);
    });

    it('409 for a redirect that would lead back to the key', async () => {
      await http
        .post('/admin/tombstones')
        .set('authorization', TOKEN)
        .send({ scope, type: 'article', key: 'b', kind: 'moved', target: 'a' })
        .expect(201);
      await miss('a');
      const res = await as('post', `/${await idOf('a')}/resolve`).send({ kind: 'moved', target: 'b' }).expect(409);
      expect(res.body.message).toMatch(/cycle/);
      expect(await rowsOf('a')).toBe(1);
    });

    it('404 for an id that is no miss', async () => {
      await as('post', '/999999999/resolve').send({ kind: 'hidden' }).expect(404);
    });

    describe('validation: 400 with the field, as creating a tombstone', () => {
      it.each([
        ['an unknown field', { kind: 'deleted', colour: 'red' }, 'colour'],
        ['a key of its own (the miss names it)', { kind: 'deleted', key: 'other' }, 'key'],
        ['a scope of its own', { kind: 'deleted', scope: 'other' }, 'scope'],
        ['no kind', {}, 'kind'],
        ['a kind that does not exist', { kind: 'vanished' }, 'kind'],
        ['a move without a target', { kind: 'moved' }, 'target'],
        ['a target on a deletion', { kind: 'deleted', target: 'x' }, 'target'],
        ['a target that is the key itself', { kind: 'moved', target: 'bad-link' }, 'target'],
        ['a target with NUL', { kind: 'moved', target: 'a\u0000b' }, 'target'],
        ["a target of '.'", { kind: 'moved', target: '.' }, 'target'],
        ["a target of '..'", { kind: 'merged', target: '..' }, 'target'],
        ['an alternative on a move', { kind: 'moved', target: 'x', alternative: '/x' }, 'alternative'],
        ['an alternative on a host not allowed', { kind: 'deleted', alternative: 'https://evil.example/x' }, 'alternative'],
        ['a javascript: alternative', { kind: 'deleted', alternative: 'javascript:alert(1)' }, 'alternative'],
        ['a reason over 2000 characters', { kind: 'deleted', reason: 'r'.repeat(2001) }, 'reason'],
        ['permanent as a string', { kind: 'moved', target: 'x', permanent: 'yes' }, 'permanent'],
      ])('%s', async (_name, body, field) => {
        await miss('bad-link');
        const id = await idOf('bad-link');
        const res = await as('post', `/${id}/resolve`).send(body).expect(400);
        expect(res.body).toMatchObject({ statusCode: 400, error: 'Bad Request', message: expect.any(String) });
        expect(res.body.errors).toEqual(expect.arrayContaining([{ field, reason: expect.any(String) }]));
        expect(JSON.stringify(res.body)).not.toMatch(/at .*\.ts:|SELECT|INSERT/);
        // Nothing was written.
        expect(await rowsOf('bad-link')).toBe(1);
        expect((await db.sql.query(`SELECT count(*)::int AS n FROM tombstones WHERE scope = $1`, [scope]))[0].n).toBe(0);
      });

      it.each([['an array', '[]'], ['malformed JSON', '{"kind":']])('a body that is %s', async (_name, body) => {
        await as('post', '/1/resolve').set('content-type', 'application/json').send(body).expect(400);
      });
    });
  });

  describe('delete and purge', () => {
    it('delete: 204, then 404; the key is logged again at its next 404', async () => {
      await miss('bye');
      const id = await idOf('bye');
      await as('delete', `/${id}`).expect(204);
      await as('delete', `/${id}`).expect(404);
      await as('get', `/${id}`).expect(404);
      await miss('bye');
      expect((await list()).items).toEqual([expect.objectContaining({ key: 'bye', hits: 1 })]);
    });

    it('purge: the misses last seen before `before`, and only those', async () => {
      // Instants in 2000: no other test logs misses that old.
      await missAt([
        ['old-1', new Date('2000-01-01T00:00:00Z')],
        ['old-2', new Date('2000-01-02T00:00:00Z'), 2],
        ['recent', ago(1)],
      ]);
      const res = await as('delete', '?before=2000-01-03T00:00:00Z').expect(200);
      expect(res.body).toEqual({ deleted: 2 });
      expect(await keys()).toEqual(['recent']);
      expect((await as('delete', '?before=2000-01-03T00:00:00Z').expect(200)).body).toEqual({ deleted: 0 });
    });

    it.each([
      ['no bound', '', 'before'],
      ['a date that is not one', '?before=yesterday', 'before'],
      ['another filter instead', '?type=article', 'type'],
    ])('purge with %s: 400, nothing deleted', async (_name, query, field) => {
      await miss('kept');
      const res = await as('delete', query).expect(400);
      expect(res.body.errors).toEqual(expect.arrayContaining([expect.objectContaining({ field })]));
      expect(await rowsOf('kept')).toBe(1);
    });
  });

  describe('validation of ids and queries', () => {
    it.each([['abc'], ['0'], ['-1'], ['1.5'], ['99999999999999999999']])('id %j: 400', async (id) => {
      for (const [method, path] of [
        ['get', ''],
        ['delete', ''],
        ['post', '/resolve'],
      ] as const) {
        const req = as(method, `/${encodeURIComponent(id)}${path}`);
        const res = await (method === 'post' ? req.send({ kind: 'hidden' }) : req).expect(400);
        expect(res.body.errors).toEqual([{ field: 'id', reason: 'must be a miss id (a positive integer)' }]);
      }
    });

    it.each([
      ['limit=0', 'limit'],
      ['limit=abc', 'limit'],
      ['limit=21', 'limit'],
      ['sort=oldest', 'sort'],
      ['minHits=0', 'minHits'],
      ['minHits=x', 'minHits'],
      ['seenSince=yesterday', 'seenSince'],
      ['keyPrefix=', 'keyPrefix'],
      ['type=no%20spaces', 'type'],
      ['cursor=***', 'cursor'],
      ['cursor=YWJj', 'cursor'],
      // Well-formed but forged: a day that does not exist, a hit count that is no number.
      [`cursor=${Buffer.from('recent|2026-02-30T00:00:00.000000Z|5').toString('base64url')}`, 'cursor'],
      [`cursor=${Buffer.from('hits|many|5').toString('base64url')}`, 'cursor'],
      ['color=red', 'color'],
    ])('list with %s: 400', async (query, field) => {
      const res = await as('get', `?${query}`).expect(400);
      expect(res.body.errors).toEqual(expect.arrayContaining([expect.objectContaining({ field })]));
    });
  });

  describe('OpenAPI', () => {
    it('documents every endpoint of the misses log under its tag', async () => {
      const document = SwaggerModule.createDocument(app, new DocumentBuilder().setTitle('t').build());
      const paths = document.paths;
      expect(Object.keys(paths['/admin/tombstone-misses'])).toEqual(expect.arrayContaining(['get', 'delete']));
      expect(Object.keys(paths['/admin/tombstone-misses/{id}'])).toEqual(expect.arrayContaining(['get', 'delete']));
      const resolve = paths['/admin/tombstone-misses/{id}/resolve'].post!;
      expect(resolve.tags).toEqual(['tombstone-misses']);
      expect(Object.keys(resolve.responses)).toEqual(expect.arrayContaining(['201', '400', '401', '403', '404', '409']));
      const schema = document.components?.schemas?.ResolveTombstoneMissDto as { properties: Record<string, unknown>; required?: string[] };
      expect(Object.keys(schema.properties).sort()).toEqual(['alternative', 'kind', 'permanent', 'reason', 'target']);
      expect(schema.required).toEqual(['kind']);
      const listing = paths['/admin/tombstone-misses'].get!;
      expect((listing.parameters as { name: string }[]).map((p) => p.name).sort()).toEqual(
        ['cursor', 'keyPrefix', 'limit', 'minHits', 'scope', 'seenSince', 'sort', 'type'],
      );
      const purge = paths['/admin/tombstone-misses'].delete!;
      expect(purge.parameters).toEqual([expect.objectContaining({ name: 'before', in: 'query', required: true })]);
    });
  });
});
