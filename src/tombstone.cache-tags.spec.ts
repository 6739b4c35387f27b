import { jest } from '@jest/globals';
import { createHash } from 'node:crypto';
import type { HttpAdapterHost } from '@nestjs/core';
import { cacheTagsOf, MAX_TAG_BYTES, MAX_TAGS_BYTES, tagFound, TombstoneCacheTags } from './tombstone.cache-tags.js';
import type { TombstoneModuleOptions } from './tombstone.options.js';
import { resolveTombstoneOptions } from './tombstone.options-resolve.js';
import type { TombstonedSettings } from './tombstone.types.js';

const sha = (key: string) => createHash('sha256').update(key).digest('hex').slice(0, 32);

/** The tags, and what was reported as left out. */
function tagsOf(cacheTags: TombstoneModuleOptions['cacheTags'], type: string, key: string) {
  const problems: string[] = [];
  const tags = cacheTagsOf(resolveTombstoneOptions({ cacheTags }), type, key, (problem) => problems.push(problem));
  return { tags, problems };
}

describe('cacheTagsOf', () => {
  it('gives no tags when cacheTags is off', () => {
    expect(cacheTagsOf(resolveTombstoneOptions({}), 'article', 'hello')).toEqual([]);
  });

  it.each([
    ['hello-world', 'article/hello-world'],
    ['a b,c', 'article/a%20b%2Cc'],
    ['a/b?c#d%e', 'article/a%2Fb%3Fc%23d%25e'],
    ['été', 'article/%C3%A9t%C3%A9'],
    ["it's (x)*!~", "article/it's%20(x)*!~"],
    ['2', 'article/2'],
  ])('tags %j as %j by default', (key, tag) => {
    expect(tagsOf(true, 'article', key)).toEqual({ tags: [tag], problems: [] });
  });

  it('hashes a key whose tag would be longer than 1024 bytes, and only then', () => {
    const fits = 'k'.repeat(MAX_TAG_BYTES - 'article/'.length);
    expect(tagsOf(true, 'article', fits).tags).toEqual([`article/${fits}`]);
    const over = `${fits}k`;
    expect(tagsOf(true, 'article', over).tags).toEqual([`article/#${sha(over)}`]);
    // Encoding counts: 200 characters of é are 1200 bytes once encoded.
    const encoded = 'é'.repeat(200);
    expect(tagsOf(true, 'article', encoded).tags).toEqual([`article/#${sha(encoded)}`]);
  });

  it('hashes a key that cannot be percent-encoded (a lone surrogate)', () => {
    expect(tagsOf(true, 'article', 'a\uD800b').tags).toEqual([`article/#${sha('a\uD800b')}`]);
  });

  it('never gives a hashed tag for a key that spells one: # is encoded', () => {
    const key = `#${sha('x')}`;
    expect(tagsOf(true, 'article', key).tags).toEqual([`article/%23${sha('x')}`]);
  });

  it('gives no tag for a resource type that cannot be part of one', () => {
    expect(tagsOf(true, 'an article', 'x')).toEqual({ tags: [], problems: ['the resource type "an article" cannot be part of a tag'] });
  });

  it('takes the tags of a function: one, several, or none', () => {
    expect(tagsOf({ tag: (type, key) => `${type}-${key}` }, 'user', '7').tags).toEqual(['user-7']);
    expect(tagsOf({ tag: (type, key) => [`${type}-${key}`, type, `${type}-${key}`] }, 'user', '7')).toEqual({ tags: ['user-7', 'user'], problems: [] });
    expect(tagsOf({ tag: () => [] }, 'user', '7')).toEqual({ tags: [], problems: [] });
  });

  it.each([
    ['a space', 'user 7'],
    ['a comma', 'user,7'],
    ['a tab', 'user\t7'],
    ['a line break', 'user\r\n7'],
    ['non-ASCII', 'usér-7'],
    ['a NUL', 'user\u00007'],
    ['nothing', ''],
    ['more than 1024 bytes', 'u'.repeat(MAX_TAG_BYTES + 1)],
  ])('leaves out a tag with %s, and reports it', (_label, bad) => {
    const { tags, problems } = tagsOf({ tag: () => ['good', bad, 'also-good'] }, 'user', '7');
    expect(tags).toEqual(['good', 'also-good']);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^invalid tag .*: a tag is printable ASCII without a space or a comma, of 1 to 1024 bytes$/);
  });

  it('takes a tag of exactly 1024 bytes', () => {
    expect(tagsOf({ tag: () => 'u'.repeat(MAX_TAG_BYTES) }, 'user', '7').tags).toHaveLength(1);
  });

  it.each([
    ['a number', () => 7, 'cacheTags.tag() returned 7, not a string or an array of strings'],
    ['undefined', () => undefined, 'cacheTags.tag() returned undefined, not a string or an array of strings'],
    ['an object', () => ({ tag: 'x' }), 'cacheTags.tag() returned an object, not a string or an array of strings'],
    [
      'an error',
      () => {
        throw new Error('no tags today');
      },
      'cacheTags.tag() threw: no tags today',
    ],
  ])('gives no tags for a function that returns %s, and reports it', (_label, tag, problem) => {
    expect(tagsOf({ tag: tag as unknown as () => string }, 'user', '7')).toEqual({ tags: [], problems: [problem] });
  });

  it('reports a non-string in an array', () => {
    const { tags, problems } = tagsOf({ tag: () => ['ok', 7 as unknown as string, null as unknown as string] }, 'user', '7');
    expect(tags).toEqual(['ok']);
    expect(problems).toEqual([
      'invalid tag 7: a tag is printable ASCII without a space or a comma, of 1 to 1024 bytes',
      'invalid tag null: a tag is printable ASCII without a space or a comma, of 1 to 1024 bytes',
    ]);
  });

  it('keeps the tags within 16,384 bytes, separators counted', () => {
    // 16 tags of 1024 bytes and 15 separators are 16,399 bytes: the last one is left out.
    const many = Array.from({ length: 16 }, (_, i) => String(i).padStart(MAX_TAG_BYTES, 'x'));
    const { tags, problems } = tagsOf({ tag: () => many }, 'user', '7');
    expect(tags).toEqual(many.slice(0, 15));
    expect(tags.join(' ').length).toBeLessThanOrEqual(MAX_TAGS_BYTES);
    expect(problems).toEqual([expect.stringMatching(/does not fit: the header would be longer than 16384 bytes$/)]);
  });

  it('calls the function once per call, with the type and the key as given', () => {
    const tag = jest.fn((type: string, key: string) => `${type}.${key.length}`);
    expect(tagsOf({ tag }, 'user', 'a b').tags).toEqual(['user.3']);
    expect(tag).toHaveBeenCalledTimes(1);
    expect(tag).toHaveBeenCalledWith('user', 'a b');
  });
});

