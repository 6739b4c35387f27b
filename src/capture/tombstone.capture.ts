import { createHash } from 'node:crypto';
import type { DataSource, QueryRunner } from 'typeorm';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import { isValidType } from '../tombstone.validation.js';
import { type EntityClass, trackedDeclarations } from './tombstone.tracked.js';

/** One tracked key as the triggers see it: database column names. */
export interface TombstoneCaptureKey {
  type: string;
  column: string;
  scope: string | null;
  onDelete: 'deleted' | 'hidden';
  reuse: 'allow' | 'forbid';
  permanent: boolean;
}

/** What the capture triggers of one table are told: it is their only argument. */
export interface TombstoneCaptureSpec {
  v: 1;
  /** The table's name. */
  table: string;
  /** Its schema; `null` or absent: the first schema of the search_path that has the table. */
  schema?: string | null;
  /** The soft-delete column (TypeORM's `@DeleteDateColumn`), if any. */
  soft: string | null;
  keys: TombstoneCaptureKey[];
}

/** The triggers `installTombstoneCapture()` creates on a tracked table. */
export const CAPTURE_TRIGGERS = {
  delete: 'tombstones_capture_del',
  insert: 'tombstones_capture_ins',
  update: 'tombstones_capture_upd',
  truncate: 'tombstones_capture_trunc',
} as const;

/**
 * The capture spec of a tracked entity, with the column names its DataSource maps it to.
 * Throws when the entity is not tracked or names properties that are not columns.
 */
export function tombstoneCaptureSpec(dataSource: DataSource, entity: EntityClass): TombstoneCaptureSpec {
  const declarations = trackedDeclarations(entity);
  if (declarations.length === 0) {
    throw new TombstoneConfigurationError(`${entity.name} is not tracked.`, [
      `Add @TombstoneTracked({ type, key }) to ${entity.name}, or pass a TombstoneCaptureSpec.`,
    ]);
  }
  const metadata = dataSource.getMetadata(entity);
  const column = (property: string, role: string): string => {
    const found = metadata.findColumnWithPropertyName(property);
    if (!found || found.relationMetadata) {
      throw new TombstoneConfigurationError(
        `@TombstoneTracked on ${entity.name}: ${role} '${property}' is not a column of ${metadata.tableName}.`,
        ['Name a property decorated with @Column() / @PrimaryColumn() (a plain column, not a relation).'],
      );
    }
    return found.databaseName;
  };
  return {
    v: 1,
    table: metadata.tableName,
    schema: metadata.schema ?? null,
    soft: metadata.deleteDateColumn?.databaseName ?? null,
    keys: declarations.map((d) => ({
      type: d.type,
      column: column(d.key, 'key'),
      scope: d.scope === undefined ? null : column(d.scope, 'scope'),
      onDelete: d.onDelete === 'gone' ? 'deleted' : 'hidden',
      reuse: d.reuse,
      permanent: d.permanent,
    })),
  };
}

/** The quoted, schema-qualified name of a spec's table. */
export function relationOf(spec: Pick<TombstoneCaptureSpec, 'table' | 'schema'>): string {
  return spec.schema ? `${ident(spec.schema)}.${ident(spec.table)}` : ident(spec.table);
}

/** How messages and captured tombstones (`capturedFrom`) name a spec's table. */
export function labelOf(spec: Pick<TombstoneCaptureSpec, 'table' | 'schema'>): string {
  return spec.schema ? `${spec.schema}.${spec.table}` : spec.table;
}

// Types whose text form is what a request carries and what TypeORM hands back (char(n) pads: not one).
const KEY_COLUMN_TYPES = ['text', 'character varying', 'integer', 'bigint', 'smallint', 'uuid', 'citext'];

/**
 * Installs (or updates) the capture triggers of a tracked table. Call it from a migration,
 * after the shipped `TOMBSTONE_MIGRATIONS` and after the table exists; it is idempotent.
 *
 * @example
 * export class TrackArticles1764000000000 implements MigrationInterface {
 *   up = (queryRunner: QueryRunner) => installTombstoneCapture(queryRunner, Article);
 *   down = (queryRunner: QueryRunner) => removeTombstoneCapture(queryRunner, Article);
 * }
 */
export async function installTombstoneCapture(queryRunner: QueryRunner, target: EntityClass | TombstoneCaptureSpec): Promise<void> {
  const spec = typeof target === 'function' ? tombstoneCaptureSpec(queryRunner.connection, target) : validateSpec(target);
  for (const statement of await captureStatements(queryRunner, spec)) await queryRunner.query(statement);
}

