import type { MigrationInterface, QueryRunner } from 'typeorm';
import { installTombstoneCapture, removeTombstoneCapture } from '../src/index.js';
import { Article, Order, User } from './entities.js';

const TRACKED = [Article, User, Order];

export class CreateDemoTables1763769700000 implements MigrationInterface {
  name = 'CreateDemoTables1763769700000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE demo_articles (
        id serial PRIMARY KEY,
        slug text NOT NULL UNIQUE,
        title text NOT NULL,
        tags text[] NOT NULL DEFAULT '{}',
        deleted_at timestamptz
      )`);
    await queryRunner.query(`CREATE TABLE demo_users (id integer PRIMARY KEY, name text NOT NULL)`);
    await queryRunner.query(`
      CREATE TABLE demo_orders (
        tenant text NOT NULL,
        number integer NOT NULL,
        "totalCents" integer NOT NULL,
        PRIMARY KEY (tenant, number)
      )`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE demo_orders, demo_users, demo_articles`);
  }
}

/**
 * Hands the recording of tombstones to the database: after this, deleting, soft-deleting or
 * renaming a row of these tables records its tombstone in the same transaction, whatever runs
 * the statement. TypeORM runs migrations in timestamp order, so its timestamp must be later than
 * that of the shipped `CreateTombstoneCapture1763856000000`, whose functions the triggers call.
 */
export class TrackDemoTables1763942400000 implements MigrationInterface {
  name = 'TrackDemoTables1763942400000';

  async up(queryRunner: QueryRunner): Promise<void> {
    for (const entity of TRACKED) await installTombstoneCapture(queryRunner, entity);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    for (const entity of TRACKED) await removeTombstoneCapture(queryRunner, entity);
  }
}
