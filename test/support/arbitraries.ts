import fc from 'fast-check';

/**
 * Hostile input for the property-based suite (test/property.e2e-spec.ts): strings, numbers,
 * dates, JSON texts, CSV and NDJSON bodies, path segments, query strings and header values, each
 * as the bytes a client can put on the wire.
 */

/** A request as the suite sends it: the request line's target, headers and raw body bytes. */
export interface RequestSpec {
  method: string;
  /** As written on the request line: printable ASCII, percent-encoding, raw latin1 bytes. */
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
}

// ---------------------------------------------------------------------------------------------
// Encoding helpers

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** The UTF-8 bytes of a string; a lone surrogate becomes its (invalid) 3-byte encoding. */
export function utf8Bytes(text: string): Buffer {
  if (!LONE_SURROGATE.test(text)) return Buffer.from(text, 'utf8');
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    let cp = text.charCodeAt(i);
    if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < text.length) {
      const low = text.charCodeAt(i + 1);
      if (low >= 0xdc00 && low <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
        i++;
      }
    }
    if (cp < 0x80) bytes.push(cp);
    else if (cp < 0x800) bytes.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
    else if (cp < 0x10000) bytes.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
    else bytes.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
  }
  return Buffer.from(bytes);
}

const UNRESERVED = /[A-Za-z0-9\-._~]/;

/** Percent-encodes every byte but the unreserved ones (what encodeURIComponent does, lone surrogates included). */
export function percentEncode(text: string): string {
  let out = '';
  for (const byte of utf8Bytes(text)) {
    const c = String.fromCharCode(byte);
    out += UNRESERVED.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * A header value as Node's client can send it: the UTF-8 bytes of `text`, one latin1 character
 * per byte (so that non-ASCII arrives as the raw bytes a real client sends), without the control
 * characters Node refuses to write (those are sent over raw sockets instead).
 */
export function headerValue(text: string): string {
  let out = '';
  for (const byte of utf8Bytes(text)) {
    if (byte === 0x09 || (byte >= 0x20 && byte !== 0x7f)) out += String.fromCharCode(byte);
    else out += '?';
  }
  return out;
}

/** A JSON string literal that may hold a lone surrogate (JSON.stringify escapes it as \\udXXX). */
export const jsonText = (value: unknown): string => {
  const text = JSON.stringify(value);
  return text === undefined ? 'null' : text;
};

// ---------------------------------------------------------------------------------------------
// Strings

/** Strings every parser and validator has been known to trip on. */
export const HOSTILE_STRINGS = [
  '',
  ' ',
  '\t',
  '\u0000',
  'a\u0000b',
  '\r\nSet-Cookie: pwn=1',
  '\r\nX-Injected: 1',
  '\n',
  '%',
  '%00',
  '%FF',
  '%E0%A4%A',
  '..',
  '.',
  '../../etc/passwd',
  '//evil.example',
  '/\\evil.example',
  '\\\\evil.example',
  'https://evil.example',
  'http://shop.example.com@evil.example/',
  'javascript:alert(1)',
  'data:text/html,<script>alert(1)</script>',
  '／／evil.example',
  '\u202Eevil',
  '\uFEFF',
  '\uFFFD',
  '\uD800',
  '\uDFFF',
  'a\uD800b',
  '\uDBFF\uDFFF',
  '💩',
  'Ω≈ç√∫˜µ≤≥÷',
  'ünïcödé',
  'ﷺ',
  '𝕿𝖍𝖊',
  "' OR '1'='1",
  "'; DROP TABLE tombstones; --",
  '1 UNION SELECT resource_key FROM tombstones',
  '$1',
  '$$',
  '\\',
  '\\x00',
  '\\u0000',
  '"',
  "'",
  '`',
  '<script>alert(1)</script>',
  '{{7*7}}',
  '${7*7}',
  '%s%s%s%n',
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'hasOwnProperty',
  'null',
  'undefined',
  'true',
  'NaN',
  '[]',
  '{}',
  '0',
  '-1',
  '1e400',
  'a,b',
  'say "hi"',
  '=1+1',
  '@SUM(A1)',
  '\u0085',
  '\u2028\u2029',
];

/** Lengths right at and past the documented limits. */
export const LIMIT_STRINGS = [
  'k'.repeat(2048), // key: the most bytes
  'k'.repeat(2049),
  'é'.repeat(1024), // 2048 bytes
  'é'.repeat(1025), // 2050 bytes
  '💩'.repeat(513), // 2052 bytes, 1026 characters
  's'.repeat(256), // scope: the most bytes
  's'.repeat(257),
  'é'.repeat(129),
  't'.repeat(128), // type: the most characters
  't'.repeat(129),
  'r'.repeat(2000), // reason: the most characters
  'r'.repeat(2001),
  '/'.concat('a'.repeat(2047)), // alternative: the most characters
  '/'.concat('a'.repeat(2048)),
  'x'.repeat(10_000),
];

export const hostileString: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...HOSTILE_STRINGS) },
  { weight: 3, arbitrary: fc.string({ unit: 'grapheme', maxLength: 24 }) },
  { weight: 3, arbitrary: fc.string({ unit: 'binary', maxLength: 24 }) },
  { weight: 2, arbitrary: fc.string({ maxLength: 24 }) },
  { weight: 1, arbitrary: fc.constantFrom(...LIMIT_STRINGS) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.constantFrom(...HOSTILE_STRINGS), fc.string({ unit: 'binary', maxLength: 8 }), fc.constantFrom(...HOSTILE_STRINGS))
      .map(([a, b, c]) => a + b + c),
  },
);

