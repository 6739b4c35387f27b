import type { INestApplication } from '@nestjs/common';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import request from 'supertest';
import { AppModule } from '../example/app.module.js';
import { ArticlesService } from '../example/articles.js';
import { createDemoApp } from '../example/http.js';
import { seed } from '../example/seed.js';
import { ADAPTERS, filterLoaded } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';
import { type FakeCdn, startFakeHttpPurge } from './support/fake-cdn.js';
import { startWebhookReceiver, type WebhookReceiver } from './support/webhook-receiver.js';

// The demo as `npm start` runs it with WEBHOOK_URL, WEBHOOK_SECRET and CDN_PURGE_URL set.
describe.each(ADAPTERS)('demo with events (%s)', (adapter) => {
  let db: TestDatabase;
  let app: INestApplication;
  let http: ReturnType<typeof request>;
  let receiver: WebhookReceiver;
  let cdn: FakeCdn;
  const auth = { authorization: 'Bearer demo-test-token' };

  beforeAll(async () => {
    db = await createTestDatabase();
    receiver = await startWebhookReceiver('/webhooks');
    cdn = await startFakeHttpPurge();
    const events = { webhookUrl: receiver.url, webhookSecret: receiver.secret, purgeUrl: cdn.url };
    app = await createDemoApp(AppModule.forRoot(db.url, { adminToken: 'demo-test-token', events }), adapter, { logger: false, abortOnError: false });
    await app.init();
    if (adapter === 'fastify') await (app as NestFastifyApplication).getHttpAdapter().getInstance().ready();
    await filterLoaded(app);
    expect(await seed(app)).toBe(true);
    http = request(app.getHttpServer());
  });

  afterAll(async () => {
    await app?.close();
    await receiver?.close();
    await cdn?.close();
    await db?.drop();
  });

  const heard = (key: string) =>
    eventually(() => {
      expect(receiver.received.map((request) => request.body.data.key)).toContain(key);
      expect(cdn.purgedAt(`article/${key}`)).toBeDefined();
    });

  it('article answers carry Surrogate-Key, found ones included', async () => {
    expect((await http.get('/articles/hello-world').expect(200)).headers['surrogate-key']).toBe('article/hello-world');
    expect((await http.get('/articles/summer-sale-2025').expect(410)).headers['surrogate-key']).toBe('article/summer-sale-2025');
    expect((await http.get('/articles/old-hello').expect(301)).headers['surrogate-key']).toBe('article/old-hello article/hello-world');
  });

  it('the seeded changes reached the webhook and the purge endpoint', async () => {
    await heard('summer-sale-2025');
    await heard('old-hello');
    expect(receiver.refused).toBe(0);
  });

  it("a change through the demo's API reaches both", async () => {
    await app.get(ArticlesService).create('events-delete-me', 'Deleted through the API');
    await http.delete('/articles/events-delete-me').expect(204);
    await heard('events-delete-me');
    const event = receiver.received.map((request) => request.body.data).find((received) => received.key === 'events-delete-me')!;
    expect(event).toMatchObject({ type: 'tombstone.created', reason: 'Deleted through the API', after: { kind: 'deleted' } });
  });

  it('GET /health reports the outbox of both sinks', async () => {
    const res = await http.get('/health').expect(200);
    expect(res.body.info.tombstones).toMatchObject({ status: 'up', events: { status: 'up', sinks: 2, deadLetters: 0 } });
  });

  it('a change through the admin endpoints reaches both', async () => {
    await http
      .post('/admin/tombstones')
      .set(auth)
      .send({ type: 'article', key: 'events-admin', kind: 'deleted', reason: 'Retired by an operator' })
      .expect(201);
    await heard('events-admin');
    const sinks = await http.get('/admin/events/sinks').set(auth).expect(200);
    expect(sinks.body.items.map((sink: { name: string }) => sink.name).sort()).toEqual(['purge:demo', 'webhook:demo']);
  });
});

describe('demo without events', () => {
  it('WEBHOOK_URL without WEBHOOK_SECRET is refused with a message that says what to set', () => {
    expect(() => AppModule.forRoot('postgres://unused', { events: { webhookUrl: 'http://127.0.0.1:1/hooks' } })).toThrow(/WEBHOOK_SECRET/);
  });
});
