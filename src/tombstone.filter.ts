import type { ServerResponse } from 'node:http';
import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException, Inject, Injectable, Logger, NotFoundException } from '@nestjs/common';
import { BaseExceptionFilter, HttpAdapterHost, ModuleRef } from '@nestjs/core';
import Negotiator from 'negotiator';
import { TombstoneCacheTags } from './tombstone.cache-tags.js';
import { TOMBSTONE_OPTIONS } from './tombstone.constants.js';
import { TombstoneMissException, TombstoneMissResolver } from './tombstone.miss.js';
import type { ResolvedTombstoneOptions } from './tombstone.options.js';
import { type TombstoneFormat, TombstoneRenderer } from './tombstone.renderer.js';
import { type TombstoneAnswer, type TombstonedSettings, type TombstoneRequest } from './tombstone.types.js';

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

  private deliver(answer: TombstoneAnswer | undefined, exception: TombstoneMissException, request: TombstoneRequest, response: { headersSent?: boolean }, host: ArgumentsHost): void {
    if (answer === undefined) return this.asHandlerDid(exception.outcome, host);
    try {
      const { writer, resolver } = this.runtime!;
      writer.write(answer, request, response, exception.settings, writer.tagging && !resolver.failedOpen(answer));
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

/** Writes tombstone answers: status, headers and body, identically on Express and Fastify. */
@Injectable()
export class TombstoneResponseWriter {
  constructor(
    private readonly adapterHost: HttpAdapterHost,
    @Inject(TOMBSTONE_OPTIONS) private readonly options: ResolvedTombstoneOptions,
    @Inject(TombstoneRenderer) private readonly renderer: TombstoneRenderer,
    private readonly cacheTags: TombstoneCacheTags,
  ) {
    this.cacheControls = cacheControlsOf(options.cacheControl);
    this.tagging = cacheTags.enabled;
    this.jsonFormat = options.problemDetails === 'always' ? 'problem' : 'json';
    const json = ['application/json', 'application/problem+json'];
    this.jsonOffers = options.problemDetails === 'negotiate' ? json : null;
    // JSON first: a tie (`*/*;q=0.8` alone, `application/*`) goes to JSON. Both JSON types are
    // offered whatever `problemDetails` says, so that HTML wins only where the client prefers it.
    this.htmlOffers = options.html ? [...json, 'text/html'] : this.jsonOffers;
  }

  /** The `Cache-Control` of each status, unscoped and scoped, worked out once. */
  private readonly cacheControls: Map<number, { unscoped: string | false; scoped: string | false }>;

  /** Whether answers carry cache tags (option `cacheTags`). */
  readonly tagging: boolean;

  /**
   * Writes `answer`; `settings` are those of the route that missed (none for a thrown answer).
   * `tagged`: the answer is what the lookup said of its key, and carries the key's cache tags.
   * `noPage`: JSON (or problem details) whatever the client accepts, the last resort when the
   * HTML page could not be made.
   */
  write(answer: TombstoneAnswer, request: TombstoneRequest, response: unknown, settings?: TombstonedSettings, tagged = false, noPage = false): void {
    const format = noPage ? this.jsonFormat : this.formatFor(request);
    const rendered = format === 'html' ? this.renderer.renderHtml(answer) : this.renderer.render(answer, format);
    const http = this.http();
    http.setHeader(response, 'Content-Type', rendered.contentType);
    if ('headers' in rendered && rendered.headers) for (const [name, value] of Object.entries(rendered.headers)) http.setHeader(response, name, value);
    // The body holds user data (the key, a reason): never let a browser sniff it as HTML.
    http.setHeader(response, 'X-Content-Type-Options', 'nosniff');
    // Every answer of a route whose scope comes from a header depends on that header, the
    // unscoped ones included: a shared cache must key them by it (RFC 9110, section 12.5.5).
    const source = settings?.scope ?? this.options.scope;
    appendList(http, response, 'Vary', source !== undefined && typeof source === 'object' && 'header' in source ? ['Accept', source.header] : ACCEPT);
    http.setHeader(response, this.options.requestIdHeader, answer.requestId);
    const cacheControl = this.cacheControl(answer);
    if (cacheControl) http.setHeader(response, 'Cache-Control', cacheControl);
    // The tags name the key asked for, whatever its tombstone says: a hidden key, another tenant's
    // key and a key that never existed get the same ones, so they leak nothing.
    // A redirect names its target too. Chains are collapsed when they are written (a → b, then
    // b → c rewrites a's row to a → c), so a move further down changes a's own tombstone, and a
    // purge of a's tags reaches the 301. But the target's own tombstone decides a's answer as
    // well, and it changes alone: c deleted or hidden turns a's 301 into a 410 or a 404 without
    // touching a's row (the lookup cache follows it through `via`). Tagged with c, a CDN's copy
    // of the 301 goes with c's purge, instead of sending clients on to c, and showing where a
    // hidden resource went, until it expires. A 410 or a 404 read through a redirect names its
    // own key only: the resolution does not say which key it went through, and a 404 must be
    // the same as for a key that never existed.
    if (tagged) this.cacheTags.write(response, answer.resource, answer.targetId === undefined ? [answer.id] : [answer.id, answer.targetId]);
    if (answer.location) http.setHeader(response, 'Location', answer.location);
    if (answer.error === 'gone' && answer.alternative) {
      appendList(http, response, 'Link', [`<${answer.alternative}>; rel="alternate"`]);
    }
    http.send(response, typeof rendered.body === 'string' ? rendered.body : JSON.stringify(rendered.body), answer.status);
  }

  /** How headers and bodies are written on this app's HTTP adapter (decided at the first answer). */
  private writing?: { setHeader(response: unknown, name: string, value: string): void; send(response: unknown, body: string, status: number): void };

  private http(): NonNullable<TombstoneResponseWriter['writing']> {
    if (this.writing) return this.writing;
    const adapter = this.adapterHost.httpAdapter;
    if (adapter.getType() !== 'express') {
      return (this.writing = {
        setHeader: (response, name, value) => adapter.setHeader(response, name, value),
        send: (response, body, status) => adapter.reply(response, body, status),
      });
    }
    // Express: Node's own calls. Express's `send()` would add an ETag of the body, and the body
    // holds the request id: a new ETag on every request, for an answer that conditional requests
    // cannot use anyway (RFC 9110 §13.2.1 evaluates them only for 2xx answers). So the body is
    // written as it is, with its length; HEAD gets the headers only, as Node does for any HEAD.
    return (this.writing = {
      setHeader: (response, name, value) => (response as ServerResponse).setHeader(name, value),
      send: (response, body, status) => {
        const res = response as ServerResponse;
        res.statusCode = status;
        res.setHeader('Content-Length', Buffer.byteLength(body));
        res.end(body);
      },
    });
  }

  /** The format of answers that are not HTML: problem details or JSON, by the `problemDetails` option. */
  private readonly jsonFormat: TombstoneFormat;

  /**
   * The media types negotiated (`null`: none, the answer is `jsonFormat`): HTML is offered only
   * to an `Accept` that names `text/…` (a browser's), so API clients negotiate as they always did.
   */
  private readonly jsonOffers: string[] | null;
  private readonly htmlOffers: string[] | null;

  private formatFor(request: TombstoneRequest): TombstoneFormat | 'html' {
    // The commonest Accept values need no negotiation.
    const accept = request.headers.accept;
    if (accept === undefined || accept === '*/*' || accept === 'application/json') return this.jsonFormat;
    // Media types are case-insensitive (RFC 9110 §8.3.1): `TEXT/HTML` names text/ too.
    const offers = typeof accept === 'string' && TEXT_TYPE.test(accept) ? this.htmlOffers : this.jsonOffers;
    if (offers === null) return this.jsonFormat;
    const preferred = new Negotiator(request as never).mediaType(offers);
    if (preferred === 'text/html') return 'html';
    return preferred === 'application/problem+json' && this.options.problemDetails === 'negotiate' ? 'problem' : this.jsonFormat;
  }

  private cacheControl(answer: TombstoneAnswer): string | false {
    const values = this.cacheControls.get(answer.status);
    return values === undefined ? false : answer.scoped ? values.scoped : values.unscoped;
  }
}

/** The `Cache-Control` of each status, unscoped and scoped. */
function cacheControlsOf(cacheControl: ResolvedTombstoneOptions['cacheControl']): Map<number, { unscoped: string | false; scoped: string | false }> {
  const of = (value: string | false) => ({ unscoped: value, scoped: value && scopedCacheControl(value) });
  return new Map([
    [410, of(cacheControl.gone)],
    [301, of(cacheControl.permanentRedirect)],
    [308, of(cacheControl.permanentRedirect)],
    [302, of(cacheControl.temporaryRedirect)],
    [307, of(cacheControl.temporaryRedirect)],
    [404, of(cacheControl.notFound)],
  ]);
}

/**
 * A scoped answer depends on who asks: a shared cache must never hand it to another tenant. So it
 * is `private` (unless `private` or `no-store` says so already), and loses the directives that
 * speak to shared caches only, which `private` contradicts: `public`, which would also let a
 * shared cache store an answer to a request with `Authorization` (RFC 9111 §3.5), and `s-maxage`.
 * A value without them is kept as it is, `private, ` in front.
 */
export function scopedCacheControl(value: string): string {
  // Directives, each with its argument; a quoted argument may hold commas (`no-cache="a, b"`).
  const directives = (value.match(/(?:[^,"]|"(?:[^"\\]|\\.)*")+/g) ?? []).map((d) => d.trim()).filter((d) => d !== '');
  const kept = directives.filter((d) => !/^(?:public|s-maxage)\s*(?:=|$)/i.test(d));
  const rest = kept.length === directives.length ? value : kept.join(', ');
  if (/\b(?:private|no-store)\b/i.test(rest)) return rest;
  return rest === '' ? 'private' : `private, ${rest}`;
}

const ACCEPT = ['Accept'];

/** An `Accept` that names a `text/…` type, in any case. */
const TEXT_TYPE = /text\//i;

/**
 * Adds `values` to a list header the app may have set already (CORS's `Vary: Origin`, a `Link`
 * of its own), as one header: values already there are kept, and none is repeated.
 */
function appendList(adapter: { setHeader(response: unknown, name: string, value: string): unknown }, response: unknown, name: string, values: string[]): void {
  const current = (response as { getHeader?: (name: string) => unknown }).getHeader?.(name);
  // The commonest case: nothing set yet.
  if (current === undefined) {
    adapter.setHeader(response, name, values.length === 1 ? values[0] : values.join(', '));
    return;
  }
  // Vary's members are tokens; a Link's URL may hold commas, so links are kept whole.
  const present = (Array.isArray(current) ? current : current === undefined ? [] : [current])
    .flatMap((value) => (name === 'Vary' ? String(value).split(',') : [String(value)]))
    .map((value) => value.trim())
    .filter((value) => value !== '');
  if (present.length === 0) {
    adapter.setHeader(response, name, values.join(', '));
    return;
  }
  const seen = new Set(present.map((value) => value.toLowerCase()));
  // `Vary: *` already says everything.
  if (name === 'Vary' && seen.has('*')) return;
  adapter.setHeader(response, name, [...present, ...values.filter((value) => !seen.has(value.toLowerCase()))].join(', '));
}
