import { TombstoneConfigurationError, TombstoneError, preview } from '../tombstone.exceptions.js';
import { isValidType } from '../tombstone.validation.js';

const TRACKED = Symbol.for('nestjs-tombstones:tracked');

/** An entity class. */
export type EntityClass = abstract new (...args: never[]) => object;

/** Options of `@TombstoneTracked()`: one tracked key of an entity. */
export interface TombstoneTrackedOptions {
  /** Resource type of the key, as named in `@Tombstoned(type)` on the routes that serve it. */
  type: string;
  /** Property that holds the key (a slug, a numeric id, a uuid). */
  key: string;
  /** Property that holds the key's scope (tenant, region); its value is the tombstone's scope. Default: unscoped. */
  scope?: string;
  /** What a hard-deleted row's key answers: `'gone'` (410) or `'hidden'` (a plain 404). Default: `'gone'`. */
  onDelete?: 'gone' | 'hidden';
  /**
   * When a row takes a key that has a tombstone: `'allow'` clears the tombstone (live data
   * wins); `'forbid'` refuses the write with `TombstoneKeyReuseError`, except for a row taking
   * back a key that redirects to it (renaming back). Default: `'allow'`.
   */
  reuse?: 'allow' | 'forbid';
  /** Key changes answer 301/308 (`true`) or 302/307 (`false`). Default: `true`. */
  permanent?: boolean;
}

/** A `@TombstoneTracked()` declaration with its defaults applied. */
export type TombstoneTrackedDeclaration = Required<Omit<TombstoneTrackedOptions, 'scope'>> & { scope?: string };

/**
 * Opts an entity into automatic capture: from now on the database itself records a tombstone
 * whenever a row of it is deleted, soft-deleted, restored or changes its key, whatever did it
 * (the repository, a query builder, raw SQL, a cascade, another service). Repeat it for each
 * key the entity is reachable by.
 *
 * The capture runs in triggers that a migration installs with `installTombstoneCapture()`;
 * the module refuses to start when a tracked entity's triggers are missing or out of date.
 *
 * @example
 * @Entity()
 * @TombstoneTracked({ type: 'article', key: 'slug', onDelete: 'gone' })
 * @TombstoneTracked({ type: 'article-id', key: 'id' })
 * export class Article { ... }
 */
export function TombstoneTracked(options: TombstoneTrackedOptions): ClassDecorator {
  const declaration = validateTracked(options);
  return (target) => {
    const own = Object.prototype.hasOwnProperty.call(target, TRACKED)
      ? trackedDeclarations(target)
      : [];
    if (own.some((d) => d.type === declaration.type && d.key === declaration.key)) {
      throw new TombstoneConfigurationError(
        `@TombstoneTracked: ${target.name} declares type '${declaration.type}' on '${declaration.key}' twice.`,
      );
    }
    // Decorators apply bottom-up; keep the order the reader sees.
    Object.defineProperty(target, TRACKED, { value: [declaration, ...own], configurable: true });
  };
}

/** The `@TombstoneTracked()` declarations of an entity class, in source order. */
export function trackedDeclarations(entity: unknown): readonly TombstoneTrackedDeclaration[] {
  if (typeof entity !== 'function') return [];
  return (entity as unknown as Record<symbol, TombstoneTrackedDeclaration[] | undefined>)[TRACKED] ?? [];
}

function validateTracked(options: TombstoneTrackedOptions): TombstoneTrackedDeclaration {
  const fail = (what: string): never => {
    throw new TombstoneConfigurationError(`@TombstoneTracked: ${what}`, [
      "Example: @TombstoneTracked({ type: 'article', key: 'slug', onDelete: 'gone', reuse: 'allow' })",
    ]);
  };
  if (typeof options !== 'object' || options === null) fail('pass an options object.');
  const { type, key, scope, onDelete = 'gone', reuse = 'allow', permanent = true } = options;
  if (!isValidType(type)) fail(`type must be a non-empty string of printable characters (got ${JSON.stringify(type)}).`);
  if (typeof key !== 'string' || key.length === 0) fail('key must name the property that holds the key.');
  if (scope !== undefined && (typeof scope !== 'string' || scope.length === 0)) fail('scope must name a property.');
  if (onDelete !== 'gone' && onDelete !== 'hidden') fail(`onDelete must be 'gone' or 'hidden' (got ${JSON.stringify(onDelete)}).`);
  if (reuse !== 'allow' && reuse !== 'forbid') fail(`reuse must be 'allow' or 'forbid' (got ${JSON.stringify(reuse)}).`);
  if (typeof permanent !== 'boolean') fail('permanent must be true or false.');
  const unknown = Object.keys(options).filter((k) => !['type', 'key', 'scope', 'onDelete', 'reuse', 'permanent'].includes(k));
  if (unknown.length > 0) fail(`unknown option(s): ${unknown.join(', ')}.`);
  return scope === undefined ? { type, key, onDelete, reuse, permanent } : { type, key, scope, onDelete, reuse, permanent };
}

/** SQLSTATE of the error the triggers raise when a key's reuse is forbidden. */
export const KEY_REUSE_SQLSTATE = 'TB001';

/** The error a write gets when it gives a row a key whose reuse its type forbids. */
export class TombstoneKeyReuseError extends TombstoneError {
  constructor(
    readonly type: string,
    readonly key: string,
    readonly scope: string,
    /** The kind of the tombstone that holds the key. */
    readonly kind: string,
    override readonly cause?: unknown,
  ) {
    super(`The ${type} key '${preview(key)}' has a tombstone (${kind}) and its type forbids reusing keys.`, [
      'Choose another key.',
      'Or restore the tombstone first (TombstoneService.restore), if the old links should now show this row.',
    ]);
  }

  /**
   * The typed error behind a failed write, or `undefined` when the failure was something else.
   * Accepts TypeORM's `QueryFailedError` and `pg` errors.
   *
   * @example
   * try { await repo.save(article) } catch (error) {
   *   const reuse = TombstoneKeyReuseError.from(error);
   *   if (reuse) throw new ConflictException(reuse.message);
   *   throw error;
   * }
   */
  static from(error: unknown): TombstoneKeyReuseError | undefined {
    if (error instanceof TombstoneKeyReuseError) return error;
    const driver = (error as { driverError?: unknown } | null)?.driverError ?? error;
    const { code, detail } = (driver ?? {}) as { code?: unknown; detail?: unknown };
    if (code !== KEY_REUSE_SQLSTATE || typeof detail !== 'string') return undefined;
    try {
      const parsed = JSON.parse(detail) as { type: string; key: string; scope: string; kind: string };
      return new TombstoneKeyReuseError(parsed.type, parsed.key, parsed.scope, parsed.kind, error);
    } catch {
      return undefined;
    }
  }
}
