import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Where the fast paths go in `tombstones_notify()` as CreateTombstoneNotify1764115200000 wrote it. */
const DECLARE_AT = `
        payload text;
`;
const BEGIN_AT = `
      BEGIN
        IF TG_OP = 'TRUNCATE' THEN`;
const DECLARED = `
        payload text;
        n_rows bigint;
        whole text;
`;
// What the general path announces for one inserted or deleted row, without planning its statement
// anew (it does, with EXECUTE, at every call: the most of what a captured single-row write costs).
const FAST = `
      BEGIN
        -- Statements that changed no row (an INSERT … ON CONFLICT fires the UPDATE triggers too)
        -- announce nothing, and one inserted or deleted row is announced without planning.
        IF TG_OP = 'INSERT' OR TG_OP = 'UPDATE' THEN
          SELECT count(*) INTO n_rows FROM (SELECT 1 FROM new_rows LIMIT 2) AS x;
        ELSIF TG_OP = 'DELETE' THEN
          SELECT count(*) INTO n_rows FROM (SELECT 1 FROM old_rows LIMIT 2) AS x;
        END IF;
        IF n_rows = 0 THEN
          RETURN NULL;
        END IF;
        IF n_rows = 1 AND TG_OP = 'INSERT' THEN
          SELECT json_build_object('s', n.scope, 't', n.resource_type,
                   'a', CASE WHEN n.kind <> 'hidden' THEN json_build_array(n.resource_key) ELSE '[]'::json END,
                   'k', CASE WHEN n.kind <> 'hidden' THEN '[]'::json ELSE json_build_array(n.resource_key) END)::text,
                 json_build_object('s', n.scope, 't', n.resource_type, 'all', true)::text
            INTO payload, whole FROM new_rows n;
          PERFORM pg_notify('nestjs_tombstones', CASE WHEN octet_length(payload) > 7900 THEN whole ELSE payload END);
          RETURN NULL;
        END IF;
        IF n_rows = 1 AND TG_OP = 'DELETE' THEN
          SELECT json_build_object('s', o.scope, 't', o.resource_type, 'a', '[]'::json, 'k', json_build_array(o.resource_key))::text,
                 json_build_object('s', o.scope, 't', o.resource_type, 'all', true)::text
            INTO payload, whole FROM old_rows o;
          PERFORM pg_notify('nestjs_tombstones', CASE WHEN octet_length(payload) > 7900 THEN whole ELSE payload END);
          RETURN NULL;
        END IF;
        IF TG_OP = 'TRUNCATE' THEN`;

/**
 * Makes `tombstones_notify()` (CreateTombstoneNotify1764115200000) cheap for the statements that
 * capture and the recording API write most: a statement that changed no row announces nothing,
 * and a statement of one inserted or deleted row announces it from a plan made once, with the
 * same notification as before. Larger statements and updates take the general path as before.
 * Released: never edit it; add a new migration instead.
 *
 * The function's other lines are kept as they are: this migration adds its lines to the
 * function's text as the earlier migration wrote it, and refuses to run on any other text.
 */
export class SpeedUpTombstoneNotify1765065600000 implements MigrationInterface {
  name = 'SpeedUpTombstoneNotify1765065600000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await rewrite(queryRunner, (source, eol) => {
      const [from1, from2, to1, to2] = [DECLARE_AT, BEGIN_AT, DECLARED, FAST].map(eol);
      if (!source.includes(from1) || !source.includes(from2)) return undefined;
      return source.replace(from1, to1).replace(from2, to2);
    });
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await rewrite(queryRunner, (source, eol) => {
      const [from1, from2, to1, to2] = [DECLARED, FAST, DECLARE_AT, BEGIN_AT].map(eol);
      if (!source.includes(from1) || !source.includes(from2)) return undefined;
      return source.replace(from1, to1).replace(from2, to2);
    });
  }
}

/**
 * Replaces the body of `tombstones_notify()` with `change(body, eol)`; fails when it does not
 * apply. `eol` gives a text the body's line endings (CRLF when the earlier migration was built
 * from a Windows checkout).
 */
async function rewrite(queryRunner: QueryRunner, change: (source: string, eol: (text: string) => string) => string | undefined): Promise<void> {
  const [{ schema }] = (await queryRunner.query(`SELECT current_schema() AS schema`)) as { schema: string }[];
  const s = `"${schema.replace(/"/g, '""')}"`;
  const rows = (await queryRunner.query(
    `SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 AND p.proname = 'tombstones_notify'`,
    [schema],
  )) as { prosrc: string }[];
  const body = rows.length === 1 ? rows[0].prosrc : '';
  const crlf = body.includes('\r\n');
  const source = rows.length === 1 ? change(body, (text) => (crlf ? text.replace(/\r?\n/g, '\r\n') : text.replace(/\r\n/g, '\n'))) : undefined;
  if (source === undefined || source.includes('$fn$')) {
    throw new Error(
      `${s}.tombstones_notify() is not the function CreateTombstoneNotify1764115200000 wrote, so it cannot be changed safely. ` +
        'Was it edited by hand? Run the migrations in order on a schema they created.',
    );
  }
  await queryRunner.query(`
    CREATE OR REPLACE FUNCTION ${s}.tombstones_notify() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$${source}$fn$`);
}
