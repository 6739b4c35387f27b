import { Logger } from '@nestjs/common';
import { TombstoneConfigurationError, TombstoneError } from '../tombstone.exceptions.js';
import { excerpt, type TombstonePurgeOptions, validatePurgeOptions } from './events.purge-options.js';
import type { TombstoneEvent, TombstoneEventSink } from './events.types.js';

export { type TombstonePurgeOptions, validatePurgeOptions } from './events.purge-options.js';

/** Events handed to one `deliver()`: their tags go in as few API calls as the provider allows. */
const BATCH_SIZE = 100;
/** Deliveries of one sink at once, per instance: the CDNs rate-limit purges per account. */
const CONCURRENCY = 2;
const DEFAULT_TIMEOUT_MS = 10_000;
/** Most of an answer read: enough to recognise a success or to quote an error. */
const MAX_BODY_BYTES = 64 * 1024;

/** What one provider's purge API takes and answers. */
interface PurgeApi {
  readonly label: string;
  /** Tags in one API call, as its documentation gives it. */
  readonly perCall: number;
  /** Strings that must never appear in an error message. */
  readonly secrets: readonly string[];
  /** Two tags with the same identity are one purge (Cloudflare's tags ignore case). */
  identity(tag: string): string;
  /**
   * Why no cached response can carry `tag` (so purging it could purge nothing, and the API would
   * refuse the whole call), or `undefined`.
   */
  unusable(tag: string): string | undefined;
  request(tags: readonly string[], events: readonly TombstoneEvent[]): { url: string; headers: Record<string, string>; body: unknown };
  /**
   * A 2xx answer's body: `undefined` when it says the purge was made, else what it says instead.
   * Left out where the status alone says it (the body is then not read).
   */
  refusal?(body: string): string | undefined;
  /** What an error answer says, from its body. */
  explain(body: string): string;
  /** What to check after a 401 or 403. */
  readonly credentials: string;
}

/**
 * A sink that purges from a CDN the cache tags of each event's (type, key): Fastly surrogate keys,
 * Cloudflare cache-tags, or a JSON `POST` to an endpoint of yours. `tagsOf` names the tags of an
 * event, the same tags the answers carried in their `Surrogate-Key` or `Cache-Tag` header.
 *
 * Named `purge:<provider>`, or `purge:<name>` with `name` (two sinks of one provider need two
 * names). Takes 100 events at a time, two deliveries at once. A delivery's tags are de-duplicated
 * and sent in as few calls as the provider's per-call limit allows (Fastly 256 keys, Cloudflare
 * 100 tags, HTTP one call), one after the other; it resolves when every call was accepted and
 * rejects at the first that was not, so the outbox retries the whole batch (a purge made twice is
 * harmless). Redirects are not followed: the credentials would go with them. A tag the CDN can never
 * carry (Fastly: whitespace or over 1,024 bytes; Cloudflare: not printable ASCII, a space or a
 * comma, or over 1,024 characters) cannot have cached anything: it is left out and logged.
 *
 * @example
 * const purge = createPurgeSink(
 *   { provider: 'fastly', serviceId: process.env.FASTLY_SERVICE_ID!, token: process.env.FASTLY_PURGE_TOKEN!, soft: true },
 *   (event) => [`${event.resourceType}:${event.key}`],
 * );
 */
