import { jest } from '@jest/globals';
import { type INestApplication, Logger } from '@nestjs/common';
import request from 'supertest';
import { DataSource } from 'typeorm';
import { TombstoneAdminModule } from '../src/admin/index.js';
import { TombstoneMissLog } from '../src/counters/tombstone.misses.js';
import { TombstoneService } from '../src/index.js';
import { rankBySimilarity } from '../src/suggestions/tombstone.similarity.js';
import { ADMIN_TOKEN, TokenGuard } from './fixtures/admin.fixture.js';
import { bootSuggestionApp, SuggestedArticle } from './fixtures/suggestions.fixture.js';
import { ADAPTERS, settled } from './support/app.js';
import { eventually } from './support/eventually.js';
import type { TestDatabase } from './support/database.js';
import { QueryCounter } from './support/query-counter.js';

const BROWSER = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';
/** Enough budget that no test of the rules runs out of it (the budget has a test of its own). */
const AMPLE = { suggestions: { maxQueriesPerSecond: 10_000, burst: 10_000 } };

// "Did you mean": on both adapters, with pg_trgm (and a trigram index) and without it (the
// sort-order fallback). Each test seeds keys of its own tenant.
describe.each(ADAPTERS)('suggestions for unknown keys (%s)', (adapter) => {
  describe.each([
    ['with pg_trgm', true],
    ['without pg_trgm', false],
  ] as const)('%s', (_, trigram) => {
    let db: TestDatabase;
    let app: INestApplication;
    let close: () => Promise<void>;
    let http: ReturnType<typeof request>;
    let tombstones: TombstoneService;
    let data: DataSource;
    const counter = new QueryCounter();
    let tenant: string;
    let n = 0;

    beforeAll(async () => {
      ({ db, app, close } = await bootSuggestionApp(adapter, { trigram, module: AMPLE, counter }));
      http = request(app.getHttpServer());
      tombstones = app.get(TombstoneService);
      data = tombstones.dataSource;
    });

    afterAll(async () => {
      await close?.();
    });

    beforeEach(() => {
      tenant = `t${++n}`;
    });

    const seed = (slugs: string[], scope = tenant) =>
      data.getRepository(SuggestedArticle).save(slugs.map((slug) => data.getRepository(SuggestedArticle).create({ tenant: scope, slug })));
    const ask = (path: string, accept = 'application/json', scope = tenant) => http.get(path).set('X-Tenant-Id', scope).set('Accept', accept);
    const ids = (res: request.Response) => ((res.body as { suggestions?: { id: string }[] }).suggestions ?? []).map((s) => s.id);

    it('a typo gets the live keys most like it, at most 3, most alike first', async () => {
      const slugs = ['hello-world', 'hello-worlds', 'hello-word', 'help-world', 'yellow-world', 'goodbye-moon'];
      await seed(slugs);
      counter.reset();
      const res = await ask('/always/articles/hello-wrold');
      expect(res.status).toBe(404);
      expect(res.body).toMatchObject({ error: 'not_found', id: 'hello-wrold' });
      expect(ids(res)).toEqual(rankBySimilarity('hello-wrold', slugs));
      expect(ids(res)).toHaveLength(3);
      expect(ids(res)[0]).toBe('hello-world');
      // The path taken: pg_trgm ranks in the database, the fallback in memory.
      expect(counter.queries.some((q) => q.includes('similarity(r."slug"'))).toBe(trigram);
      expect((res.body as { suggestions: unknown[] }).suggestions[0]).toEqual({ id: 'hello-world', location: '/always/articles/hello-world' });
    });

    it('never a soft-deleted row, a hidden key, a key with a tombstone, or another tenant’s key', async () => {
      await seed(['hello-world', 'hello-worle', 'hello-worlf', 'hello-worlg']);
      await seed(['hello-worlh'], `${tenant}-other`);
      const repo = data.getRepository(SuggestedArticle);
      await repo.softDelete({ tenant, slug: 'hello-worle' }); // capture hides it
      await db.sql.query(`UPDATE sug_articles SET deleted_at = now() WHERE tenant = $1 AND slug = 'hello-worlf'`, [tenant]); // captured too
      await tombstones.recordHidden('article', 'hello-worlg', { scope: tenant }); // a live row, masked
      await settled(app);
      const res = await ask('/always/articles/hello-worl');
      expect(ids(res)).toEqual(['hello-world']);
      // The rows are there: the other tenant sees its own.
      expect(ids(await ask('/always/articles/hello-worl', 'application/json', `${tenant}-other`))).toEqual(['hello-worlh']);
    });

    it('the targets of live moves and merges, of a type no entity tracks; never an expired or a hidden target', async () => {
      await tombstones.recordMove('page', 'about-old', 'about-us', { scope: tenant });
      await tombstones.recordMerge('page', ['about-team-old'], 'about-usb', { scope: tenant });
      await tombstones.recordMove('page', 'about-x', 'about-usc', { scope: tenant });
      await tombstones.recordHidden('page', 'about-usc', { scope: tenant });
      await tombstones.recordMove('page', 'about-y', 'about-usd', { scope: `${tenant}-other` });
      await db.sql.query(
        `INSERT INTO tombstones (scope, resource_type, resource_key, kind, target_key, expires_at)
         VALUES ($1, 'page', 'about-z', 'moved', 'about-use', now() - interval '1 day')`,
        [tenant],
      );
      await settled(app);
      expect(ids(await ask('/pages/about-u'))).toEqual(rankBySimilarity('about-u', ['about-us', 'about-usb']));
      expect(ids(await ask('/pages/about-u'))).toEqual(expect.arrayContaining(['about-us', 'about-usb']));
      // A renamed row's new key, captured as a move, is suggested once; its old key has a tombstone.
      await seed(['renamed-slug']);
      await data.getRepository(SuggestedArticle).update({ tenant, slug: 'renamed-slug' }, { slug: 'renamed-slug-2' });
      await settled(app);
      expect(ids(await ask('/always/articles/renamed-slugg'))).toEqual(['renamed-slug-2']);
    });

    it('only 404s of GET get them: not a 410 nor a redirect nor a PATCH; not without opt-in; browsers only on a `suggest: true` route', async () => {
      await seed(['gone-article', 'gone-articles', 'moved-article']);
      await data.getRepository(SuggestedArticle).delete({ tenant, slug: 'gone-article' });
      await data.getRepository(SuggestedArticle).update({ tenant, slug: 'moved-article' }, { slug: 'moved-article-2' });
      await settled(app);
      const gone = await ask('/always/articles/gone-article');
      expect(gone.status).toBe(410);
      expect(gone.body).not.toHaveProperty('suggestions');
      const moved = await ask('/always/articles/moved-article');
      expect(moved.status).toBe(301);
      expect(moved.body).not.toHaveProperty('suggestions');
      // Only GET and HEAD: a PATCH that missed is not looking for a page.
      const patch = await http.patch('/always/articles/gone-articlez').set('X-Tenant-Id', tenant).set('Accept', 'application/json');
      expect(patch.status).toBe(404);
      expect(patch.body).not.toHaveProperty('suggestions');
      // The same miss without opt-in.
      const plain = await ask('/plain/articles/gone-articlez');
      expect(plain.status).toBe(404);
      expect(plain.body).not.toHaveProperty('suggestions');
      const always = ids(await ask('/always/articles/gone-articlez'));
      expect(always[0]).toBe('gone-articles');
      expect(always).not.toContain('gone-article'); // deleted: it has a tombstone
      // `suggest: true`: a JSON client (or `*/*`) gets none, a browser gets the links (in
      // whatever body the browser is given).
      for (const accept of ['application/json', '*/*']) {
        const api = await ask('/articles/gone-articlez', accept);
        expect(api.status).toBe(404);
        expect(api.text).not.toContain('gone-articles');
      }
      const browser = await ask('/articles/gone-articlez', BROWSER);
      expect(browser.status).toBe(404);
      expect(browser.headers.vary).toMatch(/Accept/);
      expect(browser.text).toContain('/articles/gone-articles');
    });

    it('problem details carry them as an extension member', async () => {
      await seed(['problem-child']);
      const res = await ask('/always/articles/problem-chid', 'application/problem+json');
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(res.body).toMatchObject({ status: 404, suggestions: [{ id: 'problem-child', location: '/always/articles/problem-child' }] });
    });

    it('links are same-origin paths built from the route, the key encoded, the query kept', async () => {
      await seed(['café au lait/2', '//evil.example/café au lait', '..']);
      const res = await ask('/always/articles/caf%C3%A9%20au%20lai?ref=mail');
      const suggestions = (res.body as { suggestions: { id: string; location: string }[] }).suggestions;
      expect(suggestions[0]).toEqual({ id: 'café au lait/2', location: '/always/articles/caf%C3%A9%20au%20lait%2F2?ref=mail' });
      for (const { location } of suggestions) {
        expect(location).toMatch(/^\/always\/articles\/[^/]+\?ref=mail$/);
        expect(location).not.toMatch(/^\/\//);
      }
    });

    it('asked again, a key costs no query; any change drops what was kept', async () => {
      await seed(['kept-answer']);
      expect(ids(await ask('/always/articles/kept-answe'))).toEqual(['kept-answer']);
      counter.reset();
      expect(ids(await ask('/always/articles/kept-answe'))).toEqual(['kept-answer']);
      // No suggestion query (the handler's own query is the app's; a lookup may still be one while
      // the seed's captured write is fenced).
      expect(counter.queries.filter((q) => /\bc\.key\b/.test(q))).toEqual([]);
      // Hidden since: never suggested again, however recently it was.
      await tombstones.recordHidden('article', 'kept-answer', { scope: tenant });
      await settled(app);
      expect(ids(await ask('/always/articles/kept-answe'))).toEqual([]);
    });

    it('a failing suggestion query gives the 404 without them, and is logged', async () => {
      await seed(['failing-query']);
      const errors = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
      try {
        await db.sql.query(`ALTER TABLE sug_articles RENAME TO sug_articles_away`);
        const res = await ask('/missing/articles/failing-quer');
        expect(res.status).toBe(404);
        expect(res.body).toMatchObject({ error: 'not_found', id: 'failing-quer' });
        expect(res.body).not.toHaveProperty('suggestions');
        expect(res.text).not.toMatch(/sug_articles|relation|SELECT/);
        expect(errors.mock.calls.some(([message]) => String(message).startsWith('Tombstone suggestions failed'))).toBe(true);
      } finally {
        await db.sql.query(`ALTER TABLE sug_articles_away RENAME TO sug_articles`);
        errors.mockRestore();
      }
      expect(ids(await ask('/missing/articles/failing-quer'))).toEqual(['failing-query']);
    });

    it('a suggestion query that takes longer than timeoutMs gives the 404 without them, and is logged', async () => {
      await seed(['slow-query']);
      const errors = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
      // Another connection holds the table: the suggestion query waits behind its lock.
      const holder = data.createQueryRunner();
      await holder.connect();
      await holder.startTransaction();
      try {
        await holder.query(`LOCK TABLE sug_articles IN ACCESS EXCLUSIVE MODE`);
        const res = await ask('/missing/articles/slow-quer');
        expect(res.status).toBe(404);
        expect(res.body).toMatchObject({ error: 'not_found', id: 'slow-quer' });
        expect(res.body).not.toHaveProperty('suggestions');
        expect(errors.mock.calls.some(([message]) => /^Tombstone suggestions failed.*no answer within 250 ms/.test(String(message)))).toBe(true);
      } finally {
        await holder.rollbackTransaction();
        await holder.release();
        errors.mockRestore();
      }
      // The query that waited ends with the lock; then the key gets its suggestions.
      await eventually(async () => expect(ids(await ask('/missing/articles/slow-quer'))).toEqual(['slow-query']));
    });
  });
});

// The flood goal with suggestions on: every miss of random keys wants them, and the budget (two
// queries at once, one a second, one per 10,000 misses in a flood) holds the queries down.
describe.each(ADAPTERS)('suggestions under a flood of unknown keys (%s)', (adapter) => {
  let app: INestApplication;
  let close: () => Promise<void>;
  const counter = new QueryCounter();

  beforeAll(async () => {
    ({ app, close } = await bootSuggestionApp(adapter, { trigram: true, counter }));
  });

  afterAll(async () => {
    await close?.();
  });

  it('costs at most the burst and one query a second', async () => {
    const http = request(app.getHttpServer());
    await http.get('/always/articles/warm-up').set('Accept', 'application/json'); // pg_trgm is looked for once
    counter.reset();
    const started = Date.now();
    let suggested = 0;
    for (let i = 0; i < 300; i++) {
      const res = await http.get(`/always/articles/flood-${Math.random().toString(36).slice(2)}`).set('Accept', 'application/json');
      expect(res.status).toBe(404);
      if ('suggestions' in (res.body as object)) suggested++;
    }
    const seconds = (Date.now() - started) / 1000;
    const queries = counter.tombstoneQueries;
    // Some asked (the test can fail), within the budget: the burst of 2 (the warm-up took one)
    // plus one a second at most (none once more than 20 misses a second make it a flood: the
    // flood rule itself is SuggestionBudget's unit test, on a clock of its own).
    expect(queries).toBeGreaterThan(0);
    expect(queries).toBeLessThanOrEqual(2 + Math.ceil(seconds));
    expect(suggested).toBe(0); // no live key looks like a random one
  });
});

// The admin page's target picker: what a miss may redirect to, read for the operator.
describe.each(ADAPTERS)('the admin misses’ suggestions (%s)', (adapter) => {
  let app: INestApplication;
  let close: () => Promise<void>;
  let http: ReturnType<typeof request>;

  beforeAll(async () => {
    ({ app, close } = await bootSuggestionApp(adapter, {
      trigram: false,
      // The misses' budget spent at once: the operator's suggestions do not draw on it.
      module: { missLog: true, suggestions: { maxQueriesPerSecond: 1, burst: 1 } },
      imports: [TombstoneAdminModule.forRoot({ guard: TokenGuard })],
    }));
    http = request(app.getHttpServer());
    const data = app.get(TombstoneService).dataSource;
    const repo = data.getRepository(SuggestedArticle);
    await repo.save(['hello-world', 'hello-worlds', 'goodbye-moon'].map((slug) => repo.create({ tenant: 'acme', slug })));
    await repo.save(repo.create({ tenant: 'globex', slug: 'hello-worle' }));
    // A live row, masked: never offered.
    await app.get(TombstoneService).recordHidden('article', 'hello-worlds', { scope: 'acme' });
    await settled(app);
    // Misses of browsers and API clients, more than the budget allows suggestions for.
    for (const key of ['helo-world', 'hello-wrld', 'goodby-moon']) await http.get(`/articles/${key}`).set('X-Tenant-Id', 'acme').expect(404);
    app.get(TombstoneMissLog).flush();
    await eventually(async () => {
      const res = await http.get('/tombstone-misses').set('Authorization', ADMIN_TOKEN).expect(200);
      expect((res.body as { items: unknown[] }).items).toHaveLength(3);
    });
  });

  afterAll(async () => {
    await close?.();
  });

  const missId = async (key: string) => {
    const res = await http.get('/tombstone-misses').query({ keyPrefix: key }).set('Authorization', ADMIN_TOKEN).expect(200);
    return (res.body as { items: { id: string; key: string }[] }).items.find((item) => item.key === key)!.id;
  };

  it('gives the live keys of the miss’s scope most like it, never a hidden one or another scope’s', async () => {
    for (const [key, first] of [
      ['helo-world', 'hello-world'],
      ['hello-wrld', 'hello-world'],
      ['goodby-moon', 'goodbye-moon'],
    ]) {
      const res = await http.get(`/tombstone-misses/${await missId(key)}/suggestions`).set('Authorization', ADMIN_TOKEN).expect(200);
      const { keys } = res.body as { keys: string[] };
      expect(keys[0]).toBe(first);
      expect(keys).not.toContain('hello-worlds');
      expect(keys).not.toContain('hello-worle');
      expect(res.headers['cache-control']).toBe('no-store');
    }
  });

  it('is behind the admin guard, and answers 404 for a miss that is not there', async () => {
    const id = await missId('helo-world');
    await http.get(`/tombstone-misses/${id}/suggestions`).expect(401);
    await http.get(`/tombstone-misses/${id}/suggestions`).set('Authorization', 'Bearer wrong').expect(403);
    await http.get('/tombstone-misses/999999999/suggestions').set('Authorization', ADMIN_TOKEN).expect(404);
  });
});
