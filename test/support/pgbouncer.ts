import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { findFreePort } from '#dev/embedded-postgres';
import { eventually } from './eventually.js';

/** A PgBouncer binary to run, or why there is none. */
export type PgbouncerBinary = { readonly path: string; readonly version: string } | { readonly reason: string };

const INSTALL_SCRIPT = fileURLToPath(new URL('../../scripts/install-pgbouncer.sh', import.meta.url));
const ATTEMPTS = 3;

/**
 * Finds PgBouncer: `PGBOUNCER` (a binary of your own, e.g. a newer version), or `pgbouncer` on the
 * PATH or in /usr/sbin (Debian's package). When it is missing, scripts/install-pgbouncer.sh
 * installs it (as root, with apt-get); when that cannot be done, the answer says why.
 */
export function findPgbouncer(): PgbouncerBinary {
  let binary = process.env.PGBOUNCER || locate();
  if (!binary) {
    const install = spawnSync('bash', [INSTALL_SCRIPT], { encoding: 'utf8', timeout: 600_000 });
    if (install.error) return { reason: `pgbouncer is not installed, and scripts/install-pgbouncer.sh could not run (${install.error.message})` };
    if (install.status !== 0) return { reason: install.stderr.trim() || `scripts/install-pgbouncer.sh exited with ${install.status}` };
    binary = locate();
    if (!binary) return { reason: 'scripts/install-pgbouncer.sh installed pgbouncer, but it is neither on the PATH nor in /usr/sbin' };
  }
  const version = spawnSync(binary, ['-V'], { encoding: 'utf8', timeout: 10_000 });
  const first = version.stdout?.split('\n')[0]?.trim();
  if (version.status !== 0 || !first) return { reason: `${binary} -V failed: ${version.error?.message ?? version.stderr}` };
  return { path: binary, version: first };
}

function locate(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), '/usr/sbin', '/usr/local/sbin'];
  return dirs.map((dir) => path.join(dir, 'pgbouncer')).find((file) => existsSync(file));
}

/** `[major, minor]` of a `PgBouncer 1.18.0` line. */
export function versionOf(binary: { version: string }): [number, number] {
  const match = /(\d+)\.(\d+)/.exec(binary.version);
  return match ? [Number(match[1]), Number(match[2])] : [0, 0];
}

export interface PgbouncerOptions {
  poolMode: 'session' | 'transaction' | 'statement';
  /** Server connections per database and user. Default: 20. */
  poolSize?: number;
  /** Other `[pgbouncer]` settings, e.g. `{ max_prepared_statements: 0 }` (PgBouncer 1.21+ only). */
  settings?: Record<string, string | number>;
}

export interface Pgbouncer {
  readonly port: number;
  /** `database` (a URL of the test server) with PgBouncer's host and port instead. */
  url(database: string): string;
  /** What PgBouncer logged (its stderr), for a failing test's message. */
  log(): string;
  stop(): Promise<void>;
}

/**
 * A PgBouncer process of its own in front of the test server: its ini and userlist files in a
 * temporary folder, on a free port of 127.0.0.1, no Unix socket. It trusts its clients (it is
 * reached from this machine only) and logs in to the server with the user and password of
 * `serverUrl`. As root it runs as `nobody`: PgBouncer refuses to run as root.
 */
export async function startPgbouncer(binary: { path: string }, serverUrl: string, options: PgbouncerOptions): Promise<Pgbouncer> {
  const server = new URL(serverUrl);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'nestjs-tombstones-pgbouncer-'));
  // Readable by the user it runs as; nothing secret: the test server's own password.
  await chmod(dir, 0o755);
  const userlist = path.join(dir, 'userlist.txt');
  const quote = (value: string) => `"${value.replace(/"/g, '""')}"`;
  await writeFile(userlist, `${quote(decodeURIComponent(server.username))} ${quote(decodeURIComponent(server.password))}\n`, { mode: 0o644 });
  let failure: Error | undefined;
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const port = await findFreePort();
    const settings: Record<string, string | number> = {
      listen_addr: '127.0.0.1',
      listen_port: port,
      unix_socket_dir: '',
      auth_type: 'trust',
      auth_file: userlist,
      pool_mode: options.poolMode,
      default_pool_size: options.poolSize ?? 20,
      max_client_conn: 500,
      // node-postgres sends none of these, but other clients of the tests might.
      ignore_startup_parameters: 'extra_float_digits',
      log_connections: 0,
      log_disconnections: 0,
      ...options.settings,
    };
    const ini = [
      '[databases]',
      `* = host=${server.hostname} port=${server.port || 5432}`,
      '[pgbouncer]',
      ...Object.entries(settings).map(([key, value]) => `${key} = ${value}`),
    ].join('\n');
    const file = path.join(dir, `pgbouncer-${attempt}.ini`);
    await writeFile(file, `${ini}\n`, { mode: 0o644 });
    const runsAsRoot = typeof process.getuid === 'function' && process.getuid() === 0;
    const child = spawn(binary.path, [...(runsAsRoot ? ['-u', 'nobody'] : []), file], { stdio: ['ignore', 'ignore', 'pipe'] });
    const lines: string[] = [];
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      lines.push(...chunk.split('\n').filter(Boolean));
      if (lines.length > 200) lines.splice(0, lines.length - 200);
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await ready(child, port, server, () => lines.join('\n'));
    } catch (error) {
      failure = error as Error;
      await stopChild(child, exited);
      continue;
    }
    return {
      port,
      url(database: string): string {
        const url = new URL(database);
        url.hostname = '127.0.0.1';
        url.port = String(port);
        return url.toString();
      },
      log: () => lines.join('\n'),
      async stop(): Promise<void> {
        await stopChild(child, exited);
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  await rm(dir, { recursive: true, force: true });
  throw new Error(`PgBouncer did not start (${ATTEMPTS} attempts): ${failure?.message}`, { cause: failure });
}

/** Resolves once PgBouncer listens on its port and a query goes through it; rejects with its log if it exits first (a port taken meanwhile). */
async function ready(child: ChildProcess, port: number, server: URL, log: () => string): Promise<void> {
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  await eventually(() => {
    if (!gone() && !log().includes(`listening on 127.0.0.1:${port}`)) throw new Error(`pgbouncer does not listen on ${port} yet: ${log()}`);
  }, 15_000);
  if (gone()) throw new Error(`pgbouncer exited: ${log()}`);
  const url = new URL(server.toString());
  url.hostname = '127.0.0.1';
  url.port = String(port);
  const client = new pg.Client({ connectionString: url.toString() });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** SIGTERM (PgBouncer's immediate shutdown), then SIGKILL if it has not exited within 5 s. */
async function stopChild(child: ChildProcess, exited: Promise<unknown>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), 5_000)));
  if ((await Promise.race([exited, late])) === 'late') {
    child.kill('SIGKILL');
    await exited;
  }
  clearTimeout(timer);
}
