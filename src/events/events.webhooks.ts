import { createHash, createHmac } from 'node:crypto';
import { TombstoneConfigurationError, preview } from '../tombstone.exceptions.js';
import { TOMBSTONE_EVENT_TYPES, type TombstoneEvent, type TombstoneEventSink, type TombstoneEventType } from './events.types.js';

// A sink that POSTs each event to one endpoint, signed per Standard Webhooks 1.0.0
// (https://www.standardwebhooks.com/): the receiver checks it with any of that spec's libraries.

/** Options of one webhook endpoint. Checked once, when the sink is constructed. */
export interface TombstoneWebhookOptions {
  /** Absolute http(s) URL the events are POSTed to. */
  url: string;
  /** `whsec_` followed by base64 of 24 to 64 random bytes (Standard Webhooks). */
  secret: string;
  /**
   * Sink name suffix, unique among the app's webhooks; default: the URL's host and a hash of the
   * URL (never its path or query, which may hold a token, as Slack's and Discord's do). The sink's
   * name is `webhook:<name>`.
   */
  name?: string;
  /** Per request, from sending it to the end of the answer. Default: `10000` ms. */
  timeoutMs?: number;
  /**
   * Extra request headers (validated: token names, no CR/LF, none of the webhook-* /
   * content-type / content-length / host, nor the hop-by-hop headers that fetch refuses).
   */
  headers?: Record<string, string>;
  /** Only these event types are sent; the others count as delivered without a request. Default: all. */
  types?: TombstoneEventType[];
  /**
   * Requests to this endpoint in flight at once, per instance (the sink's `concurrency`: one event
   * per `deliver()` call, at most this many calls at once). Default: `4`.
   */
  concurrency?: number;
}

