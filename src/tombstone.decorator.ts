import { applyDecorators, Res, UseFilters } from '@nestjs/common';
import { PATH_METADATA, RESPONSE_PASSTHROUGH_METADATA, ROUTE_ARGS_METADATA } from '@nestjs/common/constants.js';
import { RouteParamtypes } from '@nestjs/common/enums/route-paramtypes.enum.js';
import { TombstoneConfigurationError } from './tombstone.exceptions.js';
import { TombstoneExceptionFilter } from './tombstone.filter.js';
import { tombstonedHandler, WRAPPED } from './tombstone.miss.js';
import { validateScopeSource } from './tombstone.options-resolve.js';
import { isValidType } from './tombstone.validation.js';
import { type TombstoneRequest, type TombstoneScopeSource } from './tombstone.types.js';
import { type TombstonedSettings } from './tombstone.types.js';

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
  /**
   * Whether a found resource's answer carries the cache tag header too, as the module's answers
   * do when its `cacheTags` option is on (nothing otherwise). Costs the found answer that header
   * and nothing else: no interceptor. Default: `false`.
   */
  cacheTags?: boolean;
  /**
   * "Did you mean": a 404 of a GET for a key that has no tombstone carries up to 3 live keys like it
   * (`suggestions` in JSON and problem details, links in HTML), from the `@TombstoneTracked`
   * table of the type and from the targets of its moves and merges, in the request's scope.
   * `true`: for requests that prefer HTML (browsers); `'always'`: for every request. A found
   * resource pays nothing; misses pay at most the module's `suggestions.maxQueriesPerSecond`.
   * Every live row of the table in the scope may be suggested, whether or not this route would
   * show it. See docs/suggestions.md. Default: `false`.
   */
  suggest?: boolean | 'always';
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
  if (options.cacheTags !== undefined && typeof options.cacheTags !== 'boolean') {
    throw new TombstoneConfigurationError('@Tombstoned(): `cacheTags` must be true or false.');
  }
  if (options.suggest !== undefined && typeof options.suggest !== 'boolean' && options.suggest !== 'always') {
    throw new TombstoneConfigurationError(`@Tombstoned(): \`suggest\` must be true, false or 'always', not ${JSON.stringify(options.suggest)}.`, [
      "true suggests keys to browsers (requests that prefer text/html); 'always' to every client.",
    ]);
  }
  const settings: TombstonedSettings = {
    type,
    param,
    key: options.key,
    scope: options.scope,
    label: options.label ?? labelOf(type),
    emptyMeansNotFound: options.emptyMeansNotFound ?? true,
    cacheTags: options.cacheTags ?? false,
    suggest: options.suggest === 'always' ? 'always' : options.suggest ? 'html' : false,
  };
  return applyDecorators(
    wrapHandlers(settings),
    UseFilters(TombstoneExceptionFilter),
    documentAnswers(settings.label, settings.suggest !== false),
  );
}

/**
 * Wraps the handler (or, on a controller, every route handler not decorated itself) so that a
 * miss becomes a TombstoneMissException for the filter. No interceptor: a found resource pays
 * for nothing but a null check (and, with `cacheTags`, for its header).
 */
function wrapHandlers(settings: TombstonedSettings): ClassDecorator & MethodDecorator {
  return (target: object, key?: string | symbol, descriptor?: PropertyDescriptor): void => {
    if (descriptor) {
      const controller = (target as { constructor: new () => unknown }).constructor;
      const responseAt = settings.cacheTags ? passResponse(controller, key as string | symbol, descriptor.value) : undefined;
      descriptor.value = tombstonedHandler(descriptor.value, settings, responseAt);
      return;
    }
    // The controller's routes, its own and those it inherits (Nest serves both): the wrapped
    // handler is defined on the controller itself, so a base class is left as it is.
    const prototype = (target as { prototype: object }).prototype;
    const seen = new Set<string>(['constructor']);
    for (let owner = prototype; owner && owner !== Object.prototype; owner = Object.getPrototypeOf(owner)) {
      for (const name of Object.getOwnPropertyNames(owner)) {
        if (seen.has(name)) continue;
        seen.add(name);
        const found = Object.getOwnPropertyDescriptor(owner, name);
        if (typeof found?.value !== 'function' || found.value[WRAPPED]) continue;
        if (Reflect.getMetadata(PATH_METADATA, found.value) === undefined) continue; // not a route
        const responseAt = settings.cacheTags ? passResponse(target as new () => unknown, name, found.value) : undefined;
        Object.defineProperty(prototype, name, { ...found, value: tombstonedHandler(found.value, settings, responseAt) });
      }
    }
  };
}

