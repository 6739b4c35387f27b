import type { ServerResponse } from 'node:http';
import { Inject, Injectable } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import Negotiator from 'negotiator';
import { TombstoneCacheTags } from './tombstone.cache-tags.js';
import { TOMBSTONE_OPTIONS } from './tombstone.constants.js';
import type { ResolvedTombstoneOptions } from './tombstone.options.js';
import { jsonText, type PreparedBytes, type PreparedReply, SLOT_KEY, SLOT_REQUEST_ID, slotsOf, TombstonePreparedAnswers } from './tombstone.prepared.js';
import { type RenderedAnswer, type RenderedPage, type TombstoneFormat, TombstoneRenderer } from './tombstone.renderer.js';
import { type TombstoneAnswer, type TombstonedSettings, type TombstoneRequest } from './tombstone.types.js';

/** How headers and bodies are written. */
interface Writing {
  setHeader(response: unknown, name: string, value: string): void;
  send(response: unknown, body: string, status: number): void;
}

/** Writes tombstone answers: status, headers and body, identically on Express and Fastify. */
@Injectable()
export class TombstoneResponseWriter {
  constructor(
    private readonly adapterHost: HttpAdapterHost,
    @Inject(TOMBSTONE_OPTIONS) private readonly options: ResolvedTombstoneOptions,
    @Inject(TombstoneRenderer) private readonly renderer: TombstoneRenderer,
    private readonly cacheTags: TombstoneCacheTags,
    private readonly prepared: TombstonePreparedAnswers,
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
    this.emit(this.http(), response, answer, rendered, settings, tagged);
  }

  /**
   * Writes a prepared answer (see `TombstonePreparedAnswers`): the same status, headers and body
   * bytes as `write()` would, made once and filled in. The request asked for JSON in a way that
   * needs no negotiation (`TombstonePreparedAnswers.accepts()`).
   */
  writePrepared(reply: PreparedReply, request: TombstoneRequest, response: unknown, settings: TombstonedSettings): void {
    const prepared = reply.prepared;
    if (prepared.bytes === undefined) prepared.bytes = this.prepare(prepared.answer, settings);
    const bytes = prepared.bytes;
    if (bytes === null) return this.write(reply.answer(), request, response, settings);
    const http = this.http();
    for (const [name, value, list] of bytes.headers) {
      if (list !== undefined) appendList(http, response, name, list);
      else http.setHeader(response, name, value === SLOT_REQUEST_ID ? reply.requestId : value);
    }
    let body = '';
    for (const part of bytes.body) {
      body += typeof part === 'string' ? part : part === SLOT_REQUEST_ID ? reply.requestId : part === SLOT_KEY ? jsonText(reply.key) : jsonText(reply.path);
    }
    http.send(response, body, bytes.status);
  }

  /**
   * The bytes of a prepared answer: `write()`'s, recorded, with the sentinels turned into slots.
   * `null` when a header would hold the key or the path (headers escape them otherwise than JSON).
   */
  private prepare(answer: TombstoneAnswer, settings: TombstonedSettings): PreparedBytes | null {
    const headers: [string, string][] = [];
    let sent: { body: string; status: number } | undefined;
    const recorder = {
      setHeader: (_response: unknown, name: string, value: string) => void headers.push([name, value]),
      send: (_response: unknown, body: string, status: number) => void (sent = { body, status }),
    };
    // A response with no header yet: each list header is set whole, and is added to at each use.
    this.emit(recorder, {}, answer, this.renderer.render(answer, this.jsonFormat), settings, false);
    if (sent === undefined) return null;
    const prepared: PreparedBytes['headers'][number][] = [];
    for (const [name, value] of headers) {
      const slots = slotsOf(value, this.prepared.sentinels);
      if (slots.length === 1 && slots[0] === SLOT_REQUEST_ID) prepared.push([name, SLOT_REQUEST_ID]);
      else if (slots.some((slot) => typeof slot !== 'string')) return null;
      // Vary's members are tokens; a Link is one value (its URL may hold a comma).
      else if (name === 'Vary') prepared.push([name, value, value.split(', ')]);
      else if (name === 'Link') prepared.push([name, value, [value]]);
      else prepared.push([name, value]);
    }
    return { status: sent.status, headers: prepared, body: slotsOf(sent.body, this.prepared.sentinels) };
  }

  /** Sets an answer's headers in their order, then sends its status and body. */
  private emit(http: Writing, response: unknown, answer: TombstoneAnswer, rendered: RenderedAnswer | RenderedPage, settings: TombstonedSettings | undefined, tagged: boolean): void {
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
  private writing?: Writing;

  private http(): Writing {
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
function appendList(adapter: { setHeader(response: unknown, name: string, value: string): unknown }, response: unknown, name: string, values: readonly string[]): void {
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
