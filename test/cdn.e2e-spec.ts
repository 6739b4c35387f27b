import { Controller, Get, type INestApplication, Param } from '@nestjs/common';
import { getDataSourceToken, InjectDataSource, TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import type { DataSource } from 'typeorm';
import { TombstoneEventsModule, type TombstonePurgeOptions } from '../src/events/index.js';
import { TOMBSTONE_MIGRATIONS, Tombstoned, TombstoneModule, type TombstoneModuleOptions, TombstoneService } from '../src/index.js';
import { bootEventsApp } from './fixtures/events.fixture.js';
import { CAPTURE_ENTITIES, CreateCaptureFixtures1763900000000, Post } from './fixtures/capture.fixture.js';
import { ADAPTERS, type AdapterName, bootApp } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';
import { type FakeCdn, startFakeCloudflare, startFakeFastly, startFakeHttpPurge } from './support/fake-cdn.js';

const FAST = { retryDelayMs: 20, maxRetryDelayMs: 100, pollIntervalMs: 50, leaseMs: 1000 };

/** Tenant t1's posts by slug; the found page is tagged too. */
@Controller('cdn-posts')
class CdnPostsController {
  constructor(@InjectDataSource() private readonly db: DataSource) {}

  @Get(':slug')
  @Tombstoned('post', { param: 'slug', scope: () => 't1', cacheTags: true })
  findOne(@Param('slug') slug: string): Promise<Post | null> {
    return this.db.getRepository(Post).findOneBy({ tenant: 't1', slug });
  }
}

async function boot(adapter: AdapterName, db: TestDatabase, purge: TombstonePurgeOptions, cacheTags: TombstoneModuleOptions['cacheTags']): Promise<INestApplication> {
  return bootApp(adapter, {
    imports: [
      TypeOrmModule.forRoot({
        ...db.options({ entities: CAPTURE_ENTITIES }),
        migrations: [...TOMBSTONE_MIGRATIONS, CreateCaptureFixtures1763900000000],
        migrationsRun: true,
      }),
      TombstoneModule.forRoot({ isGlobal: true, cacheTags }),
      TombstoneEventsModule.forRoot({ purge: [purge], listeners: false, ...FAST }),
    ],
    controllers: [CdnPostsController],
  });
}

const PROVIDERS = [
  { name: 'fastly', start: () => startFakeFastly(), cacheTags: true, header: 'surrogate-key' },
  { name: 'cloudflare', start: () => startFakeCloudflare(), cacheTags: { header: 'Cache-Tag' }, header: 'cache-tag' },
  { name: 'http', start: () => startFakeHttpPurge(), cacheTags: true, header: 'surrogate-key' },
] as const;

describe.each(ADAPTERS)('CDN purges through the outbox (%s)', (adapter) => {
  describe.each(PROVIDERS)('$name', ({ start, cacheTags, header }) => {
    let db: TestDatabase;
    let fake: FakeCdn;
    let app: INestApplication;

    beforeAll(async () => {
      fake = await start();
      db = await createTestDatabase();
      app = await boot(adapter, db, fake.options, cacheTags);
    });
    afterAll(async () => {
      await app?.close();
      await fake?.close();
      await db?.drop();
    });

    const purged = (tag: string) => fake.waitFor((cdn) => cdn.purgedAt(tag) !== undefined);

    it('tags the found page, and purges it when a captured delete removes the resource; the 410 carries the same tag', async () => {
      const posts = app.get<DataSource>(getDataSourceToken() as never).getRepository(Post);
      await posts.save({ tenant: 't1', slug: 'hello', title: 'Hello' });
      const found = await request(app.getHttpServer()).get('/cdn-posts/hello').expect(200);
      expect(found.headers[header]).toBe('post/hello');
      await posts.delete({ tenant: 't1', slug: 'hello' });
      await purged('post/hello');
      const gone = await request(app.getHttpServer()).get('/cdn-posts/hello').expect(410);
      expect(gone.headers[header]).toBe('post/hello');
    });

    it('purges the old key of a captured rename, and a restored key', async () => {
      const posts = app.get<DataSource>(getDataSourceToken() as never).getRepository(Post);
      const post = await posts.save({ tenant: 't1', slug: 'before', title: 'Renamed' });
      await posts.update({ id: post.id }, { slug: 'after' });
      await purged('post/before');
      const moved = await request(app.getHttpServer()).get('/cdn-posts/before').expect(301);
      expect(moved.headers[header]).toContain('post/before');
      await app.get(TombstoneService).recordDeletion('post', 'a key with spaces/and slash', { scope: 't1' });
      await purged(`post/${encodeURIComponent('a key with spaces/and slash')}`);
    });

    it("purges the keys that point at a changed key: a → c, then c deleted or restored changes a's answer too", async () => {
      const tombstones = app.get(TombstoneService);
      await tombstones.recordMove('post', 'ref-a', 'ref-c', { scope: 't1' });
      await purged('post/ref-a');
      for (const change of [() => tombstones.recordDeletion('post', 'ref-c', { scope: 't1' }), () => tombstones.restore('post', 'ref-c', { scope: 't1' })]) {
        const before = fake.purges.length;
        await change();
        await fake.waitFor((cdn) => cdn.purges.slice(before).some((purge) => purge.tags.includes('post/ref-a')));
        expect(fake.purges.slice(before).flatMap((purge) => purge.tags)).toContain('post/ref-c');
      }
      const gone = await request(app.getHttpServer()).get('/cdn-posts/ref-a').expect(301);
      expect(gone.headers[header]).toBe(header === 'cache-tag' ? 'post/ref-a,post/ref-c' : 'post/ref-a post/ref-c');
    });

    it('retries while the CDN is down and purges once it is back', async () => {
      fake.down();
      const calls = fake.calls.length;
      await app.get(TombstoneService).recordDeletion('post', 'while-down', { scope: 't1' });
      // Two attempts failed (the connection refused), and the delivery waits for the next.
      await eventually(async () => {
        const [row] = (await db.sql.query(
          `SELECT state, attempts, last_error FROM tombstone_event_deliveries WHERE resource_key = 'while-down'`,
        )) as { state: string; attempts: number; last_error: string | null }[];
        expect(row).toMatchObject({ state: 'pending', last_error: expect.any(String) });
        expect(row.attempts).toBeGreaterThanOrEqual(2);
      });
      expect(fake.calls.length).toBe(calls);
      fake.up();
      await purged('post/while-down');
    });
  });
});

describe('CDN purges need cache tags', () => {
  it('refuses to start with purge and cacheTags off', async () => {
    const db = await createTestDatabase();
    const fake = await startFakeHttpPurge();
    try {
      await expect(bootEventsApp(db, { purge: [fake.options] }, { module: { cacheTags: false } })).rejects.toThrow(/`purge` needs cache tags/);
    } finally {
      await fake.close();
      await db.drop();
    }
  });
});