/** Small key spaces make collisions, chains and cycles likely. */
export const smallKey = fc.constantFrom('a', 'b', 'c', 'd', 'e');

// ---------------------------------------------------------------------------------------------
// Numbers and dates, as text

export const NUMERIC_TEXTS = [
  '0',
  '-0',
  '1',
  '-1',
  '1.5',
  '0.0000001',
  '1e3',
  '1e400',
  '-1e400',
  '1e-400',
  'NaN',
  'Infinity',
  '-Infinity',
  '9007199254740991',
  '9007199254740993',
  '9223372036854775807',
  '9223372036854775808',
  '-9223372036854775808',
  '18446744073709551616',
  '99999999999999999999999999999999',
  '0x10',
  '0b101',
  '0o17',
  ' 1',
  '1 ',
  '+1',
  '00001',
  '١٢٣',
  '1_000',
  '1,5',
  '.5',
  '5.',
  '',
  'abc',
  '1abc',
  'true',
  'null',
  '[]',
];

export const numericText: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...NUMERIC_TEXTS),
  fc.integer().map(String),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map(String),
  fc.double().map(String),
  fc.integer({ min: 1, max: 400 }).map(String),
);

export const DATE_TEXTS = [
  '2026-01-01T00:00:00Z',
  '2026-01-01T00:00:00.000Z',
  '2000-01-01T00:00:00+01:00',
  '2020-02-29T12:00:00Z',
  '2021-02-29T12:00:00Z',
  '2020-02-30T00:00:00Z',
  '2020-13-01T00:00:00Z',
  '2020-01-01T24:00:00Z',
  '2020-01-01T25:00:00Z',
  '2020-01-01T00:60:00Z',
  '2020-01-01T00:00:60Z',
  '2020-01-01T00:00:00+99:99',
  '2020-01-01T00:00:00.123456789Z',
  '0000-01-01T00:00:00Z',
  '0001-01-01T00:00:00Z',
  '9999-12-31T23:59:59.999Z',
  '10000-01-01T00:00:00Z',
  '+275760-09-13T00:00:00Z',
  '+275760-09-13T00:00:00.001Z',
  '-271821-04-20T00:00:00Z',
  '-000001-01-01T00:00:00Z',
  '2020',
  '2020-01',
  '2020-01-01',
  '20200101T000000Z',
  '2020-W01-1',
  '2020-001',
  '0099001',
  '2020-01-01T00:00:00',
  '2020-01-01 00:00:00Z',
  'tomorrow',
  'now',
  'Infinity',
  '1e10',
  '1700000000000',
  '',
];

export const dateText: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...DATE_TEXTS) },
  { weight: 2, arbitrary: fc.date({ noInvalidDate: true }).map((d) => d.toISOString()) },
  { weight: 1, arbitrary: fc.date({ noInvalidDate: true, min: new Date('1900-01-01'), max: new Date('2100-01-01') }).map((d) => d.toISOString()) },
  { weight: 1, arbitrary: hostileString },
);

