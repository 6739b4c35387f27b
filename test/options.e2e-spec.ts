import { type CanActivate, Controller, Delete, type DynamicModule, Get, HttpCode, type INestApplication, Injectable, Param } from '@nestjs/common';
import { ApplicationConfig } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import { TombstoneAdminModule, type TombstoneAdminOptions } from '../src/admin/index.js';
import { TOMBSTONE_ADMIN_OPTIONS } from '../src/admin/admin.module-definition.js';
import { resolveTombstoneAdminOptions } from '../src/admin/admin.options.js';
import { TombstoneConfigurationError, TombstoneModule, type TombstoneModuleOptions, TombstoneRenderer, TombstoneService, Tombstoned } from '../src/index.js';
import { TOMBSTONE_OPTIONS } from '../src/tombstone.constants.js';
import { TombstoneContextInterceptor } from '../src/tombstone.context.js';
import { resolveTombstoneOptions } from '../src/tombstone.options-resolve.js';
import { ADAPTERS, bootApp } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

// The same options must behave the same through forRoot() and forRootAsync() (issue 11): each
// case below is registered every way, and each way must resolve the same options, register the
// same interceptors, and record the same actor.

const TYPE = 'options-thing';

/** Records a deletion while serving the request: the actor, if any, comes from the request. */
@Controller('things')
class ThingsController {
  constructor(private readonly tombstones: TombstoneService) {}

  @Delete(':key')
  @HttpCode(204)
  async remove(@Param('key') key: string): Promise<void> {
    await this.tombstones.recordDeletion(TYPE, key);
  }

  @Get(':key')
  @Tombstoned(TYPE, { param: 'key' })
  find(): null {
    return null;
  }
}

class QuietRenderer extends TombstoneRenderer {}

const actor = (req: { headers: Record<string, string | undefined> }) => req.headers['x-user'];

const CASES: [string, TombstoneModuleOptions][] = [
  ['no options', {}],
  ['an actor', { actor }],
  [
    'every option',
    {
      scope: { header: 'x-tenant-id' },
      problemDetails: 'always',
      problemTypeBase: 'https://api.example.com/problems/',
      cacheControl: { gone: false, notFound: 'private, max-age=60' },
      lookupTimeoutMs: 500,
      maxConcurrentLookups: 2,
      preparedStatements: false,
      requestIdHeader: 'x-correlation-id',
      renderer: QuietRenderer,
      actor,
      captureCheck: 'warn',
      hitCounts: { flushIntervalMs: 500 },
      missLog: { maxRows: 100 },
      cache: { maxEntries: 50, ttlMs: 1000, filter: { falsePositiveRate: 0.001 } },
    },
  ],
  ['the optional parts off', { hitCounts: false, missLog: true, cache: false }],
];

/** Every way to register the module with the same options. */
const REGISTRATIONS: [string, (options: TombstoneModuleOptions) => DynamicModule][] = [
  ['forRoot', (options) => TombstoneModule.forRoot(options)],
  ['forRootAsync (useFactory)', (options) => TombstoneModule.forRootAsync({ useFactory: async () => options })],
  [
    'forRootAsync (useClass)',
    (options) =>
      TombstoneModule.forRootAsync({
        useClass: class {
          createTombstoneOptions(): TombstoneModuleOptions {
            return options;
          }
        },
      }),
  ],
];

/**
 * The global interceptors Nest runs around every route of the app (the hot path's cost). A
 * factory's `null` stays in Nest's list but is dropped when each route's interceptors are built.
 */
function globalInterceptors(app: INestApplication): unknown[] {
  return (app as unknown as { config: ApplicationConfig }).config.getGlobalInterceptors().filter((i) => i != null);
}

