import { Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { TypeOrmModule } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import {
  TombstoneConfigurationError,
  TombstoneCycleError,
  TombstoneModule,
  type TombstoneModuleOptions,
  TombstoneService,
  TombstoneValidationError,
} from '../src/index.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { QueryCounter } from './support/query-counter.js';

describe('recording API against PostgreSQL', () => {
  let db: TestDatabase;
  let service: TombstoneService;
  let close: () => Promise<void>;
  const counter = new QueryCounter();
  let type: string;
  let n = 0;

  beforeAll(async () => {
    db = await createTestDatabase();
    const moduleRef = await Test.createTestingModule({
      imports: [TypeOrmModule.forRoot({ ...db.options(), logging: true, logger: counter }), TombstoneModule.forRoot()],
    }).compile();
    await moduleRef.init();
    service = moduleRef.get(TombstoneService);
    close = () => moduleRef.close();
    await db.sql.query(`CREATE TABLE things (key text PRIMARY KEY)`);
  });

  afterAll(async () => {
    await close?.();
    await db?.drop();
  });

  beforeEach(() => {
    type = `thing-${++n}`; // a fresh type per test: no test sees another's rows
  });

  const rows = (sql = '') =>
    db.sql.query(`SELECT resource_key AS key, kind, target_key AS target FROM tombstones WHERE resource_type = $1 ${sql} ORDER BY resource_key`, [type]);

  describe('deletions and hidden keys', () => {
    it('records a deletion once, however often it is recorded', async () => {
      const first = await service.recordDeletion(type, 'a', { reason: 'old', actor: 'ops' });
      const second = await service.recordDeletion(type, 'a', { reason: 'old', actor: 'ops' });
      expect(second.id).toBe(first.id);
      expect(second.occurredAt.toISOString()).toBe(first.occurredAt.toISOString());
      expect(await rows()).toEqual([{ key: 'a', kind: 'deleted', target: null }]);
      expect(await service.resolve(type, 'a')).toEqual({
        state: 'gone',
        id: first.id,
        deletedAt: first.occurredAt,
        reason: 'old',
        alternative: null,
      });
    });

    it('takes an explicit occurredAt, reason, actor, alternative and metadata', async () => {
      const at = new Date('2025-01-02T03:04:05.000Z');
      const t = await service.recordDeletion(type, 'b', {
        occurredAt: at,
        reason: 'r',
        actor: 'u:1',
        alternative: 'https://example.com/x',
        metadata: { ticket: 42 },
      });
      expect(t).toMatchObject({ occurredAt: at, reason: 'r', actor: 'u:1', alternative: 'https://example.com/x', metadata: { ticket: 42 }, kind: 'deleted', scope: '', hitCount: 0 });
    });

    it('records a hidden key', async () => {
      const hidden = await service.recordHidden(type, 'h');
      expect(await service.resolve(type, 'h')).toEqual({ state: 'hidden', id: hidden.id });
    });

    it('keeps scopes apart', async () => {
      await service.recordDeletion(type, 'k', { scope: 'acme' });
      await service.recordHidden(type, 'k', { scope: 'globex' });
      expect((await service.resolve(type, 'k', 'acme')).state).toBe('gone');
      expect((await service.resolve(type, 'k', 'globex')).state).toBe('hidden');
      expect((await service.resolve(type, 'k')).state).toBe('none');
    });

    it('stops answering after expiresAt', async () => {
      await service.recordDeletion(type, 'e', { expiresAt: new Date(Date.now() - 1) });
      expect(await service.resolve(type, 'e')).toEqual({ state: 'none' });
      expect((await service.find(type, 'e'))?.kind).toBe('deleted');
    });

    it('restores a key', async () => {
      await service.recordDeletion(type, 'r');
      expect(await service.restore(type, 'r')).toBe(true);
      expect(await service.restore(type, 'r')).toBe(false);
      expect(await service.resolve(type, 'r')).toEqual({ state: 'none' });
    });
  });

  describe('moves, merges and chains', () => {
    it('collapses chains as they are written: a→b then b→c stores a→c', async () => {
      const a = await service.recordMove(type, 'a', 'b');
      await service.recordMove(type, 'b', 'c');
      expect(await rows()).toEqual([
        { key: 'a', kind: 'moved', target: 'c' },
        { key: 'b', kind: 'moved', target: 'c' },
      ]);
      // The id is the requested key's own row: the one whose hits count.
      expect(await service.resolve(type, 'a')).toEqual({ state: 'moved', id: a.id, target: 'c', permanent: true, merged: false });
    });

    it('resolves a chain of 50 moves with one query', async () => {
      for (let i = 0; i < 50; i++) await service.recordMove(type, `k${i}`, `k${i + 1}`);
      counter.reset();
      expect(await service.resolve(type, 'k0')).toMatchObject({ state: 'moved', target: 'k50' });
      expect(counter.tombstoneQueries).toBe(1);
      const [{ longest }] = await db.sql.query(
        `SELECT count(*)::int AS longest FROM tombstones t JOIN tombstones f
           ON f.scope = t.scope AND f.resource_type = t.resource_type AND f.resource_key = t.target_key
          WHERE t.resource_type = $1 AND f.kind IN ('moved', 'merged')`,
        [type],
      );
      expect(longest).toBe(0); // no stored row points at a key that moved on
    });

    it('moving back to a former key revives it (rename back)', async () => {
      await service.recordMove(type, 'a', 'b');
      await service.recordMove(type, 'b', 'a');
      expect(await rows()).toEqual([{ key: 'b', kind: 'moved', target: 'a' }]);
    });

    it('a three-step round trip leaves no cycle', async () => {
      await service.recordMove(type, 'a', 'b');
      await service.recordMove(type, 'b', 'c');
      await service.recordMove(type, 'c', 'a');
      expect(await rows()).toEqual([
        { key: 'b', kind: 'moved', target: 'a' },
        { key: 'c', kind: 'moved', target: 'a' },
      ]);
    });

    it('moving onto a deleted key makes it live again', async () => {
      await service.recordDeletion(type, 'b');
      await service.recordMove(type, 'a', 'b');
      expect(await service.resolve(type, 'b')).toEqual({ state: 'none' });
      expect((await service.resolve(type, 'a')).state).toBe('moved');
    });

    it('a chain that ends at a deleted key answers gone, with the deletion’s facts', async () => {
      await service.recordMove(type, 'spring', 'summer');
      await service.recordDeletion(type, 'summer', { reason: 'ended', alternative: '/current' });
      expect(await service.resolve(type, 'spring')).toMatchObject({ state: 'gone', reason: 'ended', alternative: '/current' });
    });

    it('a chain that ends at a hidden key answers hidden', async () => {
      const a = await service.recordMove(type, 'a', 'b');
      const b = await service.recordHidden(type, 'b');
      expect(await service.resolve(type, 'a')).toEqual({ state: 'hidden', id: a.id });
      expect(a.id).not.toBe(b.id);
    });

    it('records temporary moves', async () => {
      await service.recordMove(type, 'a', 'b', { permanent: false });
      expect(await service.resolve(type, 'a')).toMatchObject({ permanent: false });
    });

    it('merges many keys into one and clears the survivor’s tombstone', async () => {
      await service.recordDeletion(type, '1');
      await service.recordMove(type, '4', '2');
      const merged = await service.recordMerge(type, ['2', '3', '3'], '1');
      expect(merged.map((t) => t.key).sort()).toEqual(['2', '3']);
      expect(await rows()).toEqual([
        { key: '2', kind: 'merged', target: '1' },
        { key: '3', kind: 'merged', target: '1' },
        { key: '4', kind: 'moved', target: '1' },
      ]);
      expect(await service.resolve(type, '3')).toEqual({
        state: 'moved',
        id: merged.find((t) => t.key === '3')!.id,
        target: '1',
        permanent: true,
        merged: true,
      });
    });

    it('rejects self-targets with a typed error, and so does the database', async () => {
      await expect(service.recordMove(type, 'a', 'a')).rejects.toBeInstanceOf(TombstoneCycleError);
      await expect(service.recordMerge(type, ['a', 'b'], 'a')).rejects.toBeInstanceOf(TombstoneCycleError);
      await expect(
        db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind, target_key) VALUES ($1, 'x', 'moved', 'x')`, [type]),
      ).rejects.toThrow(/tombstones_no_self_target_check/);
      await expect(
        db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ($1, 'x', 'moved')`, [type]),
      ).rejects.toThrow(/tombstones_target_check/);
      await expect(
        db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind, target_key) VALUES ($1, 'x', 'deleted', 'y')`, [type]),
      ).rejects.toThrow(/tombstones_target_check/);
      expect(await rows()).toEqual([]);
    });

    it('rejects a batch whose moves form a cycle of any length, and writes nothing', async () => {
      await expect(
        service.recordMoves(type, [
          { from: 'a', to: 'b' },
          { from: 'b', to: 'c' },
          { from: 'c', to: 'd' },
          { from: 'd', to: 'a' },
        ]),
      ).rejects.toMatchObject({ name: 'TombstoneCycleError', cycle: ['a', 'b', 'c', 'd', 'a'] });
      await expect(service.recordMoves(type, [{ from: 'a', to: 'b' }, { from: 'b', to: 'a' }])).rejects.toBeInstanceOf(TombstoneCycleError);
      expect(await rows()).toEqual([]);
    });

    it('treats a batch key that is both source and target as a hop', async () => {
      await service.recordMoves(type, [
        { from: 'b', to: 'c' },
        { from: 'a', to: 'b' },
      ]);
      expect(await rows()).toEqual([
        { key: 'a', kind: 'moved', target: 'c' },
        { key: 'b', kind: 'moved', target: 'c' },
      ]);
    });

    it('never persists a cycle under concurrent opposite moves', async () => {
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, (_, i) => (i % 2 ? service.recordMove(type, 'a', 'b') : service.recordMove(type, 'b', 'a'))),
      );
      expect(results.every((r) => r.status === 'fulfilled')).toBe(true);
      const stored = await rows();
      expect(stored).toHaveLength(1); // the last writer's move; the other key is live
      const [{ cycles }] = await db.sql.query(
        `SELECT count(*)::int AS cycles FROM tombstones t JOIN tombstones f
           ON f.scope = t.scope AND f.resource_type = t.resource_type AND f.resource_key = t.target_key
          WHERE t.resource_type = $1 AND t.target_key IS NOT NULL AND f.target_key IS NOT NULL`,
        [type],
      );
      expect(cycles).toBe(0);
    });
  });

  describe('transactions', () => {
    const dataSource = () => service.dataSource;

    it('commits the delete and its tombstone together', async () => {
      await db.sql.query(`INSERT INTO things VALUES ('t1')`);
      await dataSource().transaction(async (manager) => {
        await manager.query(`DELETE FROM things WHERE key = 't1'`);
        await service.recordDeletion(type, 't1', { manager });
      });
      expect(await db.sql.query(`SELECT * FROM things WHERE key = 't1'`)).toEqual([]);
      expect((await service.resolve(type, 't1')).state).toBe('gone');
    });

    it('leaves no tombstone behind when the caller’s transaction rolls back', async () => {
      await db.sql.query(`INSERT INTO things VALUES ('t2')`);
      await expect(
        dataSource().transaction(async (manager) => {
          await manager.query(`DELETE FROM things WHERE key = 't2'`);
          await service.recordDeletion(type, 't2', { manager });
          await service.recordMove(type, 'm1', 'm2', { manager });
          await service.recordMerge(type, ['x', 'y'], 'z', { manager });
          throw new Error('the caller changed its mind');
        }),
      ).rejects.toThrow('the caller changed its mind');
      expect(await db.sql.query(`SELECT * FROM things WHERE key = 't2'`)).toEqual([{ key: 't2' }]);
      expect(await rows()).toEqual([]);
    });

    it('rolls the delete back when its tombstone cannot be written', async () => {
      await db.sql.query(`INSERT INTO things VALUES ('t3')`);
      await db.sql.query(`
        CREATE FUNCTION refuse_tombstone() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'tombstone refused'; END $$`);
      await db.sql.query(`CREATE TRIGGER refuse BEFORE INSERT ON tombstones FOR EACH ROW EXECUTE FUNCTION refuse_tombstone()`);
      try {
        await expect(
          dataSource().transaction(async (manager) => {
            await manager.query(`DELETE FROM things WHERE key = 't3'`);
            await service.recordDeletion(type, 't3', { manager });
          }),
        ).rejects.toThrow(/tombstone refused/);
      } finally {
        await db.sql.query(`DROP TRIGGER refuse ON tombstones; DROP FUNCTION refuse_tombstone()`);
      }
      expect(await db.sql.query(`SELECT * FROM things WHERE key = 't3'`)).toEqual([{ key: 't3' }]);
    });
  });

  describe('validation', () => {
    it.each([
      ['an empty key', () => service.recordDeletion(type, ''), 'key'],
      ['a NUL byte', () => service.recordDeletion(type, 'a\u0000b'), 'key'],
      ['a key over 2048 bytes', () => service.recordDeletion(type, 'é'.repeat(1025)), 'key'],
      ['a non-string key', () => service.recordDeletion(type, 42 as unknown as string), 'key'],
      ['a bad type', () => service.recordDeletion('no spaces', 'a'), 'type'],
      ['an off-site protocol', () => service.recordDeletion(type, 'a', { alternative: 'javascript:alert(1)' }), 'alternative'],
      ['a protocol-relative link', () => service.recordDeletion(type, 'a', { alternative: '//evil.example' }), 'alternative'],
      ['a header-splitting link', () => service.recordDeletion(type, 'a', { alternative: '/x\r\nSet-Cookie: a=1' }), 'alternative'],
      ['an invalid date', () => service.recordDeletion(type, 'a', { expiresAt: new Date('nope') }), 'expiresAt'],
      ['a too long reason', () => service.recordDeletion(type, 'a', { reason: 'r'.repeat(2001) }), 'reason'],
      ['metadata that is not an object', () => service.recordDeletion(type, 'a', { metadata: [] as never }), 'metadata'],
      ['a scope with NUL', () => service.recordDeletion(type, 'a', { scope: '\u0000' }), 'scope'],
      ['a bad move target', () => service.recordMove(type, 'a', ''), 'to'],
      ['an empty merge', () => service.recordMerge(type, [], 'a'), 'sources'],
      ['a batch with two targets for one key', () => service.recordMoves(type, [{ from: 'a', to: 'b' }, { from: 'a', to: 'c' }]), 'moves'],
    ])('rejects %s with TombstoneValidationError and writes nothing', async (_, call, field) => {
      const error = await (call as () => Promise<unknown>)().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TombstoneValidationError);
      expect((error as TombstoneValidationError).field).toBe(field);
      expect(await rows()).toEqual([]);
    });

    it('answers none for keys that cannot have a tombstone, without a query', async () => {
      counter.reset();
      expect(await service.resolve(type, 'x'.repeat(3000))).toEqual({ state: 'none' });
      expect(await service.resolve(type, 'a\u0000')).toEqual({ state: 'none' });
      expect(await service.resolve(type, '\ud800')).toEqual({ state: 'none' });
      expect(counter.tombstoneQueries).toBe(0);
    });
  });
});

describe('module wiring', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
  });

  afterAll(async () => {
    await db?.drop();
  });

  it('works with a named DataSource', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [TypeOrmModule.forRoot({ ...db.options(), name: 'tombs' }), TombstoneModule.forRoot({ dataSource: 'tombs' })],
    }).compile();
    await moduleRef.init();
    try {
      const service = moduleRef.get(TombstoneService);
      await service.recordDeletion('named', 'a');
      expect((await service.resolve('named', 'a')).state).toBe('gone');
    } finally {
      await moduleRef.close();
    }
  });

  it('configures through forRootAsync with a factory, and with a class', async () => {
    @Injectable()
    class ConfigService {
      readonly timeout = 1234;
    }
    @Module({ providers: [ConfigService], exports: [ConfigService] })
    class ConfigModule {}
    @Injectable()
    class OptionsFactory {
      createTombstoneOptions(): TombstoneModuleOptions {
        return { problemDetails: 'always' };
      }
    }

    for (const tombstoneModule of [
      TombstoneModule.forRootAsync({
        imports: [ConfigModule],
        inject: [ConfigService],
        useFactory: (config: ConfigService) => ({ lookupTimeoutMs: config.timeout }),
        isGlobal: true,
      }),
      TombstoneModule.forRootAsync({ useClass: OptionsFactory }),
    ]) {
      const moduleRef = await Test.createTestingModule({ imports: [TypeOrmModule.forRoot(db.options()), tombstoneModule] }).compile();
      await moduleRef.init();
      expect(moduleRef.get(TombstoneService).dataSource).toBeInstanceOf(DataSource);
      await moduleRef.close();
    }
  });

  it('fails start-up with a fix when the entity is not registered', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [TypeOrmModule.forRoot({ ...db.options(), entities: [] }), TombstoneModule.forRoot()],
    }).compile();
    await expect(moduleRef.init()).rejects.toThrow(/TOMBSTONE_ENTITIES/);
    await moduleRef.close();
  });

  it('fails start-up with a fix on a bad option', async () => {
    // The DataSource is left alone: compile() fails with no module to close, and a connection it
    // were still opening would be cut by this suite's DROP DATABASE, and retried after the suite.
    await expect(
      Test.createTestingModule({
        imports: [TypeOrmModule.forRoot({ ...db.options(), manualInitialization: true }), TombstoneModule.forRoot({ lookupTimeoutMs: -1 })],
      }).compile(),
    ).rejects.toBeInstanceOf(TombstoneConfigurationError);
  });

  it('fails start-up when no DataSource has the given name', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [TypeOrmModule.forRoot(db.options()), TombstoneModule.forRoot({ dataSource: 'nope' })],
    }).compile();
    await expect(moduleRef.init()).rejects.toThrow(/named 'nope'/);
    await moduleRef.close();
  });
});
