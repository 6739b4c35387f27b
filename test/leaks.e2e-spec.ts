import type { INestApplication } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import { TombstoneModule, type TombstoneModuleOptions, TombstoneService } from '../src/index.js';
import { ItemsController } from './fixtures/items.fixture.js';
import { pagesController } from './fixtures/pages.fixture.js';
import { bootSuggestionApp, SuggestedArticle } from './fixtures/suggestions.fixture.js';
import { TombstoneFences } from '../src/cache/tombstone.fences.js';
import { ADAPTERS, bootApp, filterLoaded, settled } from './support/app.js';
import { eventually } from './support/eventually.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { QueryCounter } from './support/query-counter.js';

/** What Chromium sends for a page it navigates to. */
const BROWSER = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7';

/**
 * A response as bytes, apart from what must differ between two requests: its id, its date, and
 * the key asked for, in the body and in the headers (its cache tags name it; compare keys of one
 * length that need no encoding: Content-Length counts them).
 */
function shape(res: request.Response, key: string): string {
  const id = res.headers['x-request-id'] as string;
  // A type with normalizeKeys is tagged by the key's normal form (lower case here): the key too.
  const keyed = (text: string) => text.split(key).join('<key>').split(key.toLowerCase()).join('<key>');
  const headers = Object.entries(res.headers)
    .filter(([name]) => !['date', 'x-request-id', 'etag'].includes(name))
    .map(([name, value]) => `${name}: ${keyed(String(value))}`)
    .sort();
  return `${res.status}\n${headers.join('\n')}\n\n${keyed(res.text.split(id).join('<request-id>'))}`;
}

