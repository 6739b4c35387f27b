import type { Logger as TypeOrmLogger } from 'typeorm';

/** A TypeORM logger that counts the statements that touch the tombstone table. */
export class QueryCounter implements TypeOrmLogger {
  readonly queries: string[] = [];

  get tombstoneQueries(): number {
    return this.queries.filter((q) => /\btombstones\b/.test(q)).length;
  }

  reset(): void {
    this.queries.length = 0;
  }

  logQuery(query: string): void {
    this.queries.push(query);
  }
  logQueryError(): void {}
  logQuerySlow(): void {}
  logSchemaBuild(): void {}
  logMigration(): void {}
  log(): void {}
}
