import { rm } from 'node:fs/promises';
import type { EmbeddedPostgresHandle } from '#dev/embedded-postgres';

export default async function globalTeardown(): Promise<void> {
  const state = (globalThis as Record<string, unknown>).__TOMBSTONES_PG__ as
    | { server: EmbeddedPostgresHandle; dataDir: string }
    | undefined;
  if (!state) return;
  try {
    await state.server.stop();
  } finally {
    await rm(state.dataDir, { recursive: true, force: true });
  }
}
