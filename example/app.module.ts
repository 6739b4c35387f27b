import { randomBytes } from 'node:crypto';
import { type DynamicModule, Module } from '@nestjs/common';
import { RouterModule } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { TombstoneAdminModule } from '../src/admin/index.js';
import { TOMBSTONE_ENTITIES, TOMBSTONE_MIGRATIONS, TombstoneModule } from '../src/index.js';
import { AdminTokenGuard } from './admin.js';
import { ArticlesController, ArticlesService } from './articles.js';
import { DEMO_ENTITIES } from './entities.js';
import { CreateDemoTables1763769700000, TrackDemoTables1763942400000 } from './migrations.js';
import { OrdersController, OrdersService } from './orders.js';
import { UsersController, UsersService } from './users.js';

@Module({})
export class AppModule {
  /**
   * The demo app on the PostgreSQL at `databaseUrl`; migrations run at start-up. The module
   * refuses to start if the capture triggers of a tracked entity are missing (`captureCheck`).
   * The admin endpoints live under /admin/tombstones, behind `adminToken` (a random one when
   * none is given: never open).
   */
  static forRoot(databaseUrl: string, { adminToken = randomBytes(18).toString('base64url') } = {}): DynamicModule {
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
        TombstoneModule.forRoot({ isGlobal: true }),
        TombstoneAdminModule.forRoot({ guard: new AdminTokenGuard(adminToken) }),
        RouterModule.register([{ path: 'admin', module: TombstoneAdminModule }]),
      ],
      controllers: [ArticlesController, UsersController, OrdersController],
      providers: [ArticlesService, UsersService, OrdersService],
    };
  }
}
