import { MAX_SUGGESTIONS } from './tombstone.similarity.js';

// The queries of suggestions: $1 the key asked for, $2 the scope, $3 the type.

/** Candidates each source gives the ranking: the nearest by trigram distance, or in sort order on each side. */
const CANDIDATES = 10;
const NEIGHBOURS = 25;

/** Where the live keys of a type are: the `@TombstoneTracked` table, as SQL (quoted names). */
export interface RowSource {
  readonly relation: string;
  readonly column: string;
  /** The scope column, or `null`: the rows are unscoped, and only the `''` scope sees them. */
  readonly scope: string | null;
  readonly soft: string | null;
}

/** Keys with a live tombstone of the type (hidden, deleted, moved): never suggested. */
function untombstoned(key: string): string {
  return `NOT EXISTS (SELECT 1 FROM tombstones x
     WHERE x.scope = $2 AND x.resource_type = $3 AND x.resource_key = ${key}::text AND (x.expires_at IS NULL OR x.expires_at > now()))`;
}

/** Targets of the type's live moves and merges, in the scope. */
const LIVE_TARGETS = `t.scope = $2 AND t.resource_type = $3 AND t.kind IN ('moved', 'merged') AND t.target_key IS NOT NULL
       AND (t.expires_at IS NULL OR t.expires_at > now()) AND t.target_key <> $1::text AND ${untombstoned('t.target_key')}`;

/** Live rows: not soft-deleted, in the scope, without a tombstone. */
function liveRows(rows: RowSource): string {
  const soft = rows.soft === null ? '' : ` AND r.${rows.soft} IS NULL`;
  const scope = rows.scope === null ? '' : ` AND r.${rows.scope}::text = $2`;
  return `r.${rows.column} <> $1::text${soft}${scope} AND ${untombstoned(`r.${rows.column}`)}`;
}

/** With pg_trgm: the nearest keys of each source by trigram distance (a trigram index serves them), best first. */
export function trigramSql(rows: RowSource | null): string {
  const live =
    rows === null
      ? ''
      : `(SELECT r.${rows.column}::text AS key, similarity(r.${rows.column}, $1::text) AS score FROM ${rows.relation} r
          WHERE r.${rows.column} % $1::text AND ${liveRows(rows)}
          ORDER BY r.${rows.column} <-> $1::text LIMIT ${CANDIDATES})
        UNION ALL `;
  return `SELECT c.key, max(c.score) AS score FROM (${live}
      (SELECT t.target_key AS key, similarity(t.target_key, $1::text) AS score FROM tombstones t
        WHERE t.target_key % $1::text AND ${LIVE_TARGETS}
        ORDER BY t.target_key <-> $1::text LIMIT ${CANDIDATES})) c
    GROUP BY c.key ORDER BY score DESC, c.key LIMIT ${MAX_SUGGESTIONS}`;
}

/** Without pg_trgm: the keys next to the one asked for in sort order, on each side (a b-tree serves them). */
export function neighboursSql(rows: RowSource | null): string {
  const side = (from: string, column: string, where: string, op: string, order: string) =>
    `(SELECT ${column}::text AS key FROM ${from} WHERE ${column} ${op} $1::text AND ${where} ORDER BY ${column} ${order} LIMIT ${NEIGHBOURS})`;
  const parts = [side('tombstones t', 't.target_key', LIVE_TARGETS, '>', 'ASC'), side('tombstones t', 't.target_key', LIVE_TARGETS, '<', 'DESC')];
  if (rows !== null) {
    parts.unshift(side(`${rows.relation} r`, `r.${rows.column}`, liveRows(rows), '>', 'ASC'), side(`${rows.relation} r`, `r.${rows.column}`, liveRows(rows), '<', 'DESC'));
  }
  return `SELECT DISTINCT c.key FROM (${parts.join(' UNION ALL ')}) c`;
}
