import { Agent } from 'node:http';
import { jest } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import { RouterModule } from '@nestjs/core';
import request from 'supertest';
import type { DataSource, Repository } from 'typeorm';
import { TombstoneAdminModule } from '../src/admin/index.js';
import { TombstoneFences } from '../src/cache/tombstone.fences.js';
import { TombstoneLookup } from '../src/cache/tombstone.lookup.js';
import { TombstoneCacheStore, TombstoneNotifications, TombstoneService } from '../src/index.js';
import { ADMIN_TOKEN, ArticlesController, TokenGuard } from './fixtures/admin.fixture.js';
import { bootCaptureApp, Note, Post } from './fixtures/capture.fixture.js';
import { ADAPTERS } from './support/app.js';
import { eventually } from './support/eventually.js';

/**
 * Rows per adapter, each taken through four captured writes (rename, soft delete, restore,
 * delete): `READ_YOUR_WRITES_ROWS`, 50 by default (what `npm test` runs: 200 writes per adapter);
 * `npm run test:read-your-writes` runs 250 (1,000 writes per adapter).
 */
const ROWS = Number(process.env.READ_YOUR_WRITES_ROWS ?? 50);
if (!(Number.isInteger(ROWS) && ROWS > 0)) throw new Error(`READ_YOUR_WRITES_ROWS must be a positive integer, not ${process.env.READ_YOUR_WRITES_ROWS}.`);
/** Keys taken through the recording API and the admin endpoints, per adapter. */
const RECORDED = Math.ceil(ROWS / 5);

/** The ways a write reaches a tracked table through TypeORM: each row takes one of them. */
const PATHS = ['repository', 'manager', 'query builder', 'transaction'] as const;
type WritePath = (typeof PATHS)[number];
type Operation = 'rename' | 'soft delete' | 'restore' | 'delete';

/**
 * What the issue measured (a stale 404 now and then right after a captured write): every write
 * through TypeORM is followed at once by requests to the same app, which must answer what the
 * write did. No settle(), no waiting between the write and the request; the cache is listening,
 * its filter loaded, and the answers the write changes are in its store beforehand.
 */
