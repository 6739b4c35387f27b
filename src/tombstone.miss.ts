import { HttpStatus, Inject, Injectable, Logger, NotFoundException } from '@nestjs/common';
import { HTTP_CODE_METADATA } from '@nestjs/common/constants.js';
import { answerFor, buildLocation, requestPath } from './tombstone.answer.js';
import { tagFound } from './tombstone.cache-tags.js';
import { TOMBSTONE_OPTIONS } from './tombstone.constants.js';
import { preview } from './tombstone.exceptions.js';
import { SOURCE_DATABASE, SOURCE_FAIL_OPEN, TombstoneAnswerTally } from './counters/tombstone.answers.js';
import { lookupKey, TombstoneKeys } from './tombstone.keys.js';
import { LogBudget } from './tombstone.log-budget.js';
import { TombstoneHitCounter } from './counters/tombstone.hits.js';
import { TombstoneMissLog } from './counters/tombstone.misses.js';
import type { ResolvedTombstoneOptions } from './tombstone.options.js';
import { PreparedReply, TombstonePreparedAnswers } from './tombstone.prepared.js';
import { TombstoneRequestIds } from './tombstone.request-id.js';
import { TombstoneSuggestions } from './suggestions/tombstone.suggestions.js';
import { TombstoneCircuitOpenError } from './cache/tombstone.breaker.js';
import { TombstoneLookup } from './cache/tombstone.lookup.js';
import { NO_TOMBSTONE, type TombstoneAnswer, type TombstonedSettings, type TombstoneRequest, type TombstoneResolution, type TombstoneScopeSource } from './tombstone.types.js';

/**
 * What a `@Tombstoned()` handler's miss becomes: a 404 that still knows the route's settings and
 * what the handler gave (`null`, `undefined` or its error), for the module's filter to answer.
 * A NotFoundException, so that the app's interceptors and logs see a 404 go by.
 */
export class TombstoneMissException extends NotFoundException {
  constructor(
    readonly settings: TombstonedSettings,
    /** The handler's own outcome: its error, or the empty value it returned. */
    readonly outcome: { error: unknown } | { value: null | undefined },
  ) {
    super();
  }

  /**
   * A miss is a signal, not a fault: made without a stack trace, which costs more than the
   * rest of the answer (the handler's own error, if any, keeps its stack in `outcome`).
   */
  static of(settings: TombstonedSettings, outcome: TombstoneMissException['outcome']): TombstoneMissException {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      return new TombstoneMissException(settings, outcome);
    } finally {
      Error.stackTraceLimit = limit;
    }
  }
}

/**
 * Wraps a `@Tombstoned()` handler: a found resource is returned as it is, with nothing else run
 * (not even a microtask for a synchronous handler); `null`, `undefined`, a NotFoundException or
 * TypeORM's EntityNotFoundError becomes a TombstoneMissException for the filter.
 *
 * `responseAt`: a `cacheTags: true` route, whose response Nest passes as the argument at that
 * index (see the decorator). The wrapper takes it off, calls the handler with its own arguments,
 * and tags a found resource's answer: one header, set before Nest sends the value.
 */
