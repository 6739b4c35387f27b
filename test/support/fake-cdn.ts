import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TombstonePurgeOptions } from '../../src/events/events.purge.js';

// Local stand-ins for the CDNs' purge APIs, for specs, e2e suites and benchmarks. Each checks a
// request the way its API does (method, path with the id, credentials, content type, the JSON
// body's members, types and per-call limits) and answers a wrong one as the API would (400, 401,
// 403, 404), so a sink that passes against the fake sends what the real API takes. Error codes
// in the bodies are the fake's own, except Cloudflare's 10000 (authentication) and 971 (rate).

/** One accepted purge call. */
export interface FakePurge {
  /** The tags (Fastly: surrogate keys) of the call, in the order sent. */
  readonly tags: readonly string[];
  /** HTTP: the event ids of the call; else empty. */
  readonly events: readonly string[];
  /** Fastly: the call asked for a soft purge (`Fastly-Soft-Purge`). */
  readonly soft: boolean;
  /**
   * When its body had arrived: milliseconds since the epoch, to a fraction, comparable with
   * `Date.now()` and `Date.parse(event.occurredAt)` (`performance.timeOrigin + performance.now()`).
   */
  readonly at: number;
}

/** Every request the fake read, accepted or not. */
export interface FakeCall {
  /** What it was answered; `null` while held by `failNext(n, 'hang')`. */
  readonly status: number | null;
  /** Why it was not accepted (`''` when it was). */
  readonly reason: string;
  readonly at: number;
}

export interface FakeCdn<O extends TombstonePurgeOptions = TombstonePurgeOptions> {
  /** Options for `createPurgeSink` that reach this fake with the right id and token. */
  readonly options: O;
  /** Fastly, Cloudflare: the API's base (the `endpoint`); HTTP: the purge URL. */
  readonly url: string;
  /** Accepted calls, in order of arrival. */
  readonly purges: readonly FakePurge[];
  /** Every call read, in order of arrival. */
  readonly calls: readonly FakeCall[];
  /** When `tag` was first purged (as `FakePurge.at`), or `undefined`. Fastly and HTTP compare exactly, Cloudflare ignoring case. */
  purgedAt(tag: string): number | undefined;
  /**
   * The next `count` well-formed calls fail: answered `status` (default 503) with the API's error
   * body (Cloudflare: `success: false`, even with a 200; a 3xx has a `Location` back to the same
   * URL), or `'hang'`: read, never answered, until `down()` or `close()`. A malformed call is
   * still answered 4xx and does not use one up.
   */
  failNext(count: number, status?: number | 'hang'): void;
  /** Refuses every connection (each is reset at once) and drops the open ones, until `up()`. */
  down(): void;
  up(): void;
  /**
   * Resolves once `predicate(this)` holds: now, or after the call that makes it hold (checked as
   * each call is read, before it is answered). Rejects if the fake closes first.
   */
  waitFor(predicate: (fake: this) => boolean): Promise<void>;
  close(): Promise<void>;
}

type FastlyOptions = Extract<TombstonePurgeOptions, { provider: 'fastly' }>;
type CloudflareOptions = Extract<TombstonePurgeOptions, { provider: 'cloudflare' }>;
type HttpOptions = Extract<TombstonePurgeOptions, { provider: 'http' }>;