/** Drops the capture triggers of a table, and its generated function; the tombstones already written stay. */
export async function removeTombstoneCapture(
  queryRunner: QueryRunner,
  target: EntityClass | TombstoneCaptureSpec | string,
): Promise<void> {
  const relation =
    typeof target === 'string'
      ? relationOf({ table: target })
      : typeof target === 'function'
        ? relationOf({ table: queryRunner.connection.getMetadata(target).tableName, schema: queryRunner.connection.getMetadata(target).schema })
        : relationOf(validateSpec(target));
  const functions = (await queryRunner.query(
    `SELECT DISTINCT tgfoid::regprocedure::text AS fn FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = ANY($2::text[])`,
    [relation, Object.values(CAPTURE_TRIGGERS)],
  )) as { fn: string }[];
  for (const name of Object.values(CAPTURE_TRIGGERS)) {
    await queryRunner.query(`DROP TRIGGER IF EXISTS ${ident(name)} ON ${relation}`);
  }
  // Only the table's own generated function; the shared ones belong to the shipped migration.
  for (const { fn } of functions) {
    if (!/tombstones_capture_(change|mark|claim)/.test(fn)) await queryRunner.query(`DROP FUNCTION IF EXISTS ${fn}`);
  }
}

async function captureStatements(queryRunner: QueryRunner, spec: TombstoneCaptureSpec): Promise<string[]> {
  const relation = relationOf(spec);
  const [table] = (await queryRunner.query(
    `SELECT n.nspname AS schema, c.relname AS name, c.relkind AS kind, c.relispartition AS partition
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)`,
    [relation],
  )) as { schema: string; name: string; kind: string; partition: boolean }[];
  if (!table) {
    throw new TombstoneConfigurationError(`installTombstoneCapture: table ${labelOf(spec)} does not exist.`, [
      'Install the capture in a migration that runs after the one creating the table.',
    ]);
  }
  // A partition's own statements fire no trigger of its parent's, and PostgreSQL runs an UPDATE
  // that moves a row across partitions as a DELETE and an INSERT that fire neither: capture would
  // miss them silently.
  if (table.kind === 'p' || table.partition) {
    throw new TombstoneConfigurationError(`installTombstoneCapture: ${labelOf(spec)} is a partitioned table or a partition.`, [
      'Track a table that is not partitioned; partitioned tables are not supported yet.',
    ]);
  }
  if (table.kind !== 'r') {
    throw new TombstoneConfigurationError(`installTombstoneCapture: ${labelOf(spec)} is not a table.`);
  }
  // The shipped functions, in the schema of the tombstone table: the generated function names it.
  const [functions] = (await queryRunner.query(
    `SELECT n.nspname AS schema FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE p.proname = 'tombstones_capture_change' AND n.nspname = ANY(current_schemas(false))
      ORDER BY array_position(current_schemas(false), n.nspname) LIMIT 1`,
  )) as { schema: string }[];
  if (!functions) {
    throw new TombstoneConfigurationError('installTombstoneCapture: the capture functions are not installed.', [
      'Run ...TOMBSTONE_MIGRATIONS before the migration that installs the capture.',
    ]);
  }
  const scopes = [...new Set(spec.keys.flatMap((k) => (k.scope ? [k.scope] : [])))];
  const columns = [...new Set([...spec.keys.map((k) => k.column), ...scopes, ...(spec.soft ? [spec.soft] : [])])];
  const types = (await queryRunner.query(
    `SELECT attname, format_type(atttypid, NULL) AS type FROM pg_attribute
      WHERE attrelid = $1::regclass AND attname = ANY($2::text[]) AND attnum > 0 AND NOT attisdropped`,
    [relation, columns],
  )) as { attname: string; type: string }[];
  const typeOf = new Map(types.map((t) => [t.attname, t.type]));
  for (const column of columns) {
    if (!typeOf.has(column)) {
      throw new TombstoneConfigurationError(`installTombstoneCapture: ${labelOf(spec)} has no column '${column}'.`);
    }
  }
  for (const [column, role] of [...spec.keys.map((k) => [k.column, 'key'] as const), ...scopes.map((c) => [c, 'scope'] as const)]) {
    const type = typeOf.get(column) as string;
    if (!KEY_COLUMN_TYPES.includes(type)) {
      throw new TombstoneConfigurationError(
        `installTombstoneCapture: ${role} column ${labelOf(spec)}.${column} is of type ${type}, which is not a ${role} type.`,
        [`Track a column of one of these types: ${KEY_COLUMN_TYPES.join(', ')}.`],
      );
    }
  }

  const fn = `${ident(functions.schema)}.${ident(captureFunctionName(`${table.schema}.${table.name}`))}`;
  const argument = literal(JSON.stringify({ ...spec, table: table.name, schema: table.schema }));
  const changed = [...new Set(spec.keys.flatMap((k) => (k.scope ? [k.column, k.scope] : [k.column])))].map(
    (c) => `OLD.${ident(c)} IS DISTINCT FROM NEW.${ident(c)}`,
  );
  if (spec.soft) changed.push(`(OLD.${ident(spec.soft)} IS NULL) <> (NEW.${ident(spec.soft)} IS NULL)`);
  const T = CAPTURE_TRIGGERS;
  return [
    ...Object.values(T).map((name) => `DROP TRIGGER IF EXISTS ${ident(name)} ON ${relation}`),
    captureFunction(fn, { ...spec, table: table.name, schema: table.schema }, ident(functions.schema)),
    `CREATE TRIGGER ${ident(T.delete)} AFTER DELETE ON ${relation} REFERENCING OLD TABLE AS tombstones_old
       FOR EACH STATEMENT EXECUTE FUNCTION ${fn}(${argument})`,
    `CREATE TRIGGER ${ident(T.insert)} AFTER INSERT ON ${relation} REFERENCING NEW TABLE AS tombstones_new
       FOR EACH STATEMENT EXECUTE FUNCTION ${fn}(${argument})`,
    `CREATE TRIGGER ${ident(T.update)} AFTER UPDATE ON ${relation}
       FOR EACH ROW WHEN (${changed.join(' OR ')}) EXECUTE FUNCTION ${fn}(${argument})`,
    `CREATE TRIGGER ${ident(T.truncate)} BEFORE TRUNCATE ON ${relation}
       FOR EACH STATEMENT EXECUTE FUNCTION ${fn}(${argument})`,
  ];
}

