import type { INestApplication } from '@nestjs/common';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import request from 'supertest';
import { AppModule } from '../example/app.module.js';
import { createDemoApp } from '../example/http.js';
import { seed } from '../example/seed.js';
import { ADAPTERS, filterLoaded } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

// The demo as `npm start` runs it with METRICS=1: Prometheus text at /metrics.
describe.each(ADAPTERS)('demo with metrics (%s)', (adapter) => {
  let db: TestDatabase;
  let app: INestApplication;
  let http: ReturnType<typeof request>;

  beforeAll(async () => {
    db = await createTestDatabase();
    app = await createDemoApp(AppModule.forRoot(db.url, { adminToken: 'demo-test-token', metrics: true }), adapter, { logger: false, abortOnError: false });
    await app.init();
    if (adapter === 'fastify') await (app as NestFastifyApplication).getHttpAdapter().getInstance().ready();
    await filterLoaded(app);
    expect(await seed(app)).toBe(true);
    http = request(app.getHttpServer());
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  it('serves the answers, cold lookups and the cache as Prometheus text, never a key', async () => {
    await http.get('/articles/summer-sale-2025').expect(410);
    await http.get('/articles/first-draft').expect(301);
    await http.get('/articles/never-was').expect(404);
    await http.get('/articles/hello-world').expect(200);

    const scrape = await http.get('/metrics').expect(200);
    expect(scrape.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(scrape.headers['cache-control']).toBe('no-store');
    const text = scrape.text;
    const sample = (pattern: RegExp) => Number(text.match(pattern)?.[1]);
    expect(sample(/^tombstones_answers_total\{[^}]*tombstones_resource_type="article",tombstones_outcome="gone",[^}]*http_response_status_code="410"[^}]*\} (\d+)/m)).toBe(1);
    expect(sample(/^tombstones_answers_total\{[^}]*tombstones_outcome="moved",[^}]*http_response_status_code="301"[^}]*\} (\d+)/m)).toBe(1);
    expect(sample(/^tombstones_answers_total\{[^}]*tombstones_outcome="unknown",tombstones_source="filter"[^}]*\} (\d+)/m)).toBe(1);
    expect(sample(/^tombstones_lookup_duration_count\{[^}]*\} (\d+)/m)).toBeGreaterThanOrEqual(2);
    expect(sample(/^tombstones_cache_state\{tombstones_cache_state="coherent"[^}]*\} (\d+)/m)).toBe(1);
    expect(sample(/^tombstones_notification_lag\{[^}]*\} (\S+)/m)).toBeGreaterThan(0);
    for (const key of ['summer-sale-2025', 'first-draft', 'never-was', 'hello-world']) expect(text).not.toContain(key);
  });
});