export function createPurgeSink(options: TombstonePurgeOptions, tagsOf: (event: TombstoneEvent) => readonly string[]): TombstoneEventSink {
  validatePurgeOptions(options, 'createPurgeSink()');
  if (typeof tagsOf !== 'function') {
    throw new TombstoneConfigurationError('createPurgeSink(): tagsOf must be a function of an event that returns its cache tags.', [
      'e.g. (event) => [`${event.resourceType}:${event.key}`], the tags your answers carry.',
    ]);
  }
  const api = purgeApi(options);
  const name = `purge:${options.name ?? options.provider}`;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const logger = new Logger('TombstoneModule');

  const tagsOfBatch = (events: readonly TombstoneEvent[]): string[] => {
    const tags = new Map<string, string>();
    const skipped = new Map<string, string>();
    for (const event of events) {
      const ofEvent: unknown = tagsOf(event);
      if (!Array.isArray(ofEvent) || ofEvent.some((tag) => typeof tag !== 'string')) {
        throw new TombstoneError(`${name}: tagsOf must return an array of strings; for event ${event.id} it returned ${excerpt(String(JSON.stringify(ofEvent)))}.`);
      }
      for (const tag of ofEvent as string[]) {
        const why = api.unusable(tag);
        if (why !== undefined) skipped.set(tag, why);
        else if (!tags.has(api.identity(tag))) tags.set(api.identity(tag), tag);
      }
    }
    if (skipped.size > 0) {
      const [[tag, why]] = skipped;
      logger.warn(
        `${name}: left out ${skipped.size} tag(s) that ${api.label} cannot carry, so no cached answer has them: "${excerpt(tag, 80)}" (${why})` +
          `${skipped.size > 1 ? ' and others' : ''}. Make tagsOf and the answers' tags fit ${api.label}'s limits.`,
      );
    }
    return [...tags.values()];
  };

  return {
    name,
    batchSize: BATCH_SIZE,
    concurrency: CONCURRENCY,
    async deliver(events: readonly TombstoneEvent[], signal: AbortSignal): Promise<void> {
      const tags = tagsOfBatch(events);
      const size = Math.min(api.perCall, tags.length);
      const calls = size === 0 ? 0 : Math.ceil(tags.length / size);
      for (let call = 0; call < calls; call++) {
        const part = tags.slice(call * size, (call + 1) * size);
        const which = calls > 1 ? ` (call ${call + 1} of ${calls}, ${part.length} tags)` : '';
        await send(api, api.request(part, events), signal, timeoutMs, `${name}: `, which);
      }
    },
  };
}

function purgeApi(options: TombstonePurgeOptions): PurgeApi {
  if (options.provider === 'fastly') {
    const base = (options.endpoint ?? 'https://api.fastly.com').replace(/\/+$/, '');
    const headers: Record<string, string> = { 'fastly-key': options.token, 'content-type': 'application/json', accept: 'application/json' };
    if (options.soft) headers['fastly-soft-purge'] = '1';
    return {
      label: 'Fastly',
      perCall: 256,
      secrets: [options.token],
      identity: (tag) => tag,
      unusable: (tag) =>
        tag === ''
          ? 'empty'
          : /[\s\p{Cc}]/u.test(tag)
            ? 'whitespace or a control character: Surrogate-Key separates keys with spaces'
            : Buffer.byteLength(tag) > 1024
              ? 'over 1,024 bytes'
              : undefined,
      request: (tags) => ({ url: `${base}/service/${options.serviceId}/purge`, headers, body: { surrogate_keys: tags } }),
      explain: (body) => {
        const { msg, detail } = (json(body) ?? {}) as { msg?: unknown; detail?: unknown };
        return typeof msg === 'string' ? [msg, detail].filter((part) => typeof part === 'string' && part !== '').join(': ') : body;
      },
      credentials: `The token must be valid, with the purge_select (or global) scope, for service ${options.serviceId}.`,
    };
  }
  if (options.provider === 'cloudflare') {
    const base = (options.endpoint ?? 'https://api.cloudflare.com/client/v4').replace(/\/+$/, '');
    const explain = (body: string): string => {
      const errors = (json(body) as { errors?: unknown } | undefined)?.errors;
      if (!Array.isArray(errors) || errors.length === 0) return body;
      return errors.map((e: { code?: unknown; message?: unknown }) => `${String(e?.message)}${e?.code === undefined ? '' : ` (${String(e.code)})`}`).join('; ');
    };
    return {
      label: 'Cloudflare',
      perCall: 100,
      secrets: [options.token],
      identity: (tag) => tag.toLowerCase(),
      unusable: (tag) =>
        !/^[\x21-\x7e]+$/.test(tag)
          ? 'empty, or not printable ASCII without spaces'
          : tag.includes(',')
            ? 'a comma: Cache-Tag separates tags with commas'
            : tag.length > 1024
              ? 'over 1,024 characters'
              : undefined,
      request: (tags) => ({
        url: `${base}/zones/${options.zoneId}/purge_cache`,
        headers: { authorization: `Bearer ${options.token}`, 'content-type': 'application/json', accept: 'application/json' },
        body: { tags },
      }),
      refusal: (body) => ((json(body) as { success?: unknown } | undefined)?.success === true ? undefined : `success is not true: ${explain(body)}`),
      explain,
      credentials: `The token must be valid, with the Zone → Cache Purge → Purge permission, for zone ${options.zoneId}.`,
    };
  }
  const headers = { ...options.headers, 'content-type': 'application/json' };
  return {
    label: new URL(options.url).host,
    perCall: Infinity,
    // Header values are often credentials; short ones ("1", "gzip") would only garble the excerpt.
    secrets: Object.values(options.headers ?? {}).filter((value) => value.length >= 8),
    identity: (tag) => tag,
    unusable: (tag) => (tag === '' ? 'empty' : undefined),
    request: (tags, events) => ({ url: options.url, headers, body: { tags, events: events.map((event) => event.id) } }),
    explain: (body) => body,
    credentials: 'Check the headers the endpoint expects (its authorization).',
  };
}

