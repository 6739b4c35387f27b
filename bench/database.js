// The benchmark scripts' PostgreSQL: the embedded one (never on 5432, loopback only) unless
// DATABASE_URL is given, and a fresh database on it either way, dropped by `drop()`.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { URL } from 'node:url';
import { startEmbeddedPostgres } from '#dev/embedded-postgres';

/**
 * Creates the database `<prefix>_<random>`; `url` is its connection URL. `drop()` drops it,
 * stops the embedded server and removes its folder; it is safe to call at any point, and twice.
 */
export async function createBenchDatabase(prefix, log) {
  let server;
  let dir;
  let serverUrl = process.env.DATABASE_URL;
  let created = false;
  const name = `${prefix}_${randomBytes(4).toString('hex')}`;
  const adminSql = async (sql) => {
    const client = new pg.Client({ connectionString: serverUrl });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  };
  const drop = async () => {
    if (created) await adminSql(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`).catch(() => undefined);
    created = false;
    await server?.stop().catch(() => undefined);
    server = undefined;
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  };
  try {
    if (!serverUrl) {
      dir = mkdtempSync(join(os.tmpdir(), `${prefix.replace(/_/g, '-')}-`));
      log(`starting the embedded PostgreSQL in ${dir}`);
      // Not ephemeral: fsync and synchronous commit stay on, as on a real server.
      server = await startEmbeddedPostgres({ dataDir: join(dir, 'pg') });
      serverUrl = server.url;
    }
    await adminSql(`CREATE DATABASE "${name}"`);
    created = true;
  } catch (error) {
    await drop();
    throw error;
  }
  return { url: Object.assign(new URL(serverUrl), { pathname: `/${name}` }).toString(), drop };
}
