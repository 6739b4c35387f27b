import { Inject, Injectable } from '@nestjs/common';
import { LIMITS, TOMBSTONE_OPTIONS } from './tombstone.constants.js';
import { preview, TombstoneValidationError } from './tombstone.exceptions.js';
import type { ResolvedTombstoneOptions } from './tombstone.options.js';
import { isStorableKey } from './tombstone.validation.js';

/** A key's normal form, as the option `normalizeKeys` gives it for one type. */
export type KeyNormalizer = (key: string) => string;

/**
 * The built-in normal forms. `lower` is `toLowerCase()`, which does not depend on the locale (a
 * key's normal form must be the same on every instance); `nfc` is Unicode NFC, the composed
 * form most keyboards produce, so that `é` typed as `e` + U+0301 finds the tombstone of `é`.
 * Each is one native call: the miss path pays nothing more.
 */
export const KEY_NORMALIZERS: Readonly<Record<'lower' | 'nfc', KeyNormalizer>> = {
  lower: (key) => key.toLowerCase(),
  nfc: (key) => key.normalize('NFC'),
};

/**
 * Where the keys of a type are put in their normal form (option `normalizeKeys`). Writes fail
 * loudly: a key whose normal form cannot be had or stored is a `TombstoneValidationError`, and so
 * is a redirect's target that is not in normal form. Lookups take `of()`'s function and fail open
 * (the caller answers the plain 404). Internal.
 */
@Injectable()
export class TombstoneKeys {
  private readonly normalizers: ReadonlyMap<string, KeyNormalizer>;

  constructor(@Inject(TOMBSTONE_OPTIONS) options: Pick<ResolvedTombstoneOptions, 'normalizeKeys'>) {
    this.normalizers = options.normalizeKeys;
  }

  /** The normaliser of `type`; `undefined` when its keys are compared as they are. */
  of(type: string): KeyNormalizer | undefined {
    return this.normalizers.size === 0 ? undefined : this.normalizers.get(type);
  }

  /**
   * The normal form of a key to write (or find), checked: what the normaliser gives must be a
   * key the table can store, and its own normal form (otherwise a stored key would not find
   * itself again through the misses log or an export). `key` is a storable key already.
   */
  key(type: string, key: string, field = 'key'): string {
    const normalize = this.of(type);
    if (normalize === undefined) return key;
    let normal: string;
    try {
      normal = normalize(key);
      if (typeof normal === 'string' && isStorableKey(normal) && normalize(normal) !== normal) {
        throw new Error(`it is not idempotent: the normal form "${preview(normal)}" normalises to something else again`);
      }
    } catch (error) {
      throw failure(type, field, key, error);
    }
    if (!isStorableKey(normal)) {
      throw new TombstoneValidationError(
        field,
        `Invalid ${field} "${preview(key)}": its normal form for type '${type}' (normalizeKeys) is ${typeof normal === 'string' ? `"${preview(normal)}", which is not` : `${describe(normal)}, not`} a key of 1 to ${LIMITS.keyBytes} UTF-8 bytes without NUL characters.`,
        ['Check the key, or make the normaliser return a non-empty string.'],
      );
    }
    return normal;
  }

  /**
   * The normal form of a key to look up through the recording API (`resolve()`): one that
   * cannot be stored answers `none` there, without a query; a normaliser that fails is a
   * `TombstoneValidationError`. The miss path calls `lookupKey()` itself, and fails open.
   */
  lookup(type: string, key: string): string {
    const normalize = this.of(type);
    if (normalize === undefined || typeof key !== 'string') return key;
    try {
      return lookupKey(normalize, key);
    } catch (error) {
      throw failure(type, 'key', key, error);
    }
  }

  /**
   * A key prefix that filters a list of keys of `type` (the admin's `keyPrefix`), in the form the
   * keys are stored in. Built-in normal forms keep prefixes almost always: the lower case of a
   * prefix is a prefix of the lower case but where the prefix's last letter changes with what
   * follows (a Greek `Σ` ends a word as `ς`: `ΟΔΟΣ` lowers to `οδος`, `ΟΔΟΣX` to `οδοσx`), and NFC
   * may compose a prefix's last character with the next one. A function may not keep them at
   * all; one that fails leaves the prefix as given.
   */
  prefix(type: string | undefined, prefix: string): string {
    const normalize = type === undefined ? undefined : this.of(type);
    if (normalize === undefined) return prefix;
    try {
      return lookupKey(normalize, prefix);
    } catch {
      return prefix;
    }
  }

  /**
   * Checks a redirect's target: it is a key as the application spells it, stored and sent as it
   * is, so it must already be in the normal form of its type. Otherwise the redirect could not
   * be followed through the table (chains collapse and tombstones of the target match by their
   * stored key), and a masked target could be told apart.
   */
  target(type: string, target: string, field = 'target'): string {
    const normal = this.key(type, target, field);
    if (normal !== target) {
      throw new TombstoneValidationError(
        field,
        `Invalid ${field} "${preview(target)}": the keys of type '${type}' are normalised (normalizeKeys), and a redirect's target must be in normal form: "${preview(normal)}".`,
        [`Pass "${preview(normal)}" if that is how your application spells the live key.`, 'Keep the keys of normalised types in normal form where they live (e.g. lower-case slugs).'],
      );
    }
    return target;
  }
}

/** The normal form of a key at lookup: a normaliser that does not answer a string is an error (the lookup fails open). */
export function lookupKey(normalize: KeyNormalizer, key: string): string {
  const normal = normalize(key);
  if (typeof normal !== 'string') throw new TypeError(`the normalizeKeys normaliser returned ${describe(normal)}, not a string`);
  return normal;
}

function failure(type: string, field: string, key: string, error: unknown): TombstoneValidationError {
  return new TombstoneValidationError(
    field,
    `The normalizeKeys normaliser of type '${type}' failed on the ${field} "${preview(key)}": ${(error as Error)?.message ?? String(error)}`,
    ['Make the normaliser a function that returns a string for every key, and the same string for a key already in normal form.'],
  );
}

/** What a normaliser returned instead of a string, for a message: `null`, `undefined`, `a number`, `an object`. */
export function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  const type = typeof value;
  return `${/^[aeiou]/.test(type) ? 'an' : 'a'} ${type}`;
}
