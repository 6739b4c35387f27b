import { Controller, Get, Param, type Type } from '@nestjs/common';
import { type TombstoneRequest, Tombstoned } from '../src/index.js';
import type { DemoAdapter } from './http.js';

/** The documentation's pages, by key: the current version lives under `docs/v2/`. */
export const DOCS_PAGES: ReadonlyMap<string, { title: string }> = new Map([
  ['docs/v2', { title: 'Documentation, version 2' }],
  ['docs/v2/', { title: 'Documentation, version 2' }],
  ['docs/v2/guide/intro', { title: 'Introduction' }],
  ['docs/v2/guide/install', { title: 'Installation' }],
]);

/**
 * The key of a page: `docs/` and the path after it. Nest 12 spells a catch-all route
 * differently on each adapter: Express names the wildcard (`*path`) and gives its segments, an
 * array; Fastify has a bare `*`, a string.
 */
function pageKey(request: TombstoneRequest): string | undefined {
  const params = request.params as Record<string, string | string[] | undefined> | undefined;
  const path = params?.path ?? params?.['*'];
  if (path === undefined) return undefined;
  return `docs/${Array.isArray(path) ? path.join('/') : path}`;
}

/**
 * `GET /docs/<path>`: pages under `docs/v2/` are live. Sections are moved, deleted and hidden
 * with prefix tombstones (see the seed): `/docs/v1/guide/intro` answers 301 to
 * `/docs/v2/guide/intro`, the query string kept.
 */
export function docsController(adapter: DemoAdapter): Type {
  const route = adapter === 'fastify' ? '*' : '*path';

  @Controller('docs')
  @Tombstoned('doc', { key: pageKey, label: 'Page' })
  class DocsController {
    @Get(route)
    find(@Param() params: Record<string, string | string[]>) {
      const key = pageKey({ method: 'GET', url: '', headers: {}, params: params as Record<string, string> });
      const page = key === undefined ? undefined : DOCS_PAGES.get(key);
      return page ? { key, ...page } : null;
    }
  }
  return DocsController;
}
