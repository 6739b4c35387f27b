import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { jest } from '@jest/globals';
import { Injectable, type INestApplication, Logger, Scope } from '@nestjs/common';
import { EventEmitterModule, OnEvent } from '@nestjs/event-emitter';
import pg from 'pg';
import { TombstoneOutbox } from '../src/events/events.outbox.js';
import { OnTombstoneEvent, type TombstoneEvent, TombstoneEventsService } from '../src/events/index.js';
import { TombstoneService } from '../src/index.js';
import { bootEventsApp, RecordingSink } from './fixtures/events.fixture.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';
import { startWebhookReceiver, type WebhookReceiver } from './support/webhook-receiver.js';

/** Fast retries, so that a suite sees several attempts without waiting long. */
const FAST = { retryDelayMs: 20, maxRetryDelayMs: 100, pollIntervalMs: 50, leaseMs: 1000 };

@Injectable()
class SearchIndex {
  readonly removed: string[] = [];
  readonly all: TombstoneEvent[] = [];
  failures = 0;

  @OnTombstoneEvent('tombstone.created')
  onCreated(event: TombstoneEvent): void {
    if (this.failures > 0) {
      this.failures--;
      throw new Error('the index is busy');
    }
    this.removed.push(event.key);
  }

  @OnTombstoneEvent(undefined, { name: 'search-all' })
  async onAny(event: TombstoneEvent): Promise<void> {
    this.all.push(event);
  }
}

async function deliveries(db: TestDatabase, sink: string): Promise<{ event_id: string; state: string; attempts: number; last_error: string | null }[]> {
  return (await db.sql.query(
    `SELECT event_id::text, state, attempts, last_error FROM tombstone_event_deliveries WHERE sink = $1 ORDER BY event_id`,
    [sink],
  )) as never;
}