const OPTIONS: readonly (keyof TombstoneWebhookOptions)[] = ['url', 'secret', 'name', 'timeoutMs', 'headers', 'types', 'concurrency'];
const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_CONCURRENCY = 4;
const RANGES = { timeoutMs: { min: 1, max: 120_000, unit: 'milliseconds' }, concurrency: { min: 1, max: 100, unit: 'requests' } } as const;
const SECRET_PREFIX = 'whsec_';
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HEADER_VALUE = /^[\u0020-\u007e]*$/;
/** Set by the sink, or refused by fetch (every request would fail): never taken from `headers`. */
const RESERVED_HEADERS = ['content-type', 'content-length', 'host', 'connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'expect'];
const NAME = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;
const MAX_NAME = 100;
/** The signed content is `{id}.{timestamp}.{body}`: an id with a full stop could forge another split. */
const EVENT_ID = /^[A-Za-z0-9_-]{1,200}$/;
/** The most of an answer read (and thrown away); past it, the connection is dropped rather than drained. */
const MAX_DRAINED_BYTES = 64 * 1024;
/** Of a failed answer's body, the bytes read for its message, and the characters quoted. */
const QUOTED_BYTES = 1024;
const QUOTED_CHARS = 200;

type Fail = (message: string, ...solutions: string[]) => never;

/**
 * Sends each tombstone event to a webhook endpoint: one signed POST per event, delivered when it
 * answers 2xx. Anything else rejects (a 3xx too: redirects are not followed, update the URL), and
 * the outbox retries the event later, with a fresh timestamp and signature.
 *
 * Headers: `webhook-id` (the event's id, the receiver's idempotency key), `webhook-timestamp`
 * (seconds, of this attempt), `webhook-signature` (`v1,` and the base64 HMAC-SHA256 of
 * `{id}.{timestamp}.{body}`), `content-type: application/json`. Body: the spec's envelope,
 * `{"type": …, "timestamp": <when the change happened>, "data": <the TombstoneEvent>}`.
 *
 * @example
 * new TombstoneWebhookSink({
 *   url: 'https://search.example.com/hooks/tombstones',
 *   secret: process.env.TOMBSTONE_WEBHOOK_SECRET!, // whsec_…
 *   name: 'search-index',
 *   types: ['tombstone.created', 'tombstone.removed'],
 * });
 */
export class TombstoneWebhookSink implements TombstoneEventSink {
  readonly name: string;
  /** One POST per event, as Standard Webhooks expects: the id and signature are per event. */
  readonly batchSize = 1;
  readonly concurrency: number;
  private readonly url: string;
  /** The URL's origin, for messages: its path and query may hold a token. */
  private readonly target: string;
  private readonly key: Buffer;
  private readonly timeoutMs: number;
  private readonly headers: Readonly<Record<string, string>>;
  private readonly types: ReadonlySet<TombstoneEventType> | undefined;

  constructor(options: TombstoneWebhookOptions) {
    validateWebhookOptions(options, 'TombstoneWebhookSink');
    const url = new URL(options.url);
    this.url = url.href;
    this.target = url.origin;
    this.name = `webhook:${options.name ?? defaultName(url)}`;
    this.key = Buffer.from(options.secret.slice(SECRET_PREFIX.length), 'base64');
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
    this.headers = { ...options.headers };
    this.types = options.types && new Set(options.types);
  }

  /** POSTs the events one after the other (the outbox hands one at a time); the first failure rejects. */
  async deliver(events: readonly TombstoneEvent[], signal: AbortSignal): Promise<void> {
    for (const event of events) {
      if (this.types && !this.types.has(event.type)) continue;
      await this.post(event, signal);
    }
  }

  /** The clock of the attempts, in milliseconds since the epoch (a test's subclass moves it). */
  protected now(): number {
    return Date.now();
  }

  private async post(event: TombstoneEvent, signal: AbortSignal): Promise<void> {
    if (!EVENT_ID.test(event.id)) throw new Error(`${this.name}: event id ${JSON.stringify(preview(event.id, 60))} cannot be a webhook-id (letters, digits, _ and - only).`);
    const body = JSON.stringify({ type: event.type, timestamp: event.occurredAt, data: event });
    const timestamp = String(Math.floor(this.now() / 1000));
    const headers = {
      ...this.headers,
      'content-type': 'application/json',
      'webhook-id': event.id,
      'webhook-timestamp': timestamp,
      'webhook-signature': `v1,${createHmac('sha256', this.key).update(`${event.id}.${timestamp}.${body}`).digest('base64')}`,
    };
    const attempt = this.deadline(signal);
    try {
      const response = await fetch(this.url, { method: 'POST', headers, body, redirect: 'manual', signal: attempt.signal }).catch((error: unknown) => {
        throw attempt.signal.aborted ? (attempt.signal.reason as Error) : this.unsent(error);
      });
      const ok = response.status >= 200 && response.status < 300;
      // Read to the end, so that the connection goes back to the pool; keep a little of a failure's.
      const quoted = await drain(response, ok ? 0 : QUOTED_BYTES);
      if (!ok) throw new Error(this.failure(response, quoted));
    } finally {
      attempt.end();
    }
  }

  /**
   * The attempt's signal: aborted by the dispatcher's, or after `timeoutMs`. A controller of our
   * own, not `AbortSignal.any()`, so that nothing stays attached to a long-lived dispatcher signal.
   */
  private deadline(outer: AbortSignal): { signal: AbortSignal; end: () => void } {
    // The first reason stays: a later abort() changes nothing.
    const controller = new AbortController();
    const abort = (error: Error) => controller.abort(error);
    const onAbort = () => abort(new Error(`${this.name}: the delivery was aborted (${reason(outer.reason)}).`, { cause: outer.reason }));
    const timer = setTimeout(() => abort(new Error(`${this.name}: no answer from ${this.target} within ${this.timeoutMs} ms.`)), this.timeoutMs);
    timer.unref?.();
    if (outer.aborted) onAbort();
    else outer.addEventListener('abort', onAbort, { once: true });
    return {
      signal: controller.signal,
      end: () => {
        clearTimeout(timer);
        outer.removeEventListener('abort', onAbort);
      },
    };
  }

  /** A non-2xx answer: its status, and what the receiver said (a redirect: where to). */
  private failure(response: Response, quoted: string): string {
    const { status } = response;
    let message = `${this.name}: POST ${this.target} answered ${status}`;
    if (status >= 300 && status < 400) {
      const location = response.headers.get('location');
      message += `, a redirect${location ? ` to ${printable(location)}` : ''} that is not followed (update the webhook's URL)`;
    } else if (status === 410) {
      message += ' Gone: the receiver wants no more of these webhooks (remove the sink or change its URL)';
    }
    return quoted ? `${message}: ${quoted}` : `${message}.`;
  }

  /** No answer: refused, reset, unknown host, … (fetch's own message is only "fetch failed"). */
  private unsent(error: unknown): Error {
    const cause = (error as { cause?: unknown })?.cause ?? error;
    return new Error(`${this.name}: POST ${this.target} failed: ${reason(cause)}.`, { cause: error });
  }
}

/**
 * Checks webhook options (those of {@link TombstoneWebhookSink}) and throws a
 * `TombstoneConfigurationError` that names the option and says how to fix it; `where` (e.g.
 * `'TombstoneModule: events.webhooks[0]'`) starts its message. An option that is `undefined` is
 * not given. The secret, credentials and header values never appear in a message.
 *
 * @example
 * validateWebhookOptions({ url: 'https://hooks.example.com/tombstones', secret }, 'events.webhooks[0]');
 */
export function validateWebhookOptions(options: unknown, where: string): void {
  const fail: Fail = (message, ...solutions) => {
    throw new TombstoneConfigurationError(`${where}: ${message}`, solutions);
  };
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    fail('options must be an object of { url, secret, … }.', "e.g. { url: 'https://hooks.example.com/tombstones', secret: process.env.TOMBSTONE_WEBHOOK_SECRET }");
  }
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!(OPTIONS as readonly string[]).includes(key)) fail(`unknown option '${preview(key, 40)}'.`, `Use only: ${OPTIONS.join(', ')}.`);
  }
  const url = checkUrl(o.url, fail);
  checkSecret(o.secret, fail);
  if (o.name !== undefined) checkName(o.name, fail);
  else if (defaultName(url).length > MAX_NAME) {
    fail(`the default name (the URL's host and a hash) is longer than ${MAX_NAME} characters.`, "Set `name`, e.g. name: 'search-index'.");
  }
  if (o.timeoutMs !== undefined) whole('timeoutMs', o.timeoutMs, fail);
  if (o.concurrency !== undefined) whole('concurrency', o.concurrency, fail);
  if (o.headers !== undefined) checkHeaders(o.headers, fail);
  if (o.types !== undefined) checkTypes(o.types, fail);
}

