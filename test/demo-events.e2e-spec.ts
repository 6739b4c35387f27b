import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { INestApplication } from '@nestjs/common';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { Webhook } from 'standardwebhooks';
import request from 'supertest';
import { AppModule } from '../example/app.module.js';
import { ArticlesService } from '../example/articles.js';
import { createDemoApp } from '../example/http.js';
import { seed } from '../example/seed.js';
import type { TombstoneEvent } from '../src/events/index.js';
import { ADAPTERS, filterLoaded } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';
import { type FakeCdn, startFakeHttpPurge } from './support/fake-cdn.js';

/** A webhook receiver that keeps the events whose signature the standardwebhooks package verified. */
async function startReceiver(secret: string): Promise<{ url: string; events: TombstoneEvent[]; refused: number; close(): Promise<void> }> {
  const webhook = new Webhook(secret);
  const receiver = { url: '', events: [] as TombstoneEvent[], refused: 0, close: async (): Promise<void> => undefined };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      try {
        const payload = webhook.verify(Buffer.concat(chunks).toString('utf8'), req.headers as Record<string, string>) as { data: TombstoneEvent };
        receiver.events.push(payload.data);
        res.writeHead(204).end();
      } catch {
        receiver.refused++;
        res.writeHead(400).end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks`;
  receiver.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return receiver;
}

// The demo as `npm start` runs it with WEBHOOK_URL, WEBHOOK_SECRET and CDN_PURGE_URL set.
describe.each(ADAPTERS)('demo with events (%s)', (adapter) => {
  let db: TestDatabase;
  let app: INestApplication;
  let http: ReturnType<typeof request>;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  let cdn: FakeCdn;
  const secret = `whsec_${randomBytes(32).toString('base64')}`;
  const auth = { authorization: 'Bearer demo-test-token' };

  beforeAll(async () => {
    db = await createTestDatabase();
    receiver = await startReceiver(secret);
    cdn = await startFakeHttpPurge();
    const events = { webhookUrl: receiver.url, webhookSecret: secret, purgeUrl: cdn.url };
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
      expect(receiver.events.map((event) => event.key)).toContain(key);
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
    const event = receiver.events.find((received) => received.key === 'events-delete-me')!;
    expect(event).toMatchObject({ type: 'tombstone.created', reason: 'Deleted through the API', after: { kind: 'deleted' } });
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
