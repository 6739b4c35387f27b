import { isSameOriginPath } from '../../src/tombstone.answer.js';
import type { TombstoneRequest } from '../../src/tombstone.types.js';

/** An Express request as Nest hands it over: the matched route on `req.route`. */
export function expressRequest(url: string, params: Record<string, string>, template = '/articles/:slug', method = 'GET'): TombstoneRequest {
  return { method, url, originalUrl: url, headers: {}, params, route: { path: template } };
}

/** A Fastify request: the matched route on `req.routeOptions`, no `originalUrl`. */
export function fastifyRequest(url: string, params: Record<string, string>, template = '/articles/:slug', method = 'GET'): TombstoneRequest {
  return { method, url, headers: {}, params, routeOptions: { url: template } };
}

export const ADAPTERS = [
  ['Express', expressRequest],
  ['Fastify', fastifyRequest],
] as const;

/** What every Location must look like, whatever the keys. */
export function expectSafeLocation(location: string): void {
  const [path] = location.split('?', 1);
  expect({ location, sameOrigin: isSameOriginPath(path) }).toEqual({ location, sameOrigin: true });
  expect(location).toMatch(/^\/[^/\\]/);
  // eslint-disable-next-line no-control-regex
  expect(location).not.toMatch(/[\r\n \t\u0000-\u001f\u007f]/);
  expect(location).toMatch(/^[\x21-\x7e]+$/); // printable ASCII only
  // Resolved against the site, it stays on the site.
  expect(new URL(location, 'https://site.test/articles/a').origin).toBe('https://site.test');
}
