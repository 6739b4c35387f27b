import { Tombstone } from '../tombstone.entity.js';
import type { TombstoneKind } from '../tombstone.types.js';

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
  prefix: boolean;
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

export function toTombstone(row: TombstoneRow): Tombstone {
  return Object.assign(new Tombstone(), {
    id: String(row.id),
    scope: row.scope,
    type: row.resource_type,
    key: row.resource_key,
    kind: row.kind,
    prefix: row.prefix === true,
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
