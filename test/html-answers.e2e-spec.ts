import type { INestApplication } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import { type TombstoneAnswer, TombstoneModule, type TombstoneModuleOptions, TombstoneRenderer, TombstoneService } from '../src/index.js';
import { ItemsController } from './fixtures/items.fixture.js';
import { ADAPTERS, bootApp, settled } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { QueryCounter } from './support/query-counter.js';

/** What Chromium sends for a page it navigates to. */
const BROWSER = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7';
const HTML = 'text/html; charset=utf-8';
const CSP = /^default-src 'none'; style-src 'sha256-[A-Za-z0-9+/]{43}='; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'$/;

const HOSTILE_KEY = '<script>alert(1)</script>';
const HOSTILE_REASON = '<img src=x onerror=alert(2)><script>alert(3)</script>"\'&';

describe.each(ADAPTERS)('HTML answers for browsers (%s)', (adapter) => {
  let db: TestDatabase;
  const apps: INestApplication[] = [];
  const counter = new QueryCounter();

  /** An app on the shared database, with these module options. */
  const boot = async (options: TombstoneModuleOptions = {}) => {
    const app = await bootApp(adapter, {
      imports: [TypeOrmModule.forRoot({ ...db.options(), logging: true, logger: counter }), TombstoneModule.forRoot({ scope: { header: 'x-tenant-id' }, ...options })],
      controllers: [ItemsController],
    });
    apps.push(app);
    return request(app.getHttpServer());
  };

  let http: ReturnType<typeof request>;

  beforeAll(async () => {
    db = await createTestDatabase();
    http = await boot();
    const tombstones = apps[0].get(TombstoneService);
    await tombstones.recordDeletion('item', 'deleted', { reason: 'Retired in the spring clean', alternative: '/items/target', occurredAt: new Date('2025-09-01T08:30:00.000Z') });
    await tombstones.recordDeletion('item', 'hostile', { reason: HOSTILE_REASON });
    await tombstones.recordHidden('item', 'hidden', { reason: 'secret reason' });
    await tombstones.recordMove('item', 'moved', 'target');
    await tombstones.recordDeletion('item', 'acme-deleted', { scope: 'acme', reason: 'acme only' });
    // What the service refuses, written straight into the table (by SQL, another tool, an old
    // version): the page must still make no link of it.
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind, alternative) VALUES ('item', 'js-alternative', 'deleted', 'javascript:alert(4)'), ('item', 'data-alternative', 'deleted', 'data:text/html,<script>alert(5)</script>'), ('item', 'quote-alternative', 'deleted', '/x" onmouseover="alert(6)')`);
    await settled(apps[0]);
  });

  afterAll(async () => {
    for (const app of apps) await app.close();
    await db?.drop();
  });

  it('a 410: the same status and headers, an HTML page with the reason, the time and a link to the alternative', async () => {
    const res = await http.get('/items/deleted').set('Accept', BROWSER).set('x-request-id', 'req-410').expect(410);
    expect(res.headers['content-type']).toBe(HTML);
    expect(res.headers['content-security-policy']).toMatch(CSP);
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers.vary).toBe('Accept, x-tenant-id');
    expect(res.headers['cache-control']).toBe('max-age=86400');
    expect(res.headers.link).toBe('</items/target>; rel="alternate"');
    expect(res.headers['x-request-id']).toBe('req-410');
    expect(res.headers.etag).toBeUndefined();
    expect(res.headers['content-length']).toBe(String(Buffer.byteLength(res.text)));
    expect(res.text).toMatch(/^<!doctype html><html lang="en">/);
    expect(res.text).toContain('<title>410 Gone</title>');
    expect(res.text).toContain('<h1>Item &#39;deleted&#39; was permanently deleted</h1>');
    expect(res.text).toContain('<time datetime="2025-09-01T08:30:00.000Z">September 1, 2025 at 8:30 AM UTC</time>');
    expect(res.text).toContain('<dd>Retired in the spring clean</dd>');
    expect(res.text).toContain('<a href="/items/target">/items/target</a>');
    expect(res.text).toContain('<code>req-410</code>');
  });

  it('a 404: the page of a key that never existed, never a 200', async () => {
    const res = await http.get('/items/never-was').set('Accept', BROWSER).expect(404);
    expect(res.headers['content-type']).toBe(HTML);
    expect(res.headers['content-security-policy']).toMatch(CSP);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.text).toContain('<title>404 Not Found</title>');
    expect(res.text).toContain('<h1>Item &#39;never-was&#39; was not found</h1>');
  });

  it('a redirect stays a redirect, with a short page that links to the new address', async () => {
    const res = await http.get('/items/moved').set('Accept', BROWSER).expect(301);
    expect(res.headers.location).toBe('/items/target');
    expect(res.headers['content-type']).toBe(HTML);
    expect(res.headers['content-security-policy']).toMatch(CSP);
    expect(res.text).toContain('<a href="/items/target">/items/target</a>');
  });

  it("a hidden key and another tenant's key get the page of a key that never existed", async () => {
    const page = async (key: string, tenant?: string) => {
      const req = http.get(`/items/${key}`).set('Accept', BROWSER).set('x-request-id', 'same');
      const res = await (tenant ? req.set('x-tenant-id', tenant) : req).expect(404);
      const { date: _date, ...headers } = res.headers;
      return { headers, body: res.text.split(key).join('KEY') };
    };
    expect(await page('hidden')).toEqual(await page('nevers'));
    expect(await page('acme-deleted', 'globex')).toEqual(await page('never-there-', 'globex'));
    expect((await page('hidden')).body).not.toContain('secret');
    // The owner gets the truth.
    const owner = await http.get('/items/acme-deleted').set('Accept', BROWSER).set('x-tenant-id', 'acme').expect(410);
    expect(owner.text).toContain('<dd>acme only</dd>');
  });

  it('HEAD: the headers of GET, Content-Length included, without a body', async () => {
    for (const [path, status] of [['/items/deleted', 410], ['/items/never-was', 404], ['/items/moved', 301]] as const) {
      const get = await http.get(path).set('Accept', BROWSER).set('x-request-id', 'same').expect(status);
      const head = await http.head(path).set('Accept', BROWSER).set('x-request-id', 'same').expect(status);
      expect(head.text ?? '').toBe('');
      const { date: _d, ...getHeaders } = get.headers;
      const { date: _h, ...headHeaders } = head.headers;
      expect(headHeaders).toEqual(getHeaders);
      expect(headHeaders['content-type']).toBe(HTML);
    }
  });

  it.each([
    ['no Accept', undefined],
    ['*/*', '*/*'],
    ['application/json', 'application/json'],
    ['a client that takes JSON first (axios)', 'application/json, text/plain, */*'],
    ['*/* with a weight', '*/*;q=0.8'],
    ['HTML less wanted than JSON', 'text/html;q=0.5, application/json'],
    ['application/*', 'application/*'],
    ['JSON listed first at one weight', 'application/json, text/html'],
  ])('%s: JSON, as before', async (_name, accept) => {
    const req = http.get('/items/deleted');
    const res = await (accept === undefined ? req : req.set('Accept', accept)).expect(410);
    expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(res.headers['content-security-policy']).toBeUndefined();
    expect(res.body).toMatchObject({ error: 'gone', id: 'deleted', reason: 'Retired in the spring clean' });
  });

  it.each([
    ['text/html alone', 'text/html'],
    ['text/* (any text)', 'text/*'],
    ['HTML preferred to JSON', 'application/json;q=0.9, text/html'],
    ['Firefox', 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8'],
    // RFC 9110 §8.3.1: the type and subtype are case-insensitive.
    ['in capitals', 'TEXT/HTML'],
    ['mixed case, with a fallback', 'Text/Html, */*;q=0.8'],
    // At one weight, a type named outright beats a wildcard (docs/responses.md).
    ['HTML and */* at one weight', 'text/html;q=0.8, */*;q=0.8'],
    ['text/* and */*', 'text/*, */*'],
  ])('%s: the page', async (_name, accept) => {
    const res = await http.get('/items/deleted').set('Accept', accept).expect(410);
    expect(res.headers['content-type']).toBe(HTML);
  });

  it('problem details when asked for, as before', async () => {
    const res = await http.get('/items/deleted').set('Accept', 'application/problem+json').expect(410);
    expect(res.headers['content-type']).toBe('application/problem+json; charset=utf-8');
    expect(res.body).toMatchObject({ type: 'tag:nestjs-tombstones,2026:gone', status: 410, id: 'deleted' });
  });

  it('a found resource: the handler’s own answer, no query, no policy', async () => {
    counter.reset();
    const res = await http.get('/items/live').set('Accept', BROWSER).expect(200);
    expect(res.body).toEqual({ key: 'live', name: 'A live item' });
    expect(res.headers['content-security-policy']).toBeUndefined();
    expect(counter.queries).toEqual([]);
  });

  describe('hostile values', () => {
    it('a hostile key is escaped, in the heading and everywhere else', async () => {
      const res = await http.get(`/items/${encodeURIComponent(HOSTILE_KEY)}`).set('Accept', BROWSER).expect(404);
      expect(res.text).not.toContain('<script>');
      expect(res.text).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    });

    it('a hostile reason is escaped', async () => {
      const res = await http.get('/items/hostile').set('Accept', BROWSER).expect(410);
      expect(res.text).not.toMatch(/<script>|<img/);
      expect(res.text).toContain('<dd>&lt;img src=x onerror=alert(2)&gt;&lt;script&gt;alert(3)&lt;/script&gt;&quot;&#39;&amp;</dd>');
    });

    // Dropped when the row is read (src/table/tombstone.rows.ts); the renderer would show it as
    // text, never as a link (src/tombstone.renderer.spec.ts).
    it.each(['js-alternative', 'data-alternative', 'quote-alternative'])('an alternative in the table that is no safe link (%s) never reaches the page', async (key) => {
      const res = await http.get(`/items/${key}`).set('Accept', BROWSER).expect(410);
      expect(res.text).toContain('<h1>Item &#39;');
      expect(res.text).not.toContain('<a ');
      expect(res.text).not.toContain('alert(');
      expect(res.headers.link).toBeUndefined();
    });
  });

  describe('options', () => {
    it('html: false answers browsers with JSON', async () => {
      const api = await boot({ html: false });
      const res = await api.get('/items/deleted').set('Accept', BROWSER).expect(410);
      expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
      expect(res.headers['content-security-policy']).toBeUndefined();
      expect(res.body).toMatchObject({ error: 'gone', id: 'deleted' });
    });

    it("problemDetails: 'always' gives browsers the page, and every other client problem details", async () => {
      const problems = await boot({ problemDetails: 'always' });
      expect((await problems.get('/items/deleted').set('Accept', BROWSER).expect(410)).headers['content-type']).toBe(HTML);
      for (const accept of ['application/json, text/plain, */*', 'application/json', '*/*']) {
        const res = await problems.get('/items/deleted').set('Accept', accept).expect(410);
        expect(res.headers['content-type']).toBe('application/problem+json; charset=utf-8');
      }
    });

    it('a page of your own that throws: a plain 404, never a 500 (reads fail open)', async () => {
      class BrokenPage extends TombstoneRenderer {
        protected override page(_answer: TombstoneAnswer): string {
          throw new Error('template bug');
        }
      }
      const broken = await boot({ renderer: BrokenPage });
      const res = await broken.get('/items/deleted').set('Accept', BROWSER).set('x-request-id', 'req-broken').expect(404);
      expect(res.text).not.toContain('template bug');
      // The module's plain 404 all the same, with its headers: a shared cache must not keep it
      // for an API client (whose answer is the 410), nor for long.
      expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
      expect(res.body).toMatchObject({ error: 'not_found', id: 'deleted', requestId: 'req-broken' });
      expect(res.headers.vary).toBe('Accept, x-tenant-id');
      expect(res.headers['cache-control']).toBe('no-store');
      expect(res.headers['x-content-type-options']).toBe('nosniff');
      expect(res.headers['x-request-id']).toBe('req-broken');
      // API clients are not affected.
      await broken.get('/items/deleted').expect(410);
    });

    it("problemDetails: 'never' gives browsers the page, and problem+json clients JSON", async () => {
      const plain = await boot({ problemDetails: 'never' });
      expect((await plain.get('/items/deleted').set('Accept', BROWSER).expect(410)).headers['content-type']).toBe(HTML);
      const res = await plain.get('/items/deleted').set('Accept', 'application/problem+json').expect(410);
      expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
    });
  });
});
