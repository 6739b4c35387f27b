import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Creates the functions that automatic capture runs. Released: never edit it; add a new
 * migration (`CREATE OR REPLACE FUNCTION`) instead.
 *
 * `installTombstoneCapture()` gives each tracked table one small generated trigger function
 * that only reads the table's columns (keys, scope, soft-delete state) and hands them to these
 * functions, which hold all the logic:
 *
 * - DELETE and TRUNCATE: `tombstones_capture_mark`, once per statement and tracked key, with
 *   every removed row's key (from the statement's transition table): one set-based upsert.
 * - INSERT: `tombstones_capture_claim_all`, once per statement and tracked key: the key-reuse
 *   policy. Rows inserted already soft-deleted are marked hidden.
 * - UPDATE: `tombstones_capture_change`, per row, and only for rows whose key, scope or
 *   soft-delete state changed (the trigger's WHEN clause filters the rest out before any
 *   function runs).
 *
 * Everything runs in the transaction of the change: a rolled-back change leaves no tombstone, a
 * tombstone that cannot be written fails the change. The functions name the tombstone table
 * with its schema, so they find it whatever the search_path of the session.
 *
 * Actor and reason come from the settings `tombstones.actor` and `tombstones.reason`, which the
 * module sets from its context (see `TombstoneContext`).
 */
