import { type INestApplication, Logger } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import request from 'supertest';
import { TombstoneModule, type TombstoneModuleOptions, TombstoneService } from '../src/index.js';
import { ItemsController } from './fixtures/items.fixture.js';
import { ADAPTERS, type AdapterName, bootApp, settled } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';
import { QueryCounter } from './support/query-counter.js';
import { TombstoneMissLog } from '../src/counters/tombstone.misses.js';
import { TombstoneHitCounter } from '../src/counters/tombstone.hits.js';

/** Long enough that no timer writes during a test: the tests write with flush(). */
const NO_TIMER = 3_600_000;

interface MissRow {
  scope: string;
  key: string;
  hits: number;
  first_seen: Date;
  last_seen: Date;
  last_referrer: string | null;
}

describe.each(ADAPTERS)('hit counts and the misses log (%s)', (adapter: AdapterName) => {
  let db: TestDatabase;
  let app: INestApplication;
  let http: ReturnType<typeof request>;
  let tombstones: TombstoneService;
  let hits: TombstoneHitCounter;
  let misses: TombstoneMissLog;
  const counter = new QueryCounter();
  const logs: { level: string; message: string }[] = [];

  const boot = (options: TombstoneModuleOptions, logger?: QueryCounter) =>
    bootApp(adapter, {
      imports: [
        TypeOrmModule.forRoot(logger ? { ...db.options(), logging: true, logger } : db.options()),
        TombstoneModule.forRoot({ scope: { header: 'x-tenant-id' }, ...options }),
      ],
      controllers: [ItemsController],
    });

  const hitsOf = async (key: string, scope = '') => {
    const [row] = await db.sql.query(
      `SELECT hit_count::int AS count, last_hit_at AS last FROM tombstones WHERE scope = $1 AND resource_type = 'item' AND resource_key = $2`,
      [scope, key],
    );
    return row as { count: number; last: Date | null };
  };
  const missesOf = async (keys: string[]): Promise<MissRow[]> =>
    db.sql.query(
      `SELECT scope, resource_key AS key, hits::int AS hits, first_seen, last_seen, last_referrer
         FROM tombstone_misses WHERE resource_type = 'item' AND resource_key = ANY($1) ORDER BY scope, resource_key`,
      [keys],
    );
  const missCount = async () => (await db.sql.query(`SELECT count(*)::int AS n FROM tombstone_misses`))[0].n as number;
  const updates = () => counter.queries.filter((q) => /^\s*UPDATE tombstones\b/.test(q));

  beforeAll(async () => {
    db = await createTestDatabase();
    app = await boot({ hitCounts: { flushIntervalMs: NO_TIMER }, missLog: { flushIntervalMs: NO_TIMER, maxRows: 100 } }, counter);
    const capture = (level: string) => (message: unknown) => void logs.push({ level, message: String(message) });
    Logger.overrideLogger({ log: () => undefined, warn: capture('warn'), error: capture('error') });
    http = request(app.getHttpServer());
    tombstones = app.get(TombstoneService);
    hits = app.get(TombstoneHitCounter);
    misses = app.get(TombstoneMissLog);
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  beforeEach(async () => {
    await hits.flush();
    await misses.flush();
    counter.reset();
    logs.length = 0;
  });

  describe('hit counts', () => {
    it('counts N answers of a 410 in memory, then writes them in one UPDATE', async () => {
      await tombstones.recordDeletion('item', 'gone-n');
      // The write's own notification comes back a moment later, and drops the cached answer:
      // heard before counting, it cannot cost a second lookup in the middle of the count.
      await settled(app);
      const before = new Date();
      counter.reset();
      for (let i = 0; i < 25; i++) await http.get('/items/gone-n').expect(410);
      // One lookup, then the cache: nothing was written while they were answered.
      expect(counter.queries.filter((q) => /^\s*(SELECT|WITH)\b/.test(q.trim()))).toHaveLength(1);
      expect(updates()).toHaveLength(0);
      expect((await hitsOf('gone-n')).count).toBe(0);
      expect(hits.pendingCount).toBe(1);

      await hits.flush();
      expect(updates()).toHaveLength(1);
      const row = await hitsOf('gone-n');
      expect(row.count).toBe(25);
      expect(row.last!.getTime()).toBeGreaterThanOrEqual(before.getTime());
      expect(row.last!.getTime()).toBeLessThanOrEqual(Date.now());

      // The next batch adds up, and last_hit_at never moves back.
      hits.record((await tombstones.find('item', 'gone-n'))!.id, new Date('2000-01-01'));
      await hits.flush();
      expect(await hitsOf('gone-n')).toEqual({ count: 26, last: row.last });
    });

    it('writes many tombstones in one UPDATE too', async () => {
      for (let i = 0; i < 10; i++) await tombstones.recordDeletion('item', `many-${i}`);
      for (let i = 0; i < 10; i++) await http.get(`/items/many-${i}`).expect(410);
      counter.reset();
      await hits.flush();
      expect(updates()).toHaveLength(1);
      for (let i = 0; i < 10; i++) expect((await hitsOf(`many-${i}`)).count).toBe(1);
    });

    it('counts redirects on the requested key’s own row, and never a hidden 404', async () => {
      await tombstones.recordHidden('item', 'h-hidden');
      await tombstones.recordMove('item', 'h-moved', 'target');
      await tombstones.recordMove('item', 'h-temp', 'target', { permanent: false });
      await tombstones.recordMove('item', 'h-chain-1', 'h-chain-2');
      await tombstones.recordMove('item', 'h-chain-2', 'target');
      await tombstones.recordMove('item', 'h-to-hidden', 'h-hidden-later');
      await tombstones.recordHidden('item', 'h-hidden-later');
      await tombstones.recordDeletion('item', 'h-tenant', { scope: 'acme' });
      for (let i = 0; i < 2; i++) {
        await http.get('/items/h-hidden').expect(404);
        await http.get('/items/h-moved').expect(301);
        await http.post('/items/h-moved').expect(308);
        await http.get('/items/h-temp').expect(302);
        await http.get('/items/h-chain-1').expect(301);
        await http.get('/items/h-to-hidden').expect(404);
        await http.get('/items/h-tenant').set('X-Tenant-Id', 'acme').expect(410);
        await http.get('/items/h-tenant').set('X-Tenant-Id', 'globex').expect(404); // not its scope: a miss
      }
      await hits.flush();
      // A hidden key answers exactly like an unknown one: not even its row tells them apart.
      expect((await hitsOf('h-hidden')).count).toBe(0);
      expect((await hitsOf('h-moved')).count).toBe(4);
      expect((await hitsOf('h-temp')).count).toBe(2);
      expect((await hitsOf('h-chain-1')).count).toBe(2);
      expect((await hitsOf('h-chain-2')).count).toBe(0);
      expect((await hitsOf('h-to-hidden')).count).toBe(0);
      expect((await hitsOf('h-hidden-later')).count).toBe(0);
      expect((await hitsOf('h-tenant', 'acme')).count).toBe(2);
    });

    it('records nothing, and runs no query, for a request that found its resource', async () => {
      for (let i = 0; i < 5; i++) await http.get('/items/live').expect(200);
      await http.get('/items').expect(200);
      expect(hits.pendingCount).toBe(0);
      expect(misses.pendingCount).toBe(0);
      expect(counter.queries).toEqual([]);
      await hits.flush();
      await misses.flush();
      expect(counter.queries).toEqual([]);
    });

    it('counts nothing when the lookup fails', async () => {
      await tombstones.recordDeletion('item', 'h-broken');
      await db.sql.query('ALTER TABLE tombstones RENAME TO tombstones_away');
      try {
        await http.get('/items/h-broken').expect(404);
      } finally {
        await db.sql.query('ALTER TABLE tombstones_away RENAME TO tombstones');
      }
      expect(logs.map((l) => l.message).join('\n')).toMatch(/Tombstone lookup failed/);
      expect(hits.pendingCount).toBe(0);
      expect(misses.pendingCount).toBe(0);
    });

    it('logs a failed write, keeps the counts, and writes them with the next flush', async () => {
      await tombstones.recordDeletion('item', 'h-retry');
      for (let i = 0; i < 3; i++) await http.get('/items/h-retry').expect(410);
      await db.sql.query('ALTER TABLE tombstones RENAME TO tombstones_away');
      try {
        await hits.flush();
      } finally {
        await db.sql.query('ALTER TABLE tombstones_away RENAME TO tombstones');
      }
      expect(logs).toEqual([
        {
          level: 'error',
          message: expect.stringMatching(/^Could not write 1 tombstone hit counts; they are kept for the next write: .*"tombstones" does not exist/),
        },
      ]);
      expect(hits.pendingCount).toBe(1);
      await http.get('/items/h-retry').expect(410);
      expect(hits.pendingCount).toBe(1);
      counter.reset();
      await hits.flush();
      expect(updates()).toHaveLength(1);
      expect((await hitsOf('h-retry')).count).toBe(4);
      expect(hits.pendingCount).toBe(0);
    });

    it('ignores hits of a tombstone that was restored before the write', async () => {
      await tombstones.recordDeletion('item', 'h-restored');
      await http.get('/items/h-restored').expect(410);
      await tombstones.restore('item', 'h-restored');
      await hits.flush();
      expect(logs).toEqual([]);
      expect(await hitsOf('h-restored')).toBeUndefined();
    });
  });

  describe('the misses log', () => {
    it('records 404s that no tombstone explained, per scope and key, with counts, times and the last referrer', async () => {
      const before = new Date();
      await http.get('/items/m-nope').set('Referer', 'https://one.example/page').expect(404);
      await http.get('/items/m-nope/throws').set('Referer', 'https://two.example/page').expect(404);
      await http.get('/items/m-nope').expect(404); // no referrer: the last known stays
      await http.get('/items/m-nope').set('X-Tenant-Id', 'acme').expect(404);
      await http.get('/items/m-other').expect(404);
      // Nothing was written while answering.
      expect(await missesOf(['m-nope', 'm-other'])).toEqual([]);
      expect(misses.pendingCount).toBe(3);
      await misses.flush();
      const rows = await missesOf(['m-nope', 'm-other']);
      expect(rows).toEqual([
        { scope: '', key: 'm-nope', hits: 3, first_seen: expect.any(Date), last_seen: expect.any(Date), last_referrer: 'https://two.example/page' },
        { scope: '', key: 'm-other', hits: 1, first_seen: expect.any(Date), last_seen: expect.any(Date), last_referrer: null },
        { scope: 'acme', key: 'm-nope', hits: 1, first_seen: expect.any(Date), last_seen: expect.any(Date), last_referrer: null },
      ]);
      for (const row of rows) {
        expect(row.first_seen.getTime()).toBeGreaterThanOrEqual(before.getTime());
        expect(row.last_seen.getTime()).toBeGreaterThanOrEqual(row.first_seen.getTime());
      }

      // A later batch adds up: first_seen stays, last_seen moves.
      await http.get('/items/m-nope').set('Referer', 'https://three.example/').expect(404);
      await misses.flush();
      const [again] = await missesOf(['m-nope']);
      expect(again).toMatchObject({ hits: 4, first_seen: rows[0].first_seen, last_referrer: 'https://three.example/' });
      expect(again.last_seen.getTime()).toBeGreaterThanOrEqual(rows[0].last_seen.getTime());
    });

    it('records nothing for keys with a tombstone, nor for failed lookups, nor for keys that cannot be stored', async () => {
      const rowsBefore = await missCount();
      await tombstones.recordDeletion('item', 'm-gone');
      await tombstones.recordHidden('item', 'm-hidden');
      await tombstones.recordDeletion('item', 'm-lookup-failed');
      await http.get('/items/m-gone').expect(410);
      await http.get('/items/m-hidden').expect(404);
      await http.get('/items/a%00b').expect(404);
      await db.sql.query('ALTER TABLE tombstones RENAME TO tombstones_away');
      try {
        await http.get('/items/m-lookup-failed').expect(404);
      } finally {
        await db.sql.query('ALTER TABLE tombstones_away RENAME TO tombstones');
      }
      // The hidden key waits like an unknown key's miss (nothing tells them apart), and is
      // dropped when written, like any key that has a tombstone.
      expect(misses.pendingCount).toBe(1);
      await misses.flush();
      expect(await missesOf(['m-gone', 'm-hidden', 'm-lookup-failed'])).toEqual([]);
      expect(await missCount()).toBe(rowsBefore);
    });

    it('drops a pending miss whose key got a tombstone before the write (a resolved miss does not come back)', async () => {
      await http.get('/items/m-resolved-meanwhile').expect(404);
      await http.get('/items/m-still-missing').expect(404);
      expect(misses.pendingCount).toBe(2);
      await tombstones.recordMove('item', 'm-resolved-meanwhile', 'live');
      await misses.flush();
      expect((await missesOf(['m-resolved-meanwhile', 'm-still-missing'])).map((r) => r.key)).toEqual(['m-still-missing']);
    });

    it('stores hostile keys and referrers safely, or not at all', async () => {
      const key = `"{},\\'NULL`;
      await http.get(`/items/${encodeURIComponent(key)}`).set('Referer', 'https://a.example/?q="x",{y}\\NULL').expect(404);
      await http.get('/items/m-long-ref').set('Referer', `https://a.example/${'x'.repeat(10_000)}`).expect(404);
      await http.get('/items/m-latin1-ref').set('Referer', 'https://\u00e4.example/').expect(404);
      // A CR or LF cannot travel in a header; a caller of record() may still pass one.
      misses.record('', 'item', 'm-crlf-ref', 'https://a.example/\r\nSet-Cookie: x=1');
      misses.record('', 'item', 'm-unicode-ref', 'https://a.example/💩');
      await misses.flush();
      expect(logs).toEqual([]);
      const rows = await missesOf([key, 'm-long-ref', 'm-latin1-ref', 'm-crlf-ref', 'm-unicode-ref']);
      expect(Object.fromEntries(rows.map((r) => [r.key, r.last_referrer]))).toEqual({
        [key]: 'https://a.example/?q="x",{y}\\NULL',
        'm-long-ref': `https://a.example/${'x'.repeat(494)}`,
        'm-latin1-ref': null,
        'm-crlf-ref': null,
        'm-unicode-ref': null,
      });
    });

    it('keeps at most maxRows rows after a flood of distinct keys: the most recently seen', async () => {
      const keys = Array.from({ length: 1000 }, (_, i) => `m-flood-${i}`);
      for (let i = 0; i < keys.length; i += 50) {
        await Promise.all(keys.slice(i, i + 50).map((key) => http.get(`/items/${key}`).expect(404)));
      }
      expect(misses.pendingCount).toBe(1000);
      await misses.flush();
      expect(await missCount()).toBe(100);

      // Which 100: the most recently seen.
      await db.sql.query('DELETE FROM tombstone_misses');
      const base = Date.now() - 3_600_000;
      for (let i = 0; i < 300; i++) misses.record('', 'item', `m-ordered-${i}`, null, new Date(base + i * 1000));
      await misses.flush();
      const kept = (await db.sql.query(`SELECT resource_key AS key FROM tombstone_misses ORDER BY last_seen`)) as { key: string }[];
      expect(kept.map((r) => r.key)).toEqual(Array.from({ length: 100 }, (_, i) => `m-ordered-${200 + i}`));
      // A full table would crowd out the rows of the tests that follow (maxRows is 100).
      await db.sql.query('DELETE FROM tombstone_misses');
    });

    it('deletes rows not seen for retentionDays', async () => {
      await http.get('/items/m-old-1').expect(404);
      await http.get('/items/m-old-2').expect(404);
      await http.get('/items/m-recent').expect(404);
      await misses.flush();
      await db.sql.query(
        `UPDATE tombstone_misses SET first_seen = now() - interval '40 days', last_seen = now() - interval '31 days'
          WHERE resource_key IN ('m-old-1', 'm-old-2')`,
      );
      await db.sql.query(
        `UPDATE tombstone_misses SET first_seen = now() - interval '40 days', last_seen = now() - interval '29 days'
          WHERE resource_key = 'm-recent'`,
      );
      await http.get('/items/m-trigger').expect(404);
      await misses.flush();
      expect((await missesOf(['m-old-1', 'm-old-2', 'm-recent', 'm-trigger'])).map((r) => r.key)).toEqual(['m-recent', 'm-trigger']);
    });

    it('logs a failed write, keeps the misses, and writes them with the next flush', async () => {
      await http.get('/items/m-retry').set('Referer', 'https://r.example/').expect(404);
      await http.get('/items/m-retry').expect(404);
      await db.sql.query('ALTER TABLE tombstone_misses RENAME TO tombstone_misses_away');
      try {
        await misses.flush();
      } finally {
        await db.sql.query('ALTER TABLE tombstone_misses_away RENAME TO tombstone_misses');
      }
      expect(logs).toEqual([
        { level: 'error', message: expect.stringMatching(/^Could not write 1 tombstone misses; they are kept for the next write: .*does not exist/) },
      ]);
      expect(misses.pendingCount).toBe(1);
      await misses.flush();
      expect(await missesOf(['m-retry'])).toEqual([expect.objectContaining({ hits: 2, last_referrer: 'https://r.example/' })]);
    });
  });

  describe('bounds under a flood of 50,000 distinct keys', () => {
    let flood: INestApplication;

    beforeAll(async () => {
      flood = await boot({ hitCounts: { maxPending: 1000, flushIntervalMs: NO_TIMER }, missLog: { maxPending: 1000, maxRows: 5000 } });
      Logger.overrideLogger({
        log: () => undefined,
        warn: (message: unknown) => void logs.push({ level: 'warn', message: String(message) }),
        error: (message: unknown) => void logs.push({ level: 'error', message: String(message) }),
      });
    });

    afterAll(async () => {
      await flood?.close();
    });

    /** What the warnings say was dropped. */
    const droppedIn = (events: string) =>
      logs
        .map((l) => new RegExp(`^(\\d+) ${events} were not recorded`).exec(l.message))
        .reduce((sum, m) => sum + (m ? Number(m[1]) : 0), 0);

    it('hit counts: never more than maxPending in memory; every hit written or reported dropped', async () => {
      const counter50k = flood.get(TombstoneHitCounter);
      const ids = (
        (await db.sql.query(
          `INSERT INTO tombstones (resource_type, resource_key, kind)
           SELECT 'bulk', 'b' || g, 'deleted' FROM generate_series(1, 50000) AS g RETURNING id`,
        )) as { id: string }[]
      ).map((r) => String(r.id));
      let largest = 0;
      for (let i = 0; i < ids.length; i++) {
        counter50k.record(ids[i]);
        largest = Math.max(largest, counter50k.pendingCount);
        // Let the writes that a full buffer starts run, as they would between requests.
        if (i % 500 === 499) await new Promise((resolve) => setImmediate(resolve));
      }
      await counter50k.flush();
      expect(largest).toBeLessThanOrEqual(1000);
      expect(counter50k.pendingCount).toBe(0);
      const [{ written }] = await db.sql.query(`SELECT sum(hit_count)::int AS written FROM tombstones WHERE resource_type = 'bulk'`);
      expect(written).toBeGreaterThanOrEqual(1000);
      expect(written + droppedIn('hits')).toBe(50_000);
      expect(logs.filter((l) => l.level === 'error')).toEqual([]);
    });

    it('misses log: never more than maxPending in memory, never more than maxRows rows', async () => {
      const log = flood.get(TombstoneMissLog);
      let largest = 0;
      for (let i = 0; i < 50_000; i++) {
        log.record('', 'flood', `f-${i}`, 'https://bot.example/');
        largest = Math.max(largest, log.pendingCount);
        if (i % 500 === 499) await new Promise((resolve) => setImmediate(resolve));
      }
      await log.flush();
      expect(largest).toBeLessThanOrEqual(1000);
      expect(log.pendingCount).toBe(0);
      expect(await missCount()).toBeLessThanOrEqual(5000);
      const [{ written }] = await db.sql.query(`SELECT count(*)::int AS written FROM tombstone_misses WHERE resource_type = 'flood'`);
      expect(written).toBeGreaterThan(0);
      expect(logs.filter((l) => l.level === 'error')).toEqual([]);
    });
  });

  describe('writes without flush()', () => {
    it('on app.close()', async () => {
      const other = await boot({ hitCounts: { flushIntervalMs: NO_TIMER }, missLog: { flushIntervalMs: NO_TIMER } });
      try {
        await other.get(TombstoneService).recordDeletion('item', 'c-gone');
        const client = request(other.getHttpServer());
        await client.get('/items/c-gone').expect(410);
        await client.get('/items/c-gone').expect(410);
        await client.get('/items/c-missing').expect(404);
      } finally {
        await other.close();
      }
      expect((await hitsOf('c-gone')).count).toBe(2);
      expect(await missesOf(['c-missing'])).toEqual([expect.objectContaining({ hits: 1 })]);
    });

    it('on the flush interval', async () => {
      const other = await boot({ hitCounts: { flushIntervalMs: 100 }, missLog: { flushIntervalMs: 100 } });
      try {
        await other.get(TombstoneService).recordDeletion('item', 't-gone');
        const client = request(other.getHttpServer());
        await client.get('/items/t-gone').expect(410);
        await client.get('/items/t-missing').expect(404);
        // Waits for the timer (no assertion on how long it takes).
        await eventually(async () => {
          expect((await hitsOf('t-gone')).count).toBe(1);
          expect(await missesOf(['t-missing'])).toEqual([expect.objectContaining({ hits: 1 })]);
        });
      } finally {
        await other.close();
      }
    });

    it('not at all when hit counts and the misses log are off', async () => {
      const other = await boot({ hitCounts: false, missLog: false });
      try {
        await other.get(TombstoneService).recordDeletion('item', 'o-gone');
        const client = request(other.getHttpServer());
        await client.get('/items/o-gone').expect(410);
        await client.get('/items/o-missing').expect(404);
        expect(other.get(TombstoneHitCounter).pendingCount).toBe(0);
        expect(other.get(TombstoneMissLog).pendingCount).toBe(0);
      } finally {
        await other.close();
      }
      expect((await hitsOf('o-gone')).count).toBe(0);
      expect(await missesOf(['o-missing'])).toEqual([]);
    });
  });
});
