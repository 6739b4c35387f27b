import { Inject, Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import { ModuleRef, ModulesContainer } from '@nestjs/core';
import { isRequestId, requestIdOf } from './tombstone.answer.js';
import { TOMBSTONE_OPTIONS } from './tombstone.constants.js';
import { preview } from './tombstone.exceptions.js';
import { LogBudget } from './tombstone.log-budget.js';
import type { ResolvedTombstoneOptions } from './tombstone.options.js';
import type { TombstoneRequest } from './tombstone.types.js';

/** What the module uses of nestjs-cls's `ClsService`. */
interface ClsLike {
  isActive(): boolean;
  getId(): unknown;
}

/**
 * The request id of each answer, in its body and its `requestIdHeader` header: the app's own
 * when it has one (the `requestId` option, or else nestjs-cls's id when `ClsModule` is imported
 * and active for the request), so that the id a client quotes is the one in the app's logs;
 * otherwise the client's header when it is sane, or a new UUID.
 *
 * Where the id comes from is decided once, at start: without either, a miss costs what it always
 * did (a header read). The app's id is checked like the header's, and an id that cannot be used
 * (a throw, a value that is not a sane id) never breaks the answer: it falls back to the header
 * or a UUID, and is logged at a bounded rate.
 */
@Injectable()
export class TombstoneRequestIds implements OnModuleInit {
  private readonly logger = new Logger('TombstoneModule');
  private readonly logBudget = new LogBudget();

  /** The id of a request's answer. Never throws. */
  of: (request: TombstoneRequest) => string = (request) => this.fromHeader(request);

  constructor(
    @Inject(TOMBSTONE_OPTIONS) private readonly options: ResolvedTombstoneOptions,
    private readonly moduleRef: ModuleRef,
    private readonly modules: ModulesContainer,
  ) {}

  async onModuleInit(): Promise<void> {
    const app = this.options.requestId;
    if (app !== undefined) {
      this.of = (request) => this.fromFunction(app, request);
      return;
    }
    const cls = await clsServiceOf(this.modules, this.moduleRef);
    if (cls !== undefined) this.of = (request) => this.fromCls(cls, request);
  }

  private fromHeader(request: TombstoneRequest): string {
    return requestIdOf(request, this.options.requestIdHeader);
  }

  private fromFunction(app: (request: TombstoneRequest) => unknown, request: TombstoneRequest): string {
    let id: unknown;
    try {
      id = app(request);
    } catch (error) {
      this.unusable(`the requestId function threw (${preview(String((error as Error)?.message ?? error), 200)})`);
      return this.fromHeader(request);
    }
    if (isRequestId(id)) return id;
    if (id !== undefined) this.unusable(`the requestId function returned ${described(id)}`);
    return this.fromHeader(request);
  }

  private fromCls(cls: ClsLike, request: TombstoneRequest): string {
    let id: unknown;
    try {
      // Not active: a request that ClsModule does not wrap (a route it is not mounted on).
      if (!cls.isActive()) return this.fromHeader(request);
      id = cls.getId();
    } catch (error) {
      this.unusable(`nestjs-cls could not give its id (${preview(String((error as Error)?.message ?? error), 200)})`);
      return this.fromHeader(request);
    }
    if (isRequestId(id)) return id;
    // No id: ClsModule runs without `generateId`.
    if (id !== undefined) this.unusable(`nestjs-cls's request id is ${described(id)}`);
    return this.fromHeader(request);
  }

  private unusable(what: string): void {
    const unlogged = this.logBudget.take();
    if (unlogged === undefined) return;
    const more = unlogged > 0 ? ` (and ${unlogged} more unusable ids not logged since the last one)` : '';
    this.logger.warn(
      `Tombstone answer: ${what}; the answer's request id comes from the ${this.options.requestIdHeader} header, or is a new UUID. ` +
        `A request id is 1 to 128 letters, digits and ._:@+=/- (not starting with one of these).${more}`,
    );
  }
}

/** A value that is not a request id, for a log line: never the value itself when it is long. */
function described(value: unknown): string {
  if (typeof value === 'string') return `a string that is not a request id: "${preview(value, 60)}" (${value.length} characters)`;
  if (value !== null && typeof (value as PromiseLike<unknown>).then === 'function') return 'a promise (it must return the id itself)';
  return value === null ? 'null' : `a ${typeof value}`;
}

/**
 * nestjs-cls's `ClsService` when the app imports `ClsModule`; `undefined` otherwise. The package
 * is optional, and loaded only here, once, at start, and only when the app registers a
 * `ClsService` already: loading it starts an AsyncLocalStorage, which an app that has the package
 * installed but does not use it should not pay for.
 */
async function clsServiceOf(modules: ModulesContainer, moduleRef: ModuleRef): Promise<ClsLike | undefined> {
  const registered = [...modules.values()].some((module) => [...module.providers.keys()].some((token) => typeof token === 'function' && token.name === 'ClsService'));
  if (!registered) return undefined;
  try {
    const { ClsService } = (await import('nestjs-cls')) as { ClsService: new (...args: never[]) => ClsLike };
    return moduleRef.get(ClsService, { strict: false });
  } catch {
    return undefined;
  }
}