export class CreateTombstoneCapture1763856000000 implements MigrationInterface {
  name = 'CreateTombstoneCapture1763856000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    // Every name is qualified with the schema the tombstone table lives in (this migration's),
    // so that the functions work whatever the search_path of the session that fires them.
    const [{ schema }] = (await queryRunner.query(`SELECT current_schema() AS schema`)) as { schema: string }[];
    const s = `"${schema.replace(/"/g, '""')}"`;
    // Writes one tombstone; the single place where captured rows take their shape.
    await queryRunner.query(`
      CREATE FUNCTION ${s}.tombstones_capture_put(
        p_scope text, p_type text, p_key text, p_kind text, p_target text, p_permanent boolean, p_table text
      ) RETURNS void LANGUAGE plpgsql AS $fn$
      BEGIN
        INSERT INTO ${s}.tombstones (scope, resource_type, resource_key, kind, target_key, permanent,
                                reason, actor, metadata)
        VALUES (p_scope, p_type, p_key, p_kind, p_target, p_permanent,
                nullif(current_setting('tombstones.reason', true), ''),
                nullif(current_setting('tombstones.actor', true), ''),
                jsonb_build_object('capturedFrom', p_table))
        ON CONFLICT (scope, resource_type, resource_key) DO UPDATE SET
          occurred_at = CASE
            WHEN tombstones.kind = EXCLUDED.kind AND tombstones.target_key IS NOT DISTINCT FROM EXCLUDED.target_key
              THEN tombstones.occurred_at
            ELSE now() END,
          kind = EXCLUDED.kind, target_key = EXCLUDED.target_key, permanent = EXCLUDED.permanent,
          reason = EXCLUDED.reason, alternative = NULL, actor = EXCLUDED.actor, expires_at = NULL,
          metadata = EXCLUDED.metadata, updated_at = now();
      END
      $fn$`);

    // A row takes a key: under 'forbid' a key with a tombstone is refused (unless the tombstone
    // is this row's own history, i.e. it redirects to the key the row had); under 'allow' the
    // tombstone is cleared, live data wins.
    //
    // Under snapshot isolation (REPEATABLE READ, SERIALIZABLE) a tombstone committed after the
    // snapshot, e.g. by the delete this insert waited for in the unique index, is invisible to a
    // SELECT. An insert probe meets it in the tombstones' unique index instead, and PostgreSQL
    // answers a serialization failure: the application retries, and sees it.
    await queryRunner.query(`
      CREATE FUNCTION ${s}.tombstones_capture_claim(
        p_scope text, p_type text, p_key text, p_reuse text, p_own_key text, p_table text
      ) RETURNS void LANGUAGE plpgsql AS $fn$
      DECLARE
        found_kind text;
        found_target text;
        probe bigint;
      BEGIN
        IF current_setting('transaction_isolation') <> 'read committed' THEN
          INSERT INTO ${s}.tombstones (scope, resource_type, resource_key, kind)
          VALUES (p_scope, p_type, p_key, 'hidden')
          ON CONFLICT DO NOTHING RETURNING id INTO probe;
          IF probe IS NOT NULL THEN
            DELETE FROM ${s}.tombstones WHERE id = probe;
            RETURN;
          END IF;
        END IF;
        SELECT kind, target_key INTO found_kind, found_target
          FROM ${s}.tombstones WHERE scope = p_scope AND resource_type = p_type AND resource_key = p_key;
        IF NOT FOUND THEN RETURN; END IF;
        IF p_reuse = 'forbid' AND (p_own_key IS NULL OR found_target IS DISTINCT FROM p_own_key) THEN
          RAISE EXCEPTION 'nestjs-tombstones: % key ''%'' has a tombstone (%) and % forbids reusing keys',
                p_type, left(p_key, 120), found_kind, p_table
            USING ERRCODE = 'TB001',
                  DETAIL = jsonb_build_object('type', p_type, 'key', p_key, 'scope', p_scope, 'kind', found_kind)::text,
                  HINT = 'Choose another key, or restore the tombstone first (TombstoneService.restore).';
        END IF;
        DELETE FROM ${s}.tombstones WHERE scope = p_scope AND resource_type = p_type AND resource_key = p_key;
      END
      $fn$`);

    // Keys that left the table (DELETE, TRUNCATE), or rows inserted already soft-deleted: one
    // set-based upsert whatever the number of rows.
    await queryRunner.query(`
      CREATE FUNCTION ${s}.tombstones_capture_mark(
        p_scopes text[], p_type text, p_keys text[], p_kind text, p_table text
      ) RETURNS void LANGUAGE plpgsql AS $fn$
      BEGIN
        IF p_keys IS NULL THEN RETURN; END IF;
        INSERT INTO ${s}.tombstones (scope, resource_type, resource_key, kind, reason, actor, metadata)
        SELECT DISTINCT ON (r.scope, r.key) r.scope, p_type, r.key, p_kind,
               nullif(current_setting('tombstones.reason', true), ''),
               nullif(current_setting('tombstones.actor', true), ''),
               jsonb_build_object('capturedFrom', p_table)
          FROM unnest(p_scopes, p_keys) AS r(scope, key)
        ON CONFLICT (scope, resource_type, resource_key) DO UPDATE SET
          occurred_at = CASE WHEN tombstones.kind = EXCLUDED.kind AND tombstones.target_key IS NULL
                             THEN tombstones.occurred_at ELSE now() END,
          kind = EXCLUDED.kind, target_key = NULL, permanent = true, reason = EXCLUDED.reason,
          alternative = NULL, actor = EXCLUDED.actor, expires_at = NULL,
          metadata = EXCLUDED.metadata, updated_at = now();
      END
      $fn$`);

    // Inserted rows take their keys (see tombstones_capture_claim), all at once.
    await queryRunner.query(`
      CREATE FUNCTION ${s}.tombstones_capture_claim_all(
        p_scopes text[], p_type text, p_keys text[], p_reuse text, p_table text
      ) RETURNS void LANGUAGE plpgsql AS $fn$
      DECLARE
        clash record;
        probes bigint[];
      BEGIN
        IF p_keys IS NULL THEN RETURN; END IF;
        IF current_setting('transaction_isolation') <> 'read committed' THEN
          -- See tombstones_capture_claim.
          WITH probe AS (
            INSERT INTO ${s}.tombstones (scope, resource_type, resource_key, kind)
            SELECT r.scope, p_type, r.key, 'hidden' FROM unnest(p_scopes, p_keys) AS r(scope, key)
            ON CONFLICT DO NOTHING RETURNING id)
          SELECT array_agg(id) INTO probes FROM probe;
          DELETE FROM ${s}.tombstones WHERE id = ANY(probes);
        END IF;
        IF p_reuse = 'forbid' THEN
          SELECT t.scope, t.resource_key, t.kind INTO clash
            FROM unnest(p_scopes, p_keys) AS r(scope, key)
            JOIN ${s}.tombstones t ON t.scope = r.scope AND t.resource_type = p_type AND t.resource_key = r.key
           LIMIT 1;
          IF FOUND THEN
            RAISE EXCEPTION 'nestjs-tombstones: % key ''%'' has a tombstone (%) and % forbids reusing keys',
                  p_type, left(clash.resource_key, 120), clash.kind, p_table
              USING ERRCODE = 'TB001',
                    DETAIL = jsonb_build_object('type', p_type, 'key', clash.resource_key,
                                                'scope', clash.scope, 'kind', clash.kind)::text,
                    HINT = 'Choose another key, or restore the tombstone first (TombstoneService.restore).';
          END IF;
        ELSE
          DELETE FROM ${s}.tombstones t USING unnest(p_scopes, p_keys) AS r(scope, key)
           WHERE t.scope = r.scope AND t.resource_type = p_type AND t.resource_key = r.key;
        END IF;
      END
      $fn$`);

    // One row's key, scope or soft-delete state changed.
    await queryRunner.query(`
      CREATE FUNCTION ${s}.tombstones_capture_change(
        old_scope text, new_scope text, typ text, old_key text, new_key text,
        old_live boolean, new_live boolean, old_taken boolean, new_taken boolean,
        on_delete text, reuse text, permanent boolean, tbl text
      ) RETURNS void LANGUAGE plpgsql AS $fn$
      BEGIN
        -- old_taken / new_taken: another live row of the table holds the old / new key (in its
        -- scope). Possible with a unique index over live rows only, or a deferred one. That row
        -- owns the key: no tombstone is written on it, and what redirected to it stays.
        IF old_key IS NOT DISTINCT FROM new_key AND old_scope = new_scope THEN
          -- Only the soft-delete state changed: hidden, or restored.
          IF new_key IS NOT NULL AND old_live <> new_live THEN
            IF new_live THEN
              DELETE FROM ${s}.tombstones WHERE scope = new_scope AND resource_type = typ AND resource_key = new_key;
            ELSIF NOT old_taken THEN
              PERFORM ${s}.tombstones_capture_put(new_scope, typ, new_key, 'hidden', NULL, true, tbl);
            END IF;
          END IF;
          RETURN;
        END IF;

        IF old_key IS NOT NULL AND new_key IS NOT NULL AND old_scope = new_scope THEN
          -- A move. Captured moves that touch the same keys are already serialised by the table:
          -- the row's lock, and its unique index on the key, which makes a rename onto a key wait
          -- for the transaction that held it. The recording API writes redirects between any
          -- keys, so it takes this (scope, type) lock exclusively, and captured moves take it
          -- shared: one lock per (scope, type) and transaction, held until it ends, and two
          -- captured moves never wait for each other here.
          PERFORM pg_advisory_xact_lock_shared(
            hashtextextended('nestjs-tombstones' || chr(31) || new_scope || chr(31) || typ, 0));
          PERFORM ${s}.tombstones_capture_claim(new_scope, typ, new_key, reuse, old_key, tbl);
          IF NOT old_taken THEN
            UPDATE ${s}.tombstones SET target_key = new_key, updated_at = now()
             WHERE scope = new_scope AND resource_type = typ AND target_key = old_key;
            PERFORM ${s}.tombstones_capture_put(new_scope, typ, old_key, 'moved', new_key, permanent, tbl);
          END IF;
        ELSE
          IF new_key IS NOT NULL THEN
            PERFORM ${s}.tombstones_capture_claim(new_scope, typ, new_key, reuse, NULL, tbl);
          END IF;
          IF old_key IS NOT NULL AND old_live AND NOT old_taken THEN
            -- The key was cleared (as if deleted), or the row left for another scope, where
            -- it must stay invisible from its former one: hidden.
            PERFORM ${s}.tombstones_capture_put(old_scope, typ, old_key,
              CASE WHEN old_scope = new_scope THEN on_delete ELSE 'hidden' END, NULL, true, tbl);
          END IF;
        END IF;
        IF new_key IS NOT NULL AND NOT new_live AND NOT new_taken THEN
          PERFORM ${s}.tombstones_capture_put(new_scope, typ, new_key, 'hidden', NULL, true, tbl);
        END IF;
      END
      $fn$`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      DROP FUNCTION
        tombstones_capture_change(text, text, text, text, text, boolean, boolean, boolean, boolean, text, text, boolean, text),
        tombstones_capture_claim_all(text[], text, text[], text, text),
        tombstones_capture_mark(text[], text, text[], text, text),
        tombstones_capture_claim(text, text, text, text, text, text),
        tombstones_capture_put(text, text, text, text, text, boolean, text)`);
  }
}
