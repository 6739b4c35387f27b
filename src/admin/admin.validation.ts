import { BadRequestException, type PipeTransform, ValidationPipe, type ValidationError } from '@nestjs/common';

/** One field's problem, as every 400 of the admin endpoints lists them. */
export function invalid(field: string, reason: string): BadRequestException {
  return new BadRequestException({
    statusCode: 400,
    error: 'Bad Request',
    message: `Invalid ${field}: ${reason}`,
    errors: [{ field, reason }],
  });
}

/** Every field's problem, flattened (`metadata.a`), in one 400. */
export function validationFailure(errors: ValidationError[]) {
  const flat: { field: string; reason: string }[] = [];
  const walk = (list: ValidationError[], prefix: string) => {
    for (const error of list) {
      const field = prefix ? `${prefix}.${error.property}` : error.property;
      for (const reason of Object.values(error.constraints ?? {})) flat.push({ field, reason });
      walk(error.children ?? [], field);
    }
  };
  walk(errors, '');
  const first = flat[0] ?? { field: 'body', reason: 'must be a JSON object' };
  const exception = invalid(first.field, first.reason);
  const response = exception.getResponse() as { errors: unknown[] };
  response.errors = flat.length > 0 ? flat : [first];
  return exception;
}

/**
 * The pipe of every admin controller: unknown fields are refused, and every problem is a 400
 * `{ statusCode, error, message, errors: [{ field, reason }] }`.
 */
class AdminValidationPipe extends ValidationPipe {
  override async transform(value: unknown, metadata: Parameters<ValidationPipe['transform']>[1]): Promise<unknown> {
    if (metadata.type === 'body' || metadata.type === 'query') refuseReservedKeys(value);
    try {
      return await super.transform(value, metadata);
    } catch (error) {
      // class-transformer and class-validator recurse: JSON nested thousands of levels deep
      // (well within a body limit) overflows the stack. The client's mistake: a 400.
      if (error instanceof RangeError) throw invalid('body', 'is nested too deeply');
      throw error;
    }
  }
}

/** Keys that class-transformer drops without a word: refused instead, like any unknown field. */
const RESERVED_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * A 400 naming the first `__proto__`, `constructor` or `prototype` key anywhere in a body (the
 * metadata included). Walked with a stack of its own: nesting depth costs no call stack.
 */
function refuseReservedKeys(value: unknown): void {
  const stack: [unknown, string][] = [[value, '']];
  while (stack.length > 0) {
    const [node, path] = stack.pop() as [unknown, string];
    if (typeof node !== 'object' || node === null) continue;
    const array = Array.isArray(node);
    for (const key of Object.keys(node)) {
      const field = path === '' ? key : array ? `${path}[${key}]` : `${path}.${key}`;
      if (!array && RESERVED_KEYS.has(key)) throw invalid(field, `property ${key} should not exist`);
      stack.push([(node as Record<string, unknown>)[key], field]);
    }
  }
}

export const adminValidationPipe: ValidationPipe = new AdminValidationPipe({
  whitelist: true,
  forbidNonWhitelisted: true,
  transform: true,
  forbidUnknownValues: true,
  validationError: { target: false, value: false },
  exceptionFactory: validationFailure,
});

const MAX_BIGINT = 9_223_372_036_854_775_807n;

/** Whether `value` is a bigint identity as PostgreSQL prints it: a positive 64-bit integer. */
export function isRowId(value: unknown): value is string {
  return typeof value === 'string' && /^[1-9][0-9]{0,18}$/.test(value) && BigInt(value) <= MAX_BIGINT;
}

/** A tombstone id: a positive 64-bit integer. Anything else is the client's mistake. */
export class TombstoneIdPipe implements PipeTransform<string, string> {
  transform(value: string): string {
    if (!isRowId(value)) throw invalid('id', 'must be a tombstone id (a positive integer)');
    return value;
  }
}

/** A miss id (a row of `tombstone_misses`): a positive 64-bit integer. */
export class TombstoneMissIdPipe implements PipeTransform<string, string> {
  transform(value: string): string {
    if (!isRowId(value)) throw invalid('id', 'must be a miss id (a positive integer)');
    return value;
  }
}

const EVENT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** An event id of the outbox (`tombstone_events.event_id`): a UUID in its canonical form. */
export class TombstoneEventIdPipe implements PipeTransform<string, string> {
  transform(value: string): string {
    if (typeof value !== 'string' || !EVENT_ID.test(value)) throw invalid('id', 'must be an event id (a UUID)');
    return value.toLowerCase();
  }
}

// Control and format characters (CR, LF, NUL, DEL, bidi overrides, zero-width), line and
// paragraph separators: a sink name is shown in logs and tables, where they would forge lines.
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;

export const SINK_NAME_REASON = 'must be a sink name: 1 to 200 printable characters';

/** Whether `value` can name a sink: 1 to 200 characters (as the table counts them), all printable. */
export function isSinkName(value: unknown): value is string {
  // At most 2 UTF-16 units per character: the length bounds the work before counting.
  if (typeof value !== 'string' || value.length === 0 || value.length > 400 || !value.isWellFormed()) return false;
  return [...value].length <= 200 && !UNPRINTABLE.test(value);
}

/** A sink name in a path. */
export class TombstoneSinkNamePipe implements PipeTransform<string, string> {
  constructor(private readonly field = 'sink') {}

  transform(value: string): string {
    if (!isSinkName(value)) throw invalid(this.field, SINK_NAME_REASON);
    return value;
  }
}

/** The responses every admin endpoint may give, for `@ApiResponse()`. */
export const ADMIN_ERROR_RESPONSES = {
  400: { status: 400, description: 'Invalid input: `errors` lists each field and why' },
  401: { status: 401, description: 'Not authenticated (your guard said so)' },
  403: { status: 403, description: 'Not allowed (your guard said so)' },
} as const;

/** An ISO 8601 date-time the DTOs accepted, as a Date; a 400 for the field if it is none. */
export function parseDate(value: string, field: string): Date {
  const parsed = new Date(value);
  if (Number.isNaN(parsed.getTime())) throw invalid(field, 'must be an ISO 8601 date-time');
  return parsed;
}