/** The generated trigger function of a table: `tombstones_capture_<table>_<hash>`, at most 60 characters. */
function captureFunctionName(qualifiedTable: string): string {
  const hash = createHash('sha256').update(qualifiedTable).digest('hex').slice(0, 10);
  const table = qualifiedTable.slice(qualifiedTable.indexOf('.') + 1);
  return `tombstones_capture_${table.replace(/[^A-Za-z0-9_]/g, '_').slice(0, 30)}_${hash}`;
}

/**
 * The trigger function of one table. It only reads columns and hands their values to the
 * shipped functions (see the CreateTombstoneCapture migration), which hold the logic; its
 * statements are static, so PostgreSQL plans them once per session.
 */
function captureFunction(name: string, spec: TombstoneCaptureSpec, schema: string): string {
  const relation = relationOf(spec);
  const table = literal(labelOf(spec));
  const col = (row: string, column: string) => `${row}.${ident(column)}`;
  const scopeOf = (row: string, k: TombstoneCaptureKey) => (k.scope ? `coalesce(${col(row, k.scope)}::text, '')` : `''::text`);
  const keyOf = (row: string, k: TombstoneCaptureKey) => `${col(row, k.column)}::text`;
  const liveOf = (row: string) => (spec.soft ? `${col(row, spec.soft)} IS NULL` : 'true');
  // Whether a live row of the table holds the key `row` has (or had): that row owns the key, so
  // no tombstone may be written on it. Only a unique index over live rows (or a deferred one)
  // lets this happen; the probe uses the index on the key column.
  const heldBy = (row: string, k: TombstoneCaptureKey) =>
    `EXISTS (SELECT 1 FROM ${relation} t WHERE ${col('t', k.column)} = ${col(row, k.column)}${
      k.scope ? ` AND ${col('t', k.scope)} = ${col(row, k.scope)}` : ''
    }${spec.soft ? ` AND ${col('t', spec.soft)} IS NULL` : ''})`;
  const collect = (k: TombstoneCaptureKey, from: string, extra = '') =>
    `SELECT array_agg(${scopeOf('s', k)}), array_agg(${keyOf('s', k)}) INTO _scopes, _keys
       FROM ${from} s WHERE ${col('s', k.column)} IS NOT NULL${extra};`;
  const update = spec.keys.map(
    (k) => `PERFORM ${schema}.tombstones_capture_change(${scopeOf('OLD', k)}, ${scopeOf('NEW', k)}, ${literal(k.type)},
          ${keyOf('OLD', k)}, ${keyOf('NEW', k)}, ${liveOf('OLD')}, ${liveOf('NEW')},
          ${heldBy('OLD', k)}, ${spec.soft ? heldBy('NEW', k) : 'false'},
          ${literal(k.onDelete)}, ${literal(k.reuse)}, ${k.permanent}, ${table});`,
  );
  const removed = (from: string, check: boolean) =>
    spec.keys.map(
      (k) => `${collect(k, from, check ? ` AND NOT ${heldBy('s', k)}` : '')}
        PERFORM ${schema}.tombstones_capture_mark(_scopes, ${literal(k.type)}, _keys, ${literal(k.onDelete)}, ${table});`,
    );
  const inserted = spec.keys.map(
    (k) => `${collect(k, 'tombstones_new')}
        PERFORM ${schema}.tombstones_capture_claim_all(_scopes, ${literal(k.type)}, _keys, ${literal(k.reuse)}, ${table});${
          spec.soft
            ? `
        ${collect(k, 'tombstones_new', ` AND ${col('s', spec.soft)} IS NOT NULL AND NOT ${heldBy('s', k)}`)}
        PERFORM ${schema}.tombstones_capture_mark(_scopes, ${literal(k.type)}, _keys, 'hidden', ${table});`
            : ''
        }`,
  );
  const body = `
    DECLARE
      _scopes text[];
      _keys text[];
    BEGIN
      IF TG_OP = 'UPDATE' THEN
        ${update.join('\n        ')}
      ELSIF TG_OP = 'DELETE' THEN
        ${removed('tombstones_old', true).join('\n        ')}
      ELSIF TG_OP = 'INSERT' THEN
        ${inserted.join('\n        ')}
      ELSIF TG_OP = 'TRUNCATE' THEN
        -- Before the table is emptied: every row it holds is going.
        ${removed(relation, false).join('\n        ')}
      END IF;
      RETURN NULL;
    END`;
  if (body.includes('$tombstones_capture$')) {
    throw new TombstoneConfigurationError('installTombstoneCapture: names may not contain "$tombstones_capture$".');
  }
  return `CREATE OR REPLACE FUNCTION ${name}() RETURNS trigger LANGUAGE plpgsql AS $tombstones_capture$${body}
  $tombstones_capture$`;
}

