import { AsyncLocalStorage } from 'node:async_hooks';
import type { CallHandler, ExecutionContext, NestInterceptor } from '@nestjs/common';
import type { Observable } from 'rxjs';
import type { AfterQueryEvent, BeforeQueryEvent, EntitySubscriberInterface, QueryRunner } from 'typeorm';
import { LIMITS } from './tombstone.constants.js';
import type { ResolvedTombstoneOptions } from './tombstone.options.js';
import { assertText } from './tombstone.validation.js';
import { type TombstoneRequest } from './tombstone.types.js';

/** Who did a change and why; recorded on the tombstones it leaves. */
export interface TombstoneContextValues {
  actor?: string | null;
  reason?: string | null;
}

interface Frame {
  actor?: string | null;
  reason?: string | null;
  request?: TombstoneRequest;
  actorOf?: (request: TombstoneRequest) => string | null | undefined;
}

const storage = new AsyncLocalStorage<Frame>();

/**
 * The actor and reason that tombstones written in the current async context carry: captured
 * ones (by the triggers) and recorded ones (by `TombstoneService`, unless a call names its own).
 *
 * With the module's `actor` option, every request runs in a context whose actor is read from
 * the request when a tombstone is written (so after your guards have authenticated it).
 *
 * @example
 * await TombstoneContext.run({ actor: 'cron:cleanup', reason: 'Expired promotion' }, () =>
 *   promotions.delete({ endsAt: LessThan(new Date()) }),
 * );
 */
export const TombstoneContext = {
  /** Runs `fn` with these values; values not given are inherited from the enclosing context. */
  run<T>(values: TombstoneContextValues, fn: () => T): T {
    const frame: Frame = { ...storage.getStore() };
    if (values.actor !== undefined) frame.actor = assertText(values.actor, 'actor', LIMITS.actorLength);
    if (values.reason !== undefined) frame.reason = assertText(values.reason, 'reason', LIMITS.reasonLength);
    return storage.run(frame, fn);
  },

  /** The values in force here (`null` where none). */
  current(): { actor: string | null; reason: string | null } {
    const frame = storage.getStore();
    if (!frame) return NONE;
    let actor = frame.actor;
    if (actor === undefined && frame.actorOf && frame.request) {
      try {
        actor = actorText(frame.actorOf(frame.request));
      } catch {
        actor = null;
      }
    }
    return { actor: actor ?? null, reason: frame.reason ?? null };
  },
};

const NONE = Object.freeze({ actor: null, reason: null });

/**
 * What the `actor` option answered, as an actor: ids may be numbers; anything that cannot be
 * stored (empty, too long, NUL characters, lone surrogates, objects) is no actor rather than a
 * failed write.
 */
export function actorText(value: unknown): string | null {
  const text = typeof value === 'number' || typeof value === 'bigint' ? String(value) : value;
  if (typeof text !== 'string' || text === '') return null;
  try {
    return assertText(text, 'actor', LIMITS.actorLength);
  } catch {
    return null;
  }
}

/**
 * Runs each request's handler in a context whose actor comes from the module's `actor` option,
 * applied to the request your guards authenticated (the Express or the Fastify request).
 * Registered as a global interceptor only when that option is set.
 */
export class TombstoneContextInterceptor implements NestInterceptor {
  constructor(private readonly options: Pick<ResolvedTombstoneOptions, 'actor'>) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const actorOf = this.options.actor;
    if (!actorOf || context.getType() !== 'http') return next.handle();
    const request = context.switchToHttp().getRequest<TombstoneRequest>();
    // Nest binds the handler to the async context in which handle() is called.
    return storage.run({ ...storage.getStore(), request, actorOf }, () => next.handle());
  }
}

