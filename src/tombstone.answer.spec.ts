import {
  type AnswerContext,
  answerFor,
  isSameOriginPath,
  redirectStatus,
  requestIdOf,
  requestPath,
} from './tombstone.answer.js';
import { type TombstoneRequest, type TombstoneResolution } from './tombstone.types.js';
import { expressRequest, fastifyRequest } from '../test/support/requests.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;


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
