import fc from 'fast-check';
import { TombstoneCacheTags } from './tombstone.cache-tags.js';
import { jsonText, PreparedReply, SLOT_KEY, SLOT_PATH, SLOT_REQUEST_ID, slotsOf, TombstonePreparedAnswers } from './tombstone.prepared.js';
import { TombstoneRenderer } from './tombstone.renderer.js';
import type { TombstoneAnswer, TombstonedSettings, TombstoneRequest, TombstoneResolution } from './tombstone.types.js';
import { NO_TOMBSTONE } from './tombstone.types.js';

const settings: TombstonedSettings = { type: 'item', param: 'key', label: 'Item', emptyMeansNotFound: true, cacheTags: false, suggest: false };
const untagged = { enabled: false } as TombstoneCacheTags;

function request(url: string, method = 'GET', params: Record<string, string> = {}): TombstoneRequest {
  return { method, url, originalUrl: url, headers: {}, params, route: { path: '/items/:key' } };
}

function gone(): TombstoneResolution {
  return { state: 'gone', id: '1', deletedAt: new Date('2025-01-01T00:00:00.000Z'), reason: 'Retired', alternative: null };
}

/** The store of kept answers, as the class holds it. */
const keptOf = (prepared: TombstonePreparedAnswers) => (prepared as unknown as { kept: Map<string, unknown> }).kept;

describe('TombstonePreparedAnswers', () => {
  it('keeps answers only for the default renderer, and never with cache tags', () => {
    class Worded extends TombstoneRenderer {
      protected override message(answer: TombstoneAnswer): string {
        return `Sorry: ${super.message(answer)}`;
      }
    }
    class Themed extends TombstoneRenderer {
      protected override htmlStyle(): string {
        return 'body{color:red}';
      }
    }
    expect(new TombstonePreparedAnswers(new TombstoneRenderer(), untagged).enabled).toBe(true);
    // A subclass that changes only the HTML page keeps JSON as it is.
    expect(new TombstonePreparedAnswers(new Themed(), untagged).enabled).toBe(true);
    expect(new TombstonePreparedAnswers(new Worded(), untagged).enabled).toBe(false);
    expect(new TombstonePreparedAnswers(new TombstoneRenderer(), { enabled: true } as TombstoneCacheTags).enabled).toBe(false);
  });

  it('uses a kept answer only while the lookup gives the resolution it was made from', () => {
    const prepared = new TombstonePreparedAnswers(new TombstoneRenderer(), untagged);
    const first = gone();
    const req = request('/items/old', 'GET', { key: 'old' });
    const a = prepared.reply(settings, req, 'old', false, first, 'req-1')!;
    const b = prepared.reply(settings, req, 'old', false, first, 'req-2')!;
    expect(b.prepared).toBe(a.prepared);
    // The tombstone changed: a new resolution object, a new answer.
    const changed: TombstoneResolution = { state: 'moved', id: '1', target: 'new', permanent: true, merged: false };
    const c = prepared.reply(settings, req, 'old', false, changed, 'req-3')!;
    expect(c.prepared).not.toBe(a.prepared);
    expect(c.answer()).toMatchObject({ status: 301, location: '/items/new', requestId: 'req-3' });
    // The method, the scope and the request line each have their own answer.
    expect(prepared.reply(settings, request('/items/old', 'POST', { key: 'old' }), 'old', false, changed, 'req-4')!.answer().status).toBe(308);
    expect(prepared.reply(settings, req, 'old', true, changed, 'req-5')!.prepared).not.toBe(c.prepared);
    expect(prepared.reply(settings, request('/items/old?a=1', 'GET', { key: 'old' }), 'old', false, changed, 'req-6')!.answer().location).toBe('/items/new?a=1');
  });

  it('keeps a bounded number of answers, and none for long request lines or keys', () => {
    const prepared = new TombstonePreparedAnswers(new TombstoneRenderer(), untagged);
    const resolution = gone();
    for (let i = 0; i < 2500; i++) prepared.reply(settings, request(`/items/k${i}`, 'GET', { key: `k${i}` }), `k${i}`, false, resolution, 'req');
    expect(keptOf(prepared).size).toBe(2000);
    const long = `/items/k?${'q'.repeat(600)}`;
    expect(prepared.reply(settings, request(long, 'GET', { key: 'k' }), 'k', false, resolution, 'req')).toBeUndefined();
    // A route's 404 quotes keys up to 200 characters whole; a longer one is answered the long way.
    expect(prepared.reply(settings, request('/items/x'), 'x'.repeat(200), false, NO_TOMBSTONE, 'req')).toBeInstanceOf(PreparedReply);
    expect(prepared.reply(settings, request('/items/x'), 'x'.repeat(201), false, NO_TOMBSTONE, 'req')).toBeUndefined();
  });

  it("gives a hidden key the same 404 as a key that never existed, with the request's key and path", () => {
    const prepared = new TombstonePreparedAnswers(new TombstoneRenderer(), untagged);
    const none = prepared.reply(settings, request('/items/a%20b'), 'a b', false, NO_TOMBSTONE, 'req-1')!;
    const hidden = prepared.reply(settings, request('/items/c'), 'c', false, { state: 'hidden', id: '9' }, 'req-2')!;
    expect(hidden.prepared).toBe(none.prepared);
    expect(none.answer()).toEqual({ status: 404, error: 'not_found', resource: 'item', label: 'Item', id: 'a b', path: '/items/a%20b', requestId: 'req-1', scoped: false });
    expect(prepared.reply(settings, request('/items/c'), 'c', true, NO_TOMBSTONE, 'req-3')!.prepared).not.toBe(none.prepared);
  });
});

describe('slotsOf', () => {
  it('splits text at the sentinels', () => {
    const sentinels = { requestId: 'R1', key: 'K1', path: 'P1' };
    expect(slotsOf('{"id":"K1","m":"K1!","path":"P1","requestId":"R1"}', sentinels)).toEqual([
      '{"id":"',
      SLOT_KEY,
      '","m":"',
      SLOT_KEY,
      '!","path":"',
      SLOT_PATH,
      '","requestId":"',
      SLOT_REQUEST_ID,
      '"}',
    ]);
    expect(slotsOf('R1', sentinels)).toEqual([SLOT_REQUEST_ID]);
    expect(slotsOf('nothing', sentinels)).toEqual(['nothing']);
  });
});

describe('jsonText', () => {
  it('is a string as JSON.stringify writes it inside quotes, whatever it holds', () => {
    for (const value of ['plain', 'quo"te', 'back\\slash', 'tab\tnew\nline', '\u0000\u001f\u007f', 'café 😀', '\ud800 alone', 'pair \ud83d\ude00', '\u2028\u2029']) {
      expect(jsonText(value)).toBe(JSON.stringify(value).slice(1, -1));
    }
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (value) => jsonText(value) === JSON.stringify(value).slice(1, -1)),
      { numRuns: 2000 },
    );
  });

  it('quoted in a message, gives the bytes JSON.stringify gives the message', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (key) => `"Item '${jsonText(key)}' was not found"` === JSON.stringify(`Item '${key}' was not found`)),
      { numRuns: 2000 },
    );
  });
});