interface Request {
  readonly method: string;
  readonly path: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

/** What the fake makes of a request: an answer to a wrong one, or the purge a right one asks for. */
type Verdict = { status: number; body: unknown; reason: string } | { purge: Omit<FakePurge, 'at'> };

interface Api {
  check(request: Request): Verdict;
  /** The body of a failure on purpose, or of a redirect. */
  failure(status: number): unknown;
  success(purge: Omit<FakePurge, 'at'>): { status: number; body: unknown };
  same(a: string, b: string): boolean;
}

const now = () => performance.timeOrigin + performance.now();

/**
 * Fastly's batch purge by surrogate key: `POST /service/{serviceId}/purge` with `Fastly-Key`, JSON
 * `{ "surrogate_keys": [...] }`, 1 to 256 keys of at most 1,024 bytes; answers 200 with a purge id
 * per key.
 */
export function startFakeFastly(settings: { serviceId?: string; token?: string } = {}): Promise<FakeCdn<FastlyOptions>> {
  const serviceId = settings.serviceId ?? 'FakeService0123456789a';
  const token = settings.token ?? 'fastly-test-token';
  const error = (status: number, msg: string, detail?: string) => ({ status, body: detail ? { msg, detail } : { msg }, reason: detail ?? msg });
  return startFake<FastlyOptions>((url) => ({ provider: 'fastly', serviceId, token, endpoint: url }), '', {
    check(request) {
      const route = /^\/service\/([^/?]+)\/purge$/.exec(request.path);
      if (request.method !== 'POST' || !route) return error(404, 'Record not found', `no route ${request.method} ${request.path}`);
      if (request.headers['fastly-key'] !== token) return error(401, 'Provided credentials are missing or invalid');
      if (route[1] !== serviceId) return error(404, 'Record not found', `Cannot find service '${route[1]}'`);
      if (!isJson(request)) return error(400, 'Bad request', 'Content-Type must be application/json');
      const body = parse(request.body);
      if (!exactly(body, ['surrogate_keys'])) return error(400, 'Bad request', 'the body must be a JSON object with surrogate_keys only');
      const keys = (body as { surrogate_keys: unknown }).surrogate_keys;
      if (!Array.isArray(keys) || keys.length === 0 || keys.some((key) => typeof key !== 'string' || key === '')) {
        return error(400, 'Bad request', 'surrogate_keys must be a non-empty array of non-empty strings');
      }
      if (keys.length > 256) return error(400, 'Bad request', `at most 256 surrogate keys in one request, not ${keys.length}`);
      if (keys.some((key: string) => Buffer.byteLength(key) > 1024)) return error(400, 'Bad request', 'a surrogate key is over 1024 bytes');
      return { purge: { tags: keys, events: [], soft: request.headers['fastly-soft-purge'] !== undefined } };
    },
    failure: (status) => ({ msg: http.STATUS_CODES[status] ?? 'Error', detail: 'failed on purpose by the fake' }),
    success: (purge) => ({ status: 200, body: Object.fromEntries(purge.tags.map((key) => [key, `${randomBytes(8).toString('hex')}-${key.length}`])) }),
    same: (a, b) => a === b,
  });
}

/**
 * Cloudflare's purge by cache-tags: `POST /client/v4/zones/{zoneId}/purge_cache` with
 * `Authorization: Bearer`, JSON `{ "tags": [...] }`, 1 to 100 tags of 1 to 1,024 printable ASCII
 * characters without spaces; answers `{ success: true, result: { id } }`.
 */
export function startFakeCloudflare(settings: { zoneId?: string; token?: string } = {}): Promise<FakeCdn<CloudflareOptions>> {
  const zoneId = settings.zoneId ?? '023e105f4ecef8ad9ca31a8372d0c353';
  const token = settings.token ?? 'cloudflare-test-token';
  const envelope = (success: boolean, errors: { code: number; message: string }[], result: unknown) => ({ success, errors, messages: [], result });
  const error = (status: number, code: number, message: string) => ({ status, body: envelope(false, [{ code, message }], null), reason: message });
  return startFake<CloudflareOptions>((url) => ({ provider: 'cloudflare', zoneId, token, endpoint: url }), '/client/v4', {
    check(request) {
      const route = /^\/client\/v4\/zones\/([^/?]+)\/purge_cache$/.exec(request.path);
      if (request.method !== 'POST' || !route) return error(404, 7000, `No route for that URI: ${request.method} ${request.path}`);
      const authorization = request.headers.authorization;
      if (authorization === undefined) return error(400, 9106, 'Missing X-Auth-Key, X-Auth-Email or Authorization headers');
      if (authorization !== `Bearer ${token}`) return error(403, 10000, 'Authentication error');
      if (!/^[0-9a-f]{32}$/.test(route[1])) return error(400, 7003, `Could not route to /zones/${route[1]}/purge_cache, perhaps your object identifier is invalid?`);
      if (route[1] !== zoneId) return error(403, 10000, 'Authentication error');
      if (!isJson(request)) return error(400, 6003, 'Invalid request headers: Content-Type must be application/json');
      const body = parse(request.body);
      if (!exactly(body, ['tags'])) return error(400, 1012, 'Request must contain one of "purge_everything", "files", "tags", "hosts" or "prefixes"');
      const tags = (body as { tags: unknown }).tags;
      if (!Array.isArray(tags) || tags.length === 0 || tags.some((tag) => typeof tag !== 'string' || !/^[\x21-\x7e]+$/.test(tag))) {
        return error(400, 1012, 'tags must be a non-empty array of printable ASCII strings without spaces');
      }
      if (tags.length > 100) return error(400, 1012, `at most 100 tags in one request, not ${tags.length}`);
      if (tags.some((tag: string) => tag.length > 1024)) return error(400, 1012, 'a tag is over 1024 characters');
      return { purge: { tags, events: [], soft: false } };
    },
    failure: (status) =>
      envelope(false, [status === 429 ? { code: 971, message: 'Please wait and consider throttling your request speed' } : { code: 1000, message: 'failed on purpose by the fake' }], null),
    success: () => ({ status: 200, body: envelope(true, [], { id: randomBytes(16).toString('hex') }) }),
    same: (a, b) => a.toLowerCase() === b.toLowerCase(),
  });
}

/**
 * An endpoint of your own: `POST {url}` with JSON `{ "tags": [...], "events": [...] }` (non-empty
 * arrays of non-empty strings) and each of `headers` exactly (else 401); answers `status`
 * (default 204) with no body.
 */
export function startFakeHttpPurge(settings: { headers?: Record<string, string>; status?: number } = {}): Promise<FakeCdn<HttpOptions>> {
  const expected = settings.headers ?? {};
  const error = (status: number, reason: string) => ({ status, body: reason, reason });
  return startFake<HttpOptions>((url) => ({ provider: 'http', url, ...(settings.headers ? { headers: settings.headers } : {}) }), '/purge', {
    check(request) {
      if (request.method !== 'POST' || request.path !== '/purge') return error(404, `no route ${request.method} ${request.path}`);
      for (const [name, value] of Object.entries(expected)) {
        if (request.headers[name.toLowerCase()] !== value) return error(401, `missing or wrong header ${name}`);
      }
      if (!isJson(request)) return error(415, 'Content-Type must be application/json');
      const body = parse(request.body);
      const nonEmpty = (list: unknown) => Array.isArray(list) && list.length > 0 && list.every((item) => typeof item === 'string' && item !== '');
      if (!exactly(body, ['events', 'tags']) || !nonEmpty((body as { tags: unknown }).tags) || !nonEmpty((body as { events: unknown }).events)) {
        return error(400, 'the body must be { "tags": [strings], "events": [strings] }');
      }
      const { tags, events } = body as { tags: string[]; events: string[] };
      return { purge: { tags, events, soft: false } };
    },
    failure: (status) => `failed on purpose by the fake (${status})`,
    success: () => ({ status: settings.status ?? 204, body: undefined }),
    same: (a, b) => a === b,
  });
}

async function startFake<O extends TombstonePurgeOptions>(options: (url: string) => O, basePath: string, api: Api): Promise<FakeCdn<O>> {
  const purges: FakePurge[] = [];
  const calls: FakeCall[] = [];
  const failures: (number | 'hang')[] = [];
  const waiters = new Set<{ predicate: (fake: FakeCdn<O>) => boolean; resolve: () => void; reject: (error: Error) => void }>();
  let refusing = false;
  let closed = false;

  const record = (call: FakeCall) => {
    calls.push(call);
    for (const waiter of waiters) {
      if (waiter.predicate(fake)) {
        waiters.delete(waiter);
        waiter.resolve();
      }
    }
  };
  const answer = (response: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    if (body === undefined) return void response.writeHead(status, headers).end();
    const json = typeof body !== 'string';
    response.writeHead(status, { ...headers, 'content-type': json ? 'application/json' : 'text/plain; charset=utf-8' }).end(json ? JSON.stringify(body) : body);
  };

  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const at = now();
      const read = { method: request.method ?? '', path: request.url ?? '', headers: request.headers, body: Buffer.concat(chunks).toString('utf8') };
      const verdict = api.check(read);
      if ('status' in verdict) {
        record({ status: verdict.status, reason: verdict.reason, at });
        return answer(response, verdict.status, verdict.body);
      }
      const failure = failures.shift();
      if (failure === 'hang') return record({ status: null, reason: 'held on purpose', at });
      if (failure !== undefined) {
        record({ status: failure, reason: 'failed on purpose', at });
        const location = failure >= 300 && failure < 400 ? { location: `http://${request.headers.host}${read.path}` } : undefined;
        return answer(response, failure, api.failure(failure), location);
      }
      const { status, body } = api.success(verdict.purge);
      purges.push({ ...verdict.purge, at });
      record({ status, reason: '', at });
      answer(response, status, body);
    });
  });
  server.on('connection', (socket) => {
    if (refusing) socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const fake: FakeCdn<O> = {
    options: options(`${origin}${basePath}`),
    url: `${origin}${basePath}`,
    purges,
    calls,
    purgedAt: (tag) => purges.find((purge) => purge.tags.some((sent) => api.same(sent, tag)))?.at,
    failNext(count, status = 503) {
      for (let i = 0; i < count; i++) failures.push(status);
    },
    down() {
      refusing = true;
      server.closeAllConnections();
    },
    up() {
      refusing = false;
    },
    waitFor(predicate) {
      if (predicate(fake)) return Promise.resolve();
      if (closed) return Promise.reject(new Error('the fake CDN is closed'));
      return new Promise((resolve, reject) => waiters.add({ predicate: predicate as (fake: FakeCdn<O>) => boolean, resolve, reject }));
    },
    async close() {
      closed = true;
      for (const waiter of waiters) waiter.reject(new Error('the fake CDN closed before the awaited calls arrived'));
      waiters.clear();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  return fake;
}

function isJson(request: Request): boolean {
  return /^application\/json\s*(;|$)/i.test(request.headers['content-type'] ?? '');
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** A JSON object with exactly these members: a misspelt member is an error, as in a strict API. */
function exactly(body: unknown, members: readonly string[]): boolean {
  return typeof body === 'object' && body !== null && !Array.isArray(body) && Object.keys(body).sort().join() === [...members].sort().join();
}