/** Cursors: base64url of ids past every bound, of garbage, and garbage that is not base64url. */
export const cursorText: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...NUMERIC_TEXTS, 'hits|1|1', 'recent|2026-01-01T00:00:00.000000Z|1', 'recent|2026-02-30T00:00:00.000000Z|1', 'hits|9223372036854775808|1', 'hits|1|9223372036854775808', 'recent|x|1', 'hits|1|1|1', 'recent|0000-01-01T00:00:00.000000Z|1').map((t) =>
    Buffer.from(t, 'utf8').toString('base64url'),
  ),
  fc.tuple(fc.constantFrom('hits', 'recent', 'x'), numericText, numericText).map(([a, b, c]) => Buffer.from(`${a}|${b}|${c}`).toString('base64url')),
  hostileString.map((t) => Buffer.from(t, 'utf8').toString('base64url')),
  hostileString,
  fc.constantFrom('***', '=', 'YWJj', 'A'.repeat(41), 'A'.repeat(121), '-', '_'),
);

// ---------------------------------------------------------------------------------------------
// JSON values and JSON texts

/** Values of every JSON type, with the strings and numbers above. */
export const hostileJsonValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: hostileString },
  { weight: 1, arbitrary: fc.constantFrom(null, true, false, 0, -0, -1, 1.5, 2 ** 53 + 2, 2 ** 63, -(2 ** 63), 1e308, Number.MIN_VALUE) },
  { weight: 1, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }) },
  { weight: 1, arbitrary: fc.integer() },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3, stringUnit: 'binary' }) },
  { weight: 1, arbitrary: fc.array(hostileString, { maxLength: 4 }) },
  { weight: 1, arbitrary: fc.dictionary(hostileString, hostileString, { maxKeys: 3 }) },
);

/**
 * A JSON text of an object, written entry by entry, so that it can hold what a JS object
 * cannot: duplicate keys, `__proto__` as an own key, numbers JSON.parse turns into Infinity or
 * rounds (1e400, 2^63), `-0`.
 */
export function objectText(entries: [string, string][]): string {
  return `{${entries.map(([k, v]) => `${jsonText(k)}:${v}`).join(',')}}`;
}

/** Value texts that JSON.stringify cannot produce. */
export const RAW_VALUE_TEXTS = [
  '1e400',
  '-1e400',
  '9223372036854775808',
  '-0',
  '0.1e-999',
  '123456789012345678901234567890',
  '"\\u0000"',
  '"\\ud800"',
  '"\\udfff\\ud800"',
  '{"__proto__":{"polluted":true}}',
  '{"constructor":{"prototype":{"polluted":true}}}',
  '{"a":1,"a":2}',
  '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]',
  '{"toString":1,"valueOf":2,"hasOwnProperty":3}',
];

export const valueText: fc.Arbitrary<string> = fc.oneof(
  { weight: 5, arbitrary: hostileJsonValue.map(jsonText) },
  { weight: 1, arbitrary: fc.constantFrom(...RAW_VALUE_TEXTS) },
  { weight: 1, arbitrary: fc.constantFrom(...NUMERIC_TEXTS.filter((t) => /^-?\d+(\.\d+)?(e-?\d+)?$/i.test(t))) },
);

/** `{"a":{"a":…1…}}`, `[[…]]`, or a mix, `depth` deep. */
export function nestedText(depth: number, shape: 'object' | 'array' | 'mixed'): string {
  if (shape === 'object') return '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
  if (shape === 'array') return '['.repeat(depth) + '1' + ']'.repeat(depth);
  let open = '';
  let close = '';
  for (let i = 0; i < depth; i++) {
    if (i % 2) {
      open += '[';
      close = ']' + close;
    } else {
      open += '{"k":';
      close = '}' + close;
    }
  }
  return open + '1' + close;
}

export const deepValueText: fc.Arbitrary<string> = fc
  .tuple(fc.constantFrom(31, 32, 33, 100, 1000, 5000, 15_000), fc.constantFrom('object' as const, 'array' as const, 'mixed' as const))
  .map(([depth, shape]) => nestedText(depth, shape));

/**
 * An object body for an endpoint whose fields are `fields` (name → arbitrary of value texts):
 * mostly valid-looking with some fields hostile, plus unknown and prototype keys, duplicates,
 * deep values and fc.anything().
 */
