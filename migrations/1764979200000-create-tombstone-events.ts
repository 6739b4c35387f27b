import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The transactional outbox of tombstone events. Released: never edit it; add a new migration
 * instead.
 *
 * - `tombstone_event_sinks`: where events go (a webhook, a CDN purge, in-process listeners), one
 *   row per sink name, registered by the instances that deliver to it. While no sink is
 *   registered, nothing is written: an app that does not use events pays one index probe per
 *   statement.
 * - `tombstone_events`: one row per change of one tombstone, whoever made it (the recording API,
 *   capture triggers, the admin endpoints, an import, psql), written by triggers on the tombstone
 *   table in the transaction that made the change: a rolled-back change leaves no
 *   event, a committed one is never lost. A change of a tombstone's scope, type or key is two
 *   events (removed, created); an update that changes nothing but hit counts and timestamps is
 *   none. The events of one key are numbered (`id`) in commit order: a second writer of a key
 *   waits on the first one's row lock, and the events are written after the rows.
 * - `tombstone_event_deliveries`: one row per (sink, event), with its own attempts, backoff,
 *   lease and dead-letter state; (scope, type, key) is copied from the event so that "is an
 *   earlier event of this key still pending for this sink?" is one index probe.
 */
export class CreateTombstoneEvents1764979200000 implements MigrationInterface {
  name = 'CreateTombstoneEvents1764979200000';

