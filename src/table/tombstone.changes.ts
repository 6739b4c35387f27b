import { Injectable, Logger } from '@nestjs/common';
import type { EntityManager, EntitySubscriberInterface, QueryRunner, TransactionCommitEvent, TransactionRollbackEvent } from 'typeorm';
import type { TombstoneInvalidation } from '../tombstone.types.js';

/**
 * Tells this instance's listeners (the lookup cache) which keys a write of the module changed,
 * right after the write and again when the writing transaction commits: a lookup between the
 * two may have read the row as it was before the commit. Other writers (capture, psql, other
 * instances) are heard through the database's notifications instead.
 */
@Injectable()
export class TombstoneChanges implements EntitySubscriberInterface {
  private readonly logger = new Logger('TombstoneModule');
  private readonly listeners = new Set<(change: TombstoneInvalidation) => void>();
  private readonly pending = new WeakMap<QueryRunner, TombstoneInvalidation[]>();

  /** Calls `listener` with every change; answers the function that stops it. */
  subscribe(listener: (change: TombstoneInvalidation) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** A write through `manager` changed `change`'s keys. */
  emit(manager: EntityManager, change: TombstoneInvalidation): void {
    if (this.listeners.size === 0) return;
    const runner = manager.queryRunner;
    if (runner?.isTransactionActive) {
      const changes = this.pending.get(runner);
      if (changes) changes.push(change);
      else this.pending.set(runner, [change]);
    }
    this.announce(change);
  }

  afterTransactionCommit(event: TransactionCommitEvent): void {
    const changes = this.pending.get(event.queryRunner);
    if (!changes || event.queryRunner.isTransactionActive) return;
    this.pending.delete(event.queryRunner);
    for (const change of changes) this.announce(change);
  }

  afterTransactionRollback(event: TransactionRollbackEvent): void {
    if (!event.queryRunner.isTransactionActive) this.pending.delete(event.queryRunner);
  }

  private announce(change: TombstoneInvalidation): void {
    for (const listener of this.listeners) {
      try {
        listener(change);
      } catch (error) {
        this.logger.error(`Tombstone cache invalidation failed: ${(error as Error)?.message}`, (error as Error)?.stack);
      }
    }
  }
}
