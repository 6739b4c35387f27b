import type { EntityManager } from 'typeorm';

/**
 * The name of the transaction-level advisory lock that serialises chain edits of one
 * (scope, type). Every writer that edits redirects takes it: the recording API and the admin
 * endpoints exclusively, captured moves shared. The capture trigger spells the same expression
 * in SQL (`'nestjs-tombstones' || chr(31) || scope || chr(31) || type`, migration
 * 1763856000000); a test pins the two equal.
 */
export function lockName(scope: string, type: string): string {
  return `nestjs-tombstones\u001f${scope}\u001f${type}`;
}

/**
 * Takes the (scope, type) locks of `pairs` for the rest of the manager's transaction, in one
 * statement and in a fixed order (two writers that lock the same pairs never deadlock).
 */
export async function lockTypes(manager: EntityManager, pairs: Iterable<{ readonly scope: string; readonly type: string }>): Promise<void> {
  const names = [...new Set([...pairs].map((pair) => lockName(pair.scope, pair.type)))].sort();
  if (names.length === 1) await manager.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, names);
  else if (names.length > 1) {
    await manager.query(`SELECT pg_advisory_xact_lock(hashtextextended(name, 0)) FROM unnest($1::text[]) AS name`, [names]);
  }
}
