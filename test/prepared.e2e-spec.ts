import type { INestApplication } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import { type TombstoneAnswer, TombstoneModule, type TombstoneModuleOptions, TombstoneRenderer, TombstoneService } from '../src/index.js';
import { type RenderedAnswer } from '../src/tombstone.renderer.js';
import { ItemsController, PresetHeadersController } from './fixtures/items.fixture.js';
import { ADAPTERS, bootApp, settled } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

/**
 * Renders as the default renderer does, but is a renderer of its own: its answers are made for
 * each request (the module keeps answers ready only for the default renderer's JSON), so an app
 * with it answers the long way.
 */
class EachTime extends TombstoneRenderer {
  override render(answer: TombstoneAnswer, format: 'json' | 'problem'): RenderedAnswer {
    return super.render(answer, format);
  }
}

/** A response as bytes: status, every header but Date in the order sent, and the body. */
function bytes(res: request.Response): string {
  const headers = Object.entries(res.headers).filter(([name]) => name !== 'date');
  return `${res.status}\n${headers.map(([name, value]) => `${name}: ${String(value)}`).join('\n')}\n\n${res.text ?? ''}`;
}

// Prepared answers (TombstonePreparedAnswers): a miss answered from memory is written from bytes
// made once. Every such answer must be the bytes the long way makes, whatever the key, method,
// scope, query string or headers the app set, the first time and every time after.
describe.each(ADAPTERS)('prepared answers are the answers (%s)', (adapter) => {
  describe.each([
    ['JSON', {}],
    ['problem details always', { problemDetails: 'always' }],
  ] as const)('%s', (_, options: TombstoneModuleOptions) => {
    let db: TestDatabase;
    let prepared: INestApplication;
    let eachTime: INestApplication;

    beforeAll(async () => {
      db = await createTestDatabase();
      const boot = (renderer?: typeof TombstoneRenderer) =>
        bootApp(adapter, {
          imports: [TypeOrmModule.forRoot(db.options()), TombstoneModule.forRoot({ scope: { header: 'x-tenant-id' }, ...options, ...(renderer ? { renderer } : {}) })],
          controllers: [ItemsController, PresetHeadersController],
        });
      prepared = await boot();
      eachTime = await boot(EachTime);
      const tombstones = prepared.get(TombstoneService);
      await tombstones.recordDeletion('item', 'deleted', { reason: 'Retired "for good"\n', alternative: '/items/target', occurredAt: new Date('2025-09-01T00:00:00.000Z') });
      await tombstones.recordDeletion('item', 'deleted-plain');
      await tombstones.recordDeletion('item', 'café "quoted" \\ 😀', { reason: 'Unicode' });
      await tombstones.recordHidden('item', 'hidden');
      await tombstones.recordMove('item', 'moved', 'target');
      await tombstones.recordMove('item', 'moved-away', 'a b/c?d');
      await tombstones.recordMerge('item', ['merged'], 'target');
      await tombstones.recordDeletion('item', 'deleted', { scope: 'acme', reason: 'Tenant retired it' });
      await tombstones.recordDeletion('item', '1');
      await tombstones.recordDeletion('item', '2');
      // Both apps have heard of every write: what follows is answered from memory.
      for (const app of [prepared, eachTime]) await settled(app);
    });

    afterAll(async () => {
      await prepared?.close();
      await eachTime?.close();
      await db?.drop();
    });

    const keys = ['deleted', 'deleted-plain', 'café "quoted" \\ 😀', 'hidden', 'moved', 'moved-away', 'merged', 'never', 'quo"te\\\t', 'x'.repeat(201), 'a/b'];
    const paths = [
      ...keys.map((key) => `/items/${encodeURIComponent(key)}`),
      '/items/deleted?utm_source=a%20b&x=%22',
      '/items/moved?page=2&q=caf%C3%A9',
      `/items/moved?${'long='.repeat(120)}`,
      '/items/never?q=1',
      '/items/%E2%80%AEreversed',
      '/preset/deleted',
      '/preset/never',
    ];
    const methods = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH'] as const;
    const variants: Record<string, string>[] = [{}, { 'x-tenant-id': 'acme' }, { accept: '*/*' }, { accept: 'application/json' }, { accept: 'application/problem+json' }];
    const cases = paths.flatMap((path) => methods.flatMap((method) => variants.map((headers) => ({ path, method, headers }))));

    it(`answers ${cases.length} requests as the long way does, the first time and again`, async () => {
      const send = (app: INestApplication, path: string, method: string, headers: Record<string, string>, id: string) => {
        const agent = request(app.getHttpServer());
        let req = method === 'HEAD' ? agent.head(path) : method === 'POST' ? agent.post(path) : method === 'PUT' ? agent.put(path) : method === 'PATCH' ? agent.patch(path) : agent.get(path);
        for (const [name, value] of Object.entries({ ...headers, 'x-request-id': id })) req = req.set(name, value);
        return req;
      };
      let n = 0;
      const statuses = new Set<number>();
      for (const { path, method, headers } of cases) {
        // Some routes answer only GET (the preset ones): their 404s are Nest's, the same from both apps.
        const id = `req-${++n}`;
        const expected = bytes(await send(eachTime, path, method, headers, id));
        const first = bytes(await send(prepared, path, method, headers, id));
        const again = bytes(await send(prepared, path, method, headers, id));
        expect({ path, method, headers, answer: first }).toEqual({ path, method, headers, answer: expected });
        expect({ path, method, headers, answer: again }).toEqual({ path, method, headers, answer: expected });
        statuses.add(Number(expected.split('\n')[0]));
      }
      // Every kind of answer was compared (Fastify refuses the longest keys itself: 414).
      expect([...statuses]).toEqual(expect.arrayContaining([301, 308, 404, 410]));
    });

    it('answers what a change made at once, on the instance that made it', async () => {
      const tombstones = prepared.get(TombstoneService);
      const get = (key: string) => request(prepared.getHttpServer()).get(`/items/${key}`).set('x-request-id', 'req-x');
      expect((await get('1')).status).toBe(410);
      expect((await get('1')).status).toBe(410);
      await tombstones.recordMove('item', '1', 'target');
      const moved = await get('1');
      expect([moved.status, moved.headers.location]).toEqual([301, '/items/target']);
      await tombstones.restore('item', '1');
      expect((await get('1')).status).toBe(404);
      // Hidden now: the 404 of a key that never existed (one of the same length: Content-Length).
      await tombstones.recordHidden('item', '2');
      expect(bytes(await get('2'))).toBe(bytes(await get('9')).split('9').join('2'));
    });
  });
});
