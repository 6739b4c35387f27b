import { Logger } from '@nestjs/common';
import { TombstoneHitCounter } from './tombstone.hits.js';
import type { TombstoneModuleOptions } from '../tombstone.options.js';
import { resolveTombstoneOptions } from '../tombstone.options-resolve.js';
import type { TombstoneTable } from '../table/tombstone.table.js';

/** A DataSource whose queries the test answers: each call waits until released or failed. */
class FakeDataSource {
  isInitialized = true;
  readonly calls: { sql: string; params: unknown[]; release: () => void; fail: (error: Error) => void }[] = [];
  /** When set, queries answer at once (true: succeed, an Error: fail). */
  auto: true | Error | undefined = true;

  query(sql: string, params: unknown[]): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.calls.push({ sql, params, release: () => resolve([]), fail: reject });
      if (this.auto === true) resolve([]);
      else if (this.auto instanceof Error) reject(this.auto);
    });
  }

  /** The rows each UPDATE added, as { id: [count, lastIso] }. */
  writes(): Record<string, [number, string]>[] {
    return this.calls.map(({ params }) => {
      const [ids, counts, lasts] = params as [string[], number[], string[]];
      return Object.fromEntries(ids.map((id, i) => [id, [counts[i], lasts[i]]]));
    });
  }
}

const logs: { level: string; message: string }[] = [];

function counter(options: TombstoneModuleOptions = {}) {
  const source = new FakeDataSource();
  const service = { dataSource: source } as unknown as TombstoneTable;
  return { hits: new TombstoneHitCounter(resolveTombstoneOptions(options), service), source };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));
const at = (second: number) => new Date(Date.UTC(2025, 0, 1, 0, 0, second));
const iso = (second: number) => at(second).toISOString();

beforeAll(() => {
  Logger.overrideLogger({
    log: () => undefined,
    warn: (message: unknown) => void logs.push({ level: 'warn', message: String(message) }),
    error: (message: unknown) => void logs.push({ level: 'error', message: String(message) }),
  });
});

beforeEach(() => {
  logs.length = 0;
});

