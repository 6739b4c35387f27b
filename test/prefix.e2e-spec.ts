import type { INestApplication } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import pg from 'pg';
import request from 'supertest';
import { TombstoneCycleError, TombstoneModule, TombstoneService, TombstoneValidationError } from '../src/index.js';
import { TombstoneLookup } from '../src/cache/tombstone.lookup.js';
import { TombstoneTable } from '../src/table/tombstone.table.js';
import { pagesController } from './fixtures/pages.fixture.js';
import { ADAPTERS, bootApp, settled } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';
import { QueryCounter } from './support/query-counter.js';

// Prefix tombstones on a catch-all route (`GET /docs/*path`, keys like `v1/guide/intro`): a key's
// own tombstone beats a prefix's, the longest prefix wins, a live page is answered as found, and
// a lookup is one query whatever the chain.
describe.each(ADAPTERS)('prefix tombstones (%s)', (adapter) => {
  let db: TestDatabase;
  let app: INestApplication;
  let other: INestApplication;
  let http: ReturnType<typeof request>;
  let tombstones: TombstoneService;
  const counter = new QueryCounter();
  const lookups = () => counter.queries.filter((q) => /FROM tombstones t/.test(q)).length;

  const boot = (logger?: QueryCounter) =>
    bootApp(adapter, {
      imports: [TypeOrmModule.forRoot(logger ? { ...db.options(), logging: true, logger } : db.options()), TombstoneModule.forRoot({})],
      controllers: [pagesController(adapter)],
    });

  beforeAll(async () => {
    db = await createTestDatabase();
    app = await boot(counter);
    other = await boot();
    http = request(app.getHttpServer());
    tombstones = other.get(TombstoneService);
    await tombstones.recordMove('page', 'v1/', 'v2/', { prefix: true });
    await tombstones.recordDeletion('page', 'v1/guide/old-page', { reason: 'Outdated' });
    await tombstones.recordMove('page', 'v1/api/', 'v2/api/', { prefix: true, permanent: false });
    await tombstones.recordDeletion('page', 'legacy/', { prefix: true, reason: 'Retired', alternative: '/docs/v2/' });
    await tombstones.recordHidden('page', 'internal/', { prefix: true });
    await settled(app);
  });

  afterAll(async () => {
    await app?.close();
    await other?.close();
    await db?.drop();
  });

  beforeEach(() => counter.reset());

  it('moves a whole section: the rest of the key and the query string are kept, in one hop', async () => {
    const res = await http.get('/docs/v1/guide/intro?lang=en').expect(301);
    expect(res.headers.location).toBe('/docs/v2/guide/intro?lang=en');
    const next = await http.get(res.headers.location as string).expect(200);
    expect(next.body).toEqual({ key: 'v2/guide/intro' });
  });

  it('answers 308 to other methods, keeping them', async () => {
    const res = await http.post('/docs/v1/guide/intro').expect(308);
    expect(res.headers.location).toBe('/docs/v2/guide/intro');
  });

  it("a key's own tombstone beats its prefix's", async () => {
    const res = await http.get('/docs/v1/guide/old-page').expect(410);
    expect(res.body).toMatchObject({ error: 'gone', reason: 'Outdated' });
  });

  it('the longest prefix wins', async () => {
    const res = await http.get('/docs/v1/api/x').expect(302);
    expect(res.headers.location).toBe('/docs/v2/api/x');
  });

  it('a live page under a moved prefix is answered as found, without a query', async () => {
    await http.get('/docs/v1/still-here').expect(200, { key: 'v1/still-here' });
    expect(counter.tombstoneQueries).toBe(0);
  });

  it('a deleted prefix answers 410 with its reason and alternative for every key under it', async () => {
    const res = await http.get('/docs/legacy/a/b').expect(410);
    expect(res.body).toMatchObject({ error: 'gone', reason: 'Retired', alternative: '/docs/v2/' });
    expect(res.headers.link).toContain('</docs/v2/>');
    await http.get('/docs/legacy/').expect(410);
    await http.get('/docs/legacyish/a').expect(404);
  });

  it('a hidden prefix answers exactly like a key that never existed, request id apart', async () => {
    const hidden = await http.get('/docs/internal/secret/plan').set('x-request-id', 'req-1').expect(404);
    await tombstones.restore('page', 'internal/');
    await settled(app);
    const never = await http.get('/docs/internal/secret/plan').set('x-request-id', 'req-1').expect(404);
    await tombstones.recordHidden('page', 'internal/', { prefix: true });
    await settled(app);
    expect(hidden.text).toBe(never.text);
    const { date: _a, ...hiddenHeaders } = hidden.headers;
    const { date: _b, ...neverHeaders } = never.headers;
    expect(hiddenHeaders).toEqual(neverHeaders);
  });

  it('follows a chain through prefixes and keys to its end in one query, cold', async () => {
    await tombstones.recordMove('page', 'c3/', 'c4/', { prefix: true });
    await tombstones.recordMove('page', 'c2/p', 'c3/p');
    await tombstones.recordMove('page', 'c1/', 'c2/', { prefix: true });
    await tombstones.recordDeletion('page', 'c4/gone/', { prefix: true });
    await tombstones.recordMove('page', 'c2/q/', 'c4/gone/q/', { prefix: true });
    await settled(app);
    counter.reset();
    // c1/p → c2/p (prefix) → c3/p (its own move) → c4/p (prefix): one hop for the client.
    expect((await http.get('/docs/c1/p').expect(301)).headers.location).toBe('/docs/c4/p');
    expect(lookups()).toBe(1);
    // A moved prefix whose rewritten target is under a deleted prefix: 410, still one query.
    counter.reset();
    await http.get('/docs/c1/q/r').expect(410);
    expect(lookups()).toBe(1);
  });

  it('keeps the prepared lookup on its generic plan: PostgreSQL does not plan each lookup again', async () => {
    // Planning the walk costs about three times running it (see docs/table.md, Lookups).
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const table = app.get(TombstoneTable);
      for (let i = 0; i < 12; i++) await table.lookupOn(client as never, 'page', i % 2 ? `v1/guide/p${i}` : `nothing-${i}`);
      const [plans] = (
        await client.query(`SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name LIKE 'nestjs_tombstones_lookup_%'`)
      ).rows as { generic_plans: string; custom_plans: string }[];
      expect(Number(plans.custom_plans)).toBeLessThanOrEqual(5);
      expect(Number(plans.generic_plans)).toBeGreaterThanOrEqual(7);
    } finally {
      await client.end();
    }
  });

  it('refuses cycles and a prefix moved under itself, and writes nothing', async () => {
    await expect(tombstones.recordMove('page', 'loop/', 'loop/deeper/', { prefix: true })).rejects.toThrow(TombstoneCycleError);
    await tombstones.recordMove('page', 'ring-a/', 'ring-b/', { prefix: true });
    // ring-b/x → ring-a/x would come back through the prefix ring-a/ → ring-b/.
    await expect(tombstones.recordMove('page', 'ring-b/x', 'ring-a/x')).rejects.toThrow(TombstoneCycleError);
    expect(await tombstones.find('page', 'loop/')).toBeNull();
    expect(await tombstones.find('page', 'ring-b/x')).toBeNull();
  });

  it('refuses a prefix that does not end at a segment boundary, or a merge of prefixes', async () => {
    await expect(tombstones.recordMove('page', 'v3', 'v4/', { prefix: true })).rejects.toThrow(TombstoneValidationError);
    await expect(tombstones.recordMove('page', 'v3/', 'v4', { prefix: true })).rejects.toThrow(TombstoneValidationError);
    await expect(tombstones.recordDeletion('page', 'x'.repeat(3) + '/a'.repeat(17) + '/', { prefix: true })).rejects.toThrow(TombstoneValidationError);
    await expect(tombstones.recordMerge('page', ['m1/'], 'm2/', { prefix: true })).rejects.toThrow(TombstoneValidationError);
    expect(await tombstones.find('page', 'v3/')).toBeNull();
  });

  it('a change of a prefix, from another instance or SQL, drops every answer kept under it', async () => {
    await http.get('/docs/v1/kept').expect(301);
    await http.get('/docs/fresh/kept').expect(404);
    await http.get('/docs/fresh/kept').expect(404);
    await tombstones.recordDeletion('page', 'v1/', { prefix: true });
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind, target_key, prefix) VALUES ('page', 'fresh/', 'moved', 'v2/', true)`);
    await settled(app);
    await http.get('/docs/v1/kept').expect(410);
    expect((await http.get('/docs/fresh/kept').expect(301)).headers.location).toBe('/docs/v2/kept');
    await tombstones.recordMove('page', 'v1/', 'v2/', { prefix: true });
    await eventually(async () => void (await http.get('/docs/v1/kept').expect(301)));
  });

  it('answers a flood of unknown keys from the filter with prefix tombstones present', async () => {
    expect(app.get(TombstoneLookup).stats().filter.ready).toBe(true);
    counter.reset();
    for (let i = 0; i < 1000; i++) {
      const a = Math.random().toString(36).slice(2);
      await http.get(`/docs/${a}/${i}/${a}`).expect(404);
    }
    expect(lookups()).toBe(0);
  });
});
