import type { INestApplication } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import { TombstoneHitCounter } from '../src/counters/tombstone.hits.js';
import { TombstoneModule, TombstoneService } from '../src/index.js';
import { ItemsController } from './fixtures/items.fixture.js';
import { ADAPTERS, bootApp, settled } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

/** A Location must stay on this origin: a path, never `//host` or `/\host`, nothing off-ASCII. */
function expectSameOrigin(location: string | undefined): void {
  if (location === undefined) return;
  expect(location).toMatch(/^\/(?![/\\])[\x21-\x7e]*$/);
  expect(new URL(location, 'https://app.example').origin).toBe('https://app.example');
}

// Keys as they travel in a path segment (already percent-encoded where a raw byte cannot).
const HOSTILE_REQUEST_KEYS = [
  '%2F%2Fevil.example',
  '%2f%2fevil.example',
  '%5C%5Cevil.example',
  '%5Cevil.example',
  '..%2F..%2Fadmin',
  'https%3A%2F%2Fevil.example',
  'https:evil.example',
  '%0D%0ASet-Cookie:%20x=1',
  '%0A%0Dx',
  '%00',
  'a%00b',
  '%09tab',
  '%E2%80%AEevil',
  '%EF%BC%8F%EF%BC%8Fevil.example',
  '%C3%BCn%C3%AFc%C3%B6d%C3%A9',
  '%F0%9F%92%A9',
  '%FF%FE',
  '%E0%A4%A',
  '%',
  'x'.repeat(10_000),
  '%C3%A9'.repeat(1_500),
];

// Targets an operator (or an attacker with write access) might have stored.
const HOSTILE_TARGETS = [
  '//evil.example',
  '/\\evil.example',
  '\\\\evil.example',
  'https://evil.example',
  'https:evil.example',
  '\r\nSet-Cookie: x=1',
  'tab\there',
  '／／evil.example',
  'ünïcödé',
  '...',
  '.x',
  ' ',
  'x'.repeat(2048),
];

// Targets that would make a Location with a dot segment, which clients resolve to another route.
const DOT_TARGETS = ['.', '..'];

