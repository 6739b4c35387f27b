import { type ChildProcess, spawn } from 'node:child_process';
import { chown, copyFile, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { findFreePort, startEmbeddedPostgres } from '#dev/embedded-postgres';
import { eventually } from './eventually.js';

/**
 * A primary and a streaming hot standby of it, both private to one suite, started from the
 * embedded PostgreSQL binaries (which have no `pg_basebackup`): the standby is a base backup made
 * with the low-level API (`pg_backup_start()`, a copy of the data folder, `pg_backup_stop()`),
 * started with `standby.signal` and `primary_conninfo`. Whatever `DATABASE_URL` says: a standby
 * needs a primary whose data folder this process can read.
 */
export interface ReplicatedPair {
  /** The `postgres` database of each server. */
  readonly primaryUrl: string;
  readonly standbyUrl: string;
  /** The same database on each server: created on the primary, replayed on the standby. */
  createDatabase(): Promise<{ primary: string; standby: string; drop(): Promise<void> }>;
  /** Stops replaying (lag), and resolves once the standby says it has stopped. */
  pauseReplay(): Promise<void>;
  resumeReplay(): Promise<void>;
  /** Resolves once the standby has replayed everything the primary had written at the call. */
  caughtUp(): Promise<void>;
  stopStandby(): Promise<void>;
  startStandby(): Promise<void>;
  stop(): Promise<void>;
}

const SLOT = 'tombstones_test_standby';

/**
 * What a base backup leaves out (PostgreSQL docs, "Making a Base Backup Using the Low Level
 * API"): the folders' contents are recreated or streamed, the files belong to the running server.
 */
const EMPTIED = new Set(['pg_wal', 'pg_replslot', 'pg_dynshmem', 'pg_notify', 'pg_serial', 'pg_snapshots', 'pg_stat_tmp', 'pg_subtrans']);
const SKIPPED = new Set(['postmaster.pid', 'postmaster.opts', 'backup_label', 'tablespace_map', 'standby.signal', 'recovery.signal']);

/** Attempts: the free ports are picked before the servers bind them, and may be taken meanwhile. */
const ATTEMPTS = 3;

/** Starts private servers with `start`, again (up to ATTEMPTS times) when a port it picked was taken meanwhile. */
export async function onFreePorts<T>(start: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (error) {
      if (attempt === ATTEMPTS) throw error;
    }
  }
}

export async function startReplicatedPair(): Promise<ReplicatedPair> {
  return onFreePorts(startPair);
}

