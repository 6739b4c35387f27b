import { LIMITS } from './tombstone.constants.js';
import {
  assertDate,
  assertKey,
  assertMetadata,
  assertScope,
  assertText,
  assertType,
  isStorableKey,
  isStorableScope,
  isValidType,
} from './tombstone.validation.js';
import { validationErrorOf } from '../test/support/errors.js';


describe('isStorableKey', () => {
  it('accepts ordinary keys, including numeric-looking strings', () => {
    expect(isStorableKey('hello-world')).toBe(true);
    expect(isStorableKey('42')).toBe(true);
    expect(isStorableKey('a')).toBe(true);
    expect(isStorableKey(' spaced key ')).toBe(true);
  });

  it('accepts non-ASCII keys and well-formed surrogate pairs', () => {
    expect(isStorableKey('ünïcödé')).toBe(true);
    expect(isStorableKey('日本語のスラッグ')).toBe(true);
    expect(isStorableKey('emoji-😀')).toBe(true);
    expect(isStorableKey('／evil')).toBe(true);
  });

  it('rejects the empty string', () => {
    expect(isStorableKey('')).toBe(false);
  });

  it('rejects non-strings', () => {
    expect(isStorableKey(42)).toBe(false);
    expect(isStorableKey(undefined)).toBe(false);
    expect(isStorableKey(null)).toBe(false);
    expect(isStorableKey(['a'])).toBe(false);
    expect(isStorableKey({ toString: () => 'a' })).toBe(false);
  });

  it('rejects a NUL character anywhere', () => {
    expect(isStorableKey('\u0000')).toBe(false);
    expect(isStorableKey('a\u0000')).toBe(false);
    expect(isStorableKey('\u0000a')).toBe(false);
    expect(isStorableKey('a\u0000b')).toBe(false);
  });

  it('accepts other control characters (they are data, not a storage problem)', () => {
    expect(isStorableKey('a\r\nb')).toBe(true);
    expect(isStorableKey('\t')).toBe(true);
  });

  it(`accepts exactly ${LIMITS.keyBytes} ASCII bytes and rejects one more`, () => {
    expect(LIMITS.keyBytes).toBe(2048);
    expect(isStorableKey('a'.repeat(2048))).toBe(true);
    expect(isStorableKey('a'.repeat(2049))).toBe(false);
  });

  it('counts UTF-8 bytes, not characters, right at the boundary', () => {
    // 'é' is 2 bytes, '€' is 3 bytes, '😀' is 4 bytes (2 UTF-16 code units).
    expect(isStorableKey(`${'a'.repeat(2046)}é`)).toBe(true); // 2048 bytes
    expect(isStorableKey(`${'a'.repeat(2047)}é`)).toBe(false); // 2049 bytes, 2048 chars
    expect(isStorableKey(`${'a'.repeat(2045)}€`)).toBe(true); // 2048 bytes
    expect(isStorableKey(`${'a'.repeat(2046)}€`)).toBe(false); // 2049 bytes, 2047 chars
    expect(isStorableKey(`${'a'.repeat(2044)}😀`)).toBe(true); // 2048 bytes
    expect(isStorableKey(`${'a'.repeat(2045)}😀`)).toBe(false); // 2049 bytes
    expect(isStorableKey('é'.repeat(1024))).toBe(true); // 2048 bytes, 1024 chars
    expect(isStorableKey('é'.repeat(1025))).toBe(false); // 2050 bytes, 1025 chars
    expect(isStorableKey('€'.repeat(683))).toBe(false); // 2049 bytes, only 683 chars
    expect(isStorableKey('€'.repeat(682))).toBe(true); // 2046 bytes
  });

  it('rejects lone surrogates, wherever they are', () => {
    expect(isStorableKey('\ud800')).toBe(false); // lone high
    expect(isStorableKey('\udc00')).toBe(false); // lone low
    expect(isStorableKey('a\ud83d')).toBe(false); // high at the end
    expect(isStorableKey('\ude00a')).toBe(false); // low at the start
    expect(isStorableKey('a\ud83db')).toBe(false); // high followed by a non-surrogate
    expect(isStorableKey('\ude00\ud83d')).toBe(false); // reversed pair
    expect(isStorableKey('😀\ude00')).toBe(false); // a pair followed by a stray low
    expect(isStorableKey('\ud83d\ude00')).toBe(true); // the well-formed pair itself
  });
});

