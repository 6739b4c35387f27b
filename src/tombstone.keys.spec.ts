import { TombstoneValidationError } from './tombstone.exceptions.js';
import { lookupKey, TombstoneKeys } from './tombstone.keys.js';
import type { TombstoneModuleOptions } from './tombstone.options.js';
import { resolveTombstoneOptions } from './tombstone.options-resolve.js';

function keysFor(normalizeKeys: TombstoneModuleOptions['normalizeKeys']): TombstoneKeys {
  return new TombstoneKeys(resolveTombstoneOptions({ normalizeKeys }));
}

/** The TombstoneValidationError `check` throws. */
function refusal(check: () => unknown): TombstoneValidationError {
  try {
    check();
  } catch (error) {
    expect(error).toBeInstanceOf(TombstoneValidationError);
    return error as TombstoneValidationError;
  }
  throw new Error('expected a TombstoneValidationError');
}

describe('TombstoneKeys', () => {
  const keys = keysFor({
    article: 'lower',
    word: ['lower', 'nfc'],
    broken: () => {
      throw new Error('boom');
    },
    odd: (() => undefined) as never,
    suffix: (key) => `${key}!`,
    slug: (key) => key.replace(/-+$/, ''),
    long: (key) => key.repeat(3),
    // NFC before lower case is refused as an option; as a function of its own it shows why.
    greek: (key) => key.normalize('NFC').toLowerCase(),
  });

  it('has no normaliser for a type without the option, nor for any type without the option at all', () => {
    expect(keys.of('page')).toBeUndefined();
    expect(keysFor(undefined).of('article')).toBeUndefined();
    expect(keys.key('page', 'Mixed')).toBe('Mixed');
    expect(keys.target('page', 'Mixed')).toBe('Mixed');
    expect(keys.lookup('page', 'Mixed')).toBe('Mixed');
    expect(keys.prefix('page', 'Mi')).toBe('Mi');
  });

  it('gives the normal form of a key to write, look up, or filter by', () => {
    expect(keys.key('article', 'OLD-Hello')).toBe('old-hello');
    expect(keys.key('word', 'CAFE\u0301')).toBe('caf\u00e9');
    expect(keys.lookup('article', 'OLD-Hello')).toBe('old-hello');
    expect(keys.prefix('article', 'OLD-')).toBe('old-');
    // Without a type, a prefix is taken as it is.
    expect(keys.prefix(undefined, 'OLD-')).toBe('OLD-');
  });

  it('accepts a target in normal form and refuses one that is not, naming its normal form', () => {
    expect(keys.target('article', 'hello-world')).toBe('hello-world');
    const error = refusal(() => keys.target('article', 'Hello-World', 'to'));
    expect(error.field).toBe('to');
    expect(error.message).toMatch(/^Invalid to "Hello-World": the keys of type 'article' are normalised \(normalizeKeys\), and a redirect's target must be in normal form: "hello-world"\./);
    expect(error.message).toContain('Potential solutions');
  });

  it('refuses, at a write, a normaliser that throws or answers no string, naming the field', () => {
    const thrown = refusal(() => keys.key('broken', 'x', 'from'));
    expect(thrown.field).toBe('from');
    expect(thrown.message).toMatch(/^The normalizeKeys normaliser of type 'broken' failed on the from "x": boom/);
    expect(refusal(() => keys.key('odd', 'x')).message).toMatch(/function of type 'odd' returned undefined, not a string/);
    expect(refusal(() => keys.lookup('broken', 'x')).field).toBe('key');
  });

  it('refuses a normaliser that is not idempotent, and one whose normal form cannot be stored', () => {
    expect(refusal(() => keys.key('suffix', 'x')).message).toMatch(/not idempotent/);
    expect(refusal(() => keys.key('greek', '\u03aa\u0301')).message).toMatch(/not idempotent/);
    expect(refusal(() => keys.key('slug', '---')).message).toMatch(/its normal form for type 'slug' \(normalizeKeys\) is "", which is not a key of 1 to 2048 UTF-8 bytes/);
    expect(refusal(() => keys.key('long', 'x'.repeat(1000))).message).toMatch(/which is not a key of 1 to 2048 UTF-8 bytes/);
  });

  it('at a lookup, gives the normal form as it is (empty too), and throws for an answer that is not a string', () => {
    expect(lookupKey((key) => key.replace(/-+$/, ''), '---')).toBe('');
    expect(() => lookupKey((() => 42) as never, 'x')).toThrow('the normalizeKeys normaliser returned a number, not a string');
    expect(() => lookupKey((() => null) as never, 'x')).toThrow('returned null, not a string');
    expect(() => lookupKey((() => ({})) as never, 'x')).toThrow('returned an object, not a string');
  });

  it('leaves a prefix as it is when the normaliser fails on it', () => {
    expect(keys.prefix('broken', 'X')).toBe('X');
  });
});
