import { jest } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import pg from 'pg';
import request from 'supertest';
import { TombstoneReplicas } from '../src/cache/tombstone.replicas.js';
import { TOMBSTONE_ENTITIES, TOMBSTONE_MIGRATIONS, TombstoneModule, TombstoneService } from '../src/index.js';
import { CAPTURE_ENTITIES, CreateCaptureFixtures1763900000000, Post, PostsController } from './fixtures/capture.fixture.js';
import { bootApp, settled } from './support/app.js';
import { eventually } from './support/eventually.js';
import { type ReplicatedPair, startReplicatedPair } from './support/standby.js';

/** Keys per kind of change in each fencing round. */
const KEYS = 20;
const TENANT = 't';

/**
 * Cold lookups on a read replica (`lookups: 'replica'`), against a real streaming standby of a
 * private primary (test/support/standby.ts), with lag injected by pausing its replay. The filter
 * is off, so that every miss the store cannot answer is a lookup; the app's own reads go to the
 * primary (`defaultMode: 'master'`), so that only the module's lookups can read the replica.
 * One adapter: which server answers does not depend on it.
 */
describe('read replicas', () => {
  let pair: ReplicatedPair;
  let database: Awaited<ReturnType<ReplicatedPair['createDatabase']>>;
  let app: INestApplication;
  let replicas: TombstoneReplicas;
  let service: TombstoneService;
  /** Another writer on the primary: the app hears of its changes only through their notifications. */
  let writer: pg.Client;

  beforeAll(async () => {
    pair = await startReplicatedPair();
    database = await pair.createDatabase();
    app = await bootApp('express', {
      imports: [
        TypeOrmModule.forRoot({
          type: 'postgres',
          replication: { master: { url: database.primary }, slaves: [{ url: database.standby }], defaultMode: 'master' },
          entities: [...TOMBSTONE_ENTITIES, ...CAPTURE_ENTITIES],
          migrations: [...TOMBSTONE_MIGRATIONS, CreateCaptureFixtures1763900000000],
          migrationsRun: true,
          logging: false,
        }),
        TombstoneModule.forRoot({ isGlobal: true, lookups: 'replica', hitCounts: false, cache: { filter: false } }),
      ],
      controllers: [PostsController],
    });
    replicas = app.get(TombstoneReplicas, { strict: false });
    service = app.get(TombstoneService);
    writer = new pg.Client({ connectionString: database.primary });
    await writer.connect();
    await pair.caughtUp();
  });

  afterAll(async () => {
    await writer?.end();
    await app?.close();
    await database?.drop();
    await pair?.stop();
  });

  const answerOf = (res: request.Response) => `${res.status}${res.status === 301 ? ` ${res.headers.location as string}` : ''}`;
  const get = async (slug: string) => {
    const started = performance.now();
    const res = await request(app.getHttpServer()).get(`/posts/${TENANT}/${slug}`);
    return { answer: answerOf(res), ms: performance.now() - started };
  };

  /** Cold lookups of keys no one asked for go to the replica, once it has caught up (a probe saw it). */
  let fresh = 0;
  const replicaAnswers = async () => {
    const before = replicas.stats().replicaReads;
    await eventually(async () => {
      expect((await get(`fresh-${++fresh}`)).answer).toBe('404');
      expect(replicas.stats().replicaReads).toBeGreaterThan(before);
    });
  };

  it('reads cold lookups from the replica: a write the app is not told of, on the primary while replay is paused, is not in its answer', async () => {
    await replicaAnswers();
    await pair.pauseReplay();
    try {
      // The notify trigger is off for this one transaction: nobody hears of the row.
      await writer.query('BEGIN');
      await writer.query('ALTER TABLE tombstones DISABLE TRIGGER tombstones_notify_ins');
      await writer.query(`INSERT INTO tombstones (scope, resource_type, resource_key, kind) VALUES ($1, 'post', 'unannounced', 'deleted')`, [TENANT]);
      await writer.query('ALTER TABLE tombstones ENABLE TRIGGER tombstones_notify_ins');
      await writer.query('COMMIT');
      const before = replicas.stats().replicaReads;
      expect((await get('unannounced')).answer).toBe('404');
      expect(replicas.stats().replicaReads).toBe(before + 1);
      // The primary has it: TombstoneService.resolve() reads the primary.
      expect(await service.resolve('post', 'unannounced', TENANT)).toMatchObject({ state: 'gone' });
    } finally {
      await pair.resumeReplay();
    }
  });

  it('listens on the primary: a standby cannot LISTEN', async () => {
    const listeners = async (url: string) =>
      (await queryOn(url, `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'nestjs-tombstones listener'`))[0].n;
    expect(await listeners(database.primary)).toBe(1);
    expect(await listeners(database.standby)).toBe(0);
  });

  /**
   * Renames (a → b, then b → c, collapsing a → c) and deletes (d) by another writer, and the
   * app's own deletes (e, through its repository, captured) and recordings (own) while the
   * standby's replay is paused: what the app answers right after, once it has heard of them, and
   * again after replay resumed (what it cached). With the fence, and with the fence switched off
   * (every replica connection a probe has seen taken as caught up), which shows what it prevents.
   */
  const round = async (prefix: string) => {
    const keys = Array.from({ length: KEYS }, (_, i) => i + 1);
    await writer.query(`INSERT INTO cap_posts (tenant, slug) SELECT $1, $2 || '-' || kind || '-' || g FROM generate_series(1, $3::int) g, unnest('{a,d,e}'::text[]) kind`, [
      TENANT,
      prefix,
      KEYS,
    ]);
    await writer.query(`UPDATE cap_posts SET slug = replace(slug, '-a-', '-b-') WHERE tenant = $1 AND slug LIKE $2`, [TENANT, `${prefix}-a-%`]);
    await pair.caughtUp();
    await settled(app);
    // What the app knows beforehand, read from the replica once it has caught up, and kept.
    await replicaAnswers();
    for (const i of keys) {
      expect((await get(`${prefix}-a-${i}`)).answer).toBe(`301 /posts/${TENANT}/${prefix}-b-${i}`);
      expect((await get(`${prefix}-d-${i}`)).answer).toBe('200');
      expect((await get(`${prefix}-e-${i}`)).answer).toBe('200');
      expect((await get(`${prefix}-own-${i}`)).answer).toBe('404');
    }
    const expected = new Map<string, string>();
    for (const i of keys) {
      expected.set(`${prefix}-a-${i}`, `301 /posts/${TENANT}/${prefix}-c-${i}`);
      expected.set(`${prefix}-b-${i}`, `301 /posts/${TENANT}/${prefix}-c-${i}`);
      expected.set(`${prefix}-d-${i}`, '410');
      expected.set(`${prefix}-e-${i}`, '410');
      expected.set(`${prefix}-own-${i}`, '410');
    }
    const stale = { served: 0, kept: 0 };
    const latencies: number[] = [];
    await pair.pauseReplay();
    const readsBefore = replicas.stats().replicaReads;
    try {
      await writer.query(`UPDATE cap_posts SET slug = replace(slug, '-b-', '-c-') WHERE tenant = $1 AND slug LIKE $2`, [TENANT, `${prefix}-b-%`]);
      await writer.query(`DELETE FROM cap_posts WHERE tenant = $1 AND slug LIKE $2`, [TENANT, `${prefix}-d-%`]);
      await settled(app);
      for (const i of keys) {
        // The app's own writes: no waiting for anything before the next request.
        await service.recordDeletion('post', `${prefix}-own-${i}`, { scope: TENANT });
        await service.dataSource.getRepository(Post).delete({ tenant: TENANT, slug: `${prefix}-e-${i}` });
        for (const kind of ['a', 'b', 'd', 'e', 'own']) {
          const { answer, ms } = await get(`${prefix}-${kind}-${i}`);
          latencies.push(ms);
          if (answer !== expected.get(`${prefix}-${kind}-${i}`)) stale.served++;
        }
      }
    } finally {
      await pair.resumeReplay();
    }
    const replicaReadsWhilePaused = replicas.stats().replicaReads - readsBefore;
    await pair.caughtUp();
    for (const [slug, answer] of expected) if ((await get(slug)).answer !== answer) stale.kept++;
    return { stale, latencies, replicaReadsWhilePaused, answers: expected.size };
  };

  it('never answers, nor keeps, what a change it has heard of replaced: replica reads wait for the standby to replay it, the primary answers meanwhile', async () => {
    const fenced = await round('fenced');
    expect(fenced.stale).toEqual({ served: 0, kept: 0 });
    // While the standby was behind, no lookup read it; once it has caught up, lookups read it again.
    expect(fenced.replicaReadsWhilePaused).toBe(0);
    await replicaAnswers();

    // The same without the fence: what it keeps out.
    const fence = jest.spyOn(replicas as unknown as { fenced(replayed: bigint | undefined): boolean }, 'fenced').mockImplementation((replayed) => replayed !== undefined);
    let unfenced: Awaited<ReturnType<typeof round>>;
    try {
      unfenced = await round('unfenced');
    } finally {
      fence.mockRestore();
    }
    expect(unfenced.stale.served).toBeGreaterThan(0);
    expect(unfenced.stale.kept).toBeGreaterThan(0);
    report('fencing', { fenced, unfenced, replicaLatency: await coldReplicaLatency() });
  });

  /** How long a cold lookup read from the replica takes, through HTTP, for the report. */
  const coldReplicaLatency = async () => {
    const latencies: number[] = [];
    for (let i = 0; i < 50; i++) {
      const before = replicas.stats().replicaReads;
      const { ms } = await get(`fresh-${++fresh}`);
      if (replicas.stats().replicaReads > before) latencies.push(ms);
    }
    return latencies;
  };

  it('reads the primary while the replica is down, and the replica again once it is back', async () => {
    const deleted = Array.from({ length: 5 }, (_, i) => `down-${i}`);
    for (const key of deleted) await service.recordDeletion('post', key, { scope: TENANT });
    await pair.stopStandby();
    try {
      for (const key of deleted) expect((await get(key)).answer).toBe('410');
      await eventually(async () => {
        expect((await get(`fresh-${++fresh}`)).answer).toBe('404');
        expect(replicas.stats().out).toBe(1);
      });
    } finally {
      await pair.startStandby();
    }
    await pair.caughtUp();
    await replicaAnswers();
    expect(replicas.stats().out).toBe(0);
  });

  it('a WAL position read by the writing transaction is not enough: the standby can pass it without having replayed the commit', async () => {
    const standby = new pg.Client({ connectionString: database.standby });
    await standby.connect();
    try {
      await writer.query('BEGIN');
      await writer.query(`INSERT INTO tombstones (scope, resource_type, resource_key, kind) VALUES ($1, 'post', 'uncommitted', 'deleted')`, [TENANT]);
      // The latest a trigger could read: after its statement, before the commit record.
      const [{ lsn: inTrigger }] = (await writer.query(`SELECT pg_current_wal_insert_lsn()::text AS lsn`)).rows as { lsn: string }[];
      // Other writes move the WAL on, and the standby replays past that position.
      await queryOn(database.primary, `INSERT INTO cap_posts (tenant, slug) VALUES ($1, 'moves-the-wal')`, [TENANT]);
      await pair.caughtUp();
      await pair.pauseReplay();
      try {
        await writer.query('COMMIT');
        const [{ passed, visible }] = (
          await standby.query(
            `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS passed,
                    EXISTS (SELECT 1 FROM tombstones WHERE resource_key = 'uncommitted') AS visible`,
            [inTrigger],
          )
        ).rows as { passed: boolean; visible: boolean }[];
        expect({ passed, visible }).toEqual({ passed: true, visible: false });
        // What the module reads once it has heard of the change: past the commit, so past the standby.
        const [{ ahead }] = await queryOn(database.primary, `SELECT pg_current_wal_insert_lsn() > $1::pg_lsn AS ahead`, [
          (await standby.query(`SELECT pg_last_wal_replay_lsn()::text AS lsn`)).rows[0].lsn,
        ]);
        expect(ahead).toBe(true);
      } finally {
        await pair.resumeReplay();
      }
    } finally {
      await writer.query('ROLLBACK').catch(() => undefined);
      await standby.end();
    }
  });
});

async function queryOn(url: string, sql: string, values: unknown[] = []): Promise<Record<string, unknown>[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(sql, values)).rows as Record<string, unknown>[];
  } finally {
    await client.end();
  }
}

/** Numbers for a human (`REPLICA_REPORT=1`): counts of stale answers, and latencies in ms. */
function report(what: string, results: Record<string, unknown>): void {
  if (!process.env.REPLICA_REPORT) return;
  const summary = (ms: number[]) => {
    const sorted = [...ms].sort((a, b) => a - b);
    const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]?.toFixed(2);
    return { n: sorted.length, p50: at(0.5), p95: at(0.95), max: sorted.at(-1)?.toFixed(2) };
  };
  const out = JSON.stringify(results, (key, value: unknown) => (key === 'latencies' || key === 'replicaLatency' ? summary(value as number[]) : value), 2);
  process.stderr.write(`\n[${what}] ${out}\n`);
}