function checkUrl(value: unknown, fail: Fail): URL {
  const solution = "e.g. url: 'https://hooks.example.com/tombstones'";
  let url: URL | undefined;
  try {
    if (typeof value === 'string') url = new URL(value);
  } catch {
    // refused below
  }
  if (!url) fail(`url must be an absolute http or https URL, not ${typeof value === 'string' ? JSON.stringify(withoutQuery(value)) : typeof value}.`, solution);
  if (url.protocol !== 'https:' && url.protocol !== 'http:') fail(`url must be an http or https URL, not ${url.protocol}.`, solution);
  if (url.username || url.password) {
    fail(
      'url must not hold credentials (user:password@): they would be sent and logged with the URL.',
      "Send them in `headers`, e.g. headers: { authorization: 'Bearer …' }.",
      'Or rely on the signature alone: the receiver verifies it with the secret.',
    );
  }
  return url;
}

function checkSecret(value: unknown, fail: Fail): void {
  const generate = `Generate one: node -e "console.log('${SECRET_PREFIX}' + require('node:crypto').randomBytes(32).toString('base64'))", and give the same to the receiver.`;
  const rule = `secret must be '${SECRET_PREFIX}' followed by the base64 of 24 to 64 random bytes`;
  if (typeof value !== 'string') fail(`${rule}, not ${value === null ? 'null' : typeof value}.`, generate);
  if (!value.startsWith(SECRET_PREFIX)) fail(`${rule}; this one does not start with '${SECRET_PREFIX}'.`, generate);
  const encoded = value.slice(SECRET_PREFIX.length);
  if (/\s/.test(encoded)) fail(`${rule}; this one holds white space (a line break read from a file?).`, 'Trim the value you read.');
  if (!BASE64.test(encoded)) fail(`${rule}; the rest of this one is not base64 (A–Z a–z 0–9 + /, padded with =).`, generate);
  const bytes = Buffer.byteLength(encoded, 'base64');
  if (bytes < 24 || bytes > 64) fail(`${rule}; this one holds ${bytes} bytes.`, generate);
}

function checkName(value: unknown, fail: Fail): void {
  if (typeof value !== 'string' || value.length > MAX_NAME || !NAME.test(value)) {
    fail(
      `name must be 1 to ${MAX_NAME} printable ASCII characters, not ${typeof value === 'string' ? JSON.stringify(preview(value, 60)) : typeof value}.`,
      "e.g. name: 'search-index' (the sink is then 'webhook:search-index').",
      'Keep it stable: the outbox keeps each sink’s deliveries under its name.',
    );
  }
}

