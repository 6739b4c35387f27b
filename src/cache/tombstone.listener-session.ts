import type { Client, ClientConfig } from 'pg';
import { TOMBSTONE_CHANNEL } from '../tombstone.constants.js';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';

/** How long each step of the listening connection may take. */
export const STEP_TIMEOUT_MS = 5_000;
const CLOSE_TIMEOUT_MS = 1_000;
/** Rounds of the probe (see `assertSessionKept()`): two catch a pool that hands out its oldest idle connection too. */
const PROBE_ROUNDS = 2;
const SESSION_SQL = `SELECT pg_backend_pid() AS pid, $1 = ANY (ARRAY(SELECT pg_listening_channels())) AS listening`;

/** The server session a statement of the listening connection ran in. */
export interface ListenerSession {
  /** The PostgreSQL backend's process id. */
  pid: number;
  /** Whether that session listens on the module's channel. */
  listening: boolean;
}

/** Where the listening connection's statements ran: the session that keeps its `LISTEN` must be one and the same. */
export async function sessionOf(client: Client): Promise<ListenerSession> {
  const [row] = (await within(client.query(SESSION_SQL, [TOMBSTONE_CHANNEL]), 'the session check')).rows as ListenerSession[];
  return row;
}

/**
 * Refuses a listening connection whose session is not its own, which is what a pooler in
 * transaction or statement mode gives (PgBouncer's `pool_mode = transaction`): it accepts
 * `LISTEN`, then hands the server connection that ran it to other clients, and a notification
 * that reaches that server while no client is linked to it is dropped. The listener would hear
 * nothing and its cache would serve stale answers. A direct connection, or a pool in session
 * mode, keeps one backend for the whole connection.
 *
 * The proof is PostgreSQL's own: a second connection to the same place (`openProbe`) and the
 * listener take turns asking `pg_backend_pid()`. Where the session is kept, the probe always
 * gets another backend and the listener always the same one, listening. A transaction pool hands
 * its most recently released connection out first (PgBouncer's default), so the probe gets the
 * listener's backend at once; the listener's own statements land on whichever backend is free.
 * Either is proof, and nothing here depends on timing. A pool busy with other clients may show
 * neither, and a probe may get no backend at all (a full pool): the notification round trip
 * after this check (`TombstoneNotifications`) then fails, and the cache is not used.
 */
export async function assertSessionKept(listener: Client, first: ListenerSession, openProbe: () => Client, where: string): Promise<void> {
  if (!first.listening) {
    throw sessionNotKept(where, `its LISTEN was accepted, but its next statement ran in a PostgreSQL session (backend ${first.pid}) that does not listen`);
  }
  const probe = openProbe();
  probe.on('error', () => undefined);
  try {
    // A probe that cannot connect proves nothing either way: the round trip decides.
    if (await within(probe.connect(), 'connecting the probe').then(() => true, () => false)) await takeTurns(listener, first, probe, where);
  } finally {
    await discard(probe);
  }
}

async function takeTurns(listener: Client, first: ListenerSession, probe: Client, where: string): Promise<void> {
  for (let round = 0; round < PROBE_ROUNDS; round++) {
    // A probe that gets no backend (a full pool) proves nothing either way: the round trip decides.
    const other = await sessionOf(probe).catch(() => null);
    if (other === null) return;
    if (other.pid === first.pid) {
      throw sessionNotKept(where, `PostgreSQL backend ${first.pid}, which ran its LISTEN, served another connection meanwhile`);
    }
    const again = await sessionOf(listener);
    if (again.pid !== first.pid || !again.listening) {
      throw sessionNotKept(where, `its statements ran on PostgreSQL backend ${first.pid}, then on backend ${again.pid}${again.listening ? '' : ', which does not listen'}`);
    }
  }
}

/** The error that stops the application at start (and is logged at each attempt to listen again after). */
export function sessionNotKept(where: string, evidence: string): TombstoneConfigurationError {
  return new TombstoneConfigurationError(
    `TombstoneModule: the lookup cache's listening connection (${where}) goes through a connection pooler that does not keep its session ` +
      `(PgBouncer in transaction or statement pooling mode, or one like it): ${evidence}. A notification sent while no client holds that ` +
      'server connection is dropped, so this instance would miss changes and its lookup cache would serve stale answers.',
    [
      'Point `cache.listen` at PostgreSQL itself, past the pooler: a connection string (`cache: { listen: process.env.DIRECT_DATABASE_URL }`) ' +
        'or a pg client config (`{ host, port, user, password, database }`). The DataSource and its lookups may keep going through the pooler.',
      'Or point it at a pool in session mode (PgBouncer: `pool_mode = session` for that database or user), which keeps LISTEN.',
      'Or turn the cache off with `cache: false` (every miss is then a query).',
    ],
  );
}

/** Where a client config connects, for messages: host, port and database, never a password. */
export function describeTarget(config: ClientConfig): string {
  let { host, port, database } = config;
  if (config.connectionString) {
    try {
      const url = new URL(config.connectionString);
      host = url.hostname || url.searchParams.get('host') || host;
      port = url.port ? Number(url.port) : port;
      database = decodeURIComponent(url.pathname.slice(1)) || database;
    } catch {
      return 'a connection string that cannot be read as a URL';
    }
  }
  return `${host || 'localhost'}:${port || 5432}/${database || '(default database)'}`;
}

/** Waits for a step of the listening connection at most `ms`. */
export async function within<T>(step: Promise<T>, what: string, ms = STEP_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      step,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} got no answer in ${ms} ms`)), ms);
        timer.unref();
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Ends a client politely, and destroys its socket if the server does not answer in time. */
export async function close(client: Client): Promise<void> {
  try {
    await within(client.end(), 'closing', CLOSE_TIMEOUT_MS);
  } catch {
    (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
  }
}

/** Stops listening to a client that is thrown away, and keeps its late errors from ending the process. */
export function discard(client: Client): Promise<void> {
  client.removeAllListeners();
  client.on('error', () => undefined);
  return close(client);
}
