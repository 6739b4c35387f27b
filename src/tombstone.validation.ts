import { LIMITS } from './tombstone.constants.js';
import { TombstoneValidationError } from './tombstone.exceptions.js';

const TYPE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/;

/** Whether a key can have a tombstone at all; anything else is a plain miss, looked up nowhere. */
export function isStorableKey(key: unknown): key is string {
  return (
    typeof key === 'string' &&
    key.length > 0 &&
    !key.includes('\u0000') &&
    // A UTF-16 code unit is at most 3 UTF-8 bytes: short keys need no count.
    (key.length * 3 <= LIMITS.keyBytes || Buffer.byteLength(key, 'utf8') <= LIMITS.keyBytes) &&
    isWellFormed(key)
  );
}

/** Whether a scope can be looked up. */
export function isStorableScope(scope: unknown): scope is string {
  return (
    typeof scope === 'string' &&
    !scope.includes('\u0000') &&
    Buffer.byteLength(scope, 'utf8') <= LIMITS.scopeBytes &&
    isWellFormed(scope)
  );
}

export function isValidType(type: unknown): type is string {
  return typeof type === 'string' && type.length <= LIMITS.typeLength && TYPE_PATTERN.test(type);
}

export function assertType(type: unknown): string {
  if (!isValidType(type)) {
    throw new TombstoneValidationError(
      'type',
      `Invalid resource type ${JSON.stringify(type)}.`,
      [`Use a short name of letters, digits, '_', '.', ':' or '-' (at most ${LIMITS.typeLength} characters), e.g. 'article'.`],
    );
  }
  return type;
}

export function assertKey(key: unknown, field = 'key'): string {
  if (!isStorableKey(key)) {
    throw new TombstoneValidationError(
      field,
      `Invalid ${field}: it must be a non-empty string of at most ${LIMITS.keyBytes} UTF-8 bytes, without NUL characters.`,
      ['Check the key you pass; numeric ids must be passed as strings (String(id)).'],
    );
  }
  return key;
}

/**
 * Whether a key can be a redirect's target: `.` and `..` cannot, since a URL with such a segment
 * is resolved by every client to another route (`/products/..` is `/`).
 */
export function isTargetKey(key: unknown): key is string {
  return isStorableKey(key) && key !== '.' && key !== '..';
}

/** Why a target of `.` or `..` is refused, as the admin endpoints and the import say it. */
export const DOT_TARGET_REASON = "cannot be '.' or '..', which clients resolve to another URL";

export function assertTarget(key: unknown, field = 'target'): string {
  assertKey(key, field);
  if (!isTargetKey(key)) {
    throw new TombstoneValidationError(
      field,
      `Invalid ${field} ${JSON.stringify(key)}: a redirect's target ${DOT_TARGET_REASON}.`,
    );
  }
  return key;
}

/**
 * A prefix tombstone's key (or a moved prefix's target): it ends at a segment boundary ('/') and
 * has at most 16 segments, the most a lookup probes.
 */
export function assertPrefix(key: string, field = 'key'): string {
  if (!isPrefixKey(key)) {
    throw new TombstoneValidationError(
      field,
      `Invalid ${field} ${JSON.stringify(key.slice(0, 120))} for a prefix tombstone: a prefix ends with '/' and has at most ${PREFIX_SEGMENTS} segments.`,
      [`Write the prefix up to a segment boundary, e.g. 'docs/v1/' (it covers 'docs/v1/guide/intro', not 'docs/v10').`],
    );
  }
  return key;
}

/** The most segments a prefix tombstone's key has (a lookup probes that many prefixes). */
export const PREFIX_SEGMENTS = 16;

/** Whether a key can be a prefix tombstone's: it ends with '/', with at most 16 segments. */
export function isPrefixKey(key: string): boolean {
  return key.endsWith('/') && key.split('/').length - 1 <= PREFIX_SEGMENTS;
}

/** Why a key cannot be a prefix tombstone's, as the admin endpoints and the import say it. */
export const PREFIX_KEY_REASON = `a prefix ends with '/' (at a segment boundary) and has at most ${PREFIX_SEGMENTS} segments`;

export function assertScope(scope: unknown): string {
  if (!isStorableScope(scope)) {
    throw new TombstoneValidationError(
      'scope',
      `Invalid scope: it must be a string of at most ${LIMITS.scopeBytes} UTF-8 bytes, without NUL characters ('' when unscoped).`,
    );
  }
  return scope;
}

export function assertText(value: unknown, field: string, max: number): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string' || value.length > max || value.includes('\u0000') || !isWellFormed(value)) {
    throw new TombstoneValidationError(
      field,
      `Invalid ${field}: it must be a string of at most ${max} characters, without NUL characters.`,
    );
  }
  return value;
}

/**
 * An `alternative` ends up in a `Link` header and in bodies that clients follow, so only two
 * shapes are accepted: a same-origin path (`/articles/current`) or an absolute http(s) URL.
 */
export function isSafeLink(value: string): boolean {
  if (value.length === 0 || value.length > LIMITS.alternativeLength) return false;
  // Printable ASCII only: it goes into a header verbatim (percent-encode anything else).
  if (!/^[\x21-\x7e]+$/.test(value) || /[<>"\\`{}|^]/.test(value)) return false;
  if (value.startsWith('/')) return !value.startsWith('//');
  if (!/^https?:\/\/[^/]/i.test(value)) return false;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  return (url.protocol === 'https:' || url.protocol === 'http:') && url.hostname !== '' && url.username === '' && url.password === '';
}

export function assertAlternative(value: unknown): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string' || !isSafeLink(value)) {
    throw new TombstoneValidationError(
      'alternative',
      `Invalid alternative ${JSON.stringify(typeof value === 'string' ? value.slice(0, 200) : value)}.`,
      [
        "Use a path on this site that starts with a single '/', e.g. '/articles/current'.",
        "Or an absolute 'https://' URL without credentials, spaces, quotes or angle brackets.",
        'Percent-encode non-ASCII characters (encodeURI).',
      ],
    );
  }
  return value;
}

export function assertDate(value: unknown, field: string): Date | null {
  if (value === undefined || value === null) return null;
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) {
    throw new TombstoneValidationError(field, `Invalid ${field}: it must be a valid Date.`);
  }
  return value;
}

export function assertMetadata(value: unknown): Record<string, unknown> {
  if (value === undefined || value === null) return {};
  const prototype = typeof value === 'object' ? Object.getPrototypeOf(value) : undefined;
  if (prototype !== Object.prototype && prototype !== null) {
    throw new TombstoneValidationError('metadata', 'Invalid metadata: it must be a plain JSON object.');
  }
  try {
    JSON.stringify(value);
  } catch {
    throw new TombstoneValidationError('metadata', 'Invalid metadata: it cannot be serialised to JSON.');
  }
  return value as Record<string, unknown>;
}

/** PostgreSQL text must be valid UTF-8; a lone surrogate would make the query fail. */
export function isWellFormed(value: string): boolean {
  return value.isWellFormed();
}
