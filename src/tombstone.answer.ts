import { randomUUID } from 'node:crypto';
import { type TombstoneRequest, type TombstoneResolution } from './tombstone.types.js';
import { type TombstoneAnswer } from './tombstone.types.js';


export interface AnswerContext {
  resource: string;
  label: string;
  id: string;
  request: TombstoneRequest;
  requestId: string;
  scoped: boolean;
  /** The route parameter that carries the key, when the key comes from one. */
  param?: string;
}

/** Turns a resolution into the answer the client gets. Never throws. */
export function answerFor(resolution: TombstoneResolution, context: AnswerContext): TombstoneAnswer {
  // Object literals of one shape each (no spreads): this runs for every miss.
  const { resource, label, id, requestId, scoped, request } = context;
  const path = requestPath(request);
  switch (resolution.state) {
    case 'gone':
      return {
        status: 410,
        error: 'gone',
        resource,
        label,
        id,
        path,
        requestId,
        scoped,
        deletedAt: resolution.deletedAt.toISOString(),
        reason: resolution.reason,
        alternative: resolution.alternative,
      };
    case 'moved': {
      const location = buildLocation(request, context.param, id, resolution.target);
      if (location === null) break;
      return {
        status: redirectStatus(request.method, resolution.permanent),
        error: 'moved',
        resource,
        label,
        id,
        path,
        requestId,
        scoped,
        location,
        targetId: resolution.target,
      };
    }
    default:
      break;
  }
  // 'none', 'hidden' and an unbuildable redirect: the same plain 404, fact for fact.
  return notFoundAnswer(resource, label, id, path, requestId, scoped);
}

/** The 404 of a key: the same facts whether it never existed, is hidden or could not be redirected. */
export function notFoundAnswer(resource: string, label: string, id: string, path: string, requestId: string, scoped: boolean): TombstoneAnswer {
  return { status: 404, error: 'not_found', resource, label, id, path, requestId, scoped };
}

/**
 * Method-aware, like GitHub's API: 301 for GET and HEAD, and for other methods 308, which keeps
 * the method and body (RFC 9110 §15.4.9; GitHub sends a temporary 307). 302/307 when temporary.
 */
export function redirectStatus(method: string, permanent: boolean): 301 | 302 | 307 | 308 {
  const safe = method === 'GET' || method === 'HEAD';
  if (permanent) return safe ? 301 : 308;
  return safe ? 302 : 307;
}

/**
 * The same route with the key replaced: built from the route template and the request's own
 * params, each URL-encoded, plus the request's query string. Always a same-origin path
 * (`/x...`, never `//x` or `/\x`) without dot segments; `null` when no such URL can be built.
 */
export function buildLocation(request: TombstoneRequest, param: string | undefined, oldKey: string, newKey: string): string | null {
  try {
    let path: string | null = null;
    const template = routeTemplate(request);
    if (param !== undefined && template !== undefined) {
      const compiled = compile(template);
      if (compiled !== null) path = fillTemplate(compiled, request.params ?? {}, param, newKey);
    }
    path ??= replaceSegment(requestPath(request), oldKey, newKey);
    if (path === null || !isSameOriginPath(path) || hasDotSegment(path)) return null;
    const query = requestQuery(request);
    return query ? `${path}?${query}` : path;
  } catch {
    return null; // e.g. a lone surrogate cannot be percent-encoded
  }
}

export function isSameOriginPath(path: string): boolean {
  return /^\/(?![/\\])[\x21-\x7e]*$/.test(path);
}

/**
 * Whether a path has a `.` or `..` segment, percent-encoded dots and `\` separators included: every client removes
 * them (RFC 3986 §5.2.4; WHATWG URL treats `%2e` as a dot), so `/products/..` leads elsewhere.
 */
export function hasDotSegment(path: string): boolean {
  // Browsers read `\` as `/` in http(s) URLs.
  return /[/\\](?:\.|%2e){1,2}(?=[/\\]|$)/i.test(path);
}

/** The client's request id when it is sane, a new UUID otherwise. */
export function requestIdOf(request: TombstoneRequest, header: string): string {
  const given = request.headers[header.toLowerCase()];
  const value = Array.isArray(given) ? given[0] : given;
  return isRequestId(value) ? value : randomUUID();
}

