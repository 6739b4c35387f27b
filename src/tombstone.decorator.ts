import { applyDecorators, SetMetadata, UseFilters, UseInterceptors } from '@nestjs/common';
import { TOMBSTONED_METADATA } from './tombstone.constants.js';
import { TombstoneConfigurationError } from './tombstone.exceptions.js';
import { TombstoneExceptionFilter } from './tombstone.filter.js';
import { TombstoneInterceptor } from './tombstone.interceptor.js';
import { type TombstoneRequest, type TombstoneScopeSource, validateScopeSource } from './tombstone.options.js';
import { isValidType } from './tombstone.validation.js';

export interface TombstonedOptions {
  /** The route parameter that holds the key. Default: `'id'`. */
  param?: string;
  /** Reads the key from the request instead of a route parameter (redirects then rewrite the path segment that holds it). */
  key?: (request: TombstoneRequest) => string | undefined;
  /** Overrides the module's `scope` for these routes. */
  scope?: TombstoneScopeSource;
  /** Name of the type in messages. Default: the type, capitalised (`article` → `Article`). */
  label?: string;
  /**
   * Whether a handler that returns `null` or `undefined` means "not found". Handlers marked
   * `@HttpCode(204)` never do. Default: `true`.
   */
  emptyMeansNotFound?: boolean;
}

/** The settings `@Tombstoned()` stores on a route. Internal. */
export interface TombstonedSettings {
  readonly type: string;
  readonly param: string;
  readonly key?: (request: TombstoneRequest) => string | undefined;
  readonly scope?: TombstoneScopeSource;
  readonly label: string;
  readonly emptyMeansNotFound: boolean;
}

/**
 * Makes a route answer honestly when its resource is not there. When the handler returns
 * `null`/`undefined`, throws `NotFoundException` or TypeORM's `EntityNotFoundError`, the key is
 * looked up in the tombstone table and the client gets 404, 410 Gone, or a 301/308 redirect to
 * where the resource lives now. A handler that finds its resource is left alone: no query runs.
 * Valid on a controller (every route that has the parameter) or on a handler.
 *
 * @example
 * @Get(':slug')
 * @Tombstoned('article', { param: 'slug' })
 * findOne(@Param('slug') slug: string) {
 *   return this.articles.findOneBy({ slug }); // null → the tombstone answers
 * }
 */
export function Tombstoned(type: string, options: TombstonedOptions = {}): ClassDecorator & MethodDecorator {
  if (!isValidType(type)) {
    throw new TombstoneConfigurationError(`@Tombstoned(): invalid resource type ${JSON.stringify(type)}.`, [
      "Use a short name of letters, digits, '_', '.', ':' or '-', e.g. @Tombstoned('article').",
    ]);
  }
  const param = options.param ?? 'id';
  if (typeof param !== 'string' || param === '') {
    throw new TombstoneConfigurationError('@Tombstoned(): `param` must be the name of a route parameter.');
  }
  if (options.key !== undefined && typeof options.key !== 'function') {
    throw new TombstoneConfigurationError('@Tombstoned(): `key` must be a function of the request.');
  }
  if (options.scope !== undefined) validateScopeSource(options.scope, '@Tombstoned() scope');
  const settings: TombstonedSettings = {
    type,
    param,
    key: options.key,
    scope: options.scope,
    label: options.label ?? labelOf(type),
    emptyMeansNotFound: options.emptyMeansNotFound ?? true,
  };
  return applyDecorators(
    SetMetadata(TOMBSTONED_METADATA, settings),
    UseInterceptors(TombstoneInterceptor),
    UseFilters(TombstoneExceptionFilter),
  );
}

function labelOf(type: string): string {
  const words = type.replace(/[_.:-]+/g, ' ').trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}