/** A response like Express's (`setHeader`) or Fastify's (`header`), with headers of its own. */
function responseOf(kind: 'express' | 'fastify', host: object, headers: Record<string, string> = {}, params: Record<string, string> = {}) {
  const store = new Map(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]));
  const set = (name: string, value: string) => void store.set(name.toLowerCase(), value);
  const request = { method: 'GET', url: '/', headers: {}, params };
  const common = { getHeader: (name: string) => store.get(name.toLowerCase()), store };
  return kind === 'express' ? { ...common, setHeader: set, app: host, req: request } : { ...common, header: set, server: host, request };
}

/** A TombstoneCacheTags as the module makes it, registered on `host` like on an app's HTTP server. */
function tagsFor(cacheTags: TombstoneModuleOptions['cacheTags'], host: object = {}) {
  const adapterHost = { httpAdapter: { getInstance: () => host } } as unknown as HttpAdapterHost;
  const tags = new TombstoneCacheTags(resolveTombstoneOptions({ cacheTags }), adapterHost);
  const warn = jest.spyOn((tags as unknown as { logger: { warn: (message: string) => void } }).logger, 'warn').mockImplementation(() => undefined);
  tags.onModuleInit();
  return { tags, host, warn };
}

const settings = (overrides: Partial<TombstonedSettings> = {}): TombstonedSettings => ({
  type: 'article',
  param: 'slug',
  label: 'Article',
  emptyMeansNotFound: true,
  suggest: false,
  cacheTags: true,
  ...overrides,
});

