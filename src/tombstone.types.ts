// Types shared across the module's parts. A leaf: it imports nothing, so that any file can
// import it without forming a cycle.

/**
 * What happened to a key:
 * - `deleted`: gone for good, answered with 410 Gone;
 * - `hidden`: soft-deleted or masked, answered with a 404 like a key that never existed;
 * - `moved`: renamed, answered with a redirect to `target`;
 * - `merged`: folded into another record, answered with a redirect to `target`.
 */
export type TombstoneKind = 'deleted' | 'hidden' | 'moved' | 'merged';

export const TOMBSTONE_KINDS: readonly TombstoneKind[] = ['deleted', 'hidden', 'moved', 'merged'];

/** Anything with HTTP headers and route params: an Express request or a Fastify request. */
export interface TombstoneRequest {
  method: string;
  url: string;
  originalUrl?: string;
  headers: Record<string, string | string[] | undefined>;
  params?: Record<string, string | undefined>;
  [key: string]: unknown;
}

/**
 * Where the scope (tenant, region, site) of a request comes from. A request-scoped tombstone is
 * only ever looked up in that scope; every other scope's tombstones stay invisible to it.
 * - `{ header: 'x-tenant-id' }`: a request header;
 * - `{ param: 'tenant' }`: a route parameter;
 * - a function of the request (e.g. `(req) => req.user?.tenantId`), sync or async.
 * A missing value means the unscoped (`''`) scope.
 */
export type TombstoneScopeSource =
  | { header: string }
  | { param: string }
  | ((request: TombstoneRequest) => string | null | undefined | Promise<string | null | undefined>);

/** The settings of a `@Tombstoned()` route, carried by its wrapper. Internal. */
export interface TombstonedSettings {
  readonly type: string;
  readonly param: string;
  readonly key?: (request: TombstoneRequest) => string | undefined;
  readonly scope?: TombstoneScopeSource;
  readonly label: string;
  readonly emptyMeansNotFound: boolean;
  /** Whether a found resource's answer carries the cache tag header too. */
  readonly cacheTags: boolean;
  /** "Did you mean" on 404s: off, for requests that prefer HTML, or for every request. */
  readonly suggest: false | 'html' | 'always';
}

/**
 * What a lookup of (scope, type, key) answers, with chains already followed to their end. Every
 * answer from a tombstone carries the `id` of the key's own tombstone row (the one whose hits
 * `TombstoneHitCounter` counts), even when the chain's end decided the answer.
 */
export type TombstoneResolution =
  | { readonly state: 'none' }
  | { readonly state: 'hidden'; readonly id: string }
  | {
      readonly state: 'gone';
      readonly id: string;
      readonly deletedAt: Date;
      readonly reason: string | null;
      readonly alternative: string | null;
    }
  | {
      readonly state: 'moved';
      readonly id: string;
      readonly target: string;
      readonly permanent: boolean;
      readonly merged: boolean;
    };

/** The resolution of a key without a (live) tombstone. */
export const NO_TOMBSTONE: TombstoneResolution = Object.freeze({ state: 'none' });

/** What `TombstoneService.lookup()` read: the answer and how long it holds. Internal. */
export interface TombstoneLookupResult {
  readonly resolution: TombstoneResolution;
  /** The key the answer was read through (a redirect's target), whose changes change it. */
  readonly via: string | null;
  /** When the answer stops holding (an expiry, in ms since the epoch); `null`: not by itself. */
  readonly validUntil: number | null;
  readonly cacheable: boolean;
}

/**
 * Keys of one (scope, type) whose answer a write changed: `listed` now have a tombstone that is
 * not `hidden`, `unlisted` are the others. Internal.
 */
export interface TombstoneChange {
  readonly scope: string;
  readonly type: string;
  readonly listed: readonly string[];
  readonly unlisted: readonly string[];
}

/** What changed, as a notification says: some keys of one (scope, type), all of it, or anything. */
export type TombstoneInvalidation = TombstoneChange | { readonly scope: string; readonly type: string; readonly all: true } | { readonly all: true };

/** The facts of one answer, before a renderer turns them into a body. */
export interface TombstoneAnswer {
  readonly status: 301 | 302 | 307 | 308 | 404 | 410;
  readonly error: 'not_found' | 'gone' | 'moved';
  /** The resource type, e.g. `article`. */
  readonly resource: string;
  /** Human name of the type, e.g. `Article`. */
  readonly label: string;
  /** The key the client asked for. */
  readonly id: string;
  /** The request path (no query string). */
  readonly path: string;
  readonly requestId: string;
  /** Redirects: where the resource lives now, a same-origin relative URL. */
  readonly location?: string;
  /** Redirects: the key the resource lives at now. */
  readonly targetId?: string;
  readonly deletedAt?: string;
  readonly reason?: string | null;
  readonly alternative?: string | null;
  /** Whether a scope was involved: scoped answers are never publicly cacheable. */
  readonly scoped: boolean;
  /**
   * 404s of routes with `suggest`: up to 3 live keys like the one asked for, most alike first,
   * each with its same-origin link. Absent when there are none.
   */
  readonly suggestions?: readonly { readonly id: string; readonly location: string }[];
}
