import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Logger } from '@nestjs/common';
import { type EmbeddedPostgresHandle, startEmbeddedPostgres } from '#dev/embedded-postgres';
import { AppModule } from './app.module.js';
import { createDemoApp } from './http.js';
import { seed } from './seed.js';

/**
 * `npm start`: the demo on http://localhost:3000, on the loopback interface only: anyone who can
 * reach it can edit its articles (PORT and HOST override, e.g. HOST=0.0.0.0 in a container). Uses DATABASE_URL when set,
 * otherwise an embedded PostgreSQL kept in .data/postgres (git-ignored) so restarts keep data.
 * HTTP_ADAPTER=fastify runs it on Fastify instead of Express. WEBHOOK_URL with WEBHOOK_SECRET (a
 * `whsec_` secret) and CDN_PURGE_URL send every tombstone change to a webhook and a purge endpoint.
 * METRICS=1 serves the module's metrics as Prometheus text at /metrics.
 */
async function main(): Promise<void> {
  const logger = new Logger('Demo');
  let embedded: EmbeddedPostgresHandle | undefined;
  let databaseUrl = process.env.DATABASE_URL;
  if (!databaseUrl) {
    const dataDir = path.resolve('.data', 'postgres');
    logger.log(`Starting the embedded PostgreSQL in ${dataDir} ...`);
    embedded = await startEmbeddedPostgres({ dataDir });
    databaseUrl = embedded.url;
  }

  // The admin endpoints are never open: ADMIN_TOKEN, or a fresh random token printed below.
  const adminToken = process.env.ADMIN_TOKEN || randomBytes(18).toString('base64url');
  const events = { webhookUrl: process.env.WEBHOOK_URL, webhookSecret: process.env.WEBHOOK_SECRET, purgeUrl: process.env.CDN_PURGE_URL };
  const metrics = process.env.METRICS === '1';
  const module = AppModule.forRoot(databaseUrl, { adminToken, events, metrics });
  const app = await createDemoApp(module, process.env.HTTP_ADAPTER === 'fastify' ? 'fastify' : 'express');
  app.enableShutdownHooks();
  // Initialise before seeding: the module hands actors and reasons to the database from its
  // onModuleInit on, and checks the capture triggers there.
  await app.init();
  if (await seed(app)) logger.log('Seeded the demo data.');

  const port = Number(process.env.PORT ?? 3000);
  await app.listen(port, process.env.HOST || '127.0.0.1');
  const base = `http://localhost:${port}`;
  logger.log(`nestjs-tombstones demo listening on ${base}. Try:
  curl -i ${base}/articles/hello-world          # 200, the article
  curl -i ${base}/articles/first-draft          # 301 straight to /articles/hello-world
  curl -i ${base}/articles/OLD-HELLO            # 301 to /articles/hello-world (article keys are normalised: lower case)
  curl -i ${base}/articles/summer-sale-2025     # 410 Gone, with deletedAt, reason and a Link
  curl -i ${base}/articles/spring-sale-2025     # 410: moved, then deleted
  curl -i ${base}/articles/draft-notes          # 404, same as /articles/never-was
  curl -i -X PATCH ${base}/articles/old-hello -H 'content-type: application/json' -d '{"title":"x"}'  # 308
  curl -i ${base}/users/2                       # 301 to /users/1 (merged)
  curl -i ${base}/orders/9001 -H 'X-Tenant-Id: acme'    # 410 for acme
  curl -i ${base}/orders/9001 -H 'X-Tenant-Id: globex'  # 404 for everyone else
  curl -i ${base}/articles/summer-sale-2025 -H 'Accept: application/problem+json'  # RFC 9457
  open ${base}/articles/summer-sale-2025 in a browser: the 410 as an HTML page (and ${base}/articles/never-was, the 404)
  curl -s ${base}/health                        # the module's health (Terminus): database, listener, filter, breaker
Admin web page: ${base}/admin/ui  (sign in with the admin token: ${adminToken})
Admin endpoints (token${process.env.ADMIN_TOKEN ? ' from ADMIN_TOKEN' : ' generated for this run; set ADMIN_TOKEN to choose one'}):
  curl -s ${base}/admin/tombstones -H 'Authorization: Bearer ${adminToken}'
  curl -s ${base}/admin/tombstones/stale?days=30 -H 'Authorization: Bearer ${adminToken}'
  curl -s -X POST ${base}/admin/tombstones/resolve -H 'Authorization: Bearer ${adminToken}' -H 'content-type: application/json' -d '{"type":"article","keys":["old-hello","summer-sale-2025","hello-world"]}'`);
  // Origins only: a URL's path and query may hold a token.
  const sent = [events.webhookUrl && `a webhook at ${new URL(events.webhookUrl).origin}`, events.purgeUrl && `a purge endpoint at ${new URL(events.purgeUrl).origin}`].filter(Boolean);
  logger.log(
    sent.length
      ? `Tombstone events go to: ${sent.join(', ')}; article answers carry Surrogate-Key. Events admin: curl -s ${base}/admin/events/sinks -H 'Authorization: Bearer ${adminToken}'`
      : 'Tombstone events: set WEBHOOK_URL and WEBHOOK_SECRET, or CDN_PURGE_URL, to send every change to a webhook or a CDN purge endpoint.',
  );

  logger.log(metrics ? `Metrics (Prometheus text): curl -s ${base}/metrics` : 'Metrics: set METRICS=1 to serve them as Prometheus text at /metrics.');

  const shutdown = async () => {
    await app.close();
    await embedded?.stop();
    process.exit(0);
  };
  process.once('SIGINT', () => void shutdown());
  process.once('SIGTERM', () => void shutdown());
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
