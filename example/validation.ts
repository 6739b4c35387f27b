import { type ArgumentMetadata, BadRequestException, ParseIntPipe, type PipeTransform, ValidationPipe } from '@nestjs/common';

/** The longest slug, in characters: far below the 2048 bytes a tombstone key may hold. */
export const SLUG_MAX_LENGTH = 200;

/** A slug, as messages say it. */
export const SLUG_RULE = `1 to ${SLUG_MAX_LENGTH} letters, digits, ".", "_", "~" or "-"`;

/**
 * A slug: letters, digits, `.`, `_`, `~` and `-` (what a path segment carries unencoded, plus
 * letters of any script), 1 to 200 of them. No spaces, no control characters (NUL among them,
 * which PostgreSQL's `text` refuses), and never `.` or `..`, which clients resolve as a path.
 */
export const SLUG = new RegExp(`^(?!\\.{1,2}$)[\\p{L}\\p{N}._~-]{1,${SLUG_MAX_LENGTH}}$`, 'u');

/**
 * The normal form of article slugs, as `normalizeKeys: { article: ['lower', 'nfc'] }` makes it:
 * tombstones of articles are found whatever the case (or Unicode form) of a link, as long as
 * the slugs they are written with are in this form. The capture triggers record the column as it
 * is, so a slug is in this form before it is stored (see `ArticleChanges`).
 */
export function normalSlug(slug: string): string {
  return slug.toLowerCase().normalize('NFC');
}

/** Text for people (a title): no control characters (NUL, line breaks), no lone surrogates. */
export const PLAIN_TEXT = /^[^\p{Cc}\p{Cs}]*$/u;

/** A malformed slug is the client's mistake: 400, before any query. */
export class SlugPipe implements PipeTransform<string, string> {
  transform(value: string): string {
    if (!SLUG.test(value)) throw new BadRequestException('Malformed slug');
    return value;
  }
}

const INT4_MIN = -2_147_483_648;
const INT4_MAX = 2_147_483_647;

/**
 * `ParseIntPipe` for a PostgreSQL `integer` (int4) column: a value the column cannot hold names no
 * row, and sent to PostgreSQL it fails the query ("out of range for type integer"), a 500. Only
 * the canonical form is accepted (no `+`, leading zeros or `-0`), so that one resource has one
 * URL, and the key the tombstones are looked up by (the raw parameter) is the one recorded.
 */
export class ParseInt4Pipe extends ParseIntPipe {
  constructor() {
    super({ exceptionFactory: () => new BadRequestException(`Validation failed (an integer from ${INT4_MIN} to ${INT4_MAX} is expected)`) });
  }

  protected override isNumeric(value: unknown): boolean {
    if (typeof value !== 'string' || !/^(?:0|-?[1-9][0-9]{0,9})$/.test(value)) return false;
    const number = Number(value);
    return number >= INT4_MIN && number <= INT4_MAX;
  }
}

/** Names class-transformer drops without a word, where any other unknown field is a 400. */
const RESERVED = ['__proto__', 'constructor', 'prototype'];

/**
 * `ValidationPipe`, and a 400 for JSON nested too deeply: class-transformer recurses, so a body
 * nested thousands of levels deep (90 kB is enough) overflows the stack, a 500 otherwise. A body
 * field named `__proto__`, `constructor` or `prototype` is refused like any unknown field (the
 * transformer would drop it silently), as the module's admin endpoints refuse it.
 */
class DemoValidationPipe extends ValidationPipe {
  override async transform(value: unknown, metadata: ArgumentMetadata): Promise<unknown> {
    if (metadata.type === 'body' && typeof value === 'object' && value !== null) {
      const reserved = RESERVED.find((name) => Object.prototype.hasOwnProperty.call(value, name));
      if (reserved !== undefined) throw new BadRequestException([`property ${reserved} should not exist`]);
    }
    try {
      return await super.transform(value, metadata);
    } catch (error) {
      if (error instanceof RangeError) throw new BadRequestException(`The ${metadata.type} is nested too deeply`);
      throw error;
    }
  }
}

/**
 * Bodies and query objects are checked against their DTO class (class-validator): a field that
 * breaks a rule, or a body field the DTO does not declare, is a 400. Unknown query parameters
 * (a cache buster, `utm_*`) are dropped instead.
 */
export const validBody = new DemoValidationPipe({ whitelist: true, forbidNonWhitelisted: true, transform: true });
export const validQuery = new DemoValidationPipe({ whitelist: true, transform: true });
