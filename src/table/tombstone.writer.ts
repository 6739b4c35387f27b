import { Injectable } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import type { Tombstone } from '../tombstone.entity.js';
import { TombstoneCycleError, TombstoneError } from '../tombstone.exceptions.js';
import type { TombstoneKind } from '../tombstone.types.js';
import { collapseMoves } from './tombstone.chains.js';
import { TombstoneChanges } from './tombstone.changes.js';
import { lockTypes } from './tombstone.lock.js';
import { rowsOf, type TombstoneRow, toTombstone } from './tombstone.rows.js';
import { TombstoneTable } from './tombstone.table.js';
import { refuseBrokenWalks, refuseUnfinished, WALK_SQL, type WalkRow, walksOf } from './tombstone.walk.js';

/** What a write stores for a key, already validated. */
export interface TombstoneFields {
  kind: TombstoneKind;
  /** Redirects only: the key it leads to (collapsed by the writer). */
  target: string | null;
  permanent: boolean;
  reason: string | null;
  alternative: string | null;
  actor: string | null;
  /** `null`: now, or, on an identical re-recording, the instant already stored. */
  occurredAt: Date | null;
  expiresAt: Date | null;
  metadata: Record<string, unknown>;
  /**
   * Whether the tombstone covers every key under `key` (a prefix tombstone: `key`, and a
   * redirect's `target`, end with '/'). Default: `false`.
   */
  prefix?: boolean;
}

/** An admin write names a key that already has a tombstone. Internal: the admin answers 409. */
export class TombstoneExistsError extends TombstoneError {
  constructor(readonly id: string) {
    super('This key already has a tombstone; update it instead.');
  }
}

// An identical re-recording keeps the original occurred_at (and the hit count) unless the
// caller names a new one: recording is idempotent.
const UPSERT_COLUMNS = `(scope, resource_type, resource_key, kind, target_key, permanent, reason,
                         alternative, actor, occurred_at, expires_at, metadata, prefix)`;
const UPSERT_CONFLICT = `
  ON CONFLICT (scope, resource_type, resource_key) DO UPDATE SET
    occurred_at = CASE
      WHEN $13::boolean THEN EXCLUDED.occurred_at
      WHEN tombstones.kind = EXCLUDED.kind AND tombstones.target_key IS NOT DISTINCT FROM EXCLUDED.target_key
       AND tombstones.prefix = EXCLUDED.prefix
        THEN tombstones.occurred_at
      ELSE EXCLUDED.occurred_at END,
    kind = EXCLUDED.kind, target_key = EXCLUDED.target_key, permanent = EXCLUDED.permanent,
    reason = EXCLUDED.reason, alternative = EXCLUDED.alternative, actor = EXCLUDED.actor,
    expires_at = EXCLUDED.expires_at, metadata = EXCLUDED.metadata, prefix = EXCLUDED.prefix, updated_at = now()
  RETURNING *`;
const UPSERT_ONE_SQL = `
  INSERT INTO tombstones ${UPSERT_COLUMNS}
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, COALESCE($10, now()), $11, $12::jsonb, $14)
  ${UPSERT_CONFLICT}`;
const UPSERT_MANY_SQL = `
  INSERT INTO tombstones ${UPSERT_COLUMNS}
  SELECT $1, $2, m.source, $4, m.target, $6, $7, $8, $9, COALESCE($10, now()), $11, $12::jsonb, $14
    FROM unnest($3::text[], $5::text[]) AS m(source, target)
  ${UPSERT_CONFLICT}`;
// The unique constraint decides whether the key is free: no SELECT first.
const INSERT_SQL = `
  INSERT INTO tombstones ${UPSERT_COLUMNS}
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, COALESCE($10, now()), $11, $12::jsonb, $13)
  ON CONFLICT (scope, resource_type, resource_key) DO NOTHING
  RETURNING *`;
/** What redirected to a key now leads where that key does. */
const REPOINT_SQL = `
  UPDATE tombstones t SET target_key = m.target, updated_at = now()
    FROM unnest($3::text[], $4::text[]) AS m(source, target)
   WHERE t.scope = $1 AND t.resource_type = $2 AND t.target_key = m.source AND t.resource_key <> m.target`;

/**
 * The one way tombstones are written: the (scope, type) lock, chains collapsed as they are
 * written (every redirect stays one hop), cycles refused, targets revived by a move, and this
 * instance's cache told. The recording API, `merge()`, the admin endpoints and the import all
 * write through it. Internal.
 */
@Injectable()
export class TombstoneWriter {
  constructor(
    private readonly table: TombstoneTable,
    private readonly changes: TombstoneChanges,
  ) {}

