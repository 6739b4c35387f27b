import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { type FakeCdn, startFakeCloudflare, startFakeFastly, startFakeHttpPurge } from '../../test/support/fake-cdn.js';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import { createPurgeSink, validatePurgeOptions } from './events.purge.js';
import type { TombstoneEvent } from './events.types.js';

let sequence = 0;

/** A `tombstone.created` event of an article; its tags: `article:<key>` and the shared `articles`. */
function event(key: string, overrides: Partial<TombstoneEvent> = {}): TombstoneEvent {
  sequence++;
  const occurredAt = new Date().toISOString();
  return {
    id: randomUUID(),
    sequence: String(sequence),
    type: 'tombstone.created',
    scope: '',
    resourceType: 'article',
    key,
    before: null,
    after: {
      id: String(sequence),
      kind: 'deleted',
      target: null,
      permanent: true,
      reason: null,
      alternative: null,
      actor: null,
      occurredAt,
      expiresAt: null,
      metadata: {},
    },
    actor: null,
    reason: null,
    occurredAt,
    ...overrides,
  };
}

const tagsOf = (e: TombstoneEvent) => [`${e.resourceType}:${e.key}`, `${e.resourceType}s`];
const events = (count: number, prefix = 'k') => Array.from({ length: count }, (_, i) => event(`${prefix}${i}`));
const never = () => new AbortController().signal;
/** Every tag the fake accepted, in order. */
const purged = (fake: FakeCdn) => fake.purges.flatMap((purge) => [...purge.tags]);

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected the delivery to reject, but it resolved');
}

const fakes: FakeCdn[] = [];
async function started<F extends FakeCdn>(fake: Promise<F>): Promise<F> {
  fakes.push(await fake);
  return fakes.at(-1) as F;
}

afterEach(async () => {
  jest.restoreAllMocks();
  await Promise.all(fakes.splice(0).map((fake) => fake.close()));
});

