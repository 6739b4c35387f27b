import { randomBytes } from 'node:crypto';
import { type DynamicModule, Module } from '@nestjs/common';
import { RouterModule } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { TombstoneAdminModule } from '../src/admin/index.js';
import { TombstoneEventsModule } from '../src/events/index.js';
import { TombstoneMetricsModule } from '../src/metrics/index.js';
import { TOMBSTONE_ENTITIES, TOMBSTONE_MIGRATIONS, TombstoneModule } from '../src/index.js';
import { AdminTokenGuard } from './admin.js';
import { ArticlesController, ArticlesService } from './articles.js';
import { DEMO_ENTITIES } from './entities.js';
import { demoMetrics } from './metrics.js';
import { HealthModule } from './health.js';
import { CreateDemoTables1763769700000, TrackDemoTables1763942400000 } from './migrations.js';
import { OrdersController, OrdersService } from './orders.js';
import { UsersController, UsersService } from './users.js';

/** Where the demo sends its tombstone events: `npm start` reads them from the environment. */
export interface DemoEvents {
  /** WEBHOOK_URL: every change is POSTed there, signed with `webhookSecret` (Standard Webhooks). */
  webhookUrl?: string;
  /** WEBHOOK_SECRET: a `whsec_` secret. */
  webhookSecret?: string;
  /** CDN_PURGE_URL: a generic purge endpoint, POSTed `{ tags, events }` for every change. */
  purgeUrl?: string;
}

@Module({})
export class AppModule {
  /**
   * The demo app on the PostgreSQL at `databaseUrl`; migrations run at start-up. The module
   * refuses to start if the capture triggers of a tracked entity are missing (`captureCheck`).
   * The admin endpoints live under /admin/tombstones, behind `adminToken` (a random one when
   * none is given: never open), with the admin web page at /admin/ui; 404s are logged as misses. With `events`, answers of article routes (found ones included)
   * carry `Surrogate-Key`, and every change reaches the webhook and the purge endpoint. With
   * `metrics`, /metrics serves the module's metrics as Prometheus text. GET /health reports the
   * module's health (Terminus).
   */
  static forRoot(databaseUrl: string, { adminToken = randomBytes(18).toString('base64url'), events = {} as DemoEvents, metrics = false } = {}): DynamicModule {
    const { webhookUrl, webhookSecret, purgeUrl } = events;
    const scrape = metrics ? demoMetrics() : undefined;
    if (webhookUrl && !webhookSecret) throw new Error('WEBHOOK_URL needs WEBHOOK_SECRET: a whsec_ secret to sign the webhooks with.');
    const withEvents = Boolean(webhookUrl || purgeUrl);
    return {
      module: AppModule,
      imports: [
        TypeOrmModule.forRoot({
          type: 'postgres',
          url: databaseUrl,
          entities: [...TOMBSTONE_ENTITIES, ...DEMO_ENTITIES],
          migrations: [...TOMBSTONE_MIGRATIONS, CreateDemoTables1763769700000, TrackDemoTables1763942400000],
          migrationsRun: true,
          synchronize: false,
        }),
        // Article slugs are lower case: a link to one in any case (or Unicode form) finds its tombstone.
        // missLog: the 404s no tombstone explained, for the admin page's misses screen.
        TombstoneModule.forRoot({ isGlobal: true, cacheTags: withEvents, missLog: true, normalizeKeys: { article: ['lower', 'nfc'] } }),
        // ui: the admin web page at /admin/ui (sign in with the admin token).
        TombstoneAdminModule.forRoot({ guard: new AdminTokenGuard(adminToken), ui: true }),
        RouterModule.register([{ path: 'admin', module: TombstoneAdminModule }]),
        HealthModule,
        ...(withEvents
          ? [
              TombstoneEventsModule.forRoot({
                webhooks: webhookUrl ? [{ url: webhookUrl, secret: webhookSecret!, name: 'demo' }] : [],
                purge: purgeUrl ? [{ provider: 'http', url: purgeUrl, name: 'demo' }] : [],
              }),
            ]
          : []),
        ...(scrape ? [TombstoneMetricsModule.forRoot({ meterProvider: scrape.meterProvider })] : []),
      ],
      controllers: [ArticlesController, UsersController, OrdersController, ...(scrape ? [scrape.controller] : [])],
      providers: [ArticlesService, UsersService, OrdersService],
    };
  }
}
