import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import type { TombstoneEvent } from './events.types.js';
import { type TombstoneWebhookOptions, TombstoneWebhookSink, validateWebhookOptions } from './events.webhooks.js';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';

const SECRET = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;
const OTHER_SECRET = `whsec_${Buffer.alloc(32, 8).toString('base64')}`;

const EVENT: TombstoneEvent = {
  id: '0b9f1c52-3a7e-4d5b-9c1e-2f6a8d4e7b10',
  sequence: '42',
  type: 'tombstone.created',
  scope: 'default',
  resourceType: 'article',
  key: 'héllo "world"',
  before: null,
  after: {
    id: '17',
    kind: 'moved',
    target: 'new-key',
    permanent: true,
    reason: 'renamed',
    alternative: null,
    actor: 'alice',
    occurredAt: '2026-01-02T03:04:05.678Z',
    expiresAt: null,
    metadata: { ticket: 7 },
  },
  actor: 'alice',
  reason: 'renamed',
  occurredAt: '2026-01-02T03:04:05.678Z',
};
const REMOVED: TombstoneEvent = { ...EVENT, id: 'f0e1d2c3-0000-4000-8000-000000000001', type: 'tombstone.removed', before: EVENT.after, after: null };

interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

type Answer = (res: ServerResponse, received: Received) => void;

/** A real HTTP server on 127.0.0.1 that keeps what it received and answers with `answer`. */
let server: Server;
let base: string;
let received: Received[];
let answer: Answer;
/** Resolves at each request, once its body is in. */
let arrived: Promise<Received>;
let arrive: (r: Received) => void;

function nextArrival(): void {
  arrived = new Promise((resolve) => (arrive = resolve));
}