function validateSpec(spec: TombstoneCaptureSpec): TombstoneCaptureSpec {
  const fail = (what: string): never => {
    throw new TombstoneConfigurationError(`Invalid TombstoneCaptureSpec: ${what}`);
  };
  if (typeof spec !== 'object' || spec === null) fail('pass an object.');
  if (spec.v !== 1) fail('v must be 1.');
  if (typeof spec.table !== 'string' || spec.table.length === 0) fail('table must be a table name.');
  if (spec.schema != null && (typeof spec.schema !== 'string' || spec.schema.length === 0)) fail('schema must be a schema name or null.');
  if (spec.soft !== null && (typeof spec.soft !== 'string' || spec.soft.length === 0)) fail('soft must be a column or null.');
  if (!Array.isArray(spec.keys) || spec.keys.length === 0) fail('keys must list at least one key.');
  const seen = new Set<string>();
  for (const key of spec.keys) {
    if (!isValidType(key?.type)) fail('each key needs a valid type.');
    if (typeof key.column !== 'string' || key.column.length === 0) fail('each key needs a column.');
    if (key.scope !== null && (typeof key.scope !== 'string' || key.scope.length === 0)) fail('scope must be a column or null.');
    if (key.onDelete !== 'deleted' && key.onDelete !== 'hidden') fail("onDelete must be 'deleted' or 'hidden'.");
    if (key.reuse !== 'allow' && key.reuse !== 'forbid') fail("reuse must be 'allow' or 'forbid'.");
    if (typeof key.permanent !== 'boolean') fail('permanent must be a boolean.');
    if (seen.has(`${key.type}\u0000${key.column}`)) fail(`type '${key.type}' on column '${key.column}' is listed twice.`);
    seen.add(`${key.type}\u0000${key.column}`);
  }
  const { v, table, schema = null, soft, keys } = spec;
  return {
    v,
    table,
    schema,
    soft,
    keys: keys.map(({ type, column, scope, onDelete, reuse, permanent }) => ({ type, column, scope, onDelete, reuse, permanent })),
  };
}

function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function literal(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

