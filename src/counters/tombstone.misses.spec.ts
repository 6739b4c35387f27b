import { Logger } from '@nestjs/common';
import { referrerOf, TombstoneMissLog } from './tombstone.misses.js';
import type { TombstoneModuleOptions } from '../tombstone.options.js';
import { resolveTombstoneOptions } from '../tombstone.options-resolve.js';
import type { TombstoneTable } from '../table/tombstone.table.js';

class FakeDataSource {
  isInitialized = true;
  readonly calls: { sql: string; params: unknown[] }[] = [];
  /** Fails the query whose SQL matches. */
  failing?: RegExp;

  async query(sql: string, params: unknown[]): Promise<unknown> {
    this.calls.push({ sql, params });
    if (this.failing?.test(sql)) throw new Error('down');
    return [];
  }

  /** The rows of each upsert, one object per miss. */
  upserts() {
    return this.calls
      .filter(({ sql }) => sql.includes('INSERT INTO tombstone_misses'))
      .map(({ params }) => {
        const [scopes, types, keys, hits, firsts, lasts, referrers] = params as [string[], string[], string[], number[], string[], string[], (string | null)[]];
        return keys.map((key, i) => ({ scope: scopes[i], type: types[i], key, hits: hits[i], first: firsts[i], last: lasts[i], referrer: referrers[i] }));
      });
  }
}

const errors: string[] = [];

function missLog(options: TombstoneModuleOptions = { missLog: true }) {
  const source = new FakeDataSource();
  const service = { dataSource: source } as unknown as TombstoneTable;
  return { misses: new TombstoneMissLog(resolveTombstoneOptions(options), service), source };
}

const at = (second: number) => new Date(Date.UTC(2025, 0, 1, 0, 0, second));
const iso = (second: number) => at(second).toISOString();

beforeAll(() => {
  Logger.overrideLogger({ log: () => undefined, warn: () => undefined, error: (message: unknown) => void errors.push(String(message)) });
});

beforeEach(() => {
  errors.length = 0;
});

describe('referrerOf', () => {
  it.each([
    ['https://example.com/page?q=1', 'https://example.com/page?q=1'],
    ['/relative path', '/relative path'],
    ['~', '~'],
  ])('keeps the printable ASCII %j', (value, expected) => {
    expect(referrerOf(value)).toBe(expected);
  });

  it('cuts a long referrer to 512 characters', () => {
    expect(referrerOf(`https://a.example/${'x'.repeat(10_000)}`)).toBe(`https://a.example/${'x'.repeat(494)}`);
    expect(referrerOf('y'.repeat(512))).toBe('y'.repeat(512));
  });

  it.each([
    ['CRLF', 'https://a.example/\r\nSet-Cookie: x=1'],
    ['LF', 'https://a.example/\n'],
    ['a tab', 'https://a.example/\tx'],
    ['NUL', 'https://a.example/\u0000'],
    ['DEL', 'https://a.example/\u007f'],
    ['non-ASCII', 'https://ä.example/'],
    ['latin1 bytes read as text', 'https://a.example/\u00c3\u00a9'],
    ['an emoji', 'https://a.example/💩'],
    ['a lone surrogate', 'https://a.example/\ud800'],
    ['CRLF past 512 characters', `${'x'.repeat(600)}\r\n`],
    ['empty', ''],
    ['an array', ['https://a.example/']],
    ['a number', 42],
    ['undefined', undefined],
    ['null', null],
  ])('answers null for %s', (_label, value) => {
    expect(referrerOf(value)).toBeNull();
  });
});

