import { jest } from '@jest/globals';
import { type INestApplication, Logger } from '@nestjs/common';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import type request from 'supertest';
import { ADMIN_TOKEN, bootAdminApp } from './fixtures/admin.fixture.js';
import { ADAPTERS } from './support/app.js';
import type { TestDatabase } from './support/database.js';

interface Delivery {
  sink: string;
  state: 'pending' | 'delivered' | 'dead';
  attempts: number;
  nextAttemptAt: string | null;
  lastError: string | null;
  finishedAt: string | null;
}

interface EventView {
  id: string;
  sequence: string;
  type: string;
  scope: string;
  resourceType: string;
  key: string;
  before: Record<string, unknown> | null;
  after: Record<string, unknown> | null;
  actor: string | null;
  reason: string | null;
  occurredAt: string;
  deliveries: Delivery[];
}

interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

type DeadLetter = Delivery & { event: Omit<EventView, 'deliveries'> };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ABSENT = '00000000-0000-4000-8000-000000000000';
/** What the app logs (the admin writes log their actor). */
const spyLog = () => jest.spyOn(Logger.prototype, 'log');
const lines = (spy: ReturnType<typeof spyLog>) => spy.mock.calls.map((call) => String(call[0]));

describe.each(ADAPTERS)('admin endpoints of the events outbox (%s)', (adapter) => {
  let db: TestDatabase;
  let app: INestApplication;
  let http: ReturnType<typeof request>;
  let close: () => Promise<void>;
  // Every test writes tombstones of a resource type of its own, and registers sinks of its own.
  let type: string;
  let n = 0;

  beforeAll(async () => {
    ({ db, app, http, close } = await bootAdminApp(adapter, { admin: { maxPageSize: 20 } }));
  });

  afterAll(async () => {
    await close?.();
  });

  beforeEach(() => {
    type = `ev-${adapter}-${++n}`;
  });

  afterEach(async () => {
    // No sink outlives its test: the next test's tombstones get deliveries for its own sinks only.
    await db.sql.query(`DELETE FROM tombstone_event_sinks`);
  });

  const as = (method: 'get' | 'post' | 'delete', path: string) => http[method](`/admin/events${path}`).set('authorization', ADMIN_TOKEN);
  const register = async (...sinks: string[]) => {
    for (const sink of sinks) await db.sql.query(`INSERT INTO tombstone_event_sinks (name) VALUES ($1)`, [sink]);
  };
  /** A tombstone of this test's type, through the admin endpoints (the actor is ops-ana). */
  const create = async (key: string, body: Record<string, unknown> = {}) =>
    (await http.post('/admin/tombstones').set('authorization', ADMIN_TOKEN).send({ type, key, kind: 'deleted', ...body }).expect(201)).body as {
      id: string;
    };
  const list = async (query = ''): Promise<Page<EventView>> => (await as('get', `?type=${type}${query ? `&${query}` : ''}`).expect(200)).body;
  const keysOf = (page: Page<EventView>) => page.items.map((e) => `${e.key}:${e.type.slice('tombstone.'.length)}`);
  /** Sets the delivery of this test's event of `key` (its newest) to `sink` as given. */
  const setDelivery = async (key: string, sink: string, set: string, values: unknown[] = []) => {
    await db.sql.query(
      `UPDATE tombstone_event_deliveries SET ${set}
        WHERE sink = $1 AND event_id = (SELECT max(id) FROM tombstone_events WHERE resource_type = $2 AND resource_key = $3)`,
      [sink, type, key, ...values],
    );
  };
  const kill = (key: string, sink: string, finishedAt = '2000-01-01T00:00:00Z', error = 'HTTP 503 from the sink') =>
    setDelivery(key, sink, `state = 'dead', attempts = 8, finished_at = $4, last_error = $5, next_attempt_at = now() + interval '1 hour'`, [
      finishedAt,
      error,
    ]);
  const deliveryRow = async (id: string, sink: string) =>
    (
      await db.sql.query(
        `SELECT d.state, d.attempts, d.leased_until, d.last_error, d.finished_at, d.next_attempt_at <= now() AS due
           FROM tombstone_event_deliveries d JOIN tombstone_events e ON e.id = d.event_id WHERE e.event_id = $1 AND d.sink = $2`,
        [id, sink],
      )
    )[0] as { state: string; attempts: number; leased_until: Date | null; last_error: string | null; finished_at: Date | null; due: boolean } | undefined;
  const eventIdOf = async (key: string) => (await list(`key=${encodeURIComponent(key)}`)).items[0].id;
  const cleanBody = (res: request.Response) => expect(res.text).not.toMatch(/at .*\.[jt]s:|SELECT|UPDATE|DELETE FROM|tombstone_event/);

  describe('access', () => {
    it('401 without credentials, 403 with wrong ones, on every endpoint; nothing changes', async () => {
      await register(`a-${type}`);
      await create('kept');
      const id = await eventIdOf('kept');
      for (const [method, path] of [
        ['get', ''],
        ['get', `/${id}`],
        ['get', '/dead-letters'],
        ['post', '/dead-letters/retry'],
        ['delete', `/dead-letters?sink=a-${type}`],
        ['post', `/${id}/deliveries/a-${type}/retry`],
        ['delete', `/${id}/deliveries/a-${type}`],
        ['get', '/sinks'],
        ['delete', `/sinks/a-${type}`],
      ] as const) {
        const anonymous = await http[method](`/admin/events${path}`).send(method === 'post' ? { sink: `a-${type}` } : undefined);
        expect([path, anonymous.status]).toEqual([path, 401]);
        const wrong = await http[method](`/admin/events${path}`).set('authorization', 'Bearer wrong');
        expect([path, wrong.status]).toEqual([path, 403]);
        expect(JSON.stringify(wrong.body)).not.toContain('kept');
      }
      expect(await deliveryRow(id, `a-${type}`)).toMatchObject({ state: 'pending' });
      expect((await as('get', '/sinks').expect(200)).body.items.map((s: { name: string }) => s.name)).toEqual([`a-${type}`]);
    });
  });

  describe('listing', () => {
    it('shows each change as an event, newest first, with one delivery per registered sink', async () => {
      await register(`hook-${type}`, `purge-${type}`);
      const { id } = await create('a', { reason: 'Gone for good' });
      await http.patch(`/admin/tombstones/${id}`).set('authorization', ADMIN_TOKEN).send({ reason: 'Withdrawn' }).expect(200);
      await http.delete(`/admin/tombstones/${id}`).set('authorization', ADMIN_TOKEN).expect(204);
      await create('b');
      const page = await list();
      expect(page.nextCursor).toBeNull();
      expect(keysOf(page)).toEqual(['b:created', 'a:removed', 'a:changed', 'a:created']);
      const changed = page.items[2];
      expect(changed).toEqual({
        id: expect.stringMatching(UUID),
        sequence: expect.stringMatching(/^[1-9]\d*$/),
        type: 'tombstone.changed',
        scope: '',
        resourceType: type,
        key: 'a',
        before: expect.objectContaining({ id, kind: 'deleted', reason: 'Gone for good', actor: 'ops-ana' }),
        after: expect.objectContaining({ id, kind: 'deleted', reason: 'Withdrawn', actor: 'ops-ana' }),
        actor: 'ops-ana',
        reason: 'Withdrawn',
        occurredAt: expect.any(String),
        deliveries: [`hook-${type}`, `purge-${type}`].map((sink) => ({
          sink,
          state: 'pending',
          attempts: 0,
          nextAttemptAt: expect.any(String),
          lastError: null,
          finishedAt: null,
        })),
      });
      expect(page.items[0].before).toBeNull();
      expect(page.items[1].after).toBeNull();
      const sequences = page.items.map((e) => BigInt(e.sequence));
      expect([...sequences].sort((x, y) => (x > y ? -1 : 1))).toEqual(sequences);
    });

    it('filters by key, scope, event type, and sink and state of a delivery', async () => {
      await register(`hook-${type}`);
      await create('a');
      await create('b');
      await create('a', { scope: 'acme' });
      // Registered after those three: only what follows has a delivery to it.
      await register(`late-${type}`);
      await create('c');
      await setDelivery('b', `hook-${type}`, `state = 'delivered', finished_at = now()`);
      await kill('c', `late-${type}`);

      expect(keysOf(await list('key=a'))).toEqual(['a:created', 'a:created']);
      expect((await list('key=a&scope=acme')).items.map((e) => e.scope)).toEqual(['acme']);
      expect(keysOf(await list('scope='))).toEqual(['c:created', 'b:created', 'a:created']);
      expect(keysOf(await list('eventType=tombstone.created'))).toHaveLength(4);
      expect(keysOf(await list('eventType=tombstone.removed'))).toEqual([]);
      expect(keysOf(await list(`sink=late-${type}`))).toEqual(['c:created']);
      expect(keysOf(await list(`sink=hook-${type}&state=delivered`))).toEqual(['b:created']);
      expect(keysOf(await list(`sink=hook-${type}&state=pending`))).toEqual(['c:created', 'a:created', 'a:created']);
      expect(keysOf(await list(`sink=hook-${type}&state=dead`))).toEqual([]);
      expect(keysOf(await list('state=dead'))).toEqual(['c:created']);
      expect(keysOf(await list(`sink=nobody-${type}`))).toEqual([]);
      const c = (await list('key=c')).items[0];
      expect(c.deliveries).toEqual([
        { sink: `hook-${type}`, state: 'pending', attempts: 0, nextAttemptAt: expect.any(String), lastError: null, finishedAt: null },
        // A finished delivery has no next attempt, whatever the column holds.
        { sink: `late-${type}`, state: 'dead', attempts: 8, nextAttemptAt: null, lastError: 'HTTP 503 from the sink', finishedAt: '2000-01-01T00:00:00.000Z' },
      ]);
    });

    it('pages by sequence: never a repeat, whatever is written between pages', async () => {
      await register(`hook-${type}`);
      for (const key of ['k1', 'k2', 'k3', 'k4', 'k5']) await create(key);
      const first = await list('limit=2');
      expect(keysOf(first)).toEqual(['k5:created', 'k4:created']);
      await create('k6');
      const second = await list(`limit=2&cursor=${first.nextCursor}`);
      expect(keysOf(second)).toEqual(['k3:created', 'k2:created']);
      const third = await list(`limit=2&cursor=${second.nextCursor}`);
      expect(keysOf(third)).toEqual(['k1:created']);
      expect(third.nextCursor).toBeNull();
      expect(keysOf(await list('limit=20'))).toHaveLength(6);
    });

    it('writes no event while no sink is registered', async () => {
      await create('quiet');
      expect((await list()).items).toEqual([]);
    });
  });

  describe('one event', () => {
    it('is the listing’s item; an upper-case id finds it too', async () => {
      await register(`hook-${type}`);
      await create('one');
      const [item] = (await list()).items;
      expect((await as('get', `/${item.id}`).expect(200)).body).toEqual(item);
      expect((await as('get', `/${item.id.toUpperCase()}`).expect(200)).body).toEqual(item);
    });

    it('404 for an id no event has', async () => {
      const res = await as('get', `/${ABSENT}`).expect(404);
      expect(res.body).toEqual({ statusCode: 404, error: 'Not Found', message: `No event has the id ${ABSENT}.` });
    });
  });

  describe('dead letters', () => {
    it('lists the dead deliveries with their events, oldest first, by sink, in pages', async () => {
      await register(`hook-${type}`, `purge-${type}`);
      for (const key of ['a', 'b', 'c', 'd']) await create(key);
      // Other tests' dead letters are newer (2000-01-01) or of other sinks: these come first.
      await kill('c', `hook-${type}`, '1999-01-01T00:00:00Z');
      await kill('a', `hook-${type}`, '1999-01-02T00:00:00Z');
      // The same instant, to the microsecond: by sequence, then by sink.
      await kill('d', `purge-${type}`, '1999-01-03T00:00:00.123456Z');
      await kill('b', `purge-${type}`, '1999-01-03T00:00:00.123456Z');
      await kill('b', `hook-${type}`, '1999-01-03T00:00:00.123456Z');

      const walk: string[] = [];
      let cursor: string | null = null;
      do {
        const page: Page<DeadLetter> = (await as('get', `/dead-letters?limit=1${cursor ? `&cursor=${cursor}` : ''}`).expect(200)).body;
        walk.push(...page.items.filter((d) => d.event.resourceType === type).map((d) => `${d.event.key}@${d.sink.split('-')[0]}`));
        cursor = page.nextCursor;
      } while (cursor && walk.length < 5);
      expect(walk).toEqual(['c@hook', 'a@hook', 'b@hook', 'b@purge', 'd@purge']);

      const purge: Page<DeadLetter> = (await as('get', `/dead-letters?sink=purge-${type}`).expect(200)).body;
      expect(purge.nextCursor).toBeNull();
      expect(purge.items).toEqual([
        {
          sink: `purge-${type}`,
          state: 'dead',
          attempts: 8,
          nextAttemptAt: null,
          lastError: 'HTTP 503 from the sink',
          finishedAt: '1999-01-03T00:00:00.123Z',
          event: expect.objectContaining({ id: expect.stringMatching(UUID), key: 'b', resourceType: type, type: 'tombstone.created' }),
        },
        expect.objectContaining({ sink: `purge-${type}`, event: expect.objectContaining({ key: 'd' }) }),
      ]);
      expect(purge.items[0].event).not.toHaveProperty('deliveries');
    });
  });

  describe('retry and discard one delivery', () => {
    let logged: ReturnType<typeof spyLog>;
    beforeEach(() => {
      logged = spyLog();
    });
    afterEach(() => logged.mockRestore());
    const logLines = () => lines(logged);

    it('a dead delivery is pending again, due now, attempts from zero, its last error kept; the actor is logged', async () => {
      await register(`hook-${type}`, `purge-${type}`);
      await create('a');
      await kill('a', `hook-${type}`);
      await kill('a', `purge-${type}`);
      const id = await eventIdOf('a');
      const res = await as('post', `/${id}/deliveries/hook-${type}/retry`).expect(200);
      expect(res.body).toEqual({
        sink: `hook-${type}`,
        state: 'pending',
        attempts: 0,
        nextAttemptAt: expect.any(String),
        lastError: 'HTTP 503 from the sink',
        finishedAt: null,
      });
      expect(await deliveryRow(id, `hook-${type}`)).toEqual({
        state: 'pending',
        attempts: 0,
        leased_until: null,
        last_error: 'HTTP 503 from the sink',
        finished_at: null,
        due: true,
      });
      // The other sink's delivery stays dead.
      expect(await deliveryRow(id, `purge-${type}`)).toMatchObject({ state: 'dead', attempts: 8 });
      expect(logLines()).toContainEqual(`Event ${id}: its dead delivery to sink "hook-${type}" was set to pending by "ops-ana".`);
    });

    it('a delivered one is sent again (200); a pending one being sent keeps its lease', async () => {
      await register(`hook-${type}`);
      await create('sent');
      await create('busy');
      await setDelivery('sent', `hook-${type}`, `state = 'delivered', attempts = 1, finished_at = now()`);
      await setDelivery('busy', `hook-${type}`, `attempts = 3, next_attempt_at = now() + interval '1 hour', leased_until = now() + interval '1 hour'`);
      const sent = await eventIdOf('sent');
      expect((await as('post', `/${sent}/deliveries/hook-${type}/retry`).expect(200)).body).toMatchObject({ state: 'pending', attempts: 0 });
      expect(await deliveryRow(sent, `hook-${type}`)).toMatchObject({ state: 'pending', finished_at: null, due: true });

      const busy = await eventIdOf('busy');
      expect((await as('post', `/${busy}/deliveries/hook-${type}/retry`).expect(200)).body).toMatchObject({ state: 'pending', attempts: 0 });
      const row = await deliveryRow(busy, `hook-${type}`);
      expect(row).toMatchObject({ state: 'pending', attempts: 0, due: true });
      expect(row?.leased_until).toBeInstanceOf(Date);
      // A lease that ran out (its instance died) is cleared.
      await setDelivery('busy', `hook-${type}`, `leased_until = now() - interval '1 minute'`);
      await as('post', `/${busy}/deliveries/hook-${type}/retry`).expect(200);
      expect((await deliveryRow(busy, `hook-${type}`))?.leased_until).toBeNull();
    });

    it('discard: 204, then 404; the event stays, without that delivery; the actor is logged', async () => {
      await register(`hook-${type}`, `purge-${type}`);
      await create('a');
      await kill('a', `hook-${type}`);
      const id = await eventIdOf('a');
      await as('delete', `/${id}/deliveries/hook-${type}`).expect(204);
      expect(logLines()).toContainEqual(`Event ${id}: its dead delivery to sink "hook-${type}" was discarded by "ops-ana".`);
      const res = await as('delete', `/${id}/deliveries/hook-${type}`).expect(404);
      expect(res.body).toEqual({ statusCode: 404, error: 'Not Found', message: `Event ${id} has no delivery to sink "hook-${type}".` });
      expect((await as('get', `/${id}`).expect(200)).body.deliveries.map((d: Delivery) => d.sink)).toEqual([`purge-${type}`]);
    });

    it('404 for an event that does not exist, or a sink it has no delivery to', async () => {
      await register(`hook-${type}`);
      await create('a');
      const id = await eventIdOf('a');
      for (const method of ['post', 'delete'] as const) {
        const suffix = method === 'post' ? '/retry' : '';
        const noEvent = await as(method, `/${ABSENT}/deliveries/hook-${type}${suffix}`).expect(404);
        expect(noEvent.body.message).toBe(`No event has the id ${ABSENT}.`);
        const noSink = await as(method, `/${id}/deliveries/other-${type}${suffix}`).expect(404);
        expect(noSink.body.message).toBe(`Event ${id} has no delivery to sink "other-${type}".`);
      }
      expect(await deliveryRow(id, `hook-${type}`)).toMatchObject({ state: 'pending' });
    });

    it('a sink name with a slash, a colon and non-ASCII letters, URL-encoded in the path', async () => {
      const sink = `purge:cdn/eu-ünï-${type}`;
      await register(sink);
      await create('a');
      await kill('a', sink);
      const id = await eventIdOf('a');
      const res = await as('post', `/${id}/deliveries/${encodeURIComponent(sink)}/retry`).expect(200);
      expect(res.body).toMatchObject({ sink, state: 'pending' });
      await as('delete', `/${id}/deliveries/${encodeURIComponent(sink)}`).expect(204);
      expect(await deliveryRow(id, sink)).toBeUndefined();
    });
  });

  describe('retry and discard every dead letter of a sink', () => {
    it('retries only that sink’s dead letters, and says how many', async () => {
      await register(`hook-${type}`, `purge-${type}`);
      for (const key of ['a', 'b', 'c']) await create(key);
      await kill('a', `hook-${type}`);
      await kill('b', `hook-${type}`);
      await kill('c', `purge-${type}`);
      await setDelivery('c', `hook-${type}`, `state = 'delivered', finished_at = now()`);
      const logged = spyLog();
      try {
        expect((await as('post', '/dead-letters/retry').send({ sink: `hook-${type}` }).expect(200)).body).toEqual({ retried: 2 });
        expect(lines(logged)).toContainEqual(`Sink "hook-${type}": 2 dead deliveries were set to pending by "ops-ana".`);
      } finally {
        logged.mockRestore();
      }
      expect(keysOf(await list(`sink=hook-${type}&state=pending`))).toEqual(['b:created', 'a:created']);
      expect(keysOf(await list(`sink=hook-${type}&state=delivered`))).toEqual(['c:created']);
      expect(keysOf(await list(`sink=purge-${type}&state=dead`))).toEqual(['c:created']);
      expect((await as('post', '/dead-letters/retry').send({ sink: `hook-${type}` }).expect(200)).body).toEqual({ retried: 0 });
      expect((await as('post', '/dead-letters/retry').send({ sink: `nobody-${type}` }).expect(200)).body).toEqual({ retried: 0 });
    });

    it('discards only that sink’s dead letters, and says how many', async () => {
      await register(`hook-${type}`, `purge-${type}`);
      for (const key of ['a', 'b']) await create(key);
      await kill('a', `hook-${type}`);
      await kill('b', `purge-${type}`);
      expect((await as('delete', `/dead-letters?sink=hook-${type}`).expect(200)).body).toEqual({ discarded: 1 });
      expect(keysOf(await list(`sink=hook-${type}`))).toEqual(['b:created']);
      expect(keysOf(await list(`sink=purge-${type}&state=dead`))).toEqual(['b:created']);
      expect((await as('delete', `/dead-letters?sink=hook-${type}`).expect(200)).body).toEqual({ discarded: 0 });
    });

    it('more than one batch (10,000): every one, once', async () => {
      await register(`bulk-${type}`);
      await db.sql.query(
        `INSERT INTO tombstones (resource_type, resource_key, kind) SELECT $1, 'k' || i, 'deleted' FROM generate_series(1, 10001) i`,
        [type],
      );
      const killAll = () =>
        db.sql.query(`UPDATE tombstone_event_deliveries SET state = 'dead', finished_at = now(), last_error = 'down' WHERE sink = $1`, [`bulk-${type}`]);
      await killAll();
      expect((await as('post', '/dead-letters/retry').send({ sink: `bulk-${type}` }).expect(200)).body).toEqual({ retried: 10_001 });
      const [{ pending }] = await db.sql.query(`SELECT count(*)::int AS pending FROM tombstone_event_deliveries WHERE sink = $1 AND state = 'pending'`, [
        `bulk-${type}`,
      ]);
      expect(pending).toBe(10_001);
      await killAll();
      expect((await as('delete', `/dead-letters?sink=bulk-${type}`).expect(200)).body).toEqual({ discarded: 10_001 });
      const [{ left }] = await db.sql.query(`SELECT count(*)::int AS left FROM tombstone_event_deliveries WHERE sink = $1`, [`bulk-${type}`]);
      expect(left).toBe(0);
      // Exactly one batch, then one more: the walk ends on an empty range.
      await db.sql.query(`UPDATE tombstone_event_deliveries SET state = 'dead', finished_at = now() WHERE sink = $1`, [`bulk-${type}`]);
      await db.sql.query(
        `INSERT INTO tombstone_event_deliveries (sink, event_id, scope, resource_type, resource_key, state, finished_at)
         SELECT $1, id, scope, resource_type, resource_key, 'dead', now() FROM tombstone_events WHERE resource_type = $2 ORDER BY id LIMIT 10000`,
        [`bulk-${type}`, type],
      );
      expect((await as('post', '/dead-letters/retry').send({ sink: `bulk-${type}` }).expect(200)).body).toEqual({ retried: 10_000 });
      // Unregistering drops a sink's deliveries, however many.
      await as('delete', `/sinks/bulk-${type}`).expect(204);
      const [{ kept }] = await db.sql.query(`SELECT count(*)::int AS kept FROM tombstone_event_deliveries WHERE sink = $1`, [`bulk-${type}`]);
      expect(kept).toBe(0);
    });
  });

  describe('sinks', () => {
    it('lists the registered sinks with their pending and dead deliveries and lag', async () => {
      await register(`hook-${type}`, `purge-${type}`);
      for (const key of ['a', 'b', 'c']) await create(key);
      await kill('a', `purge-${type}`);
      await setDelivery('b', `purge-${type}`, `state = 'delivered', finished_at = now()`);
      const { items } = (await as('get', '/sinks').expect(200)).body;
      expect(items).toEqual([
        { name: `hook-${type}`, registeredAt: expect.any(String), seenAt: expect.any(String), pending: 3, dead: 0, lagMs: expect.any(Number) },
        { name: `purge-${type}`, registeredAt: expect.any(String), seenAt: expect.any(String), pending: 1, dead: 1, lagMs: expect.any(Number) },
      ]);
      for (const sink of items) {
        expect(Number.isNaN(Date.parse(sink.registeredAt))).toBe(false);
        expect(sink.lagMs).toBeGreaterThanOrEqual(0);
      }
    });

    it('unregister: 204, its deliveries dropped, no more deliveries written for it; then 404', async () => {
      await register(`hook-${type}`, `purge-${type}`);
      await create('a');
      const logged = spyLog();
      try {
        await as('delete', `/sinks/purge-${type}`).expect(204);
        expect(lines(logged)).toContainEqual(
          `Sink "purge-${type}" was unregistered, its deliveries dropped, by "ops-ana".`,
        );
      } finally {
        logged.mockRestore();
      }
      await create('b');
      expect((await list()).items.map((e) => [e.key, e.deliveries.map((d) => d.sink)])).toEqual([
        ['b', [`hook-${type}`]],
        ['a', [`hook-${type}`]],
      ]);
      expect((await as('get', '/sinks').expect(200)).body.items.map((s: { name: string }) => s.name)).toEqual([`hook-${type}`]);
      const res = await as('delete', `/sinks/purge-${type}`).expect(404);
      expect(res.body).toEqual({ statusCode: 404, error: 'Not Found', message: `No sink is registered as "purge-${type}".` });
    });
  });

  describe('hostile input: a 400 naming the field, never a 5xx; nothing written', () => {
    it.each([
      ['limit=21', 'limit'],
      ['limit=0', 'limit'],
      ['limit=-1', 'limit'],
      ['limit=1e308', 'limit'],
      ['limit=99999999999999999999999999', 'limit'],
      ['limit=abc', 'limit'],
      ['state=lost', 'state'],
      ['state=PENDING', 'state'],
      ['eventType=tombstone.deleted', 'eventType'],
      ['sink=a%0D%0Ab', 'sink'],
      ['sink=a%00b', 'sink'],
      ['sink=', 'sink'],
      [`sink=${'s'.repeat(201)}`, 'sink'],
      ['sink=%E2%80%AEevil', 'sink'],
      ['sink=a&sink=b', 'sink'],
      ['key=', 'key'],
      ['key=a%00b', 'key'],
      ['type=no%20spaces', 'type'],
      ['scope=a%00b', 'scope'],
      ['cursor=***', 'cursor'],
      [`cursor=${Buffer.from('9223372036854775808').toString('base64url')}`, 'cursor'],
      [`cursor=${Buffer.from('12; DROP TABLE tombstone_events').toString('base64url')}`, 'cursor'],
      ['colour=red', 'colour'],
    ])('list with %s', async (query, field) => {
      const res = await as('get', `?${query}`).expect(400);
      expect(res.body).toMatchObject({ statusCode: 400, error: 'Bad Request', message: expect.any(String) });
      expect(res.body.errors).toEqual(expect.arrayContaining([expect.objectContaining({ field })]));
      cleanBody(res);
    });

    it('a sink name of 200 characters is one; 201 are not', async () => {
      await as('get', `?sink=${encodeURIComponent('é'.repeat(200))}`).expect(200);
      await as('get', `?sink=${encodeURIComponent('é'.repeat(201))}`).expect(400);
      // Characters, not UTF-16 units: 200 emoji are 400 units.
      await as('get', `?sink=${encodeURIComponent('🪦'.repeat(200))}`).expect(200);
    });

    it.each([
      ['limit=21', 'limit'],
      ['sink=a%0Ab', 'sink'],
      ['cursor=***', 'cursor'],
      ['cursor=YWJj', 'cursor'],
      // Well-formed but forged: a day that does not exist, a sequence that is no number, no sink.
      [`cursor=${Buffer.from('2026-02-30T00:00:00.000000Z|5|hook').toString('base64url')}`, 'cursor'],
      [`cursor=${Buffer.from('2026-01-01T00:00:00.000000Z|x|hook').toString('base64url')}`, 'cursor'],
      [`cursor=${Buffer.from('2026-01-01T00:00:00.000000Z|5|').toString('base64url')}`, 'cursor'],
      [`cursor=${Buffer.from('2026-01-01T00:00:00.000000Z|5|a\nb').toString('base64url')}`, 'cursor'],
      ['state=dead', 'state'],
    ])('dead letters with %s', async (query, field) => {
      const res = await as('get', `/dead-letters?${query}`).expect(400);
      expect(res.body.errors).toEqual(expect.arrayContaining([expect.objectContaining({ field })]));
      cleanBody(res);
    });

    it.each([['abc'], ['1'], [`${ABSENT}0`], ['00000000-0000-4000-8000-00000000000g'], ['{00000000-0000-4000-8000-000000000000}'], ["' OR 1=1 --"]])(
      'event id %j: 400 on every route that takes one',
      async (id) => {
        for (const [method, path] of [
          ['get', ''],
          ['post', '/deliveries/hook/retry'],
          ['delete', '/deliveries/hook'],
        ] as const) {
          const res = await as(method, `/${encodeURIComponent(id)}${path}`).expect(400);
          expect(res.body.errors).toEqual([{ field: 'id', reason: 'must be an event id (a UUID)' }]);
        }
      },
    );

    it.each([['a\r\nb'], ['a\u0000b'], ['\u2028'], ['x'.repeat(201)], ['\u202Eevil']])('sink name %j in a path: 400', async (sink) => {
      await register(`hook-${type}`);
      await create('a');
      const id = await eventIdOf('a');
      const s = encodeURIComponent(sink);
      for (const [method, path, field] of [
        ['post', `/${id}/deliveries/${s}/retry`, 'sink'],
        ['delete', `/${id}/deliveries/${s}`, 'sink'],
        ['delete', `/sinks/${s}`, 'name'],
      ] as const) {
        const res = await as(method, path);
        // Fastify refuses a path parameter over its maxParamLength (100 by default) before any route.
        if (adapter === 'fastify' && sink.length > 100) {
          expect(res.status).toBe(414);
          continue;
        }
        expect(res.status).toBe(400);
        expect(res.body.errors).toEqual([{ field, reason: 'must be a sink name: 1 to 200 printable characters' }]);
      }
    });

    it('a path that is not valid percent-encoding: a 400', async () => {
      const res = await as('delete', `/sinks/%E0%A4%A`);
      expect(res.status).toBe(400);
      cleanBody(res);
      expect(res.text).not.toMatch(/URIError|decodeURIComponent/);
    });

    it.each([
      ['no body', undefined, 'sink'],
      ['no sink', {}, 'sink'],
      ['a sink that is no string', { sink: 42 }, 'sink'],
      ['a sink with CR/LF', { sink: 'a\r\nb' }, 'sink'],
      ['an empty sink', { sink: '' }, 'sink'],
      ['another field', { sink: 'hook', state: 'dead' }, 'state'],
    ])('retry of every dead letter with %s: 400', async (_name, body, field) => {
      await register(`hook-${type}`);
      await create('a');
      await kill('a', `hook-${type}`);
      const req = as('post', '/dead-letters/retry');
      const res = await (body === undefined ? req : req.send(body)).expect(400);
      expect(res.body.errors).toEqual(expect.arrayContaining([expect.objectContaining({ field })]));
      cleanBody(res);
      expect((await list('state=dead')).items).toHaveLength(1);
    });

    it.each([['a body that is an array', '[]'], ['malformed JSON', '{"sink":'], ['__proto__', '{"sink":"hook","__proto__":{"x":1}}']])(
      'retry of every dead letter with %s: 400',
      async (_name, body) => {
        const res = await as('post', '/dead-letters/retry').set('content-type', 'application/json').send(body).expect(400);
        cleanBody(res);
      },
    );

    it.each([
      ['no sink', ''],
      ['an empty sink', '?sink='],
      ['a sink with LF', '?sink=a%0Ab'],
      ['another filter', '?sink=hook&state=dead'],
    ])('discard of every dead letter with %s: 400, nothing deleted', async (_name, query) => {
      await register(`hook-${type}`);
      await create('a');
      await kill('a', `hook-${type}`);
      const res = await as('delete', `/dead-letters${query}`).expect(400);
      cleanBody(res);
      expect((await list('state=dead')).items).toHaveLength(1);
    });
  });

  describe('OpenAPI', () => {
    it('documents every endpoint of the outbox under its tag', async () => {
      const document = SwaggerModule.createDocument(app, new DocumentBuilder().setTitle('t').build());
      const paths = document.paths;
      const methods = (path: string) => Object.keys(paths[`/admin/events${path}`] ?? {}).sort();
      expect(methods('')).toEqual(['get']);
      expect(methods('/{id}')).toEqual(['get']);
      expect(methods('/dead-letters')).toEqual(['delete', 'get']);
      expect(methods('/dead-letters/retry')).toEqual(['post']);
      expect(methods('/{id}/deliveries/{sink}/retry')).toEqual(['post']);
      expect(methods('/{id}/deliveries/{sink}')).toEqual(['delete']);
      expect(methods('/sinks')).toEqual(['get']);
      expect(methods('/sinks/{name}')).toEqual(['delete']);
      const retry = paths['/admin/events/{id}/deliveries/{sink}/retry'].post!;
      expect(retry.tags).toEqual(['tombstone-events']);
      expect(Object.keys(retry.responses).sort()).toEqual(['200', '400', '401', '403', '404']);
      const listing = paths['/admin/events'].get!;
      expect((listing.parameters as { name: string }[]).map((p) => p.name).sort()).toEqual(
        ['cursor', 'eventType', 'key', 'limit', 'scope', 'sink', 'state', 'type'],
      );
      const discard = paths['/admin/events/dead-letters'].delete!;
      expect(discard.parameters).toEqual([expect.objectContaining({ name: 'sink', in: 'query', required: true })]);
      const body = document.components?.schemas?.RetryDeadLettersDto as { properties: Record<string, unknown>; required?: string[] };
      expect(Object.keys(body.properties)).toEqual(['sink']);
      expect(body.required).toEqual(['sink']);
    });
  });
});
