// `npm run soak`: one module app under sustained, mixed load at saturation (issue "Sustained
// load"). Not a test and never part of `npm test`: it prints a report and exits non-zero when a
// check fails.
//
//   npm run soak                               (two minutes, embedded PostgreSQL, Express)
//   SOAK_DURATION=30 npm run soak              (seconds of load; default 120)
//   SOAK_OUTPUT=soak.md npm run soak           (the report is written there too)
//   DATABASE_URL=postgres://... npm run soak   (a server of your own; a throw-away database on it)
//   HTTP_ADAPTER=fastify npm run soak
//
// Other knobs: SOAK_CONNECTIONS (HTTP connections over all streams, default 48),
// SOAK_IMPORT_EVERY (seconds between imports, default 2), SOAK_RECORD_EVERY (milliseconds
// between recording-API writes, default 50).
//
// bench/app.js runs as a child process in module mode (`node --expose-gc`), on loopback. While
// autocannon drives five request streams at it at once from this process (live 200s, 410s,
// 301s, a 404 flood of random unknown keys, and keys that the writers keep changing), three
// writers change tombstones: an admin loop (create / update / delete / list through the admin
// endpoints, back to back), CSV imports of a few hundred rows, and writes through
// TombstoneService over IPC. Every few seconds the app's memory (after a forced GC), its lookup
// cache's stats() and its pool, and the database's pg_stat_activity are sampled. Then the checks:
// no errors and no status a stream does not allow, heap flat after warm-up, the cache's store and
// filter within their bounds, no connection growth and none leaked, and the app's answers equal
// to the database's once the writers stop.
import 'reflect-metadata';
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { clearTimeout, setTimeout } from 'node:timers';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, URL } from 'node:url';
import autocannon from 'autocannon';
import pg from 'pg';
import { DataSource } from 'typeorm';
import { TOMBSTONE_ENTITIES, TOMBSTONE_MIGRATIONS } from '../dist/src/index.js';
import { createBenchDatabase } from './database.js';