/** One API call: resolves when the provider accepted it, else throws why (naming status and excerpt). */
async function send(
  api: PurgeApi,
  request: { url: string; headers: Record<string, string>; body: unknown },
  signal: AbortSignal,
  timeoutMs: number,
  prefix: string,
  which: string,
): Promise<void> {
  const target = new URL(request.url);
  // Origin and path only: a query may hold a key.
  const shown = `POST ${target.origin}${target.pathname}${which}`;
  const fail = (message: string, solutions: string[] = [], cause?: unknown): TombstoneError => {
    const error = new TombstoneError(`${prefix}${redact(message, api.secrets)}`, solutions);
    if (cause !== undefined) error.cause = cause;
    return error;
  };
  const timeout = AbortSignal.timeout(timeoutMs);
  let status: number;
  let location: string | null;
  let body: string;
  try {
    const response = await fetch(request.url, {
      method: 'POST',
      headers: request.headers,
      body: JSON.stringify(request.body),
      redirect: 'manual',
      signal: AbortSignal.any([signal, timeout]),
    });
    ({ status } = response);
    location = response.headers.get('location');
    // Where the status alone says the purge was made (Fastly, HTTP), the body is not needed.
    // Redacted before it is shortened, so no part of a secret an answer echoes survives the cut.
    body = response.ok && api.refusal === undefined ? (await response.body?.cancel(), '') : redact(await readCapped(response), api.secrets);
  } catch (error) {
    if (signal.aborted) throw fail(`${shown} was aborted before ${api.label} answered (the delivery's lease ran out, or the app is shutting down).`, [], signal.reason);
    if (timeout.aborted) {
      throw fail(`${api.label} did not answer ${shown} within ${timeoutMs} ms.`, ['The outbox retries it. If the API is only slow, raise timeoutMs.'], error);
    }
    const cause = (error as { cause?: { code?: unknown; message?: unknown } }).cause;
    const why = [cause?.message, cause?.code].filter((part) => typeof part === 'string' && part !== '').join(', ');
    throw fail(`could not reach ${api.label} for ${shown}: ${(error as Error).message}${why ? ` (${why})` : ''}.`, [], error);
  }
  if (status >= 200 && status < 300) {
    const refusal = api.refusal?.(body);
    if (refusal === undefined) return;
    throw fail(`${api.label} answered ${status} to ${shown} but did not purge: ${excerpt(refusal)}`);
  }
  if (status >= 300 && status < 400) {
    throw fail(`${api.label} answered ${status} to ${shown}, a redirect${location ? ` to ${excerpt(location, 120)}` : ''}: not followed.`, [
      'Redirects are not followed, so the credentials never go anywhere else: set the endpoint or url to the address that answers.',
    ]);
  }
  const solutions =
    status === 401 || status === 403
      ? [api.credentials]
      : status === 404
        ? ['Check the service id, zone id or url: the API does not know it.']
        : status === 429
          ? [`${api.label} limits the rate of purges (per account); the outbox retries with backoff. Keep one sink per account, with its default concurrency.`]
          : [];
  throw fail(`${api.label} answered ${status}${status === 429 ? ' (rate limited)' : ''} to ${shown}: ${excerpt(api.explain(body)) || '(no body)'}`, solutions);
}

/** The start of an answer's body, as text: an error page may be megabytes, or never end. */
async function readCapped(response: Response): Promise<string> {
  if (response.body === null) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  while (size < MAX_BODY_BYTES) {
    const { done, value } = await reader.read();
    if (done) return Buffer.concat(chunks).toString('utf8');
    chunks.push(value);
    size += value.byteLength;
  }
  await reader.cancel();
  return Buffer.concat(chunks).subarray(0, MAX_BODY_BYTES).toString('utf8');
}

function json(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function redact(text: string, secrets: readonly string[]): string {
  return secrets.reduce((redacted, secret) => (secret === '' ? redacted : redacted.split(secret).join('[redacted]')), text);
}
