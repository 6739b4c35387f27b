import type { MigrationInterface, QueryRunner } from 'typeorm';

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
