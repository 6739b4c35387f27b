import { Column, CreateDateColumn, Entity, Index, PrimaryGeneratedColumn, UpdateDateColumn } from 'typeorm';
import { TOMBSTONE_TABLE } from './tombstone.constants.js';
import { type TombstoneKind } from './tombstone.types.js';


const bigintAsNumber = {
  to: (value: number | undefined) => value,
  from: (value: string | null) => (value === null ? 0 : Number(value)),
};

/**
 * One row per (scope, resource type, resource key) that is no longer where a client may look
 * for it. The table is created by the shipped migration (`TOMBSTONE_MIGRATIONS`); its
 * constraints, not this class, are the source of truth.
 *
 * @example
 * TypeOrmModule.forRoot({ ...db, entities: [...TOMBSTONE_ENTITIES], migrations: [...TOMBSTONE_MIGRATIONS] })
 */
@Entity({ name: TOMBSTONE_TABLE })
@Index('tombstones_scope_type_key_key', ['scope', 'type', 'key'], { unique: true })
export class Tombstone {
  @PrimaryGeneratedColumn('identity', { type: 'bigint', generatedIdentity: 'ALWAYS' })
  id!: string;

  /** Tenant, region or site; `''` when unscoped. */
  @Column({ type: 'text', default: '' })
  scope!: string;

  @Column({ name: 'resource_type', type: 'text' })
  type!: string;

  @Column({ name: 'resource_key', type: 'text' })
  key!: string;

  @Column({ type: 'text' })
  kind!: TombstoneKind;

  /**
   * Whether the tombstone covers every key that starts with `key` (which then ends with '/'), not
   * only `key` itself. A moved prefix keeps the rest of the key: `docs/v1/` → `docs/v2/` sends
   * `docs/v1/guide/intro` to `docs/v2/guide/intro`. See docs/recording.md.
   */
  @Column({ type: 'boolean', default: false })
  prefix!: boolean;

  /** Where a `moved` or `merged` key lives now; always a key that has not moved itself. */
  @Column({ name: 'target_key', type: 'text', nullable: true })
  target!: string | null;

  /** Permanent redirects answer 301/308, temporary ones 302/307. */
  @Column({ type: 'boolean', default: true })
  permanent!: boolean;

  @Column({ type: 'text', nullable: true })
  reason!: string | null;

  /** A link offered with a 410 (`deleted` rows only). */
  @Column({ type: 'text', nullable: true })
  alternative!: string | null;

  @Column({ type: 'text', nullable: true })
  actor!: string | null;

  @Column({ name: 'occurred_at', type: 'timestamptz', default: () => 'now()' })
  occurredAt!: Date;

  /** After this instant the tombstone no longer answers (the key is a plain 404). */
  @Column({ name: 'expires_at', type: 'timestamptz', nullable: true })
  expiresAt!: Date | null;

  @Column({ type: 'jsonb', default: () => "'{}'::jsonb" })
  metadata!: Record<string, unknown>;

  @Column({ name: 'hit_count', type: 'bigint', default: 0, transformer: bigintAsNumber })
  hitCount!: number;

  @Column({ name: 'last_hit_at', type: 'timestamptz', nullable: true })
  lastHitAt!: Date | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' })
  updatedAt!: Date;
}