export function tombstonedHandler(original: (...args: unknown[]) => unknown, settings: TombstonedSettings, responseAt?: number) {
  // Two wrappers alike on purpose: a route without tags runs no line of tagging, not even a
  // check, on its found path.
  const asIs = function (this: unknown, ...args: unknown[]): unknown {
    let result: unknown;
    try {
      result = original.apply(this, args);
    } catch (error) {
      throw missOf(error);
    }
    if (result !== null && typeof (result as PromiseLike<unknown> | undefined)?.then === 'function') {
      return (result as Promise<unknown>).then(checked, (error: unknown) => {
        throw missOf(error);
      });
    }
    return checked(result);
  };
  const withTags = function (this: unknown, ...args: unknown[]): unknown {
    // Called by Nest: one argument more than the handler takes (called directly, none).
    const response = args.length > (responseAt as number) ? args[responseAt as number] : undefined;
    if (response !== undefined) args.length = responseAt as number;
    let result: unknown;
    try {
      result = original.apply(this, args);
    } catch (error) {
      throw missOf(error);
    }
    if (result !== null && typeof (result as PromiseLike<unknown> | undefined)?.then === 'function') {
      return (result as Promise<unknown>).then(
        (value) => tagged(checked(value), response),
        (error: unknown) => {
          throw missOf(error);
        },
      );
    }
    return tagged(checked(result), response);
  };
  const wrapped = responseAt === undefined ? asIs : withTags;
  // Read at the first empty result, when every decorator has run: @HttpCode() may sit above or
  // below @Tombstoned().
  let noContent: boolean | undefined;
  const checked = (value: unknown): unknown => {
    if (value !== null && value !== undefined) return value;
    if (!settings.emptyMeansNotFound) return value;
    noContent ??= Reflect.getMetadata(HTTP_CODE_METADATA, wrapped) === HttpStatus.NO_CONTENT;
    if (noContent) return value;
    throw TombstoneMissException.of(settings, { value: value as null | undefined });
  };
  const missOf = (error: unknown) => (isNotFound(error) ? TombstoneMissException.of(settings, { error }) : error);
  // A found resource (checked() threw for a miss): the header of its key.
  const tagged = (value: unknown, response: unknown): unknown => {
    if (value !== null && value !== undefined && response !== undefined) tagFound(settings, response);
    return value;
  };
  // Nest and the app read route metadata from the handler function: the wrapper carries it.
  for (const key of Reflect.getOwnMetadataKeys(original)) {
    Reflect.defineMetadata(key, Reflect.getOwnMetadata(key, original), wrapped);
  }
  Object.defineProperty(wrapped, 'name', { value: original.name });
  Object.defineProperty(wrapped, WRAPPED, { value: true });
  return wrapped;
}

/** Marks a handler `@Tombstoned()` already wrapped (a handler-level one wins over the class's). */
export const WRAPPED = Symbol('nestjs-tombstones:wrapped');

/**
 * Answers a miss of a `@Tombstoned()` route: looks the key up and says what the client gets.
 * Reads fail open: if the lookup breaks or runs out of time, the answer is the plain 404 and the
 * error is logged. A lookup that answered counts a hit of its tombstone, or a miss when no
 * tombstone explained the 404; both only in memory (see `TombstoneHitCounter`, `TombstoneMissLog`).
 */
@Injectable()
export class TombstoneMissResolver {
  private readonly logger = new Logger('TombstoneModule');
  /** Failed lookups are logged at a bounded rate (see `LogBudget`). */
  private readonly logBudget = new LogBudget();
  /** The plain 404s given because nothing could be known (see `failedOpen()`). */
  private readonly failures = new WeakSet<TombstoneAnswer>();

  constructor(
    private readonly lookup: TombstoneLookup,
    @Inject(TOMBSTONE_OPTIONS) private readonly options: ResolvedTombstoneOptions,
    private readonly hits: TombstoneHitCounter,
    private readonly misses: TombstoneMissLog,
    private readonly tally: TombstoneAnswerTally,
    private readonly requestIds: TombstoneRequestIds,
    private readonly keys: TombstoneKeys,
    private readonly suggestions: TombstoneSuggestions,
    private readonly prepared: TombstonePreparedAnswers,
  ) {}

  /**
   * The answer to a miss, or `undefined` for a route whose key cannot be read (not keyed). A
   * value when memory answered the lookup (no promise, no timer), a promise when the database or
   * an async scope function is asked. From memory, often a prepared answer (see
   * `TombstonePreparedAnswers`).
   */
  answer(settings: TombstonedSettings, request: TombstoneRequest): TombstoneAnswer | PreparedReply | undefined | Promise<TombstoneAnswer | PreparedReply | undefined> {
    const key = keyOf(settings, request);
    if (typeof key !== 'string') return undefined;
    const requestId = this.requestIds.of(request);
    const source = settings.scope ?? this.options.scope;
    if (typeof source === 'function') {
      return (async () => {
        let scope = '';
        try {
          scope = scopeValue(await source(request));
        } catch (error) {
          return this.failed(error, { settings, request, key, stored: key, scope, requestId });
        }
        return this.lookUp({ settings, request, key, stored: key, scope, requestId });
      })();
    }
    return this.lookUp({ settings, request, key, stored: key, scope: scopeOf(source, request), requestId });
  }

