import { NO_TOMBSTONE, type TombstoneKind, type TombstoneLookupResult, type TombstoneResolution } from '../tombstone.types.js';
import { preview, TombstoneCycleError, TombstoneValidationError } from '../tombstone.exceptions.js';
import { isSafeLink, PREFIX_SEGMENTS } from '../tombstone.validation.js';

// How a key finds its tombstone, prefix tombstones included (see docs/table.md, "Lookups"):
// its best match is its own row, else the row of its longest prefix that is a prefix tombstone;
// a redirect's target (a moved prefix: its target followed by the rest of the key) is matched
// the same way, and so on, all in one recursive query.

/** The most segments a prefix has, and so the most prefixes a key's lookup probes. */
export const MAX_PREFIX_SEGMENTS = PREFIX_SEGMENTS;
/** The most redirects a lookup follows; a write that would need more is refused. */
export const MAX_HOPS = 8;

/**
 * The prefixes that can cover `key`, longest last: each ends at a '/' of the key (the key
 * itself too, when it ends with one), at most `MAX_PREFIX_SEGMENTS`. `docs/v1/intro` →
 * `docs/`, `docs/v1/`.
 */
export function candidatePrefixes(key: string): string[] {
  const prefixes: string[] = [];
  for (let at = key.indexOf('/'); at !== -1 && prefixes.length < MAX_PREFIX_SEGMENTS; at = key.indexOf('/', at + 1)) {
    prefixes.push(key.slice(0, at + 1));
  }
  return prefixes;
}

// The same candidates in SQL, for a key computed in the query (a redirect's target). A constant
// series, filtered: the planner estimates it alike whether it knows the key or not, so that a
// prepared lookup keeps its generic plan (a series bounded by the key would look cheaper to plan
// for each key, and PostgreSQL would then plan every lookup again: three times its cost).
const candidatesOf = (x: string) => `
  ARRAY(SELECT array_to_string(p.s[1:i], '/') || '/'
          FROM (SELECT string_to_array(${x}, '/') AS s) p,
               generate_series(1, ${MAX_PREFIX_SEGMENTS}) i
         WHERE i < cardinality(p.s)) || ${x}`;

// The row that answers for key `x` of ($1, $2): its own, else its longest prefix tombstone. One
// scan of the unique index (scope, resource_type, resource_key) over at most 17 keys.
const matchOf = (x: string) => `
  SELECT t.id, t.kind, t.prefix, t.resource_key, t.target_key, t.permanent, t.reason, t.alternative,
         t.occurred_at, t.expires_at
    FROM tombstones t
   WHERE t.scope = $1 AND t.resource_type = $2 AND t.resource_key = ANY (${candidatesOf(x)})
     AND (t.prefix OR t.resource_key = ${x})
     AND (t.expires_at IS NULL OR t.expires_at > now())
   ORDER BY length(t.resource_key) DESC
   LIMIT 1`;

const walkOf = (anchor: string) => `
  WITH RECURSIVE walk AS (
    SELECT k.n, 0 AS depth, k.key, ARRAY[k.key] AS path, m.*
      FROM ${anchor}
     CROSS JOIN LATERAL (${matchOf('k.key')}) m
    UNION ALL
    SELECT w.n, w.depth + 1, x.key, w.path || x.key, m.*
      FROM walk w
     CROSS JOIN LATERAL (
       SELECT CASE WHEN w.prefix THEN w.target_key || substr(w.key, length(w.resource_key) + 1) ELSE w.target_key END AS key) x
      LEFT JOIN LATERAL (${matchOf('x.key')}) m ON true
     WHERE w.kind IN ('moved', 'merged') AND w.depth < ${MAX_HOPS} AND x.key <> ALL (w.path)
  )
  SELECT n, depth, key, id, kind, prefix, resource_key, target_key, permanent, reason, alternative, occurred_at, expires_at
    FROM walk`;

