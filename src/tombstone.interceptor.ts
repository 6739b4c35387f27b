import {
  type CallHandler,
  type ExecutionContext,
  HttpStatus,
  Injectable,
  Logger,
  type NestInterceptor,
  NotFoundException,
} from '@nestjs/common';
import { HTTP_CODE_METADATA } from '@nestjs/common/constants.js';
import { ModuleRef, Reflector } from '@nestjs/core';
import { catchError, defer, map, type Observable, of, throwError } from 'rxjs';
import { answerFor, requestIdOf, requestPath } from './tombstone.answer.js';
import { TOMBSTONE_OPTIONS, TOMBSTONED_METADATA } from './tombstone.constants.js';
import type { TombstonedSettings } from './tombstone.decorator.js';
import { preview } from './tombstone.exceptions.js';
import { TombstoneAnswerException } from './tombstone.filter.js';
import { TombstoneHitCounter } from './tombstone.hits.js';
import { TombstoneMissLog } from './tombstone.misses.js';
import type { ResolvedTombstoneOptions, TombstoneRequest, TombstoneScopeSource } from './tombstone.options.js';
import { NO_TOMBSTONE, type TombstoneResolution, TombstoneService } from './tombstone.service.js';

/** Thrown inside the pipe when a handler returned nothing; never leaves the interceptor. */
class EmptyResult {
  constructor(readonly value: null | undefined) {}
}

/**
 * Turns a failed lookup of a `@Tombstoned()` route into the tombstone's answer. On a found
 * resource it does nothing but pass the value on. Reads fail open: if the lookup breaks or
 * runs out of time, the client gets the plain 404 and the error is logged. A lookup that
 * answered counts a hit of its tombstone, or a miss when no tombstone explained the 404; both
 * only in memory (see `TombstoneHitCounter`, `TombstoneMissLog`).
 */
@Injectable()
export class TombstoneInterceptor implements NestInterceptor {
  private readonly logger = new Logger('TombstoneModule');
  private runtime?: {
    service: TombstoneService;
    options: ResolvedTombstoneOptions;
    hits: TombstoneHitCounter;
    misses: TombstoneMissLog;
  };

  constructor(
    private readonly reflector: Reflector,
    private readonly moduleRef: ModuleRef,
  ) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') return next.handle();
    return next.handle().pipe(
      map((value) => {
        if (value === null || value === undefined) throw new EmptyResult(value);
        return value;
      }),
      catchError((error: unknown) => {
        if (!(error instanceof EmptyResult) && !isNotFound(error)) return throwError(() => error);
        const settings = this.settingsOf(context);
        if (error instanceof EmptyResult && !this.emptyIsMiss(context, settings)) return of(error.value);
        return defer(() => this.answer(context, settings, error));
      }),
    );
  }

  private async answer(context: ExecutionContext, settings: TombstonedSettings, original: unknown): Promise<never> {
    const request = context.switchToHttp().getRequest<TombstoneRequest>();
    const key = settings.key ? settings.key(request) : request.params?.[settings.param];
    const runtime = this.resolveRuntime();
    if (typeof key !== 'string' || runtime === undefined) {
      // Not a keyed route, or the module is missing: leave the outcome as the handler made it.
      if (original instanceof EmptyResult) return original.value as never;
      throw original;
    }
    const { service, options, hits, misses } = runtime;
    const requestId = requestIdOf(request, options.requestIdHeader);
    let resolution: TombstoneResolution = NO_TOMBSTONE;
    let scope = '';
    try {
      scope = await scopeOf(settings.scope ?? options.scope, request);
      resolution = await withTimeout(service.resolve(settings.type, key, scope), options.lookupTimeoutMs);
      // Only an answered lookup counts: after a failure nothing is known, and nothing is written.
      if (resolution.state === 'none') misses.record(scope, settings.type, key, request.headers.referer);
      else hits.record(resolution.id);
    } catch (error) {
      this.logger.error(
        `Tombstone lookup failed, answering a plain 404: ${(error as Error)?.message ?? String(error)} ` +
          `(type=${settings.type} key="${preview(key)}" scope="${preview(scope)}" ` +
          `${request.method} ${preview(requestPath(request))} requestId=${requestId})`,
        (error as Error)?.stack,
      );
    }
    throw new TombstoneAnswerException(
      answerFor(resolution, {
        resource: settings.type,
        label: settings.label,
        id: key,
        request,
        requestId,
        scoped: scope !== '',
        param: settings.key ? undefined : settings.param,
      }),
    );
  }

  private emptyIsMiss(context: ExecutionContext, settings: TombstonedSettings): boolean {
    if (!settings.emptyMeansNotFound) return false;
    if (this.reflector.get<number>(HTTP_CODE_METADATA, context.getHandler()) === HttpStatus.NO_CONTENT) return false;
    // A handler that wrote its own response (@Res()) has already answered.
    const response = context.switchToHttp().getResponse<{ headersSent?: boolean; sent?: boolean }>();
    return !(response.headersSent || response.sent);
  }

  private settingsOf(context: ExecutionContext): TombstonedSettings {
    return this.reflector.getAllAndOverride<TombstonedSettings>(TOMBSTONED_METADATA, [context.getHandler(), context.getClass()]);
  }

  private resolveRuntime() {
    if (this.runtime) return this.runtime;
    try {
      this.runtime = {
        service: this.moduleRef.get(TombstoneService, { strict: false }),
        options: this.moduleRef.get<ResolvedTombstoneOptions>(TOMBSTONE_OPTIONS, { strict: false }),
        hits: this.moduleRef.get(TombstoneHitCounter, { strict: false }),
        misses: this.moduleRef.get(TombstoneMissLog, { strict: false }),
      };
    } catch {
      this.logger.error(
        '@Tombstoned() is used but TombstoneModule is not imported; answering as the handler did. ' +
          'Import TombstoneModule.forRoot() in your application module.',
      );
    }
    return this.runtime;
  }
}

function isNotFound(error: unknown): boolean {
  if (error instanceof TombstoneAnswerException) return false;
  if (error instanceof NotFoundException) return true;
  // By name: the app and the module may load different copies of typeorm.
  return error instanceof Error && error.name === 'EntityNotFoundError';
}

async function scopeOf(source: TombstoneScopeSource | undefined, request: TombstoneRequest): Promise<string> {
  if (source === undefined) return '';
  let value: unknown;
  if (typeof source === 'function') value = await source(request);
  else if ('header' in source) value = request.headers[source.header.toLowerCase()];
  else value = request.params?.[source.param];
  if (Array.isArray(value)) value = value[0];
  if (typeof value === 'number') value = String(value);
  return typeof value === 'string' ? value : '';
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`lookup timed out after ${ms} ms`)), ms);
    timer.unref?.();
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