  private lookUp(miss: Miss): TombstoneAnswer | PreparedReply | Promise<TombstoneAnswer> {
    const { settings, request } = miss;
    let found: TombstoneResolution | Promise<TombstoneResolution>;
    try {
      // The key as tombstones store it (option normalizeKeys); answers keep the key asked for.
      const normalize = this.keys.of(settings.type);
      if (normalize !== undefined) miss.stored = lookupKey(normalize, miss.key);
      found = this.lookup.resolve(settings.type, miss.stored, miss.scope);
    } catch (error) {
      return this.failed(error, miss);
    }
    // Answered from memory: no wait. A lookup that reaches the database ends within lookupTimeoutMs.
    if ('state' in found) {
      if (this.prepared.enabled && settings.suggest !== 'always' && this.prepared.accepts(request)) {
        const reply = this.prepared.reply(settings, request, miss.key, miss.scope !== '', found, miss.requestId);
        if (reply !== undefined) return this.counted(reply, reply.prepared.answer.status, found, this.lookup.lastSource, miss);
      }
      return this.suggested(this.answered(found, this.lookup.lastSource, miss), miss);
    }
    return found.then(
      (resolution) => this.suggested(this.answered(resolution, SOURCE_DATABASE, miss), miss),
      (error: unknown) => this.failed(error, miss),
    );
  }

  /**
   * A 404 the lookup gave, with "did you mean" suggestions when its route and its client want
   * them. Every such 404 alike, whatever the key's tombstone (none, hidden, a redirect whose URL
   * could not be built): what is suggested depends on the key's text, its type and its scope
   * only, so a hidden key gets what a key that never existed gets. Never for a 404 given because
   * the lookup failed, nor for methods other than GET and HEAD. Suggestions never fail a miss:
   * none when they cannot be had in time. Links replace the key asked for in the URL; live keys
   * are compared with its normal form (`stored`).
   */
  private suggested(answer: TombstoneAnswer, { settings, request, key, stored, scope }: Miss): TombstoneAnswer | Promise<TombstoneAnswer> {
    if (settings.suggest === false || answer.status !== 404 || this.failures.has(answer)) return answer;
    // "Did you mean" is for finding a page: not for a PATCH or a DELETE that missed.
    if ((request.method !== 'GET' && request.method !== 'HEAD') || !this.suggestions.wanted(settings.suggest, request)) return answer;
    const keys = this.suggestions.keys(settings.type, stored, scope);
    if (!('then' in keys)) return withSuggestions(answer, keys, request, settings, key);
    return keys.then((found) => withSuggestions(answer, found, request, settings, key));
  }

  /** `source`: where the lookup found its answer (see `TombstoneAnswerTally`). */
  private answered(resolution: TombstoneResolution, source: number, miss: Miss): TombstoneAnswer {
    const answer = this.answerOf(resolution, miss);
    return this.counted(answer, answer.status, resolution, source, miss);
  }

  /**
   * Counts what a lookup answered (with `status`), and gives its answer. Only an answered lookup
   * counts: after a failure nothing is known, and nothing is written. A hidden key is not
   * counted: it answers exactly as a key that never existed; nor is a redirect whose URL could not
   * be built (a plain 404 too). A count that fails fails the answer open.
   */
  private counted<T extends TombstoneAnswer | PreparedReply>(answer: T, status: number, resolution: TombstoneResolution, source: number, miss: Miss): T | TombstoneAnswer {
    const { settings } = miss;
    try {
      if (resolution.state === 'none') this.misses.record(miss.scope, settings.type, miss.stored, miss.request.headers.referer);
      else if (resolution.state !== 'hidden' && status !== 404) this.hits.record(resolution.id);
    } catch (error) {
      return this.failed(error, miss);
    }
    this.tally.count(settings.type, resolution.state, source, status);
    return answer;
  }

  /** The plain 404 of a keyed miss, whatever the lookup would say: the last resort of the filter. */
  plain(settings: TombstonedSettings, request: TombstoneRequest): TombstoneAnswer {
    let key: unknown;
    try {
      key = keyOf(settings, request);
    } catch {
      key = undefined;
    }
    const asked = typeof key === 'string' ? key : '';
    const answer = this.answerOf(NO_TOMBSTONE, { settings, request, key: asked, stored: asked, scope: '', requestId: this.requestIds.of(request) });
    this.failures.add(answer);
    this.tally.count(settings.type, 'none', SOURCE_FAIL_OPEN, 404);
    return answer;
  }