/**
 * The walk of each key of $3 (text[]) in ($1, $2): one row per step, for the key `n` (from 1)
 * at step `depth` (from 0), in no order (`walksOf()` orders them). A key without a tombstone has
 * no row; a walk's last step has no tombstone (`kind` null), or is not a redirect, or is a
 * redirect not followed (a cycle: its next key is already on the path; or `MAX_HOPS` reached).
 */
export const WALK_SQL = walkOf('unnest($3::text[]) WITH ORDINALITY AS k(key, n)');

/**
 * `WALK_SQL` for the one key $3 (text): the lookup, a prepared statement. A scalar rather than
 * an array of one, for the reason given above `candidatesOf`.
 */
export const WALK_ONE_SQL = walkOf('(SELECT 1 AS n, $3::text AS key) k');

/** One step of a walk: the key reached, and the row that answers for it (all null: none). */
export interface WalkRow {
  n: string | number;
  depth: number;
  key: string;
  id: string | null;
  kind: TombstoneKind | null;
  prefix: boolean | null;
  resource_key: string | null;
  target_key: string | null;
  permanent: boolean | null;
  reason: string | null;
  alternative: string | null;
  occurred_at: Date | null;
  expires_at: Date | null;
}

/** The walks of a `WALK_SQL` answer, per key (by `n`, from 1). */
export function walksOf(rows: readonly WalkRow[]): Map<number, WalkRow[]> {
  const walks = new Map<number, WalkRow[]>();
  for (const row of rows) {
    const n = Number(row.n);
    let walk = walks.get(n);
    if (walk === undefined) walks.set(n, (walk = []));
    walk.push(row);
  }
  for (const walk of walks.values()) if (walk.length > 1) walk.sort((a, b) => a.depth - b.depth);
  return walks;
}

/** Where the redirect of a walk's step leads: its target, with the rest of the key for a prefix. */
export function nextKey(step: WalkRow): string | null {
  if (step.target_key === null || step.resource_key === null) return null;
  return step.prefix ? step.target_key + step.key.slice(step.resource_key.length) : step.target_key;
}

/** Whether a walk ended on a redirect it could not follow: a cycle, or too many hops. */
export function unfinished(walk: readonly WalkRow[]): { cycle: boolean; path: string[] } | null {
  const last = walk[walk.length - 1];
  if (!isRedirectKind(last.kind)) return null;
  const path = walk.map((step) => step.key);
  const next = nextKey(last);
  return next !== null && path.includes(next) ? { cycle: true, path: [...path, next] } : { cycle: false, path };
}

const NO_LOOKUP: TombstoneLookupResult = Object.freeze({ resolution: NO_TOMBSTONE, via: null, validUntil: null, cacheable: true });

/**
 * What a walk answers, with what a cache needs to keep it: the key it was read through (a
 * one-hop redirect's target) and when it stops being true. The answer carries the `id` of the
 * row that answered for the key asked; the walk's end decides the rest.
 */
export function resultOfWalk(walk: readonly WalkRow[] | undefined): TombstoneLookupResult {
  if (walk === undefined || walk.length === 0 || walk[0].kind === null) return NO_LOOKUP;
  const first = walk[0];
  const last = walk[walk.length - 1];
  const expiries = walk.flatMap((step) => (step.expires_at === null ? [] : [step.expires_at.getTime()]));
  const validUntil = expiries.length === 0 ? null : Math.min(...expiries);
  const id = String(first.id);
  if (!isRedirectKind(first.kind)) return { resolution: decided(first, id), via: null, validUntil, cacheable: true };
  const redirects = walk.filter((step) => isRedirectKind(step.kind));
  let resolution: TombstoneResolution;
  if (last.kind === null || isRedirectKind(last.kind)) {
    resolution = {
      state: 'moved',
      id,
      // A walk that could not be followed to its end (only a chain written by hand): its last key.
      target: last.kind === null ? last.key : (nextKey(last) ?? last.key),
      permanent: redirects.every((step) => step.permanent !== false),
      merged: redirects.some((step) => step.kind === 'merged'),
    };
  } else {
    resolution = decided(last, id);
  }
  // A one-hop answer depends on the key's rows and its target's: a change of either drops it
  // (a change of a prefix drops every answer). Longer walks depend on more keys: not kept.
  const oneHop = walk.length === 2 && !isRedirectKind(last.kind);
  return { resolution, via: oneHop ? last.key : null, validUntil, cacheable: oneHop || walk.length === 1 };
}

