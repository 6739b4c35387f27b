import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Prefix tombstones: a row whose `prefix` is true covers its own key and every key that starts
 * with it (see docs/table.md). Released: never edit it; add a new migration instead.
 *
 * The lookup needs no new index: it asks the unique index (scope, resource_type, resource_key)
 * for the key and its candidate prefixes in one scan. The notification triggers need no change:
 * a prefix row announces its key like any row, and a listener drops what is cached under it.
 */
export class AddTombstonePrefix1765238400000 implements MigrationInterface {
  name = 'AddTombstonePrefix1765238400000';

  async up(queryRunner: QueryRunner): Promise<void> {
    // A constant default: no table rewrite (PostgreSQL 11+).
    await queryRunner.query(`ALTER TABLE "tombstones" ADD COLUMN "prefix" boolean NOT NULL DEFAULT false`);
    // A prefix ends at a segment boundary ('/'), has at most 16 segments (the lookup probes that
    // many), is never a merge, and a moved prefix leads to a prefix: the rest of the key is kept.
    // NOT VALID then VALIDATE: the check reads the table without blocking its writes.
    await queryRunner.query(`
      ALTER TABLE "tombstones" ADD CONSTRAINT "tombstones_prefix_check" CHECK (
        NOT "prefix" OR (
          right("resource_key", 1) = '/'
          AND char_length("resource_key") - char_length(replace("resource_key", '/', '')) <= 16
          AND "kind" <> 'merged'
          AND ("target_key" IS NULL OR right("target_key", 1) = '/')
        )
      ) NOT VALID
    `);
    await queryRunner.query(`ALTER TABLE "tombstones" VALIDATE CONSTRAINT "tombstones_prefix_check"`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE "tombstones" DROP CONSTRAINT "tombstones_prefix_check"`);
    await queryRunner.query(`ALTER TABLE "tombstones" DROP COLUMN "prefix"`);
  }
}
