import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { DataSource } from 'typeorm';
import { type EmbeddedPostgresHandle, startEmbeddedPostgres } from '#dev/embedded-postgres';
import { TOMBSTONE_ENTITIES, TOMBSTONE_MIGRATIONS } from '../../src/index.js';
import { eventually } from './eventually.js';
import { onFreePorts } from './standby.js';

/**
 * Two private PostgreSQL servers, started from the embedded binaries, with the module's
 * migrations run on a database of each and the tombstone table replicated from one to the other
 * by logical replication: the setup docs/operations.md ("Logical-replication subscribers")
 * describes, SQL for SQL. Whatever `DATABASE_URL` says: a publisher needs `wal_level = logical`,
 * which the suites' shared server does not have.
 */
export interface LogicalPair {
  /** The database on the publisher, where the tombstones are written. */
  readonly publisher: string;
  /** The same database on the subscriber, whose tombstone table the apply worker writes. */
  readonly subscriber: string;
  /** The subscription's name on the subscriber (`pg_stat_subscription.subname`). */
  readonly subscription: string;
  stop(): Promise<void>;
}

const DATABASE = 'tombstones_logical';
const PUBLICATION = 'nestjs_tombstones';
const SUBSCRIPTION = 'nestjs_tombstones';
export async function startLogicalPair(): Promise<LogicalPair> {
  return onFreePorts(startPair);
}

async function startPair(): Promise<LogicalPair> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'nestjs-tombstones-logical-'));
  const servers: EmbeddedPostgresHandle[] = [];
  const stop = async () => {
    // The subscriber first: its apply worker would otherwise retry the publisher that went away.
    for (const server of servers.reverse()) await server.stop().catch(() => undefined);
    await rm(root, { recursive: true, force: true });
  };
  try {
    const publisher = await startEmbeddedPostgres({ dataDir: path.join(root, 'publisher'), ephemeral: true, settings: { wal_level: 'logical' } });
    servers.push(publisher);
    const subscriber = await startEmbeddedPostgres({ dataDir: path.join(root, 'subscriber'), ephemeral: true });
    servers.push(subscriber);
    const publisherUrl = await createMigratedDatabase(publisher.url);
    const subscriberUrl = await createMigratedDatabase(subscriber.url);

    // On the publisher: the tombstone table, and nothing else of the module's (see the docs).
    await query(publisherUrl, `CREATE PUBLICATION ${PUBLICATION} FOR TABLE tombstones`);
    // On the subscriber: the connection string the apply worker uses to reach the publisher.
    const from = new URL(publisherUrl);
    const conninfo = `host=${from.hostname} port=${from.port} dbname=${DATABASE} user=${decodeURIComponent(from.username)} password=${decodeURIComponent(from.password)}`;
    await query(subscriberUrl, `CREATE SUBSCRIPTION ${SUBSCRIPTION} CONNECTION '${conninfo}' PUBLICATION ${PUBLICATION}`);
    // The initial copy done ('r': ready), every change after it streams.
    await eventually(async () => {
      const [{ waiting }] = await query<{ waiting: number }>(subscriberUrl, `SELECT count(*)::int AS waiting FROM pg_subscription_rel WHERE srsubstate <> 'r'`);
      if (waiting !== 0) throw new Error('the subscription has not finished its initial copy');
    });
    return { publisher: publisherUrl, subscriber: subscriberUrl, subscription: SUBSCRIPTION, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** A database on the server, with the shipped migrations run, as an app's DataSource would. */
async function createMigratedDatabase(serverUrl: string): Promise<string> {
  await query(serverUrl, `CREATE DATABASE ${DATABASE}`);
  const url = new URL(serverUrl);
  url.pathname = `/${DATABASE}`;
  const dataSource = new DataSource({ type: 'postgres', url: url.toString(), entities: [...TOMBSTONE_ENTITIES], migrations: [...TOMBSTONE_MIGRATIONS], logging: false });
  await dataSource.initialize();
  try {
    await dataSource.runMigrations();
  } finally {
    await dataSource.destroy();
  }
  return url.toString();
}

export async function query<T = Record<string, unknown>>(url: string, sql: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(sql, values)).rows as T[];
  } finally {
    await client.end();
  }
}
