import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Makes every change of the tombstone table announce itself on the `nestjs_tombstones` channel,
 * whoever makes it (the recording API, capture triggers, the admin endpoints, an import, psql),
 * so that every application instance can drop what its lookup cache holds for the keys
 * changed. Released: never edit it; add a new migration instead.
 *
 * The triggers run once per statement, from transition tables, and `NOTIFY` is transactional:
 * a rolled-back change announces nothing, a committed one is announced at commit. One
 * notification per (scope, type) names the keys changed, split in two lists:
 * - `a`: keys that now have a tombstone which is not `hidden` (the instances add them to their
 *   membership filter);
 * - `k`: the other keys changed (tombstone removed, or now `hidden`).
 * A (scope, type) whose keys take more than a notification (8000 bytes) is listed in several;
 * one whose keys take more than 256 KB announces `{ s, t, all: true }`, and a statement that
 * touches more than 64 (scope, type) pairs, or a TRUNCATE, announces `{ all: true }`. Updates that change no answer (hit counts,
 * `updated_at`, `actor`, `metadata`) announce nothing.
 */
export class CreateTombstoneNotify1764115200000 implements MigrationInterface {
  name = 'CreateTombstoneNotify1764115200000';

  async up(queryRunner: QueryRunner): Promise<void> {
    const [{ schema }] = (await queryRunner.query(`SELECT current_schema() AS schema`)) as { schema: string }[];
    const s = `"${schema.replace(/"/g, '""')}"`;
    // The keys whose answer may have changed, with whether each now belongs in the filter.
    const changes: Record<'INSERT' | 'UPDATE' | 'DELETE', string> = {
      INSERT: `SELECT n.scope, n.resource_type, n.resource_key, n.kind <> 'hidden' FROM new_rows n`,
      DELETE: `SELECT o.scope, o.resource_type, o.resource_key, false FROM old_rows o`,
      UPDATE: `
        SELECT c.* FROM new_rows n JOIN old_rows o ON o.id = n.id
         CROSS JOIN LATERAL (VALUES (n.scope, n.resource_type, n.resource_key, n.kind <> 'hidden'),
                                    (o.scope, o.resource_type, o.resource_key, false)) AS c
         WHERE (n.scope, n.resource_type, n.resource_key, n.kind, n.target_key, n.permanent, n.reason,
                n.alternative, n.occurred_at, n.expires_at)
               IS DISTINCT FROM
               (o.scope, o.resource_type, o.resource_key, o.kind, o.target_key, o.permanent, o.reason,
                o.alternative, o.occurred_at, o.expires_at)`,
    };
    // Each key once (listed if any of its rows is). A pair's keys are listed in notifications of
    // at most about 6,000 bytes of keys each, up to 256 KB of keys in all; past that, or when a
    // listing does not fit its notification, the pair is announced whole. Sizes come first, so a
    // statement of any size costs a pass over its rows, never an unbounded string.
    // EXECUTE: planned at each call, for the sizes of that statement's transition tables (a plan
    // kept from a first call with empty tables joins large ones quadratically).
    const announce = (op: keyof typeof changes) => `
      FOR payload IN EXECUTE $q$
        WITH c(scope, resource_type, resource_key, listed) AS MATERIALIZED (${changes[op]}),
        d AS MATERIALIZED (
          SELECT c.scope, c.resource_type, c.resource_key, bool_or(c.listed) AS listed
            FROM c GROUP BY c.scope, c.resource_type, c.resource_key),
        p AS (
          SELECT d.scope, d.resource_type, count(*) AS n, sum(octet_length(d.resource_key)) AS bytes
            FROM d GROUP BY d.scope, d.resource_type),
        n AS (SELECT count(*) AS pairs FROM p),
        chunks AS (
          SELECT d.scope, d.resource_type, d.resource_key, d.listed,
                 floor(sum(octet_length(d.resource_key) + 4)
                         OVER (PARTITION BY d.scope, d.resource_type ORDER BY d.resource_key) / 6000) AS chunk
            FROM d JOIN p ON p.scope = d.scope AND p.resource_type = d.resource_type
           WHERE p.bytes + 4 * p.n <= 262144 AND (SELECT pairs FROM n) <= 64),
        bodies AS (
          SELECT chunks.scope, chunks.resource_type, json_build_object(
                   's', chunks.scope, 't', chunks.resource_type,
                   'a', coalesce(json_agg(chunks.resource_key) FILTER (WHERE chunks.listed), '[]'),
                   'k', coalesce(json_agg(chunks.resource_key) FILTER (WHERE NOT chunks.listed), '[]'))::text AS body
            FROM chunks GROUP BY chunks.scope, chunks.resource_type, chunks.chunk),
        whole AS (
          SELECT p.scope, p.resource_type FROM p WHERE p.bytes + 4 * p.n > 262144
          UNION
          SELECT bodies.scope, bodies.resource_type FROM bodies WHERE octet_length(bodies.body) > 7900)
        SELECT '{"all":true}' FROM n WHERE n.pairs > 64
        UNION ALL
        SELECT json_build_object('s', whole.scope, 't', whole.resource_type, 'all', true)::text
          FROM whole, n WHERE n.pairs <= 64
        UNION ALL
        SELECT bodies.body FROM bodies
         WHERE NOT EXISTS (SELECT 1 FROM whole
                            WHERE whole.scope = bodies.scope AND whole.resource_type = bodies.resource_type)
      $q$
      LOOP
        PERFORM pg_notify('nestjs_tombstones', payload);
      END LOOP;`;
    await queryRunner.query(`
      CREATE FUNCTION ${s}.tombstones_notify() RETURNS trigger
      LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
      DECLARE
        payload text;
      BEGIN
        IF TG_OP = 'TRUNCATE' THEN
          PERFORM pg_notify('nestjs_tombstones', '{"all":true}');
        ELSIF TG_OP = 'INSERT' THEN ${announce('INSERT')}
        ELSIF TG_OP = 'DELETE' THEN ${announce('DELETE')}
        ELSE ${announce('UPDATE')}
        END IF;
        RETURN NULL;
      END
      $fn$`);
    for (const [name, event, tables] of [
      ['tombstones_notify_ins', 'INSERT', 'NEW TABLE AS new_rows'],
      ['tombstones_notify_upd', 'UPDATE', 'OLD TABLE AS old_rows NEW TABLE AS new_rows'],
      ['tombstones_notify_del', 'DELETE', 'OLD TABLE AS old_rows'],
    ]) {
      await queryRunner.query(`
        CREATE TRIGGER ${name} AFTER ${event} ON ${s}."tombstones"
          REFERENCING ${tables} FOR EACH STATEMENT EXECUTE FUNCTION ${s}.tombstones_notify()`);
    }
    await queryRunner.query(`
      CREATE TRIGGER tombstones_notify_trunc AFTER TRUNCATE ON ${s}."tombstones"
        FOR EACH STATEMENT EXECUTE FUNCTION ${s}.tombstones_notify()`);
    // Also when rows arrive by logical replication (session_replication_role = replica): the
    // instances reading this database must hear of them too.
    for (const name of ['tombstones_notify_ins', 'tombstones_notify_upd', 'tombstones_notify_del', 'tombstones_notify_trunc']) {
      await queryRunner.query(`ALTER TABLE ${s}."tombstones" ENABLE ALWAYS TRIGGER ${name}`);
    }
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    const [{ schema }] = (await queryRunner.query(`SELECT current_schema() AS schema`)) as { schema: string }[];
    const s = `"${schema.replace(/"/g, '""')}"`;
    for (const name of ['tombstones_notify_ins', 'tombstones_notify_upd', 'tombstones_notify_del', 'tombstones_notify_trunc']) {
      await queryRunner.query(`DROP TRIGGER IF EXISTS ${name} ON ${s}."tombstones"`);
    }
    await queryRunner.query(`DROP FUNCTION IF EXISTS ${s}.tombstones_notify()`);
  }
}
