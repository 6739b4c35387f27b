import type { INestApplication } from '@nestjs/common';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import request from 'supertest';
import { AppModule } from '../example/app.module.js';
import { createDemoApp } from '../example/http.js';
import { TombstoneService } from '../src/index.js';
import { ADMIN_TOKEN, bootAdminApp } from './fixtures/admin.fixture.js';
import { ADAPTERS, filterLoaded, settled } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
const FILES = ['app.js', 'api.js', 'dom.js', 'tombstones.js', 'misses.js', 'suggest.js', 'transfer.js', 'app.css', 'icon.svg'];

function expectPageHeaders(response: request.Response, type: RegExp): void {
  expect(response.headers['content-type']).toMatch(type);
  expect(response.headers['content-security-policy']).toBe(CSP);
  expect(response.headers['x-content-type-options']).toBe('nosniff');
  expect(response.headers['cache-control']).toBe('no-store');
  expect(response.headers['x-frame-options']).toBe('DENY');
  expect(response.headers['referrer-policy']).toBe('no-referrer');
}

describe.each(ADAPTERS)('admin web page (%s)', (adapter) => {
  describe('off by default', () => {
    let booted: Awaited<ReturnType<typeof bootAdminApp>>;
    beforeAll(async () => {
      booted = await bootAdminApp(adapter);
    });
    afterAll(() => booted?.close());

    it('serves no page and no file, with or without credentials', async () => {
      for (const path of ['/admin/ui', '/admin/ui/app.js']) {
        await booted.http.get(path).expect(404);
        await request(booted.app.getHttpServer()).get(path).set('Authorization', ADMIN_TOKEN).expect(404);
      }
    });
  });

  describe('ui: true (the page public, the data guarded)', () => {
    let booted: Awaited<ReturnType<typeof bootAdminApp>>;
    const http = () => request(booted.app.getHttpServer());
    beforeAll(async () => {
      booted = await bootAdminApp(adapter, { admin: { ui: true } });
      await booted.app.get(TombstoneService).recordDeletion('article', 'secret-key-7f3a', { reason: 'secret reason 9c1e' });
      await settled(booted.app);
    });
    afterAll(() => booted?.close());

    it('serves the shell without credentials, with a strict CSP, nosniff and no-store; it holds no data', async () => {
      const response = await http().get('/admin/ui').expect(200);
      expectPageHeaders(response, /^text\/html; charset=utf-8/);
      expect(response.text).toContain('<script type="module" src="/admin/ui/app.js"></script>');
      expect(response.text).toContain('<link rel="stylesheet" href="/admin/ui/app.css">');
      // No inline script or style: every <script> has a src, and there is no <style> or style=.
      expect(response.text).not.toMatch(/<script(?![^>]*\ssrc=)/);
      expect(response.text).not.toMatch(/<style|\sstyle=/);
      expect(response.text).not.toMatch(/secret-key-7f3a|secret reason 9c1e/);
    });

    it('finds its files under its own path, with a query or (Express) a trailing slash', async () => {
      // Fastify routes /admin/ui/ apart from /admin/ui unless the app sets ignoreTrailingSlash.
      for (const path of ['/admin/ui?x=1', ...(adapter === 'express' ? ['/admin/ui/?x=1'] : [])]) {
        const response = await http().get(path).expect(200);
        expect(response.text).toContain('src="/admin/ui/app.js"');
      }
    });

    it.each(FILES)('serves %s with its type and the same headers', async (file) => {
      const response = await http().get(`/admin/ui/${file}`).expect(200);
      const types: Record<string, RegExp> = { js: /^text\/javascript; charset=utf-8/, css: /^text\/css; charset=utf-8/, svg: /^image\/svg\+xml/ };
      expectPageHeaders(response, types[file.split('.').pop()!]);
      // supertest buffers an image as bytes, text as text.
      const body = Buffer.isBuffer(response.body) ? response.body.toString() : response.text;
      expect(body.length).toBeGreaterThan(100);
      expect(body).not.toMatch(/secret-key-7f3a/);
    });

    it('answers HEAD like GET, without a body', async () => {
      const response = await http().head('/admin/ui/app.js').expect(200);
      expect(response.headers['content-security-policy']).toBe(CSP);
      expect(response.text ?? '').toBe('');
    });

    it('serves nothing else under its path', async () => {
      for (const path of ['/admin/ui/app.ts', '/admin/ui/..%2Fpackage.json', '/admin/ui/constructor', '/admin/ui/__proto__']) {
        await http().get(path).expect(404);
      }
    });

    it('is left out of the OpenAPI document', () => {
      const document = SwaggerModule.createDocument(booted.app, new DocumentBuilder().setTitle('t').build());
      expect(Object.keys(document.paths)).toContain('/admin/tombstones');
      expect(Object.keys(document.paths).filter((path) => path.startsWith('/admin/ui'))).toEqual([]);
    });

    it('the data endpoints still refuse without credentials', async () => {
      await http().get('/admin/tombstones').expect(401);
      await http().get('/admin/tombstones/export').expect(401);
      await http().get('/admin/tombstone-misses?sort=hits').expect(401);
      await http().post('/admin/tombstones/import?dryRun=true').set('content-type', 'text/csv').send('type,key,kind\narticle,x,deleted\n').expect(401);
      await http().post('/admin/tombstones').send({ type: 'article', key: 'x', kind: 'deleted' }).expect(401);
      await http().get('/admin/tombstones').set('Authorization', 'Bearer wrong').expect(403);
      const listed = await http().get('/admin/tombstones').set('Authorization', ADMIN_TOKEN).expect(200);
      // Admin data is never stored by a browser or a proxy, refusals included.
      expect(listed.headers['cache-control']).toBe('no-store');
      expect((await http().get('/admin/tombstones')).headers['cache-control']).toBe('no-store');
      expect((await http().get('/admin/tombstone-misses').set('Authorization', ADMIN_TOKEN).expect(200)).headers['cache-control']).toBe('no-store');
      expect((await http().get('/admin/tombstones/export').set('Authorization', ADMIN_TOKEN).expect(200)).headers['cache-control']).toBe('no-store');
      expect(listed.body.items.map((item: { key: string }) => item.key)).toEqual(['secret-key-7f3a']);
    });
  });

  describe('ui: { guardPage: true } (a cookie-session app)', () => {
    let booted: Awaited<ReturnType<typeof bootAdminApp>>;
    const http = () => request(booted.app.getHttpServer());
    beforeAll(async () => {
      booted = await bootAdminApp(adapter, { admin: { ui: { guardPage: true } } });
    });
    afterAll(() => booted?.close());

    it("puts the app's guard in front of the page and its files", async () => {
      await http().get('/admin/ui').expect(401);
      await http().get('/admin/ui/app.js').expect(401);
      await http().get('/admin/ui').set('Authorization', 'Bearer wrong').expect(403);
      const page = await http().get('/admin/ui').set('Authorization', ADMIN_TOKEN).expect(200);
      expectPageHeaders(page, /^text\/html/);
      await http().get('/admin/ui/app.js').set('Authorization', ADMIN_TOKEN).expect(200);
    });
  });
});

describe.each(ADAPTERS)('the demo serves the admin page (%s)', (adapter) => {
  let db: TestDatabase;
  let app: INestApplication;

  beforeAll(async () => {
    db = await createTestDatabase();
    app = await createDemoApp(AppModule.forRoot(db.url, { adminToken: 'demo-test-token' }), adapter, { logger: false, abortOnError: false });
    await app.init();
    if (adapter === 'fastify') await (app as NestFastifyApplication).getHttpAdapter().getInstance().ready();
    await filterLoaded(app);
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  it("at /admin/ui, with the page's own CSP over the app's security headers; the data behind the token", async () => {
    const page = await request(app.getHttpServer()).get('/admin/ui').expect(200);
    expectPageHeaders(page, /^text\/html/);
    await request(app.getHttpServer()).get('/admin/ui/app.js').expect(200);
    await request(app.getHttpServer()).get('/admin/tombstones').expect(401);
    await request(app.getHttpServer()).get('/admin/tombstones').set('Authorization', 'Bearer demo-test-token').expect(200);
  });
});
