import { TombstoneConfigurationError } from '../tombstone.exceptions.js';

// The options of the purge sinks, and the check that refuses wrong ones when a sink is made.

/**
 * Where a purge sink sends its purges. Every option is checked when the sink is made (see
 * `validatePurgeOptions`); `timeoutMs` (default 10,000) bounds each API call.
 */
export type TombstonePurgeOptions =
  | { provider: 'fastly'; serviceId: string; token: string; soft?: boolean; endpoint?: string; name?: string; timeoutMs?: number }
  | { provider: 'cloudflare'; zoneId: string; token: string; endpoint?: string; name?: string; timeoutMs?: number }
  | { provider: 'http'; url: string; headers?: Record<string, string>; name?: string; timeoutMs?: number };

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Set by the sink itself: a JSON body of its own length, to the URL's host. */
const RESERVED_HEADERS = new Set(['content-type', 'content-length', 'host', 'transfer-encoding', 'connection']);
const SINK_NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$/;
const EXCERPT_CHARS = 200;

type Fail = (message: string, ...solutions: string[]) => never;

/**
 * Checks the options of a purge sink, and throws a `TombstoneConfigurationError` that names the
 * option and says what to give instead (never quoting a token or a header value). `where` starts
 * the message, e.g. `'TombstoneModule events.sinks[1]'`.
 *
 * @example
 * validatePurgeOptions({ provider: 'cloudflare', zoneId: 'example.com', token }, 'config');
 * // TombstoneConfigurationError: config: zoneId must be the zone's ID …
 */
export function validatePurgeOptions(options: unknown, where: string): asserts options is TombstonePurgeOptions {
  const fail: Fail = (message, ...solutions) => {
    throw new TombstoneConfigurationError(`${where}: ${message}`, solutions);
  };
  if (typeof options !== 'object' || options === null || Array.isArray(options)) return fail('purge options must be an object with a provider.');
  const o = options as Record<string, unknown>;
  const fields = { fastly: ['serviceId', 'token', 'soft', 'endpoint'], cloudflare: ['zoneId', 'token', 'endpoint'], http: ['url', 'headers'] };
  const provider = o.provider as keyof typeof fields;
  if (!Object.hasOwn(fields, provider)) fail(`provider must be 'fastly', 'cloudflare' or 'http', not ${shown(provider)}.`);
  const allowed = ['provider', ...fields[provider], 'name', 'timeoutMs'];
  for (const key of Object.keys(o)) {
    if (!allowed.includes(key)) fail(`unknown ${provider} purge option '${excerpt(key, 40)}'.`, `Use only: ${allowed.join(', ')}.`);
  }
  const { serviceId, zoneId, token, soft, endpoint, url, headers, name, timeoutMs } = o;

  if (provider === 'fastly' && !(typeof serviceId === 'string' && /^[A-Za-z0-9]+$/.test(serviceId))) {
    fail(
      `serviceId must be the Fastly service's ID (letters and digits), not ${shown(serviceId)}.`,
      'Copy it from the service in the Fastly control panel (it reads like SU1Z0isxPaozGVKXdv0eY), not its name or domain.',
    );
  }
  if (provider === 'cloudflare' && !(typeof zoneId === 'string' && /^[A-Za-z0-9]{1,32}$/.test(zoneId))) {
    fail(
      `zoneId must be the zone's ID (up to 32 letters and digits), not ${shown(zoneId)}.`,
      "Copy the Zone ID from the zone's Overview page in the Cloudflare dashboard (32 hexadecimal characters), not its domain name.",
    );
  }
  if (provider !== 'http') {
    // Never quoted, whatever is wrong with it.
    const how =
      provider === 'fastly'
        ? 'A Fastly API token with the purge_select scope, limited to this service.'
        : 'A Cloudflare API token with the Zone → Cache Purge → Purge permission on this zone.';
    const trim = 'Trim the value you read from the file or environment.';
    if (typeof token !== 'string' || token === '') return fail('token must be a non-empty string.', how);
    if (/[\r\n]/.test(token)) fail('token contains a line break (CR or LF).', trim, how);
    if (!headerValue(token) || token.trim() !== token) fail('token contains control characters, characters beyond Latin-1, or surrounding spaces.', trim, how);
    if (endpoint !== undefined) absoluteUrl('endpoint', endpoint, fail, true);
  }
  if (provider === 'fastly' && soft !== undefined && typeof soft !== 'boolean') fail(`soft must be true or false, not ${shown(soft)}.`);
  if (provider === 'http') {
    absoluteUrl('url', url, fail, false);
    if (headers !== undefined) {
      if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) return fail('headers must be an object of header names and values.');
      for (const [key, value] of Object.entries(headers)) {
        if (!HEADER_NAME.test(key)) fail(`headers: ${shown(key)} is not an HTTP header name.`);
        if (RESERVED_HEADERS.has(key.toLowerCase())) fail(`headers: ${key} is set by the sink itself.`, `Leave out ${key}: the body is always JSON.`);
        // The value is never quoted: it is often a credential.
        if (typeof value !== 'string') fail(`headers: the value of ${key} must be a string.`);
        if (!headerValue(value)) fail(`headers: the value of ${key} contains a line break (CR or LF), another control character, or characters beyond Latin-1.`);
      }
    }
  }
  if (name !== undefined && !(typeof name === 'string' && SINK_NAME.test(name))) {
    fail(
      `name must be 1 to 100 letters, digits, '.', '_', ':' or '-', starting with a letter or digit, not ${shown(name)}.`,
      "e.g. name: 'fastly-eu' (the sink is then purge:fastly-eu). It must stay the same across restarts: the outbox keeps the sink's deliveries under it.",
    );
  }
  if (timeoutMs !== undefined && !(typeof timeoutMs === 'number' && Number.isInteger(timeoutMs) && timeoutMs >= 1 && timeoutMs <= 600_000)) {
    fail(`timeoutMs must be a whole number of milliseconds from 1 to 600000, not ${shown(timeoutMs)}.`);
  }
}

