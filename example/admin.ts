import { timingSafeEqual } from 'node:crypto';
import { type CanActivate, type ExecutionContext, Injectable, UnauthorizedException } from '@nestjs/common';

/**
 * The demo's access control for the tombstone admin endpoints: a bearer token, compared in
 * constant time. A real app would use its own authentication (sessions, JWT, mTLS).
 */
@Injectable()
export class AdminTokenGuard implements CanActivate {
  constructor(private readonly token: string) {}

  canActivate(context: ExecutionContext): boolean {
    const request = context.switchToHttp().getRequest<{ headers: Record<string, string | undefined>; user?: unknown }>();
    // `<scheme> <credentials>`: the scheme is case-insensitive (RFC 9110, section 11.1).
    const [, scheme = '', credentials = ''] = /^(\S+) +(\S+)$/.exec(request.headers.authorization ?? '') ?? [];
    const given = Buffer.from(credentials);
    const expected = Buffer.from(this.token);
    if (scheme.toLowerCase() !== 'bearer' || given.length !== expected.length || !timingSafeEqual(given, expected)) {
      // A 401 names the scheme it wants (RFC 9110, section 15.5.2). Express and Fastify both have header().
      context.switchToHttp().getResponse<{ header(name: string, value: string): unknown }>().header('WWW-Authenticate', 'Bearer realm="tombstones-admin"');
      throw new UnauthorizedException('Send Authorization: Bearer <the admin token the demo printed at start-up>.');
    }
    request.user = { id: 'demo-admin' };
    return true;
  }
}