/**
 * Whether a value can be a request id: it is written in a header and a body, and logged, so it is
 * short printable ASCII without spaces, quotes or separators that a header or a log line could
 * read otherwise (a UUID, a ULID, `req-1`, `svc@host:1/req.42` all are).
 */
export function isRequestId(value: unknown): value is string {
  return typeof value === 'string' && REQUEST_ID.test(value);
}

const REQUEST_ID = /^[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,127}$/;

export function requestPath(request: TombstoneRequest): string {
  const url = request.originalUrl ?? request.url ?? '/';
  const end = url.indexOf('?');
  return end === -1 ? url : url.slice(0, end);
}

function requestQuery(request: TombstoneRequest): string {
  const url = request.originalUrl ?? request.url ?? '';
  const start = url.indexOf('?');
  if (start === -1) return '';
  // Keep the query as sent, but re-encode anything that has no business in a header.
  return url.slice(start + 1).replace(/[^A-Za-z0-9\-._~!$&'()*+,;=:@/?%]/gu, (c) => encodeURIComponent(c));
}

function routeTemplate(request: TombstoneRequest): string | undefined {
  // Express keeps the matched route on `req.route`, Fastify on `req.routeOptions`.
  const express = (request.route as { path?: unknown } | undefined)?.path;
  if (typeof express === 'string') return express;
  const fastify = (request.routeOptions as { url?: unknown } | undefined)?.url;
  return typeof fastify === 'string' ? fastify : undefined;
}

/** A route template as literal text and parameter names, in order; `null` when it has wildcards. */
type CompiledTemplate = { readonly parts: readonly (string | { readonly name: string })[]; readonly names: ReadonlySet<string> };

/** Compiled templates, by template: as many as the app has routes (bounded all the same). */
const templates = new Map<string, CompiledTemplate | null>();
const MAX_TEMPLATES = 1000;

function compile(template: string): CompiledTemplate | null {
  let compiled = templates.get(template);
  if (compiled !== undefined) return compiled;
  compiled = null;
  if (/^[^*{}()?+]*$/.test(template)) {
    const parts: (string | { name: string })[] = [];
    const names = new Set<string>();
    let last = 0;
    for (const match of template.matchAll(/:([A-Za-z_$][\w$]*)/g)) {
      parts.push(template.slice(last, match.index), { name: match[1] });
      names.add(match[1]);
      last = match.index + match[0].length;
    }
    parts.push(template.slice(last));
    compiled = { parts, names };
  }
  if (templates.size >= MAX_TEMPLATES) templates.clear();
  templates.set(template, compiled);
  return compiled;
}

function fillTemplate(template: CompiledTemplate, params: Record<string, string | undefined>, param: string, newKey: string): string | null {
  if (!template.names.has(param)) return null;
  let filled = '';
  for (const part of template.parts) {
    if (typeof part === 'string') {
      filled += part;
      continue;
    }
    const value = part.name === param ? newKey : params[part.name];
    if (typeof value !== 'string') return null;
    filled += encodeURIComponent(value);
  }
  return filled;
}

function replaceSegment(path: string, oldKey: string, newKey: string): string | null {
  const segments = path.split('/');
  for (let i = segments.length - 1; i > 0; i--) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(segments[i]);
    } catch {
      continue;
    }
    if (decoded === oldKey) {
      segments[i] = encodeURIComponent(newKey);
      return segments.join('/');
    }
  }
  return oldKey.includes('/') ? replaceSegments(path, oldKey, newKey) : null;
}

/**
 * A path-like key (a wildcard route's, `guide/intro`) spans several segments: the last run of
 * segments that spells it is replaced by the new key's, each segment encoded.
 */
function replaceSegments(path: string, oldKey: string, newKey: string): string | null {
  const segments = path.split('/');
  const width = oldKey.split('/').length;
  for (let i = segments.length - width; i > 0; i--) {
    let decoded: string;
    try {
      decoded = segments.slice(i, i + width).map(decodeURIComponent).join('/');
    } catch {
      continue;
    }
    if (decoded === oldKey) {
      const replaced = newKey.split('/').map(encodeURIComponent);
      return [...segments.slice(0, i), ...replaced, ...segments.slice(i + width)].join('/');
    }
  }
  return null;
}