function checkHeaders(value: unknown, fail: Fail): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('headers must be an object of header names to values.', "e.g. headers: { authorization: 'Bearer …' }");
  const seen = new Set<string>();
  for (const [name, header] of Object.entries(value)) {
    const shown = JSON.stringify(preview(name, 60));
    const lower = name.toLowerCase();
    if (!HEADER_NAME.test(name)) fail(`headers: ${shown} is not an HTTP header name (a token: letters, digits and !#$%&'*+-.^_\`|~).`);
    if (lower.startsWith('webhook-') || RESERVED_HEADERS.includes(lower)) {
      fail(`headers: ${shown} is set by the sink or refused by fetch; it cannot be given.`, 'Remove it. The sink sends content-type and the webhook-* headers itself.');
    }
    if (seen.has(lower)) fail(`headers: ${shown} is given twice (header names ignore case).`);
    seen.add(lower);
    // The value is never shown: it may be a token.
    if (typeof header !== 'string' || !HEADER_VALUE.test(header)) fail(`headers[${shown}] must be a string of printable ASCII (no CR, LF or other control characters).`);
  }
}

function checkTypes(value: unknown, fail: Fail): void {
  const all = TOMBSTONE_EVENT_TYPES.map((t) => `'${t}'`).join(', ');
  if (!Array.isArray(value)) fail(`types must be an array of event types (${all}).`);
  if (value.length === 0) fail('types is empty: the sink would send nothing.', 'Omit types to send every event, or remove the sink.');
  for (const type of value) {
    if (!TOMBSTONE_EVENT_TYPES.includes(type)) fail(`types: ${JSON.stringify(type)} is not an event type.`, `Use only: ${all}.`);
  }
}

function whole(name: keyof typeof RANGES, value: unknown, fail: Fail): void {
  const { min, max, unit } = RANGES[name];
  if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) {
    fail(`${name} must be a whole number of ${unit} from ${min} to ${max}, not ${JSON.stringify(value)}.`);
  }
}

/** `host#` and 12 hex digits of the URL's SHA-256: stable for one URL, and it shows no path or query. */
function defaultName(url: URL): string {
  return `${url.host}#${createHash('sha256').update(url.href).digest('hex').slice(0, 12)}`;
}

/** A URL as a message may show it: without its query or fragment. */
function withoutQuery(url: string): string {
  return preview(url.replace(/[?#].*$/s, ''), 100);
}

/**
 * Reads an answer's body to its end, or drops the connection past `MAX_DRAINED_BYTES`; returns
 * the first `keep` bytes as one printable line. A body that breaks off, or is aborted, ends the read.
 */
async function drain(response: Response, keep: number): Promise<string> {
  const reader = response.body?.getReader();
  if (!reader) return '';
  const kept: Uint8Array[] = [];
  let keptBytes = 0;
  let read = 0;
  try {
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
      read += chunk.value.byteLength;
      if (keptBytes < keep) {
        kept.push(chunk.value.subarray(0, keep - keptBytes));
        keptBytes += kept[kept.length - 1].byteLength;
      }
      if (read > MAX_DRAINED_BYTES) {
        await reader.cancel();
        break;
      }
    }
  } catch {
    // What came is enough: the status decides.
  }
  return printable(Buffer.concat(kept).toString('utf8'));
}

/** Untrusted text for a message: one line, no control or format characters, `QUOTED_CHARS` at most. */
function printable(text: string): string {
  const line = text.replace(/\s+/gu, ' ').replace(/\p{C}/gu, '').trim();
  const chars = Array.from(line);
  return chars.length <= QUOTED_CHARS ? line : `${chars.slice(0, QUOTED_CHARS).join('')}…`;
}

function reason(value: unknown): string {
  // Not `instanceof Error`: fetch's errors may come from another realm (a vm context, Jest).
  // Node's AggregateError (every address of a host refused) has no message, only a code.
  const { message, code, name } = (typeof value === 'object' && value !== null ? value : {}) as { message?: unknown; code?: unknown; name?: unknown };
  const text = typeof message === 'string' ? message || String(code ?? name ?? '') : String(value);
  return printable(text) || 'no reason given';
}
