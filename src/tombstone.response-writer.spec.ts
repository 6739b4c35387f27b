import { scopedCacheControl } from './tombstone.response-writer.js';

describe('scopedCacheControl', () => {
  it.each([
    // As it always was: `private, ` in front, unless the value says private or no-store already.
    ['max-age=86400', 'private, max-age=86400'],
    ['no-store', 'no-store'],
    ['private, max-age=60', 'private, max-age=60'],
    ['Private, max-age=60', 'Private, max-age=60'],
    ['max-age=60, stale-while-revalidate=30', 'private, max-age=60, stale-while-revalidate=30'],
    // What speaks to shared caches only goes: private contradicts it.
    ['public, max-age=3600, s-maxage=86400, stale-if-error=600', 'private, max-age=3600, stale-if-error=600'],
    ['max-age=60,s-maxage=600', 'private, max-age=60'],
    ['S-MAXAGE=600 , max-age=60', 'private, max-age=60'],
    ['s-maxage=600', 'private'],
    ['public', 'private'],
    ['private, s-maxage=600', 'private'],
    ['no-store, public', 'no-store'],
    // Not to be confused with them, and quoted commas stay inside their directive.
    ['max-age=60, publicity=1', 'private, max-age=60, publicity=1'],
    ['no-cache="Set-Cookie, X-Id", public, max-age=60', 'private, no-cache="Set-Cookie, X-Id", max-age=60'],
  ])('%j → %j', (value, scoped) => {
    expect(scopedCacheControl(value)).toBe(scoped);
  });
});
