import type { CanActivate, Type } from '@nestjs/common';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';

/**
 * Options of `TombstoneAdminModule.forRoot()`, or what `forRootAsync()`'s factory returns. The
 * module refuses to start without `guard`, unless `allowWithoutAccessControl` says, on purpose,
 * that it may. Each field's initialiser below is its default.
 *
 * @example
 * TombstoneAdminModule.forRoot({ guard: AdminTokenGuard, actor: { header: 'x-admin-user' }, alternativeHosts: ['shop.example.com'] });
 */
export class TombstoneAdminOptions {
  /**
   * Decides who may use the admin endpoints: a guard class (instantiated with the module's
   * injector, so it may inject your services) or a guard instance. Throw
   * `UnauthorizedException` for 401, return `false` (or throw `ForbiddenException`) for 403.
   * Default: none (required, unless `allowWithoutAccessControl`).
   */
  guard?: Type<CanActivate> | CanActivate = undefined;

  /**
   * Serves the admin endpoints to anyone. For local development only: it is logged loudly at
   * every start, and refused when `NODE_ENV` is `production`. Default: `false`.
   */
  allowWithoutAccessControl?: boolean = false;

  /**
   * Who acts, recorded on every change: `{ header: 'x-admin-user' }` (a header your proxy sets),
   * or a function of the request. Default: none (the authenticated user your guard stored on the
   * request: `req.user.id`, `.sub`, `.username` or `.email`, the first that is set).
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the app's own request type
  actor?: { header: string } | ((request: any) => string | number | null | undefined) = undefined;

  /**
   * Hosts that an absolute `alternative` link may point to (`https://shop.example.com/...`).
   * Relative links (`/articles/current`) are always accepted. Default: `[]`.
   */
  alternativeHosts?: string[] = [];

  /** Most keys one batch resolve may ask about. Default: `1000`. */
  maxResolveKeys?: number = 1000;

  /** Largest page of a listing. Default: `500` (the default page is 50). */
  maxPageSize?: number = 500;

  /** Most rows one import may hold. Default: `200000`. */
  maxImportRows?: number = 200_000;

  /** Largest import body (CSV or NDJSON), in bytes. Default: `67108864` (64 MiB). */
  maxImportBytes?: number = 64 * 1024 * 1024;

  /**
   * Serves the admin web page at `<mount>/ui/` (e.g. `/admin/ui/`): plain HTML, JavaScript
   * modules and CSS shipped in the package. The page holds no data: everything it shows comes
   * from the guarded endpoints, with the operator's bearer token or the app's same-origin
   * cookies. `true` serves the page's files to anyone (a bearer-token app cannot send a header
   * on navigation); `{ guardPage: true }` puts `guard` in front of them too (a cookie-session
   * app). Default: `false` (no page: the module is an API unless asked).
   */
  ui?: boolean | { guardPage?: boolean } = false;
}

/** The admin options once resolved: every field set, but `guard` and `actor`, whose default is none. Internal. */
export type ResolvedTombstoneAdminOptions = Flat<
  Omit<Required<TombstoneAdminOptions>, 'guard' | 'actor' | 'ui'> & Pick<TombstoneAdminOptions, 'guard' | 'actor'> & { ui: false | { guardPage: boolean } }
>;
type Flat<T> = { [K in keyof T]: T[K] };

/** Highest value of each numeric option; all start at 1. */
const MAXIMA = { maxResolveKeys: 10_000, maxPageSize: 10_000, maxImportRows: 10_000_000, maxImportBytes: 4 * 1024 * 1024 * 1024 };
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HOST = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d{1,5})?$/;

/**
 * Applies the defaults and checks every option once, at bootstrap. An option that is
 * `undefined` is not given; any other value is checked.
 */
export function resolveTombstoneAdminOptions(options: TombstoneAdminOptions | undefined): ResolvedTombstoneAdminOptions {
  const given = options ?? {};
  const fail = (message: string, ...solutions: string[]): never => {
    throw new TombstoneConfigurationError(`TombstoneAdminModule: ${message}`, solutions);
  };
  if (typeof given !== 'object') fail('options must be an object.');
  const defaults = new TombstoneAdminOptions();
  const resolved = { ...defaults } as Record<string, unknown>;
  for (const [key, value] of Object.entries(given)) {
    if (!Object.hasOwn(defaults, key)) fail(`unknown option '${key}'.`, `Use only: ${Object.keys(defaults).join(', ')}.`);
    if (value !== undefined) resolved[key] = value;
  }
  const o = resolved as ResolvedTombstoneAdminOptions;
  const { guard, allowWithoutAccessControl, actor, alternativeHosts } = o;
  if (guard !== undefined && typeof guard !== 'function' && typeof (guard as CanActivate)?.canActivate !== 'function') {
    fail('guard must be a guard class or an object with canActivate().');
  }
  if (typeof allowWithoutAccessControl !== 'boolean') fail('allowWithoutAccessControl must be true or false.');
  if (guard === undefined && !allowWithoutAccessControl) {
    fail(
      'the admin endpoints need an access control, and none was given.',
      'Pass `guard`: a guard class or instance that authenticates your operators, e.g. guard: AdminTokenGuard.',
      'For local development only: allowWithoutAccessControl: true (refused when NODE_ENV is production).',
    );
  }
  if (guard === undefined && process.env.NODE_ENV === 'production') {
    fail('allowWithoutAccessControl is refused when NODE_ENV is production.', 'Pass `guard`.');
  }
  if (guard !== undefined && allowWithoutAccessControl) {
    fail('pass either `guard` or `allowWithoutAccessControl: true`, not both.');
  }
  if (actor !== undefined && typeof actor !== 'function') {
    const header = (actor as { header?: unknown })?.header;
    if (typeof actor !== 'object' || Object.keys(actor).length !== 1 || typeof header !== 'string' || !HEADER_NAME.test(header)) {
      fail('actor must be { header: name } or a function of the request.');
    }
  }
  if (!Array.isArray(alternativeHosts) || alternativeHosts.some((host) => typeof host !== 'string' || !HOST.test(host.toLowerCase()))) {
    fail('alternativeHosts must be a list of host names (with an optional port), e.g. ["shop.example.com"].');
  }
  for (const [name, max] of Object.entries(MAXIMA)) {
    const value = o[name as keyof typeof MAXIMA];
    if (!Number.isInteger(value) || value < 1 || value > max) fail(`${name} must be a whole number from 1 to ${max}.`);
  }
  return { ...o, alternativeHosts: alternativeHosts.map((host) => host.toLowerCase()), ui: resolveUi(o.ui, fail) };
}

function resolveUi(ui: unknown, fail: (message: string) => never): false | { guardPage: boolean } {
  if (ui === false) return false;
  if (ui === true) return { guardPage: false };
  const guardPage = (ui as { guardPage?: unknown } | null)?.guardPage;
  if (typeof ui !== 'object' || ui === null || Object.keys(ui).some((key) => key !== 'guardPage') || (guardPage !== undefined && typeof guardPage !== 'boolean')) {
    fail('ui must be true, false or { guardPage: true | false }.');
  }
  return { guardPage: guardPage === true };
}
