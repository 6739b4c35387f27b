import type { INestApplication } from '@nestjs/common';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import type request from 'supertest';
import { ADMIN_TOKEN, bootAdminApp } from './fixtures/admin.fixture.js';
import { ADAPTERS } from './support/app.js';
import type { TestDatabase } from './support/database.js';

// Prefix tombstones through the admin endpoints: created, updated, listed, refused when they are
// not prefixes (a clear 400 and nothing written), and answered by the batch resolve.
describe.each(ADAPTERS)('admin: prefix tombstones (%s)', (adapter) => {
  let db: TestDatabase;
  let http: ReturnType<typeof request>;
  let close: () => Promise<void>;
  let app: INestApplication;
  const as = (method: 'get' | 'post' | 'patch' | 'delete', path: string) => http[method](`/admin/tombstones${path}`).set('authorization', ADMIN_TOKEN);
  const type = 'page';
  const count = async () => Number(((await db.sql.query(`SELECT count(*) AS n FROM tombstones`)) as { n: string }[])[0].n);

  beforeAll(async () => {
    ({ db, http, close, app } = await bootAdminApp(adapter));
  });
  afterAll(async () => close?.());

  it('documents the prefix flag in OpenAPI: the create body and the listing filter', () => {
    const document = SwaggerModule.createDocument(app, new DocumentBuilder().setTitle('t').build());
    const create = document.components?.schemas?.CreateTombstoneDto as { properties?: Record<string, { type?: string }> };
    expect(create.properties?.prefix).toMatchObject({ type: 'boolean' });
    const list = document.paths['/admin/tombstones'].get?.parameters as { name: string }[];
    expect(list.map((p) => p.name)).toContain('prefix');
  });

  it('creates a moved prefix and shows prefix: true; the listing filters on it', async () => {
    const created = await as('post', '').send({ type, key: 'docs/v1/', kind: 'moved', target: 'docs/v2/', prefix: true }).expect(201);
    expect(created.body).toMatchObject({ key: 'docs/v1/', kind: 'moved', target: 'docs/v2/', prefix: true });
    await as('post', '').send({ type, key: 'docs/v1/x', kind: 'deleted' }).expect(201);
    const prefixes = await as('get', '?prefix=true').expect(200);
    expect(prefixes.body.items.map((t: { key: string }) => t.key)).toEqual(['docs/v1/']);
    const keys = await as('get', '?prefix=false').expect(200);
    expect(keys.body.items.map((t: { key: string; prefix: boolean }) => [t.key, t.prefix])).toEqual([['docs/v1/x', false]]);
  });

  it('refuses a prefix that does not end at a segment boundary, a merged prefix, a target that is not a prefix', async () => {
    const before = await count();
    const bad = [
      [{ type, key: 'legacy', kind: 'deleted', prefix: true }, 'key'],
      [{ type, key: 'a/', kind: 'merged', target: 'b/', prefix: true }, 'kind'],
      [{ type, key: 'a/', kind: 'moved', target: 'b', prefix: true }, 'target'],
      [{ type, key: `${'s/'.repeat(17)}`, kind: 'hidden', prefix: true }, 'key'],
      [{ type, key: 'a/', kind: 'hidden', prefix: 'yes' }, 'prefix'],
    ] as const;
    for (const [body, field] of bad) {
      const res = await as('post', '').send(body).expect(400);
      expect(res.body.errors.map((e: { field: string }) => e.field)).toContain(field);
    }
    expect(await count()).toBe(before);
  });

  it('refuses a prefix moved under itself, and a cycle through a prefix, as 409', async () => {
    const before = await count();
    await as('post', '').send({ type, key: 'loop/', kind: 'moved', target: 'loop/in/', prefix: true }).expect(409);
    // docs/v2/back → docs/v1/back would come back through docs/v1/ → docs/v2/.
    await as('post', '').send({ type, key: 'docs/v2/back', kind: 'moved', target: 'docs/v1/back' }).expect(409);
    expect(await count()).toBe(before);
  });

  it('collapses a key moved into a moved section when it is written', async () => {
    const res = await as('post', '').send({ type, key: 'old-intro', kind: 'moved', target: 'docs/v1/guide/intro' }).expect(201);
    expect(res.body.target).toBe('docs/v2/guide/intro');
  });

  it('updates a prefix tombstone, keeping it a prefix', async () => {
    const created = await as('post', '').send({ type, key: 'legacy/', kind: 'deleted', prefix: true }).expect(201);
    await as('patch', `/${created.body.id}`).send({ kind: 'moved', target: 'archive' }).expect(400);
    const updated = await as('patch', `/${created.body.id}`).send({ kind: 'moved', target: 'archive/' }).expect(200);
    expect(updated.body).toMatchObject({ key: 'legacy/', prefix: true, kind: 'moved', target: 'archive/' });
  });

  it('the batch resolve answers keys through prefixes: exact beats prefix, the rest is kept', async () => {
    await as('post', '').send({ type, key: 'internal/', kind: 'hidden', prefix: true }).expect(201);
    const res = await as('post', '/resolve').send({ type, keys: ['docs/v1/a/b', 'docs/v1/x', 'legacy/old', 'internal/plan', 'docs/v10/a'] }).expect(200);
    expect(res.body.results).toEqual([
      { key: 'docs/v1/a/b', state: 'moved', status: 301, target: 'docs/v2/a/b', merged: false },
      expect.objectContaining({ key: 'docs/v1/x', state: 'gone', status: 410 }),
      { key: 'legacy/old', state: 'moved', status: 301, target: 'archive/old', merged: false },
      { key: 'internal/plan', state: 'hidden', status: 404 },
      { key: 'docs/v10/a', state: 'none', status: null },
    ]);
  });

  describe('import and export', () => {
    const csv = (...lines: string[]) =>
      http
        .post('/admin/tombstones/import')
        .set('authorization', ADMIN_TOKEN)
        .set('content-type', 'text/csv')
        .send(['scope,type,key,kind,target,prefix', ...lines].join('\n'));

    it('imports prefix tombstones, and exports them with their flag', async () => {
      await csv(',page,blog/2019/,moved,archive/2019/,true', ',page,blog/2018/,deleted,,true', ',page,blog/2019/keep,deleted,,').expect(200);
      const res = await as('post', '/resolve').send({ type, keys: ['blog/2019/a/b', 'blog/2018/x', 'blog/2019/keep'] }).expect(200);
      expect(res.body.results.map((r: { state: string; target?: string }) => [r.state, r.target])).toEqual([
        ['moved', 'archive/2019/a/b'],
        ['gone', undefined],
        ['gone', undefined],
      ]);
      const exported = await http.get(`/admin/tombstones/export?type=${type}&format=ndjson`).set('authorization', ADMIN_TOKEN).expect(200);
      const rows = exported.text.trim().split('\n').map((line) => JSON.parse(line) as { key: string; prefix: boolean });
      expect(rows.find((r) => r.key === 'blog/2019/')).toMatchObject({ prefix: true, target: 'archive/2019/' });
      expect(rows.find((r) => r.key === 'blog/2019/keep')).toMatchObject({ prefix: false });
      // An export imports back as it was.
      const csvExport = await http.get(`/admin/tombstones/export?type=${type}`).set('authorization', ADMIN_TOKEN).expect(200);
      await http.post('/admin/tombstones/import').set('authorization', ADMIN_TOKEN).set('content-type', 'text/csv').send(csvExport.text).expect(200);
      expect((await as('get', '?prefix=true&keyPrefix=blog/').expect(200)).body.items).toHaveLength(2);
    });

    it('refuses rows that are not prefixes, and a cycle through a prefix, writing nothing', async () => {
      const before = await count();
      const bad = await csv(',page,shop,deleted,,true', ',page,a/,merged,b/,true', ',page,c/,moved,d,true', ',page,e/,hidden,,maybe').expect(400);
      expect(bad.body.errors.map((e: { row: number; field: string }) => [e.row, e.field])).toEqual([
        [2, 'key'],
        [3, 'kind'],
        [4, 'target'],
        [5, 'prefix'],
      ]);
      const cycle = await csv(',page,ring/,moved,ring/inner/,true').expect(400);
      expect(cycle.body.errors[0]).toMatchObject({ row: 2, field: 'target' });
      const through = await csv(',page,docs/v2/y,moved,docs/v1/y,').expect(400);
      expect(through.body.errors[0]).toMatchObject({ row: 2, field: 'target' });
      expect(await count()).toBe(before);
    });
  });
});