describe('createPurgeSink', () => {
  it('names the sink after the provider, or its name; 100 events a delivery, two at once', () => {
    const fastly = createPurgeSink({ provider: 'fastly', serviceId: 'abc123', token: 't' }, tagsOf);
    expect([fastly.name, fastly.batchSize, fastly.concurrency]).toEqual(['purge:fastly', 100, 2]);
    expect(createPurgeSink({ provider: 'http', url: 'https://example.com/hook', name: 'search-cdn' }, tagsOf).name).toBe('purge:search-cdn');
  });

  describe('Fastly', () => {
    it("purges a batch's surrogate keys in one call, each once, as Fastly's batch purge takes them", async () => {
      const fake = await started(startFakeFastly());
      await createPurgeSink(fake.options, tagsOf).deliver([event('a'), event('b'), event('c')], never());
      expect(fake.calls).toEqual([{ status: 200, reason: '', at: expect.any(Number) }]);
      expect(fake.purges).toEqual([{ tags: ['article:a', 'articles', 'article:b', 'article:c'], events: [], soft: false, at: expect.any(Number) }]);
    });

    it('soft purges with Fastly-Soft-Purge when soft is set', async () => {
      const fake = await started(startFakeFastly());
      await createPurgeSink({ ...fake.options, soft: true }, tagsOf).deliver([event('a')], never());
      expect(fake.purges.map((purge) => purge.soft)).toEqual([true]);
    });

    it('splits more than 256 keys into as few calls as the limit allows', async () => {
      const fake = await started(startFakeFastly());
      const batch = events(100);
      // 3 keys per event, 301 in all: 256 + 45.
      await createPurgeSink(fake.options, (e) => [`a:${e.key}`, `b:${e.key}`, `c:${e.key}`, 'all']).deliver(batch, never());
      expect(fake.purges.map((purge) => purge.tags.length)).toEqual([256, 45]);
      expect(new Set(purged(fake)).size).toBe(301);
    });

    it('rejects with the status and what Fastly said, never the token, when the token is refused', async () => {
      const fake = await started(startFakeFastly({ token: 'the-right-token' }));
      const error = await rejection(createPurgeSink({ ...fake.options, token: 'a-wrong-token' }, tagsOf).deliver([event('a')], never()));
      expect(error.message).toContain('purge:fastly: Fastly answered 401 to POST http://127.0.0.1:');
      expect(error.message).toContain('Provided credentials are missing or invalid');
      expect(error.message).toContain('purge_select');
      expect(error.message).not.toContain('a-wrong-token');
      expect(fake.purges).toEqual([]);
    });

    it('rejects the whole batch when any of its calls fails', async () => {
      const fake = await started(startFakeFastly());
      const sink = createPurgeSink(fake.options, (e) => [`a:${e.key}`, `b:${e.key}`, `c:${e.key}`]);
      // Set as the first call is read, before it is answered: the second call fails.
      void fake.waitFor((f) => f.purges.length === 1).then(
        () => fake.failNext(1, 503),
        () => undefined,
      );
      const error = await rejection(sink.deliver(events(100), never()));
      expect(error.message).toContain('Fastly answered 503 to POST');
      expect(error.message).toContain('(call 2 of 2, 44 tags)');
      expect(fake.calls.map((call) => call.status)).toEqual([200, 503]);
    });

    it('leaves out, and logs, keys Fastly cannot carry; no call when none is left', async () => {
      const fake = await started(startFakeFastly());
      const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
      await createPurgeSink(fake.options, (e) => [e.key]).deliver([event('has space'), event('x'.repeat(1025)), event('')], never());
      expect(fake.calls).toEqual([]);
      expect(warn).toHaveBeenCalledTimes(1);
      expect(String(warn.mock.calls[0][0])).toContain('purge:fastly: left out 3 tag(s) that Fastly cannot carry');
      await createPurgeSink(fake.options, (e) => [e.key, `${e.key} more`]).deliver([event('ok')], never());
      expect(purged(fake)).toEqual(['ok']);
    });
  });

  describe('Cloudflare', () => {
    it("purges a batch's cache-tags in one call, each once whatever its case, as Cloudflare takes them", async () => {
      const fake = await started(startFakeCloudflare());
      await createPurgeSink(fake.options, (e) => [e.key, 'Articles', 'articles']).deliver([event('a'), event('A'), event('b')], never());
      expect(fake.purges).toEqual([{ tags: ['a', 'Articles', 'b'], events: [], soft: false, at: expect.any(Number) }]);
    });

    it('splits more than 100 tags into as few calls as the limit allows', async () => {
      const fake = await started(startFakeCloudflare());
      await createPurgeSink(fake.options, (e) => [`a:${e.key}`, `b:${e.key}`]).deliver(events(100), never());
      expect(fake.purges.map((purge) => purge.tags.length)).toEqual([100, 100]);
      expect(new Set(purged(fake)).size).toBe(200);
    });

    it('rejects a 200 whose body says success: false, naming its errors', async () => {
      const fake = await started(startFakeCloudflare());
      fake.failNext(1, 200);
      const error = await rejection(createPurgeSink(fake.options, tagsOf).deliver([event('a')], never()));
      expect(error.message).toContain('Cloudflare answered 200 to POST');
      expect(error.message).toContain('but did not purge: success is not true: failed on purpose by the fake (1000)');
    });

    it('rejects a 429 as rate limited, for the outbox to retry', async () => {
      const fake = await started(startFakeCloudflare());
      fake.failNext(1, 429);
      const error = await rejection(createPurgeSink(fake.options, tagsOf).deliver([event('a')], never()));
      expect(error.message).toContain('Cloudflare answered 429 (rate limited)');
      expect(error.message).toContain('Please wait and consider throttling your request speed (971)');
      await createPurgeSink(fake.options, tagsOf).deliver([event('a')], never());
      expect(purged(fake)).toEqual(['article:a', 'articles']);
    });

    it('rejects with the permission to check, never the token, when the token is refused', async () => {
      const fake = await started(startFakeCloudflare());
      const error = await rejection(createPurgeSink({ ...fake.options, token: 'not-the-token' }, tagsOf).deliver([event('a')], never()));
      expect(error.message).toContain('Cloudflare answered 403');
      expect(error.message).toContain('Authentication error (10000)');
      expect(error.message).toContain('Zone → Cache Purge → Purge');
      expect(error.message).not.toContain('not-the-token');
    });
  });

  describe('HTTP', () => {
    it('posts the tags and the event ids, with its headers', async () => {
      const fake = await started(startFakeHttpPurge({ headers: { authorization: 'Bearer hook-secret' } }));
      const batch = [event('a'), event('b')];
      await createPurgeSink(fake.options, tagsOf).deliver(batch, never());
      expect(fake.purges).toEqual([{ tags: ['article:a', 'articles', 'article:b'], events: batch.map((e) => e.id), soft: false, at: expect.any(Number) }]);
    });

    it('takes any 2xx as done', async () => {
      const fake = await started(startFakeHttpPurge({ status: 202 }));
      await createPurgeSink(fake.options, tagsOf).deliver([event('a')], never());
      expect(fake.calls.map((call) => call.status)).toEqual([202]);
    });

    it('quotes an error answer without the secrets it echoes', async () => {
      const secret = 'hook-secret-value';
      const server = http.createServer((request, response) => {
        request.resume().on('end', () => response.writeHead(500).end(`boom\n\tauthorization was ${request.headers.authorization}\u0007 ${'x'.repeat(500)}`));
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      try {
        const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook?key=query-secret`;
        const error = await rejection(createPurgeSink({ provider: 'http', url, headers: { authorization: secret } }, tagsOf).deliver([event('a')], never()));
        expect(error.message).toMatch(/^purge:http: 127\.0\.0\.1:\d+ answered 500 to POST http:\/\/127\.0\.0\.1:\d+\/hook: boom authorization was \[redacted\]\? x+…$/);
        expect(error.message).not.toContain('query-secret');
      } finally {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    });
  });

  describe.each([
    ['fastly', startFakeFastly],
    ['cloudflare', startFakeCloudflare],
    ['http', startFakeHttpPurge],
  ] as [string, () => Promise<FakeCdn>][])('every provider: %s', (provider, start) => {
    it('rejects when the API does not answer within timeoutMs', async () => {
      const fake = await started(start());
      fake.failNext(1, 'hang');
      const error = await rejection(createPurgeSink({ ...fake.options, timeoutMs: 50 }, tagsOf).deliver([event('a')], never()));
      expect(error.message).toMatch(new RegExp(`^purge:${provider}: .+ did not answer POST http://127\\.0\\.0\\.1:\\d+/\\S+ within 50 ms\\.`));
    });

    it('rejects at once when its signal aborts', async () => {
      const fake = await started(start());
      fake.failNext(1, 'hang');
      const controller = new AbortController();
      const delivery = rejection(createPurgeSink(fake.options, tagsOf).deliver([event('a')], controller.signal));
      // A delivery that settled without its call fails below, instead of waiting for it forever.
      await Promise.race([fake.waitFor((f) => f.calls.length === 1), delivery]);
      controller.abort(new Error('lease over'));
      const error = await delivery;
      expect(error.message).toContain('was aborted before');
      expect(error.cause).toEqual(new Error('lease over'));
    });

    it('does not follow a redirect', async () => {
      const fake = await started(start());
      fake.failNext(1, 307);
      const error = await rejection(createPurgeSink(fake.options, tagsOf).deliver([event('a')], never()));
      expect(error.message).toContain('answered 307 to POST');
      expect(error.message).toContain('not followed');
      // The fake redirects to itself: a sink that followed it would have purged on the second call.
      expect(fake.calls.map((call) => call.status)).toEqual([307]);
      expect(fake.purges).toEqual([]);
    });

    it('rejects while the API is down, and purges once it is up', async () => {
      const fake = await started(start());
      const sink = createPurgeSink(fake.options, tagsOf);
      fake.down();
      const error = await rejection(sink.deliver([event('a')], never()));
      expect(error.message).toMatch(new RegExp(`^purge:${provider}: could not reach .+ for POST http://127\\.0\\.0\\.1:\\d+/\\S+: fetch failed`));
      fake.up();
      await sink.deliver([event('a')], never());
      expect(fake.purgedAt('article:a')).toEqual(expect.any(Number));
    });

    it('makes no call for a batch without tags', async () => {
      const fake = await started(start());
      await createPurgeSink(fake.options, () => []).deliver([event('a'), event('b')], never());
      expect(fake.calls).toEqual([]);
    });

    it('rejects, without a call, when tagsOf does not return strings', async () => {
      const fake = await started(start());
      const error = await rejection(createPurgeSink(fake.options, (() => [1]) as never).deliver([event('a')], never()));
      expect(error.message).toMatch(/tagsOf must return an array of strings; for event [0-9a-f-]+ it returned \[1\]\./);
      expect(fake.calls).toEqual([]);
    });
  });
});

describe('validatePurgeOptions', () => {
  const fastly = { provider: 'fastly', serviceId: 'SU1Z0isxPaozGVKXdv0eY', token: 'fastly-token' } as const;
  const cloudflare = { provider: 'cloudflare', zoneId: '023e105f4ecef8ad9ca31a8372d0c353', token: 'cf-token' } as const;
  const hook = { provider: 'http', url: 'https://hooks.example.com/purge' } as const;

  it.each<[string, unknown]>([
    ['fastly', fastly],
    ['fastly, every option', { ...fastly, soft: true, endpoint: 'http://127.0.0.1:8080/', name: 'fastly-eu', timeoutMs: 5000 }],
    ['cloudflare', { ...cloudflare, endpoint: 'https://api.cloudflare.com/client/v4', timeoutMs: undefined }],
    ['http', { ...hook, headers: { authorization: 'Bearer x', 'X-Purge-Source': 'tombstones' } }],
  ])('takes %s', (_, options) => {
    expect(() => validatePurgeOptions(options, 'test')).not.toThrow();
  });

  it.each<[string, unknown, string]>([
    ['not an object', 'fastly', 'test: purge options must be an object with a provider.'],
    ['an unknown provider', { provider: 'akamai' }, `test: provider must be 'fastly', 'cloudflare' or 'http', not "akamai".`],
    ['an unknown option', { ...fastly, zoneId: 'x' }, "test: unknown fastly purge option 'zoneId'."],
    ['a Fastly service name', { ...fastly, serviceId: 'my-service' }, "test: serviceId must be the Fastly service's ID"],
    ['no Fastly service id', { ...fastly, serviceId: '' }, "test: serviceId must be the Fastly service's ID"],
    ['a Cloudflare domain', { ...cloudflare, zoneId: 'example.com' }, "test: zoneId must be the zone's ID"],
    ['an empty token', { ...fastly, token: '' }, 'test: token must be a non-empty string.'],
    ['a token with a line break', { ...cloudflare, token: 'cf-token\n' }, 'test: token contains a line break (CR or LF).'],
    ['a token with spaces around', { ...cloudflare, token: ' cf-token' }, 'test: token contains control characters'],
    ['a relative endpoint', { ...fastly, endpoint: '/fastly' }, 'test: endpoint must be an absolute http:// or https:// URL.'],
    ['an ftp endpoint', { ...fastly, endpoint: 'ftp://api.fastly.com' }, 'test: endpoint must be an absolute http:// or https:// URL.'],
    ['an endpoint with a user', { ...cloudflare, endpoint: 'https://me:pw@api.cloudflare.com' }, 'test: endpoint must not carry a user name or password.'],
    ['an endpoint with a query', { ...fastly, endpoint: 'https://api.fastly.com?x=1' }, 'test: endpoint must not have a query or fragment.'],
    ['a url with a fragment', { ...hook, url: 'https://hooks.example.com/purge#x' }, 'test: url must not have a fragment.'],
    ['no url', { provider: 'http' }, 'test: url must be an absolute http:// or https:// URL.'],
    ['a soft that is not a boolean', { ...fastly, soft: 1 }, 'test: soft must be true or false, not 1.'],
    ['headers that are not an object', { ...hook, headers: ['x'] }, 'test: headers must be an object'],
    ['a header name with a space', { ...hook, headers: { 'x key': 'v' } }, 'test: headers: "x key" is not an HTTP header name.'],
    ['a reserved header', { ...hook, headers: { 'Content-Type': 'text/plain' } }, 'test: headers: Content-Type is set by the sink itself.'],
    ['a header value with a line break', { ...hook, headers: { 'x-key': 'a\r\nb' } }, 'test: headers: the value of x-key contains a line break'],
    ['a name with a space', { ...fastly, name: 'my cdn' }, 'test: name must be 1 to 100 letters'],
    ['a fractional timeout', { ...fastly, timeoutMs: 1.5 }, 'test: timeoutMs must be a whole number of milliseconds from 1 to 600000, not 1.5.'],
    ['a zero timeout', { ...hook, timeoutMs: 0 }, 'test: timeoutMs must be a whole number'],
  ])('refuses %s, naming the option', (_, options, message) => {
    let error: unknown;
    try {
      validatePurgeOptions(options, 'test');
    } catch (thrown) {
      error = thrown;
    }
    expect(error).toBeInstanceOf(TombstoneConfigurationError);
    expect((error as Error).message.startsWith(message)).toBe(true);
    for (const secret of ['cf-token', 'fastly-token', 'a\r\nb', 'pw@']) expect((error as Error).message).not.toContain(secret);
  });

  it('is what createPurgeSink checks its options and tagsOf with', () => {
    expect(() => createPurgeSink({ ...cloudflare, zoneId: 'example.com' }, tagsOf)).toThrow("createPurgeSink(): zoneId must be the zone's ID");
    expect(() => createPurgeSink(fastly, undefined as never)).toThrow('createPurgeSink(): tagsOf must be a function');
  });

  it('says what each token needs', () => {
    expect(() => validatePurgeOptions({ ...fastly, token: '' }, 'test')).toThrow('the purge_select scope');
    expect(() => validatePurgeOptions({ ...cloudflare, token: '' }, 'test')).toThrow('Zone → Cache Purge → Purge');
  });
});