// Statements that cannot write a captured row; everything else gets the context first. (Not
// EXPLAIN: EXPLAIN ANALYZE runs its statement.)
const READ_ONLY = /^\s*(?:SELECT|SHOW|START|BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|SET|RESET)\b/i;
const APPLY_LOCAL = `SELECT set_config('tombstones.actor', $1, true), set_config('tombstones.reason', $2, true)`;
const APPLY_SESSION = `SELECT set_config('tombstones.actor', $1, false), set_config('tombstones.reason', $2, false)`;
const UNKNOWN = '\u0001unknown';
const CLEAR_SESSION = `SELECT set_config('tombstones.actor', '', false), set_config('tombstones.reason', '', false)`;

/**
 * Hands the context to the capture triggers: before a statement that may write, it sets the
 * settings `tombstones.actor` / `tombstones.reason` on that connection. Inside a transaction they
 * are transaction-local and set once (again only if the context changes); for a statement
 * outside one they are set for that statement and cleared right after. Without a context,
 * nothing runs.
 */
export class TombstoneContextSubscriber implements EntitySubscriberInterface {
  private readonly applied = new WeakMap<QueryRunner, string>();
  private readonly toClear = new WeakSet<QueryRunner>();
  // Writes that share a QueryRunner (Promise.all in one transaction) take turns from the moment
  // their settings are chosen until their statement is done, so each runs with its own.
  private readonly turn = new WeakMap<QueryRunner, Promise<void>>();
  private readonly holder = new WeakMap<QueryRunner, { query: string; parameters: unknown; release: () => void }>();

  async beforeQuery(event: BeforeQueryEvent): Promise<void> {
    const runner = event.queryRunner;
    // The common case, a query with no context on a connection that was never given one, costs
    // one lookup: checked before anything else.
    if (!runner || (storage.getStore() === undefined && !this.applied.has(runner)) || READ_ONLY.test(event.query)) return;
    const previous = this.turn.get(runner);
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    this.turn.set(runner, mine);
    if (previous) await previous;
    this.holder.set(runner, { query: event.query, parameters: event.parameters, release });
    try {
      await this.apply(runner);
    } catch (error) {
      this.release(runner);
      throw error;
    }
  }

  async afterQuery(event: AfterQueryEvent): Promise<void> {
    const runner = event.queryRunner;
    const held = runner && this.holder.get(runner);
    if (!runner || !held || held.query !== event.query || held.parameters !== event.parameters) return;
    try {
      if (this.toClear.has(runner)) {
        this.toClear.delete(runner);
        await runner.query(CLEAR_SESSION);
      }
    } finally {
      this.release(runner);
    }
  }

  private async apply(runner: QueryRunner): Promise<void> {
    const { actor, reason } = TombstoneContext.current();
    if (actor === null && reason === null && !this.applied.has(runner)) return;
    const wanted = `${actor ?? ''}\u0000${reason ?? ''}`;
    if (runner.isTransactionActive) {
      if (this.applied.get(runner) === wanted) return;
      await runner.query(APPLY_LOCAL, [actor ?? '', reason ?? '']);
      this.applied.set(runner, wanted);
    } else if (actor !== null || reason !== null) {
      await runner.query(APPLY_SESSION, [actor ?? '', reason ?? '']);
      this.toClear.add(runner);
    }
  }

  private release(runner: QueryRunner): void {
    const held = this.holder.get(runner);
    this.holder.delete(runner);
    held?.release();
  }

  // Transaction-local settings end with their transaction. A released savepoint keeps what was
  // set inside it; one rolled back restores what was set before it, which is not known here, so
  // the next statement that may write sets the settings again, context or not.
  // A transaction's end also ends any turn a failed statement left taken (one whose
  // afterQuery never came because another subscriber's beforeQuery threw).
  afterTransactionCommit(event: { queryRunner: QueryRunner }): void {
    if (event.queryRunner.isTransactionActive) return;
    this.applied.delete(event.queryRunner);
    this.release(event.queryRunner);
  }

  afterTransactionRollback(event: { queryRunner: QueryRunner }): void {
    if (event.queryRunner.isTransactionActive) {
      this.applied.set(event.queryRunner, UNKNOWN);
      return;
    }
    this.applied.delete(event.queryRunner);
    this.release(event.queryRunner);
  }
}