describe('options through forRoot and forRootAsync', () => {
  let db: TestDatabase;
  let n = 0;

  beforeAll(async () => {
    db = await createTestDatabase();
  });

  afterAll(async () => {
    await db?.drop();
  });

  describe.each(ADAPTERS)('%s', (adapter) => {
    describe.each(REGISTRATIONS)('TombstoneModule.%s', (registration, register) => {
      describe.each(CASES)('with %s', (_label, options) => {
        let app: INestApplication;

        beforeAll(async () => {
          app = await bootApp(adapter, {
            imports: [TypeOrmModule.forRoot(db.options()), register(options)],
            controllers: [ThingsController],
          });
        });

        afterAll(async () => {
          await app?.close();
        });

        it('resolves the options as resolveTombstoneOptions() does', () => {
          expect(app.get(TOMBSTONE_OPTIONS, { strict: false })).toStrictEqual(resolveTombstoneOptions(options));
        });

        it('records the actor of the request only with an `actor`, and only then adds an interceptor', async () => {
          const key = `${adapter}-${registration}-${++n}`;
          await request(app.getHttpServer()).delete(`/things/${key}`).set('x-user', 'ana').expect(204);
          const [row] = await db.sql.query(`SELECT actor FROM tombstones WHERE resource_type = $1 AND resource_key = $2`, [TYPE, key]);
          expect(row).toEqual({ actor: options.actor ? 'ana' : null });
          const interceptors = globalInterceptors(app);
          expect(interceptors).toHaveLength(options.actor ? 1 : 0);
          expect(interceptors.every((i) => i instanceof TombstoneContextInterceptor)).toBe(true);
        });

        it('answers problem details of the configured types (through a custom renderer too)', async () => {
          const key = `${adapter}-${registration}-${++n}`;
          await request(app.getHttpServer()).delete(`/things/${key}`).expect(204);
          const res = await request(app.getHttpServer()).get(`/things/${key}`).set('accept', 'application/problem+json').expect(410);
          expect(JSON.parse(res.text).type).toBe(`${options.problemTypeBase ?? 'tag:nestjs-tombstones,2026:'}gone`);
        });
      });
    });
  });

  describe.each(REGISTRATIONS)('TombstoneModule.%s with an invalid option', (_registration, register) => {
    it('refuses to start with the same message', async () => {
      // Nothing else is needed: the options are resolved before anything uses them.
      const boot = bootApp('express', { imports: [register({ lookupTimeoutMs: 0 })] });
      await expect(boot).rejects.toThrow(TombstoneConfigurationError);
      await expect(boot).rejects.toThrow('TombstoneModule: lookupTimeoutMs must be a whole number of milliseconds from 1 to 60000, not 0.');
    });
  });

  describe('TombstoneAdminModule', () => {
    @Injectable()
    class AllowAll implements CanActivate {
      canActivate(): boolean {
        return true;
      }
    }

    const ADMIN_CASES: [string, TombstoneAdminOptions][] = [
      ['a guard', { guard: AllowAll }],
      ['no access control, on purpose', { allowWithoutAccessControl: true }],
      [
        'every option',
        {
          guard: new AllowAll(),
          actor: { header: 'x-admin-user' },
          alternativeHosts: ['Shop.Example.com'],
          maxResolveKeys: 10,
          maxPageSize: 20,
          maxImportRows: 30,
          maxImportBytes: 4096,
        },
      ],
    ];
    const ADMIN_REGISTRATIONS: [string, (options: TombstoneAdminOptions) => DynamicModule][] = [
      ['forRoot', (options) => TombstoneAdminModule.forRoot(options)],
      ['forRootAsync (useFactory)', (options) => TombstoneAdminModule.forRootAsync({ useFactory: async () => options })],
    ];

    describe.each(ADMIN_REGISTRATIONS)('%s', (_registration, register) => {
      it.each(ADMIN_CASES)('with %s, resolves the options as resolveTombstoneAdminOptions() does', async (_label, options) => {
        const app = await bootApp('express', {
          imports: [TypeOrmModule.forRoot(db.options()), TombstoneModule.forRoot({ isGlobal: true }), register(options)],
        });
        try {
          expect(app.get(TOMBSTONE_ADMIN_OPTIONS, { strict: false })).toStrictEqual(resolveTombstoneAdminOptions(options));
        } finally {
          await app.close();
        }
      });
    });
  });
});
