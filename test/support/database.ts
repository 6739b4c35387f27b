import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { DataSource, type DataSourceOptions } from 'typeorm';
import { TOMBSTONE_ENTITIES, TOMBSTONE_MIGRATIONS } from '../../src/index.js';
import { eventually } from './eventually.js';

export interface TestDatabase {
  readonly url: string;
  /** DataSource options for this database, with the shipped migrations (never synchronize). */
  options(extra?: { entities?: DataSourceOptions['entities'] }): DataSourceOptions;
  /** A connection for assertions in SQL; the shipped migrations already ran. */
  readonly sql: DataSource;
  drop(): Promise<void>;
}

function serverUrl(): string {
  const url = process.env.TOMBSTONES_TEST_SERVER_URL ?? process.env.DATABASE_URL;
  if (!url) throw new Error('No test PostgreSQL: run the suites through `npm test` (its global setup starts one).');
  return url;
}

/** A fresh database per suite, so that suites running in parallel never see each other's rows. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `tombstones_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl() });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const url = new URL(serverUrl());
  url.pathname = `/${name}`;
  const options = (extra: { entities?: DataSourceOptions['entities'] } = {}): DataSourceOptions => ({
    type: 'postgres',
    url: url.toString(),
    entities: [...TOMBSTONE_ENTITIES, ...((extra.entities as []) ?? [])],
    migrations: [...TOMBSTONE_MIGRATIONS],
    synchronize: false,
    logging: false,
  });
  const sql = new DataSource(options());
  await sql.initialize();
  await sql.runMigrations();
  return {
    url: url.toString(),
    options,
    sql,
    async drop() {
      await sql.destroy();
      const client = new pg.Client({ connectionString: serverUrl() });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}

/** The server process id of a connection, for `waitingForLock()`. */
export async function backendPid(client: pg.Client): Promise<number> {
  return (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
}

/**
 * Resolves once the backend `pid` waits for a lock (pg_stat_activity), or once `unless` says the
 * statement it ran has already finished: what a test that needs a statement to be blocked waits
 * for, instead of sleeping.
 */
export async function waitingForLock(sql: DataSource, pid: number, unless: () => boolean = () => false): Promise<void> {
  await eventually(async () => {
    if (unless()) return;
    const [{ waiting }] = (await sql.query(`SELECT count(*)::int AS waiting FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'`, [
      pid,
    ])) as { waiting: number }[];
    if (waiting !== 1) throw new Error(`backend ${pid} is not waiting for a lock`);
  });
}