describe('TombstoneCacheTags', () => {
  it.each(['express', 'fastify'] as const)('writes the header on %s, its key then its target', (kind) => {
    const { tags, host } = tagsFor(true);
    const response = responseOf(kind, host);
    tags.write(response, 'article', ['old', 'new one']);
    expect(response.store.get('surrogate-key')).toBe('article/old article/new%20one');
  });

  it('adds to tags the app set, each once, with the separator of the header', () => {
    const { tags, host } = tagsFor({ header: 'Cache-Tag' });
    const response = responseOf('express', host, { 'Cache-Tag': 'site, article/old' });
    tags.write(response, 'article', ['old']);
    expect(response.store.get('cache-tag')).toBe('site,article/old');
    tags.write(response, 'article', ['new']);
    expect(response.store.get('cache-tag')).toBe('site,article/old,article/new');
  });

  it('writes nothing when cache tags are off, or when every tag was left out', () => {
    const off = tagsFor(false);
    const response = responseOf('express', off.host);
    off.tags.write(response, 'article', ['old']);
    expect(off.tags.enabled).toBe(false);
    const none = tagsFor({ tag: () => ['not valid'] });
    none.tags.write(response, 'article', ['old']);
    expect([...response.store.keys()]).toEqual([]);
  });

  it('logs problems once a minute per resource type, then says how many were not logged', () => {
    const { tags, host, warn } = tagsFor({ tag: (type) => (type === 'user' ? 'a b' : ['ok', 'a,b']) });
    const now = jest.spyOn(Date, 'now').mockReturnValue(1_000_000);
    try {
      for (let i = 0; i < 5; i++) tags.write(responseOf('express', host), 'user', [String(i)]);
      tags.write(responseOf('express', host), 'article', ['x']);
      expect(warn.mock.calls.map(([message]) => message)).toEqual([
        'Cache tags of user "0": invalid tag "a b": a tag is printable ASCII without a space or a comma, of 1 to 1024 bytes; left out of the Surrogate-Key header.',
        'Cache tags of article "x": invalid tag "a,b": a tag is printable ASCII without a space or a comma, of 1 to 1024 bytes; left out of the Surrogate-Key header.',
      ]);
      now.mockReturnValue(1_060_000);
      tags.write(responseOf('express', host), 'user', ['5']);
      expect(warn).toHaveBeenLastCalledWith(expect.stringMatching(/^Cache tags of user "5": .* \(and 4 more problems with user tags not logged since the last one\)$/));
    } finally {
      now.mockRestore();
    }
  });

  it('leaves the app’s HTTP server as it found it when the module stops', () => {
    const { tags, host } = tagsFor(true);
    expect(Object.getOwnPropertySymbols(host)).toHaveLength(1);
    expect(Object.keys(host)).toEqual([]);
    tags.onModuleDestroy();
    expect(Object.getOwnPropertySymbols(host)).toHaveLength(0);
  });

  it('does not register itself when cache tags are off, or without an HTTP server', () => {
    expect(Object.getOwnPropertySymbols(tagsFor(false).host)).toHaveLength(0);
    const adapterHost = { httpAdapter: undefined } as unknown as HttpAdapterHost;
    expect(() => new TombstoneCacheTags(resolveTombstoneOptions({ cacheTags: true }), adapterHost).onModuleInit()).not.toThrow();
  });
});

describe('tagFound', () => {
  it.each(['express', 'fastify'] as const)('tags a found answer on %s with the key of its route parameter', (kind) => {
    const { host } = tagsFor(true);
    const response = responseOf(kind, host, {}, { slug: 'hello world' });
    tagFound(settings(), response);
    expect(response.store.get('surrogate-key')).toBe('article/hello%20world');
  });

  it('reads the key with the route’s key function', () => {
    const { host } = tagsFor(true);
    const response = responseOf('fastify', host);
    tagFound(settings({ key: (request) => `${request.method}-key` }), response);
    expect(response.store.get('surrogate-key')).toBe('article/GET-key');
  });

  it('does nothing without the module’s tags, without a key, or when the key function throws', () => {
    const untagged = responseOf('express', {}, {}, { slug: 'x' });
    tagFound(settings(), untagged);
    const { host } = tagsFor(true);
    const keyless = responseOf('express', host, {}, {});
    tagFound(settings(), keyless);
    const throwing = responseOf('express', host, {}, { slug: 'x' });
    expect(() =>
      tagFound(
        settings({
          key: () => {
            throw new Error('no key');
          },
        }),
        throwing,
      ),
    ).not.toThrow();
    expect([...untagged.store.keys(), ...keyless.store.keys(), ...throwing.store.keys()]).toEqual([]);
  });

  it('never throws when the response refuses the header', () => {
    const { host } = tagsFor(true);
    const response = {
      ...responseOf('express', host, {}, { slug: 'x' }),
      setHeader: () => {
        throw new Error('ERR_HTTP_HEADERS_SENT');
      },
    };
    expect(() => tagFound(settings(), response)).not.toThrow();
  });
});