  /** Gives a key a tombstone that is not a redirect (deleted, hidden), replacing its own. */
  async put(manager: EntityManager | undefined, scope: string, type: string, key: string, fields: TombstoneFields): Promise<Tombstone> {
    const db = manager ?? this.table.dataSource.manager;
    const [row] = rowsOf<TombstoneRow>(await db.query(UPSERT_ONE_SQL, params(scope, type, key, fields)));
    this.changed(db, scope, type, fields.kind, [key]);
    return toTombstone(row);
  }

  /**
   * Records that each source now lives at its target (`moved`) or was folded into it (`merged`).
   * The batch says where each key lives now: its targets become live (their own tombstones go),
   * what led to a source leads to where it went, and a batch that is itself a cycle is refused.
   */
  async redirect(
    manager: EntityManager | undefined,
    scope: string,
    type: string,
    moves: readonly { from: string; to: string }[],
    fields: TombstoneFields,
  ): Promise<Tombstone[]> {
    const finals = collapseMoves(type, moves);
    const sources = [...finals.keys()];
    const targets = sources.map((source) => finals.get(source) as string);
    const revived = [...new Set(targets)];
    const db = manager ?? this.table.dataSource.manager;
    const written = await db.transaction(async (tx) => {
      await lockTypes(tx, [{ scope, type }]);
      await tx.query(`DELETE FROM tombstones WHERE scope = $1 AND resource_type = $2 AND resource_key = ANY($3::text[])`, [scope, type, revived]);
      await tx.query(REPOINT_SQL, [scope, type, sources, targets]);
      const upsert = params(scope, type, null, fields);
      upsert[2] = sources;
      upsert[4] = targets;
      const rows = rowsOf<TombstoneRow>(await tx.query(UPSERT_MANY_SQL, upsert)).map(toTombstone);
      if (fields.prefix === true) {
        for (const source of sources) {
          const target = finals.get(source) as string;
          if (target.startsWith(source)) throw new TombstoneCycleError(type, [source, target, source]);
        }
      }
      await refuseBrokenWalks(tx, scope, type, sources, fields.prefix === true ? sources.map((from) => ({ from, to: finals.get(from) as string })) : []);
      return rows;
    });
    this.changes.emit(db, { scope, type, listed: sources, unlisted: revived });
    return written;
  }

  /**
   * An operator's new tombstone. Unlike a move, a redirect never revives its target: it is
   * collapsed through the table's redirect of the target, and one that would lead back to its
   * key is a `TombstoneCycleError`. A key that has a tombstone is a `TombstoneExistsError`.
   */
  async create(scope: string, type: string, key: string, fields: TombstoneFields): Promise<Tombstone> {
    const db = this.table.dataSource.manager;
    const created = await db.transaction(async (tx) => {
      await lockTypes(tx, [{ scope, type }]);
      let target: string | null = null;
      try {
        if (fields.target !== null) target = await this.follow(tx, scope, type, key, fields.target, fields.prefix === true);
      } catch (error) {
        // A key that has a tombstone is told so first, whatever its redirect would do.
        const existing = await this.idOf(tx, scope, type, key);
        throw existing === undefined ? error : new TombstoneExistsError(existing);
      }
      // The unique constraint decides whether the key is free. A row that is gone again by the
      // time it is named (a concurrent restore) frees the key: the insert is tried once more.
      for (let attempt = 0; ; attempt++) {
        const values = params(scope, type, key, { ...fields, target });
        const [row] = rowsOf<TombstoneRow>(await tx.query(INSERT_SQL, [...values.slice(0, 12), values[13]]));
        if (row) {
          if (target !== null) {
            await tx.query(REPOINT_SQL, [scope, type, [key], [target]]);
            await refuseBrokenWalks(tx, scope, type, [key], fields.prefix === true ? [{ from: key, to: target }] : []);
          }
          return toTombstone(row);
        }
        const existing = await this.idOf(tx, scope, type, key);
        if (existing !== undefined || attempt > 0) throw new TombstoneExistsError(String(existing));
      }
    });
    this.changed(db, scope, type, fields.kind, [key]);
    return created;
  }

