import { type ExecutionContext, Controller, Get, Inject, Injectable, NotFoundException, Param, Req, Res, UseGuards } from '@nestjs/common';
import { HttpAdapterHost, ModuleRef } from '@nestjs/core';
import { ApiExcludeController } from '@nestjs/swagger';
import { TombstoneAdminAccessGuard } from '../admin.guard.js';
import { TOMBSTONE_ADMIN_OPTIONS } from '../admin.module-definition.js';
import type { ResolvedTombstoneAdminOptions } from '../admin.options.js';
import { UI_ASSETS } from './ui.assets.js';
import { adminPage } from './ui.shell.js';

/**
 * Nothing but the page's own files: scripts and styles from this origin, fetches to it, no frames
 * around it, no inline code, no plugins, no base rewriting.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self'",
  "form-action 'self'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join('; ');

const HEADERS: Record<string, string> = {
  'Content-Security-Policy': CONTENT_SECURITY_POLICY,
  'X-Content-Type-Options': 'nosniff',
  // The page is small and the files change with the package: never stored, never stale.
  'Cache-Control': 'no-store',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

/**
 * In front of the page's files: a 404 while `ui` is off (as if the route did not exist); the
 * application's guard too with `ui: { guardPage: true }`.
 */
@Injectable()
export class TombstoneAdminPageGuard extends TombstoneAdminAccessGuard {
  constructor(@Inject(TOMBSTONE_ADMIN_OPTIONS) private readonly resolved: ResolvedTombstoneAdminOptions, moduleRef: ModuleRef, adapterHost: HttpAdapterHost) {
    super(resolved, moduleRef, adapterHost);
  }

  override async onModuleInit(): Promise<void> {
    // The access guard of the endpoints already warns about a missing guard.
    if (this.resolved.ui && this.resolved.ui.guardPage && this.resolved.guard !== undefined) await super.onModuleInit();
  }

  override async canActivate(context: ExecutionContext): Promise<boolean> {
    const { ui } = this.resolved;
    if (!ui) throw new NotFoundException();
    return ui.guardPage ? super.canActivate(context) : true;
  }
}

interface PageRequest {
  originalUrl?: string;
  url: string;
}

/**
 * The admin web page, at `<mount>/ui/` (with `ui` on): a shell with no data and its scripts and
 * styles, every datum fetched from the guarded endpoints.
 */
@ApiExcludeController()
@Controller('ui')
@UseGuards(TombstoneAdminPageGuard)
export class TombstoneAdminUiController {
  constructor(private readonly adapterHost: HttpAdapterHost) {}

  @Get()
  page(@Req() request: PageRequest, @Res({ passthrough: true }) response: unknown): string {
    this.send(response, 'text/html; charset=utf-8');
    // The files are under the page's own path, wherever the app mounted the module (a trailing
    // slash and repeated slashes dropped: `//host` would name another origin).
    const path = (request.originalUrl ?? request.url).split(/[?#]/, 1)[0].replace(/\/{2,}/g, '/').replace(/\/+$/, '');
    return adminPage(path);
  }

  @Get(':asset')
  asset(@Param('asset') name: string, @Res({ passthrough: true }) response: unknown): string {
    const asset = UI_ASSETS.get(name);
    if (!asset) throw new NotFoundException();
    this.send(response, asset.type);
    return asset.body;
  }

  private send(response: unknown, type: string): void {
    const { httpAdapter } = this.adapterHost;
    httpAdapter.setHeader(response, 'Content-Type', type);
    for (const [name, value] of Object.entries(HEADERS)) httpAdapter.setHeader(response, name, value);
  }
}