describe.each(ADAPTERS)('read-your-writes on the writing instance (%s)', (adapter) => {
  let app: INestApplication;
  let close: () => Promise<void>;
  let url: string;
  /** Requests go over kept-alive connections, as a browser's would: the next one follows the write at once. */
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  let data: DataSource;
  let posts: Repository<Post>;
  let service: TombstoneService;
  let lookup: TombstoneLookup;
  let store: TombstoneCacheStore;
  let fences: TombstoneFences;
  let notifications: TombstoneNotifications;
  const tenant = `ryw-${adapter}`;

  beforeAll(async () => {
    ({ app, close } = await bootCaptureApp(adapter, {
      imports: [TombstoneAdminModule.forRoot({ guard: TokenGuard }), RouterModule.register([{ path: 'admin', module: TombstoneAdminModule }])],
      controllers: [ArticlesController],
    }));
    await app.listen(0, '127.0.0.1');
    url = await app.getUrl();
    service = app.get(TombstoneService);
    data = service.dataSource;
    posts = data.getRepository(Post);
    lookup = app.get(TombstoneLookup, { strict: false });
    store = app.get(TombstoneCacheStore, { strict: false });
    fences = app.get(TombstoneFences, { strict: false });
    notifications = app.get(TombstoneNotifications, { strict: false });
  });

  afterAll(async () => {
    agent.destroy();
    await close?.();
  });

  /** The cache is in use: listening for changes, its filter loaded. */
  const expectTrusted = () => expect(lookup.stats()).toMatchObject({ state: 'coherent', filter: { ready: true } });

  /** Answers that were not what the write just made them: collected, so that a failure counts them all. */
  const stale: string[] = [];
  const answered = async (what: string, path: string, status: number, location?: string) => {
    const res = await request(url).get(path).agent(agent);
    const got = `${res.status}${res.status === 301 ? ` ${res.headers.location}` : ''}`;
    const wanted = `${status}${location === undefined ? '' : ` ${location}`}`;
    if (got !== wanted) stale.push(`${what}: GET ${path} answered ${got}, not ${wanted}`);
  };
  const expectNoneStale = () => expect({ stale: stale.length, first: stale.slice(0, 10) }).toEqual({ stale: 0, first: [] });
  beforeEach(() => {
    stale.length = 0;
  });

  describe('captured writes', () => {
    const a = (i: number) => `/posts/${tenant}/a-${i}`;
    const b = (i: number) => `/posts/${tenant}/b-${i}`;
    const ids: number[] = [];

    const write: Record<Operation, Record<WritePath, (id: number, i: number) => Promise<unknown>>> = {
      rename: {
        repository: async (id, i) => posts.save({ ...(await posts.findOneByOrFail({ id })), slug: `b-${i}` }),
        manager: (id, i) => data.manager.update(Post, { id }, { slug: `b-${i}` }),
        'query builder': (id, i) => data.createQueryBuilder().update(Post).set({ slug: `b-${i}` }).where('id = :id', { id }).execute(),
        transaction: (id, i) => data.transaction((manager) => manager.update(Post, { id }, { slug: `b-${i}` })),
      },
      'soft delete': {
        repository: async (id) => posts.softRemove(await posts.findOneByOrFail({ id })),
        manager: (id) => data.manager.softDelete(Post, { id }),
        'query builder': (id) => data.createQueryBuilder().softDelete().from(Post).where('id = :id', { id }).execute(),
        transaction: (id) => data.transaction((manager) => manager.softDelete(Post, { id })),
      },
      restore: {
        repository: async (id) => posts.recover(await posts.findOneOrFail({ where: { id }, withDeleted: true })),
        manager: (id) => data.manager.restore(Post, { id }),
        'query builder': (id) => data.createQueryBuilder().restore().from(Post).where('id = :id', { id }).execute(),
        transaction: (id) => data.transaction((manager) => manager.restore(Post, { id })),
      },
      delete: {
        repository: async (id) => posts.remove(await posts.findOneByOrFail({ id })),
        manager: (id) => data.manager.delete(Post, { id }),
        'query builder': (id) => data.createQueryBuilder().delete().from(Post).where('id = :id', { id }).execute(),
        transaction: (id) => data.transaction((manager) => manager.delete(Post, { id })),
      },
    };

    /** Each row in turn: the write, then at once the requests and what they must answer. */
    const round = async (operation: Operation, answers: (i: number) => [path: string, status: number, location?: string][]) => {
      for (let i = 0; i < ROWS; i++) {
        const path = PATHS[i % PATHS.length];
        await write[operation][path](ids[i], i);
        // The key whose stale answer would come from the filter first on even rows, from the store on odd ones.
        const checks = answers(i);
        if (i % 2 === 1) checks.reverse();
        for (const [url, status, location] of checks) await answered(`${operation} (${path}) of row ${i}`, url, status, location);
      }
    };

    /**
     * Makes the store hold the answer of every row's first key, as it is now: a write's stale
     * answer would then come from memory. Asked again until it holds them all (a lookup made
     * while the cache may not yet know of a write is not kept).
     */
    const warm = async (status: number, location?: (i: number) => string) => {
      for (let i = 0; i < ROWS; i++) await answered('before the writes', a(i), status, location?.(i));
      await eventually(async () => {
        const missing = ids.flatMap((_, i) => (store.get(`${tenant}\u0000post\u0000a-${i}`) === undefined ? [i] : []));
        for (const i of missing) await answered('before the writes', a(i), status, location?.(i));
        expect(missing).toEqual([]);
      });
      expectTrusted();
    };

    beforeAll(async () => {
      const saved = await posts.save(Array.from({ length: ROWS }, (_, i) => posts.create({ tenant, slug: `a-${i}`, title: `Post ${i}` })));
      ids.push(...saved.map((post) => post.id));
      await lookup.loaded();
    });

    it(`${ROWS} renames: the old key redirects at once (it was unknown to the filter)`, async () => {
      expectTrusted();
      await round('rename', (i) => [
        [a(i), 301, b(i)],
        [b(i), 200],
      ]);
      expectNoneStale();
      expectTrusted();
    });

    it(`${ROWS} soft deletes: the old key's redirect (in the store) is a 404 at once`, async () => {
      await warm(301, b);
      await round('soft delete', (i) => [
        [a(i), 404],
        [b(i), 404],
      ]);
      expectNoneStale();
      expectTrusted();
    });

    it(`${ROWS} restores: the old key's 404 (in the store) redirects again at once`, async () => {
      await warm(404);
      await round('restore', (i) => [
        [a(i), 301, b(i)],
        [b(i), 200],
      ]);
      expectNoneStale();
      expectTrusted();
    });

    it(`${ROWS} deletes: both keys are 410 at once (the new key unknown to the filter, the old one's redirect in the store)`, async () => {
      await warm(301, b);
      await round('delete', (i) => [
        [b(i), 410],
        [a(i), 410],
      ]);
      expectNoneStale();
      expectTrusted();
    });
  });

  it(`${RECORDED} keys through the recording API and the admin endpoints: each write answered at once`, async () => {
    const http = request(url);
    const admin = (req: request.Test) => req.agent(agent).set('authorization', ADMIN_TOKEN);
    expectTrusted();
    for (let i = 0; i < RECORDED; i++) {
      const key = `rec-${i}`;
      const path = `/articles/${key}`;
      await answered('before', path, 404);
      await service.recordDeletion('article', key);
      await answered('recordDeletion()', path, 410);
      await service.recordMove('article', key, `${key}-new`);
      await answered('recordMove()', path, 301, `/articles/${key}-new`);
      await service.restore('article', key);
      await answered('restore()', path, 404);
      const created = await admin(http.post('/admin/tombstones')).send({ type: 'article', key, kind: 'deleted' }).expect(201);
      await answered('admin create', path, 410);
      await admin(http.patch(`/admin/tombstones/${created.body.id}`)).send({ kind: 'moved', target: `${key}-new` }).expect(200);
      await answered('admin update', path, 301, `/articles/${key}-new`);
      await admin(http.delete(`/admin/tombstones/${created.body.id}`)).expect(204);
      await answered('admin delete', path, 404);
      await admin(http.post('/admin/tombstones/import'))
        .set('content-type', 'application/x-ndjson')
        .send(JSON.stringify({ type: 'article', key, kind: 'deleted' }))
        .expect(200);
      await answered('admin import', path, 410);
    }
    expectNoneStale();
    expectTrusted();
  });
  /**
   * The race at its worst: the instance hears nothing (its notifications are held back, then
   * handed over in order), so only what it knows of its own writes can keep its answers right.
   */
  describe('while the notifications have not arrived', () => {
    type Receiver = { received(message: unknown): void };
    let held: unknown[] = [];
    let holding: ReturnType<typeof jest.spyOn> | undefined;
    const hold = () => {
      held = [];
      holding = jest.spyOn(notifications as unknown as Receiver, 'received').mockImplementation((message) => void held.push(message));
    };
    const release = () => {
      holding?.mockRestore();
      holding = undefined;
      for (const message of held) (notifications as unknown as Receiver).received(message);
    };
    afterEach(release);
    /** Every write of this instance heard: what the cache knows is all there is. */
    const quiet = () => eventually(() => expect(['post', 'post-id', 'note'].filter((type) => fences.unsure(type))).toEqual([]));

    it('a delete the database cascades to a tracked table: its rows answer 410 at once, from memory again once heard', async () => {
      await quiet();
      const [post] = await posts.save([posts.create({ tenant, slug: 'cascade', title: '' })]);
      const notes = await data.getRepository(Note).save([{ postId: post.id }, { postId: post.id }]);
      for (const note of notes) await answered('before', `/notes/${note.id}`, 200);
      hold();
      await data.manager.delete(Post, { id: post.id }); // ON DELETE CASCADE: the notes go too
      for (const note of notes) await answered('cascaded delete', `/notes/${note.id}`, 410);
      await answered('cascaded delete', `/posts/${tenant}/cascade`, 410);
      expect(held.length).toBeGreaterThan(0);
      release();
      await quiet();
      const before = lookup.stats().cached;
      for (let i = 0; i < 2; i++) for (const note of notes) await answered('heard', `/notes/${note.id}`, 410);
      expect(lookup.stats().cached - before).toBeGreaterThanOrEqual(notes.length);
      expectNoneStale();
      expectTrusted();
    });

    it('an admin import: the keys it writes answer at once, stored answers and filter alike', async () => {
      const http = request(url);
      const cached = '/articles/import-cached';
      const unknown = '/articles/import-unknown';
      // A 410 the store holds, and a key the filter does not know: either could answer stale.
      await service.recordDeletion('article', 'import-cached');
      // Its own notification heard, so that it cannot drop the answer stored next.
      await eventually(() => expect(fences.unsure('article')).toBe(false));
      // Until the store answers it: a notification of an earlier write that arrives while the
      // first lookup reads the database keeps that answer out of the store (it may be stale).
      await eventually(async () => {
        const before = lookup.stats().cached;
        await answered('before', cached, 410);
        expect(lookup.stats().cached).toBeGreaterThan(before);
      });
      await answered('before', unknown, 404);
      hold();
      await http
        .post('/admin/tombstones/import')
        .agent(agent)
        .set('authorization', ADMIN_TOKEN)
        .set('content-type', 'application/x-ndjson')
        .send(
          [
            { type: 'article', key: 'import-cached', kind: 'moved', target: 'import-target' },
            { type: 'article', key: 'import-unknown', kind: 'deleted' },
          ]
            .map((row) => JSON.stringify(row))
            .join('\n'),
        )
        .expect(200);
      await answered('admin import', cached, 301, '/articles/import-target');
      await answered('admin import', unknown, 410);
      release();
      expectNoneStale();
    });

    it('an update that changes no key, a rolled-back write and a savepoint leave the cache in use; the commit does not', async () => {
      await quiet();
      const [post] = await posts.save([posts.create({ tenant, slug: 'quiet', title: '' })]);
      await quiet();
      hold();
      await data.manager.update(Post, { id: post.id }, { title: 'Retitled' });
      await posts.save({ ...post, title: 'Retitled again' });
      expect(fences.unsure('post')).toBe(false);
      await expect(
        data.transaction(async (manager) => {
          await manager.update(Post, { id: post.id }, { slug: 'never' });
          throw new Error('rolled back');
        }),
      ).rejects.toThrow('rolled back');
      expect(fences.unsure('post')).toBe(false);
      await data.transaction(async (manager) => {
        await manager.transaction((inner) => inner.update(Post, { id: post.id }, { slug: 'quiet-2' }));
        expect(fences.unsure('post')).toBe(false); // a savepoint released: nothing committed yet
      });
      expect(fences.unsure('post')).toBe(true);
      expect(fences.unsure('note')).toBe(false);
      await answered('rename in a nested transaction', `/posts/${tenant}/quiet`, 301, `/posts/${tenant}/quiet-2`);
      release();
      await quiet();
      expectNoneStale();
    });
  });
});