// Existence leaks: a hidden key and another tenant's key must answer exactly as a key that never
// existed, byte for byte apart from the request id, and cost the same queries. With cache tags on:
// their tag header names the key asked for, whatever its tombstone says.
describe.each(ADAPTERS)('no existence leaks (%s)', (adapter) => {
  describe.each([
    ['with the cache', {}],
    ['without the cache', { cache: false }],
    ['with cache tags', { cacheTags: true }],
    ['with cache tags, without the cache', { cacheTags: true, cache: false }],
  ] as const)('%s', (_, cacheOptions: TombstoneModuleOptions) => {
    /** With cache tags on, the shape of a 404 must show the tag of the key, or the test proves nothing. */
    const tagged = cacheOptions.cacheTags === true;
    let db: TestDatabase;
    let app: INestApplication;
    let http: ReturnType<typeof request>;
    let tombstones: TombstoneService;
    const counter = new QueryCounter();

    beforeAll(async () => {
      db = await createTestDatabase();
      app = await bootApp(adapter, {
        imports: [
          TypeOrmModule.forRoot({ ...db.options(), logging: true, logger: counter }),
          // Items' keys are compared in lower case (normalizeKeys): another spelling must not leak either.
          TombstoneModule.forRoot({ scope: { header: 'x-tenant-id' }, normalizeKeys: { item: 'lower' }, ...cacheOptions }),
        ],
        controllers: [ItemsController, pagesController(adapter)],
      });
      http = request(app.getHttpServer());
      tombstones = app.get(TombstoneService);
    });

    afterAll(async () => {
      await app?.close();
      await db?.drop();
    });

    /** The response to GET /items/:key and the statements it cost. */
    const probe = async (key: string, tenant?: string, accept?: string) => {
      counter.reset();
      let req = http.get(`/items/${encodeURIComponent(key)}`);
      if (tenant !== undefined) req = req.set('X-Tenant-Id', tenant);
      const res = await (accept === undefined ? req : req.set('Accept', accept));
      return { shape: shape(res, key), queries: counter.queries.length };
    };

    /** Each test once as an API client asks (JSON), once as a browser does (an HTML page). */
    const clients = [
      ['JSON', undefined, 'content-type: application/json; charset=utf-8'],
      ['HTML', BROWSER, 'content-type: text/html; charset=utf-8'],
    ] as const;

    it.each(clients)('a hidden key answers as a key that never existed, at the same cost (%s)', async (_client, accept, contentType) => {
      await tombstones.recordHidden('item', 'leak-hidden-1');
      await tombstones.recordHidden('item', 'leak-hidden-2', { scope: 'acme' });
      // Recorded hidden in SQL too: what another instance or capture writes.
      await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'leak-hidden-3', 'hidden') ON CONFLICT DO NOTHING`);
      await settled(app); // the app has heard all three
      const never = await probe('leak-never-01', undefined, accept);
      const neverScoped = await probe('leak-never-02', 'acme', accept);
      expect(await probe('leak-hidden-1', undefined, accept)).toEqual(never);
      expect(await probe('leak-hidden-2', 'acme', accept)).toEqual(neverScoped);
      expect(await probe('leak-hidden-3', undefined, accept)).toEqual(never);
      expect(never.shape).toMatch(/^404\n/);
      expect(never.shape).toContain(`\n${contentType}\n`);
      if (tagged) expect(never.shape).toContain('\nsurrogate-key: item/<key>\n');
      else expect(never.shape).not.toContain('surrogate-key');
    });

    it.each(clients)('a key that redirects to a hidden one answers as a key that never existed (%s)', async (_client, accept, contentType) => {
      await tombstones.recordMove('item', 'leak-moved', 'leak-target');
      await tombstones.recordHidden('item', 'leak-target');
      // The same answer; with the cache, its first lookup is a query (see the README). Its tags
      // name the key asked for only, not the hidden key it leads to.
      const moved = await probe('leak-moved', undefined, accept);
      expect(moved.shape).toEqual((await probe('leak-never', undefined, accept)).shape);
      expect(moved.shape).toContain(`\n${contentType}\n`);
      if (tagged) expect(moved.shape).toContain('\nsurrogate-key: item/<key>\n');
    });

    it.each(clients)('another tenant’s deleted, moved and hidden keys answer as keys that never existed (%s)', async (_client, accept, contentType) => {
      await tombstones.recordDeletion('item', 'leak-gone', { scope: 'acme', reason: 'secret reason', alternative: '/items/leak-alternative' });
      await tombstones.recordMove('item', 'leak-move', 'leak-elsewhere', { scope: 'acme' });
      await tombstones.recordHidden('item', 'leak-hide', { scope: 'acme' });
      for (const key of ['leak-gone', 'leak-move', 'leak-hide']) {
        const other = await probe(key, 'globex', accept);
        const nobody = await probe(key.replace('leak', 'none'), 'globex', accept);
        expect(other).toEqual(nobody);
        expect(other.shape).toContain(`\n${contentType}\n`);
        expect(other.shape).not.toMatch(/secret|leak-elsewhere|leak-alternative|acme/);
        if (tagged) expect(other.shape).toContain('\nsurrogate-key: item/<key>\n');
      }
      // And the owner still gets the truth.
      const owner = await probe('leak-gone', 'acme', accept);
      expect(owner.shape).toMatch(/^410\n/);
      expect(owner.shape).toContain('secret reason');
    });

    it('with normalised keys, another spelling of a hidden key or of another tenant’s key answers as a key that never existed', async () => {
      await tombstones.recordHidden('item', 'Leak-Case-Hidden');
      await tombstones.recordDeletion('item', 'leak-case-gone', { scope: 'acme', reason: 'secret reason' });
      await tombstones.recordMove('item', 'leak-case-move', 'leak-case-there', { scope: 'acme' });
      await settled(app);
      // Keys of one length, each spelling against a never-existed key in the same spelling.
      expect(await probe('LEAK-CASE-HIDDEN')).toEqual(await probe('LEAK-CASE-NEVER1'));
      expect(await probe('leak-case-HIDDEN')).toEqual(await probe('leak-case-NEVER1'));
      for (const [key, nobody] of [
        ['LEAK-CASE-GONE', 'LEAK-CASE-NONE'],
        ['Leak-Case-Move', 'Leak-Case-Nope'],
      ]) {
        const other = await probe(key, 'globex');
        expect(other).toEqual(await probe(nobody, 'globex'));
        expect(other.shape).not.toMatch(/secret|leak-case-there|acme/);
        if (tagged) expect(other.shape).toContain('\nsurrogate-key: item/<key>\n');
      }
      // The owner gets the truth in any spelling.
      expect((await probe('LEAK-CASE-GONE', 'acme')).shape).toMatch(/^410\n/);
      // Tags name the normal form, which a purge of the tombstone names: hidden or not.
      if (tagged) {
        expect((await http.get('/items/LEAK-CASE-HIDDEN')).headers['surrogate-key']).toBe('item/leak-case-hidden');
        expect((await http.get('/items/LEAK-CASE-NEVER1')).headers['surrogate-key']).toBe('item/leak-case-never1');
      }
    });

    /** The response to GET /docs/<path> (a catch-all route: keys are paths) and the statements it cost. */
    const probePage = async (key: string, tenant?: string) => {
      counter.reset();
      const req = http.get(`/docs/${key}`);
      const res = await (tenant === undefined ? req : req.set('X-Tenant-Id', tenant));
      // Cache tags name the key encoded ('/' as %2F).
      return { shape: shape(res, key).split(encodeURIComponent(key)).join('<key>'), queries: counter.queries.length };
    };

    it('a key under a hidden prefix answers as a key that never existed, at the same cost', async () => {
      await tombstones.recordHidden('page', 'leakp-hidden/', { prefix: true });
      await tombstones.recordHidden('page', 'leakp-scoped/', { prefix: true, scope: 'acme' });
      await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind, prefix) VALUES ('page', 'leakp-sqlhid/', 'hidden', true)`);
      await settled(app);
      const never = await probePage('leakp-nevers/guide/x1');
      expect(never.shape).toMatch(/^404\n/);
      expect(await probePage('leakp-hidden/guide/x1')).toEqual(never);
      expect(await probePage('leakp-sqlhid/guide/x1')).toEqual(never);
      expect(await probePage('leakp-hidden/')).toEqual(await probePage('leakp-nevers/'));
      expect(await probePage('leakp-scoped/guide/x1', 'acme')).toEqual(await probePage('leakp-nevers/guide/x1', 'acme'));
    });

    it('a key moved by a prefix into a hidden one answers as a key that never existed', async () => {
      await tombstones.recordMove('page', 'leakp-old/', 'leakp-new/', { prefix: true });
      await tombstones.recordHidden('page', 'leakp-new/secret/', { prefix: true });
      await tombstones.recordHidden('page', 'leakp-new/plan');
      // With the cache, the first lookup of a key under a listed prefix is a query: shapes only.
      expect((await probePage('leakp-old/secret/x')).shape).toEqual((await probePage('leakp-nil/secret/x')).shape);
      expect((await probePage('leakp-old/plan')).shape).toEqual((await probePage('leakp-nil/plan')).shape);
    });

    it('another tenant’s deleted, moved and hidden prefixes answer as keys that never existed', async () => {
      await tombstones.recordDeletion('page', 'leakq-gone/', { scope: 'acme', prefix: true, reason: 'secret reason', alternative: '/docs/secret/' });
      await tombstones.recordMove('page', 'leakq-move/', 'leakq-elsewhere/', { scope: 'acme', prefix: true });
      await tombstones.recordHidden('page', 'leakq-hide/', { scope: 'acme', prefix: true });
      for (const key of ['leakq-gone/a/b', 'leakq-move/a/b', 'leakq-hide/a/b']) {
        const other = await probePage(key, 'globex');
        const nobody = await probePage(key.replace('leakq', 'noneq'), 'globex');
        expect(other).toEqual(nobody);
        expect(other.shape).not.toMatch(/secret|elsewhere|acme/);
      }
      expect((await probePage('leakq-gone/a/b', 'acme')).shape).toMatch(/^410\n/);
    });
  });
});

