import type { DynamicModule, INestApplication, NestApplicationOptions } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { docsController } from './docs.js';
import { SLUG_MAX_LENGTH } from './validation.js';

export type DemoAdapter = 'express' | 'fastify';

/**
 * The demo's HTTP application, as `npm start` runs it and the e2e suite tests it; `init()` or
 * `listen()` it next.
 *
 * - `useSecurityHeaders()`: helmet's headers on every answer, the tombstone module's 404, 410 and
 *   redirects and Nest's own errors included. `X-Content-Type-Options: nosniff` keeps a browser
 *   from reading a JSON body that echoes a client's key as HTML; `X-Powered-By` goes.
 * - Fastify refuses a route parameter longer than `maxParamLength` (100 by default, counted in
 *   UTF-16 units once decoded) with a 414: raised so that every slug the demo accepts can be
 *   reached, as on Express.
 */
export async function createDemoApp(given: DynamicModule, adapter: DemoAdapter, options: NestApplicationOptions = {}): Promise<INestApplication> {
  // The documentation's catch-all route is spelled for the adapter (see docs.ts).
  const module: DynamicModule = { ...given, controllers: [...(given.controllers ?? []), docsController(adapter)] };
  const app =
    adapter === 'fastify'
      ? await NestFactory.create(module, new FastifyAdapter({ maxParamLength: 2 * SLUG_MAX_LENGTH }), options)
      : await NestFactory.create(module, options);
  app.useSecurityHeaders();
  return app;
}
