import { type DynamicModule, Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { TOMBSTONE_ENTITIES, TOMBSTONE_MIGRATIONS, TombstoneModule } from '../src/index.js';
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
   */
  static forRoot(databaseUrl: string): DynamicModule {
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
      ],
      controllers: [ArticlesController, UsersController, OrdersController],
      providers: [ArticlesService, UsersService, OrdersService],
    };
  }
}