// "Did you mean": what a 404 suggests depends on the key's text, type and scope only. A hidden
// key, a soft-deleted row's key and another tenant's key get exactly the suggestions of a key
// that never existed, at the same cost, and none of them is ever suggested (if one were, the
// never-existed key's answer would name it and the two would differ).
describe.each(ADAPTERS)('no existence leaks through suggestions (%s)', (adapter) => {
  describe.each([
    ['with pg_trgm', true],
    ['without pg_trgm', false],
  ] as const)('%s', (_, trigram) => {
    let app: INestApplication;
    let close: () => Promise<void>;
    let http: ReturnType<typeof request>;
    const counter = new QueryCounter();

    beforeAll(async () => {
      ({ app, close } = await bootSuggestionApp(adapter, { trigram, counter, module: { suggestions: { maxQueriesPerSecond: 10_000, burst: 10_000 } } }));
      http = request(app.getHttpServer());
    });

    afterAll(async () => {
      await close?.();
    });

    const probe = async (key: string, tenant = 'acme') => {
      counter.reset();
      const res = await http.get(`/always/articles/${encodeURIComponent(key)}`).set('X-Tenant-Id', tenant).set('Accept', 'application/json');
      // The request's own statements: the handler's, a lookup's, the suggestions' (not the
      // module's background work that may land meanwhile: notifications, filter loads).
      return { shape: shape(res, key), queries: counter.queries.filter((q) => /\bsug_articles\b|\btombstones t\b/.test(q)).length };
    };

    it('hidden, soft-deleted and other tenants’ keys get the suggestions of a key that never existed', async () => {
      const service = app.get(TombstoneService);
      const articles = service.dataSource.getRepository(SuggestedArticle);
      await articles.save([
        articles.create({ tenant: 'acme', slug: 'leak-article' }),
        articles.create({ tenant: 'acme', slug: 'leak-articlh' }),
        articles.create({ tenant: 'globex', slug: 'leak-articli' }),
        articles.create({ tenant: 'globex', slug: 'leak-articlj' }),
      ]);
      await service.recordHidden('article', 'leak-articlf', { scope: 'acme' });
      await articles.softDelete({ tenant: 'acme', slug: 'leak-articlh' }); // captured: hidden
      await articles.delete({ tenant: 'globex', slug: 'leak-articlj' }); // captured: deleted, in globex
      await service.recordMove('article', 'leak-articlk', 'leak-articlm', { scope: 'globex' });
      await settled(app);
      // Captured writes fence their type until this instance has heard them (read-your-writes):
      // lookups meanwhile are queries. The probes compare keys in one state: after it.
      await eventually(() => expect(app.get(TombstoneFences, { strict: false }).unsure('article')).toBe(false));
      await filterLoaded(app);
      // pg_trgm is looked for once, at the first suggestion: warmed up until a probe has its
      // suggestions (on a busy machine the first query may outlast timeoutMs, and run on).
      let warm = 0;
      await eventually(async () => expect((await probe(`leak-articl${warm++}`)).shape).toContain('"suggestions"'));
      const never = await probe('leak-articlg');
      expect(never.shape).toMatch(/^404\n/);
      expect(never.queries).toBe(2); // the handler's, and the suggestions'
      expect(never.shape).toContain('"suggestions":[{"id":"leak-article","location":"/always/articles/leak-article"}]');
      expect(await probe('leak-articlf')).toEqual(never); // hidden
      expect(await probe('leak-articlh')).toEqual(await probe('leak-articln')); // soft-deleted
      // Another tenant's live row, deleted row and moved key; each against a fresh never-existed key.
      for (const [theirs, nobodys] of [
        ['leak-articli', 'leak-articlq'],
        ['leak-articlj', 'leak-articlr'],
        ['leak-articlk', 'leak-articls'],
      ]) {
        expect(await probe(theirs)).toEqual(await probe(nobodys));
      }
      // globex sees its own, which acme never does.
      expect((await probe('leak-articlp', 'globex')).shape).toContain('"id":"leak-articli"');
    });
  });
});
