import { buildLocation, hasDotSegment } from './tombstone.answer.js';
import type { TombstoneRequest } from './tombstone.types.js';
import { expressRequest, fastifyRequest, ADAPTERS, expectSafeLocation } from '../test/support/requests.js';

describe('buildLocation', () => {
  describe.each(ADAPTERS)('%s request', (_name, make) => {
    it('replaces the key parameter in the route template', () => {
      expect(buildLocation(make('/articles/a', { slug: 'a' }), 'slug', 'a', 'b')).toBe('/articles/b');
    });

    it('URL-encodes the new key', () => {
      expect(buildLocation(make('/articles/a', { slug: 'a' }), 'slug', 'a', 'a b/c?d#e&f')).toBe('/articles/a%20b%2Fc%3Fd%23e%26f');
      expect(buildLocation(make('/articles/a', { slug: 'a' }), 'slug', 'a', 'ünïcödé')).toBe(
        '/articles/%C3%BCn%C3%AFc%C3%B6d%C3%A9',
      );
    });

    it("keeps the request's other params, re-encoded", () => {
      const request = make('/users/jo%20hn/posts/a', { user: 'jo hn', slug: 'a' }, '/users/:user/posts/:slug');
      expect(buildLocation(request, 'slug', 'a', 'b')).toBe('/users/jo%20hn/posts/b');
      const first = make('/a/users/x', { slug: 'a', user: 'x' }, '/:slug/users/:user');
      expect(buildLocation(first, 'slug', 'a', 'b')).toBe('/b/users/x');
    });

    it('keeps the query string as sent', () => {
      expect(buildLocation(make('/articles/a?page=2&sort=-date', { slug: 'a' }), 'slug', 'a', 'b')).toBe(
        '/articles/b?page=2&sort=-date',
      );
      expect(buildLocation(make('/articles/a?q=caf%C3%A9%20au%20lait&x=%2F%2F', { slug: 'a' }), 'slug', 'a', 'b')).toBe(
        '/articles/b?q=caf%C3%A9%20au%20lait&x=%2F%2F',
      );
      expect(buildLocation(make('/articles/a?', { slug: 'a' }), 'slug', 'a', 'b')).toBe('/articles/b');
    });

    it('re-encodes anything in the query that has no business in a header', () => {
      expect(buildLocation(make('/articles/a?x=1 2&y=\r\nSet-Cookie: a=1', { slug: 'a' }), 'slug', 'a', 'b')).toBe(
        '/articles/b?x=1%202&y=%0D%0ASet-Cookie:%20a=1',
      );
      expect(buildLocation(make('/articles/a?q=é"<>#', { slug: 'a' }), 'slug', 'a', 'b')).toBe('/articles/b?q=%C3%A9%22%3C%3E%23');
    });

    it('falls back to replacing the matching path segment when the template has a wildcard', () => {
      const wildcard = make('/files/docs/a', { slug: 'a' }, '/files/*path');
      expect(buildLocation(wildcard, 'slug', 'a', 'b c')).toBe('/files/docs/b%20c');
      const optional = make('/articles/a?x=1', { slug: 'a' }, '/articles{/:slug}');
      expect(buildLocation(optional, 'slug', 'a', 'b')).toBe('/articles/b?x=1');
      const regex = make('/articles/a', { slug: 'a' }, '/articles/:slug(\\w+)');
      expect(buildLocation(regex, 'slug', 'a', 'b')).toBe('/articles/b');
    });

    it('falls back to segment replacement when the template does not name the param', () => {
      const request = make('/articles/a', { id: 'a' }, '/articles/:id');
      expect(buildLocation(request, 'slug', 'a', 'b')).toBe('/articles/b');
    });

    it('falls back to segment replacement when another template param is missing', () => {
      const request = make('/users/u/posts/a', { slug: 'a' }, '/users/:user/posts/:slug');
      expect(buildLocation(request, 'slug', 'a', 'b')).toBe('/users/u/posts/b');
    });

    it('returns null when no path segment matches the old key', () => {
      expect(buildLocation(make('/files/docs/zzz', { slug: 'a' }, '/files/*path'), 'slug', 'a', 'b')).toBeNull();
      expect(buildLocation(make('/articles/zzz', {}), undefined, 'a', 'b')).toBeNull();
    });

    it('returns null rather than a protocol-relative path', () => {
      // An empty new key in the first segment would make '//x'.
      expect(buildLocation(make('/a/x', { slug: 'a' }, '/:slug/x'), 'slug', 'a', '')).toBeNull();
      expect(buildLocation(make('/a/x', { slug: 'a' }, '/*rest'), 'slug', 'a', '')).toBeNull();
    });

    it('returns null when the new key cannot be encoded (lone surrogate)', () => {
      expect(buildLocation(make('/articles/a', { slug: 'a' }), 'slug', 'a', 'b\ud800')).toBeNull();
      expect(buildLocation(make('/articles/a', {}, '/articles/*rest'), undefined, 'a', '\udc00')).toBeNull();
    });
  });

  describe('without a route template (a key function, no param)', () => {
    it('replaces the last segment that decodes to the old key', () => {
      const request: TombstoneRequest = { method: 'GET', url: '/a/x/a?y=1', headers: {} };
      expect(buildLocation(request, undefined, 'a', 'b')).toBe('/a/x/b?y=1');
    });

    it('matches percent-encoded segments by their decoded value', () => {
      const request: TombstoneRequest = { method: 'GET', url: '/articles/caf%C3%A9', headers: {} };
      expect(buildLocation(request, undefined, 'café', 'thé')).toBe('/articles/th%C3%A9');
    });

    it('skips segments that are not valid percent-encoding', () => {
      const request: TombstoneRequest = { method: 'GET', url: '/a/%E0%A4%A', headers: {} };
      expect(buildLocation(request, undefined, 'a', 'b')).toBe('/b/%E0%A4%A');
    });

    it('never rewrites a request path that is itself protocol-relative', () => {
      const request: TombstoneRequest = { method: 'GET', url: '//evil.example/a', headers: {} };
      expect(buildLocation(request, undefined, 'a', 'b')).toBeNull();
    });
  });

  describe('hostile target keys', () => {
    const HOSTILE = [
      '//evil.example',
      '/\\evil.example',
      '\\\\evil.example',
      '%2F%2Fevil.example',
      '%2f%5cevil.example',
      'https://evil.example',
      'https:evil.example',
      '\r\nSet-Cookie: x=1',
      '\u0000',
      'x'.repeat(10_240),
      'ünïcödé',
      '／evil', // fullwidth solidus
      '＼evil', // fullwidth reverse solidus
      '∕evil', // division slash
      '⁄evil', // fraction slash
      '../..',
      '...',
      '.x',
      ' ',
      '\t',
      '\u2028',
      '😀',
      '?x=1#y',
      '<script>"',
    ];

    const shapes: [string, (key: string) => { request: TombstoneRequest; param: string | undefined; oldKey: string }][] = [
      ['Express template', () => ({ request: expressRequest('/articles/a?p=1', { slug: 'a' }), param: 'slug', oldKey: 'a' })],
      ['Fastify template', () => ({ request: fastifyRequest('/articles/a?p=1', { slug: 'a' }), param: 'slug', oldKey: 'a' })],
      ['key first in the template', () => ({ request: expressRequest('/a', { slug: 'a' }, '/:slug'), param: 'slug', oldKey: 'a' })],
      [
        'wildcard template (segment replacement)',
        () => ({ request: expressRequest('/files/a', { slug: 'a' }, '/files/*path'), param: 'slug', oldKey: 'a' }),
      ],
      ['no template, first segment', () => ({ request: { method: 'GET', url: '/a', headers: {} }, param: undefined, oldKey: 'a' })],
    ];

    it.each(shapes)('%s: every Location stays a same-origin path', (_shape, setup) => {
      for (const newKey of HOSTILE) {
        const { request, param, oldKey } = setup(newKey);
        const location = buildLocation(request, param, oldKey, newKey);
        expect({ newKey: newKey.slice(0, 40), built: location !== null }).toEqual({ newKey: newKey.slice(0, 40), built: true });
        expectSafeLocation(location!);
        // The key survives the round trip: it is encoded, not altered.
        const path = location!.split('?', 1)[0];
        expect(path.split('/').map(decodeURIComponent)).toContain(newKey);
      }
    });

    it('encodes the hostile keys exactly', () => {
      const at = (key: string) => buildLocation(expressRequest('/articles/a', { slug: 'a' }), 'slug', 'a', key);
      expect(at('//evil.example')).toBe('/articles/%2F%2Fevil.example');
      expect(at('/\\evil.example')).toBe('/articles/%2F%5Cevil.example');
      expect(at('%2F%2Fevil.example')).toBe('/articles/%252F%252Fevil.example');
      expect(at('https://evil.example')).toBe('/articles/https%3A%2F%2Fevil.example');
      expect(at('\r\nSet-Cookie: x=1')).toBe('/articles/%0D%0ASet-Cookie%3A%20x%3D1');
      expect(at('\u0000')).toBe('/articles/%00');
      expect(at('ünïcödé')).toBe('/articles/%C3%BCn%C3%AFc%C3%B6d%C3%A9');
      expect(at('／evil')).toBe('/articles/%EF%BC%8Fevil');
      expect(at('x'.repeat(10_240))).toBe(`/articles/${'x'.repeat(10_240)}`);
    });

    it.each(shapes)("%s: a target of '.' or '..' builds no Location (clients would resolve it to another route)", (_shape, setup) => {
      for (const newKey of ['.', '..']) {
        const { request, param, oldKey } = setup(newKey);
        expect({ newKey, location: buildLocation(request, param, oldKey, newKey) }).toEqual({ newKey, location: null });
      }
    });

    it('builds no Location when another parameter of the route decodes to a dot segment', () => {
      for (const dots of ['.', '..']) {
        const request = expressRequest(`/users/${dots === '.' ? '%2E' : '%2e%2E'}/posts/a`, { user: dots, slug: 'a' }, '/users/:user/posts/:slug');
        expect(buildLocation(request, 'slug', 'a', 'b')).toBeNull();
      }
    });

    it('recognises every spelling of a dot segment', () => {
      for (const path of ['/a/.', '/a/..', '/a/%2e', '/a/%2E%2e', '/a/.%2E', '/a/../b', '/./a', '/a\\..\\b', '/a\\..', '/a/..\\b']) expect(hasDotSegment(path)).toBe(true);
      for (const path of ['/a/...', '/a/.b', '/a/b.', '/a/%2e%2e%2e', '/a/%252e', '/a/..%2F..']) expect(hasDotSegment(path)).toBe(false);
    });

    it('a hostile key in the first segment never yields //, /\\ or an absolute URL', () => {
      for (const key of HOSTILE) {
        const location = buildLocation(fastifyRequest('/a', { slug: 'a' }, '/:slug'), 'slug', 'a', key)!;
        expect(location.startsWith('//')).toBe(false);
        expect(location.startsWith('/\\')).toBe(false);
        expect(location).toMatch(/^\/[^/\\]/);
      }
    });

    it('hostile old keys in the request path are replaced safely too', () => {
      for (const oldKey of ['//evil.example', '/\\evil.example', 'ünïcödé', '\r\n', '..']) {
        const url = `/files/${encodeURIComponent(oldKey)}`;
        const location = buildLocation({ method: 'GET', url, headers: {} }, undefined, oldKey, 'new');
        expect(location).toBe('/files/new');
      }
    });
  });
});

describe('buildLocation for path-like keys (catch-all routes)', () => {
  it('replaces the run of segments that spells the old key, each new segment encoded, keeping the query', () => {
    const request = { method: 'GET', url: '/docs/v1/guide/intro?lang=en', headers: {}, route: { path: '/docs/*path' } };
    expect(buildLocation(request, 'path', 'v1/guide/intro', 'v2/guide/intro')).toBe('/docs/v2/guide/intro?lang=en');
    expect(buildLocation(request, 'path', 'v1/guide/intro', 'v2/a b/c?')).toBe('/docs/v2/a%20b/c%3F?lang=en');
  });

  it('matches percent-encoded segments by their decoded value, and builds no Location to a dot segment', () => {
    const request = { method: 'GET', url: '/docs/v1/%C3%BC/x', headers: {}, routeOptions: { url: '/docs/*' } };
    expect(buildLocation(request, '*', 'v1/ü/x', 'v2/ü/x')).toBe('/docs/v2/%C3%BC/x');
    expect(buildLocation(request, '*', 'v1/ü/x', 'v2/../x')).toBeNull();
  });
});