describe('isStorableScope', () => {
  it("accepts the unscoped '' and ordinary scopes", () => {
    expect(isStorableScope('')).toBe(true);
    expect(isStorableScope('tenant-1')).toBe(true);
    expect(isStorableScope('Zürich')).toBe(true);
  });

  it('rejects non-strings', () => {
    expect(isStorableScope(undefined)).toBe(false);
    expect(isStorableScope(null)).toBe(false);
    expect(isStorableScope(7)).toBe(false);
  });

  it('rejects NUL and lone surrogates', () => {
    expect(isStorableScope('t\u0000')).toBe(false);
    expect(isStorableScope('t\ud800')).toBe(false);
    expect(isStorableScope('\udfff')).toBe(false);
  });

  it(`allows at most ${LIMITS.scopeBytes} UTF-8 bytes`, () => {
    expect(LIMITS.scopeBytes).toBe(256);
    expect(isStorableScope('s'.repeat(256))).toBe(true);
    expect(isStorableScope('s'.repeat(257))).toBe(false);
    expect(isStorableScope('é'.repeat(128))).toBe(true); // 256 bytes
    expect(isStorableScope(`${'s'.repeat(255)}é`)).toBe(false); // 257 bytes, 256 chars
  });
});

describe('isValidType / assertType', () => {
  it.each(['article', 'Article', 'a', '9lives', 'blog.post', 'shop:product', 'user_profile', 'a-b', 'x.y:z_w-1'])(
    'accepts %j',
    (type) => {
      expect(isValidType(type)).toBe(true);
      expect(assertType(type)).toBe(type);
    },
  );

  it.each(['', '-article', '_article', '.article', ':article', 'art icle', 'art/icle', 'artícle', 'a\u0000', 'a\n', 'a*'])(
    'rejects %j',
    (type) => {
      expect(isValidType(type)).toBe(false);
    },
  );

  it('rejects non-strings', () => {
    expect(isValidType(undefined)).toBe(false);
    expect(isValidType(1)).toBe(false);
    expect(isValidType(null)).toBe(false);
  });

  it(`allows at most ${LIMITS.typeLength} characters`, () => {
    expect(isValidType('a'.repeat(128))).toBe(true);
    expect(isValidType('a'.repeat(129))).toBe(false);
  });

  it("throws a TombstoneValidationError on 'type' with potential solutions", () => {
    const error = validationErrorOf(() => assertType('bad type'));
    expect(error.field).toBe('type');
    expect(error.name).toBe('TombstoneValidationError');
    expect(error.message).toContain('Invalid resource type "bad type".');
    expect(error.message).toContain('\n\nPotential solutions:\n- ');
    expect(error.message).toContain("e.g. 'article'");
  });
});

describe('assertKey', () => {
  it('returns a storable key unchanged', () => {
    expect(assertKey('ünïcödé')).toBe('ünïcödé');
  });

  it.each([[''], ['a\u0000'], ['a'.repeat(2049)], ['\ud800'], [42], [undefined]])(
    'rejects %j with field key and potential solutions',
    (key) => {
      const error = validationErrorOf(() => assertKey(key));
      expect(error.field).toBe('key');
      expect(error.message).toContain('Invalid key');
      expect(error.message).toContain('2048 UTF-8 bytes');
      expect(error.message).toContain('Potential solutions');
      expect(error.message).toContain('String(id)');
    },
  );

  it('names the field it is given', () => {
    const error = validationErrorOf(() => assertKey('', 'target'));
    expect(error.field).toBe('target');
    expect(error.message).toContain('Invalid target');
  });
});

