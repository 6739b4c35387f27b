import type { INestApplication } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import { TombstoneModule, TombstoneService } from '../src/index.js';
import {
  ItemsController,
  NumbersController,
  ScopedByFunctionController,
  TenantDocsController, InheritedItemsController, PresetHeadersController } from './fixtures/items.fixture.js';
import { ADAPTERS, bootApp, settled } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { QueryCounter } from './support/query-counter.js';
import { TombstoneHitCounter } from '../src/counters/tombstone.hits.js';

describe.each(ADAPTERS)('HTTP answers (%s)', (adapter) => {
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
        TombstoneModule.forRoot({ scope: { header: 'x-tenant-id' } }),
      ],
      controllers: [ItemsController, TenantDocsController, NumbersController, ScopedByFunctionController, InheritedItemsController, PresetHeadersController],
    });
    http = request(app.getHttpServer());
    tombstones = app.get(TombstoneService);
    await tombstones.recordDeletion('item', 'deleted', {
      reason: 'Retired',
      alternative: '/items/target',
      occurredAt: new Date('2025-09-01T00:00:00.000Z'),
    });
    await tombstones.recordDeletion('item', 'deleted-plain');
    await tombstones.recordHidden('item', 'hidden', { reason: 'secret reason', occurredAt: new Date('2020-01-01') });
    await tombstones.recordMove('item', 'moved', 'target');
    await tombstones.recordMove('item', 'temp', 'target', { permanent: false });
    await tombstones.recordMove('item', 'chain-1', 'chain-2');
    await tombstones.recordMove('item', 'chain-2', 'target');
    await tombstones.recordMove('item', 'to-hidden', 'hidden-later');
    await tombstones.recordHidden('item', 'hidden-later');
    await tombstones.recordDeletion('item', 'expired', { expiresAt: new Date(Date.now() - 1000) });
    await tombstones.recordDeletion('item', 'acme-deleted', { scope: 'acme', reason: 'acme only' });
    await tombstones.recordMove('item', 'acme-moved', 'target', { scope: 'acme' });
    await tombstones.recordDeletion('doc', 'd1', { scope: 'acme' });
    await tombstones.recordDeletion('doc', 'd2', { scope: 'tenant-a' });
    await tombstones.recordMerge('number', ['2', '3'], '1');
    // Their notifications have come back: none arrives in the middle of a test's count.
    await settled(app);
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  // Hit counts of earlier answers are written on a timer, which could land between a test's
  // counter.reset() and its count. Written now, nothing is pending: the next timer is armed
  // by a hit in the test itself, and fires long after it.
  beforeEach(() => app.get(TombstoneHitCounter).flush());

  describe('Vary and other list headers', () => {
    // The module's scope comes from x-tenant-id: every answer depends on it, unscoped ones too.
    it.each([
      ['an unknown key', '/items/never-was', {}, 404],
      ['an unscoped 410', '/items/deleted', {}, 410],
      ['an unscoped 301', '/items/moved', {}, 301],
      ["a tenant's 410", '/items/acme-deleted', { 'x-tenant-id': 'acme' }, 410],
      ['a hidden key', '/items/hidden', {}, 404],
    ])('%s varies on Accept and the scope header', async (_name, path, headers, status) => {
      const res = await http.get(path).set(headers).expect(status);
      expect(res.headers.vary).toBe('Accept, x-tenant-id');
    });

    it('a route whose scope is a function varies on Accept only (what the function reads is unknown)', async () => {
      const res = await http.get('/scoped/d2').set('x-user', 'alice').expect(410);
      expect(res.headers.vary).toBe('Accept');
    });

    it('appends to a Vary and a Link the app set already, as one header each, without repeating', async () => {
      await tombstones.recordDeletion('item', 'preset-gone', { alternative: '/items/target' });
      const res = await http.get('/preset/preset-gone').expect(410);
      expect(res.headers.vary).toBe('Origin, Accept, x-tenant-id');
      expect(res.headers.link).toBe('</style.css>; rel="preload"; as="style", </items/target>; rel="alternate"');
      const unknown = await http.get('/preset/never-was').expect(404);
      expect(unknown.headers.vary).toBe('Origin, Accept, x-tenant-id');
      expect(unknown.headers.link).toBe('</style.css>; rel="preload"; as="style"');
    });
  });

  describe('ETag and nosniff', () => {
    // The body holds the request id: an ETag of it would change on every request, and conditional
    // requests are evaluated only for 2xx answers anyway (RFC 9110 §13.2.1).
    it.each([
      ['404', '/items/never-was', 404],
      ['410', '/items/deleted', 410],
      ['301', '/items/moved', 301],
    ])('a %s has no ETag and is never sniffed, for GET and HEAD', async (_name, path, status) => {
      for (const method of ['get', 'head'] as const) {
        const res = await http[method](path).expect(status);
        expect(res.headers.etag).toBeUndefined();
        expect(res.headers['x-content-type-options']).toBe('nosniff');
      }
    });

    it('HEAD answers the headers of GET, Content-Length included, without a body', async () => {
      const get = await http.get('/items/deleted').set('x-request-id', 'same').expect(410);
      const head = await http.head('/items/deleted').set('x-request-id', 'same').expect(410);
      expect(head.text ?? '').toBe('');
      const { date: _d, ...getHeaders } = get.headers;
      const { date: _h, ...headHeaders } = head.headers;
      expect(headHeaders).toEqual(getHeaders);
    });
  });

  describe('the handler found its resource', () => {
    it('a controller-level @Tombstoned covers routes the controller inherits', async () => {
      const res = await http.get('/inherited/deleted').expect(410);
      expect(res.body).toMatchObject({ error: 'gone', id: 'deleted' });
      await http.get('/inherited/never-was').expect(404);
    });

    it('passes the value through and runs no query', async () => {
      counter.reset();
      const res = await http.get('/items/live').expect(200);
      expect(res.body).toEqual({ key: 'live', name: 'A live item' });
      expect(res.headers['x-request-id']).toBeUndefined();
      expect(counter.tombstoneQueries).toBe(0);
    });

    it('keeps an empty collection a 200 []', async () => {
      counter.reset();
      await http.get('/items').expect(200, []);
      expect(counter.tombstoneQueries).toBe(0);
    });

    it('keeps a pipe’s 400 and runs no query', async () => {
      counter.reset();
      await http.get('/numbers/abc').expect(400);
      expect(counter.tombstoneQueries).toBe(0);
    });

    it('leaves a 204 handler that returns nothing alone', async () => {
      await http.delete('/items/anything').expect(204);
    });

    it('leaves other errors alone', async () => {
      await http.get('/items/x/fails').expect(500);
    });
  });

  describe('404: never existed, expired, hidden', () => {
    it('answers a structured 404 for a key that never existed, from the filter: no query', async () => {
      counter.reset();
      const res = await http.get('/items/never').expect(404);
      expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
      expect(res.headers['cache-control']).toBe('no-store');
      expect(res.headers.vary).toBe('Accept, x-tenant-id'); // the module's scope comes from that header
      expect(res.body).toEqual({
        error: 'not_found',
        message: "Item 'never' was not found",
        resource: 'item',
        id: 'never',
        path: '/items/never',
        requestId: res.headers['x-request-id'],
      });
      expect(counter.tombstoneQueries).toBe(0);
    });

    it.each(['/items/never/throws', '/items/never/entity', '/items/never/undefined'])(
      'answers for %s (NotFoundException, EntityNotFoundError, undefined)',
      async (path) => {
        const res = await http.get(path).expect(404);
        expect(res.body.error).toBe('not_found');
        expect(res.body.id).toBe('never');
      },
    );

    it('treats an expired tombstone as never existed', async () => {
      const res = await http.get('/items/expired').expect(404);
      expect(res.body.error).toBe('not_found');
    });

    it.each([
      ['hidden', '/items/hidden'],
      ['moved to a key that is hidden now', '/items/to-hidden'],
      ["another tenant's deletion", '/items/acme-deleted'],
      ["another tenant's move", '/items/acme-moved'],
    ])('makes %s indistinguishable from never existed', async (_, path) => {
      const id = path.split('/').pop() as string;
      const answer = await http.get(path).set('X-Request-Id', 'fixed-id').set('X-Tenant-Id', 'globex');
      const never = await http.get('/items/never').set('X-Request-Id', 'fixed-id').set('X-Tenant-Id', 'globex');
      expect(answer.status).toBe(404);
      expect(answer.text.split(id).join('KEY')).toBe(never.text.split('never').join('KEY'));
      const headers = (h: Record<string, string>) => {
        const { date: _d, etag: _e, 'content-length': _l, ...rest } = h;
        return rest;
      };
      expect(headers(answer.headers)).toEqual(headers(never.headers));
      expect(answer.text).not.toMatch(/secret|reason|deletedAt|2020/);
    });
  });

  describe('410 Gone', () => {
    it('answers with deletedAt, reason, alternative, a Link and a cacheable Cache-Control', async () => {
      const res = await http.get('/items/deleted').expect(410);
      expect(res.body).toEqual({
        error: 'gone',
        message: "Item 'deleted' was permanently deleted",
        resource: 'item',
        id: 'deleted',
        deletedAt: '2025-09-01T00:00:00.000Z',
        reason: 'Retired',
        alternative: '/items/target',
        path: '/items/deleted',
        requestId: res.headers['x-request-id'],
      });
      expect(res.headers.link).toBe('</items/target>; rel="alternate"');
      expect(res.headers['cache-control']).toBe('max-age=86400');
    });

    it('sends no Link without an alternative', async () => {
      const res = await http.get('/items/deleted-plain').expect(410);
      expect(res.headers.link).toBeUndefined();
      expect(res.body.alternative).toBeNull();
      expect(res.body.reason).toBeNull();
    });

    it('answers 410 to the tenant that owns the tombstone, privately cacheable', async () => {
      const res = await http.get('/items/acme-deleted').set('X-Tenant-Id', 'acme').expect(410);
      expect(res.body.reason).toBe('acme only');
      expect(res.headers['cache-control']).toBe('private, max-age=86400');
    });

    it('answers HEAD like GET, without a body', async () => {
      const res = await http.head('/items/deleted').expect(410);
      expect(res.text ?? '').toBe('');
      expect(res.headers.link).toBe('</items/target>; rel="alternate"');
    });
  });

  describe('redirects', () => {
    it('301 for GET, to the same route with the new key, query string kept', async () => {
      const res = await http.get('/items/moved?x=1&y=%C3%A9').expect(301);
      expect(res.headers.location).toBe('/items/target?x=1&y=%C3%A9');
      expect(res.headers['cache-control']).toBe('max-age=86400');
      expect(res.body).toMatchObject({ error: 'moved', location: '/items/target?x=1&y=%C3%A9', movedTo: 'target', id: 'moved' });
    });

    it('keeps the rest of the route: /items/:key/throws redirects to /items/target/throws', async () => {
      const res = await http.get('/items/moved/throws').expect(301);
      expect(res.headers.location).toBe('/items/target/throws');
    });

    it('301 for HEAD, without a body', async () => {
      const res = await http.head('/items/moved').expect(301);
      expect(res.headers.location).toBe('/items/target');
      expect(res.text ?? '').toBe('');
    });

    it.each([
      ['post', 308],
      ['put', 308],
      ['patch', 308],
    ] as const)('%s → %i (the method is kept)', async (method, status) => {
      const res = await http[method]('/items/moved').send({ a: 1 }).expect(status);
      expect(res.headers.location).toBe('/items/target');
    });

    it('302 / 307 when the move is not permanent, never cached', async () => {
      const get = await http.get('/items/temp').expect(302);
      expect(get.headers.location).toBe('/items/target');
      expect(get.headers['cache-control']).toBe('no-store');
      await http.post('/items/temp').expect(307);
    });

    it('follows a chain in one hop and one query', async () => {
      counter.reset();
      const res = await http.get('/items/chain-1').expect(301);
      expect(res.headers.location).toBe('/items/target');
      expect(counter.tombstoneQueries).toBe(1);
    });

    it('redirects a merged key', async () => {
      const res = await http.get('/numbers/3').expect(301);
      expect(res.headers.location).toBe('/numbers/1');
      await http.get('/numbers/1').expect(200);
    });

    it('redirects within the tenant that owns the move', async () => {
      const res = await http.get('/items/acme-moved').set('X-Tenant-Id', 'acme').expect(301);
      expect(res.headers.location).toBe('/items/target');
    });
  });

  describe('scope sources', () => {
    it('reads the scope from a route param', async () => {
      await http.get('/tenants/acme/docs/d1').expect(410);
      await http.get('/tenants/globex/docs/d1').expect(404);
    });

    it('reads the scope from a function of the request', async () => {
      await http.get('/scoped/d2').set('X-User', 'alice').expect(410);
      await http.get('/scoped/d2').set('X-User', 'bob').expect(404);
    });
  });

  describe('problem details (RFC 9457)', () => {
    it('answers application/problem+json when the client asks for it', async () => {
      const res = await http.get('/items/deleted').set('Accept', 'application/problem+json').expect(410);
      expect(res.headers['content-type']).toBe('application/problem+json; charset=utf-8');
      const body = JSON.parse(res.text);
      expect(body).toMatchObject({
        type: 'tag:nestjs-tombstones,2026:gone',
        title: 'Gone',
        status: 410,
        detail: "Item 'deleted' was permanently deleted",
        instance: '/items/deleted',
        deletedAt: '2025-09-01T00:00:00.000Z',
        reason: 'Retired',
        alternative: '/items/target',
      });
    });

    it('prefers JSON when the client prefers it', async () => {
      const res = await http
        .get('/items/never')
        .set('Accept', 'application/json, application/problem+json;q=0.5')
        .expect(404);
      expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
    });
  });

  describe('request ids', () => {
    it('echoes a sane client id', async () => {
      const res = await http.get('/items/never').set('X-Request-Id', 'req_5bb104').expect(404);
      expect(res.headers['x-request-id']).toBe('req_5bb104');
      expect(res.body.requestId).toBe('req_5bb104');
    });

    it('replaces an insane one with a generated id', async () => {
      const res = await http.get('/items/never').set('X-Request-Id', 'a b <script>').expect(404);
      expect(res.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    });
  });
});
