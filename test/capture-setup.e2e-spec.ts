import {
  type CanActivate,
  Controller,
  Delete,
  type ExecutionContext,
  HttpCode,
  Injectable,
  type INestApplication,
  Param,
  ParseIntPipe,
  UseGuards,
} from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { getDataSourceToken, InjectDataSource, TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import { Column, DataSource, DeleteDateColumn, Entity, PrimaryGeneratedColumn } from 'typeorm';
import { installTombstoneCapture, TOMBSTONE_MIGRATIONS, TombstoneConfigurationError, TombstoneModule, type TombstoneModuleOptions, TombstoneTracked } from '../src/index.js';
import { CAPTURE_ENTITIES, CreateCaptureFixtures1763900000000, NotInstalled, Post } from './fixtures/capture.fixture.js';
import { bootApp } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { CAPTURE_TRIGGERS } from '../src/capture/tombstone.capture.js';
import { type EntityClass } from '../src/capture/tombstone.tracked.js';
import { QueryCounter } from './support/query-counter.js';

/** The table of Post, with its slug now declared 'hidden' on delete: the installed triggers are out of date. */
@Entity({ name: 'cap_posts' })
@TombstoneTracked({ type: 'post', key: 'slug', scope: 'tenant', onDelete: 'hidden' })
@TombstoneTracked({ type: 'post-id', key: 'id', scope: 'tenant', onDelete: 'hidden' })
class ChangedPost {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'text' })
  tenant!: string;

  @Column({ type: 'text', nullable: true })
  slug!: string | null;

  @DeleteDateColumn({ name: 'deleted_at', type: 'timestamptz', nullable: true })
  deletedAt!: Date | null;
}

/** Stands in for an authentication guard: it sets `req.user`, after the module's middleware ran. */
@Injectable()
class FakeAuthGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<{ headers: Record<string, string>; user?: { id: string } }>();
    if (req.headers['x-user']) req.user = { id: req.headers['x-user'] };
    return true;
  }
}

@Controller('posts')
@UseGuards(FakeAuthGuard)
class PostsController {
  constructor(@InjectDataSource() private readonly db: DataSource) {}

  @Delete(':id')
  @HttpCode(204)
  async remove(@Param('id', ParseIntPipe) id: number): Promise<void> {
    await this.db.getRepository(Post).delete({ id });
  }

  @Delete(':id/in-transaction')
  @HttpCode(204)
  async removeInTransaction(@Param('id', ParseIntPipe) id: number): Promise<void> {
    await this.db.transaction((manager) => manager.delete(Post, { id }));
  }
}

