import {
  type AnswerContext,
  answerFor,
  buildLocation,
  isSameOriginPath,
  redirectStatus,
  requestIdOf,
  requestPath,
} from './tombstone.answer.js';
import { type TombstoneRequest, type TombstoneResolution } from './tombstone.types.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** An Express request as Nest hands it over: the matched route on `req.route`. */
function expressRequest(url: string, params: Record<string, string>, template = '/articles/:slug', method = 'GET'): TombstoneRequest {
  return { method, url, originalUrl: url, headers: {}, params, route: { path: template } };
}

/** A Fastify request: the matched route on `req.routeOptions`, no `originalUrl`. */
function fastifyRequest(url: string, params: Record<string, string>, template = '/articles/:slug', method = 'GET'): TombstoneRequest {
  return { method, url, headers: {}, params, routeOptions: { url: template } };
}

const ADAPTERS = [
  ['Express', expressRequest],
  ['Fastify', fastifyRequest],
] as const;

/** What every Location must look like, whatever the keys. */
function expectSafeLocation(location: string): void {
  const [path] = location.split('?', 1);
  expect({ location, sameOrigin: isSameOriginPath(path) }).toEqual({ location, sameOrigin: true });
  expect(location).toMatch(/^\/[^/\\]/);
  // eslint-disable-next-line no-control-regex
  expect(location).not.toMatch(/[\r\n \t\u0000-\u001f\u007f]/);
  expect(location).toMatch(/^[\x21-\x7e]+$/); // printable ASCII only
  // Resolved against the site, it stays on the site.
  expect(new URL(location, 'https://site.test/articles/a').origin).toBe('https://site.test');
}

describe('redirectStatus', () => {
  it.each([
    ['GET', true, 301],
    ['HEAD', true, 301],
    ['GET', false, 302],
    ['HEAD', false, 302],
    ['POST', true, 308],
    ['PUT', true, 308],
    ['PATCH', true, 308],
    ['DELETE', true, 308],
    ['OPTIONS', true, 308],
    ['POST', false, 307],
    ['PUT', false, 307],
    ['PATCH', false, 307],
    ['DELETE', false, 307],
  ] as const)('%s, permanent=%s → %i', (method, permanent, status) => {
    expect(redirectStatus(method, permanent)).toBe(status);
  });
});

describe('isSameOriginPath', () => {
  it.each(['/', '/a', '/articles/b', '/a//b', '/a/%2F%2Fevil', '/%5Cevil', "/a-._~!$&'()*+,;=:@%"])('accepts %j', (path) => {
    expect(isSameOriginPath(path)).toBe(true);
  });

  it.each(['', 'a', '//evil.example', '/\\evil.example', '\\/evil', 'https://evil.example', '/a b', '/a\r\nb', '/a\tb', '/é', '/／evil', '/a\u0000'])(
    'rejects %j',
    (path) => {
      expect(isSameOriginPath(path)).toBe(false);
    },
  );
});

describe('requestPath', () => {
  it('prefers originalUrl and drops the query string', () => {
    expect(requestPath({ method: 'GET', url: '/inner?x=1', originalUrl: '/api/outer?y=2', headers: {} })).toBe('/api/outer');
    expect(requestPath({ method: 'GET', url: '/inner?x=1', headers: {} })).toBe('/inner');
    expect(requestPath({ method: 'GET', url: '/plain', headers: {} })).toBe('/plain');
  });
});

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
      '..',
      '../..',
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

describe('requestIdOf', () => {
  const withHeader = (value: string | string[] | undefined): TombstoneRequest => ({
    method: 'GET',
    url: '/',
    headers: { 'x-request-id': value },
  });

  it.each(['abc-123', 'f47ac10b-58cc-4372-a567-0e02b2c3d479', 'A', 'svc@host:1/req.42+x=y_z', 'a'.repeat(128)])(
    'keeps the sane client id %j',
    (id) => {
      expect(requestIdOf(withHeader(id), 'x-request-id')).toBe(id);
    },
  );

  it('looks the header up case-insensitively (Node lower-cases header names)', () => {
    expect(requestIdOf(withHeader('abc'), 'X-Request-Id')).toBe('abc');
  });

  it.each([
    ['a space', 'a b'],
    ['CRLF', 'abc\r\nSet-Cookie: x=1'],
    ['LF only', 'abc\n'],
    ['200 characters', 'a'.repeat(200)],
    ['129 characters', 'a'.repeat(129)],
    ['empty', ''],
    ['a leading dash', '-abc'],
    ['non-ASCII', 'ünïcödé'],
    ['quotes', '"abc"'],
    ['a comma-joined duplicate', 'abc, def'],
    ['missing', undefined],
    ['an empty array', []],
    ['an array of insane values', ['a b', 'c']],
  ] as const)('replaces an id with %s by a UUID', (_label, value) => {
    const id = requestIdOf(withHeader(value as string | string[] | undefined), 'x-request-id');
    expect(id).toMatch(UUID);
    expect(id).not.toBe(value);
  });

  it('takes the first value of an array header when it is sane', () => {
    expect(requestIdOf(withHeader(['abc', 'def']), 'x-request-id')).toBe('abc');
  });

  it('makes a new UUID each time', () => {
    const first = requestIdOf(withHeader(undefined), 'x-request-id');
    const second = requestIdOf(withHeader(undefined), 'x-request-id');
    expect(first).toMatch(UUID);
    expect(second).toMatch(UUID);
    expect(first).not.toBe(second);
  });
});