function absoluteUrl(option: 'endpoint' | 'url', value: unknown, fail: Fail, isEndpoint: boolean): void {
  const example = isEndpoint
    ? "e.g. endpoint: 'https://api.example.com' (the API's base; leave it out for the provider's own)"
    : "e.g. url: 'https://cdn-hooks.example.com/purge'";
  let parsed: URL | undefined;
  try {
    parsed = typeof value === 'string' ? new URL(value) : undefined;
  } catch {
    parsed = undefined;
  }
  // The URL is never quoted: with a user and password in it, it is a secret.
  if (parsed === undefined || (parsed.protocol !== 'https:' && parsed.protocol !== 'http:')) return fail(`${option} must be an absolute http:// or https:// URL.`, example);
  if (parsed.username !== '' || parsed.password !== '') {
    fail(`${option} must not carry a user name or password.`, isEndpoint ? 'The token goes in the token option.' : 'Send credentials in headers, e.g. headers: { authorization: `Bearer ${secret}` }.');
  }
  if (parsed.hash !== '' || (isEndpoint && parsed.search !== '')) fail(`${option} must not have a ${isEndpoint ? 'query or ' : ''}fragment.`, example);
}

function headerValue(value: string): boolean {
  return /^[\t\x20-\x7e\x80-\xff]*$/.test(value);
}

/** One line of printable text, shortened: answers, tags and options are foreign input. */
export function excerpt(text: string, max = EXCERPT_CHARS): string {
  const line = text.replace(/\s+/g, ' ').replace(/\p{C}/gu, '?').trim();
  return line.length <= max ? line : `${line.slice(0, max)}…`;
}


/** A wrong option's value, as JSON, shortened. */
function shown(value: unknown): string {
  return excerpt(String(JSON.stringify(value)), 60);
}