describe('capture set-up', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    const setup = new DataSource({
      ...db.options({ entities: CAPTURE_ENTITIES }),
      migrations: [...TOMBSTONE_MIGRATIONS, CreateCaptureFixtures1763900000000],
    });
    await setup.initialize();
    await setup.runMigrations();
    await setup.destroy();
  });

  afterAll(async () => {
    await db?.drop();
  });

  /** Starts and stops a module; what it logged as warnings and what it asked the catalog go to `seen`. */
  const boot = async (entities: EntityClass[], options: TombstoneModuleOptions = {}, seen?: { warnings: string[]; counter: QueryCounter }) => {
    const moduleRef = await Test.createTestingModule({
      imports: [
        TypeOrmModule.forRoot(seen ? { ...db.options({ entities }), logging: true, logger: seen.counter } : db.options({ entities })),
        TombstoneModule.forRoot(options),
      ],
    }).compile();
    moduleRef.useLogger(seen ? { log: () => undefined, error: () => undefined, warn: (m: unknown) => void seen.warnings.push(String(m)) } : false);
    try {
      await moduleRef.init();
    } finally {
      await moduleRef.close();
    }
  };

  describe('the start-up check', () => {
    it('passes when every tracked entity has its triggers', async () => {
      await expect(boot(CAPTURE_ENTITIES)).resolves.toBeUndefined();
    });

    it('refuses to start when a tracked entity has no triggers, and says what to add', async () => {
      const error = await boot([...CAPTURE_ENTITIES, NotInstalled]).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TombstoneConfigurationError);
      expect((error as Error).message).toMatch(/NotInstalled \(cap_untracked_yet\) is @TombstoneTracked but its capture triggers are not installed/);
      expect((error as Error).message).toMatch(/installTombstoneCapture\(queryRunner, Entity\)/);
    });

    it('refuses to start when the declarations changed since the triggers were installed', async () => {
      const error = await boot([ChangedPost]).catch((e: unknown) => e);
      expect((error as Error).message).toMatch(/do not match its @TombstoneTracked declarations/);
    });

    it("'warn' starts anyway and says what is missing, 'off' does not look", async () => {
      // The capture check's reads of the triggers (the lookup cache's filter snapshot reads pg_trigger too).
      const checks = (seen: { counter: QueryCounter }) => seen.counter.queries.filter((q) => /SELECT tgname, tgargs/.test(q)).length;
      const warned = { warnings: [] as string[], counter: new QueryCounter() };
      await boot([...CAPTURE_ENTITIES, NotInstalled], { captureCheck: 'warn' }, warned);
      expect(warned.warnings).toEqual([expect.stringMatching(/NotInstalled \(cap_untracked_yet\) is @TombstoneTracked but its capture triggers are not installed/)]);
      expect(checks(warned)).toBeGreaterThan(0);

      const off = { warnings: [] as string[], counter: new QueryCounter() };
      await boot([...CAPTURE_ENTITIES, NotInstalled], { captureCheck: 'off' }, off);
      expect(off.warnings).toEqual([]);
      expect(checks(off)).toBe(0);
    });

    it('refuses to start when a trigger was disabled', async () => {
      await db.sql.query(`ALTER TABLE cap_handles DISABLE TRIGGER ${CAPTURE_TRIGGERS.delete}`);
      try {
        await expect(boot(CAPTURE_ENTITIES)).rejects.toThrow(/Handle \(cap_handles\) has capture triggers that do not match/);
      } finally {
        await db.sql.query(`ALTER TABLE cap_handles ENABLE TRIGGER ${CAPTURE_TRIGGERS.delete}`);
      }
    });
  });

  describe('installTombstoneCapture', () => {
    const install = async (spec: Parameters<typeof installTombstoneCapture>[1]) => {
      const runner = db.sql.createQueryRunner();
      try {
        await installTombstoneCapture(runner, spec);
      } finally {
        await runner.release();
      }
    };
    const key = { type: 'x', column: 'code', scope: null, onDelete: 'deleted', reuse: 'allow', permanent: true } as const;

    beforeAll(async () => {
      await db.sql.query(`CREATE TABLE cap_install (id serial PRIMARY KEY, code text, created timestamptz, "odd ""name" text)`);
    });

    it('is idempotent, and quotes identifiers', async () => {
      await install({ v: 1, table: 'cap_install', soft: null, keys: [key, { ...key, type: 'odd', column: 'odd "name' }] });
      await install({ v: 1, table: 'cap_install', soft: null, keys: [key, { ...key, type: 'odd', column: 'odd "name' }] });
      const [{ n }] = await db.sql.query(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = 'cap_install'::regclass AND NOT tgisinternal`);
      expect(n).toBe(4);
      await db.sql.query(`INSERT INTO cap_install (code, "odd ""name") VALUES ('c1', 'o1')`);
      await db.sql.query(`DELETE FROM cap_install`);
      const rows = await db.sql.query(`SELECT resource_type, resource_key FROM tombstones WHERE resource_type IN ('x', 'odd') ORDER BY 1`);
      expect(rows).toEqual([
        { resource_type: 'odd', resource_key: 'o1' },
        { resource_type: 'x', resource_key: 'c1' },
      ]);
    });

    it.each([
      [{ v: 1, table: 'no_such_table', soft: null, keys: [key] }, /table no_such_table does not exist/],
      [{ v: 1, table: 'cap_install', soft: null, keys: [{ ...key, column: 'nope' }] }, /has no column 'nope'/],
      [{ v: 1, table: 'cap_install', soft: 'nope', keys: [key] }, /has no column 'nope'/],
      [{ v: 1, table: 'cap_install', soft: null, keys: [{ ...key, column: 'created' }] }, /is of type timestamp with time zone, which is not a key type/],
      [{ v: 1, table: 'cap_install', soft: null, keys: [{ ...key, scope: 'created' }] }, /scope column cap_install.created is of type timestamp with time zone/],
      [{ v: 1, table: 'cap_install', schema: '', soft: null, keys: [key] }, /schema must be a schema name or null/],
      [{ v: 1, table: 'cap_install', soft: null, keys: [] }, /keys must list at least one key/],
      [{ v: 1, table: 'cap_install', soft: null, keys: [{ ...key, reuse: 'sometimes' }] }, /reuse must be/],
      [{ v: 1, table: 'cap_install', soft: null, keys: [key, key] }, /listed twice/],
      [{ v: 2, table: 'cap_install', soft: null, keys: [key] }, /v must be 1/],
    ])('rejects a bad spec with a clear error (%#)', async (spec, message) => {
      await expect(install(spec as never)).rejects.toThrow(message);
    });

    it('is removed with its generated function, leaving the shared ones and the tombstones', async () => {
      const { removeTombstoneCapture } = await import('../src/index.js');
      const functions = async () =>
        (
          (await db.sql.query(`SELECT proname FROM pg_proc WHERE proname LIKE 'tombstones_capture%' ORDER BY 1`)) as { proname: string }[]
        ).map((r) => r.proname);
      const before = await functions();
      expect(before.some((name) => name.startsWith('tombstones_capture_cap_install_'))).toBe(true);
      const runner = db.sql.createQueryRunner();
      try {
        await removeTombstoneCapture(runner, 'cap_install');
      } finally {
        await runner.release();
      }
      const after = await functions();
      expect(after.some((name) => name.startsWith('tombstones_capture_cap_install_'))).toBe(false);
      expect(after).toEqual(expect.arrayContaining(['tombstones_capture_change', 'tombstones_capture_mark']));
      const [{ n }] = await db.sql.query(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = 'cap_install'::regclass AND NOT tgisinternal`);
      expect(n).toBe(0);
      expect(Number((await db.sql.query(`SELECT count(*) AS n FROM tombstones WHERE resource_type = 'x'`))[0].n)).toBe(1);
    });

    it('rejects an entity that is not tracked', async () => {
      class Plain {}
      await expect(install(Plain)).rejects.toThrow(/Plain is not tracked/);
    });
  });

  const actor = (req: unknown) => (req as { user?: { id: string } }).user?.id;
  describe.each([
    ['express', 'forRoot'],
    ['fastify', 'forRoot'],
    ['express', 'forRootAsync'],
    ['fastify', 'forRootAsync'],
  ] as const)('the actor of a request (%s, %s)', (adapter, registration) => {
    let app: INestApplication;

    beforeAll(async () => {
      app = await bootApp(adapter, {
        imports: [
          TypeOrmModule.forRoot(db.options({ entities: CAPTURE_ENTITIES })),
          registration === 'forRoot'
            ? TombstoneModule.forRoot({ actor })
            : TombstoneModule.forRootAsync({ useFactory: () => ({ actor }) }),
        ],
        controllers: [PostsController],
      });
    });

    afterAll(async () => {
      await app?.close();
    });

    it('is read from the request when the tombstone is written (after the guards ran)', async () => {
      const tenant = `actor-${adapter}-${registration}`;
      const [a, b, c] = await app.get<DataSource>(getDataSourceToken()).getRepository(Post).save([
        { tenant, slug: 'by-ana' },
        { tenant, slug: 'by-bo' },
        { tenant, slug: 'anonymous' },
      ]);
      const http = request(app.getHttpServer());
      await Promise.all([
        http.delete(`/posts/${a.id}`).set('x-user', 'ana').expect(204),
        http.delete(`/posts/${b.id}/in-transaction`).set('x-user', 'bo').expect(204),
        http.delete(`/posts/${c.id}`).expect(204),
      ]);
      const rows = await db.sql.query(
        `SELECT resource_key AS key, actor FROM tombstones WHERE resource_type = 'post' AND scope = $1 ORDER BY 1`,
        [tenant],
      );
      expect(rows).toEqual([
        { key: 'anonymous', actor: null },
        { key: 'by-ana', actor: 'ana' },
        { key: 'by-bo', actor: 'bo' },
      ]);
    });
  });
});