async function startPair(): Promise<ReplicatedPair> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'nestjs-tombstones-replicas-'));
  const primaryDir = path.join(root, 'primary');
  const standbyDir = path.join(root, 'standby');
  const lines: string[] = [];
  const log = (line: string) => {
    lines.push(line);
    if (lines.length > 40) lines.shift();
  };
  const primary = await startEmbeddedPostgres({ dataDir: primaryDir, ephemeral: true, onLog: log }).catch(async (error: unknown) => {
    await rm(root, { recursive: true, force: true });
    throw error;
  });
  let standby: ChildProcess | undefined;
  let standbyPort = 0;
  const credentials = new URL(primary.url);
  const standbyUrlOf = (database: string) => {
    const url = new URL(primary.url);
    url.port = String(standbyPort);
    url.pathname = `/${database}`;
    return url.toString();
  };

  // PostgreSQL refuses to run as root: as root, embedded-postgres runs it as a `postgres` user
  // that owns the primary's folder; the standby's folder and process belong to the same user.
  const owner = await stat(primaryDir);
  const asOwner = process.getuid?.() === 0 ? { uid: owner.uid, gid: owner.gid } : {};
  const { postgres } = (await import(`@embedded-postgres/${os.platform()}-${os.arch()}`)) as { postgres: string };

  const query = async <T>(url: string, sql: string, values: unknown[] = []): Promise<T[]> => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      return (await client.query(sql, values)).rows as T[];
    } finally {
      await client.end();
    }
  };

  const startStandby = async () => {
    standbyPort ||= await findFreePort();
    const child = spawn(
      postgres,
      [
        '-D', standbyDir,
        '-p', String(standbyPort),
        '-c', 'listen_addresses=127.0.0.1',
        '-c', 'unix_socket_directories=',
        '-c', 'max_connections=200',
        '-c', 'fsync=off',
        '-c', `primary_conninfo=host=127.0.0.1 port=${primary.port} user=${decodeURIComponent(credentials.username)} password=${decodeURIComponent(credentials.password)} application_name=tombstones_standby`,
        '-c', `primary_slot_name=${SLOT}`,
      ],
      { ...asOwner, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    standby = child;
    child.stderr?.on('data', (chunk: Buffer) => log(`[standby] ${chunk.toString('utf8').trimEnd()}`));
    let exited = false;
    child.once('exit', () => (exited = true));
    await eventually(async () => {
      if (exited) throw new Error(`the standby exited while starting:\n  ${lines.join('\n  ')}`);
      const [{ recovering }] = await query<{ recovering: boolean }>(standbyUrlOf('postgres'), 'SELECT pg_is_in_recovery() AS recovering');
      if (!recovering) throw new Error('the standby is not in recovery');
    }).catch((error: unknown) => {
      child.kill('SIGKILL');
      throw error;
    });
  };

  const stopStandby = async () => {
    const child = standby;
    standby = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGINT'); // fast shutdown
    });
  };

  try {
    // A slot keeps the WAL the standby needs from the backup on, however long the copy takes.
    await query(primary.url, `SELECT pg_create_physical_replication_slot($1, true)`, [SLOT]);
    const backup = new pg.Client({ connectionString: primary.url });
    await backup.connect();
    try {
      // Non-exclusive: the session that starts the backup must stay open and stop it.
      await backup.query(`SELECT pg_backup_start('nestjs-tombstones standby', true)`);
      await copyCluster(primaryDir, standbyDir, asOwner);
      const { rows } = await backup.query<{ labelfile: string; spcmapfile: string | null }>(`SELECT labelfile, spcmapfile FROM pg_backup_stop(false)`);
      await writeOwned(path.join(standbyDir, 'backup_label'), rows[0].labelfile, asOwner);
      if (rows[0].spcmapfile) await writeOwned(path.join(standbyDir, 'tablespace_map'), rows[0].spcmapfile, asOwner);
    } finally {
      await backup.end();
    }
    await writeOwned(path.join(standbyDir, 'standby.signal'), '', asOwner);
    await startStandby();
  } catch (error) {
    await stopStandby();
    await primary.stop();
    await rm(root, { recursive: true, force: true });
    throw error;
  }
  // The standby would outlive a test process that dies without its afterAll.
  const kill = () => standby?.kill('SIGKILL');
  process.once('exit', kill);

  const caughtUp = async () => {
    const [{ lsn }] = await query<{ lsn: string }>(primary.url, 'SELECT pg_current_wal_insert_lsn()::text AS lsn');
    await eventually(async () => {
      const [{ behind }] = await query<{ behind: boolean }>(standbyUrlOf('postgres'), `SELECT coalesce(pg_last_wal_replay_lsn() < $1::pg_lsn, true) AS behind`, [lsn]);
      if (behind) throw new Error(`the standby has not replayed up to ${lsn}`);
    });
  };

  return {
    primaryUrl: primary.url,
    get standbyUrl() {
      return standbyUrlOf('postgres');
    },
    async createDatabase() {
      const name = `tombstones_replica_${Math.random().toString(16).slice(2, 10)}`;
      await query(primary.url, `CREATE DATABASE "${name}"`);
      const primaryUrl = new URL(primary.url);
      primaryUrl.pathname = `/${name}`;
      await caughtUp();
      return {
        primary: primaryUrl.toString(),
        standby: standbyUrlOf(name),
        drop: () => query(primary.url, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`).then(() => undefined),
      };
    },
    async pauseReplay() {
      await query(standbyUrlOf('postgres'), 'SELECT pg_wal_replay_pause()');
      await eventually(async () => {
        const [{ state }] = await query<{ state: string }>(standbyUrlOf('postgres'), 'SELECT pg_get_wal_replay_pause_state() AS state');
        if (state !== 'paused') throw new Error(`replay is ${state}, not paused`);
      });
    },
    async resumeReplay() {
      await query(standbyUrlOf('postgres'), 'SELECT pg_wal_replay_resume()');
    },
    caughtUp,
    stopStandby,
    startStandby,
    async stop() {
      process.off('exit', kill);
      try {
        await stopStandby();
        await primary.stop();
      } finally {
        await rm(root, { recursive: true, force: true });
      }
    },
  };
}

/** Copies a data folder as a base backup does, owned by `owner` when given. */
async function copyCluster(from: string, to: string, owner: { uid?: number; gid?: number }, top = true): Promise<void> {
  await mkdirOwned(to, owner);
  for (const entry of await readdir(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    if ((top && SKIPPED.has(entry.name)) || entry.name === 'pg_internal.init' || entry.name.startsWith('pgsql_tmp')) continue;
    if (entry.isDirectory()) {
      if (top && EMPTIED.has(entry.name)) {
        await mkdirOwned(target, owner);
        if (entry.name === 'pg_wal') await mkdirOwned(path.join(target, 'archive_status'), owner);
      } else {
        await copyCluster(source, target, owner, false);
      }
    } else if (entry.isFile()) {
      try {
        await copyFile(source, target);
      } catch (error) {
        // A file the server removed during the copy (a temporary one): the WAL replays it away.
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw error;
      }
      if (owner.uid !== undefined) await chown(target, owner.uid, owner.gid as number);
    }
  }
}

async function mkdirOwned(dir: string, owner: { uid?: number; gid?: number }): Promise<void> {
  await mkdir(dir, { mode: 0o700 });
  if (owner.uid !== undefined) await chown(dir, owner.uid, owner.gid as number);
}

async function writeOwned(file: string, text: string, owner: { uid?: number; gid?: number }): Promise<void> {
  await writeFile(file, text, { mode: 0o600 });
  if (owner.uid !== undefined) await chown(file, owner.uid, owner.gid as number);
}
