import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Creates the tombstone table. Released: never edit it; add a new migration instead.
 * The constraints are the module's invariants; the service relies on them.
 */
export class CreateTombstones1763769600000 implements MigrationInterface {
  name = 'CreateTombstones1763769600000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE "tombstones" (
        "id"            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        "scope"         text        NOT NULL DEFAULT '',
        "resource_type" text        NOT NULL,
        "resource_key"  text        NOT NULL,
        "kind"          text        NOT NULL,
        "target_key"    text,
        "permanent"     boolean     NOT NULL DEFAULT true,
        "reason"        text,
        "alternative"   text,
        "actor"         text,
        "occurred_at"   timestamptz NOT NULL DEFAULT now(),
        "expires_at"    timestamptz,
        "metadata"      jsonb       NOT NULL DEFAULT '{}'::jsonb,
        "hit_count"     bigint      NOT NULL DEFAULT 0,
        "last_hit_at"   timestamptz,
        "created_at"    timestamptz NOT NULL DEFAULT now(),
        "updated_at"    timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT "tombstones_scope_type_key_key" UNIQUE ("scope", "resource_type", "resource_key"),
        CONSTRAINT "tombstones_kind_check"
          CHECK ("kind" IN ('deleted', 'hidden', 'moved', 'merged')),
        CONSTRAINT "tombstones_target_check"
          CHECK (("kind" IN ('moved', 'merged')) = ("target_key" IS NOT NULL)),
        CONSTRAINT "tombstones_no_self_target_check"
          CHECK ("target_key" <> "resource_key"),
        CONSTRAINT "tombstones_alternative_check"
          CHECK ("alternative" IS NULL OR "kind" = 'deleted'),
        CONSTRAINT "tombstones_scope_size_check" CHECK (octet_length("scope") <= 256),
        CONSTRAINT "tombstones_type_size_check"
          CHECK (char_length("resource_type") BETWEEN 1 AND 128),
        CONSTRAINT "tombstones_key_size_check"
          CHECK (octet_length("resource_key") BETWEEN 1 AND 2048),
        CONSTRAINT "tombstones_target_size_check"
          CHECK (octet_length("target_key") BETWEEN 1 AND 2048),
        CONSTRAINT "tombstones_reason_size_check" CHECK (char_length("reason") <= 2000),
        CONSTRAINT "tombstones_alternative_size_check" CHECK (char_length("alternative") <= 2048),
        CONSTRAINT "tombstones_actor_size_check" CHECK (char_length("actor") <= 256),
        CONSTRAINT "tombstones_metadata_check" CHECK (jsonb_typeof("metadata") = 'object'),
        CONSTRAINT "tombstones_hit_count_check" CHECK ("hit_count" >= 0)
      )
    `);
    // Serves chain collapsing: "which tombstones point at this key?"
    await queryRunner.query(`
      CREATE INDEX "tombstones_target_idx" ON "tombstones" ("scope", "resource_type", "target_key")
      WHERE "target_key" IS NOT NULL
    `);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE "tombstones"`);
  }
}