describe.each(ADAPTERS)('hostile input (%s)', (adapter) => {
  let db: TestDatabase;
  let app: INestApplication;
  let http: ReturnType<typeof request>;

  beforeAll(async () => {
    db = await createTestDatabase();
    app = await bootApp(adapter, {
      imports: [TypeOrmModule.forRoot(db.options()), TombstoneModule.forRoot()],
      controllers: [ItemsController],
    });
    http = request(app.getHttpServer());
    const tombstones = app.get(TombstoneService);
    for (const [i, target] of HOSTILE_TARGETS.entries()) {
      await tombstones.recordMove('item', `src-${i}`, target);
    }
    await tombstones.recordDeletion('item', 'ünïcödé-deleted');
    // Dot targets are refused when written, but a captured rename or psql can still store one.
    for (const target of DOT_TARGETS) {
      await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind, target_key) VALUES ('item', $1, 'moved', $2)`, [
        `dots-${target.length}`,
        target,
      ]);
    }
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  it.each(HOSTILE_REQUEST_KEYS.map((k) => [k.length > 60 ? `${k.slice(0, 20)}… (${k.length} chars)` : k, k]))(
    'request key %s: never a 5xx, never an off-origin Location',
    async (_, key) => {
      for (const suffix of ['', '/throws']) {
        const res = await http.get(`/items/${key}${suffix}`);
        expect(res.status).toBeLessThan(500);
        expectSameOrigin(res.headers.location);
        expect(JSON.stringify(res.headers)).not.toMatch(/set-cookie/i);
      }
    },
  );

  it.each(HOSTILE_TARGETS.map((t, i) => [JSON.stringify(t).slice(0, 40), i]))(
    'stored target %s: the Location is this route with the key encoded',
    async (_, i) => {
      const res = await http.get(`/items/src-${i}?q=%0D%0A`).expect(301);
      expectSameOrigin(res.headers.location);
      const [path, query] = (res.headers.location as string).split('?');
      expect(decodeURIComponent(path.slice('/items/'.length))).toBe(HOSTILE_TARGETS[i as number]);
      expect(query).toBe('q=%0D%0A');
      expect(res.headers['set-cookie']).toBeUndefined();
    },
  );

  it.each(DOT_TARGETS)("a stored move to '%s' answers exactly the plain 404 of a key that never existed", async (target) => {
    const key = `dots-${target.length}`;
    for (const method of ['get', 'patch'] as const) {
      const moved = await http[method](`/items/${key}`).set('x-request-id', 'r1');
      const never = await http[method](`/items/never-${target.length}`).set('x-request-id', 'r1');
      expect(moved.status).toBe(404);
      expect(moved.headers.location).toBeUndefined();
      expect({ ...moved.body, id: 'k', path: 'p', message: 'm' }).toEqual({ ...never.body, id: 'k', path: 'p', message: 'm' });
    }
  });

  it('a redirect answered with the plain 404 (its URL cannot be built) counts no hit', async () => {
    for (let i = 0; i < 3; i++) await http.get('/items/dots-2').expect(404);
    await app.get(TombstoneHitCounter).flush();
    const [row] = await db.sql.query(`SELECT hit_count FROM tombstones WHERE resource_type = 'item' AND resource_key = 'dots-2'`);
    expect(Number(row.hit_count)).toBe(0);
  });

  describe('rows written with SQL that the module would not write', () => {
    beforeAll(async () => {
      await db.sql.query(
        `INSERT INTO tombstones (resource_type, resource_key, kind, alternative) VALUES
           ('item', 'sql-alt-euro', 'deleted', '/items/€uro'), ('item', 'sql-alt-crlf', 'deleted', E'/items/x\r\nX-Injected: 1'),
           ('item', 'sql-alt-js', 'deleted', 'javascript:alert(1)')`,
      );
      await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind, occurred_at) VALUES ('item', 'sql-infinity', 'deleted', 'infinity')`);
      await settled(app);
    });

    it.each(['sql-alt-euro', 'sql-alt-crlf', 'sql-alt-js'])('%s: a 410 without the alternative it cannot send safely, and the app keeps serving', async (key) => {
      const res = await http.get(`/items/${key}`).expect(410);
      expect(res.headers.link).toBeUndefined();
      expect(res.headers['x-injected']).toBeUndefined();
      expect(res.body.alternative).toBeNull();
      await http.get('/items/never').expect(404);
    });

    it('a deletion dated infinity: the plain 404, never a 200 with no body', async () => {
      const res = await http.get('/items/sql-infinity').set('x-request-id', 'r1');
      const never = await http.get('/items/sql-infinit').set('x-request-id', 'r1');
      expect(res.status).toBe(404);
      expect({ ...res.body, id: 'k', path: 'p', message: 'm' }).toEqual({ ...never.body, id: 'k', path: 'p', message: 'm' });
    });
  });

  it.each(DOT_TARGETS)("refuses to record a move to '%s'", async (target) => {
    const tombstones = app.get(TombstoneService);
    await expect(tombstones.recordMove('item', 'dot-source', target)).rejects.toMatchObject({ name: 'TombstoneValidationError', field: 'to' });
    await expect(tombstones.recordMerge('item', ['dot-source'], target)).rejects.toMatchObject({ name: 'TombstoneValidationError', field: 'into' });
    expect(await tombstones.find('item', 'dot-source')).toBeNull();
  });

  it('answers a non-ASCII key', async () => {
    const res = await http.get(`/items/${encodeURIComponent('ünïcödé-deleted')}`).expect(410);
    expect(res.body.id).toBe('ünïcödé-deleted');
  });

  it('answers a 10 kB key with a plain 404 and a shortened message', async () => {
    const key = 'k'.repeat(10_000);
    const res = await http.get(`/items/${key}`);
    if (adapter === 'fastify') {
      // Fastify refuses params over its maxParamLength (100 by default) before any handler runs.
      expect(res.status).toBe(414);
      return;
    }
    expect(res.status).toBe(404);
    expect(res.body.message.length).toBeLessThan(300);
  });

  it('never leaks a stack trace or SQL', async () => {
    for (const key of HOSTILE_REQUEST_KEYS) {
      const res = await http.get(`/items/${key}`);
      expect(res.text).not.toMatch(/SELECT|tombstones|at .*\.js:\d+|QueryFailedError/);
    }
  });
});
