import type { INestApplication } from '@nestjs/common';
import request from 'supertest';
import { AppModule } from '../example/app.module.js';
import { seed } from '../example/seed.js';
import { ADAPTERS, bootApp } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

// The demo's seeded behaviour is a contract checked from outside: keep it answering the same.
describe.each(ADAPTERS)('demo app contract (%s)', (adapter) => {
  let db: TestDatabase;
  let app: INestApplication;
  let http: ReturnType<typeof request>;

  beforeAll(async () => {
    db = await createTestDatabase();
    app = await bootApp(adapter, { imports: [AppModule.forRoot(db.url)] });
    expect(await seed(app)).toBe(true);
    http = request(app.getHttpServer());
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  it('GET /articles/hello-world → 200 with the article', async () => {
    const res = await http.get('/articles/hello-world').expect(200);
    expect(res.body).toMatchObject({ slug: 'hello-world', title: 'Hello, world' });
    expect(res.headers['x-request-id']).toBeUndefined();
  });

  it('GET /articles/old-hello → 301 to /articles/hello-world', async () => {
    const res = await http.get('/articles/old-hello').expect(301);
    expect(res.headers.location).toBe('/articles/hello-world');
    expect(res.body).toMatchObject({ error: 'moved', location: '/articles/hello-world', movedTo: 'hello-world' });
  });

  it('GET /articles/first-draft → one hop straight to /articles/hello-world', async () => {
    const res = await http.get('/articles/first-draft').expect(301);
    expect(res.headers.location).toBe('/articles/hello-world');
  });

  it('GET /articles/summer-sale-2025 → 410 with deletedAt, reason, alternative and a Link', async () => {
    const res = await http.get('/articles/summer-sale-2025').expect(410);
    expect(res.body).toMatchObject({
      error: 'gone',
      message: "Article 'summer-sale-2025' was permanently deleted",
      resource: 'article',
      id: 'summer-sale-2025',
      reason: 'The summer 2025 promotion has ended',
      alternative: '/articles/current',
      path: '/articles/summer-sale-2025',
    });
    expect(new Date(res.body.deletedAt).toISOString()).toBe(res.body.deletedAt);
    expect(res.headers.link).toBe('</articles/current>; rel="alternate"');
    expect(res.headers['cache-control']).toBe('max-age=86400');
    await http.get('/articles/current').expect(200);
  });

  it('GET /articles/spring-sale-2025 → 410 (moved, then the target was deleted)', async () => {
    const res = await http.get('/articles/spring-sale-2025').expect(410);
    expect(res.body).toMatchObject({ error: 'gone', id: 'spring-sale-2025', alternative: '/articles/current' });
  });

  it('GET /articles/draft-notes (hidden) → 404 shaped exactly like a key that never was', async () => {
    const hidden = await http.get('/articles/draft-notes').set('X-Request-Id', 'same-id').expect(404);
    const never = await http.get('/articles/never-was').set('X-Request-Id', 'same-id').expect(404);
    const normalise = (body: Record<string, string>, key: string) =>
      JSON.stringify(body).split(key).join('KEY');
    expect(normalise(hidden.body, 'draft-notes')).toBe(normalise(never.body, 'never-was'));
    expect(Object.keys(hidden.headers).sort()).toEqual(Object.keys(never.headers).sort());
    expect(hidden.headers['cache-control']).toBe(never.headers['cache-control']);
  });

  it('a malformed slug stays a 400, never a 500', async () => {
    await http.get('/articles/a%00b').expect(400);
    await http.get(`/articles/${'x'.repeat(300)}`).expect(adapter === 'fastify' ? 414 : 400);
  });

  it('PATCH a moved slug → 308 to the new slug', async () => {
    const res = await http.patch('/articles/old-hello').send({ title: 'x' }).expect(308);
    expect(res.headers.location).toBe('/articles/hello-world');
  });

  it('GET /articles → 200 array; an empty filter → 200 []', async () => {
    const all = await http.get('/articles').expect(200);
    expect(Array.isArray(all.body)).toBe(true);
    expect(all.body.length).toBeGreaterThan(0);
    const none = await http.get('/articles?tag=no-such-tag').expect(200);
    expect(none.body).toEqual([]);
  });

  it('users: 200, merged → 301, malformed → 400', async () => {
    await http.get('/users/1').expect(200);
    const merged = await http.get('/users/2').expect(301);
    expect(merged.headers.location).toBe('/users/1');
    await http.get('/users/abc').expect(400);
  });

  it('orders are scoped by X-Tenant-Id', async () => {
    await http.get('/orders/8472').set('X-Tenant-Id', 'acme').expect(200);
    const gone = await http.get('/orders/9001').set('X-Tenant-Id', 'acme').expect(410);
    expect(gone.headers['cache-control']).toBe('private, max-age=86400');
    const foreignDeleted = await http.get('/orders/9001').set('X-Tenant-Id', 'globex').expect(404);
    const foreignLive = await http.get('/orders/8472').set('X-Tenant-Id', 'globex').expect(404);
    expect(foreignDeleted.body).toEqual({ ...foreignLive.body, id: '9001', path: '/orders/9001', message: "Order '9001' was not found", requestId: foreignDeleted.body.requestId });
  });
});
