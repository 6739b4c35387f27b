import { rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startEmbeddedPostgres } from '#dev/embedded-postgres';

/** Attempts at starting the embedded server: its free port is picked before the server binds it. */
const ATTEMPTS = 3;

/**
 * One PostgreSQL server for the whole run: `DATABASE_URL` when set, otherwise an embedded one
 * in a throw-away folder. Each suite then creates a database of its own on it.
 */
export default async function globalSetup(): Promise<void> {
  if (process.env.DATABASE_URL) {
    process.env.TOMBSTONES_TEST_SERVER_URL = process.env.DATABASE_URL;
    return;
  }
  let failure: unknown;
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const dataDir = path.join(os.tmpdir(), `nestjs-tombstones-test-${process.pid}-${Date.now()}-${attempt}`);
    try {
      // Another process (a second test run, anything) may take the free port the server was
      // given before the server binds it: the server then exits, and a new port is tried.
      const server = await startEmbeddedPostgres({ dataDir, ephemeral: true });
      process.env.TOMBSTONES_TEST_SERVER_URL = server.url;
      (globalThis as Record<string, unknown>).__TOMBSTONES_PG__ = { server, dataDir };
      return;
    } catch (error) {
      failure = error;
      await rm(dataDir, { recursive: true, force: true });
    }
  }
  throw new Error(
    `Could not start the embedded PostgreSQL for the tests (${ATTEMPTS} attempts): ${(failure as Error | undefined)?.message ?? 'the server exited while starting'}\n` +
      'Set DATABASE_URL to a PostgreSQL server instead (e.g. postgres://postgres@127.0.0.1:5432/test).',
    { cause: failure },
  );
}