describe('assertScope', () => {
  it("returns a storable scope unchanged, including ''", () => {
    expect(assertScope('')).toBe('');
    expect(assertScope('tenant-1')).toBe('tenant-1');
  });

  it('rejects an unstorable scope with field scope and no solutions section', () => {
    const error = validationErrorOf(() => assertScope('x'.repeat(257)));
    expect(error.field).toBe('scope');
    expect(error.message).toContain('256 UTF-8 bytes');
    expect(error.message).not.toContain('Potential solutions');
    expect(validationErrorOf(() => assertScope(undefined)).field).toBe('scope');
  });
});

describe('assertText', () => {
  it('maps undefined and null to null', () => {
    expect(assertText(undefined, 'reason', 10)).toBeNull();
    expect(assertText(null, 'reason', 10)).toBeNull();
  });

  it('returns a valid string unchanged, up to the limit inclusive', () => {
    expect(assertText('', 'reason', 10)).toBe('');
    expect(assertText('0123456789', 'reason', 10)).toBe('0123456789');
    expect(assertText('line\nbreak', 'reason', 10)).toBe('line\nbreak');
  });

  it.each([['01234567890'], ['a\u0000'], ['a\ud800'], [5], [{}], [['a']]])('rejects %j', (value) => {
    const error = validationErrorOf(() => assertText(value, 'reason', 10));
    expect(error.field).toBe('reason');
    expect(error.message).toBe('Invalid reason: it must be a string of at most 10 characters, without NUL characters.');
  });

  it('reports the field it is given', () => {
    expect(validationErrorOf(() => assertText(1, 'actor', LIMITS.actorLength)).field).toBe('actor');
  });
});

describe('assertMetadata', () => {
  it('maps undefined and null to an empty object', () => {
    expect(assertMetadata(undefined)).toEqual({});
    expect(assertMetadata(null)).toEqual({});
  });

  it('returns a JSON object as is (same reference)', () => {
    const value = { by: 'admin', tags: ['a', 'b'], nested: { n: 1 } };
    expect(assertMetadata(value)).toBe(value);
  });

  it.each([['a string'], [42], [true], [[1, 2]], [[]]])('rejects the non-object %j', (value) => {
    const error = validationErrorOf(() => assertMetadata(value));
    expect(error.field).toBe('metadata');
    expect(error.message).toBe('Invalid metadata: it must be a plain JSON object.');
  });

  it('rejects an object that cannot be serialised (cycle, BigInt)', () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    const cycleError = validationErrorOf(() => assertMetadata(cyclic));
    expect(cycleError.field).toBe('metadata');
    expect(cycleError.message).toBe('Invalid metadata: it cannot be serialised to JSON.');
    expect(validationErrorOf(() => assertMetadata({ big: BigInt(1) })).message).toBe(
      'Invalid metadata: it cannot be serialised to JSON.',
    );
  });
});

describe('assertDate', () => {
  it('maps undefined and null to null', () => {
    expect(assertDate(undefined, 'occurredAt')).toBeNull();
    expect(assertDate(null, 'occurredAt')).toBeNull();
  });

  it('returns a valid Date as is', () => {
    const date = new Date('2024-05-01T12:00:00.000Z');
    expect(assertDate(date, 'occurredAt')).toBe(date);
  });

  it.each([[new Date('not a date')], ['2024-05-01'], [1714564800000], [{}]])('rejects %p', (value) => {
    const error = validationErrorOf(() => assertDate(value, 'expiresAt'));
    expect(error.field).toBe('expiresAt');
    expect(error.message).toBe('Invalid expiresAt: it must be a valid Date.');
    expect(error.message).not.toContain('Potential solutions');
  });
});