describe('TombstoneHitCounter', () => {
  it('adds up hits per tombstone in memory and writes them in one statement', async () => {
    const { hits, source } = counter();
    hits.record('7', at(3));
    hits.record('7', at(1));
    hits.record('12', at(2));
    hits.record('7', at(2));
    expect(hits.pendingCount).toBe(2);
    expect(source.calls).toHaveLength(0);
    await hits.flush();
    expect(source.calls).toHaveLength(1);
    expect(source.calls[0].sql).toMatch(/UPDATE tombstones t\s+SET hit_count = t.hit_count \+ v.n, last_hit_at = GREATEST\(t.last_hit_at, v.at\)/);
    expect(source.calls[0].sql).toContain('unnest($1::bigint[], $2::bigint[], $3::timestamptz[])');
    // Sorted by numeric id, and the latest time of each.
    expect(source.calls[0].params).toEqual([['7', '12'], [3, 1], [iso(3), iso(2)]]);
    expect(hits.pendingCount).toBe(0);
    await hits.flush();
    expect(source.calls).toHaveLength(1);
  });

  it('ignores what is not a tombstone id', async () => {
    const { hits, source } = counter();
    for (const id of ['', '0', '-1', '1.5', 'abc', ' 1', '1 ', '1234567890123456789', '0x10', undefined, 5]) {
      hits.record(id as string);
    }
    expect(hits.pendingCount).toBe(0);
    hits.record('123456789012345678');
    await hits.flush();
    expect(source.writes()).toEqual([{ '123456789012345678': [1, expect.any(String)] }]);
  });

  it('counts an invalid date as now', async () => {
    const { hits, source } = counter();
    const before = Date.now();
    hits.record('1', new Date(Number.NaN));
    await hits.flush();
    expect(Date.parse(source.writes()[0]['1'][1])).toBeGreaterThanOrEqual(before);
  });

  it('does nothing when hitCounts is false', async () => {
    const { hits, source } = counter({ hitCounts: false });
    hits.record('1');
    expect(hits.pendingCount).toBe(0);
    await hits.flush();
    await hits.beforeApplicationShutdown();
    expect(source.calls).toHaveLength(0);
  });

  describe('the maxPending bound', () => {
    it('keeps at most maxPending tombstones, drops hits of others, and writes when full', async () => {
      const { hits, source } = counter({ hitCounts: { maxPending: 3 } });
      source.auto = undefined;
      for (let id = 1; id <= 10; id++) hits.record(String(id));
      hits.record('2');
      expect(hits.pendingCount).toBe(3);
      expect(hits.droppedCount).toBe(7);
      await settle();
      // Full: the write started by itself, with what was pending, and memory is free again.
      expect(source.calls).toHaveLength(1);
      expect(source.writes()[0]).toEqual({ '1': [1, expect.any(String)], '2': [2, expect.any(String)], '3': [1, expect.any(String)] });
      expect(hits.pendingCount).toBe(0);
      expect(logs).toEqual([
        {
          level: 'warn',
          message: '7 hits were not recorded: 3 tombstone hit counts were already waiting to be written (hitCounts.maxPending).',
        },
      ]);
      expect(hits.droppedCount).toBe(0);
      // What a health check reports: every drop since start, not reset by the write.
      expect(hits.droppedTotal).toBe(7);
      source.calls[0].release();
      await settle();
    });

    it('stays within the bound under 50,000 distinct tombstones', async () => {
      const { hits, source } = counter({ hitCounts: { maxPending: 1000 } });
      source.auto = undefined;
      let largest = 0;
      for (let id = 1; id <= 50_000; id++) {
        hits.record(String(id));
        largest = Math.max(largest, hits.pendingCount);
      }
      expect(largest).toBe(1000);
      expect(hits.droppedCount).toBe(49_000);
    });
  });

  describe('failed writes', () => {
    it('logs, puts the counts back merged with newer hits, and writes them all later', async () => {
      const { hits, source } = counter();
      source.auto = undefined;
      hits.record('1', at(1));
      hits.record('2', at(1));
      const failing = hits.flush();
      await settle();
      hits.record('1', at(5)); // while the write is under way
      source.calls[0].fail(new Error('relation "tombstones" does not exist'));
      await failing;
      expect(logs).toEqual([
        {
          level: 'error',
          message: 'Could not write 2 tombstone hit counts; they are kept for the next write: relation "tombstones" does not exist',
        },
      ]);
      expect(hits.pendingCount).toBe(2);
      source.auto = true;
      await hits.flush();
      expect(source.writes()[1]).toEqual({ '1': [2, iso(5)], '2': [1, iso(1)] });
      expect(hits.pendingCount).toBe(0);
    });

    it('puts back only what the bound allows, counting the rest as dropped', async () => {
      const { hits, source } = counter({ hitCounts: { maxPending: 2 } });
      source.auto = undefined;
      hits.record('1');
      const failing = hits.flush();
      await settle();
      hits.record('2');
      hits.record('3');
      await settle(); // full again: a second write waits for the first
      // 2 and 3 fill the bound: the hit of 1 cannot be put back, and counts as dropped.
      source.calls[0].fail(new Error('down'));
      await failing;
      await settle();
      // The queued write took 2 and 3, and logged the drop.
      expect(hits.pendingCount).toBe(0);
      expect(source.calls).toHaveLength(2);
      expect(Object.keys(source.writes()[1])).toEqual(['2', '3']);
      expect(logs.map((l) => l.message)).toEqual([
        expect.stringContaining('Could not write 1 tombstone hit counts'),
        expect.stringContaining('1 hits were not recorded'),
      ]);
      source.calls[1].fail(new Error('still down'));
      await settle();
      expect(hits.pendingCount).toBe(2);
      expect(hits.droppedCount).toBe(0);
    });
  });

  describe('concurrent flushes', () => {
    it('run one at a time, and never write a hit twice', async () => {
      const { hits, source } = counter();
      source.auto = undefined;
      hits.record('1');
      const first = hits.flush();
      await settle();
      hits.record('1');
      hits.record('2');
      const second = hits.flush();
      const third = hits.flush();
      expect(third).toBe(second);
      await settle();
      expect(source.calls).toHaveLength(1); // the second waits for the first
      source.calls[0].release();
      await first;
      await settle();
      expect(source.calls).toHaveLength(2);
      source.calls[1].release();
      await second;
      expect(source.writes()).toEqual([{ '1': [1, expect.any(String)] }, { '1': [1, expect.any(String)], '2': [1, expect.any(String)] }]);
    });
  });

  describe('shutdown', () => {
    it('writes before the application shuts down, then records nothing more', async () => {
      const { hits, source } = counter();
      hits.record('1');
      await hits.beforeApplicationShutdown();
      expect(source.writes()).toEqual([{ '1': [1, expect.any(String)] }]);
      hits.record('2'); // an answer served while the HTTP server closed
      await hits.onApplicationShutdown();
      expect(source.writes()[1]).toEqual({ '2': [1, expect.any(String)] });
      hits.record('3');
      expect(hits.pendingCount).toBe(0);
    });

    it('says what it could not write when the DataSource closed first', async () => {
      const { hits, source } = counter();
      hits.record('1');
      source.isInitialized = false;
      await hits.onApplicationShutdown();
      expect(source.calls).toHaveLength(0);
      expect(logs).toEqual([{ level: 'warn', message: '1 tombstone hit counts were not written: the DataSource closed first.' }]);
    });
  });
});