describe('TombstoneMissLog', () => {
  it('is off by default', async () => {
    const { misses, source } = missLog({});
    misses.record('', 'item', 'a', 'https://a.example/');
    expect(misses.pendingCount).toBe(0);
    await misses.flush();
    expect(source.calls).toHaveLength(0);
  });

  it('adds up misses per (scope, type, key): count, first and last seen, newest referrer', async () => {
    const { misses, source } = missLog();
    misses.record('', 'item', 'a', 'https://one.example/', at(5));
    misses.record('', 'item', 'a', 'https://two.example/', at(9));
    misses.record('', 'item', 'a', undefined, at(12)); // no referrer: the last known stays
    misses.record('', 'item', 'a', 'https://old.example/', at(1)); // late, and older: first seen moves, referrer stays
    misses.record('acme', 'item', 'a', '\r\nbad', at(2));
    misses.record('', 'doc', 'a', null, at(3));
    expect(misses.pendingCount).toBe(3);
    await misses.flush();
    expect(source.upserts()).toEqual([
      [
        { scope: '', type: 'item', key: 'a', hits: 4, first: iso(1), last: iso(12), referrer: 'https://two.example/' },
        { scope: 'acme', type: 'item', key: 'a', hits: 1, first: iso(2), last: iso(2), referrer: null },
        { scope: '', type: 'doc', key: 'a', hits: 1, first: iso(3), last: iso(3), referrer: null },
      ],
    ]);
  });

  it('never mixes keys whose parts join alike', async () => {
    const { misses } = missLog();
    misses.record('a', 'b', 'c');
    misses.record('', 'b', 'ac');
    misses.record('a', 'bc', 'x');
    misses.record('ab', 'c', 'x');
    expect(misses.pendingCount).toBe(4);
  });

  it.each([
    ['a key with NUL', '', 'item', 'a\u0000b'],
    ['a key over 2048 bytes', '', 'item', 'é'.repeat(1025)],
    ['an empty key', '', 'item', ''],
    ['a key with a lone surrogate', '', 'item', '\ud800'],
    ['a scope over 256 bytes', 'x'.repeat(257), 'item', 'a'],
    ['a scope with NUL', 'a\u0000', 'item', 'a'],
    ['an invalid type', '', 'no spaces', 'a'],
    ['a key that is not a string', '', 'item', 42],
  ])('does not log %s', (_label, scope, type, key) => {
    const { misses } = missLog();
    misses.record(scope, type, key as string);
    expect(misses.pendingCount).toBe(0);
  });

  it('logs keys at the limits', () => {
    const { misses } = missLog();
    misses.record('s'.repeat(256), 't'.repeat(128), 'é'.repeat(1024));
    expect(misses.pendingCount).toBe(1);
  });

  it('keeps at most maxPending keys and drops misses of others', () => {
    const { misses } = missLog({ missLog: { maxPending: 100 } });
    for (let i = 0; i < 1000; i++) misses.record('', 'item', `k${i}`);
    misses.record('', 'item', 'k1');
    expect(misses.pendingCount).toBe(100);
    expect(misses.droppedCount).toBe(900);
  });

  it('upserts in one statement, then trims by retention and row cap within a bounded delete', async () => {
    const { misses, source } = missLog({ missLog: { maxRows: 500, retentionDays: 7, maxPending: 50 } });
    misses.record('', 'item', 'a');
    await misses.flush();
    expect(source.calls).toHaveLength(2);
    expect(source.calls[0].sql).toMatch(/INSERT INTO tombstone_misses AS m[\s\S]+FROM unnest\([\s\S]+ON CONFLICT \(scope, resource_type, resource_key\) DO UPDATE/);
    expect(source.calls[0].sql).toContain('hits = m.hits + EXCLUDED.hits');
    expect(source.calls[1].sql).toMatch(/DELETE FROM tombstone_misses/);
    expect(source.calls[1].params).toEqual([7, 500, 100]);
  });

  it('puts the misses back when the upsert fails', async () => {
    const { misses, source } = missLog();
    source.failing = /INSERT/;
    misses.record('', 'item', 'a');
    await misses.flush();
    expect(source.calls).toHaveLength(1);
    expect(misses.pendingCount).toBe(1);
    expect(errors).toEqual([expect.stringContaining('Could not write 1 tombstone misses; they are kept for the next write: down')]);
  });

  it('only logs a failed trim: the misses are written', async () => {
    const { misses, source } = missLog();
    source.failing = /DELETE/;
    misses.record('', 'item', 'a');
    await misses.flush();
    expect(source.calls).toHaveLength(2);
    expect(misses.pendingCount).toBe(0);
    expect(errors).toEqual(['Could not trim tombstone_misses: down']);
  });
});