describe('the outbox: what the triggers write', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db.drop();
  });

  const events = async () =>
    (await db.sql.query(
      `SELECT type, resource_key AS key, before->>'kind' AS before, after->>'kind' AS after, actor, reason FROM tombstone_events ORDER BY id`,
    )) as { type: string; key: string; before: string | null; after: string | null; actor: string | null; reason: string | null }[];

  it('writes nothing while no sink is registered', async () => {
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('t', 'before-sinks', 'deleted')`);
    expect(await events()).toEqual([]);
  });

  it('writes one event per changed tombstone, with its states, per registered sink a delivery', async () => {
    await db.sql.query(`INSERT INTO tombstone_event_sinks (name) VALUES ('a'), ('b')`);
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind, actor, reason) VALUES ('t', 'k1', 'deleted', 'ana', 'spam')`);
    await db.sql.query(`UPDATE tombstones SET hit_count = hit_count + 5, last_hit_at = now(), updated_at = now()`);
    await db.sql.query(`UPDATE tombstones SET kind = 'hidden', alternative = NULL WHERE resource_key = 'k1'`);
    await db.sql.query(`UPDATE tombstones SET resource_key = 'k2' WHERE resource_key = 'k1'`);
    await db.sql.query(`BEGIN; SET LOCAL nestjs_tombstones.actor = 'ops'; DELETE FROM tombstones WHERE resource_key = 'k2'; COMMIT`);
    expect(await events()).toEqual([
      { type: 'tombstone.created', key: 'k1', before: null, after: 'deleted', actor: 'ana', reason: 'spam' },
      { type: 'tombstone.changed', key: 'k1', before: 'deleted', after: 'hidden', actor: 'ana', reason: 'spam' },
      { type: 'tombstone.removed', key: 'k1', before: 'hidden', after: null, actor: null, reason: 'spam' },
      { type: 'tombstone.created', key: 'k2', before: null, after: 'hidden', actor: 'ana', reason: 'spam' },
      { type: 'tombstone.removed', key: 'k2', before: 'hidden', after: null, actor: 'ops', reason: 'spam' },
    ]);
    const [{ n }] = (await db.sql.query(`SELECT count(*)::int AS n FROM tombstone_event_deliveries`)) as { n: number }[];
    expect(n).toBe(10);
  });

  it('writes nothing for a rolled-back change, and names every row a TRUNCATE removes', async () => {
    await db.sql.query(`DELETE FROM tombstone_events`);
    await db.sql.query(`BEGIN; INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('t', 'never', 'deleted'); ROLLBACK`);
    expect(await events()).toEqual([]);
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind, target_key) VALUES ('t', 'm1', 'moved', 'm2'), ('t', 'm3', 'moved', 'm2')`);
    await db.sql.query(`TRUNCATE tombstones`);
    const types = (await events()).map((event) => `${event.type} ${event.key}`);
    expect(types).toEqual(expect.arrayContaining(['tombstone.removed m1', 'tombstone.removed m3', 'tombstone.removed before-sinks']));
    expect(types.filter((type) => type.startsWith('tombstone.removed'))).toHaveLength(3);
  });
});

describe('delivery', () => {
  let db: TestDatabase;
  let app: INestApplication;
  let tombstones: TombstoneService;
  const sink = new RecordingSink('test:recorder');

  beforeAll(async () => {
    db = await createTestDatabase();
    app = await bootEventsApp(db, { sinks: [sink], maxAttempts: 3, ...FAST }, { providers: [SearchIndex] });
    tombstones = app.get(TombstoneService);
  });
  afterAll(async () => {
    await app?.close();
    await db.drop();
  });

  it('registers its sinks: the configured ones and one per listener', async () => {
    const names = ((await db.sql.query(`SELECT name FROM tombstone_event_sinks ORDER BY name`)) as { name: string }[]).map((row) => row.name);
    expect(names).toEqual(['listener:SearchIndex.onCreated', 'listener:search-all', 'test:recorder']);
  });

  it('delivers a change made through the recording API to every sink, with the event in full', async () => {
    await tombstones.recordDeletion('article', 'gone-1', { reason: 'Retired', alternative: '/articles/new', actor: 'ana' });
    const index = app.get(SearchIndex);
    await eventually(() => expect(sink.received.map((event) => event.key)).toContain('gone-1'));
    await eventually(() => expect(index.removed).toContain('gone-1'));
    await eventually(() => expect(index.all.map((event) => event.key)).toContain('gone-1'));
    const event = sink.received.find((received) => received.key === 'gone-1')!;
    expect(event).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      sequence: expect.stringMatching(/^\d+$/),
      type: 'tombstone.created',
      scope: '',
      resourceType: 'article',
      key: 'gone-1',
      before: null,
      after: {
        id: expect.stringMatching(/^\d+$/),
        kind: 'deleted',
        target: null,
        permanent: true,
        reason: 'Retired',
        alternative: '/articles/new',
        actor: 'ana',
        occurredAt: expect.stringMatching(/Z$/),
        expiresAt: null,
        metadata: {},
      },
      actor: 'ana',
      reason: 'Retired',
      occurredAt: expect.stringMatching(/Z$/),
    });
    await eventually(async () => expect((await deliveries(db, 'test:recorder')).every((row) => row.state === 'delivered')).toBe(true));
  });

  it('gives a listener only the types it asked for (the others count as delivered)', async () => {
    await tombstones.restore('article', 'gone-1');
    const index = app.get(SearchIndex);
    await eventually(() => expect(index.all.map((event) => event.type)).toContain('tombstone.removed'));
    await eventually(async () => expect((await deliveries(db, 'listener:SearchIndex.onCreated')).map((row) => row.state)).toEqual(['delivered', 'delivered']));
    expect(index.removed).toEqual(['gone-1']);
  });

  it('retries a failed delivery with backoff until it succeeds, and keeps the error', async () => {
    sink.failNext = 2;
    await tombstones.recordDeletion('article', 'retry-1');
    await eventually(() => expect(sink.received.map((event) => event.key)).toContain('retry-1'));
    const sequence = sink.received.find((event) => event.key === 'retry-1')!.sequence;
    // The receiver has it; the dispatcher records the delivery once its answer is back.
    await eventually(async () => {
      const row = (await deliveries(db, 'test:recorder')).find((delivery) => delivery.event_id === sequence)!;
      expect(row).toMatchObject({ state: 'delivered', attempts: 3, last_error: null });
    });
  });

  it('makes a dead letter after maxAttempts, and the next event of the same key still goes', async () => {
    const index = app.get(SearchIndex);
    index.failures = 3;
    await tombstones.recordDeletion('article', 'dead-1');
    await eventually(async () => {
      const rows = await db.sql.query(
        `SELECT d.state, d.attempts, d.last_error FROM tombstone_event_deliveries d JOIN tombstone_events e ON e.id = d.event_id
          WHERE d.sink = 'listener:SearchIndex.onCreated' AND e.resource_key = 'dead-1'`,
      );
      expect(rows).toEqual([{ state: 'dead', attempts: 3, last_error: 'the index is busy' }]);
    });
    await tombstones.restore('article', 'dead-1');
    await tombstones.recordDeletion('article', 'dead-1');
    await eventually(() => expect(index.removed).toContain('dead-1'));
    const stats = await app.get(TombstoneEventsService).stats();
    expect(stats.sinks.find((entry) => entry.sink === 'listener:SearchIndex.onCreated')).toMatchObject({ dead: 1, configured: true });
  });

  it('keeps commit order per key: a key changed many times is delivered in the order of its commits', async () => {
    const keys = ['o-1', 'o-2', 'o-3'];
    const expected = new Map<string, string[]>(keys.map((key) => [key, []]));
    sink.failNext = 2; // early failures must not let a later event of a key overtake an earlier one (and none dies: maxAttempts is 3)
    for (let round = 0; round < 6; round++) {
      await Promise.all(
        keys.map(async (key) => {
          const reason = `r${round}`;
          await tombstones.recordDeletion('ordered', key, { reason });
          expected.get(key)!.push(reason);
        }),
      );
    }
    await eventually(() => {
      for (const key of keys) {
        const seen = sink.received.filter((event) => event.resourceType === 'ordered' && event.key === key).map((event) => event.reason);
        expect(seen).toEqual(expected.get(key));
      }
    });
  });
});

describe('two instances, a hung instance, shutdown', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db.drop();
  });

  it('two instances deliver each event once in normal operation', async () => {
    const one = new RecordingSink('shared', 5);
    const two = new RecordingSink('shared', 5);
    const first = await bootEventsApp(db, { sinks: [one], ...FAST });
    const second = await bootEventsApp(db, { sinks: [two], ...FAST });
    try {
      const service = first.get(TombstoneService);
      await Promise.all(Array.from({ length: 200 }, (_, i) => service.recordDeletion('pair', `k${i}`)));
      await eventually(() => expect(one.received.length + two.received.length).toBe(200));
      const ids = [...one.received, ...two.received].map((event) => event.id);
      expect(new Set(ids).size).toBe(200);
      await eventually(async () => expect((await deliveries(db, 'shared')).filter((row) => row.state !== 'delivered')).toEqual([]));
    } finally {
      await first.close();
      await second.close();
    }
  });

  it('an instance that hangs mid-delivery loses its lease, and another delivers (at least once)', async () => {
    const hung = new RecordingSink('lease');
    hung.hold(true);
    const healthy = new RecordingSink('lease');
    const first = await bootEventsApp(db, { sinks: [hung], ...FAST });
    let second: INestApplication | undefined;
    try {
      await first.get(TombstoneService).recordDeletion('lease', 'stuck');
      await eventually(() => expect(hung.calls.length).toBe(1));
      second = await bootEventsApp(db, { sinks: [healthy], ...FAST });
      await eventually(() => expect(healthy.received.map((event) => event.key)).toEqual(['stuck']));
      const [row] = await deliveries(db, 'lease');
      await eventually(async () => expect((await deliveries(db, 'lease'))[0].state).toBe('delivered'));
      expect(row.attempts).toBeGreaterThanOrEqual(2);
    } finally {
      hung.release();
      await first.close();
      await second?.close();
    }
  });

  it('a sink that never settles and ignores its abort holds neither the shutdown nor the delivery', async () => {
    const stuck = new RecordingSink('never-settles');
    stuck.hold(true);
    const app = await bootEventsApp(db, { sinks: [stuck], ...FAST, leaseMs: 60_000 });
    try {
      await app.get(TombstoneService).recordDeletion('never', 'settles');
      await eventually(() => expect(stuck.calls.length).toBe(1));
    } finally {
      await app.close(); // returns after the grace period, though the sink's promise never settles
    }
    expect(await deliveries(db, 'never-settles')).toEqual([expect.objectContaining({ state: 'pending', attempts: 0 })]);
    stuck.release();
  });

  it('a delivery under way at shutdown is given back without counting an attempt, and delivered after a restart', async () => {
    const slow = new RecordingSink('restart');
    slow.hold();
    const first = await bootEventsApp(db, { sinks: [slow], ...FAST, leaseMs: 60_000 });
    await first.get(TombstoneService).recordDeletion('restart', 'in-flight');
    await eventually(() => expect(slow.calls.length).toBe(1));
    // The delivery does not finish within the grace period: it is aborted and given back.
    await first.close();
    const [row] = await deliveries(db, 'restart');
    expect(row).toMatchObject({ state: 'pending', attempts: 0 });
    const again = new RecordingSink('restart');
    const second = await bootEventsApp(db, { sinks: [again], ...FAST });
    try {
      await eventually(() => expect(again.received.map((event) => event.key)).toEqual(['in-flight']));
    } finally {
      await second.close();
    }
  });
});

describe('shutdown with a claim of several batches', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db.drop();
  });

  it('stops within the grace period: the batches of its claim not yet started are given back, not sent', async () => {
    const register = await bootEventsApp(db, { sinks: [new RecordingSink('claimed')], deliver: false });
    await register.close();
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) SELECT 'claimed', 'k' || i, 'deleted' FROM generate_series(1, 5) AS i`);
    const slow = Object.assign(new RecordingSink('claimed', 1), { concurrency: 1 });
    slow.hold();
    const app = await bootEventsApp(db, { sinks: [slow], ...FAST, leaseMs: 60_000 });
    await eventually(() => expect(slow.calls.length).toBe(1));
    const started = Date.now();
    await app.close();
    expect(Date.now() - started).toBeLessThan(5000);
    expect(slow.calls.length).toBe(1);
    const rows = await deliveries(db, 'claimed');
    expect(rows.map((row) => [row.state, row.attempts])).toEqual(Array.from({ length: 5 }, () => ['pending', 0]));
    const [{ leased }] = (await db.sql.query(`SELECT count(*)::int AS leased FROM tombstone_event_deliveries WHERE leased_until IS NOT NULL`)) as { leased: number }[];
    expect(leased).toBe(0);
  }, 30_000);
});

