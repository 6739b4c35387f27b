import { Controller, Get, type INestApplication, Module } from '@nestjs/common';
import { HealthCheck, HealthCheckService, TerminusModule } from '@nestjs/terminus';
import { TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import type { PostgresDataSourceOptions } from 'typeorm/driver/postgres/PostgresDataSourceOptions.js';
import { TombstoneEventsModule } from '../src/events/index.js';
import { TombstoneModule, type TombstoneModuleOptions, TombstoneService } from '../src/index.js';
import { TombstoneTable } from '../src/table/tombstone.table.js';
import { TombstoneHealthIndicator } from '../src/terminus/index.js';
import { ADAPTERS, bootApp } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';
import { type Proxy, startProxy } from './support/proxy.js';
import { QueryCounter } from './support/query-counter.js';

/** /health as an app writes it; /health/fast waits 200 ms at most and asks the database at every check; /health/kept keeps an answer a minute. */
@Controller('health')
class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly tombstones: TombstoneHealthIndicator,
  ) {}

  @Get()
  @HealthCheck()
  check() {
    return this.health.check([() => this.tombstones.isHealthy('tombstones')]);
  }

  @Get('fast')
  @HealthCheck()
  fast() {
    return this.health.check([() => this.tombstones.isHealthy('tombstones', { timeoutMs: 200, cacheMs: 0 })]);
  }

  @Get('kept')
  @HealthCheck()
  kept() {
    return this.health.check([() => this.tombstones.isHealthy('tombstones', { cacheMs: 60_000 })]);
  }
}

@Module({ imports: [TerminusModule], controllers: [HealthController], providers: [TombstoneHealthIndicator] })
class HealthModule {}

const selectOnes = (counter: QueryCounter) => counter.queries.filter((q) => q.trim() === 'SELECT 1').length;