export function objectBody(fields: Record<string, fc.Arbitrary<string>>): fc.Arbitrary<string> {
  const names = Object.keys(fields);
  const entry = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...names).chain((name) => fields[name].map((v): [string, string] => [name, v])) },
    { weight: 2, arbitrary: fc.tuple(fc.constantFrom(...names), valueText) },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom('__proto__', 'constructor', 'prototype', 'colour', 'id', 'actor', 'hitCount', 'createdAt', ''), valueText) },
    { weight: 1, arbitrary: fc.tuple(hostileString, valueText) },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...names, 'metadata'), deepValueText) },
  );
  return fc.oneof(
    { weight: 8, arbitrary: fc.array(entry, { maxLength: 9 }).map(objectText) },
    { weight: 1, arbitrary: fc.anything({ maxDepth: 3, stringUnit: 'binary' }).map(jsonText) },
    { weight: 1, arbitrary: fc.json({ maxDepth: 3, stringUnit: 'binary' }) },
  );
}

/** Raw bodies that are not JSON, or barely: broken syntax, invalid UTF-8, NUL bytes, a BOM, deep nesting. */
export const rawJsonishBody: fc.Arbitrary<Buffer> = fc.oneof(
  fc.constantFrom(
    '',
    ' ',
    '{',
    '{"type":',
    '}',
    'null',
    '"tombstone"',
    '[]',
    '[{}]',
    '1',
    '-0',
    '1e400',
    'true',
    '{"a":1,}',
    "{'a':1}",
    '{"a":NaN}',
    '{"a":Infinity}',
    '{"a":undefined}',
    '/* */{}',
    '\uFEFF{}',
    '{"a":"\\uZZZZ"}',
    '{"a":"\u0000"}',
    '{"a"\u0000:1}',
  ).map((t) => Buffer.from(t, 'utf8')),
  fc.constantFrom(
    [0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d], // {"\xff\xfe":1}
    [0x7b, 0x22, 0x6b, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d], // {"k":"\xc3("}
    [0x7b, 0x22, 0x6b, 0x22, 0x3a, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x7d], // {"k":"<CESU surrogate>"}
    [0x7b, 0x22, 0x6b, 0x22, 0x3a, 0x22, 0xf4, 0x90, 0x80, 0x80, 0x22, 0x7d], // past U+10FFFF
    [0x7b, 0x22, 0x6b, 0x22, 0x3a, 0x22, 0xc0, 0xaf, 0x22, 0x7d], // overlong '/'
    [0x7b, 0x00, 0x7d], // {\0}
    [0xfe, 0xff, 0x00, 0x7b, 0x00, 0x7d], // UTF-16 BOM
    [0x00, 0x00, 0x00, 0x00],
  ).map((bytes) => Buffer.from(bytes)),
  deepValueText.map((t) => Buffer.from(t, 'utf8')),
  fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
  fc.string({ unit: 'binary', maxLength: 64 }).map(utf8Bytes),
);

// ---------------------------------------------------------------------------------------------
// Request pieces

/** Path segments as written on the wire: encoded hostile strings, percent garbage, raw bytes, long ones. */
export function pathSegment(known: readonly string[]): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...known).map(percentEncode) },
    { weight: 4, arbitrary: hostileString.map(percentEncode) },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        '%',
        '%%',
        '%FF',
        '%C0%AF',
        '%E0%A4%A',
        '%ED%A0%80',
        '%F4%90%80%80',
        '%00',
        'a%00b',
        '%2F%2Fevil.example',
        '%2f%2fevil.example',
        '%5C%5Cevil.example',
        '..',
        '.',
        '%2e%2e',
        '%0D%0ASet-Cookie:%20pwn=1',
        'https:evil.example',
        'x;y=z',
        "'%20OR%201=1--",
        'x'.repeat(10_000),
        '%C3%A9'.repeat(1_500),
        'k'.repeat(2048),
        'k'.repeat(2049),
      ),
    },
    // Raw latin1 bytes on the request line: invalid UTF-8 as a client can send it.
    { weight: 1, arbitrary: fc.string({ unit: fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 6 }) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 12 }).map((s) => s.replace(/[^\x21-\x7e]/g, (c) => percentEncode(c)).replace(/[/?#]/g, '_')) },
  );
}

/** A query string (with its '?'), or none. */
export const queryString: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constant('') },
  { weight: 1, arbitrary: fc.constantFrom('?', '?x=1', '?q=%0D%0A', '?a=1&a=2', '?__proto__[x]=1', '?%', '?%FF=%FE', '?x=\xff', '?a[b][c]=1', '?redirect=//evil.example', '?x=1#frag') },
  { weight: 2, arbitrary: fc.array(fc.tuple(hostileString, hostileString), { maxLength: 3 }).map((pairs) => `?${pairs.map(([k, v]) => `${percentEncode(k)}=${percentEncode(v)}`).join('&')}`) },
);

