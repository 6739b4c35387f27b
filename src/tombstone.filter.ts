import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException, Inject, Injectable } from '@nestjs/common';
import { HttpAdapterHost, ModuleRef } from '@nestjs/core';
import Negotiator from 'negotiator';
import type { TombstoneAnswer } from './tombstone.answer.js';
import { TOMBSTONE_OPTIONS } from './tombstone.constants.js';
import type { ResolvedTombstoneOptions, TombstoneRequest } from './tombstone.options.js';
import { type TombstoneFormat, TombstoneRenderer } from './tombstone.renderer.js';

/**
 * Carries an answer from the interceptor to the filter. It is an HttpException with the
 * answer's status, so even an app filter that catches it first sends the right status.
 */
export class TombstoneAnswerException extends HttpException {
  constructor(readonly answer: TombstoneAnswer) {
    super({ error: answer.error, id: answer.id }, answer.status);
  }
}

/**
 * Catches the answers of `@Tombstoned()` routes. Applied by the decorator itself, so it runs
 * before any catch-all filter of the app. It resolves the module's writer lazily: the routes'
 * own modules need not import TombstoneModule.
 */
@Catch(TombstoneAnswerException)
@Injectable()
export class TombstoneExceptionFilter implements ExceptionFilter<TombstoneAnswerException> {
  private writer?: TombstoneResponseWriter;

  constructor(private readonly moduleRef: ModuleRef) {}

  catch(exception: TombstoneAnswerException, host: ArgumentsHost): void {
    this.writer ??= this.moduleRef.get(TombstoneResponseWriter, { strict: false });
    const http = host.switchToHttp();
    this.writer.write(exception.answer, http.getRequest<TombstoneRequest>(), http.getResponse<unknown>());
  }
}

/** Writes tombstone answers: status, headers and body, identically on Express and Fastify. */
@Injectable()
export class TombstoneResponseWriter {
  constructor(
    private readonly adapterHost: HttpAdapterHost,
    @Inject(TOMBSTONE_OPTIONS) private readonly options: ResolvedTombstoneOptions,
    @Inject(TombstoneRenderer) private readonly renderer: TombstoneRenderer,
  ) {}

  write(answer: TombstoneAnswer, request: TombstoneRequest, response: unknown): void {
    const adapter = this.adapterHost.httpAdapter;
    const rendered = this.renderer.render(answer, this.formatFor(request));

    const headers: Record<string, string> = {
      'Content-Type': rendered.contentType,
      Vary: 'Accept',
      [this.options.requestIdHeader]: answer.requestId,
    };
    const cacheControl = this.cacheControl(answer);
    if (cacheControl) headers['Cache-Control'] = cacheControl;
    if (answer.location) headers.Location = answer.location;
    if (answer.error === 'gone' && answer.alternative) {
      headers.Link = `<${answer.alternative}>; rel="alternate"`;
    }
    for (const [name, value] of Object.entries(headers)) adapter.setHeader(response, name, value);
    adapter.reply(response, JSON.stringify(rendered.body), answer.status);
  }

  private formatFor(request: TombstoneRequest): TombstoneFormat {
    switch (this.options.problemDetails) {
      case 'always':
        return 'problem';
      case 'never':
        return 'json';
      default: {
        const preferred = new Negotiator(request as never).mediaType(['application/json', 'application/problem+json']);
        return preferred === 'application/problem+json' ? 'problem' : 'json';
      }
    }
  }

  private cacheControl(answer: TombstoneAnswer): string | false {
    const { cacheControl } = this.options;
    let value: string | false;
    if (answer.status === 410) value = cacheControl.gone;
    else if (answer.status === 301 || answer.status === 308) value = cacheControl.permanentRedirect;
    else if (answer.status === 302 || answer.status === 307) value = cacheControl.temporaryRedirect;
    else value = cacheControl.notFound;
    // A scoped answer depends on who asks: a shared cache must never hand it to another tenant.
    if (value && answer.scoped && !/\b(private|no-store)\b/.test(value)) value = `private, ${value}`;
    return value;
  }
}