describe('answerFor', () => {
  const context = (overrides: Partial<AnswerContext> = {}): AnswerContext => ({
    resource: 'article',
    label: 'Article',
    id: 'a',
    request: expressRequest('/articles/a?ref=home', { slug: 'a' }),
    requestId: 'req-1',
    scoped: false,
    param: 'slug',
    ...overrides,
  });

  const plain404 = {
    resource: 'article',
    label: 'Article',
    id: 'a',
    path: '/articles/a',
    requestId: 'req-1',
    scoped: false,
    status: 404,
    error: 'not_found',
  };

  it("'none' → a plain 404", () => {
    expect(answerFor({ state: 'none' }, context())).toStrictEqual(plain404);
  });

  it("'hidden' → exactly the same 404 as 'none'", () => {
    expect(answerFor({ state: 'hidden', id: '7' }, context())).toStrictEqual(answerFor({ state: 'none' }, context()));
  });

  it("'hidden' and 'none' differ only in the id when the keys differ", () => {
    const hidden = answerFor({ state: 'hidden', id: '7' }, context({ id: 'secret', request: expressRequest('/articles/x', { slug: 'secret' }) }));
    const none = answerFor({ state: 'none' }, context({ id: 'never', request: expressRequest('/articles/x', { slug: 'never' }) }));
    expect(hidden.id).toBe('secret');
    expect(none.id).toBe('never');
    expect({ ...hidden, id: 'x' }).toStrictEqual({ ...none, id: 'x' });
    expect(Object.keys(hidden).sort()).toEqual(Object.keys(none).sort());
  });

  it('carries the scoped flag', () => {
    expect(answerFor({ state: 'none' }, context({ scoped: true }))).toStrictEqual({ ...plain404, scoped: true });
  });

  it("'gone' → 410 with the ISO deletedAt, reason and alternative", () => {
    const resolution: TombstoneResolution = {
      state: 'gone', id: '7',
      deletedAt: new Date(Date.UTC(2024, 4, 1, 12, 30, 0, 5)),
      reason: 'Retired',
      alternative: '/articles/current',
    };
    expect(answerFor(resolution, context())).toStrictEqual({
      ...plain404,
      status: 410,
      error: 'gone',
      deletedAt: '2024-05-01T12:30:00.005Z',
      reason: 'Retired',
      alternative: '/articles/current',
    });
  });

  it("'gone' keeps null reason and alternative as null", () => {
    const answer = answerFor({ state: 'gone', id: '7', deletedAt: new Date(0), reason: null, alternative: null }, context());
    expect(answer.status).toBe(410);
    expect(answer.deletedAt).toBe('1970-01-01T00:00:00.000Z');
    expect(answer.reason).toBeNull();
    expect(answer.alternative).toBeNull();
  });

  it.each([
    ['GET', true, 301],
    ['HEAD', true, 301],
    ['POST', true, 308],
    ['GET', false, 302],
    ['DELETE', false, 307],
  ] as const)("'moved' on %s (permanent=%s) → %i with location and targetId", (method, permanent, status) => {
    const request = expressRequest('/articles/a?ref=home', { slug: 'a' }, '/articles/:slug', method);
    const answer = answerFor({ state: 'moved', id: '7', target: 'b c', permanent, merged: false }, context({ request }));
    expect(answer).toStrictEqual({
      ...plain404,
      status,
      error: 'moved',
      location: '/articles/b%20c?ref=home',
      targetId: 'b c',
    });
  });

  it("'moved' works with a Fastify request too", () => {
    const request = fastifyRequest('/articles/a', { slug: 'a' }, '/articles/:slug', 'PUT');
    const answer = answerFor({ state: 'moved', id: '7', target: 'b', permanent: true, merged: true }, context({ request }));
    expect(answer.status).toBe(308);
    expect(answer.location).toBe('/articles/b');
    expect(answer.targetId).toBe('b');
  });

  it("a 'moved' resolution whose location cannot be built → the plain 404", () => {
    // No param, no template, and the key is nowhere in the path.
    const unmatched = context({ param: undefined, request: { method: 'GET', url: '/somewhere/else', headers: {} } });
    expect(answerFor({ state: 'moved', id: '7', target: 'b', permanent: true, merged: false }, unmatched)).toStrictEqual({
      ...plain404,
      path: '/somewhere/else',
    });
    // A target key that cannot be URL-encoded.
    expect(answerFor({ state: 'moved', id: '7', target: '\ud800', permanent: true, merged: false }, context())).toStrictEqual(plain404);
    // A Location that would be protocol-relative.
    const first = context({ request: expressRequest('/a/x', { slug: 'a' }, '/:slug/x'), id: 'a' });
    expect(answerFor({ state: 'moved', id: '7', target: '', permanent: false, merged: false }, first)).toStrictEqual({
      ...plain404,
      path: '/a/x',
    });
  });

  it('a request URL whose query cannot be re-encoded → the plain 404, not a throw', () => {
    // A lone surrogate cannot be percent-encoded (encodeURIComponent throws URIError): no
    // Location can be built, and an unbuildable redirect is the plain 404.
    const request = expressRequest('/articles/a?q=\ud800', { slug: 'a' });
    expect(answerFor({ state: 'moved', id: '7', target: 'b', permanent: true, merged: false }, context({ request }))).toStrictEqual(plain404);
  });
});
