import { randomUUID } from 'node:crypto';
import { jest } from '@jest/globals';
import { Controller, Get, type INestApplication, Logger, Param } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { ClsModule, ClsService } from 'nestjs-cls';
import request from 'supertest';
import { TombstoneModule, Tombstoned } from '../src/index.js';
import { ItemsController } from './fixtures/items.fixture.js';
import { ADAPTERS, bootApp, settled } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/**
 * The app's request id, as a test makes it: `x-test-id` is the id, `x-test-mode` makes the
 * function misbehave.
 */
function appRequestId(req: { headers: Record<string, string | undefined> }): string | undefined {
  switch (req.headers['x-test-mode']) {
    case 'throw':
      throw new Error('no request context\r\nInjected: yes');
    case 'crlf':
      return 'app-1\r\nSet-Cookie: stolen=1';
    case 'huge':
      return 'a'.repeat(10_240);
    case 'none':
      return undefined;
    default:
      return req.headers['x-test-id'];
  }
}

/** A route that sees nestjs-cls's id, as the app's own logs would, and then misses. */
@Controller('cls-items')
class ClsItemsController {
  static readonly seen = new Map<string, string>();

  constructor(private readonly cls: ClsService) {}

  @Get(':key')
  @Tombstoned('item', { param: 'key' })
  find(@Param('key') key: string): null {
    const id = this.cls.getId();
    ClsItemsController.seen.set(key, id);
    new Logger('Items').log(`looking ${key} up (${id})`);
    return null;
  }
}

describe.each(ADAPTERS)('request ids from the app (%s)', (adapter) => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    const sql = `INSERT INTO tombstones (resource_type, resource_key, kind, target_key) VALUES ('item', 'deleted', 'deleted', NULL), ('item', 'moved', 'moved', 'live')`;
    await db.sql.query(sql);
  });

  afterAll(async () => {
    await db?.drop();
  });

  describe('the requestId option', () => {
    let app: INestApplication;
    let http: ReturnType<typeof request>;
    let warn: jest.SpiedFunction<Logger['warn']>;

    beforeAll(async () => {
      app = await bootApp(adapter, {
        imports: [TypeOrmModule.forRoot(db.options()), TombstoneModule.forRoot({ requestId: appRequestId })],
        controllers: [ItemsController],
      });
      await settled(app);
      http = request(app.getHttpServer());
    });

    beforeEach(() => {
      warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    });

    afterEach(() => warn.mockRestore());

    afterAll(async () => {
      await app?.close();
    });

    it.each([
      ['/items/never-was', 404],
      ['/items/deleted', 410],
      ['/items/moved', 301],
    ])("%s answers %i with the function's id in the body and the header, over the client's", async (path, status) => {
      const id = `app-${randomUUID()}`;
      const res = await http.get(path).set({ 'x-test-id': id, 'x-request-id': 'from-client' }).expect(status);
      expect(res.body.requestId).toBe(id);
      expect(res.headers['x-request-id']).toBe(id);
      expect(warn).not.toHaveBeenCalled();
    });

    it('undefined: the client header as before, or a new UUID', async () => {
      const withHeader = await http.get('/items/deleted').set({ 'x-test-mode': 'none', 'x-request-id': 'from-client' }).expect(410);
      expect(withHeader.body.requestId).toBe('from-client');
      const without = await http.get('/items/deleted').set({ 'x-test-mode': 'none' }).expect(410);
      expect(without.body.requestId).toMatch(UUID);
      expect(without.headers['x-request-id']).toBe(without.body.requestId);
      expect(warn).not.toHaveBeenCalled();
    });

    it.each(['throw', 'crlf', 'huge'])('a function that goes wrong (%s): the same answer, with the fallback id, and a warning', async (mode) => {
      const res = await http.get('/items/deleted').set({ 'x-test-mode': mode, 'x-request-id': 'from-client' }).expect(410);
      expect(res.body).toMatchObject({ error: 'gone', id: 'deleted', requestId: 'from-client' });
      expect(res.headers['x-request-id']).toBe('from-client');
      expect(res.headers['set-cookie']).toBeUndefined();
      const redirect = await http.get('/items/moved').set({ 'x-test-mode': mode }).expect(301);
      expect(redirect.body.requestId).toMatch(UUID);
      expect(redirect.headers['x-request-id']).toBe(redirect.body.requestId);
      expect(warn).toHaveBeenCalledTimes(2);
      for (const [line] of warn.mock.calls) {
        expect(String(line)).toMatch(/^Tombstone answer: the requestId function (threw|returned)/);
        expect(String(line)).not.toMatch(/[\r\n]/);
        expect(String(line).length).toBeLessThan(500);
      }
    });
  });

  describe('nestjs-cls', () => {
    let app: INestApplication;
    let http: ReturnType<typeof request>;
    let logged: string[];

    beforeAll(async () => {
      app = await bootApp(adapter, {
        imports: [
          ClsModule.forRoot({ global: true, middleware: { mount: true, generateId: true, idGenerator: () => `cls-${randomUUID()}` } }),
          TypeOrmModule.forRoot(db.options()),
          TombstoneModule.forRoot(),
        ],
        controllers: [ClsItemsController],
      });
      await settled(app);
      http = request(app.getHttpServer());
      // The app's log, as a logger that prints the request id would show it.
      logged = [];
      app.useLogger({ log: (message: unknown) => void logged.push(String(message)), warn: () => undefined, error: () => undefined });
    });

    afterAll(async () => {
      await app?.close();
    });

    it.each([
      ['never-was', 404],
      ['deleted', 410],
      ['moved', 301],
    ])("/cls-items/%s answers %i with the id the handler saw and logged, over the client's", async (key, status) => {
      const res = await http.get(`/cls-items/${key}`).set('x-request-id', 'from-client').expect(status);
      const seen = ClsItemsController.seen.get(key);
      expect(seen).toMatch(/^cls-/);
      expect(res.body.requestId).toBe(seen);
      expect(res.headers['x-request-id']).toBe(seen);
      expect(logged).toContain(`looking ${key} up (${seen})`);
    });

    it('each request its own id', async () => {
      const [a, b] = await Promise.all([http.get('/cls-items/deleted').expect(410), http.get('/cls-items/deleted').expect(410)]);
      expect(a.body.requestId).toMatch(/^cls-/);
      expect(b.body.requestId).toMatch(/^cls-/);
      expect(a.body.requestId).not.toBe(b.body.requestId);
    });
  });

  describe('nestjs-cls with a requestId function', () => {
    it('the function wins', async () => {
      const app = await bootApp(adapter, {
        imports: [
          ClsModule.forRoot({ global: true, middleware: { mount: true, generateId: true } }),
          TypeOrmModule.forRoot(db.options()),
          TombstoneModule.forRoot({ requestId: appRequestId }),
        ],
        controllers: [ClsItemsController],
      });
      try {
        const res = await request(app.getHttpServer()).get('/cls-items/deleted').set('x-test-id', 'app-7').expect(410);
        expect(res.body.requestId).toBe('app-7');
        expect(res.headers['x-request-id']).toBe('app-7');
      } finally {
        await app.close();
      }
    });
  });
});