/**
 * Concurrent changes of the flood test: `EVENTS_FLOOD_CHANGES`, 300 by default (what `npm test`
 * runs); `npm run test:events-flood` runs 1,000.
 */
const FLOOD = Number(process.env.EVENTS_FLOOD_CHANGES ?? 300);
if (!(Number.isInteger(FLOOD) && FLOOD >= 3)) throw new Error(`EVENTS_FLOOD_CHANGES must be an integer of at least 3, not ${process.env.EVENTS_FLOOD_CHANGES}.`);

describe(`${FLOOD} concurrent changes, a third rolled back, a third of the backends killed`, () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db.drop();
  });

  it('delivers exactly the committed changes, each once', async () => {
    const sink = new RecordingSink('flood', 50);
    const app = await bootEventsApp(db, { sinks: [sink], ...FAST });
    const pool = new pg.Pool({ connectionString: db.url, max: 16 });
    pool.on('error', () => undefined); // the killed backends' clients
    const committed = new Set<string>();
    try {
      await Promise.all(
        Array.from({ length: FLOOD }, async (_, i) => {
          const key = `c${i}`;
          const fate = i % 3; // 0 commit, 1 roll back, 2 killed before commit
          const client = await pool.connect();
          client.on('error', () => undefined);
          let broken = false;
          try {
            await client.query('BEGIN');
            await client.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('flood', $1, 'deleted')`, [key]);
            if (fate === 0) {
              await client.query('COMMIT');
              committed.add(key);
            } else if (fate === 1) {
              await client.query('ROLLBACK');
            } else {
              const [{ pid }] = (await client.query('SELECT pg_backend_pid() AS pid')).rows as { pid: number }[];
              await db.sql.query('SELECT pg_terminate_backend($1)', [pid]);
              broken = true;
              await client.query('COMMIT').catch(() => undefined);
            }
          } finally {
            client.release(broken);
          }
        }),
      );
      await eventually(() => expect(sink.received.length).toBeGreaterThanOrEqual(committed.size), 60_000);
      const delivered = new Set(sink.received.map((event) => event.key));
      expect(delivered).toEqual(committed);
      expect([...sink.counts().values()].every((count) => count === 1)).toBe(true);
      const [{ n }] = (await db.sql.query(`SELECT count(*)::int AS n FROM tombstone_events`)) as { n: number }[];
      expect(n).toBe(committed.size);
    } finally {
      await pool.end();
      await app.close();
    }
  }, 120_000);
});

describe('webhooks through the outbox', () => {
  let db: TestDatabase;
  let receiver: WebhookReceiver;

  beforeAll(async () => {
    db = await createTestDatabase();
    receiver = await startWebhookReceiver('/hooks/tombstones');
  });
  afterAll(async () => {
    await receiver.close();
    await db.drop();
  });

  it('POSTs each event signed (verified with the standardwebhooks package); a receiver that is down gets it once it is back', async () => {
    const app = await bootEventsApp(db, { webhooks: [{ url: receiver.url, secret: receiver.secret, name: 'search' }], ...FAST, maxAttempts: 50 });
    try {
      const service = app.get(TombstoneService);
      await service.recordMove('article', 'old-hello', 'hello-world', { reason: 'Renamed' });
      await eventually(() => expect(receiver.received.map((entry) => entry.body.data.key)).toEqual(['old-hello']));
      expect(receiver.received[0]).toMatchObject({ body: { type: 'tombstone.created', data: { resourceType: 'article', after: { kind: 'moved', target: 'hello-world' } } } });
      expect(receiver.received[0].id).toBe(receiver.received[0].body.data.id);

      receiver.down = true;
      await service.recordDeletion('article', 'while-down');
      await eventually(() => expect(receiver.refused).toBeGreaterThanOrEqual(3));
      const [row] = (await db.sql.query(
        `SELECT d.state, d.attempts, d.last_error FROM tombstone_event_deliveries d JOIN tombstone_events e ON e.id = d.event_id
          WHERE d.sink = 'webhook:search' AND e.resource_key = 'while-down'`,
      )) as { state: string; attempts: number; last_error: string }[];
      expect(row.state).toBe('pending');
      expect(row.last_error).toContain('503');
      receiver.down = false;
      await eventually(() => expect(receiver.received.map((entry) => entry.body.data.key)).toEqual(['old-hello', 'while-down']));
    } finally {
      await app.close();
    }
  });
});

@Injectable()
class EmitterListener {
  readonly created: string[] = [];
  failures = 0;

  @OnEvent('tombstone.created', { suppressErrors: false })
  async onCreated(event: TombstoneEvent): Promise<void> {
    if (this.failures > 0) {
      this.failures--;
      throw new Error('not yet');
    }
    this.created.push(event.key);
  }
}

describe('@nestjs/event-emitter and start-up checks', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db.drop();
  });

  it('emits each event on EventEmitter2 when the app has it, and retries a listener that throws', async () => {
    const app = await bootEventsApp(db, { ...FAST }, { imports: [EventEmitterModule.forRoot()], providers: [EmitterListener] });
    try {
      const listener = app.get(EmitterListener);
      listener.failures = 2;
      await app.get(TombstoneService).recordDeletion('emitted', 'e-1');
      await eventually(() => expect(listener.created).toEqual(['e-1']));
      // The delivery is marked once the listener's promise has settled: a moment after it ran.
      await eventually(async () => {
        const [row] = await deliveries(db, 'event-emitter');
        expect(row).toMatchObject({ state: 'delivered', attempts: 3 });
      });
    } finally {
      await app.close();
    }
  });

  it('eventEmitter: true fails at start without EventEmitterModule; two sinks of one name fail too', async () => {
    await expect(bootEventsApp(db, { eventEmitter: true })).rejects.toThrow(/needs @nestjs\/event-emitter/);
    await expect(bootEventsApp(db, { sinks: [new RecordingSink('twice'), new RecordingSink('twice')] })).rejects.toThrow(/two event sinks are named "twice"/);
  });
});

describe('retention', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db.drop();
  });

  it('deletes delivered events after retentionDays and dead letters after deadLetterRetentionDays, never a pending one', async () => {
    const outbox = new TombstoneOutbox(db.sql);
    await outbox.register(['a', 'b']);
    await db.sql.query(
      `INSERT INTO tombstones (resource_type, resource_key, kind) SELECT 'kept', 'k' || g, 'deleted' FROM generate_series(1, 4) g`,
    );
    // k1: delivered to both long ago; k2: delivered long ago to a, dead long ago for b;
    // k3: delivered to a long ago, still pending for b; k4: delivered just now.
    await db.sql.query(`UPDATE tombstone_events SET occurred_at = now() - interval '40 days'`);
    const set = (key: string, sink: string, state: string, age: string) =>
      db.sql.query(
        `UPDATE tombstone_event_deliveries SET state = $3, finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() - $4::interval END
          WHERE resource_key = $1 AND sink = $2`,
        [key, sink, state, age],
      );
    await set('k1', 'a', 'delivered', '8 days');
    await set('k1', 'b', 'delivered', '8 days');
    await set('k2', 'a', 'delivered', '8 days');
    await set('k2', 'b', 'dead', '8 days');
    await set('k3', 'a', 'delivered', '8 days');
    await set('k4', 'a', 'delivered', '0 days');
    await set('k4', 'b', 'delivered', '0 days');
    const day = 86_400_000;
    await outbox.sweep(7 * day, 30 * day, 2);
    const left = await db.sql.query(
      `SELECT e.resource_key AS key, d.sink, d.state FROM tombstone_events e LEFT JOIN tombstone_event_deliveries d ON d.event_id = e.id ORDER BY 1, 2`,
    );
    expect(left).toEqual([
      { key: 'k2', sink: 'b', state: 'dead' },
      { key: 'k3', sink: 'b', state: 'pending' },
      { key: 'k4', sink: 'a', state: 'delivered' },
      { key: 'k4', sink: 'b', state: 'delivered' },
    ]);
    const stats = await outbox.stats();
    expect(stats.find((entry) => entry.sink === 'b')).toMatchObject({ pending: 1, dead: 1 });
    expect(stats.find((entry) => entry.sink === 'b')!.lagMs).toBeGreaterThan(39 * day);
    await outbox.sweep(7 * day, 7 * day);
    expect(await db.sql.query(`SELECT count(*)::int AS n FROM tombstone_event_deliveries WHERE state = 'dead'`)).toEqual([{ n: 0 }]);
  });
});

describe('an app killed mid-delivery (SIGKILL) and started again', () => {
  let db: TestDatabase;
  let receiver: WebhookReceiver;

  beforeAll(async () => {
    db = await createTestDatabase();
    receiver = await startWebhookReceiver();
  });
  afterAll(async () => {
    await receiver.close();
    await db.drop();
  });

  it('loses nothing: the event the dead process was sending is delivered by the next one, with the same id', async () => {
    const held = new Promise<void>((resolve) => (receiver.onHeld = resolve)); // the app dies first
    // A file: URL, not a path: --import takes a module specifier (a Windows path is not one).
    const loader = new URL('./support/ts-loader.mjs', import.meta.url).href;
    const child = spawn(process.execPath, ['--import', loader, fileURLToPath(new URL('./fixtures/events-child.ts', import.meta.url))], {
      env: { ...process.env, DATABASE_URL: db.url, WEBHOOK_URL: receiver.url, WEBHOOK_SECRET: receiver.secret, KEY: 'killed-1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
    try {
      // The child wrote its tombstone and is in the middle of delivering its event.
      await Promise.race([held, exited.then(() => Promise.reject(new Error(`the child app exited before delivering: ${output}`)))]);
    } finally {
      child.kill('SIGKILL');
    }
    expect(await exited).toBe('SIGKILL');
    const [row] = await deliveries(db, 'webhook:killed');
    expect(row).toMatchObject({ state: 'pending', attempts: 1 });

    receiver.onHeld = null;
    const app = await bootEventsApp(db, { webhooks: [{ url: receiver.url, secret: receiver.secret, name: 'killed' }], ...FAST });
    try {
      await eventually(async () => expect((await deliveries(db, 'webhook:killed')).map((delivery) => delivery.state)).toEqual(['delivered']));
      const requests = receiver.received;
      expect(requests.map((request) => request.body.data.key)).toEqual(['killed-1', 'killed-1']);
      expect(requests[1].id).toBe(requests[0].id);
    } finally {
      await app.close();
    }
  }, 60_000);
});

describe('leases', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db.drop();
  });

  it('an instance whose lease ran out cannot settle the delivery another instance took since', async () => {
    const outbox = new TombstoneOutbox(db.sql);
    await outbox.register(['leased']);
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind) VALUES ('lease', 'k', 'deleted')`);
    const [first] = await outbox.claim('leased', 10, 60_000);
    // Its lease runs out (the instance hung); another instance takes the delivery.
    await db.sql.query(`UPDATE tombstone_event_deliveries SET leased_until = now() - interval '1 second'`);
    const [second] = await outbox.claim('leased', 10, 60_000);
    expect(second).toMatchObject({ attempt: 2, event: { id: first.event.id } });
    const policy = { maxAttempts: 1, retryDelayMs: 1, maxRetryDelayMs: 1 };
    await outbox.delivered('leased', [first.event.sequence], first.lease);
    await outbox.failed('leased', [first.event.sequence], first.lease, 'late', policy);
    await outbox.release('leased', [first.event.sequence], first.lease);
    const [row] = (await db.sql.query(`SELECT state, attempts, leased_until::text AS lease FROM tombstone_event_deliveries`)) as {
      state: string;
      attempts: number;
      lease: string;
    }[];
    expect(row).toEqual({ state: 'pending', attempts: 2, lease: second.lease });
    await outbox.delivered('leased', [second.event.sequence], second.lease);
    expect(await db.sql.query(`SELECT state FROM tombstone_event_deliveries`)).toEqual([{ state: 'delivered' }]);
  });
});

@Injectable({ scope: Scope.REQUEST })
class PerRequestIndexer {
  @OnTombstoneEvent('tombstone.created')
  onCreated(): void {
    // Never called: there is no request when events arrive.
  }
}

describe('listeners of request-scoped providers', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db.drop();
  });

  it('get no sink, and a warning says why at start', async () => {
    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    const app = await bootEventsApp(db, { sinks: [new RecordingSink('other')], ...FAST }, { providers: [PerRequestIndexer] });
    try {
      expect(warn.mock.calls.map(([message]) => String(message))).toContainEqual(
        expect.stringContaining('@OnTombstoneEvent() on PerRequestIndexer.onCreated gets no events: its provider is request-scoped'),
      );
      const names = ((await db.sql.query(`SELECT name FROM tombstone_event_sinks`)) as { name: string }[]).map((row) => row.name);
      expect(names).toEqual(['other']);
    } finally {
      warn.mockRestore();
      await app.close();
    }
  });
});
