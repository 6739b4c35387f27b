import { actorText } from '../tombstone.context.js';
import type { ResolvedTombstoneAdminOptions } from './admin.options.js';
import { type TombstoneRequest } from '../tombstone.types.js';

/**
 * Who acts in an admin request: the module's `actor` option (a header, or a function of the
 * request), else the user your guard authenticated (`req.user.id`, `.sub`, `.username` or
 * `.email`). `null` when none is set, or when it could not be stored (over 256 characters, NUL).
 */
export function actorOf(options: Pick<ResolvedTombstoneAdminOptions, 'actor'>, request: TombstoneRequest): string | null {
  const option = options.actor;
  let value: unknown;
  if (typeof option === 'function') value = option(request);
  else if (option) value = request.headers[option.header.toLowerCase()];
  else {
    const user = request.user as Record<string, unknown> | undefined;
    value = user?.id ?? user?.sub ?? user?.username ?? user?.email;
  }
  return actorText(Array.isArray(value) ? value[0] : value);
}
