// `npm run bench`: what the module costs a Nest app, against the same app without it, measured
// in the same run (issue 5). Not a test: timings are printed and written to BENCHMARKS.md, never
// asserted.
//
//   npm run bench                              (embedded PostgreSQL, Express)
//   BENCH_DURATION=3 npm run bench             (seconds per autocannon run; default 5)
//   HTTP_ADAPTER=fastify npm run bench         (both apps on Fastify)
//   DATABASE_URL=postgres://... npm run bench  (a server of your own; a throw-away database on it)
//
// Other knobs: BENCH_CONNECTIONS (32), BENCH_ROUNDS (3), BENCH_SEED_ROWS (1000000),
// BENCH_IMPORT_ROWS (100000), BENCH_OUTPUT (BENCHMARKS.md).
//
// Two copies of bench/app.js run as child processes, one with the module and one without, and
// autocannon drives them from this process, one at a time, alternating within each scenario so
// that drift on a shared machine hits both alike. For P6 a second module app joins the first on
// the same database. Everything listens on 127.0.0.1 only.
import 'reflect-metadata';
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { Agent, get as httpGet } from 'node:http';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, URL } from 'node:url';
import autocannon from 'autocannon';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import { TOMBSTONE_ENTITIES, TOMBSTONE_MIGRATIONS, TombstoneModule, TombstoneService } from '../dist/src/index.js';
// The cache itself, for warm-lookup timings: not public API.
import { TombstoneLookup } from '../dist/src/cache/tombstone.lookup.js';
import { createBenchDatabase } from './database.js';