/**
 * Has Nest pass the response to the wrapper of a `cacheTags: true` route, for the header of a
 * found resource: one more argument after the handler's own (the wrapper takes it off before it
 * calls the handler), declared as `@Res({ passthrough: true })` would, so that Nest still sends
 * what the handler returns. Nest keeps route arguments on the controller class, per method name
 * (a route inherited from a base class gets its own copy on the controller, and the base class is
 * left as it is). Only these routes get it: the others stay exactly as they were. Returns the
 * argument's index: after every argument Nest passes and every parameter the handler declares, so
 * that a test calling the handler directly passes it nothing.
 */
function passResponse(controller: new () => unknown, name: string | symbol, handler: (...args: never[]) => unknown): number {
  const args = (Reflect.getMetadata(ROUTE_ARGS_METADATA, controller, name) ?? {}) as Record<string, { index: number }>;
  // @Res() or @Next() without passthrough: the handler writes its own response, and Nest would
  // send it a second time if the module declared passthrough for it.
  const writesItself = Object.keys(args).some((arg) => {
    const type = Number(arg.split(':')[0]);
    return type === RouteParamtypes.RESPONSE || type === RouteParamtypes.NEXT;
  });
  if (writesItself && !Reflect.getMetadata(RESPONSE_PASSTHROUGH_METADATA, controller, name)) {
    throw new TombstoneConfigurationError(`@Tombstoned({ cacheTags: true }): ${controller.name}.${String(name)}() writes its own response (@Res() or @Next()).`, [
      'Take the response with @Res({ passthrough: true }) and return the resource: the module then adds the header.',
      'Or leave cacheTags out for this route and set the header yourself.',
    ]);
  }
  const index = Math.max(handler.length, Object.values(args).reduce((last, arg) => Math.max(last, arg.index), -1) + 1);
  Res({ passthrough: true })(controller.prototype as object, name, index);
  return index;
}

// The metadata key @nestjs/swagger's @ApiResponse() writes. Written directly, so that the module
// documents its answers for apps that use Swagger without depending on it.
const SWAGGER_API_RESPONSE = 'swagger/apiResponse';

/**
 * Adds the module's answers to the route's OpenAPI responses (read by `@nestjs/swagger`); a
 * response the route documents itself is kept as it is.
 */
function documentAnswers(label: string, suggest: boolean): ClassDecorator & MethodDecorator {
  // The JSON body of each answer, member for member (see TombstoneRenderer.facts()).
  const string = { type: 'string' };
  const nullable = { type: 'string', nullable: true };
  const body = (error: string, facts: Record<string, object> = {}) => ({
    type: 'object',
    required: ['error', 'message', 'resource', 'id', ...Object.keys(facts), 'path', 'requestId'],
    properties: {
      error: { type: 'string', example: error },
      message: string,
      resource: string,
      id: string,
      ...facts,
      path: string,
      requestId: string,
    },
  });
  const moved = { location: string, movedTo: string };
  const gone = { deletedAt: { type: 'string', format: 'date-time' }, reason: nullable, alternative: nullable };
  const location = { Location: { description: 'Where the resource lives now', schema: { type: 'string' } } };
  const answers: Record<number, object> = {
    301: { description: `${label} moved or merged (GET, HEAD; 302 when the move is temporary)`, headers: location, schema: body('moved', moved) },
    308: { description: `${label} moved or merged (other methods; 307 when the move is temporary)`, headers: location, schema: body('moved', moved) },
    404: { description: `No such ${label}: it never existed, is hidden, or its tombstone expired`, schema: suggest ? withSuggestions(body('not_found')) : body('not_found') },
    410: {
      description: `${label} deleted for good; the body has deletedAt, reason and alternative`,
      headers: { Link: { description: 'rel="alternate": a replacement, when there is one', schema: { type: 'string' } } },
      schema: body('gone', gone),
    },
  };
  return (target: object, _key?: string | symbol, descriptor?: PropertyDescriptor): void => {
    const holder = (descriptor?.value ?? target) as object;
    const existing = (Reflect.getMetadata(SWAGGER_API_RESPONSE, holder) ?? {}) as Record<string, object>;
    const added = Object.fromEntries(
      Object.entries(answers)
        .filter(([status]) => !(status in existing))
        .map(([status, entry]) => [status, { isArray: false, ...entry }]),
    );
    Reflect.defineMetadata(SWAGGER_API_RESPONSE, { ...added, ...existing }, holder);
  };
}

/** A 404's body on a `suggest` route: an optional `suggestions` member (see TombstoneRenderer.facts()). */
function withSuggestions(schema: { properties: Record<string, object> }): object {
  const suggestion = { type: 'object', required: ['id', 'location'], properties: { id: { type: 'string' }, location: { type: 'string' } } };
  return { ...schema, properties: { ...schema.properties, suggestions: { type: 'array', maxItems: 3, items: suggestion } } };
}

function labelOf(type: string): string {
  const words = type.replace(/[_.:-]+/g, ' ').trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}