  /**
   * Changes the tombstone `id` to what `build` makes of it (with the row locked); answers `null`
   * when there is none. A changed kind or target starts a new `occurredAt`.
   */
  async update(id: string, build: (current: Tombstone) => TombstoneFields): Promise<Tombstone | null> {
    const db = this.table.dataSource.manager;
    const updated = await db.transaction(async (tx) => {
      // The (scope, type) lock first, then the row's, in the order every other writer takes them.
      const [named] = rowsOf<TombstoneRow>(await tx.query(`SELECT scope, resource_type FROM tombstones WHERE id = $1`, [id]));
      if (!named) return null;
      await lockTypes(tx, [{ scope: named.scope, type: named.resource_type }]);
      const [locked] = rowsOf<TombstoneRow>(await tx.query(`SELECT * FROM tombstones WHERE id = $1 FOR UPDATE`, [id]));
      if (!locked) return null;
      const current = toTombstone(locked);
      const fields = build(current);
      const target = fields.target === null ? null : await this.follow(tx, current.scope, current.type, current.key, fields.target, current.prefix);
      const renewed = fields.kind !== current.kind || target !== current.target;
      const [row] = rowsOf<TombstoneRow>(
        await tx.query(
          `UPDATE tombstones SET kind = $2, target_key = $3, permanent = $4, reason = $5, alternative = $6, actor = $7,
                  expires_at = $8, metadata = $9::jsonb, occurred_at = CASE WHEN $10::boolean THEN now() ELSE occurred_at END,
                  updated_at = now()
            WHERE id = $1 RETURNING *`,
          [id, fields.kind, target, fields.permanent, fields.reason, fields.alternative, fields.actor, fields.expiresAt, JSON.stringify(fields.metadata), renewed],
        ),
      );
      if (target !== null) {
        await tx.query(REPOINT_SQL, [current.scope, current.type, [current.key], [target]]);
        await refuseBrokenWalks(tx, current.scope, current.type, [current.key], current.prefix ? [{ from: current.key, to: target }] : []);
      }
      return toTombstone(row);
    });
    if (updated) this.changed(db, updated.scope, updated.type, updated.kind, [updated.key]);
    return updated;
  }

  /** Removes a key's tombstone: the key is live again. Answers whether there was one. */
  async remove(manager: EntityManager | undefined, scope: string, type: string, key: string): Promise<boolean> {
    const db = manager ?? this.table.dataSource.manager;
    const deleted = rowsOf(
      await db.query(`DELETE FROM tombstones WHERE scope = $1 AND resource_type = $2 AND resource_key = $3 RETURNING id`, [scope, type, key]),
    );
    if (deleted.length > 0) this.changes.emit(db, { scope, type, listed: [], unlisted: [key] });
    return deleted.length > 0;
  }

  /** Removes the tombstone `id`; answers whether there was one. */
  async removeById(id: string): Promise<boolean> {
    const db = this.table.dataSource.manager;
    const [row] = rowsOf<TombstoneRow>(await db.query(`DELETE FROM tombstones WHERE id = $1 RETURNING scope, resource_type, resource_key`, [id]));
    if (row) this.changes.emit(db, { scope: row.scope, type: row.resource_type, listed: [], unlisted: [row.resource_key] });
    return row !== undefined;
  }

  private async idOf(tx: EntityManager, scope: string, type: string, key: string): Promise<string | undefined> {
    const [row] = rowsOf<{ id: string }>(
      await tx.query(`SELECT id FROM tombstones WHERE scope = $1 AND resource_type = $2 AND resource_key = $3`, [scope, type, key]),
    );
    return row === undefined ? undefined : String(row.id);
  }

  /**
   * Where a redirect from `key` to `target` ends: through the table's redirects of the target
   * (its own row's, or its prefix tombstone's), so that a chain stays one hop. A prefix
   * redirect is not collapsed (a key's own move is not its section's): its lookups follow it.
   */
  private async follow(tx: EntityManager, scope: string, type: string, key: string, target: string, prefix: boolean): Promise<string> {
    if (target === key) throw new TombstoneCycleError(type, [key, key]);
    if (prefix) {
      // Every key under it would move under itself again, without end.
      if (target.startsWith(key)) throw new TombstoneCycleError(type, [key, target, key]);
      return target;
    }
    const walk = walksOf(rowsOf<WalkRow>(await tx.query(WALK_SQL, [scope, type, [target]]))).get(1);
    if (walk === undefined) return target;
    const path = walk.map((step) => step.key);
    const back = path.indexOf(key);
    if (back !== -1) throw new TombstoneCycleError(type, [key, ...path.slice(0, back + 1)]);
    refuseUnfinished(type, walk);
    return walk[walk.length - 1].key;
  }

  private changed(manager: EntityManager, scope: string, type: string, kind: TombstoneKind, keys: string[]): void {
    this.changes.emit(manager, kind === 'hidden' ? { scope, type, listed: [], unlisted: keys } : { scope, type, listed: keys, unlisted: [] });
  }
}

function params(scope: string, type: string, key: string | null, fields: TombstoneFields): unknown[] {
  return [
    scope,
    type,
    key,
    fields.kind,
    fields.target,
    fields.permanent,
    fields.reason,
    fields.alternative,
    fields.actor,
    fields.occurredAt,
    fields.expiresAt,
    JSON.stringify(fields.metadata),
    fields.occurredAt !== null,
    fields.prefix === true,
  ];
}