describe.each(ADAPTERS)('health through Terminus (%s)', (adapter) => {
  let db: TestDatabase;
  let app: INestApplication;
  let http: ReturnType<typeof request>;
  const counter = new QueryCounter();

  beforeAll(async () => {
    db = await createTestDatabase();
    app = await bootApp(adapter, {
      imports: [TypeOrmModule.forRoot({ ...db.options(), logging: true, logger: counter }), TombstoneModule.forRoot({ missLog: true }), HealthModule],
    });
    http = request(app.getHttpServer());
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  it('up: 200, every part up, and nothing secret', async () => {
    const res = await http.get('/health').expect(200);
    expect(res.body).toMatchObject({
      status: 'ok',
      info: {
        tombstones: {
          status: 'up',
          database: { status: 'up', responseTimeMs: expect.any(Number) },
          listener: { status: 'up', listening: true },
          cache: { status: 'up', state: 'coherent', filter: { status: 'up', ready: true, overCapacity: false } },
          breaker: { status: 'up', state: 'closed' },
          counters: { status: 'up', hits: { dropped: 0 }, misses: { dropped: 0 } },
        },
      },
      error: {},
    });
    expect(res.body.info.tombstones.message).toBeUndefined();
    expect(res.body.info.tombstones.events).toBeUndefined();
    // Whether the filter is over capacity, not how many keys it holds (a count that moves with
    // every tombstone written, in every tenant).
    expect(Object.keys(res.body.info.tombstones.cache.filter).sort()).toEqual(['overCapacity', 'ready', 'status']);
    // Neither the server nor the database is named (a port alone could match a number).
    expect(res.text).not.toContain(new URL(db.url).hostname);
    expect(res.text).not.toContain(new URL(db.url).pathname.slice(1));
    expect(res.text).not.toContain('postgres');
  });

  it('a storm of scrapes costs the database one query per period', async () => {
    counter.reset();
    await http.get('/health/fast').expect(200);
    expect(selectOnes(counter)).toBe(1);
    await http.get('/health/kept').expect(200);
    counter.reset();
    const answers = await Promise.all(Array.from({ length: 50 }, () => http.get('/health/kept')));
    expect(answers.every((res) => res.status === 200 && res.body.info.tombstones.database.cached === true)).toBe(true);
    expect(selectOnes(counter)).toBe(0);
  });
});

// The faults, on one adapter: what the indicator reads does not depend on it.
describe('health through Terminus: faults', () => {
  let db: TestDatabase;
  let proxy: Proxy;
  let app: INestApplication | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
  });

  beforeEach(async () => {
    proxy = await startProxy(db.url);
  });

  afterEach(async () => {
    proxy.state.frozen = false;
    proxy.state.refusing = false;
    proxy.cut();
    await app?.close();
    app = undefined;
    await proxy.close();
  });

  afterAll(async () => {
    await db?.drop();
  });

  async function boot(viaProxy: 'database' | 'listener', options: TombstoneModuleOptions = {}, extra: unknown[] = []) {
    const url = proxy.url(db.url);
    app = await bootApp('express', {
      imports: [
        TypeOrmModule.forRoot({ ...(db.options() as PostgresDataSourceOptions), ...(viaProxy === 'database' ? { url } : {}) }),
        TombstoneModule.forRoot({ isGlobal: true, ...options, cache: { reloadJitterMs: 0, ...(viaProxy === 'listener' ? { listen: url } : {}) } }),
        HealthModule,
        ...(extra as []),
      ],
    });
    return request(app.getHttpServer());
  }

  const terminateListener = () =>
    db.sql.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'nestjs-tombstones listener' AND datname = current_database()`);

  it('the listener lost: degraded (still 200) while it cannot listen, up again once it does', async () => {
    const http = await boot('listener');
    await http.get('/health').expect(200);
    // It cannot come back until the proxy lets it.
    proxy.state.refusing = true;
    await terminateListener();
    let degraded: request.Response | undefined;
    await eventually(async () => {
      degraded = await http.get('/health').expect(200);
      expect(degraded.body.status).toBe('degraded');
    });
    expect(degraded!.body.info.tombstones).toMatchObject({
      status: 'degraded',
      message: expect.stringMatching(/^not listening for changes: every miss is a query until it listens again \(answers stay right\)\.$/),
      database: { status: 'up' },
      listener: { status: 'degraded', listening: false },
      cache: { status: 'degraded', state: 'waiting' },
    });
    proxy.state.refusing = false;
    await eventually(async () => {
      const res = await http.get('/health').expect(200);
      expect(res.body.status).toBe('ok');
      expect(res.body.info.tombstones).toMatchObject({ listener: { listening: true }, cache: { filter: { ready: true } } });
    });
  }, 60_000);

  it('the database refusing connections: down (503), up again once it answers', async () => {
    const http = await boot('database');
    await http.get('/health/fast').expect(200);
    proxy.state.refusing = true;
    proxy.cut();
    let down: request.Response | undefined;
    await eventually(async () => {
      down = await http.get('/health/fast').expect(503);
    });
    expect(down!.body).toMatchObject({
      status: 'error',
      error: { tombstones: { status: 'down', database: { status: 'down', error: expect.any(String) }, listener: { listening: false } } },
    });
    expect(down!.body.error.tombstones.message).toMatch(/^the database check failed \([^)]+\): writes fail, and misses the cache cannot answer get the plain 404; /);
    expect(down!.text).not.toContain(new URL(proxy.url(db.url)).hostname);
    proxy.state.refusing = false;
    await eventually(async () => {
      const res = await http.get('/health/fast');
      expect(res.body.status).toBe('ok');
    });
  }, 60_000);

  it('a database that stops answering: down after timeoutMs, with one query held, not one per check', async () => {
    const http = await boot('database', { cache: false });
    await http.get('/health/fast').expect(200);
    proxy.state.frozen = true;
    for (let i = 0; i < 3; i++) {
      const res = await http.get('/health/fast').expect(503);
      expect(res.body.error.tombstones.database).toMatchObject({ status: 'down', error: 'timeout' });
      expect(res.body.error.tombstones.message).toMatch(/^the database did not answer within 200 ms/);
    }
    const pool = poolOf(app!);
    expect(pool.totalCount - pool.idleCount).toBe(1);
  }, 60_000);

  it('with TombstoneEventsModule: dead letters reported, and degraded', async () => {
    const failing = {
      name: 'failing',
      deliver: async () => {
        throw new Error('the receiver is down');
      },
    };
    const http = await boot('database', {}, [TombstoneEventsModule.forRoot({ sinks: [failing], maxAttempts: 1, pollIntervalMs: 50, listeners: false })]);
    const healthy = await http.get('/health/fast').expect(200);
    expect(healthy.body.info.tombstones.events).toEqual({ status: 'up', cached: false, sinks: 1, pending: 0, deadLetters: 0, oldestPendingMs: 0 });
    await app!.get(TombstoneService).recordDeletion('article', 'gone');
    await eventually(async () => {
      const res = await http.get('/health/fast').expect(200);
      expect(res.body.status).toBe('degraded');
      expect(res.body.info.tombstones).toMatchObject({
        status: 'degraded',
        message: '1 event deliveries are dead letters: retry or discard them (admin endpoints, /events).',
        database: { status: 'up' },
        events: { status: 'degraded', sinks: 1, pending: 0, deadLetters: 1 },
      });
    });
  }, 60_000);
});

/** The pool of the app's DataSource. */
function poolOf(app: INestApplication): { totalCount: number; idleCount: number } {
  return (app.get(TombstoneTable).dataSource.driver as unknown as { master: { totalCount: number; idleCount: number } }).master;
}