export const ACCEPT_VALUES = [
  'application/json',
  'application/problem+json',
  'application/problem+json, application/json;q=0.5',
  'application/json;q=0, application/problem+json',
  'application/problem+json;q=NaN',
  'application/problem+json;q=1e400',
  'application/*',
  '*/*',
  'text/html',
  'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8',
  'text/html;q=0.5, application/json',
  'text/csv',
  'image/webp,*/*;q=0.8',
  '',
  ',,,',
  ';;;q=',
  'application/problem+json;' + 'a=b;'.repeat(500),
  'x/'.repeat(1000),
];

export const acceptHeader: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...ACCEPT_VALUES) },
  { weight: 1, arbitrary: hostileString.map(headerValue) },
);

export const CONTENT_TYPES = [
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset=latin1',
  'application/json; charset=utf-16',
  'APPLICATION/JSON',
  'application/vnd.api+json',
  'application/problem+json',
  'application/json, text/csv',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'multipart/form-data',
  'text/plain',
  'text/csv',
  'text/csv; charset=utf-8',
  'application/x-ndjson',
  'application/xml',
  'application/octet-stream',
  '*/*',
  '',
  ';',
  'application/json;' + 'x=y;'.repeat(200),
];

/** Header values of every kind a client can send (raw bytes included), and long ones. */
export const hostileHeaderValue: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: hostileString.map(headerValue) },
  { weight: 1, arbitrary: fc.constantFrom('acme', 'tenant-ü', '', ' ', 'a'.repeat(256), 'a'.repeat(257), 'x'.repeat(4000)) },
  { weight: 1, arbitrary: fc.string({ unit: fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)), maxLength: 8 }) },
);

/** Request ids: sane ones (echoed), and everything else (replaced by a UUID). */
export const requestIdHeader: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('req-1', 'a.b:c@d+e=f/g-h', 'A'.repeat(128), 'A'.repeat(129), '-leading', '', 'a b', 'x\xff'),
  fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,20}$/),
  hostileHeaderValue,
);

export const refererHeader: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('https://news.example.com/2026/11/launch', 'https://x.example/' + 'p'.repeat(600), 'javascript:alert(1)', ''),
  hostileHeaderValue,
);

// ---------------------------------------------------------------------------------------------
// Import bodies

export const CSV_COLUMNS = ['scope', 'type', 'key', 'kind', 'target', 'permanent', 'reason', 'alternative', 'expiresAt'];
const EXPORT_ONLY_COLUMNS = ['id', 'actor', 'occurredAt', 'hitCount', 'lastHitAt', 'createdAt', 'updatedAt'];

