import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException, Injectable, Logger, NotFoundException } from '@nestjs/common';
import { BaseExceptionFilter, HttpAdapterHost, ModuleRef } from '@nestjs/core';
import { TombstoneMissException, TombstoneMissResolver } from './tombstone.miss.js';
import { PreparedReply } from './tombstone.prepared.js';
import { TombstoneResponseWriter } from './tombstone.response-writer.js';
import { type TombstoneAnswer, type TombstoneRequest } from './tombstone.types.js';

/**
 * Carries an answer to the filter (throw it from a handler to answer with a tombstone answer of
 * your own). It is an HttpException with the answer's status, so even an app filter that catches
 * it first sends the right status.
 */
export class TombstoneAnswerException extends HttpException {
  constructor(readonly answer: TombstoneAnswer) {
    super({ error: answer.error, id: answer.id }, answer.status);
  }
}

/**
 * Answers the misses of `@Tombstoned()` routes (and carries answers made elsewhere). Applied by
 * the decorator itself, so it runs before any catch-all filter of the app. It resolves the
 * module's services lazily: the routes' own modules need not import TombstoneModule.
 */
@Catch(TombstoneMissException, TombstoneAnswerException)
@Injectable()
export class TombstoneExceptionFilter implements ExceptionFilter<TombstoneMissException | TombstoneAnswerException> {
  private readonly logger = new Logger('TombstoneModule');
  private runtime?: { writer: TombstoneResponseWriter; resolver: TombstoneMissResolver };
  private base?: BaseExceptionFilter;

  constructor(
    private readonly moduleRef: ModuleRef,
    private readonly adapterHost: HttpAdapterHost,
  ) {}

  catch(exception: TombstoneMissException | TombstoneAnswerException, host: ArgumentsHost): void {
    const http = host.switchToHttp();
    const request = http.getRequest<TombstoneRequest>();
    const response = http.getResponse<{ headersSent?: boolean; sent?: boolean }>();
    const runtime = this.resolveRuntime();
    if (exception instanceof TombstoneAnswerException) {
      if (runtime) runtime.writer.write(exception.answer, request, response);
      else this.asHandlerDid({ error: exception }, host);
      return;
    }
    // A handler that wrote its own response (@Res()) has already answered.
    if (response.headersSent || response.sent) return;
    if (!runtime) return this.asHandlerDid(exception.outcome, host);
    let answer: ReturnType<TombstoneMissResolver['answer']>;
    try {
      answer = runtime.resolver.answer(exception.settings, request);
    } catch (error) {
      return this.lastResort(error, exception, request, response, host);
    }
    // Answered from memory: written now, in the same tick.
    if (answer === undefined || !('then' in answer)) return this.deliver(answer, exception, request, response, host);
    answer.then(
      (answer) => this.deliver(answer, exception, request, response, host),
      (error: unknown) => this.lastResort(error, exception, request, response, host),
    );
  }

  private deliver(answer: TombstoneAnswer | PreparedReply | undefined, exception: TombstoneMissException, request: TombstoneRequest, response: { headersSent?: boolean }, host: ArgumentsHost): void {
    if (answer === undefined) return this.asHandlerDid(exception.outcome, host);
    try {
      const { writer, resolver } = this.runtime!;
      if (answer instanceof PreparedReply) writer.writePrepared(answer, request, response, exception.settings);
      else writer.write(answer, request, response, exception.settings, writer.tagging && !resolver.failedOpen(answer));
    } catch (error) {
      this.lastResort(error, exception, request, response, host);
    }
  }

  /**
   * Something failed while answering a keyed miss (a key function that throws, an answer that
   * cannot be written): the plain 404 all the same, as reads fail open, and the error logged.
   */
  private lastResort(error: unknown, exception: TombstoneMissException, request: TombstoneRequest, response: { headersSent?: boolean }, host: ArgumentsHost): void {
    this.logger.error(`Could not answer a tombstone miss: ${(error as Error)?.message ?? String(error)}`, (error as Error)?.stack);
    if (response.headersSent) return;
    const { writer, resolver } = this.runtime!;
    let plain: TombstoneAnswer | undefined;
    try {
      plain = resolver.plain(exception.settings, request);
      writer.write(plain, request, response, exception.settings);
      return;
    } catch (again) {
      this.logger.error(`Could not answer a tombstone miss with a plain 404 either: ${(again as Error)?.message ?? String(again)}`);
    }
    // A page of the renderer's that cannot be made (a template that throws): the plain 404 as
    // JSON, with the module's headers (Vary, Cache-Control, the request id), rather than Nest's
    // bare 404, which a shared cache could keep and give to API clients.
    if (response.headersSent || (response as { sent?: boolean }).sent) return;
    try {
      if (plain === undefined) throw new Error('no plain answer');
      writer.write(plain, request, response, exception.settings, false, true);
    } catch {
      this.asHandlerDid({ error: new NotFoundException() }, host);
    }
  }

  /** Not a keyed route, or the module is missing: the outcome the handler made. */
  private asHandlerDid(outcome: TombstoneMissException['outcome'], host: ArgumentsHost): void {
    if ('error' in outcome) {
      this.base ??= new BaseExceptionFilter(this.adapterHost.httpAdapter);
      this.base.catch(outcome.error, host);
      return;
    }
    this.adapterHost.httpAdapter.reply(host.switchToHttp().getResponse(), outcome.value, 200);
  }

  private resolveRuntime() {
    if (this.runtime) return this.runtime;
    try {
      this.runtime = {
        writer: this.moduleRef.get(TombstoneResponseWriter, { strict: false }),
        resolver: this.moduleRef.get(TombstoneMissResolver, { strict: false }),
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