const setting = (name, fallback) => {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number`);
  return value;
};
const DURATION = setting('BENCH_DURATION', 5);
const CONNECTIONS = setting('BENCH_CONNECTIONS', 32);
const ROUNDS = setting('BENCH_ROUNDS', 3);
const SEED_ROWS = setting('BENCH_SEED_ROWS', 1_000_000);
const IMPORT_ROWS = setting('BENCH_IMPORT_ROWS', 100_000);
const LOOKUPS = 2_000;
// P6: writes timed, and how long the other instance may take to show one before it counts as lost.
const P6_WRITES = 200;
const P6_TIMEOUT_MS = 5_000;
const OUTPUT = process.env.BENCH_OUTPUT ?? 'BENCHMARKS.md';
const ADAPTER = process.env.HTTP_ADAPTER === 'fastify' ? 'fastify' : 'express';
// Tombstones the HTTP scenarios answer from: as many keys as the apps have live items.
const SEEDED_HTTP_KEYS = 1_000;

const started = new Date();
const log = (message) => console.log(`[bench] ${message}`);

// ---------------------------------------------------------------------------------------------
// PostgreSQL: the embedded one (never on 5432, loopback only) unless DATABASE_URL is given; a
// fresh database on it either way, dropped at the end.

let database;
let dbUrl;

const children = [];
let context;
let db;
let cleaning;
/** Stops and removes everything the run started, once, whether it ends, fails or is interrupted. */
const cleanUp = () =>
  (cleaning ??= (async () => {
    for (const child of children) if (child.connected) child.kill();
    await context?.close().catch(() => undefined);
    await db?.destroy().catch(() => undefined);
    await database?.drop();
  })());

async function main() {
  database = await createBenchDatabase('tombstones_bench', log);
  dbUrl = database.url;

  db = new DataSource({ type: 'postgres', url: dbUrl, entities: [...TOMBSTONE_ENTITIES], migrations: [...TOMBSTONE_MIGRATIONS] });
  await db.initialize();
  await db.runMigrations();
  const [{ server_version: pgVersion }] = await db.query('SHOW server_version');

  // What the 410 and 301 scenarios ask for: `gone-N` deleted, `moved-N` moved to the live
  // `live-N` (bench/app.js holds live-0 .. live-999 in memory).
  await db.query(
    `INSERT INTO tombstones (resource_type, resource_key, kind, reason, alternative)
     SELECT 'item', 'gone-' || g, 'deleted', 'Retired by the benchmark', '/items/live' FROM generate_series(0, $1 - 1) g`,
    [SEEDED_HTTP_KEYS],
  );
  await db.query(
    `INSERT INTO tombstones (resource_type, resource_key, kind, target_key)
     SELECT 'item', 'moved-' || g, 'moved', 'live-' || g FROM generate_series(0, $1 - 1) g`,
    [SEEDED_HTTP_KEYS],
  );

  const adminToken = randomBytes(18).toString('base64url');
  const apps = {
    baseline: await startApp('baseline', adminToken),
    module: await startApp('module', adminToken),
  };
  log(`apps on ${ADAPTER}: baseline :${apps.baseline.port}, module :${apps.module.port}`);

  const http = await httpScenarios(apps);
  await apps.baseline.stop();
  const invalidation = await invalidationScenario(apps.module, adminToken);
  const imports = await importScenario(apps.module, adminToken);
  await apps.module.stop();
  const lookups = await lookupScenario();

  const report = render({ pgVersion, http, invalidation, imports, lookups });
  writeFileSync(OUTPUT, report);
  console.log(`\n${report}`);
  log(`written to ${OUTPUT}`);
}

// ---------------------------------------------------------------------------------------------
// The apps, each in its own process.

function startApp(mode, adminToken) {
  const child = fork(fileURLToPath(new URL('./app.js', import.meta.url)), [], {
    env: { ...process.env, BENCH_MODE: mode, DATABASE_URL: dbUrl, BENCH_ADMIN_TOKEN: adminToken, HTTP_ADAPTER: ADAPTER },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.push(child);
  // One request at a time over IPC, answered by the next message of that kind.
  const ask = (message, field) =>
    new Promise((resolve) => {
      const onMessage = (reply) => {
        if (reply && field in reply) {
          child.off('message', onMessage);
          resolve(reply[field]);
        }
      };
      child.on('message', onMessage);
      child.send(message);
    });
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the ${mode} app exited with code ${code} before it was ready`)));
    child.once('message', ({ port, lookup }) => {
      // Without a coherent cache and a loaded filter the module app would measure its start-up
      // path (every miss a query), not the module as it runs.
      if (mode === 'module' && (lookup?.state !== 'coherent' || !lookup.filter.ready)) {
        child.kill();
        reject(new Error(`the module app's lookup cache is not ready: ${JSON.stringify(lookup)}`));
        return;
      }
      resolve({
        mode,
        port,
        /**
         * Requests the app received, statements its DataSource ran and CPU time its process used
         * so far: { requests, total, lookups, loads, cpuMicros }.
         */
        queries: () => ask('queries', 'queries'),
        /** The module app's `TombstoneLookup.stats()`; `null` for the baseline. */
        stats: () => ask('stats', 'stats'),
        /** Writes the hit counts still waiting (module app). */
        flush: () => ask('flush', 'flushed'),
        /** A write through the module app's TombstoneService: { resolvedAt } (hrtime, ns, as a string) or { error }. */
        write: (write) => ask({ write }, 'written'),
        /** When the module app last heard of a change of `key` (hrtime, ns, as a string), or null. */
        heardAt: (key) => ask({ heard: key }, 'heardAt'),
        stop: () =>
          new Promise((done) => {
            child.removeAllListeners('exit');
            child.once('exit', done);
            child.send('stop');
          }),
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// P1 to P3: the same request stream against both apps.

const pick = (prefix, n) => () => `/items/${prefix}${Math.floor(Math.random() * n)}`;
const every = (prefix, n) => () => Array.from({ length: n }, (_, i) => `/items/${prefix}${i}`);
// `keys`: the paths a scenario asks for, each requested once before its warm-up, so that its
// measured runs see the module's steady state (answers in the store), not first lookups.
const HTTP_SCENARIOS = [
  { id: 'P1', name: 'live item (200)', path: () => '/items/live', expect: { baseline: 200, module: 200 } },
  {
    id: 'P2',
    name: 'deleted item (410 vs plain 404)',
    path: pick('gone-', SEEDED_HTTP_KEYS),
    keys: every('gone-', SEEDED_HTTP_KEYS),
    expect: { baseline: 404, module: 410 },
  },
  {
    id: 'P2',
    name: 'moved item (301 vs plain 404)',
    path: pick('moved-', SEEDED_HTTP_KEYS),
    keys: every('moved-', SEEDED_HTTP_KEYS),
    expect: { baseline: 404, module: 301 },
  },
  {
    id: 'P3',
    name: 'random unknown keys (404)',
    path: () => `/items/unknown-${randomBytes(8).toString('hex')}`,
    expect: { baseline: 404, module: 404 },
  },
];

/** One autocannon run; every request's path comes from `path()`. */
async function drive(app, path, duration) {
  const result = await autocannon({
    url: `http://127.0.0.1:${app.port}`,
    connections: CONNECTIONS,
    duration,
    requests: [{ method: 'GET', setupRequest: (request) => ({ ...request, path: path() }) }],
  });
  const statuses = Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([code, { count }]) => [code, count]));
  return {
    rps: result.requests.total / result.duration,
    total: result.requests.total,
    p50: result.latency.p50,
    p99: result.latency.p99,
    // Bytes autocannon read per response, headers included.
    bytes: result.throughput.total / Math.max(1, result.requests.total),
    statuses,
    errors: result.errors + result.timeouts,
  };
}

async function httpScenarios(apps) {
  const results = [];
  for (const scenario of HTTP_SCENARIOS) {
    // Warm both apps up on this scenario's requests only (every key once, then 1 s of the
    // stream: JIT, connection pools, the module's store), then have the hit counts still
    // waiting (written every 10 s) written, so that none lands in a measured run.
    for (const app of [apps.baseline, apps.module]) {
      if (scenario.keys) {
        const agent = new Agent({ keepAlive: true, maxSockets: 1 });
        for (const path of scenario.keys()) await getOnce(agent, app.port, path);
        agent.destroy();
      }
      await drive(app, scenario.path, 1);
      await app.flush();
    }
    const runs = { baseline: [], module: [] };
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? [apps.baseline, apps.module] : [apps.module, apps.baseline];
      for (const app of order) {
        const before = await app.queries();
        const statsBefore = await app.stats();
        const run = await drive(app, scenario.path, DURATION);
        const after = await app.queries();
        const statsAfter = await app.stats();
        run.queries = after.total - before.total;
        run.lookups = after.lookups - before.lookups;
        run.loads = after.loads - before.loads;
        run.received = after.requests - before.requests;
        run.cpuMicros = after.cpuMicros - before.cpuMicros;
        // Where the module app's misses were answered: its filter, its store, or a query.
        run.answered = statsAfter
          ? Object.fromEntries(['filtered', 'cached', 'queried'].map((field) => [field, statsAfter[field] - statsBefore[field]]))
          : null;
        run.unexpected = run.total - (run.statuses[scenario.expect[app.mode]] ?? 0);
        runs[app.mode].push(run);
        log(
          `${scenario.id} ${scenario.name}, round ${round + 1}, ${app.mode}: ${Math.round(run.rps)} req/s, ${run.queries} queries, ` +
            `${Math.round(run.cpuMicros / run.received)} µs CPU per request`,
        );
      }
    }
    results.push({ ...scenario, runs });
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// P6: cross-instance invalidation. A second module app (B) joins the first (A) on the same
// database; A writes, B must answer the new state. Each write is timed from the instant A's
// TombstoneService call resolved (the change committed) to the first answer of B that shows it.

/** One GET on a keep-alive connection: status, headers, body, and when the response had ended. */
function getOnce(agent, port, path) {
  return new Promise((resolve, reject) => {
    const request = httpGet({ host: '127.0.0.1', port, path, agent, headers: { accept: 'application/json' } }, (response) => {
      const chunks = [];
      response.on('data', (chunk) => chunks.push(chunk));
      response.on('error', reject);
      response.on('end', () =>
        resolve({ status: response.statusCode, location: response.headers.location, body: Buffer.concat(chunks).toString(), at: process.hrtime.bigint() }),
      );
    });
    request.on('error', reject);
  });
}

const reasonOf = (answer) => {
  try {
    return JSON.parse(answer.body).reason;
  } catch {
    return undefined;
  }
};

/**
 * The changes, taken in turn: B holds the old answer of the key (from its filter or its store),
 * A writes, B must answer the new one.
 */
const P6_CASES = [
  {
    name: 'unknown key → 410 (was answered by the filter)',
    key: (i) => `p6-new-${i}`,
    old: (answer) => answer.status === 404,
    write: (i) => ({ op: 'delete', key: `p6-new-${i}`, reason: 'Deleted by P6' }),
    now: (answer) => answer.status === 410,
  },
  {
    name: 'cached 410 → restored (404)',
    key: (i) => `p6-restored-${i}`,
    setup: (i) => ({ op: 'delete', key: `p6-restored-${i}`, reason: 'Deleted by P6' }),
    old: (answer) => answer.status === 410,
    write: (i) => ({ op: 'restore', key: `p6-restored-${i}` }),
    now: (answer) => answer.status === 404,
  },
  {
    name: 'cached 410 → 410 with a new reason',
    key: (i) => `p6-reason-${i}`,
    setup: (i) => ({ op: 'delete', key: `p6-reason-${i}`, reason: 'Old reason' }),
    old: (answer) => answer.status === 410 && reasonOf(answer) === 'Old reason',
    write: (i) => ({ op: 'delete', key: `p6-reason-${i}`, reason: `New reason ${i}` }),
    now: (answer, i) => answer.status === 410 && reasonOf(answer) === `New reason ${i}`,
  },
  {
    name: 'cached 301 → 410 (its target deleted)',
    key: (i) => `p6-from-${i}`,
    setup: (i) => ({ op: 'move', key: `p6-from-${i}`, to: `p6-to-${i}` }),
    old: (answer, i) => answer.status === 301 && answer.location?.endsWith(`/items/p6-to-${i}`),
    write: (i) => ({ op: 'delete', key: `p6-to-${i}`, reason: 'Target deleted by P6' }),
    now: (answer) => answer.status === 410,
  },
];

async function invalidationScenario(writer, adminToken) {
  const reader = await startApp('module', adminToken);
  log(`P6: instance A :${writer.port} writes, instance B :${reader.port} reads`);
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const write = async (change) => {
    const written = await writer.write(change);
    if (written.error) throw new Error(`P6 write ${JSON.stringify(change)} failed: ${written.error}`);
    return written;
  };
  /** GETs on B, back to back, until `accept` holds (or the time is up): the answer and the GETs it took. */
  const until = async (path, accept, timeoutMs) => {
    const start = process.hrtime.bigint();
    for (let polls = 1; ; polls++) {
      const answer = await getOnce(agent, reader.port, path);
      if (accept(answer)) return { answer, polls };
      if (Number(answer.at - start) / 1e6 > timeoutMs) return { answer: null, polls, last: answer };
    }
  };
  try {
    const plan = Array.from({ length: P6_WRITES }, (_, i) => ({ i, scenario: P6_CASES[i % P6_CASES.length] }));
    // What the keys answer before the timed writes, written up front through A.
    for (const { i, scenario } of plan) if (scenario.setup) await write(scenario.setup(i));
    const results = [];
    for (const { i, scenario } of plan) {
      const path = `/items/${scenario.key(i)}`;
      // B answers the old state, and answers it again from memory: its filter or its store.
      const old = await until(path, (answer) => scenario.old(answer, i), P6_TIMEOUT_MS);
      if (!old.answer) throw new Error(`P6: B never answered the old state of ${path}: ${old.last.status} ${old.last.body.slice(0, 200)}`);
      const before = await reader.stats();
      const again = await getOnce(agent, reader.port, path);
      const after = await reader.stats();
      if (!scenario.old(again, i)) throw new Error(`P6: B's answer of ${path} changed before the write: ${again.status}`);
      const from = ['filtered', 'cached', 'queried'].find((field) => after[field] > before[field]) ?? 'none';

      const change = scenario.write(i);
      const written = await write(change);
      const seen = await until(path, (answer) => scenario.now(answer, i), P6_TIMEOUT_MS);
      const resolvedAt = BigInt(written.resolvedAt);
      const ms = seen.answer ? Number(seen.answer.at - resolvedAt) / 1e6 : Infinity;
      // Once seen, the new state must stay: one more GET.
      const stays = seen.answer ? scenario.now(await getOnce(agent, reader.port, path), i) : false;
      // When B's listener handed it the change (of the key written: a redirect's target for the last case).
      const heardAt = await reader.heardAt(change.key);
      const heardMs = heardAt === null ? Infinity : Number(BigInt(heardAt) - resolvedAt) / 1e6;
      results.push({ case: scenario.name, from, ms, heardMs, polls: seen.polls, writeMs: written.ms, stays });
    }
    // What one GET on B costs, for scale: the same keep-alive connection, a key B answers from memory.
    const gets = [];
    for (let n = 0; n < 200; n++) {
      const start = process.hrtime.bigint();
      await getOnce(agent, reader.port, '/items/p6-new-0');
      gets.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
    const lost = results.filter((r) => r.ms === Infinity).length;
    log(`P6: ${results.length} writes, p99 ${fmt(percentiles(results.map((r) => r.ms)).p99, 1)} ms, ${lost} not seen in ${P6_TIMEOUT_MS} ms`);
    return { results, get: percentiles(gets) };
  } finally {
    agent.destroy();
    await reader.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// P5: bulk import through the admin endpoint of the module app.

async function importScenario(app, adminToken) {
  const header = 'scope,type,key,kind,target,permanent,reason,alternative,expiresAt';
  const runs = [];
  for (let round = 0; round < ROUNDS; round++) {
    // A type of its own per round: every row is a new tombstone. One in ten is a move.
    const type = `import-${round}`;
    const lines = [header];
    for (let i = 0; i < IMPORT_ROWS; i++) {
      lines.push(i % 10 === 0 ? `,${type},key-${i},moved,new-${i},,,,` : `,${type},key-${i},deleted,,,Bulk import,,`);
    }
    const body = lines.join('\n');
    const before = await app.queries();
    const start = process.hrtime.bigint();
    const response = await globalThis.fetch(`http://127.0.0.1:${app.port}/admin/tombstones/import`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'text/csv' },
      body,
    });
    const report = await response.json();
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const after = await app.queries();
    if (response.status !== 200 || report.created !== IMPORT_ROWS) {
      throw new Error(`import answered ${response.status}: ${JSON.stringify(report).slice(0, 500)}`);
    }
    runs.push({
      seconds,
      rate: IMPORT_ROWS / seconds,
      // The import's own statements; the filter reloads its notifications start are counted apart.
      queries: after.total - before.total - (after.loads - before.loads),
      loads: after.loads - before.loads,
      cpuSeconds: (after.cpuMicros - before.cpuMicros) / 1e6,
      megabytes: Buffer.byteLength(body) / 1e6,
    });
    log(`P5 import round ${round + 1}: ${IMPORT_ROWS} rows in ${seconds.toFixed(2)} s`);
  }
  return runs;
}

// ---------------------------------------------------------------------------------------------
// P4: lookups with 1,000,000 tombstones in a Nest application context of this process (the HTTP
// apps are stopped by then): the membership filter's load, cold lookups through
// TombstoneService.resolve() (never cached: what a miss of the cache costs), and warm ones
// through TombstoneLookup.resolve(), the path a @Tombstoned route's miss takes.

async function lookupScenario() {
  const type = 'p4-item';
  log(`P4 seeding ${SEED_ROWS.toLocaleString('en-US')} tombstones`);
  const seedStart = process.hrtime.bigint();
  // Eight in ten deleted, one hidden, one moved to a live key.
  await db.query(
    `INSERT INTO tombstones (resource_type, resource_key, kind, target_key, reason)
     SELECT $1, 'key-' || g,
            CASE g % 10 WHEN 0 THEN 'moved' WHEN 1 THEN 'hidden' ELSE 'deleted' END,
            CASE g % 10 WHEN 0 THEN 'live-' || g END,
            CASE WHEN g % 10 > 1 THEN 'Seeded' END
       FROM generate_series(0, $2 - 1) g`,
    [type, SEED_ROWS],
  );
  await db.query('VACUUM ANALYZE tombstones');
  const seedSeconds = Number(process.hrtime.bigint() - seedStart) / 1e9;
  const [{ rows, size }] = await db.query(
    `SELECT count(*)::int AS rows, pg_size_pretty(pg_total_relation_size('tombstones')) AS size FROM tombstones`,
  );

  const counter = new LastQueryLogger();
  class LookupModule {}
  Module({
    imports: [
      TypeOrmModule.forRoot({ type: 'postgres', url: dbUrl, entities: [...TOMBSTONE_ENTITIES], logger: counter }),
      TombstoneModule.forRoot({ hitCounts: false }),
    ],
  })(LookupModule);
  context = await NestFactory.createApplicationContext(LookupModule, { logger: ['error'] });
  const tombstones = context.get(TombstoneService);
  const lookup = context.get(TombstoneLookup);
  // The filter loads from bootstrap on, in the background; the module times its load itself.
  for (let waited = 0; lookup.stats().state === 'waiting' && waited < 15_000; waited += 50) await sleep(50);
  await lookup.loaded();
  const { state, filter } = lookup.stats();
  if (state !== 'coherent' || !filter.ready) throw new Error(`P4: the lookup cache is not ready: ${JSON.stringify(lookup.stats())}`);
  // What it should hold: every live tombstone that is not hidden.
  const [{ listed }] = await db.query(
    `SELECT count(*)::int AS listed FROM tombstones WHERE kind <> 'hidden' AND (expires_at IS NULL OR expires_at > now())`,
  );

  /** Times `call(key)` for each key alone, one after the other; counts the statements and how the cache answered. */
  const time = async (keys, call) => {
    const before = counter.total;
    const statsBefore = lookup.stats();
    const times = [];
    for (const key of keys) {
      const start = process.hrtime.bigint();
      const answer = call(key);
      // TombstoneLookup answers from memory synchronously: no await then.
      if (typeof answer?.then === 'function') await answer;
      times.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
    const statsAfter = lookup.stats();
    return {
      ...percentiles(times),
      queriesPerLookup: (counter.total - before) / keys.length,
      answered: Object.fromEntries(['filtered', 'cached', 'queried'].map((field) => [field, statsAfter[field] - statsBefore[field]])),
    };
  };
  const timeResolves = (type, keys) => time(keys, (key) => tombstones.resolve(type, key));
  const timeLookups = (type, keys) => time(keys, (key) => lookup.resolve(type, key));
  const randomKeys = (prefix) => Array.from({ length: LOOKUPS }, () => `${prefix}${Math.floor(Math.random() * SEED_ROWS)}`);
  const seeded = await timeResolves(type, randomKeys('key-'));
  const unknown = await timeResolves(type, randomKeys('nope-'));
  // For scale: the bare round trip through the same DataSource, and the lookup's own SQL sent
  // as a named prepared statement straight to the DataSource's pg pool, which PostgreSQL plans
  // once per connection instead of at every lookup.
  const roundTrip = await time(
    Array.from({ length: LOOKUPS }, () => 'SELECT 1'),
    (sql) => tombstones.dataSource.query(sql),
  );
  await tombstones.resolve(type, 'key-0');
  const lookupSql = counter.last.query;
  const pool = tombstones.dataSource.driver.master;
  const prepared = await time(randomKeys('key-'), (key) => pool.query({ name: 'bench-p4-lookup', text: lookupSql, values: ['', type, key] }));

  // Warm: one pass over the keys fills the store (or meets the filter), the timed pass repeats it.
  const warmKeys = randomKeys('key-');
  await timeLookups(type, warmKeys);
  const warmSeeded = await timeLookups(type, warmKeys);
  // Unknown keys never asked before; an untimed pass over other unknown keys warms the code path.
  await timeLookups(type, randomKeys('absent-'));
  const warmUnknown = await timeLookups(type, randomKeys('nope-'));

  // Chains written as successive moves k0→k1, k1→k2, ...: writes collapse them, so a lookup of
  // k0 is one round trip to where the chain ends, whatever its length.
  const chains = [];
  for (const length of [1, 5, 50]) {
    const chainType = `p4-chain-${length}`;
    for (let i = 0; i < length; i++) await tombstones.recordMove(chainType, `k${i}`, `k${i + 1}`);
    const answer = await tombstones.resolve(chainType, 'k0');
    const timing = await timeResolves(chainType, Array.from({ length: 200 }, () => 'k0'));
    chains.push({ length, ...timing, answer: answer.state === 'moved' ? `moved to ${answer.target}` : answer.state });
  }

  // The plan of one lookup of a moved key, exactly as resolve() sends it.
  await tombstones.resolve(type, 'key-10');
  const { query, parameters } = counter.last;
  const plan = (await db.query(`EXPLAIN (ANALYZE, BUFFERS) ${query}`, parameters)).map((row) => row['QUERY PLAN']);
  const timing = (label) => plan.find((line) => line.startsWith(`${label}:`))?.slice(label.length + 1).trim() ?? '?';
  const executionTime = timing('Execution Time');
  const planningTime = timing('Planning Time');
  return {
    rows,
    size,
    seedSeconds,
    filter: { ...filter, listed },
    seeded,
    unknown,
    roundTrip,
    prepared,
    warmSeeded,
    warmUnknown,
    chains,
    plan,
    executionTime,
    planningTime,
    sql: query.replace(/\s+/g, ' ').trim(),
    parameters,
  };
}

/** Counts the statements of the lookup DataSource and keeps the last one with its parameters. */
class LastQueryLogger {
  total = 0;
  last = { query: '', parameters: [] };
  logQuery(query, parameters = []) {
    this.total++;
    this.last = { query, parameters };
  }
  logQueryError() {}
  logQuerySlow() {}
  logSchemaBuild() {}
  logMigration() {}
  log() {}
}

// ---------------------------------------------------------------------------------------------
// The report.

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** p50, p95, p99 and max of some timings (a lost one is Infinity, and sorts last). */
function percentiles(values) {
  const sorted = [...values].sort((a, b) => (a === b ? 0 : a - b));
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { p50: at(0.5), p95: at(0.95), p99: at(0.99), max: sorted[sorted.length - 1] };
}

const fmt = (n, digits = 0) => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const ratio = (r) => `${r.toFixed(2)}×`;

/** "met (+3%)" or "missed by 45%": how far the measure is from its target, in its own direction. */
function verdict(measured, target, higherIsBetter) {
  const met = higherIsBetter ? measured >= target : measured <= target;
  if (target === 0) return met ? 'met' : `missed (${fmt(measured, 2)} instead of 0)`;
  const gap = ((measured - target) / target) * 100;
  if (higherIsBetter) return met ? `met (${fmt(gap, 0)}% over)` : `**missed** by ${fmt(-gap, 0)}%`;
  if (met) return gap === 0 ? 'met' : `met (${fmt(-gap, 0)}% under)`;
  return `**missed**: ${fmt(measured / target, 1)}× the limit`;
}

function render({ pgVersion, http, invalidation, imports, lookups }) {
  const cpus = os.cpus();
  const envSet = ['BENCH_DURATION', 'BENCH_CONNECTIONS', 'BENCH_ROUNDS', 'BENCH_SEED_ROWS', 'BENCH_IMPORT_ROWS', 'HTTP_ADAPTER']
    .filter((name) => process.env[name] !== undefined)
    .map((name) => `${name}=${process.env[name]}`);
  const command = [...envSet, 'npm run bench'].join(' ');
  const share = (n, of) => `${fmt(of === 0 ? 0 : (n / of) * 100, 0)}%`;
  const perThousand = (n, of) => fmt((n / of) * 1000, 1);
  const signed = (n, digits = 0) => `${n >= 0 ? '+' : '−'}${fmt(Math.abs(n), digits)}`;
  const sum = (runs, field) => runs.reduce((total, run) => total + run[field], 0);

  // Per HTTP scenario: medians of the rounds, the ratio of medians, and the range of per-round ratios.
  const summary = http.map((s) => {
    const b = s.runs.baseline;
    const m = s.runs.module;
    const perRound = m.map((run, i) => run.rps / b[i].rps);
    const received = sum(m, 'received');
    const queries = sum(m, 'queries');
    return {
      ...s,
      baseRps: median(b.map((r) => r.rps)),
      modRps: median(m.map((r) => r.rps)),
      baseP99: median(b.map((r) => r.p99)),
      modP99: median(m.map((r) => r.p99)),
      range: [Math.min(...perRound), Math.max(...perRound)],
      queries,
      lookups: sum(m, 'lookups'),
      loads: sum(m, 'loads'),
      received,
      queriesPerRequest: queries / received,
      answered: Object.fromEntries(['filtered', 'cached', 'queried'].map((field) => [field, m.reduce((total, run) => total + run.answered[field], 0)])),
      cpu: { baseline: sum(b, 'cpuMicros') / sum(b, 'received'), module: sum(m, 'cpuMicros') / received },
      bytes: { baseline: median(b.map((r) => r.bytes)), module: median(m.map((r) => r.bytes)) },
      unexpected: [...b, ...m].reduce((total, run) => total + run.unexpected + run.errors, 0),
      requests: [...b, ...m].reduce((total, run) => total + run.total, 0),
    };
  });
  for (const s of summary) {
    s.ratio = s.modRps / s.baseRps;
    s.misses = s.answered.filtered + s.answered.cached + s.answered.queried;
  }
  const [live, gone, moved, flood] = summary;

  /** Where a scenario's misses were answered, as the module app counted them. */
  const answeredBy = (s) =>
    s.misses === 0
      ? 'no miss reached the module'
      : `misses answered by the filter ${share(s.answered.filtered, s.misses)}, the store ${share(s.answered.cached, s.misses)}, ` +
        `a query ${share(s.answered.queried, s.misses)}`;
  /** Why the module app served fewer requests than the baseline: what its runs measured. */
  const throughputWhy = (s) => {
    const { baseline, module } = s.cpu;
    const waits =
      s.lookups / s.received < 0.001
        ? `${perThousand(s.lookups, s.received)} lookup queries per 1,000 requests, so no request waited for the database`
        : `${perThousand(s.lookups, s.received)} lookup queries per 1,000 requests, each a round trip its request waited for`;
    const cpu =
      module > baseline * 1.05
        ? `the module app's process used ${fmt(module)} µs of CPU per request against the baseline's ${fmt(baseline)} (${signed(((module - baseline) / baseline) * 100)}%)`
        : `its process used about the CPU per request the baseline's did (${fmt(module)} and ${fmt(baseline)} µs), so the gap is not work of its own`;
    const bytes =
      s.bytes.module > s.bytes.baseline * 1.05
        ? `; its responses are ${fmt(s.bytes.module)} bytes against ${fmt(s.bytes.baseline)}, for autocannon to read on the same CPUs`
        : '';
    return `${answeredBy(s)}; ${waits}; ${cpu}${bytes}; per-round ratios ${s.range.map((r) => r.toFixed(2)).join('–')}`;
  };
  /** The statements a scenario's module runs ran, by kind. */
  const statementsWhy = (s) =>
    `${fmt(s.queries)} statements in ${fmt(s.received)} requests: ${fmt(s.lookups)} lookups (${answeredBy(s)}), ` +
    `${fmt(s.loads)} filter loads, ${fmt(s.queries - s.lookups - s.loads)} other (hit counts)`;

  // P4: the warm path is judged by the slower of its two measures.
  const warmP99 = Math.max(lookups.warmSeeded.p99, lookups.warmUnknown.p99);
  const rt = lookups.roundTrip;
  const pr = lookups.prepared;
  const coldWhy =
    `${fmt(lookups.seeded.queriesPerLookup, 2)} query per lookup, a named prepared statement (PostgreSQL plans it once per connection: ` +
    `${lookups.planningTime} when planned, then executes in ${lookups.executionTime}; see the plan); the tail is the machine's: the same SQL sent ` +
    `straight to the pg pool takes p50 ${fmt(pr.p50, 2)} ms, p99 ${fmt(pr.p99, 2)} ms, and a bare \`SELECT 1\` through the same DataSource ` +
    `p50 ${fmt(rt.p50, 2)} ms, p99 ${fmt(rt.p99, 2)} ms${rt.p99 > 2 ? ' (itself over the limit)' : ''}, on 2 CPUs shared with the rest of the run`;
  const warmWhy = (['warmSeeded', 'warmUnknown'].map((name) => lookups[name]).find((w) => w.p99 === warmP99) ?? lookups.warmSeeded).answered;

  // P5: the round of median rate.
  const importRun = [...imports].sort((a, b) => a.rate - b.rate)[Math.floor(imports.length / 2)];
  const importRate = importRun.rate;

  // P6
  const writes = invalidation.results;
  const p6 = percentiles(writes.map((r) => r.ms));
  const lost = writes.filter((r) => r.ms === Infinity).length;
  const stale = writes.filter((r) => !r.stays).length;
  const slow = writes.filter((r) => r.ms > 100);
  const slowest = [...writes].sort((a, b) => (a.ms === b.ms ? 0 : b.ms - a.ms))[0];
  const heard = percentiles(writes.map((r) => r.heardMs));
  const p6Why =
    `${slow.length} of ${writes.length} writes over 100 ms${lost > 0 ? ` (${lost} not seen within ${fmt(P6_TIMEOUT_MS)} ms)` : ''}; ` +
    `B's listener heard of the changes p50 ${fmt(heard.p50, 1)} ms, p99 ${fmt(heard.p99, 1)} ms after A's call resolved; ` +
    `the slowest write (${slowest.case}) was heard after ${fmt(slowest.heardMs, 1)} ms and seen after ${fmt(slowest.ms, 1)} ms (${slowest.polls} GETs of B, ` +
    `one taking p50 ${fmt(invalidation.get.p50, 2)} ms)` +
    (stale > 0 ? `; ${stale} answered the old state again after the new one` : '');

  const row = (target, measured, goal, outcome, why = '') => `| ${target} | ${measured} | ${goal} | ${outcome} | ${why} |`;
  const why = (met, reason) => (met ? '' : reason);
  const targets = [
    '| Target | Measured | Goal | Outcome | Why missed |',
    '|---|---:|---:|---|---|',
    row('P1 live 200: req/s, module / baseline', ratio(live.ratio), '≥ 0.98×', verdict(live.ratio, 0.98, true), why(live.ratio >= 0.98, throughputWhy(live))),
    row('P1 live 200: extra queries per request', `${fmt(live.queriesPerRequest, 3)} (${live.queries} in ${fmt(live.received)} requests)`, '0',
      verdict(live.queriesPerRequest, 0, false), why(live.queries === 0, statementsWhy(live))),
    row('P2 410 answers: req/s, module / baseline 404', ratio(gone.ratio), '≥ 0.95×', verdict(gone.ratio, 0.95, true), why(gone.ratio >= 0.95, throughputWhy(gone))),
    row('P2 301 answers: req/s, module / baseline 404', ratio(moved.ratio), '≥ 0.95×', verdict(moved.ratio, 0.95, true), why(moved.ratio >= 0.95, throughputWhy(moved))),
    row('P3 random unknown keys: req/s, module / baseline 404', ratio(flood.ratio), '≥ 0.90×', verdict(flood.ratio, 0.9, true), why(flood.ratio >= 0.9, throughputWhy(flood))),
    row('P3 random unknown keys: queries per 1,000 requests', `${fmt(flood.queriesPerRequest * 1000, 1)} (${flood.queries} in ${fmt(flood.received)} requests)`, '< 1',
      verdict(flood.queriesPerRequest * 1000, 1, false), why(flood.queriesPerRequest * 1000 < 1, statementsWhy(flood))),
    row(`P4 cold lookup p99 (TombstoneService.resolve(), uncached: a cache miss), ${fmt(SEED_ROWS)} tombstones seeded`,
      `${fmt(lookups.seeded.p99, 2)} ms (p50 ${fmt(lookups.seeded.p50, 2)})`, '≤ 2 ms', verdict(lookups.seeded.p99, 2, false), why(lookups.seeded.p99 <= 2, coldWhy)),
    row(`P4 warm lookup p99 (TombstoneLookup.resolve()), ${fmt(SEED_ROWS)} tombstones seeded`,
      `${fmt(lookups.warmSeeded.p99 * 1000, 1)} µs seeded keys, ${fmt(lookups.warmUnknown.p99 * 1000, 1)} µs unknown keys`, '≤ 2 ms', verdict(warmP99, 2, false),
      why(warmP99 <= 2, `answered by the filter ${warmWhy.filtered}, the store ${warmWhy.cached}, a query ${warmWhy.queried}`)),
    ...lookups.chains.map((c) =>
      row(`P4 chain of ${c.length}: round trips per lookup`, fmt(c.queriesPerLookup, 2), '1', verdict(c.queriesPerLookup, 1, false),
        why(c.queriesPerLookup <= 1, 'more than one statement per lookup'))),
    row(`P5 bulk import, ${fmt(IMPORT_ROWS)} CSV rows`, `${fmt(importRate)} /s`, '≥ 50,000 /s', verdict(importRate, 50_000, true),
      why(importRate >= 50_000,
        `${fmt(importRun.queries)} statements for ${fmt(IMPORT_ROWS)} rows in ${fmt(importRun.seconds, 2)} s (the median round); ` +
        `the module app's process was on CPU for ${fmt(importRun.cpuSeconds, 2)} s of them (${share(importRun.cpuSeconds, importRun.seconds)}) ` +
        `and off it the rest of the time, while its statements ran in PostgreSQL on the same ${cpus.length} CPUs`)),
    row(`P6 cross-instance invalidation p99, ${writes.length} writes`, `${fmt(p6.p99, 1)} ms (p50 ${fmt(p6.p50, 1)}, max ${fmt(p6.max, 1)})`, '≤ 100 ms',
      lost > 0 || stale > 0 ? `**missed**: ${lost} lost, ${stale} stale again` : verdict(p6.p99, 100, false),
      why(p6.p99 <= 100 && lost === 0 && stale === 0, p6Why)),
  ];

  const httpTable = [
    '| Scenario | Baseline req/s | Module req/s | Module / baseline (rounds) | p99 ms baseline / module | CPU µs per request baseline / module | Bytes per response baseline / module | Module statements per request | of which lookups | Misses answered by filter / store / query | Unexpected answers |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...summary.map((s) =>
      `| ${s.id} ${s.name} | ${fmt(s.baseRps)} | ${fmt(s.modRps)} | ${ratio(s.ratio)} (${s.range.map((r) => r.toFixed(2)).join('–')}) | ${s.baseP99} / ${s.modP99} | ` +
      `${fmt(s.cpu.baseline)} / ${fmt(s.cpu.module)} | ${fmt(s.bytes.baseline)} / ${fmt(s.bytes.module)} | ${fmt(s.queriesPerRequest, 3)} | ${fmt(s.lookups / s.received, 3)} | ` +
      `${fmt(s.answered.filtered)} / ${fmt(s.answered.cached)} / ${fmt(s.answered.queried)} | ${s.unexpected} of ${fmt(s.requests)} |`),
  ];

  const f = lookups.filter;
  const mb = (bytes) => `${fmt(bytes / 1e6, 2)} MB`;
  const filterTable = [
    '| Membership filter | |',
    '|---|---:|',
    `| Load time (\`stats().filter.lastLoadMs\`) | ${fmt(f.lastLoadMs)} ms |`,
    `| Keys loaded | ${fmt(f.keys)} (the table holds ${fmt(f.listed)} live tombstones that are not hidden) |`,
    `| Capacity | ${fmt(f.capacity)} keys |`,
    `| Memory (\`filter.bytes\`) | ${fmt(f.bytes)} bytes (${mb(f.bytes)}) |`,
    `| per million keys loaded | ${mb((f.bytes / f.keys) * 1e6)} |`,
    `| per million keys of capacity | ${mb((f.bytes / f.capacity) * 1e6)} |`,
  ];

  const answeredCell = (a) => `${fmt(a.filtered)} / ${fmt(a.cached)} / ${fmt(a.queried)}`;
  const lookupTable = [
    '| Cold lookup (`TombstoneService.resolve()`) | p50 ms | p99 ms | max ms | Queries per lookup | Answer |',
    '|---|---:|---:|---:|---:|---|',
    `| ${fmt(LOOKUPS)} random seeded keys | ${fmt(lookups.seeded.p50, 3)} | ${fmt(lookups.seeded.p99, 3)} | ${fmt(lookups.seeded.max, 2)} | ${fmt(lookups.seeded.queriesPerLookup, 2)} | 410 / 404 / 301 |`,
    `| ${fmt(LOOKUPS)} random unknown keys | ${fmt(lookups.unknown.p50, 3)} | ${fmt(lookups.unknown.p99, 3)} | ${fmt(lookups.unknown.max, 2)} | ${fmt(lookups.unknown.queriesPerLookup, 2)} | none |`,
    ...lookups.chains.map((c) =>
      `| chain of ${c.length} move${c.length > 1 ? 's' : ''} (200 lookups of its first key) | ${fmt(c.p50, 3)} | ${fmt(c.p99, 3)} | ${fmt(c.max, 2)} | ${fmt(c.queriesPerLookup, 2)} | ${c.answer} |`),
    `| for scale: ${fmt(LOOKUPS)} random seeded keys, the same SQL as a named prepared statement on the DataSource's pg pool | ${fmt(pr.p50, 3)} | ${fmt(pr.p99, 3)} | ${fmt(pr.max, 2)} | 1.00 | 410 / 404 / 301 |`,
    `| for scale: ${fmt(LOOKUPS)} bare \`SELECT 1\` through the same DataSource | ${fmt(rt.p50, 3)} | ${fmt(rt.p99, 3)} | ${fmt(rt.max, 2)} | 1.00 | |`,
  ];
  const warmTable = [
    '| Warm lookup (`TombstoneLookup.resolve()`) | p50 µs | p99 µs | max µs | Queries per lookup | Answered by filter / store / query |',
    '|---|---:|---:|---:|---:|---:|',
    ...[
      [`${fmt(LOOKUPS)} random seeded keys, after one pass over them`, lookups.warmSeeded],
      [`${fmt(LOOKUPS)} random unknown keys, never asked before`, lookups.warmUnknown],
    ].map(([name, w]) =>
      `| ${name} | ${fmt(w.p50 * 1000, 1)} | ${fmt(w.p99 * 1000, 1)} | ${fmt(w.max * 1000, 1)} | ${fmt(w.queriesPerLookup, 3)} | ${answeredCell(w.answered)} |`),
  ];

  const importTable = [
    '| Round | Seconds | Tombstones/s | Statements | App CPU s | Filter load statements | Body MB |',
    '|---:|---:|---:|---:|---:|---:|---:|',
    ...imports.map((r, i) => `| ${i + 1} | ${fmt(r.seconds, 2)} | ${fmt(r.rate)} | ${r.queries} | ${fmt(r.cpuSeconds, 2)} | ${r.loads} | ${fmt(r.megabytes, 1)} |`),
  ];

  const p6Row = (name, results) => {
    const t = percentiles(results.map((r) => r.ms));
    const from = ['filtered', 'cached', 'queried', 'none']
      .map((source) => [source, results.filter((r) => r.from === source).length])
      .filter(([, n]) => n > 0)
      .map(([source, n]) => `${{ filtered: 'filter', cached: 'store', queried: 'query', none: '?' }[source]} ${n}`)
      .join(', ');
    const polls = results.map((r) => r.polls);
    const h = percentiles(results.map((r) => r.heardMs));
    const ms1 = (n) => fmt(Math.abs(n) < 0.05 ? 0 : n, 1);
    return `| ${name} | ${results.length} | ${from} | ${fmt(t.p50, 1)} | ${fmt(t.p95, 1)} | ${fmt(t.p99, 1)} | ${fmt(t.max, 1)} | ` +
      `${ms1(h.p50)} / ${ms1(h.p99)} | ${fmt(polls.reduce((a, b) => a + b, 0) / polls.length, 2)} / ${Math.max(...polls)} | ${results.filter((r) => !r.stays).length} |`;
  };
  const p6Table = [
    '| Change | Writes | B answered the old state from | p50 ms | p95 ms | p99 ms | max ms | B heard it, p50 / p99 ms | GETs of B until seen (mean / max) | Old state again after |',
    '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|',
    ...P6_CASES.map((c) => p6Row(c.name, writes.filter((r) => r.case === c.name))),
    p6Row('**all**', writes),
  ];
  const writeMs = percentiles(writes.map((r) => r.writeMs));

  return `# Benchmarks

What \`nestjs-tombstones\` costs a Nest app, against the same app without it, measured in one run
by \`npm run bench\` (\`bench/run.js\`, \`bench/app.js\`). Timings are never asserted by the tests.
This run measures the module with its **lookup cache** on, as it is by default: a miss of a
\`@Tombstoned\` route is answered by a membership filter of tombstoned keys (a key it does not hold
is a 404 with no query), then by a store of recent answers (an LRU), then by one query. Every
instance keeps both true by listening for the notifications the tombstone table's triggers send
at commit (P6 times it). The module app reports ready only once it listens and its filter has
loaded. The P2 scenarios ask for ${fmt(SEEDED_HTTP_KEYS)} tombstoned keys each, every one requested
once before the warm-up: they measure the steady state of a set of keys that fits in the store,
the cache's best case (the table shows where the misses were answered). What a miss the cache
cannot answer costs is P4's cold lookup.

- Command: \`${command}\`
- Date: ${started.toISOString()}
- Machine: ${os.type()} ${os.release()} (${os.arch()}), ${cpus.length} × ${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${fmt(os.totalmem() / 2 ** 30, 1)} GiB RAM
- Node.js ${process.version}, PostgreSQL ${pgVersion} (${process.env.DATABASE_URL ? 'DATABASE_URL' : 'embedded, on loopback, fsync on'})
- HTTP adapter: ${ADAPTER}; autocannon, ${CONNECTIONS} connections, ${DURATION} s per run, ${ROUNDS} rounds per scenario alternating between the apps (after a 1 s warm-up of each app per scenario)
- The two apps run in separate processes on the same machine as autocannon and PostgreSQL, which
  share its ${cpus.length} CPUs: absolute numbers are this machine's, the ratios are the point. The baseline
  throws a plain \`NotFoundException\` for a miss; the module app has the same handler under
  \`@Tombstoned('item', { param: 'key' })\` and \`TombstoneModule.forRoot()\` with its defaults.

## Targets

${targets.join('\n')}

Ratios are the median module req/s over the median baseline req/s of the same run. Queries are
counted by a TypeORM logger in the module app: every statement its DataSource ran during the runs,
divided by the requests its HTTP server received in them (autocannon's own count leaves out the
requests still in flight when a run ends). "Lookups" are its lookups of keys in the tombstone
table; filter loads are counted apart, and the other statements are the hit counts' batched
\`UPDATE\`s (on by default, written every 10 s; those still waiting after a scenario's warm-up are
written before its measured runs). Where the misses were answered comes from the module app's
\`TombstoneLookup.stats()\`, and CPU time from \`process.cpuUsage()\` of each app's process, both
read before and after each run; bytes per response are what autocannon read, headers included.
The "Why missed" texts are made from these measurements.

## HTTP scenarios (P1 to P3)

${httpTable.join('\n')}

Both apps get the same request stream; "Unexpected answers" counts responses other than 200
(P1), 410 / 301 from the module and 404 from the baseline (P2), and 404 (P3), plus errors.

## P4: lookups with ${fmt(SEED_ROWS)} tombstones seeded

${fmt(lookups.rows)} rows in the table in all, seeded with \`INSERT ... SELECT generate_series\` and \`VACUUM ANALYZE\` in ${fmt(lookups.seedSeconds, 1)} s (table and indexes:
${lookups.size}). The lookups run one after the other in a fresh application context of the
module (its defaults, hit counts off), once its membership filter had loaded:

${filterTable.join('\n')}

**Cold**: \`TombstoneService.resolve()\`, which never uses the cache: one query per lookup, what a
miss the filter and the store cannot answer costs. PostgreSQL's buffers are as the seeding left them.
The two rows "for scale" take that query apart: the same prepared statement sent straight to the
DataSource's pg pool (what the module sends, without the module around it), and a bare round trip.

${lookupTable.join('\n')}

**Warm**: \`TombstoneLookup.resolve()\`, the path a \`@Tombstoned\` route's miss takes. Seeded keys
are timed on a second pass over the same random keys (hidden ones, one in ten, are not in the
filter and are answered by it); unknown keys are new ones, after an untimed pass over other
unknown keys. An answer from memory is returned without a promise.

${warmTable.join('\n')}

The plan of one cold lookup (a moved key), as \`resolve()\` sends it:

\`\`\`sql
EXPLAIN (ANALYZE, BUFFERS) ${lookups.sql}
-- parameters: ${JSON.stringify(lookups.parameters)}
\`\`\`

\`\`\`
${lookups.plan.join('\n')}
\`\`\`

## P5: bulk import

\`POST /admin/tombstones/import\` with ${fmt(IMPORT_ROWS)} CSV rows (one in ten a move), timed from
the request to the report, into a table that already holds the HTTP scenarios' rows. "Filter
load statements" are the module app's reloads of its filter after the import's notifications
(too many keys to list), counted apart from the import's own statements.

${importTable.join('\n')}

## P6: cross-instance invalidation

Two module apps on the same database, each with its own listening connection: A (the module app
of P1 to P3) writes, B (started for this) answers. The keys are prepared first through A: deleted,
or moved to a key of their own. Then, for each of ${writes.length} writes in turn, the four changes
taking turns:

1. B is asked for the key until it answers the old state, then once more: that answer must come
   from B's filter or store (read from B's \`stats()\`; the column below says which);
2. A writes through its \`TombstoneService\` (\`recordDeletion()\`, \`restore()\`), asked over IPC,
   and notes with \`process.hrtime\` (the machine's monotonic clock, shared by its processes) the
   instant the call resolved, the change committed;
3. this process asks B for the key with back-to-back GETs on one keep-alive connection until it
   answers the new state. The time is from that instant to the end of B's first correct
   response, so it includes at least one GET; a write not seen within ${fmt(P6_TIMEOUT_MS)} ms would count
   as lost (infinite). One more GET must then answer the new state too.

B hears of A's writes only through PostgreSQL's notifications: its store would keep the old
answers for minutes. "B heard it" is when B's listener handed the change to its
\`TombstoneLookup.invalidate()\` (watched by bench/app.js), from the same instant; negative when
the notification reached B before A's own call had resolved. A's writes took p50 ${fmt(writeMs.p50, 1)} ms, p99 ${fmt(writeMs.p99, 1)} ms; one GET of B takes
p50 ${fmt(invalidation.get.p50, 2)} ms, p99 ${fmt(invalidation.get.p99, 2)} ms (200 GETs of a key B answers from memory).

${p6Table.join('\n')}
`;
}

// ---------------------------------------------------------------------------------------------

// Ctrl-C stops the apps, drops the database and stops the embedded server too.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    log(`${signal}: cleaning up`);
    void cleanUp().finally(() => process.exit(130));
  });
}

try {
  await main();
} finally {
  await cleanUp();
}