beforeEach(async () => {
  received = [];
  answer = (res) => res.writeHead(204).end();
  nextArrival();
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const r = { method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      received.push(r);
      answer(res, r);
      arrive(r);
      nextArrival();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterEach(async () => {
  server.closeAllConnections();
  server.close();
  await once(server, 'close');
});

function sink(options: Partial<TombstoneWebhookOptions> = {}): TombstoneWebhookSink {
  return new TombstoneWebhookSink({ url: `${base}/hooks?token=s3cr3t-query`, secret: SECRET, ...options });
}

const never = () => new AbortController().signal;

/** The headers as the standardwebhooks library takes them. */
function signed(r: Received): Record<string, string> {
  return {
    'webhook-id': String(r.headers['webhook-id']),
    'webhook-timestamp': String(r.headers['webhook-timestamp']),
    'webhook-signature': String(r.headers['webhook-signature']),
  };
}

/** The rejection of `promise` (fails the test if it resolves). */
async function rejection(promise: Promise<unknown>): Promise<Error> {
  const outcome = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  if (!(outcome instanceof Error)) throw new Error(`expected a rejection with an Error, got ${String(outcome)}`);
  return outcome;
}

/** The default name of a webhook at `url`: its host and 12 hex digits of its SHA-256. */
function nameOf(url: string): string {
  return `webhook:${new URL(url).host}#${createHash('sha256').update(new URL(url).href).digest('hex').slice(0, 12)}`;
}

describe('TombstoneWebhookSink', () => {
  it('is named after the URL’s host and a hash of it (never its path or query, which may hold a token), or `webhook:<name>`; one event per call', () => {
    expect(sink().name).toBe(nameOf(`${base}/hooks?token=s3cr3t-query`));
    expect(sink().name).not.toMatch(/hooks|s3cr3t/);
    expect(sink({ name: 'search-index' }).name).toBe('webhook:search-index');
    expect(sink()).toMatchObject({ batchSize: 1, concurrency: 4 });
    expect(sink({ concurrency: 9 }).concurrency).toBe(9);
  });

  it('POSTs the event in the Standard Webhooks envelope, with its headers and the extra ones', async () => {
    const before = Math.floor(Date.now() / 1000);
    await sink({ headers: { Authorization: 'Bearer abc', 'X-Env': 'test' } }).deliver([EVENT], never());
    const after = Math.floor(Date.now() / 1000);

    expect(received).toHaveLength(1);
    const [r] = received;
    expect(r.method).toBe('POST');
    expect(r.url).toBe('/hooks?token=s3cr3t-query');
    expect(r.headers['content-type']).toBe('application/json');
    expect(r.headers['authorization']).toBe('Bearer abc');
    expect(r.headers['x-env']).toBe('test');
    expect(r.headers['webhook-id']).toBe(EVENT.id);
    expect(r.headers['webhook-timestamp']).toMatch(/^\d+$/);
    expect(Number(r.headers['webhook-timestamp'])).toBeGreaterThanOrEqual(before);
    expect(Number(r.headers['webhook-timestamp'])).toBeLessThanOrEqual(after);
    expect(r.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]{43}=$/);
    expect(JSON.parse(r.body)).toEqual({ type: 'tombstone.created', timestamp: EVENT.occurredAt, data: EVENT });
  });

  it('signs so that the standardwebhooks verifier accepts it, and gives the signature that library computes', async () => {
    await sink().deliver([EVENT], never());
    const [r] = received;
    const verifier = new Webhook(SECRET);
    expect(verifier.verify(r.body, signed(r))).toEqual(JSON.parse(r.body));
    const timestamp = new Date(Number(r.headers['webhook-timestamp']) * 1000);
    expect(r.headers['webhook-signature']).toBe(verifier.sign(EVENT.id, timestamp, r.body));
  });

  it('is refused by the verifier when the body, id or timestamp is changed, or with another secret', async () => {
    await sink().deliver([EVENT], never());
    const [r] = received;
    const headers = signed(r);
    const verifier = new Webhook(SECRET);
    const tampered = r.body.replace('"permanent":true', '"permanent":false');
    expect(tampered).not.toBe(r.body);
    expect(() => verifier.verify(tampered, headers)).toThrow('No matching signature found');
    expect(() => verifier.verify(r.body, { ...headers, 'webhook-id': REMOVED.id })).toThrow('No matching signature found');
    expect(() => verifier.verify(r.body, { ...headers, 'webhook-timestamp': String(Number(headers['webhook-timestamp']) - 1) })).toThrow(
      'No matching signature found',
    );
    expect(() => new Webhook(OTHER_SECRET).verify(r.body, headers)).toThrow('No matching signature found');
  });

  it('signs each attempt afresh: a retry has the same id and body, a new timestamp and signature', async () => {
    let clock = Date.now() - 120_000;
    class Clocked extends TombstoneWebhookSink {
      protected override now(): number {
        return clock;
      }
    }
    const webhook = new Clocked({ url: `${base}/hooks`, secret: SECRET });
    answer = (res) => res.writeHead(503).end('busy');
    await expect(webhook.deliver([EVENT], never())).rejects.toThrow('503');
    clock += 90_000;
    answer = (res) => res.writeHead(200).end('ok');
    await webhook.deliver([EVENT], never());

    const [first, retry] = received;
    expect(retry.headers['webhook-id']).toBe(first.headers['webhook-id']);
    expect(retry.body).toBe(first.body);
    expect(Number(retry.headers['webhook-timestamp']) - Number(first.headers['webhook-timestamp'])).toBe(90);
    expect(retry.headers['webhook-signature']).not.toBe(first.headers['webhook-signature']);
    for (const r of [first, retry]) expect(() => new Webhook(SECRET).verify(r.body, signed(r))).not.toThrow();
  });

  it('takes any 2xx as delivered, whatever its body', async () => {
    const statuses = [200, 201, 202, 204, 299];
    answer = (res) => res.writeHead(statuses[received.length - 1]).end('x'.repeat(10_000));
    const webhook = sink();
    for (let i = 0; i < statuses.length; i++) await webhook.deliver([EVENT], never());
    expect(received).toHaveLength(5);
  });

  it('rejects a non-2xx answer naming the status and quoting a little of the body, printable only', async () => {
    answer = (res) => res.writeHead(500).end(`database\r\n\tdown \u001b[31mred\u001b[0m\u202e ${'x'.repeat(5000)}`);
    const error = await rejection(sink().deliver([EVENT], never()));
    expect(error.message).toMatch(new RegExp(`^${nameOf(`${base}/hooks?token=s3cr3t-query`)}: POST ${base} answered 500: database down \\[31mred\\[0m x+…$`));
    expect(error.message.length).toBeLessThan(400);
    expect(error.message).not.toMatch(/[\p{C}]/u);
    expect(error.message).not.toContain('s3cr3t-query');
    expect(error.message).not.toContain(SECRET.slice(6));
  });

  it('rejects 4xx and 410 Gone, whose message says the receiver wants no more', async () => {
    answer = (res) => res.writeHead(400).end();
    await expect(sink().deliver([EVENT], never())).rejects.toThrow(`POST ${base} answered 400.`);
    answer = (res) => res.writeHead(410).end();
    await expect(sink().deliver([EVENT], never())).rejects.toThrow('answered 410 Gone: the receiver wants no more of these webhooks');
  });

  it('rejects a huge error body without reading all of it: it drops the connection', async () => {
    const chunk = 'y'.repeat(64 * 1024);
    let dropped!: Promise<unknown>;
    answer = (res) => {
      res.writeHead(500);
      dropped = once(res, 'close');
      // An endless body: without a cap, the delivery would wait for the timeout (longer than the test's).
      const write = () => {
        while (!res.destroyed && res.write(chunk));
        if (!res.destroyed) res.once('drain', write);
      };
      write();
    };
    const error = await rejection(sink({ timeoutMs: 120_000 }).deliver([EVENT], never()));
    expect(error.message).toMatch(/answered 500: y{200}…$/);
    await dropped;
  });

  it('does not follow a redirect: a 3xx is a failure naming the Location', async () => {
    answer = (res, r) => (r.url.startsWith('/elsewhere') ? res.writeHead(204).end() : res.writeHead(308, { location: '/elsewhere' }).end());
    await expect(sink().deliver([EVENT], never())).rejects.toThrow(`answered 308, a redirect to /elsewhere that is not followed (update the webhook's URL).`);
    expect(received.map((r) => r.url)).toEqual(['/hooks?token=s3cr3t-query']);
  });

  it('rejects when the endpoint does not answer within timeoutMs', async () => {
    answer = () => undefined;
    await expect(sink({ timeoutMs: 50 }).deliver([EVENT], never())).rejects.toThrow(`${nameOf(`${base}/hooks?token=s3cr3t-query`)}: no answer from ${base} within 50 ms.`);
    expect(received).toHaveLength(1);
  });

  it('rejects when the dispatcher’s signal aborts the request, and sends nothing once it is aborted', async () => {
    answer = () => undefined;
    const controller = new AbortController();
    const delivery = sink().deliver([EVENT], controller.signal);
    await arrived;
    controller.abort(new Error('lease expired'));
    await expect(delivery).rejects.toThrow(`${nameOf(`${base}/hooks?token=s3cr3t-query`)}: the delivery was aborted (lease expired).`);

    await expect(sink().deliver([EVENT], AbortSignal.abort(new Error('shutting down')))).rejects.toThrow('the delivery was aborted (shutting down)');
    expect(received).toHaveLength(1);
  });

  it('rejects when nothing answers, naming the endpoint and the cause', async () => {
    const closed = createServer().listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    closed.close();
    await once(closed, 'close');
    const error = await rejection(new TombstoneWebhookSink({ url: `http://127.0.0.1:${port}/hooks`, secret: SECRET }).deliver([EVENT], never()));
    expect(error.message).toBe(`${nameOf(`http://127.0.0.1:${port}/hooks`)}: POST http://127.0.0.1:${port} failed: connect ECONNREFUSED 127.0.0.1:${port}.`);
  });

  it('sends only the `types` asked for; the others are delivered without a request', async () => {
    const webhook = sink({ types: ['tombstone.removed'] });
    await webhook.deliver([EVENT], never());
    await webhook.deliver([], never());
    expect(received).toHaveLength(0);
    await webhook.deliver([REMOVED], never());
    expect(received.map((r) => r.headers['webhook-id'])).toEqual([REMOVED.id]);
  });

  it('refuses an event id that could not be a webhook-id (a full stop would change what is signed)', async () => {
    await expect(sink().deliver([{ ...EVENT, id: 'a.b' }], never())).rejects.toThrow('event id "a.b" cannot be a webhook-id');
    expect(received).toHaveLength(0);
  });
});

describe('validateWebhookOptions', () => {
  const valid = { url: 'https://hooks.example.com/tombstones', secret: SECRET };

  /** The configuration error the options are refused with. */
  function refusal(options: unknown): TombstoneConfigurationError {
    try {
      validateWebhookOptions(options, 'events.webhooks[0]');
    } catch (error) {
      expect(error).toBeInstanceOf(TombstoneConfigurationError);
      const e = error as TombstoneConfigurationError;
      expect(e.message.startsWith('events.webhooks[0]: ')).toBe(true);
      return e;
    }
    throw new Error(`accepted ${JSON.stringify(options)}`);
  }

  it('accepts valid options, the bounds included, and is what the constructor runs', () => {
    expect(() => validateWebhookOptions(valid, 'w')).not.toThrow();
    const full = {
      ...valid,
      url: 'http://127.0.0.1:8080/a/b?token=x',
      secret: `whsec_${Buffer.alloc(64, 1).toString('base64')}`,
      name: 'n'.repeat(100),
      timeoutMs: 120_000,
      concurrency: 1,
      headers: { 'X-A': 'b c', authorization: 'Bearer x' },
      types: ['tombstone.created'],
    };
    expect(() => validateWebhookOptions(full, 'w')).not.toThrow();
    expect(() => validateWebhookOptions({ ...valid, secret: `whsec_${Buffer.alloc(24).toString('base64')}` }, 'w')).not.toThrow();
    expect(() => new TombstoneWebhookSink({ ...valid, timeoutMs: 0 })).toThrow(TombstoneConfigurationError);
    expect(() => new TombstoneWebhookSink({ ...valid, timeoutMs: 0 })).toThrow(/^TombstoneWebhookSink: timeoutMs/);
  });

  it('refuses a missing, relative or non-http URL, and one with credentials (without showing them)', () => {
    expect(refusal({ secret: SECRET }).message).toContain('url must be an absolute http or https URL, not undefined.');
    expect(refusal({ ...valid, url: '/hooks?token=abc' }).message).toContain('url must be an absolute http or https URL, not "/hooks".');
    expect(refusal({ ...valid, url: 'ftp://example.com/x' }).message).toContain('url must be an http or https URL, not ftp:.');
    const credentials = refusal({ ...valid, url: 'https://user:hunter2@hooks.example.com/x' });
    expect(credentials.message).toContain('url must not hold credentials');
    expect(credentials.message).toContain('Potential solutions');
    expect(credentials.message).not.toContain('hunter2');
  });

  it.each([
    ['not a string', 42, 'not number', 'randomBytes(32)'],
    ['no prefix', Buffer.alloc(32).toString('base64'), "does not start with 'whsec_'", 'randomBytes(32)'],
    ['not base64', 'whsec_not*base64*at*all*not*base64*at*all', 'is not base64', 'randomBytes(32)'],
    ['unpadded', `whsec_${Buffer.alloc(32, 9).toString('base64').replace(/=+$/, '')}`, 'is not base64', 'randomBytes(32)'],
    ['a trailing newline', `${SECRET}\n`, 'holds white space', 'Trim the value'],
    ['too short', `whsec_${Buffer.alloc(23, 9).toString('base64')}`, 'holds 23 bytes', 'randomBytes(32)'],
    ['too long', `whsec_${Buffer.alloc(65, 9).toString('base64')}`, 'holds 65 bytes', 'randomBytes(32)'],
  ])('refuses a secret with %s, never showing it', (_, secret, says, solution) => {
    const error = refusal({ ...valid, secret });
    expect(error.message).toContain("secret must be 'whsec_' followed by the base64 of 24 to 64 random bytes");
    expect(error.message).toContain(says);
    expect(error.message).toContain(solution);
    if (typeof secret === 'string') expect(error.message).not.toContain(secret.replace(/^whsec_/, '').trim());
  });

  it.each([
    ['empty', '', 'name must be 1 to 100 printable ASCII characters'],
    ['a control character', 'a\nb', 'name must be 1 to 100 printable ASCII characters'],
    ['non-ASCII', 'índice', 'name must be 1 to 100 printable ASCII characters'],
    ['a leading space', ' a', 'name must be 1 to 100 printable ASCII characters'],
    ['101 characters', 'n'.repeat(101), 'name must be 1 to 100 printable ASCII characters'],
    ['not a string', 7, 'not number'],
  ])('refuses a name that is %s', (_, name, says) => {
    expect(refusal({ ...valid, name }).message).toContain(says);
  });

  it('refuses a URL whose host is too long for the default name, unless a name is given', () => {
    const url = `https://${'h'.repeat(60)}.${'h'.repeat(40)}.example.com/hooks`;
    expect(refusal({ ...valid, url }).message).toContain("the default name (the URL's host and a hash) is longer than 100 characters.");
    expect(() => validateWebhookOptions({ ...valid, url, name: 'long' }, 'w')).not.toThrow();
  });

  it.each([
    ['timeoutMs', 0],
    ['timeoutMs', 1.5],
    ['timeoutMs', 120_001],
    ['timeoutMs', '100'],
    ['concurrency', 0],
    ['concurrency', 101],
  ])('refuses %s: %p', (option, value) => {
    expect(refusal({ ...valid, [option]: value }).message).toContain(`${option} must be a whole number of`);
  });

  it.each([
    ['a name that is not a token', { 'X Bad': 'v' }, '"X Bad" is not an HTTP header name'],
    ['an empty name', { '': 'v' }, '"" is not an HTTP header name'],
    ['a CR/LF in a value', { 'X-A': 'v\r\nX-Injected: 1' }, 'headers["X-A"] must be a string of printable ASCII'],
    ['a non-string value', { 'X-A': 1 }, 'headers["X-A"] must be a string of printable ASCII'],
    ['webhook-id', { 'Webhook-Id': 'x' }, '"Webhook-Id" is set by the sink'],
    ['webhook-signature', { 'webhook-signature': 'v1,x' }, '"webhook-signature" is set by the sink'],
    ['content-type', { 'Content-Type': 'text/plain' }, '"Content-Type" is set by the sink'],
    ['content-length', { 'content-length': '1' }, '"content-length" is set by the sink'],
    ['host', { Host: 'evil.example' }, '"Host" is set by the sink'],
    ['connection', { connection: 'close' }, '"connection" is set by the sink or refused by fetch'],
    ['one name twice', { 'X-A': 'a', 'x-a': 'b' }, '"x-a" is given twice'],
    ['not an object', ['X-A'], 'headers must be an object'],
  ])('refuses headers with %s', (_, headers, says) => {
    expect(refusal({ ...valid, headers }).message).toContain(says);
  });

  it('never shows a header value (it may be a token)', () => {
    expect(refusal({ ...valid, headers: { authorization: 'Bearer tok\nen' } }).message).not.toContain('tok');
  });

  it('refuses unknown, empty or misspelt types', () => {
    expect(refusal({ ...valid, types: ['tombstone.deleted'] }).message).toContain('types: "tombstone.deleted" is not an event type.');
    expect(refusal({ ...valid, types: [] }).message).toContain('types is empty');
    expect(refusal({ ...valid, types: 'tombstone.created' }).message).toContain('types must be an array');
  });

  it('refuses options that are not an object, and unknown options, naming the known ones', () => {
    expect(refusal(null).message).toContain('options must be an object');
    expect(refusal('https://x').message).toContain('options must be an object');
    const unknown = refusal({ ...valid, timeout: 5000 });
    expect(unknown.message).toContain("unknown option 'timeout'.");
    expect(unknown.message).toContain('Use only: url, secret, name, timeoutMs, headers, types, concurrency.');
  });
});
