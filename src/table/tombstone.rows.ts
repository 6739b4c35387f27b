import { Tombstone } from '../tombstone.entity.js';
import { NO_TOMBSTONE, type TombstoneKind, type TombstoneResolution } from '../tombstone.types.js';
import { isSafeLink } from '../tombstone.validation.js';

/**
 * A row of the tombstone table as node-postgres reads it. The one place where the columns meet
 * the entity's names: `resource_type` is `type`, `resource_key` is `key`, `target_key` is
 * `target` (see docs/table.md).
 */
export interface TombstoneRow {
  /** bigint: node-postgres gives it as a string. */
  id: string;
  scope: string;
  resource_type: string;
  resource_key: string;
  kind: TombstoneKind;
  target_key: string | null;
  permanent: boolean;
  reason: string | null;
  alternative: string | null;
  actor: string | null;
  occurred_at: Date;
  expires_at: Date | null;
  metadata: Record<string, unknown> | null;
  hit_count: string | number | null;
  last_hit_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

/** What the lookup reads: the key's row and its target's own tombstone (`final_*`). */
export interface LookupRow {
  id: string;
  kind: TombstoneKind;
  target_key: string | null;
  permanent: boolean;
  reason: string | null;
  alternative: string | null;
  occurred_at: Date;
  expires_at: Date | null;
  final_kind: TombstoneKind | null;
  final_target_key: string | null;
  final_permanent: boolean | null;
  final_reason: string | null;
  final_alternative: string | null;
  final_occurred_at: Date | null;
  final_expires_at: Date | null;
}

export function toTombstone(row: TombstoneRow): Tombstone {
  return Object.assign(new Tombstone(), {
    id: String(row.id),
    scope: row.scope,
    type: row.resource_type,
    key: row.resource_key,
    kind: row.kind,
    target: row.target_key ?? null,
    permanent: row.permanent,
    reason: row.reason ?? null,
    alternative: row.alternative ?? null,
    actor: row.actor ?? null,
    occurredAt: row.occurred_at,
    expiresAt: row.expires_at ?? null,
    metadata: row.metadata ?? {},
    hitCount: Number(row.hit_count ?? 0),
    lastHitAt: row.last_hit_at ?? null,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  });
}

/** Rows of a raw query; TypeORM answers `[rows, count]` for UPDATE and DELETE. */
export function rowsOf<T>(result: unknown): T[] {
  const list = result as unknown[];
  return (Array.isArray(list[0]) ? list[0] : list) as T[];
}

/** Whether a kind answers a redirect. */
export function isRedirect(kind: TombstoneKind | null | undefined): kind is 'moved' | 'merged' {
  return kind === 'moved' || kind === 'merged';
}

/** What a lookup row answers, chains followed to their end. */
export function interpret(row: LookupRow): TombstoneResolution {
  const id = String(row.id);
  switch (row.kind) {
    case 'hidden':
      return { state: 'hidden', id };
    case 'deleted':
      return { state: 'gone', id, deletedAt: row.occurred_at, reason: row.reason, alternative: answerable(row.alternative) };
    case 'moved':
    case 'merged':
      break;
    default:
      return NO_TOMBSTONE;
  }
  // The chain ends at the target; its own tombstone decides (moved, then deleted: 410).
  switch (row.final_kind) {
    case 'hidden':
      return { state: 'hidden', id };
    case 'deleted':
      return {
        state: 'gone',
        id,
        deletedAt: row.final_occurred_at as Date,
        reason: row.final_reason,
        alternative: answerable(row.final_alternative),
      };
    case 'moved':
    case 'merged':
      // Only rows written before chains were collapsed (or edited by hand) get here.
      return {
        state: 'moved',
        id,
        target: row.final_target_key as string,
        permanent: row.permanent && row.final_permanent !== false,
        merged: row.kind === 'merged' || row.final_kind === 'merged',
      };
    default:
      return { state: 'moved', id, target: row.target_key as string, permanent: row.permanent, merged: row.kind === 'merged' };
  }
}

/**
 * An alternative as answers carry it (a `Link` header, the body): one that is not a safe link
 * (written with SQL: non-ASCII, a line break, another scheme) is left out, never sent.
 */
function answerable(alternative: string | null): string | null {
  return typeof alternative === 'string' && isSafeLink(alternative) ? alternative : null;
}
