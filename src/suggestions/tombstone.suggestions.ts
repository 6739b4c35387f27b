import { Inject, Injectable, Logger, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { LRUCache } from 'lru-cache';
import Negotiator from 'negotiator';
import { relationOf, tombstoneCaptureSpec } from '../capture/tombstone.capture.js';
import { type EntityClass, trackedDeclarations } from '../capture/tombstone.tracked.js';
import { TombstoneNotifications } from '../cache/tombstone.notifications.js';
import { TombstoneChanges } from '../table/tombstone.changes.js';
import { TombstoneTable } from '../table/tombstone.table.js';
import { TOMBSTONE_OPTIONS } from '../tombstone.constants.js';
import { preview } from '../tombstone.exceptions.js';
import { LogBudget } from '../tombstone.log-budget.js';
import type { ResolvedSuggestionOptions, ResolvedTombstoneOptions } from '../tombstone.options.js';
import type { TombstoneRequest } from '../tombstone.types.js';
import { neighboursSql, type RowSource, trigramSql } from './tombstone.suggestion-queries.js';
import { rankBySimilarity } from './tombstone.similarity.js';
import { SuggestionBudget } from './tombstone.suggestion-budget.js';

/**
 * "Did you mean" for 404s: live keys of a type like the one asked for, from the type's
 * `@TombstoneTracked` table (soft-deleted rows left out) and from the targets of its moves and
 * merges that have not expired, in the request's scope only; never a key that has a live
 * tombstone of its own (a hidden one included). What it answers depends on the scope, the type
 * and the key's text only, never on the key's own tombstone: a hidden key gets exactly what a key
 * that never existed gets.
 *
 * A flood must not become queries: misses share one budget (`SuggestionBudget`: a token bucket
 * in quiet times, one query per 10,000 misses in a flood), one query at a time, and answers are
 * kept per key while the lookup cache listens for changes (any change drops them all). Reads fail open: a query that fails or takes longer than
 * `timeoutMs` gives no suggestions, and is logged at a bounded rate. Internal.
 */
@Injectable()
export class TombstoneSuggestions implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger('TombstoneModule');
  private readonly logBudget = new LogBudget();
  private readonly settings: ResolvedSuggestionOptions;
  private readonly kept: LRUCache<string, readonly string[]>;
  private readonly inflight = new Map<string, { epoch: number; answer: Promise<readonly string[]> }>();
  /** Changes at every change heard: an answer read before one is neither kept nor shared. */
  private epoch = 0;
  private readonly sources = new Map<string, RowSource | null>();
  private trigram: Promise<boolean> | undefined;
  private readonly budget: SuggestionBudget;
  private busy = false;
  private readonly stops: (() => void)[] = [];

  constructor(
    @Inject(TOMBSTONE_OPTIONS) options: ResolvedTombstoneOptions,
    private readonly table: TombstoneTable,
    private readonly changes: TombstoneChanges,
    private readonly notifications: TombstoneNotifications,
  ) {
    this.settings = options.suggestions;
    this.budget = new SuggestionBudget(this.settings.maxQueriesPerSecond, this.settings.burst);
    this.kept = new LRUCache({ max: this.settings.maxEntries, ttl: this.settings.ttlMs });
  }

  onModuleInit(): void {
    // Any change may hide a key that a kept answer suggests: all are dropped, at once for the
    // module's own writes, and when another writer's notification arrives.
    const clear = () => {
      this.epoch++;
      this.kept.clear();
    };
    this.stops.push(this.changes.subscribe(clear), this.notifications.onChange(clear));
  }

  onModuleDestroy(): void {
    for (const stop of this.stops) stop();
  }

  /** Whether a route's `suggest` setting wants suggestions for this request. */
  wanted(suggest: 'html' | 'always', request: TombstoneRequest): boolean {
    if (suggest === 'always') return true;
    const accept = request.headers.accept;
    if (accept === undefined || accept === '*/*' || accept === 'application/json') return false;
    return new Negotiator(request as never).mediaType(['application/json', 'text/html']) === 'text/html';
  }

  /**
   * Up to 3 keys like `key`, most alike first: a value when memory answers (kept, or none because
   * the budget is spent: a flood's misses wait for nothing), a promise when a query runs. Never
   * rejects: none when they cannot be known.
   */
  keys(type: string, key: string, scope: string): readonly string[] | Promise<readonly string[]> {
    const id = `${scope}\u0000${type}\u0000${key}`;
    // Kept answers hold only while every change is heard.
    const listening = this.notifications.listening;
    const kept = listening ? this.kept.get(id) : undefined;
    if (kept !== undefined) return kept;
    const epoch = this.epoch;
    const pending = this.inflight.get(id);
    if (pending !== undefined && pending.epoch === epoch) return pending.answer;
    // One query at a time, within the budget; the others get none, at once.
    if (!this.budget.take(!this.busy)) return NONE;
    this.busy = true;
    const query = this.query(type, key, scope).finally(() => (this.busy = false));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.settings.timeoutMs);
      timer.unref?.();
    });
    const answer = Promise.race([query, timeout]).then(
      (found) => {
        if (found === 'timeout') {
          this.logFailure(new Error(`no answer within ${this.settings.timeoutMs} ms`), type, key, scope);
          return NONE;
        }
        // A change heard while the query ran may have hidden one of them: not kept.
        if (listening && this.notifications.listening && this.epoch === epoch) this.kept.set(id, found);
        return found;
      },
      (error: unknown) => {
        this.logFailure(error, type, key, scope);
        return NONE;
      },
    );
    const landed = () => {
      clearTimeout(timer);
      if (this.inflight.get(id)?.answer === answer) this.inflight.delete(id);
    };
    this.inflight.set(id, { epoch, answer });
    void answer.then(landed, landed);
    return answer;
  }

  /**
   * Up to 3 keys like `key`, for an operator choosing a redirect's target (the admin page's
   * misses screen): the same sources and ranking as `keys()`, read now, outside the misses'
   * budget (the admin endpoints are guarded, and asked one at a time), and never kept. Never
   * rejects: none when they cannot be known within `timeoutMs` (logged at a bounded rate).
   */
  async forOperator(type: string, key: string, scope: string): Promise<readonly string[]> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.settings.timeoutMs);
      timer.unref?.();
    });
    try {
      const found = await Promise.race([this.query(type, key, scope), timeout]);
      if (found !== 'timeout') return found;
      this.logFailure(new Error(`no answer within ${this.settings.timeoutMs} ms`), type, key, scope);
    } catch (error) {
      this.logFailure(error, type, key, scope);
    } finally {
      clearTimeout(timer);
    }
    return NONE;
  }

  private async query(type: string, key: string, scope: string): Promise<readonly string[]> {
    const source = this.sourceOf(type);
    const rows = source !== null && (source.scope !== null || scope === '') ? source : null;
    const dataSource = this.table.dataSource;
    if (await this.hasTrigram()) {
      const found = (await dataSource.query(trigramSql(rows), [key, scope, type])) as { key: string; score: number }[];
      return found.map((row) => row.key);
    }
    const found = (await dataSource.query(neighboursSql(rows), [key, scope, type])) as { key: string }[];
    return rankBySimilarity(
      key,
      found.map((row) => row.key),
    );
  }

  /** Whether pg_trgm is there (and wanted): asked once, again after a failure to ask. */
  private hasTrigram(): Promise<boolean> {
    if (!this.settings.trigram) return Promise.resolve(false);
    this.trigram ??= this.table.dataSource
      .query(`SELECT to_regprocedure('similarity(text,text)') IS NOT NULL AS trgm`)
      .then((rows: { trgm: boolean }[]) => rows[0]?.trgm === true)
      .catch((error: unknown) => {
        this.trigram = undefined;
        throw error;
      });
    return this.trigram;
  }

  /** The tracked table of a type, once: a string key column, or none (keys that are numbers or uuids are not suggested). */
  private sourceOf(type: string): RowSource | null {
    if (this.sources.has(type)) return this.sources.get(type)!;
    let source: RowSource | null = null;
    const dataSource = this.table.dataSource;
    for (const metadata of dataSource.entityMetadatas) {
      const entity = metadata.target;
      if (typeof entity !== 'function') continue;
      const declaration = trackedDeclarations(entity).find((d) => d.type === type);
      if (declaration === undefined) continue;
      const spec = tombstoneCaptureSpec(dataSource, entity as EntityClass);
      const key = spec.keys.find((k) => k.type === type)!;
      const column = metadata.findColumnWithPropertyName(declaration.key);
      if (!column || !isTextType(column.type)) break;
      source = { relation: relationOf(spec), column: ident(key.column), scope: key.scope === null ? null : ident(key.scope), soft: spec.soft === null ? null : ident(spec.soft) };
      break;
    }
    this.sources.set(type, source);
    return source;
  }

  private logFailure(error: unknown, type: string, key: string, scope: string): void {
    const unlogged = this.logBudget.take();
    if (unlogged === undefined) return;
    const more = unlogged > 0 ? ` (and ${unlogged} more not logged since the last one)` : '';
    this.logger.error(
      `Tombstone suggestions failed, answering the 404 without them: ${(error as Error)?.message ?? String(error)} ` +
        `(type=${type} key="${preview(key)}" scope="${preview(scope)}")${more}`,
      (error as Error)?.stack,
    );
  }
}

const NONE: readonly string[] = Object.freeze([]);

function isTextType(type: unknown): boolean {
  if (type === String) return true;
  return typeof type === 'string' && ['text', 'varchar', 'character varying', 'citext', 'string'].includes(type.toLowerCase());
}

function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
