import { Column, DeleteDateColumn, Entity, PrimaryColumn, PrimaryGeneratedColumn } from 'typeorm';
import { TombstoneTracked } from '../src/index.js';

/**
 * Tracked by slug: a delete answers 410, a soft delete 404, a slug change a redirect. The
 * database records each of them (see `TrackDemoTables1763942400000`).
 */
@Entity({ name: 'demo_articles' })
@TombstoneTracked({ type: 'article', key: 'slug', onDelete: 'gone' })
export class Article {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'text', unique: true })
  slug!: string;

  @Column({ type: 'text' })
  title!: string;

  @Column({ type: 'text', array: true, default: () => "'{}'" })
  tags!: string[];

  /** Soft delete: a soft-deleted article is hidden (404), not gone. */
  @DeleteDateColumn({ name: 'deleted_at', type: 'timestamptz', nullable: true })
  deletedAt!: Date | null;
}

@Entity({ name: 'demo_users' })
@TombstoneTracked({ type: 'user', key: 'id' })
export class User {
  @PrimaryColumn({ type: 'integer' })
  id!: number;

  @Column({ type: 'text' })
  name!: string;
}

/** An order number is only meaningful within its tenant: the tenant is the tombstone's scope. */
@Entity({ name: 'demo_orders' })
@TombstoneTracked({ type: 'order', key: 'number', scope: 'tenant' })
export class Order {
  @PrimaryColumn({ type: 'text' })
  tenant!: string;

  @PrimaryColumn({ type: 'integer' })
  number!: number;

  @Column({ type: 'integer' })
  totalCents!: number;
}

export const DEMO_ENTITIES = [Article, User, Order];