function decided(step: WalkRow, id: string): TombstoneResolution {
  if (step.kind === 'hidden') return { state: 'hidden', id };
  if (step.kind === 'deleted') {
    return { state: 'gone', id, deletedAt: step.occurred_at as Date, reason: step.reason, alternative: answerable(step.alternative) };
  }
  return NO_TOMBSTONE;
}

function isRedirectKind(kind: TombstoneKind | null): boolean {
  return kind === 'moved' || kind === 'merged';
}

/**
 * An alternative as answers carry it (a `Link` header, the body): one that is not a safe link
 * (written with SQL: non-ASCII, a line break, another scheme) is left out, never sent.
 */
function answerable(alternative: string | null): string | null {
  return typeof alternative === 'string' && isSafeLink(alternative) ? alternative : null;
}

/** What the write checks send their SQL to: a transaction's EntityManager. */
interface Queryable {
  query(sql: string, parameters?: unknown[]): Promise<unknown>;
}

/**
 * The keys whose walks a prefix redirect $3 → $4 may change: a key under $3 whose rewrite lands
 * under a redirect under $4, and a key whose redirect leads under $3.
 */
const RELATED_SQL = `
  (SELECT $3 || substr(resource_key, length($4) + 1) AS key FROM tombstones
    WHERE scope = $1 AND resource_type = $2 AND kind IN ('moved', 'merged')
      AND left(resource_key, length($4)) = $4 AND resource_key <> $4
    LIMIT 1000)
  UNION
  (SELECT resource_key FROM tombstones
    WHERE scope = $1 AND resource_type = $2 AND kind IN ('moved', 'merged') AND left(target_key, length($3)) = $3
    LIMIT 1000)`;

/**
 * Refuses (in the writing transaction, after the write) a write after which a lookup would not
 * reach a walk's end: a cycle (`TombstoneCycleError`), or more than `MAX_HOPS` redirects
 * (`TombstoneValidationError`). Walks the keys written and, for each prefix redirect
 * `from` → `to`, the prefix itself, the keys under it that lead through a redirect under `to`,
 * and the keys that lead under it (up to 1,000 of each).
 */
export async function refuseBrokenWalks(
  db: Queryable,
  scope: string,
  type: string,
  keys: Iterable<string>,
  prefixMoves: readonly { from: string; to: string }[],
): Promise<void> {
  const starts = new Set(keys);
  for (const move of prefixMoves) {
    starts.add(move.from);
    for (const row of (await db.query(RELATED_SQL, [scope, type, move.from, move.to])) as { key: string }[]) starts.add(row.key);
  }
  if (starts.size === 0) return;
  const walks = walksOf((await db.query(WALK_SQL, [scope, type, [...starts]])) as WalkRow[]);
  for (const walk of walks.values()) refuseUnfinished(type, walk);
}

/** A walk a lookup could not finish: a cycle (`TombstoneCycleError`), or too long a chain. */
export function refuseUnfinished(type: string, walk: readonly WalkRow[]): void {
  const gap = unfinished(walk);
  if (gap === null) return;
  if (gap.cycle) throw new TombstoneCycleError(type, gap.path);
  throw new TombstoneValidationError(
    'target',
    `The redirects of ${type} would form a chain of more than ${MAX_HOPS} hops from '${preview(gap.path[0])}'.`,
    ['Point the redirects at the keys where the resources live now.'],
  );
}
