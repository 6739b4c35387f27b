import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Lets an instance start its lookup cache from a stored copy of the membership filter instead of
 * reading the whole tombstone table. Released: never edit it; add a new migration instead.
 *
 * - `tombstones.changed_xid`: the id (`xid8`) of the transaction that last changed what the
 *   filter holds of the row: its scope, type, key, kind or expiry. Set by the table's triggers,
 *   whoever writes (the recording API, capture, the admin endpoints, imports, psql, logical
 *   replication): on insert (the column's default, and a trigger when a value is given), and on
 *   update when one of those columns changed (hit counts and the like keep it, and stay HOT
 *   updates). Rows older than this migration keep NULL: every snapshot is newer than they are.
 *   A partial index serves "the rows changed since", and only holds rows changed since.
 * - `tombstone_filter_snapshots`: at most one row, the filter's bits with what reading them
 *   takes (layout, hash count, salt, false-positive rate, capacity, key count), a checksum, and
 *   its watermark: the snapshot (`pg_snapshot`) taken before the reads it was built from. Every
 *   row whose `changed_xid` that snapshot sees as committed is in the bits; a starting instance
 *   reads the row, then the rows written by the transactions it saw running or that began after
 *   it. The salt is the filter's secret: only the database role of the application reads it.
 */
export class CreateTombstoneFilterSnapshot1765152000000 implements MigrationInterface {
  name = 'CreateTombstoneFilterSnapshot1765152000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    const [{ schema }] = (await queryRunner.query(`SELECT current_schema() AS schema`)) as { schema: string }[];
    const s = `"${schema.replace(/"/g, '""')}"`;
    // No rewrite of the table: the column is added empty, and the default applies to new rows.
    await queryRunner.query(`ALTER TABLE ${s}."tombstones" ADD COLUMN "changed_xid" xid8`);
    await queryRunner.query(`ALTER TABLE ${s}."tombstones" ALTER COLUMN "changed_xid" SET DEFAULT pg_catalog.pg_current_xact_id()`);
    await queryRunner.query(`CREATE INDEX "tombstones_changed_xid_idx" ON ${s}."tombstones" ("changed_xid") WHERE "changed_xid" IS NOT NULL`);
    // Inserts: only when the row does not carry this transaction's id already (a value given
    // explicitly, or copied from another database), so that the usual insert pays no call.
    await queryRunner.query(`
      CREATE FUNCTION ${s}.tombstones_changed_insert() RETURNS trigger LANGUAGE plpgsql AS $fn$
      BEGIN
        NEW.changed_xid := pg_catalog.pg_current_xact_id();
        RETURN NEW;
      END
      $fn$`);
    // Updates: compared in the function, not in a WHEN clause, which would pin these columns' types.
    await queryRunner.query(`
      CREATE FUNCTION ${s}.tombstones_changed_update() RETURNS trigger LANGUAGE plpgsql AS $fn$
      BEGIN
        IF (NEW.scope, NEW.resource_type, NEW.resource_key, NEW.kind, NEW.expires_at)
           IS DISTINCT FROM (OLD.scope, OLD.resource_type, OLD.resource_key, OLD.kind, OLD.expires_at) THEN
          NEW.changed_xid := pg_catalog.pg_current_xact_id();
        ELSE
          NEW.changed_xid := OLD.changed_xid;
        END IF;
        RETURN NEW;
      END
      $fn$`);
    await queryRunner.query(`
      CREATE TRIGGER tombstones_changed_ins BEFORE INSERT ON ${s}."tombstones" FOR EACH ROW
        WHEN (NEW.changed_xid IS DISTINCT FROM pg_catalog.pg_current_xact_id())
        EXECUTE FUNCTION ${s}.tombstones_changed_insert()`);
    await queryRunner.query(`
      CREATE TRIGGER tombstones_changed_upd BEFORE UPDATE ON ${s}."tombstones" FOR EACH ROW
        EXECUTE FUNCTION ${s}.tombstones_changed_update()`);
    // Also when rows arrive by logical replication (session_replication_role = replica): they get
    // this database's transaction ids, never the publisher's.
    for (const name of ['tombstones_changed_ins', 'tombstones_changed_upd']) {
      await queryRunner.query(`ALTER TABLE ${s}."tombstones" ENABLE ALWAYS TRIGGER ${name}`);
    }
    await queryRunner.query(`
      CREATE TABLE ${s}."tombstone_filter_snapshots" (
        "id"                  smallint         PRIMARY KEY DEFAULT 1,
        "format"              text             NOT NULL,
        "bit_count"           bigint           NOT NULL,
        "hash_count"          integer          NOT NULL,
        "salt"                text             NOT NULL,
        "false_positive_rate" double precision NOT NULL,
        "capacity"            bigint           NOT NULL,
        "key_count"           bigint           NOT NULL,
        "watermark"           pg_snapshot      NOT NULL,
        "built_at"            timestamptz      NOT NULL,
        "written_xid"         xid8             NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
        "written_at"          timestamptz      NOT NULL DEFAULT now(),
        "checksum"            bytea            NOT NULL,
        "bits"                bytea            NOT NULL,
        CONSTRAINT "tombstone_filter_snapshots_one_row_check" CHECK ("id" = 1),
        CONSTRAINT "tombstone_filter_snapshots_bits_check" CHECK (octet_length("bits")::bigint * 8 = "bit_count")
      )`);
    // The bits look random: not worth compressing, and read in slices straight from TOAST.
    await queryRunner.query(`ALTER TABLE ${s}."tombstone_filter_snapshots" ALTER COLUMN "bits" SET STORAGE EXTERNAL`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    const [{ schema }] = (await queryRunner.query(`SELECT current_schema() AS schema`)) as { schema: string }[];
    const s = `"${schema.replace(/"/g, '""')}"`;
    await queryRunner.query(`DROP TABLE IF EXISTS ${s}."tombstone_filter_snapshots"`);
    for (const name of ['tombstones_changed_ins', 'tombstones_changed_upd']) {
      await queryRunner.query(`DROP TRIGGER IF EXISTS ${name} ON ${s}."tombstones"`);
    }
    await queryRunner.query(`DROP FUNCTION IF EXISTS ${s}.tombstones_changed_insert()`);
    await queryRunner.query(`DROP FUNCTION IF EXISTS ${s}.tombstones_changed_update()`);
    await queryRunner.query(`ALTER TABLE ${s}."tombstones" DROP COLUMN IF EXISTS "changed_xid"`);
  }
}
