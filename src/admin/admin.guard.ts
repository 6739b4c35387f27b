import { type CanActivate, type ExecutionContext, Inject, Injectable, Logger, type OnModuleInit, type Type } from '@nestjs/common';
import { HttpAdapterHost, ModuleRef } from '@nestjs/core';
import { type Observable, lastValueFrom, isObservable } from 'rxjs';
import { TOMBSTONE_ADMIN_OPTIONS } from './admin.module-definition.js';
import type { ResolvedTombstoneAdminOptions } from './admin.options.js';

/**
 * Puts the application's guard in front of every admin endpoint. Without one (the explicit
 * development opt-out), it lets everyone through and says so at every start. Every answer it
 * guards, a refusal included, is `Cache-Control: no-store`: admin data never sits in a browser's
 * or a proxy's cache (a cookie-authenticated answer is cacheable unless it says otherwise).
 */
@Injectable()
export class TombstoneAdminAccessGuard implements CanActivate, OnModuleInit {
  private readonly logger = new Logger('TombstoneAdminModule');
  private delegate?: CanActivate;

  constructor(
    @Inject(TOMBSTONE_ADMIN_OPTIONS) private readonly options: ResolvedTombstoneAdminOptions,
    private readonly moduleRef: ModuleRef,
    private readonly adapterHost: HttpAdapterHost,
  ) {}

  async onModuleInit(): Promise<void> {
    const { guard } = this.options;
    if (guard === undefined) {
      this.logger.warn(
        'The tombstone admin endpoints are OPEN TO ANYONE (allowWithoutAccessControl: true). ' +
          'Use this for local development only; pass `guard` everywhere else.',
      );
      return;
    }
    this.delegate = typeof guard === 'function' ? await this.moduleRef.create(guard as Type<CanActivate>) : guard;
  }

  async canActivate(context: ExecutionContext): Promise<boolean> {
    this.adapterHost.httpAdapter.setHeader(context.switchToHttp().getResponse(), 'Cache-Control', 'no-store');
    if (this.options.guard === undefined) return true;
    const delegate = this.delegate as CanActivate;
    const verdict: boolean | Promise<boolean> | Observable<boolean> = delegate.canActivate(context);
    return isObservable(verdict) ? lastValueFrom(verdict) : verdict;
  }
}