/** One CSV cell: quoted when needed, or deliberately broken. */
function csvCell(value: string, raw: boolean): string {
  if (raw) return value;
  return /[",\r\n]/.test(value) || value !== value.trim() ? `"${value.replace(/"/g, '""')}"` : value;
}

const importCell = (column: string): fc.Arbitrary<string> => {
  switch (column) {
    case 'kind':
      return fc.oneof({ weight: 4, arbitrary: fc.constantFrom('deleted', 'hidden', 'moved', 'merged') }, { weight: 1, arbitrary: hostileString });
    case 'type':
      return fc.oneof({ weight: 4, arbitrary: fc.constantFrom('article', 'item', 'imp-a', 'imp-b') }, { weight: 1, arbitrary: hostileString });
    case 'key':
    case 'target':
      return fc.oneof({ weight: 3, arbitrary: smallKey }, { weight: 2, arbitrary: hostileString }, { weight: 1, arbitrary: fc.constant('') });
    case 'scope':
      return fc.oneof({ weight: 4, arbitrary: fc.constantFrom('', 'acme') }, { weight: 1, arbitrary: hostileString });
    case 'permanent':
      return fc.oneof(fc.constantFrom('true', 'false', '', 'TRUE', '1', 'yes'), hostileString);
    case 'alternative':
      return fc.oneof(fc.constantFrom('', '/articles/current', 'https://shop.example.com/x', 'https://evil.example/x', '//evil.example'), hostileString);
    case 'expiresAt':
      return fc.oneof(fc.constant(''), dateText);
    default:
      return fc.oneof(fc.constant(''), hostileString);
  }
};

const csvHeader: fc.Arbitrary<string[]> = fc.oneof(
  { weight: 6, arbitrary: fc.constant(CSV_COLUMNS) },
  { weight: 2, arbitrary: fc.shuffledSubarray([...CSV_COLUMNS, ...EXPORT_ONLY_COLUMNS], { minLength: 1 }) },
  { weight: 1, arbitrary: fc.array(fc.oneof(fc.constantFrom(...CSV_COLUMNS, '__proto__', 'constructor', 'colour', ''), hostileString), { minLength: 1, maxLength: 6 }) },
  { weight: 1, arbitrary: fc.constant<string[]>([...CSV_COLUMNS, 'key', 'type']) },
);

/** CSV bodies: headers known, unknown, repeated or missing; cells hostile; records ragged, huge or broken. */
export const csvBody: fc.Arbitrary<Buffer> = fc
  .record({
    header: csvHeader,
    rows: fc.integer({ min: 0, max: 6 }),
    bom: fc.boolean(),
    crlf: fc.boolean(),
    extra: fc.oneof(
      { weight: 8, arbitrary: fc.constant('') },
      { weight: 1, arbitrary: fc.constantFrom('"unterminated', 'a,"b"c', '"a""', ',,,,,,,,,,,,,,,,,,,,,,,,', '\u0000,\u0000', '\n\n\n') },
      { weight: 1, arbitrary: fc.constantFrom(70_000, 140_000).map((n) => `,article,${'k'.repeat(n)},deleted,,,,,`) },
    ),
  })
  .chain(({ header, rows, bom, crlf, extra }) =>
    fc
      .array(
        fc.tuple(...header.map((c) => fc.tuple(importCell(c), fc.oneof({ weight: 19, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) })))) as fc.Arbitrary<[string, boolean][]>,
        { minLength: rows, maxLength: rows },
      )
      .map((records) => {
        const eol = crlf ? '\r\n' : '\n';
        const lines = [header.map((c) => csvCell(c, false)).join(','), ...records.map((r) => r.map(([v, raw]) => csvCell(v, raw)).join(','))];
        if (extra) lines.push(extra);
        return Buffer.concat([bom ? Buffer.from([0xef, 0xbb, 0xbf]) : Buffer.alloc(0), utf8Bytes(lines.join(eol) + eol)]);
      }),
  );

/** An import row as an object text (NDJSON line or JSON array element). */
export const importRowText: fc.Arbitrary<string> = objectBody(Object.fromEntries(CSV_COLUMNS.map((c) => [c, importCell(c).map(jsonText)])));

/** NDJSON bodies: lines of rows, and lines that are not rows: broken JSON, arrays, huge lines, invalid UTF-8. */
export const ndjsonBody: fc.Arbitrary<Buffer> = fc
  .tuple(
    fc.array(
      fc.oneof(
        { weight: 8, arbitrary: importRowText.map((t) => utf8Bytes(t)) },
        { weight: 1, arbitrary: fc.constantFrom('', '   ', '{', '[]', 'null', '1', '"x"', '{"type":"a","type":"b"}', '\uFEFF{}').map((t) => Buffer.from(t)) },
        { weight: 1, arbitrary: rawJsonishBody },
        { weight: 1, arbitrary: fc.constantFrom(70_000, 200_000).map((n) => Buffer.from(`{"type":"article","key":"${'k'.repeat(n)}","kind":"deleted"}`)) },
      ),
      { maxLength: 6 },
    ),
    fc.boolean(),
    fc.constantFrom('\n', '\r\n', '\r'),
  )
  .map(([lines, bom, eol]) =>
    Buffer.concat([bom ? Buffer.from([0xef, 0xbb, 0xbf]) : Buffer.alloc(0), ...lines.flatMap((l) => [l, Buffer.from(eol)])]),
  );

/** JSON array bodies: rows, non-rows, and whatever fc.anything() makes. */
export const jsonArrayBody: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 4, arbitrary: fc.array(fc.oneof({ weight: 6, arbitrary: importRowText }, { weight: 1, arbitrary: valueText }), { maxLength: 6 }).map((rows) => Buffer.from(`[${rows.join(',')}]`)) },
  { weight: 1, arbitrary: fc.anything({ maxDepth: 3, stringUnit: 'binary' }).map((v) => utf8Bytes(jsonText(v))) },
  { weight: 1, arbitrary: rawJsonishBody },
);
