import type { INestApplication } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import { TombstoneModule, type TombstoneModuleOptions, TombstoneService } from '../src/index.js';
import { ItemsController } from './fixtures/items.fixture.js';
import { bootSuggestionApp, SuggestedArticle } from './fixtures/suggestions.fixture.js';
import { TombstoneFences } from '../src/cache/tombstone.fences.js';
import { ADAPTERS, bootApp, filterLoaded, settled } from './support/app.js';
import { eventually } from './support/eventually.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { QueryCounter } from './support/query-counter.js';

/**
 * A response as bytes, apart from what must differ between two requests: its id, its date, and
 * the key asked for, in the body and in the headers (its cache tags name it; compare keys of one
 * length that need no encoding: Content-Length counts them).
 */
function shape(res: request.Response, key: string): string {
  const id = res.headers['x-request-id'] as string;
  const headers = Object.entries(res.headers)
    .filter(([name]) => !['date', 'x-request-id', 'etag'].includes(name))
    .map(([name, value]) => `${name}: ${String(value).split(key).join('<key>')}`)
    .sort();
  return `${res.status}\n${headers.join('\n')}\n\n${res.text.split(id).join('<request-id>').split(key).join('<key>')}`;
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
          TombstoneModule.forRoot({ scope: { header: 'x-tenant-id' }, ...cacheOptions }),
        ],
        controllers: [ItemsController],
      });
      http = request(app.getHttpServer());
      tombstones = app.get(TombstoneService);
    });

    afterAll(async () => {
      await app?.close();
      await db?.drop();
    });

    /** The response to GET /items/:key and the statements it cost. */
    const probe = async (key: string, tenant?: string) => {
      counter.reset();
      const req = http.get(`/items/${encodeURIComponent(key)}`);
      const res = await (tenant === undefined ? req : req.set('X-Tenant-Id', tenant));
      return { shape: shape(res, key), queries: counter.queries.length };
    };

    it('a hidden key answers as a key that never existed, at the same cost', async () => {
      await tombstones.recordHidden('item', 'leak-hidden-1');
      await tombstones.recordHidden('item', 'leak-hidden-2', { scope: 'acme' });
      // Recorded hidden in SQL too: what another instance or capture writes.
      await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('item', 'leak-hidden-3', 'hidden')`);
      await settled(app); // the app has heard all three
      const never = await probe('leak-never-01');
      const neverScoped = await probe('leak-never-02', 'acme');
      expect(await probe('leak-hidden-1')).toEqual(never);
      expect(await probe('leak-hidden-2', 'acme')).toEqual(neverScoped);
      expect(await probe('leak-hidden-3')).toEqual(never);
      expect(never.shape).toMatch(/^404\n/);
      if (tagged) expect(never.shape).toContain('\nsurrogate-key: item/<key>\n');
      else expect(never.shape).not.toContain('surrogate-key');
    });

    it('a key that redirects to a hidden one answers as a key that never existed', async () => {
      await tombstones.recordMove('item', 'leak-moved', 'leak-target');
      await tombstones.recordHidden('item', 'leak-target');
      // The same answer; with the cache, its first lookup is a query (see the README). Its tags
      // name the key asked for only, not the hidden key it leads to.
      const moved = await probe('leak-moved');
      expect(moved.shape).toEqual((await probe('leak-never')).shape);
      if (tagged) expect(moved.shape).toContain('\nsurrogate-key: item/<key>\n');
    });

    it('another tenant’s deleted, moved and hidden keys answer as keys that never existed', async () => {
      await tombstones.recordDeletion('item', 'leak-gone', { scope: 'acme', reason: 'secret reason' });
      await tombstones.recordMove('item', 'leak-move', 'leak-elsewhere', { scope: 'acme' });
      await tombstones.recordHidden('item', 'leak-hide', { scope: 'acme' });
      for (const key of ['leak-gone', 'leak-move', 'leak-hide']) {
        const other = await probe(key, 'globex');
        const nobody = await probe(key.replace('leak', 'none'), 'globex');
        expect(other).toEqual(nobody);
        expect(other.shape).not.toMatch(/secret|leak-elsewhere|acme/);
        if (tagged) expect(other.shape).toContain('\nsurrogate-key: item/<key>\n');
      }
      // And the owner still gets the truth.
      expect((await probe('leak-gone', 'acme')).shape).toMatch(/^410\n/);
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