  async up(queryRunner: QueryRunner): Promise<void> {
    const [{ schema }] = (await queryRunner.query(`SELECT current_schema() AS schema`)) as { schema: string }[];
    const s = `"${schema.replace(/"/g, '""')}"`;
    await queryRunner.query(`
      CREATE TABLE "tombstone_event_sinks" (
        "name"          text        PRIMARY KEY,
        "registered_at" timestamptz NOT NULL DEFAULT now(),
        "seen_at"       timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT "tombstone_event_sinks_name_check" CHECK (char_length("name") BETWEEN 1 AND 200)
      )`);
    await queryRunner.query(`
      CREATE TABLE "tombstone_events" (
        "id"            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        "event_id"      uuid        NOT NULL DEFAULT gen_random_uuid(),
        "type"          text        NOT NULL,
        "scope"         text        NOT NULL,
        "resource_type" text        NOT NULL,
        "resource_key"  text        NOT NULL,
        "before"        jsonb,
        "after"         jsonb,
        "actor"         text,
        "reason"        text,
        "tx"            xid8        NOT NULL DEFAULT pg_current_xact_id(),
        "occurred_at"   timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT "tombstone_events_event_id_key" UNIQUE ("event_id"),
        CONSTRAINT "tombstone_events_type_check"
          CHECK ("type" IN ('tombstone.created', 'tombstone.changed', 'tombstone.removed')),
        CONSTRAINT "tombstone_events_states_check" CHECK (
          ("type" = 'tombstone.created' AND "before" IS NULL AND "after" IS NOT NULL) OR
          ("type" = 'tombstone.changed' AND "before" IS NOT NULL AND "after" IS NOT NULL) OR
          ("type" = 'tombstone.removed' AND "before" IS NOT NULL AND "after" IS NULL))
      )`);
    // Retention finds old events by time: a BRIN index, a few pages that writes hardly touch.
    await queryRunner.query(`CREATE INDEX "tombstone_events_occurred_at_idx" ON "tombstone_events" USING brin ("occurred_at")`);
    await queryRunner.query(`
      CREATE TABLE "tombstone_event_deliveries" (
        "sink"            text        NOT NULL,
        "event_id"        bigint      NOT NULL,
        "scope"           text        NOT NULL,
        "resource_type"   text        NOT NULL,
        "resource_key"    text        NOT NULL,
        "state"           text        NOT NULL DEFAULT 'pending',
        "attempts"        integer     NOT NULL DEFAULT 0,
        "next_attempt_at" timestamptz NOT NULL DEFAULT now(),
        "leased_until"    timestamptz,
        "last_error"      text,
        "finished_at"     timestamptz,
        PRIMARY KEY ("event_id", "sink"),
        CONSTRAINT "tombstone_event_deliveries_state_check" CHECK ("state" IN ('pending', 'delivered', 'dead')),
        CONSTRAINT "tombstone_event_deliveries_finished_check" CHECK (("state" = 'pending') = ("finished_at" IS NULL)),
        CONSTRAINT "tombstone_event_deliveries_attempts_check" CHECK ("attempts" >= 0),
        CONSTRAINT "tombstone_event_deliveries_error_check" CHECK (char_length("last_error") <= 1000)
      )`);
    // What a sink may take next, oldest first; and whether a key has an earlier pending event.
    await queryRunner.query(`
      CREATE INDEX "tombstone_event_deliveries_pending_idx" ON "tombstone_event_deliveries" ("sink", "event_id")
        WHERE "state" = 'pending'`);
    await queryRunner.query(`
      CREATE INDEX "tombstone_event_deliveries_key_idx"
        ON "tombstone_event_deliveries" ("sink", "scope", "resource_type", "resource_key", "event_id")
        WHERE "state" = 'pending'`);
    // Retention (finished deliveries, oldest first) and dead letters. An event's deliveries: the
    // primary key. No foreign key to the event: its check would be one more query per delivery
    // written, and only the sweep deletes events (those left with no delivery).
    await queryRunner.query(`
      CREATE INDEX "tombstone_event_deliveries_finished_idx" ON "tombstone_event_deliveries" ("state", "finished_at")
        WHERE "state" <> 'pending'`);

    const state = (row: string) => `jsonb_build_object(
      'id', ${row}.id::text, 'kind', ${row}.kind, 'target', ${row}.target_key, 'permanent', ${row}.permanent,
      'reason', ${row}.reason, 'alternative', ${row}.alternative, 'actor', ${row}.actor,
      'occurredAt', ${row}.occurred_at, 'expiresAt', ${row}.expires_at, 'metadata', ${row}.metadata)`;
    // Every column but the hit counts and the row's own timestamps.
    const columns = (row: string) =>
      ['scope', 'resource_type', 'resource_key', 'kind', 'target_key', 'permanent', 'reason', 'alternative', 'actor', 'occurred_at', 'expires_at', 'metadata']
        .map((column) => `${row}.${column}`)
        .join(', ');
    // Writes the events `source` selects, as (type, scope, resource_type, resource_key, before,
    // after, actor, reason, row id), in the order of their rows, and a delivery of each for every
    // registered sink.
    const write = (source: string) => `
      WITH e AS (
        INSERT INTO ${s}."tombstone_events" ("type", "scope", "resource_type", "resource_key", "before", "after", "actor", "reason")
        SELECT c.type, c.scope, c.resource_type, c.resource_key, c.before, c.after, c.actor, c.reason
          FROM (${source}) AS c(type, scope, resource_type, resource_key, before, after, actor, reason, row_id)
         ORDER BY c.row_id
        RETURNING "id", "scope", "resource_type", "resource_key")
      INSERT INTO ${s}."tombstone_event_deliveries" ("sink", "event_id", "scope", "resource_type", "resource_key")
      SELECT k.name, e.id, e.scope, e.resource_type, e.resource_key
        FROM e CROSS JOIN ${s}."tombstone_event_sinks" k;`;
    const removed = (row: string) => `'tombstone.removed', ${row}.scope, ${row}.resource_type, ${row}.resource_key, ${state(row)}, NULL::jsonb, who, ${row}.reason, ${row}.id`;
    const created = (row: string) => `'tombstone.created', ${row}.scope, ${row}.resource_type, ${row}.resource_key, NULL::jsonb, ${state(row)}, coalesce(who, ${row}.actor), ${row}.reason, ${row}.id`;
    // Statement triggers for INSERT and DELETE (one INSERT … SELECT over the transition table,
    // planned once: a scan, whatever its size) and TRUNCATE (the rows still there, BEFORE it).
    await queryRunner.query(`
      CREATE FUNCTION ${s}.tombstones_events() RETURNS trigger
      LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
      DECLARE
        who text := nullif(current_setting('nestjs_tombstones.actor', true), '');
      BEGIN
        IF NOT EXISTS (SELECT 1 FROM ${s}."tombstone_event_sinks") THEN
          RETURN NULL;
        END IF;
        IF TG_OP = 'INSERT' THEN ${write(`SELECT ${created('n')} FROM new_rows n`)}
        ELSIF TG_OP = 'DELETE' THEN ${write(`SELECT ${removed('o')} FROM old_rows o`)}
        ELSE ${write(`SELECT ${removed('o')} FROM ${s}."tombstones" o`)}
        END IF;
        RETURN NULL;
      END
      $fn$`);
    // A row trigger for UPDATE, which returns at once for rows whose tombstone did not change (hit
    // counts, timestamps). Pairing old and new rows of a statement's transition tables would need a
    // join whose plan, kept from a first small statement, turns quadratic on a large one. Not a
    // WHEN clause: columns named in a trigger's definition can no longer change type.
    await queryRunner.query(`
      CREATE FUNCTION ${s}.tombstones_events_update() RETURNS trigger
      LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
      DECLARE
        who text := nullif(current_setting('nestjs_tombstones.actor', true), '');
      BEGIN
        IF (${columns('OLD')}) IS NOT DISTINCT FROM (${columns('NEW')})
           OR NOT EXISTS (SELECT 1 FROM ${s}."tombstone_event_sinks") THEN
          RETURN NULL;
        END IF;
        IF (NEW.scope, NEW.resource_type, NEW.resource_key) IS NOT DISTINCT FROM (OLD.scope, OLD.resource_type, OLD.resource_key) THEN
          ${write(`SELECT 'tombstone.changed', NEW.scope, NEW.resource_type, NEW.resource_key, ${state('OLD')}, ${state('NEW')}, coalesce(who, NEW.actor), NEW.reason, 0`)}
        ELSE
          ${write(`SELECT ${removed('OLD')} UNION ALL SELECT ${created('NEW')}`)}
        END IF;
        RETURN NULL;
      END
      $fn$`);
    for (const [name, event, tables] of [
      ['tombstones_events_ins', 'INSERT', 'NEW TABLE AS new_rows'],
      ['tombstones_events_del', 'DELETE', 'OLD TABLE AS old_rows'],
    ]) {
      await queryRunner.query(`
        CREATE TRIGGER ${name} AFTER ${event} ON ${s}."tombstones"
          REFERENCING ${tables} FOR EACH STATEMENT EXECUTE FUNCTION ${s}.tombstones_events()`);
    }
    await queryRunner.query(`
      CREATE TRIGGER tombstones_events_upd AFTER UPDATE ON ${s}."tombstones" FOR EACH ROW
        EXECUTE FUNCTION ${s}.tombstones_events_update()`);
    // Before: the rows a TRUNCATE removes are still there to be named.
    await queryRunner.query(`
      CREATE TRIGGER tombstones_events_trunc BEFORE TRUNCATE ON ${s}."tombstones"
        FOR EACH STATEMENT EXECUTE FUNCTION ${s}.tombstones_events()`);
    // Also when rows arrive by logical replication (session_replication_role = replica).
    for (const name of ['tombstones_events_ins', 'tombstones_events_upd', 'tombstones_events_del', 'tombstones_events_trunc']) {
      await queryRunner.query(`ALTER TABLE ${s}."tombstones" ENABLE ALWAYS TRIGGER ${name}`);
    }
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    const [{ schema }] = (await queryRunner.query(`SELECT current_schema() AS schema`)) as { schema: string }[];
    const s = `"${schema.replace(/"/g, '""')}"`;
    for (const name of ['tombstones_events_ins', 'tombstones_events_upd', 'tombstones_events_del', 'tombstones_events_trunc']) {
      await queryRunner.query(`DROP TRIGGER IF EXISTS ${name} ON ${s}."tombstones"`);
    }
    await queryRunner.query(`DROP FUNCTION IF EXISTS ${s}.tombstones_events()`);
    await queryRunner.query(`DROP FUNCTION IF EXISTS ${s}.tombstones_events_update()`);
    await queryRunner.query(`DROP TABLE IF EXISTS "tombstone_event_deliveries"`);
    await queryRunner.query(`DROP TABLE IF EXISTS "tombstone_events"`);
    await queryRunner.query(`DROP TABLE IF EXISTS "tombstone_event_sinks"`);
  }
}
