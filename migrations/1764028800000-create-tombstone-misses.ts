import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Creates the misses log: 404s that no tombstone explained, one row per (scope, type, key).
 * Released: never edit it; add a new migration instead.
 *
 * The table is written only when the module's `missLog` option is on, in batches, and kept small
 * by the module (`maxRows`, `retentionDays`); the size checks bound what one hostile request can
 * make it store.
 */
export class CreateTombstoneMisses1764028800000 implements MigrationInterface {
  name = 'CreateTombstoneMisses1764028800000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE "tombstone_misses" (
        "id"            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        "scope"         text        NOT NULL DEFAULT '',
        "resource_type" text        NOT NULL,
        "resource_key"  text        NOT NULL,
        "hits"          bigint      NOT NULL DEFAULT 1,
        "first_seen"    timestamptz NOT NULL DEFAULT now(),
        "last_seen"     timestamptz NOT NULL DEFAULT now(),
        "last_referrer" text,
        CONSTRAINT "tombstone_misses_scope_type_key_key" UNIQUE ("scope", "resource_type", "resource_key"),
        CONSTRAINT "tombstone_misses_scope_size_check" CHECK (octet_length("scope") <= 256),
        CONSTRAINT "tombstone_misses_type_size_check"
          CHECK (char_length("resource_type") BETWEEN 1 AND 128),
        CONSTRAINT "tombstone_misses_key_size_check"
          CHECK (octet_length("resource_key") BETWEEN 1 AND 2048),
        CONSTRAINT "tombstone_misses_referrer_size_check" CHECK (char_length("last_referrer") <= 512),
        CONSTRAINT "tombstone_misses_hits_check" CHECK ("hits" >= 1),
        CONSTRAINT "tombstone_misses_seen_check" CHECK ("first_seen" <= "last_seen")
      )
    `);
    // Serves retention and the row cap (oldest first, newest first) as an index-only scan, and
    // "what was missed lately".
    await queryRunner.query(`CREATE INDEX "tombstone_misses_last_seen_idx" ON "tombstone_misses" ("last_seen", "id")`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE "tombstone_misses"`);
  }
}