const setting = (name, fallback) => {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number`);
  return value;
};
const DURATION = Math.round(setting('SOAK_DURATION', 120));
const CONNECTIONS = Math.round(setting('SOAK_CONNECTIONS', 48));
const IMPORT_EVERY_MS = setting('SOAK_IMPORT_EVERY', 2) * 1000;
const RECORD_EVERY_MS = setting('SOAK_RECORD_EVERY', 50);
const OUTPUT = process.env.SOAK_OUTPUT;
const ADAPTER = process.env.HTTP_ADAPTER === 'fastify' ? 'fastify' : 'express';
// About 30 samples per run, at most one every 5 s and at least one a second.
const SAMPLE_MS = Math.min(5000, Math.max(1000, Math.round((DURATION * 1000) / 30)));
const WARM_UP = 0.2;
// heapUsed of the last quarter against the second: at most this much more (and 1 MB).
const HEAP_MARGIN = 0.1;
const HEAP_SLACK = 1024 * 1024;

// The keys. bench/app.js holds live, live-0 .. live-999 in memory.
const LIVE = 1000;
const GONE = 1000; // gone-N: deleted, never written during the run
const MOVED = 1000; // moved-N → live-N, never written during the run
const FLIP = 200; // flip-N: the admin loop's
const REC = 200; // rec-N: the recording API's, over IPC
const IMP = 2000; // imp-N: the imports'

const started = new Date();
const log = (message) => console.log(`[soak] ${message}`);
const rand = (n) => Math.floor(Math.random() * n);
const pickOne = (list) => list[rand(list.length)];

// ---------------------------------------------------------------------------------------------
// PostgreSQL: the embedded one unless DATABASE_URL is given; a fresh database either way, dropped
// at the end.

let database;
let dbUrl;

let child;
let sampler;
let cleaning;
const cleanUp = () =>
  (cleaning ??= (async () => {
    if (child?.connected) child.kill();
    await sampler?.end().catch(() => undefined);
    await database?.drop();
  })());

// ---------------------------------------------------------------------------------------------
// The app: bench/app.js in module mode, with --expose-gc so that memory samples follow a full GC.

/** Lines the app logged at error level (its logger logs nothing else), for the report. */
const appErrors = { count: 0, first: [] };

function startApp(adminToken) {
  child = fork(fileURLToPath(new URL('./app.js', import.meta.url)), [], {
    env: { ...process.env, BENCH_MODE: 'module', DATABASE_URL: dbUrl, BENCH_ADMIN_TOKEN: adminToken, HTTP_ADAPTER: ADAPTER },
    execArgv: [...process.execArgv, '--expose-gc'],
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
  });
  let buffered = '';
  child.stderr.on('data', (chunk) => {
    process.stderr.write(chunk);
    buffered += chunk.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop();
    for (const line of lines) {
      // eslint-disable-next-line no-control-regex
      const plain = line.replace(/\u001b\[[0-9;]*m/g, '');
      if (!/\bERROR\b|Error:/.test(plain)) continue;
      appErrors.count++;
      if (appErrors.first.length < 5) appErrors.first.push(plain.trim().slice(0, 300));
    }
  });
  let exited = null;
  const waiting = new Set();
  child.on('exit', (code, signal) => {
    exited = { code, signal };
    for (const fail of waiting) fail(new Error(`the app exited (${signal ?? code})`));
  });
  /** One request over IPC, answered by the next message that has `field`. */
  const ask = (message, field, timeoutMs = 30_000) =>
    new Promise((resolve, reject) => {
      if (exited) return reject(new Error(`the app exited (${exited.signal ?? exited.code})`));
      const done = () => {
        clearTimeout(timer);
        child.off('message', onMessage);
        waiting.delete(fail);
      };
      const fail = (error) => {
        done();
        reject(error);
      };
      const onMessage = (reply) => {
        if (reply && field in reply) {
          done();
          resolve(reply[field]);
        }
      };
      const timer = setTimeout(() => fail(new Error(`no ${field} from the app in ${timeoutMs} ms`)), timeoutMs);
      waiting.add(fail);
      child.on('message', onMessage);
      child.send(message);
    });
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the app exited with code ${code} before it was ready`)));
    child.once('message', ({ port, lookup }) => {
      if (lookup?.state !== 'coherent' || !lookup.filter.ready) {
        child.kill();
        reject(new Error(`the app's lookup cache is not ready: ${JSON.stringify(lookup)}`));
        return;
      }
      resolve({
        port,
        exited: () => exited,
        stats: () => ask('stats', 'stats'),
        memory: () => ask('memory', 'memory'),
        pool: () => ask('pool', 'pool'),
        cacheSettings: () => ask('cacheSettings', 'cacheSettings'),
        changes: () => ask('changes', 'changes'),
        record: (change) => ask({ record: change }, 'recorded'),
        flush: () => ask('flush', 'flushed'),
        stop: () =>
          new Promise((done) => {
            if (exited) return done();
            child.removeAllListeners('exit');
            child.once('exit', done);
            child.send('stop');
          }),
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// The request streams, each an autocannon instance of its own; the connections are the weights.

const flippingKey = () => {
  const group = rand(3);
  return group === 0 ? `flip-${rand(FLIP)}` : group === 1 ? `rec-${rand(REC)}` : `imp-${rand(IMP)}`;
};
const STREAMS = [
  { name: 'live', weight: 4, allowed: [200], path: () => (rand(100) === 0 ? '/items/live' : `/items/live-${rand(LIVE)}`) },
  { name: 'gone', weight: 2, allowed: [410], path: () => `/items/gone-${rand(GONE)}` },
  { name: 'moved', weight: 2, allowed: [301], path: () => `/items/moved-${rand(MOVED)}` },
  { name: 'flood', weight: 4, allowed: [404], path: () => `/items/unknown-${randomBytes(8).toString('hex')}` },
  // Keys the writers change while they are read: any answer a tombstone or its absence can give.
  { name: 'flipping', weight: 2, allowed: [301, 302, 404, 410], path: () => `/items/${flippingKey()}` },
];
const totalWeight = STREAMS.reduce((sum, s) => sum + s.weight, 0);
for (const stream of STREAMS) stream.connections = Math.max(1, Math.round((CONNECTIONS * stream.weight) / totalWeight));

async function drive(app, stream) {
  const result = await autocannon({
    url: `http://127.0.0.1:${app.port}`,
    connections: stream.connections,
    duration: DURATION,
    timeout: 10,
    requests: [{ method: 'GET', setupRequest: (request) => ({ ...request, path: stream.path() }) }],
  });
  const statuses = Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([code, { count }]) => [code, count]));
  const answered = Object.values(statuses).reduce((a, b) => a + b, 0);
  const disallowed = Object.entries(statuses)
    .filter(([code]) => !stream.allowed.includes(Number(code)))
    .reduce((n, [, count]) => n + count, 0);
  const fiveXx = Object.entries(statuses)
    .filter(([code]) => Number(code) >= 500)
    .reduce((n, [, count]) => n + count, 0);
  return {
    ...stream,
    total: answered,
    rps: answered / result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    max: result.latency.max,
    statuses,
    errors: result.errors,
    timeouts: result.timeouts,
    disallowed,
    fiveXx,
  };
}

// ---------------------------------------------------------------------------------------------
// The writers. Each owns its keys, so every one of its requests has one right answer.

/** Ops of one writer: counts of outcomes, latencies, failures (with the first few as evidence). */
class Tally {
  constructor(name) {
    this.name = name;
    this.ops = 0;
    this.outcomes = {};
    this.times = [];
    this.failed = 0;
    this.evidence = [];
  }
  add(outcome, ms, ok, detail) {
    this.ops++;
    this.outcomes[outcome] = (this.outcomes[outcome] ?? 0) + 1;
    this.times.push(ms);
    if (!ok) {
      this.failed++;
      if (this.evidence.length < 5) this.evidence.push(`${outcome}: ${String(detail ?? '').slice(0, 300)}`);
    }
  }
}

/** One admin request: { status, body } or { error }. */
async function adminCall(app, token, method, path, body, contentType = 'application/json') {
  const start = performance.now();
  try {
    const response = await globalThis.fetch(`http://127.0.0.1:${app.port}/admin${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': contentType }) },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      signal: globalThis.AbortSignal.timeout(30_000),
    });
    const text = await response.text();
    return { status: response.status, text, ms: performance.now() - start };
  } catch (error) {
    return { error: `${error?.name ?? 'Error'}: ${error?.message ?? String(error)}`, ms: performance.now() - start };
  }
}

const parse = (text) => {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
};

/** Create, update, delete (and now and then list) the flip-N tombstones, back to back. */
async function adminLoop(app, token, until, tallies) {
  /** What the loop believes each flip key has: its tombstone's id, or nothing. */
  const ids = new Map();
  const check = (tally, outcome, answer, expected) => {
    const ok = answer.status === expected;
    tally.add(answer.error ? 'error' : String(answer.status), answer.ms, ok, answer.error ?? `${outcome} → ${answer.status} ${answer.text}`);
    return ok;
  };
  /** After a failed write, what the table holds for the key. */
  const resync = async (key) => {
    const answer = await adminCall(app, token, 'GET', `/tombstones?type=item&keyPrefix=${encodeURIComponent(key)}&limit=50`);
    const item = parse(answer.text)?.items?.find((row) => row.key === key);
    if (item) ids.set(key, item.id);
    else ids.delete(key);
  };
  for (let n = 0; !until(); n++) {
    if (n % 25 === 24) {
      const answer = await adminCall(app, token, 'GET', '/tombstones?type=item&keyPrefix=flip-&limit=50');
      check(tallies.list, 'list', answer, 200);
      continue;
    }
    const key = `flip-${rand(FLIP)}`;
    const id = ids.get(key);
    if (id === undefined) {
      const kind = pickOne(['deleted', 'deleted', 'moved', 'moved', 'hidden']);
      const body =
        kind === 'deleted'
          ? { type: 'item', key, kind, reason: `Deleted by the soak (${n})`, alternative: '/items/live' }
          : kind === 'moved'
            ? { type: 'item', key, kind, target: `live-${rand(LIVE)}`, permanent: rand(4) !== 0 }
            : { type: 'item', key, kind };
      const answer = await adminCall(app, token, 'POST', '/tombstones', body);
      if (check(tallies.create, 'create', answer, 201)) ids.set(key, parse(answer.text).id);
      else await resync(key);
    } else if (rand(3) === 0) {
      const answer = await adminCall(app, token, 'DELETE', `/tombstones/${id}`);
      if (check(tallies.delete, 'delete', answer, 204)) ids.delete(key);
      else await resync(key);
    } else {
      const body = pickOne([
        { reason: `Updated by the soak (${n})` },
        { kind: 'deleted', reason: `Deleted by the soak (${n})` },
        { kind: 'moved', target: `live-${rand(LIVE)}`, permanent: rand(4) !== 0 },
        { kind: 'hidden' },
      ]);
      const answer = await adminCall(app, token, 'PATCH', `/tombstones/${id}`, body);
      if (!check(tallies.update, 'update', answer, 200)) await resync(key);
    }
  }
}

/** Every IMPORT_EVERY_MS, a CSV import (upsert) of 200 to 500 imp-N keys. */
async function importLoop(app, token, until, tally) {
  const header = 'scope,type,key,kind,target,permanent,reason,alternative,expiresAt';
  while (!until()) {
    const next = performance.now() + IMPORT_EVERY_MS;
    const rows = 200 + rand(301);
    const keys = new Set();
    while (keys.size < rows) keys.add(`imp-${rand(IMP)}`);
    const lines = [header];
    for (const key of keys) {
      // One in ten expires within the run: the key turns into a 404 on its own.
      const expires = rand(10) === 0 ? new Date(Date.now() + 5_000 + rand(30_000)).toISOString() : '';
      const kind = rand(10);
      if (kind < 5) lines.push(`,item,${key},deleted,,,Imported by the soak,/items/live,${expires}`);
      else if (kind < 8) lines.push(`,item,${key},moved,live-${rand(LIVE)},${rand(4) !== 0},,,${expires}`);
      else lines.push(`,item,${key},hidden,,,,,${expires}`);
    }
    const answer = await adminCall(app, token, 'POST', '/tombstones/import', lines.join('\n'), 'text/csv');
    const report = parse(answer.text ?? '');
    const ok = answer.status === 200 && report?.created + report?.updated === rows;
    tally.add(answer.error ? 'error' : String(answer.status), answer.ms, ok, answer.error ?? `${rows} rows → ${answer.status} ${answer.text}`);
    tally.rows = (tally.rows ?? 0) + (ok ? rows : 0);
    const wait = next - performance.now();
    if (wait > 0 && !until()) await sleep(wait);
  }
}

/** Every RECORD_EVERY_MS, one write through the app's TombstoneService (over IPC) on rec-N keys. */
async function recordLoop(app, until, tally) {
  while (!until()) {
    const next = performance.now() + RECORD_EVERY_MS;
    const key = `rec-${rand(REC)}`;
    const change = pickOne([
      { op: 'delete', key, reason: 'Recorded by the soak' },
      { op: 'delete', key, reason: 'Recorded by the soak' },
      { op: 'restore', key },
      { op: 'restore', key },
      { op: 'move', key, to: `live-${rand(LIVE)}` },
      { op: 'hide', key },
      { op: 'merge', keys: [key, `rec-${rand(REC)}`].filter((k, i, all) => all.indexOf(k) === i), to: `live-${rand(LIVE)}` },
    ]);
    try {
      const recorded = await app.record(change);
      tally.add(recorded.error ? 'error' : change.op, recorded.ms, !recorded.error, `${JSON.stringify(change)}: ${recorded.error}`);
    } catch (error) {
      tally.add('ipc', 0, false, error.message);
    }
    const wait = next - performance.now();
    if (wait > 0 && !until()) await sleep(wait);
  }
}

// ---------------------------------------------------------------------------------------------
// Sampling: the app's memory (after a full GC), its cache and its pool; the database's connections.

const CONNECTIONS_SQL = `
  SELECT count(*)::int AS n,
         count(*) FILTER (WHERE application_name = 'nestjs-tombstones listener')::int AS listeners,
         count(*) FILTER (WHERE state = 'active')::int AS active
    FROM pg_stat_activity
   WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`;

async function sample(app, t0) {
  const at = (performance.now() - t0) / 1000;
  const memory = await app.memory();
  const stats = await app.stats();
  const pool = await app.pool();
  const changes = await app.changes();
  const {
    rows: [connections],
  } = await sampler.query(CONNECTIONS_SQL);
  // The rows, and the planner's estimate of them, from which the filter is sized when it loads.
  const {
    rows: [{ rows, estimate, dead }],
  } = await sampler.query(
    `SELECT (SELECT count(*)::int FROM tombstones) AS rows,
            (SELECT reltuples::bigint FROM pg_class WHERE oid = 'tombstones'::regclass)::int AS estimate,
            (SELECT n_dead_tup::int FROM pg_stat_user_tables WHERE relid = 'tombstones'::regclass) AS dead`,
  );
  return { at, memory, stats, pool, changes, connections, rows, estimate, dead };
}

// ---------------------------------------------------------------------------------------------

async function main() {
  database = await createBenchDatabase('tombstones_soak', log);
  dbUrl = database.url;
  const db = new DataSource({ type: 'postgres', url: dbUrl, entities: [...TOMBSTONE_ENTITIES], migrations: [...TOMBSTONE_MIGRATIONS] });
  await db.initialize();
  await db.runMigrations();
  const [{ server_version: pgVersion }] = await db.query('SHOW server_version');
  await db.query(
    `INSERT INTO tombstones (resource_type, resource_key, kind, reason, alternative)
     SELECT 'item', 'gone-' || g, 'deleted', 'Retired by the soak', '/items/live' FROM generate_series(0, $1 - 1) g`,
    [GONE],
  );
  await db.query(
    `INSERT INTO tombstones (resource_type, resource_key, kind, target_key)
     SELECT 'item', 'moved-' || g, 'moved', 'live-' || (g % ${LIVE}) FROM generate_series(0, $1 - 1) g`,
    [MOVED],
  );
  await db.destroy();
  sampler = new pg.Client({ connectionString: dbUrl, application_name: 'soak sampler' });
  await sampler.connect();

  const adminToken = randomBytes(18).toString('base64url');
  const app = await startApp(adminToken);
  const [pool, cacheSettings] = [await app.pool(), await app.cacheSettings()];
  log(`app on ${ADAPTER} :${app.port}; pool max ${pool.max}; cache ${JSON.stringify(cacheSettings)}`);
  log(`${DURATION} s of load: ${STREAMS.map((s) => `${s.name} ${s.connections}`).join(', ')} connections; a sample every ${SAMPLE_MS} ms`);

  const t0 = performance.now();
  const samples = [await sample(app, t0)];
  let loadDone = false;
  const until = () => loadDone || app.exited() !== null;
  const tallies = {
    create: new Tally('admin create (201)'),
    update: new Tally('admin update (200)'),
    delete: new Tally('admin delete (204)'),
    list: new Tally('admin list (200)'),
    import: new Tally('admin import (200)'),
    record: new Tally('TombstoneService over IPC'),
  };
  const writers = Promise.all([
    adminLoop(app, adminToken, until, tallies),
    importLoop(app, adminToken, until, tallies.import),
    recordLoop(app, until, tallies.record),
  ]);
  const sampling = (async () => {
    let errors = 0;
    while (!until()) {
      const next = t0 + samples.length * SAMPLE_MS;
      const wait = next - performance.now();
      if (wait > 0) await sleep(wait);
      if (until()) break;
      try {
        const s = await sample(app, t0);
        samples.push(s);
        if (samples.length % Math.max(1, Math.round(15_000 / SAMPLE_MS)) === 0) {
          log(
            `t=${s.at.toFixed(0)} s heapUsed ${mb(s.memory.heapUsed)} MB, rss ${mb(s.memory.rss)} MB, ` +
              `connections ${s.connections.n}, store ${s.stats.entries}, filter keys ${s.stats.filter.keys} capacity ${s.stats.filter.capacity}, ` +
              `rows ${s.rows} (estimate ${s.estimate}, dead ${s.dead})`,
          );
        }
      } catch (error) {
        if (++errors > 3) throw error;
      }
    }
  })();
  const streams = await Promise.all(STREAMS.map((stream) => drive(app, stream)));
  const loadSeconds = (performance.now() - t0) / 1000;
  loadDone = true;
  await writers;
  await sampling;
  if (app.exited()) throw new Error(`the app exited during the run: ${JSON.stringify(app.exited())}`);
  samples.push(await sample(app, t0));
  log('load done; checking that the pool drains and the answers match the database');

  // No client kept: once the load and the writers stop, every client goes back to the pool.
  const drainStart = performance.now();
  let drained = await app.pool();
  while (drained.total - drained.idle > 0 && performance.now() - drainStart < 15_000) {
    await sleep(250);
    drained = await app.pool();
  }
  const {
    rows: [afterConnections],
  } = await sampler.query(CONNECTIONS_SQL);
  const drain = { pool: drained, connections: afterConnections, ms: performance.now() - drainStart };

  const coherence = await compareWithDatabase(app, adminToken);
  const finalStats = await app.stats();
  await app.flush();
  await app.stop();

  const report = render({ pgVersion, pool, cacheSettings, streams, tallies, samples, loadSeconds, drain, coherence, finalStats });
  console.log(`\n${report.text}`);
  if (OUTPUT) {
    writeFileSync(OUTPUT, report.text);
    log(`written to ${OUTPUT}`);
  }
  return report.passed;
}

/**
 * Once the writers have stopped: every key they wrote, asked of the app (its cache) and of the
 * database (the admin batch resolve, which always queries). A mismatch is asked again once, in
 * case a tombstone expired between the two.
 */
async function compareWithDatabase(app, token) {
  await sleep(500); // the last notifications
  const keys = [
    ...Array.from({ length: FLIP }, (_, i) => `flip-${i}`),
    ...Array.from({ length: REC }, (_, i) => `rec-${i}`),
    ...Array.from({ length: IMP }, (_, i) => `imp-${i}`),
  ];
  const ask = async (batch) => {
    const answer = await adminCall(app, token, 'POST', '/tombstones/resolve', { type: 'item', keys: batch });
    if (answer.status !== 200) throw new Error(`resolve answered ${answer.status ?? answer.error}: ${answer.text}`);
    return parse(answer.text).results.map((r) => r.status ?? 404);
  };
  const get = async (key) => {
    const response = await globalThis.fetch(`http://127.0.0.1:${app.port}/items/${key}`, { redirect: 'manual' });
    await response.arrayBuffer();
    return response.status;
  };
  const mismatches = [];
  for (let i = 0; i < keys.length; i += 500) {
    const batch = keys.slice(i, i + 500);
    const got = [];
    for (const key of batch) got.push(await get(key));
    const expected = await ask(batch);
    for (let j = 0; j < batch.length; j++) {
      if (got[j] === expected[j]) continue;
      const again = await get(batch[j]);
      const [truth] = await ask([batch[j]]);
      if (again !== truth) mismatches.push(`${batch[j]}: app ${again}, database ${truth} (first ${got[j]} / ${expected[j]})`);
    }
  }
  return { keys: keys.length, mismatches };
}

// ---------------------------------------------------------------------------------------------
// The report.

const fmt = (n, digits = 0) =>
  n === undefined || n === null || Number.isNaN(n) ? '-' : Number(n).toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const mb = (bytes) => (bytes / 2 ** 20).toFixed(1);
const mean = (values) => values.reduce((a, b) => a + b, 0) / Math.max(1, values.length);
function percentiles(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] : NaN);
  return { p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] };
}
/** Least-squares slope of y over x. */
function slope(points) {
  const mx = mean(points.map((p) => p.x));
  const my = mean(points.map((p) => p.y));
  const num = points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0);
  const den = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  return den === 0 ? 0 : num / den;
}
function table(headers, rows, align) {
  const cells = [headers, ...rows].map((row) => row.map(String));
  const widths = headers.map((_, i) => Math.max(3, ...cells.map((row) => row[i].length)));
  const line = (row) => `| ${row.map((cell, i) => (align[i] === 'r' ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (align[i] === 'r' ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [line(cells[0]), rule, ...cells.slice(1).map(line)].join('\n');
}

function render({ pgVersion, pool, cacheSettings, streams, tallies, samples, loadSeconds, drain, coherence, finalStats }) {
  const D = loadSeconds;
  // The last sample is taken once the load and the writers have stopped: it counts in the last quarter.
  const between = (from, to) => samples.filter((s) => s.at >= from * D && (to === Infinity || s.at < to * D));
  const warm = between(WARM_UP, Infinity);
  const q2 = between(0.25, 0.5);
  const q4 = between(0.75, Infinity);
  const start = samples[0];
  const afterWarmUp = warm[0] ?? samples[samples.length - 1];
  const end = samples[samples.length - 1];
  const heapQ2 = mean(q2.map((s) => s.memory.heapUsed));
  const heapQ4 = mean(q4.map((s) => s.memory.heapUsed));
  const rssQ2 = mean(q2.map((s) => s.memory.rss));
  const rssQ4 = mean(q4.map((s) => s.memory.rss));
  const heapSlope = slope(warm.map((s) => ({ x: s.at / 60, y: s.memory.heapUsed / 2 ** 20 })));
  const rssSlope = slope(warm.map((s) => ({ x: s.at / 60, y: s.memory.rss / 2 ** 20 })));
  const heapLimit = Math.max(heapQ2 * (1 + HEAP_MARGIN), heapQ2 + HEAP_SLACK);

  const conn = samples.map((s) => s.connections.n);
  const connLimit = pool.max + 1;
  const quarterMax = [0, 0.25, 0.5, 0.75].map((q) => Math.max(0, ...between(q, q === 0.75 ? Infinity : q + 0.25).map((s) => s.connections.n)));
  const entries = samples.map((s) => s.stats.entries);
  const notCoherent = samples.filter((s) => s.stats.state !== 'coherent');
  const notReady = samples.filter((s) => !s.stats.filter.ready);
  const minCapacity = cacheSettings?.filter ? cacheSettings.filter.minCapacity : 0;
  // What the table warrants: the filter is sized for twice its rows (at least minCapacity) and
  // doubled when full, so a table that really grows may take it to 4 × its rows; past that (or
  // past minCapacity while the table is small), the writes, not the table, made it grow.
  const maxRows = Math.max(...samples.map((s) => s.rows));
  const filterBound = Math.max(minCapacity, 4 * maxRows);
  const filterTooBig = samples.filter((s) => s.stats.filter.capacity > filterBound);
  const answered = ['filtered', 'cached', 'queried'].map((f) => end.stats[f] - start.stats[f]);

  const httpTotal = streams.reduce((n, s) => n + s.total, 0);
  const checks = [];
  const check = (name, ok, detail) => checks.push({ name, ok, detail });
  for (const s of streams) {
    check(
      `${s.name}: no errors, only ${s.allowed.join('/')}`,
      s.errors + s.timeouts + s.disallowed + s.fiveXx === 0 && s.total > 0,
      `${fmt(s.total)} responses, ${s.errors} errors, ${s.timeouts} timeouts, ${s.fiveXx} 5xx, ${s.disallowed} not allowed`,
    );
  }
  for (const tally of Object.values(tallies)) {
    check(`${tally.name}: every op answered as expected`, tally.failed === 0 && tally.ops > 0, tally.failed === 0 ? `${fmt(tally.ops)} ops` : `${tally.failed} of ${tally.ops} failed: ${tally.evidence.join(' ‖ ')}`);
  }
  check('the app logged no errors', appErrors.count === 0, appErrors.count === 0 ? 'none' : `${appErrors.count} lines: ${appErrors.first.join(' ‖ ')}`);
  check(
    `heapUsed flat after warm-up (last quarter ≤ second quarter + ${HEAP_MARGIN * 100}%)`,
    q2.length > 0 && q4.length > 0 && heapQ4 <= heapLimit,
    `${mb(heapQ2)} MB → ${mb(heapQ4)} MB (limit ${mb(heapLimit)} MB; ${q2.length} and ${q4.length} samples; slope ${heapSlope.toFixed(2)} MB/min)`,
  );
  check(
    `store entries ≤ maxEntries (${fmt(cacheSettings?.maxEntries)})`,
    entries.every((n) => n <= (cacheSettings?.maxEntries ?? Infinity)),
    `max ${fmt(Math.max(...entries))}`,
  );
  check(
    `filter bounded: capacity ≤ max(minCapacity, 4 × rows) = ${fmt(filterBound)}`,
    filterTooBig.length === 0,
    `capacity ${fmt(start.stats.filter.capacity)} → ${fmt(end.stats.filter.capacity)} (${fmt(start.stats.filter.bytes)} → ${fmt(end.stats.filter.bytes)} bytes), ` +
      `rows ${fmt(start.rows)} → ${fmt(end.rows)}, keys counted ${fmt(start.stats.filter.keys)} → ${fmt(end.stats.filter.keys)}` +
      (filterTooBig.length === 0 ? '' : `; over the bound in ${filterTooBig.length} samples, from t=${fmt(filterTooBig[0].at)} s`),
  );
  check('lookup cache coherent in every sample', notCoherent.length === 0, notCoherent.length === 0 ? `${samples.length} samples` : `${notCoherent.length} samples not coherent`);
  check(
    `connections ≤ pool max + 1 (${connLimit}) in every sample`,
    conn.every((n) => n <= connLimit),
    `min ${Math.min(...conn)}, max ${Math.max(...conn)}; max per quarter ${quarterMax.join(' / ')}`,
  );
  // The pool opens and closes clients as the load comes and goes (idle ones close after 10 s):
  // growth is the count climbing, not one client more now and then.
  const connQ2 = mean(q2.map((s) => s.connections.n));
  const connQ4 = mean(q4.map((s) => s.connections.n));
  check(
    'no connection growth: last quarter mean ≤ second quarter mean + 1',
    q2.length > 0 && q4.length > 0 && connQ4 <= connQ2 + 1,
    `mean ${fmt(connQ2, 1)} → ${fmt(connQ4, 1)}; max per quarter ${quarterMax.join(' / ')}`,
  );
  check(
    'no client kept: the pool drains once the load stops',
    drain.pool.total - drain.pool.idle === 0 && drain.pool.waiting === 0 && drain.connections.n <= drain.pool.total + 1,
    `after ${fmt(drain.ms)} ms: ${drain.pool.total} clients, ${drain.pool.idle} idle, ${drain.pool.waiting} waiting; ${drain.connections.n} connections`,
  );
  check(
    "the app's answers equal the database's after the run",
    coherence.mismatches.length === 0,
    `${fmt(coherence.keys)} keys, ${coherence.mismatches.length} differ${coherence.mismatches.length ? `: ${coherence.mismatches.slice(0, 5).join('; ')}` : ''}`,
  );
  const passed = checks.every((c) => c.ok);

  const cpus = os.cpus();
  const streamTable = table(
    ['Stream', 'Allowed', 'Conns', 'Responses', 'req/s', 'p50 ms', 'p99 ms', 'max ms', 'Statuses', 'Errors', 'Timeouts', 'Not allowed'],
    [
      ...streams.map((s) => [
        s.name,
        s.allowed.join('/'),
        s.connections,
        fmt(s.total),
        fmt(s.rps),
        fmt(s.p50),
        fmt(s.p99),
        fmt(s.max),
        Object.entries(s.statuses)
          .map(([code, n]) => `${code}: ${fmt(n)}`)
          .join(', '),
        s.errors,
        s.timeouts,
        s.disallowed,
      ]),
      ['all', '', streams.reduce((n, s) => n + s.connections, 0), fmt(httpTotal), fmt(httpTotal / D), '', '', '', '', '', '', ''],
    ],
    ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'l', 'r', 'r', 'r'],
  );
  const writerTable = table(
    ['Writer', 'Ops', 'ops/s', 'p50 ms', 'p99 ms', 'max ms', 'Outcomes', 'Failed'],
    Object.values(tallies).map((t) => {
      const p = percentiles(t.times);
      return [
        t.name + (t.rows ? ` (${fmt(t.rows)} rows)` : ''),
        fmt(t.ops),
        fmt(t.ops / D, 1),
        fmt(p.p50, 1),
        fmt(p.p99, 1),
        fmt(p.max, 1),
        Object.entries(t.outcomes)
          .map(([k, n]) => `${k}: ${fmt(n)}`)
          .join(', '),
        t.failed,
      ];
    }),
    ['l', 'r', 'r', 'r', 'r', 'r', 'l', 'r'],
  );
  const memRow = (name, s) => [name, fmt(s.at, 1), mb(s.memory.rss), mb(s.memory.heapUsed), mb(s.memory.heapTotal), mb(s.memory.external)];
  const memoryTable = table(
    ['Memory (after a full GC)', 't s', 'RSS MB', 'heapUsed MB', 'heapTotal MB', 'external MB'],
    [
      memRow('start (before the load)', start),
      memRow(`after warm-up (first sample past ${WARM_UP * 100}%)`, afterWarmUp),
      memRow('end', end),
      ['mean, second quarter', '', mb(rssQ2), mb(heapQ2), '', ''],
      ['mean, last quarter', '', mb(rssQ4), mb(heapQ4), '', ''],
      ['slope after warm-up, MB/min', '', rssSlope.toFixed(2), heapSlope.toFixed(2), '', ''],
    ],
    ['l', 'r', 'r', 'r', 'r', 'r'],
  );
  const poolSamples = samples.map((s) => s.pool);
  const connTable = table(
    ['Connections', 'min', 'max', 'mean'],
    [
      ["pg_stat_activity, the app's database (client backends)", Math.min(...conn), Math.max(...conn), fmt(mean(conn), 1)],
      ['of which active', Math.min(...samples.map((s) => s.connections.active)), Math.max(...samples.map((s) => s.connections.active)), fmt(mean(samples.map((s) => s.connections.active)), 1)],
      ['of which the listener', Math.min(...samples.map((s) => s.connections.listeners)), Math.max(...samples.map((s) => s.connections.listeners)), ''],
      ["the app's pool: clients", Math.min(...poolSamples.map((p) => p.total)), Math.max(...poolSamples.map((p) => p.total)), fmt(mean(poolSamples.map((p) => p.total)), 1)],
      ["the app's pool: callers waiting", Math.min(...poolSamples.map((p) => p.waiting)), Math.max(...poolSamples.map((p) => p.waiting)), fmt(mean(poolSamples.map((p) => p.waiting)), 1)],
    ],
    ['l', 'r', 'r', 'r'],
  );
  const cacheTable = table(
    ['Lookup cache', 'start', 'after warm-up', 'end'],
    [
      ['state', start.stats.state, afterWarmUp.stats.state, end.stats.state],
      ['store entries (max over the run)', fmt(start.stats.entries), fmt(afterWarmUp.stats.entries), `${fmt(end.stats.entries)} (max ${fmt(Math.max(...entries))}, bound ${fmt(cacheSettings?.maxEntries)})`],
      ['filter keys (added, re-adds count)', fmt(start.stats.filter.keys), fmt(afterWarmUp.stats.filter.keys), fmt(end.stats.filter.keys)],
      ['filter capacity', fmt(start.stats.filter.capacity), fmt(afterWarmUp.stats.filter.capacity), fmt(end.stats.filter.capacity)],
      ['filter bytes', fmt(start.stats.filter.bytes), fmt(afterWarmUp.stats.filter.bytes), fmt(end.stats.filter.bytes)],
      ['filter last load ms', fmt(start.stats.filter.lastLoadMs), fmt(afterWarmUp.stats.filter.lastLoadMs), fmt(end.stats.filter.lastLoadMs)],
      ['tombstone rows in the table', fmt(start.rows), fmt(afterWarmUp.rows), fmt(end.rows)],
      [
        "the planner's estimate of them (reltuples), dead rows",
        `${fmt(start.estimate)}, ${fmt(start.dead)}`,
        `${fmt(afterWarmUp.estimate)}, ${fmt(afterWarmUp.dead)}`,
        `${fmt(end.estimate)}, ${fmt(end.dead)} (estimate max ${fmt(Math.max(...samples.map((s) => s.estimate)))})`,
      ],
      [
        'misses answered during the run by filter / store / query',
        '',
        '',
        `${answered.map((n) => fmt(n)).join(' / ')} (after the run: ${['filtered', 'cached', 'queried'].map((f) => fmt(finalStats[f])).join(' / ')} in all)`,
      ],
      ['samples with the filter not ready', '', '', `${notReady.length} of ${samples.length}`],
      [
        'changes handed to invalidate(): keyed (keys) / whole pair / everything',
        '',
        '',
        `${fmt(end.changes.keyed - start.changes.keyed)} (${fmt(end.changes.keys - start.changes.keys)}) / ${fmt(end.changes.pairs - start.changes.pairs)} / ${fmt(end.changes.everything - start.changes.everything)}`,
      ],
    ],
    ['l', 'r', 'r', 'l'],
  );
  const checkTable = table(
    ['Check', 'Result', 'Detail'],
    checks.map((c) => [c.name, c.ok ? 'ok' : '**FAILED**', c.detail]),
    ['l', 'l', 'l'],
  );

  const command = `${Object.entries(process.env)
    .filter(([k]) => /^(SOAK_|HTTP_ADAPTER$)/.test(k) || (k === 'DATABASE_URL' && process.env.DATABASE_URL))
    .map(([k, v]) => `${k}=${k === 'DATABASE_URL' ? '…' : v} `)
    .join('')}npm run soak`;
  const text = `# Soak: ${passed ? 'all checks passed' : `${checks.filter((c) => !c.ok).length} checks FAILED`}

- Command: \`${command}\`
- Date: ${started.toISOString()}
- Machine: ${os.type()} ${os.release()} (${os.arch()}), ${cpus.length} × ${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${fmt(os.totalmem() / 2 ** 30, 1)} GiB RAM
- Node.js ${process.version}, PostgreSQL ${pgVersion} (${process.env.DATABASE_URL ? 'DATABASE_URL' : 'embedded, on loopback, fsync on'}), ${ADAPTER}
- One module app (bench/app.js, \`TombstoneModule.forRoot()\` defaults, pool max ${pool.max}), ${fmt(D, 1)} s of load from
  ${streams.reduce((n, s) => n + s.connections, 0)} autocannon connections in this process, everything on the same ${cpus.length} CPUs; warm-up: the first ${WARM_UP * 100}%;
  a sample every ${SAMPLE_MS / 1000} s (${samples.length} in all), each after \`global.gc()\` in the app
- Writers meanwhile: the admin loop back to back on flip-0..${FLIP - 1}, an import of 200 to 500 rows every ${IMPORT_EVERY_MS / 1000} s on
  imp-0..${IMP - 1} (one row in ten expiring within 5 to 35 s), a TombstoneService write every ${RECORD_EVERY_MS} ms over IPC on rec-0..${REC - 1}

## HTTP streams

${streamTable}

## Writers

${writerTable}

## Memory of the app

${memoryTable}

## Connections

${connTable}

## Lookup cache

${cacheTable}

## Checks

${checkTable}
`;
  return { text, passed };
}

// ---------------------------------------------------------------------------------------------

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    log(`${signal}: cleaning up`);
    void cleanUp().finally(() => process.exit(130));
  });
}

let passed = false;
try {
  passed = await main();
} catch (error) {
  console.error(error);
} finally {
  await cleanUp();
}
process.exit(passed ? 0 : 1);
