import type { ModuleRef } from '@nestjs/core';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';

/** A provider of TombstoneModule, which the admin module needs; a clear error when it is missing. */
export function coreProvider<T>(moduleRef: ModuleRef, token: new (...args: never[]) => T): T {
  try {
    return moduleRef.get(token, { strict: false });
  } catch {
    throw new TombstoneConfigurationError('TombstoneAdminModule needs TombstoneModule.', [
      'Import TombstoneModule.forRoot() in your application module.',
    ]);
  }
}