  /**
   * Whether `answer` is a plain 404 given because the lookup failed (or could not be made): it
   * says nothing about the key, so it carries no cache tags. An answer the lookup gave, hidden
   * keys' 404s included, does.
   */
  failedOpen(answer: TombstoneAnswer): boolean {
    return this.failures.has(answer);
  }

  /**
   * Reads fail open: the plain 404, and the error logged at a bounded rate (a flood of misses
   * while the database is down must not become a flood of log lines). A lookup the open circuit
   * breaker refused is not logged: the breaker logs its changes of state.
   */
  private failed(error: unknown, miss: Miss): TombstoneAnswer {
    if (!(error instanceof TombstoneCircuitOpenError)) this.logFailure(error, miss);
    const answer = this.answerOf(NO_TOMBSTONE, miss);
    this.failures.add(answer);
    this.tally.count(miss.settings.type, 'none', SOURCE_FAIL_OPEN, 404);
    return answer;
  }

  private logFailure(error: unknown, { settings, request, key, scope, requestId }: Miss): void {
    const unlogged = this.logBudget.take();
    if (unlogged === undefined) return;
    const more = unlogged > 0 ? ` (and ${unlogged} more failed lookups not logged since the last one)` : '';
    this.logger.error(
      `Tombstone lookup failed, answering a plain 404: ${(error as Error)?.message ?? String(error)} ` +
        `(type=${settings.type} key="${preview(key)}" scope="${preview(scope)}" ` +
        `${request.method} ${preview(requestPath(request))} requestId=${requestId})${more}`,
      (error as Error)?.stack,
    );
  }

  private answerOf(resolution: TombstoneResolution, { settings, request, key, scope, requestId }: Miss): TombstoneAnswer {
    return answerFor(resolution, {
      resource: settings.type,
      label: settings.label,
      id: key,
      request,
      requestId,
      scoped: scope !== '',
      param: settings.key ? undefined : settings.param,
    });
  }
}

/** One miss on its way to an answer. */
interface Miss {
  readonly settings: TombstonedSettings;
  readonly request: TombstoneRequest;
  /** The key asked for (answers and links keep it). */
  readonly key: string;
  /** Its normal form (option `normalizeKeys`): what tombstones store, and what is looked up. */
  stored: string;
  readonly scope: string;
  readonly requestId: string;
}

/** `answer` with links to `keys`, built like a redirect's: the same route, the key encoded, always same-origin. */
function withSuggestions(answer: TombstoneAnswer, keys: readonly string[], request: TombstoneRequest, settings: TombstonedSettings, key: string): TombstoneAnswer {
  if (keys.length === 0) return answer;
  const param = settings.key ? undefined : settings.param;
  const suggestions: { id: string; location: string }[] = [];
  for (const suggested of keys) {
    const location = buildLocation(request, param, key, suggested);
    if (location !== null) suggestions.push({ id: suggested, location });
  }
  return suggestions.length === 0 ? answer : { ...answer, suggestions };
}

function isNotFound(error: unknown): boolean {
  if (error instanceof TombstoneMissException) return false;
  if (error instanceof NotFoundException) return true;
  // By name: the app and the module may load different copies of typeorm.
  return error instanceof Error && error.name === 'EntityNotFoundError';
}

/** The scope a header or a route parameter gives (a function's is awaited by the caller). */
function scopeOf(source: Exclude<TombstoneScopeSource, (...args: never[]) => unknown> | undefined, request: TombstoneRequest): string {
  if (source === undefined) return '';
  return scopeValue('header' in source ? request.headers[source.header.toLowerCase()] : request.params?.[source.param]);
}

function scopeValue(value: unknown): string {
  if (Array.isArray(value)) value = value[0];
  if (typeof value === 'number') value = String(value);
  return typeof value === 'string' ? value : '';
}

/**
 * The key of a request: the route's `key` function's, or its parameter's. A wildcard parameter
 * that the adapter gives as its segments (Express 5: `*path` is `['guide', 'intro']`) is the
 * path they make, `guide/intro`.
 */
function keyOf(settings: TombstonedSettings, request: TombstoneRequest): unknown {
  if (settings.key) return settings.key(request);
  const value: unknown = request.params?.[settings.param];
  return Array.isArray(value) && value.every((segment) => typeof segment === 'string') ? value.join('/') : value;
}
