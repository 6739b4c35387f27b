import { createHash } from 'node:crypto';
import type { INestApplication } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import { TombstoneLookup } from '../src/cache/tombstone.lookup.js';
import { TombstoneModule, TombstoneService } from '../src/index.js';
import { TOMBSTONE_OPTIONS } from '../src/tombstone.constants.js';
import { cacheTagsOf } from '../src/tombstone.cache-tags.js';
import type { ResolvedTombstoneOptions } from '../src/tombstone.options.js';
import { ArticlesController, KeylessController, TaggedAllController, TaggedController } from './fixtures/cache-tags.fixture.js';
import { ADAPTERS, bootApp, settled } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

/** Every header but those that differ between two requests, for comparing GET and HEAD. */
function stable(headers: Record<string, string>): Record<string, string> {
  const { date: _d, 'x-request-id': _id, ...rest } = headers;
  return rest;
}

// Cache tags on the module's answers, for a CDN to purge them by tag when a tombstone changes.
describe.each(ADAPTERS)('cache tags (%s)', (adapter) => {
  let db: TestDatabase;
  let app: INestApplication;
  let http: ReturnType<typeof request>;

  beforeAll(async () => {
    db = await createTestDatabase();
    app = await bootApp(adapter, {
      imports: [
        TypeOrmModule.forRoot(db.options()),
        TombstoneModule.forRoot({
          scope: { header: 'x-tenant-id' },
          cacheTags: true,
          cacheControl: {
            gone: { public: true, maxAge: 3600, sMaxAge: 86_400, staleIfError: 600 },
            permanentRedirect: { maxAge: 60, sMaxAge: 3600, staleWhileRevalidate: 30 },
          },
        }),
      ],
      controllers: [ArticlesController, KeylessController, TaggedController, TaggedAllController],
    });
    http = request(app.getHttpServer());
    const tombstones = app.get(TombstoneService);
    await tombstones.recordDeletion('article', 'gone', { alternative: '/articles/live' });
    await tombstones.recordDeletion('article', 'a b/c', { reason: 'spaces and a slash' });
    await tombstones.recordMove('article', 'old', 'new');
    await tombstones.recordMove('article', 'temp', 'new', { permanent: false });
    await tombstones.recordHidden('article', 'secret');
    await tombstones.recordMove('article', 'to-hidden', 'hidden-later');
    await tombstones.recordHidden('article', 'hidden-later');
    await tombstones.recordDeletion('article', 'expired', { expiresAt: new Date(Date.now() - 1000) });
    await tombstones.recordDeletion('article', 'acme-gone', { scope: 'acme' });
    await settled(app);
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  describe('misses', () => {
    it.each([
      ['a 410', 'get', '/articles/gone', 410, 'article/gone'],
      ['a 410 of a key that needs encoding', 'get', `/articles/${encodeURIComponent('a b/c')}`, 410, 'article/a%20b%2Fc'],
      ['a 301, with its target', 'get', '/articles/old', 301, 'article/old article/new'],
      ['a 308, with its target', 'post', '/articles/old', 308, 'article/old article/new'],
      ['a 302, with its target', 'get', '/articles/temp', 302, 'article/temp article/new'],
      ['a 307, with its target', 'post', '/articles/temp', 307, 'article/temp article/new'],
      ['a 404 of a key that never existed', 'get', '/articles/never', 404, 'article/never'],
      ['a 404 of an expired tombstone', 'get', '/articles/expired', 404, 'article/expired'],
      ['a 404 of a hidden key, its own tag only', 'get', '/articles/secret', 404, 'article/secret'],
      ['a 404 of a move to a hidden key, its own tag only', 'get', '/articles/to-hidden', 404, 'article/to-hidden'],
    ] as const)('%s carries the tags of the key asked for', async (_name, method, path, status, tags) => {
      const res = await http[method](path).expect(status);
      expect(res.headers['surrogate-key']).toBe(tags);
    });

    it('HEAD gets the headers of GET, tags included', async () => {
      for (const [path, status] of [
        ['/articles/gone', 410],
        ['/articles/old', 301],
        ['/articles/never', 404],
      ] as const) {
        const get = await http.get(path).expect(status);
        const head = await http.head(path).expect(status);
        expect(head.headers['surrogate-key']).toBeDefined();
        expect(stable(head.headers)).toEqual(stable(get.headers));
      }
    });

    it("tags a tenant's 410 and another tenant's 404 alike: the tag does not depend on the tombstone", async () => {
      const owner = await http.get('/articles/acme-gone').set('x-tenant-id', 'acme').expect(410);
      const other = await http.get('/articles/acme-gone').set('x-tenant-id', 'globex').expect(404);
      expect(owner.headers['surrogate-key']).toBe('article/acme-gone');
      expect(other.headers['surrogate-key']).toBe('article/acme-gone');
    });

    it('agrees with cacheTagsOf() and the options the module exports', async () => {
      const options = app.get<ResolvedTombstoneOptions>(TOMBSTONE_OPTIONS);
      const res = await http.get('/articles/old').expect(301);
      expect(res.headers['surrogate-key']).toBe([...cacheTagsOf(options, 'article', 'old'), ...cacheTagsOf(options, 'article', 'new')].join(' '));
    });

    // A key whose encoded tag is over 1024 bytes, in two route parameters of 99 characters each
    // (Fastify refuses a parameter over 100 before any handler runs): '€' is 9 bytes encoded.
    it('tags a key too long for its tag with a hash of it', async () => {
      const part = '€'.repeat(99);
      const res = await http.get(`/tagged/${encodeURIComponent(part)}/${encodeURIComponent(part)}/keyed`).expect(200);
      const key = `${part}.${part}`;
      expect(res.headers['surrogate-key']).toBe(`article/#${createHash('sha256').update(key).digest('hex').slice(0, 32)}`);
    });
  });

  describe('no tags when the answer says nothing of the key', () => {
    it('the plain 404 of a lookup that failed (reads fail open)', async () => {
      const lookup = app.get(TombstoneLookup);
      const resolve = lookup.resolve.bind(lookup);
      for (const failure of [
        () => {
          throw new Error('database down');
        },
        () => Promise.reject(new Error('database down')),
      ]) {
        lookup.resolve = failure as typeof lookup.resolve;
        try {
          const res = await http.get('/articles/gone').expect(404);
          expect(res.body).toMatchObject({ error: 'not_found', id: 'gone' });
          expect(res.headers['surrogate-key']).toBeUndefined();
          expect(res.headers['cache-control']).toBe('no-store');
        } finally {
          lookup.resolve = resolve;
        }
      }
      expect((await http.get('/articles/gone').expect(410)).headers['surrogate-key']).toBe('article/gone');
    });

    it('the plain 404 of a key function that throws', async () => {
      const res = await http.get('/keyless/x/throws').expect(404);
      expect(res.body).toMatchObject({ error: 'not_found', id: '' });
      expect(res.headers['surrogate-key']).toBeUndefined();
    });

    it('a route whose key cannot be read: answered as the handler did', async () => {
      const res = await http.get('/keyless/gone').expect(200);
      expect(res.headers['surrogate-key']).toBeUndefined();
    });

    it('a found resource of a route that did not ask for them', async () => {
      const res = await http.get('/articles/live').expect(200);
      expect(res.body).toEqual({ slug: 'live', title: 'A live article' });
      expect(res.headers['surrogate-key']).toBeUndefined();
      expect((await http.head('/articles/live').expect(200)).headers['surrogate-key']).toBeUndefined();
    });
  });

  describe('found resources of routes with cacheTags: true', () => {
    it.each([
      ['a handler', '/tagged/live'],
      ['an async handler', '/tagged/live/async'],
      ['a handler that returns an Observable', '/tagged/live/observable'],
      ["each of a controller's routes", '/tagged-all/live'],
      ['a route the controller inherits', '/tagged-all/live/inherited'],
    ])('%s: the 200 carries the tags of its key, for GET and HEAD', async (_name, path) => {
      const get = await http.get(path).expect(200);
      expect(get.body).toMatchObject({ slug: 'live', title: 'A live article' });
      expect(get.headers['surrogate-key']).toBe('article/live');
      const head = await http.head(path).expect(200);
      expect(head.headers['surrogate-key']).toBe('article/live');
      expect(stable(head.headers)).toEqual(stable(get.headers));
    });

    it('passes the handler its own arguments, and nothing more', async () => {
      const res = await http.get('/tagged/live/arguments').expect(200);
      expect(res.body).toEqual({ slug: 'live', fromRequest: 'live', count: 2 });
      expect(res.headers['surrogate-key']).toBe('article/live');
      const other = await http.get('/tagged-all/live/with-request').expect(200);
      expect(other.body).toMatchObject({ slug: 'live', fromRequest: 'live' });
      expect(other.headers['surrogate-key']).toBe('article/live');
    });

    it('reads the key with the route’s key function', async () => {
      const res = await http.get('/tagged/a/b c/keyed').expect(200);
      expect(res.body).toEqual({ key: 'a.b c' });
      expect(res.headers['surrogate-key']).toBe('article/a.b%20c');
    });

    it('adds its tags to those the handler set, each once', async () => {
      const res = await http.get('/tagged/live/preset').expect(200);
      expect(res.headers['surrogate-key']).toBe('site article/live');
    });

    it('tags a write that found its resource, not an empty 204', async () => {
      const post = await http.post('/tagged/live').expect(201);
      expect(post.headers['surrogate-key']).toBe('article/live');
      const removed = await http.delete('/tagged/live').expect(204);
      expect(removed.headers['surrogate-key']).toBeUndefined();
    });

    it('leaves a route without it alone, on the same controller too', async () => {
      for (const path of ['/tagged/live/untagged', '/tagged-all/live/own', '/articles/live']) {
        const res = await http.get(path).expect(200);
        expect(res.headers['surrogate-key']).toBeUndefined();
      }
    });

    it('its misses are answered and tagged as on any route, once', async () => {
      const gone = await http.get('/tagged/gone').expect(410);
      expect(gone.headers['surrogate-key']).toBe('article/gone');
      const moved = await http.get('/tagged-all/old/inherited').expect(301);
      expect(moved.headers.location).toBe('/tagged-all/new/inherited');
      expect(moved.headers['surrogate-key']).toBe('article/old article/new');
      expect((await http.get('/tagged/never/async').expect(404)).headers['surrogate-key']).toBe('article/never');
      expect((await http.get('/tagged/new/preset').expect(200)).headers['surrogate-key']).toBe('site article/live article/new');
    });
  });

  describe('Cache-Control objects', () => {
    it('writes the directives of a 410, and leaves public and s-maxage out of a scoped one', async () => {
      const res = await http.get('/articles/gone').expect(410);
      expect(res.headers['cache-control']).toBe('public, max-age=3600, s-maxage=86400, stale-if-error=600');
      const scoped = await http.get('/articles/acme-gone').set('x-tenant-id', 'acme').expect(410);
      expect(scoped.headers['cache-control']).toBe('private, max-age=3600, stale-if-error=600');
    });

    it('writes the directives of a 301 and a 308, and keeps the defaults of the others', async () => {
      expect((await http.get('/articles/old').expect(301)).headers['cache-control']).toBe('max-age=60, s-maxage=3600, stale-while-revalidate=30');
      expect((await http.post('/articles/old').expect(308)).headers['cache-control']).toBe('max-age=60, s-maxage=3600, stale-while-revalidate=30');
      expect((await http.get('/articles/temp').expect(302)).headers['cache-control']).toBe('no-store');
      expect((await http.get('/articles/never').expect(404)).headers['cache-control']).toBe('no-store');
    });
  });

  describe('routes with cacheTags: true, in an app without cache tags', () => {
    let untagged: INestApplication;

    beforeAll(async () => {
      untagged = await bootApp(adapter, {
        imports: [TypeOrmModule.forRoot(db.options()), TombstoneModule.forRoot()],
        controllers: [TaggedController, TaggedAllController],
      });
    });

    afterAll(async () => {
      await untagged?.close();
    });

    it('answer as they would without it, and carry no tags', async () => {
      const client = request(untagged.getHttpServer());
      for (const path of ['/tagged/live', '/tagged/live/async', '/tagged-all/live/inherited']) {
        const res = await client.get(path).expect(200);
        expect(res.body).toMatchObject({ slug: 'live' });
        expect(res.headers['surrogate-key']).toBeUndefined();
      }
      expect((await client.get('/tagged/gone').expect(410)).headers['surrogate-key']).toBeUndefined();
    });
  });

  describe('a header, tags and a separator of the app', () => {
    let custom: INestApplication;
    let client: ReturnType<typeof request>;

    beforeAll(async () => {
      custom = await bootApp(adapter, {
        imports: [
          TypeOrmModule.forRoot(db.options()),
          TombstoneModule.forRoot({
            cacheTags: {
              header: 'Cache-Tag',
              separator: ', ',
              tag: (type, key) => (key === 'bad' ? ['ok', 'not ok', 'a,b', 'é', 'x'.repeat(1025)] : key === 'gone' ? [`${type}:${key}`, type] : `${type}:${key}`),
            },
          }),
        ],
        controllers: [ArticlesController, TaggedController],
      });
      client = request(custom.getHttpServer());
      await custom.get(TombstoneService).recordDeletion('article', 'bad');
    });

    afterAll(async () => {
      await custom?.close();
    });

    it('writes its header with its tags and its separator', async () => {
      const res = await client.get('/articles/gone').expect(410);
      expect(res.headers['cache-tag']).toBe('article:gone, article');
      expect(res.headers['surrogate-key']).toBeUndefined();
      expect((await client.get('/articles/old').expect(301)).headers['cache-tag']).toBe('article:old, article:new');
    });

    it('tags a found resource with them too', async () => {
      expect((await client.get('/tagged/live').expect(200)).headers['cache-tag']).toBe('article:live');
    });

    it('leaves invalid tags out of the header, never failing the answer', async () => {
      const res = await client.get('/articles/bad').expect(410);
      expect(res.headers['cache-tag']).toBe('ok');
      expect(res.body).toMatchObject({ error: 'gone', id: 'bad' });
    });
  });
});
