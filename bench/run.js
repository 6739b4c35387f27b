// `npm run bench`: what the module costs a Nest app, measured in the same run (issues 5 and 12)
// against two anchors: the same app without the module, whose handler throws a plain
// NotFoundException, and a hand-written handler that answers byte for byte what the module
// answers, from a Map of the module's own answers. Not a test: timings are printed and written
// to BENCHMARKS.md, never asserted.
//
//   npm run bench                              (embedded PostgreSQL, Express)
//   BENCH_DURATION=3 npm run bench             (seconds per autocannon run; default 5)
//   HTTP_ADAPTER=fastify npm run bench         (all apps on Fastify)
//   DATABASE_URL=postgres://... npm run bench  (a server of your own; a throw-away database on it)
//   BENCH_PROFILE=/tmp/prof npm run bench      (also a CPU profile of the module and hand-written
//                                               apps per scenario, after its measured rounds;
//                                               summarised in /tmp/prof/summary.md)
//
// Other knobs: BENCH_CONNECTIONS (32), BENCH_ROUNDS (7, of the HTTP scenarios), BENCH_IMPORT_ROUNDS
// (3), BENCH_SEED_ROWS (1000000), BENCH_IMPORT_ROWS (100000), BENCH_FLEET (20, instances of P8's
// reconnection), BENCH_OUTPUT (BENCHMARKS.md), BENCH_ONLY=http (P1 to P3 only, their ratios and
// queries per 1,000 requests printed and no report written), BENCH_ONLY=p3 (the same for P3's
// floods only, with and without suggestions), BENCH_ONLY=p4 (P4's lookups only, printed, no HTTP
// app and no report: with BENCH_SEED_ROWS=100000 a quick look). A full run keeps its
// measurements in a JSON file (its path is logged) before it writes the report:
// BENCH_RENDER_FROM=<that file> node bench/run.js writes the report from them again.
//
// Three copies of bench/app.js run as child processes: the module app, the plain app (the same
// routes and DataSource, no module) and the hand-written app. Before any measured run, the
// hand-written app is given the module app's answers, captured from it, and a sample of both
// apps' answers is compared byte for byte; the run stops if they differ. autocannon drives the
// apps from this process, one at a time, alternating within each round so that drift on a shared
// machine hits all alike. For P6 a second module app joins the first on the same database.
// Everything listens on 127.0.0.1 only.
import 'reflect-metadata';
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent, createServer, get as httpGet } from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
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
import { summariseProfiles } from './profile-summary.js';

const setting = (name, fallback) => {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number`);
  return value;
};
const DURATION = setting('BENCH_DURATION', 5);
const CONNECTIONS = setting('BENCH_CONNECTIONS', 32);
const ROUNDS = setting('BENCH_ROUNDS', 7);
const IMPORT_ROUNDS = setting('BENCH_IMPORT_ROUNDS', 3);
const SEED_ROWS = setting('BENCH_SEED_ROWS', 1_000_000);
const IMPORT_ROWS = setting('BENCH_IMPORT_ROWS', 100_000);
const FLEET = setting('BENCH_FLEET', 20);
// P8: starts from the snapshot timed (the median is reported), and rows changed before the last one.
const START_ROUNDS = 3;
const START_CHANGES = 10_000;
const LOOKUPS = 2_000;
// P4: prefix tombstones among the seeded rows (one per 1,000).
const PREFIXES = Math.max(10, Math.floor(SEED_ROWS / 1000));
// P6: writes timed, and how long the other instance may take to show one before it counts as lost.
const P6_WRITES = 200;
const P6_TIMEOUT_MS = 5_000;
// P7: writes timed from commit to the CDN purge request, one at a time and then all at once.
const P7_WRITES = Number(process.env.BENCH_PURGE_WRITES ?? 200);
const P7_TIMEOUT_MS = 10_000;
const OUTPUT = process.env.BENCH_OUTPUT ?? 'BENCHMARKS.md';
const PROFILE_DIR = process.env.BENCH_PROFILE;
// The profiler's sampling interval (µs): fine enough for answers that take 100–300 µs of CPU.
const PROFILE_INTERVAL_MICROS = 100;
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
  if (process.env.BENCH_RENDER_FROM) {
    const report = render(JSON.parse(readFileSync(process.env.BENCH_RENDER_FROM, 'utf8')));
    writeFileSync(OUTPUT, report);
    log(`rendered from ${process.env.BENCH_RENDER_FROM}, written to ${OUTPUT}`);
    return;
  }
  database = await createBenchDatabase('tombstones_bench', log);
  dbUrl = database.url;

  db = new DataSource({ type: 'postgres', url: dbUrl, entities: [...TOMBSTONE_ENTITIES], migrations: [...TOMBSTONE_MIGRATIONS] });
  await db.initialize();
  await db.runMigrations();
  const [{ server_version: pgVersion }] = await db.query('SHOW server_version');

  if (process.env.BENCH_ONLY === 'p4') {
    // A quick look at P4 only (no report, no HTTP apps): e.g. BENCH_SEED_ROWS=100000.
    const lookups = await lookupScenario();
    const line = (name, t) => `${name}: p50 ${t.p50.toFixed(3)} ms, p99 ${t.p99.toFixed(3)} ms, ${t.queriesPerLookup.toFixed(2)} queries per lookup`;
    log(`P4 on PostgreSQL ${pgVersion}, ${lookups.rows} rows`);
    log(line('cold, seeded keys', lookups.seeded));
    log(line('cold, keys under prefix tombstones', lookups.prefixed));
    log(line('cold, unknown keys', lookups.unknown));
    for (const c of lookups.chains) log(line(`cold, chain of ${c.length} (${c.answer})`, c));
    log(line('for scale: the same SQL prepared, straight to the pg pool', lookups.prepared));
    log(line('for scale: SELECT 1 through the DataSource', lookups.roundTrip));
    log(`the plan of a moved key: planning ${lookups.planningTime}, execution ${lookups.executionTime}`);
    log(`unknown path-like keys with ${fmt(lookups.prefixes)} prefix tombstones present: ${fmt(lookups.prefixFlood.queriesPerLookup * 1000, 2)} queries per 1,000 (filter / store / query: ${Object.values(lookups.prefixFlood.answered).join(' / ')})`);
    return;
  }

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
    plain: await startApp('plain', adminToken),
    handwritten: await startApp('handwritten', adminToken),
    module: await startApp('module', adminToken),
  };
  log(`apps on ${ADAPTER}: ${Object.values(apps).map((app) => `${app.mode} :${app.port}`).join(', ')}`);

  // The hand-written app answers with the module app's own answers, checked before any run.
  const anchor = await captureAnswers(apps.module);
  const loaded = await apps.handwritten.load(anchor.answers);
  log(`the hand-written app holds ${loaded} answers captured from the module app, and a 404 template`);
  const check = await verifyAnchor(apps.module, apps.handwritten);
  log(`byte-equality check passed: ${check.sampled} answers of each app compared (${check.normalised.join('; ')})`);

  const only = process.env.BENCH_ONLY;
  const http = await httpScenarios(apps, only === 'p3' ? HTTP_SCENARIOS.filter((s) => s.id === 'P3') : HTTP_SCENARIOS);
  if (only === 'http' || only === 'p3') {
    // A quick look at P1 to P3, or P3 only (no report): the ratios of the medians, and the
    // module app's queries per 1,000 requests, per scenario.
    for (const { id, name, runs } of http) {
      const rps = (mode) => median(runs[mode].map((run) => run.rps));
      const cpu = (mode) => median(runs[mode].map((run) => run.cpuMicros / run.received));
      const anchor = runs.handwritten ? 'handwritten' : 'plain';
      const queries = runs.module.reduce((total, run) => total + run.queries, 0);
      const received = runs.module.reduce((total, run) => total + run.received, 0);
      log(
        `${id} ${name}: module / ${anchor} ${ratio(rps('module') / rps(anchor))}, CPU per request ${cpu('module').toFixed(0)} / ${cpu(anchor).toFixed(0)} µs, ` +
          `module ${((queries / received) * 1000).toFixed(2)} queries per 1,000 requests (${queries} in ${received})`,
      );
    }
    return;
  }
  await apps.plain.stop();
  await apps.handwritten.stop();
  const invalidation = await invalidationScenario(apps.module, adminToken);
  const imports = await importScenario(apps.module, adminToken);
  await apps.module.stop();
  const purges = await purgeScenario(adminToken);
  const lookups = await lookupScenario();
  const starts = await startScenario();

  // Kept before the report is written: a report that fails to render can be rendered again from
  // them (BENCH_RENDER_FROM=<file> node bench/run.js), without measuring again.
  const measured = { pgVersion, http, check, invalidation, imports, lookups, purges, starts };
  const kept = join(os.tmpdir(), `nestjs-tombstones-bench-${Date.now()}.json`);
  try {
    // Plain data only: the measurements also hold what produced them (an app context, a pool).
    const seen = new WeakSet();
    const plain = (_key, value) => {
      if (value === null || typeof value !== 'object') return value;
      const proto = Object.getPrototypeOf(value);
      if (seen.has(value) || (proto !== Object.prototype && proto !== Array.prototype && proto !== null)) return undefined;
      seen.add(value);
      return value;
    };
    writeFileSync(kept, JSON.stringify(measured, plain));
    log(`measurements kept in ${kept}`);
  } catch (error) {
    log(`measurements not kept (${error.message})`);
  }
  const report = render(measured);
  writeFileSync(OUTPUT, report);
  console.log(`\n${report}`);
  log(`written to ${OUTPUT}`);
}

// ---------------------------------------------------------------------------------------------
// The apps, each in its own process.

function startApp(mode, adminToken, env = {}) {
  const child = fork(fileURLToPath(new URL('./app.js', import.meta.url)), [], {
    env: { ...process.env, BENCH_MODE: mode, DATABASE_URL: dbUrl, BENCH_ADMIN_TOKEN: adminToken, HTTP_ADAPTER: ADAPTER, ...env },
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
         * so far, read once no request has arrived for 20 ms: { requests, total, lookups, loads, cpuMicros }.
         */
        queries: () => ask('queries', 'queries'),
        /** The module app's `TombstoneLookup.stats()`; `null` for the others. */
        stats: () => ask('stats', 'stats'),
        /** Hands the hand-written app its answers; resolves to how many keys it holds. */
        load: (answers) => ask({ answers }, 'loaded'),
        /** Starts the app's CPU profiler, or stops it and writes the profile to `file`: { requests } so far. */
        profile: (message) => ask(message, 'profiling'),
        /** Writes the hit counts still waiting (module app). */
        flush: () => ask('flush', 'flushed'),
        /** A write through the module app's TombstoneService: { resolvedAt } (hrtime, ns, as a string) or { error }. */
        write: (write) => ask({ write }, 'written'),
        /** Writes at once, each through the module app's TombstoneService: [{ resolvedAt } or { error }], in order. */
        writeMany: (writes) => ask({ writeMany: writes }, 'writtenMany'),
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
// P1 to P3: the same request stream against each app of a scenario.

const pick = (prefix, n) => () => `/items/${prefix}${Math.floor(Math.random() * n)}`;
const every = (prefix, n) => () => Array.from({ length: n }, (_, i) => `/items/${prefix}${i}`);
const unknownKey = () => `unknown-${randomBytes(8).toString('hex')}`;
// `keys`: the paths a scenario asks for, each requested once before its warm-up, so that its
// measured runs see the module's steady state (answers in the store), not first lookups.
// `apps`: the apps it measures, with the status each must answer.
const HTTP_SCENARIOS = [
  { id: 'P1', name: 'live item (200)', path: () => '/items/live', expect: { plain: 200, module: 200 } },
  {
    id: 'P2',
    name: 'deleted item (410)',
    path: pick('gone-', SEEDED_HTTP_KEYS),
    keys: every('gone-', SEEDED_HTTP_KEYS),
    expect: { plain: 404, handwritten: 410, module: 410 },
  },
  {
    id: 'P2',
    name: 'moved item (301)',
    path: pick('moved-', SEEDED_HTTP_KEYS),
    keys: every('moved-', SEEDED_HTTP_KEYS),
    expect: { plain: 404, handwritten: 301, module: 301 },
  },
  {
    id: 'P3',
    name: 'random unknown keys (404)',
    path: () => `/items/${unknownKey()}`,
    expect: { plain: 404, handwritten: 404, module: 404 },
  },
  // The same flood from browsers, on a route with "did you mean" on: every miss wants
  // suggestions, and the module's budget (suggestions.maxQueriesPerSecond) holds the queries down.
  {
    id: 'P3',
    name: 'random unknown keys, suggestions on, from browsers (404)',
    path: () => `/suggest/items/${unknownKey()}`,
    headers: { accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8' },
    expect: { plain: 404, module: 404 },
  },
];

/** One autocannon run; every request's path comes from `path()`. */
async function drive(app, path, duration, headers = undefined) {
  const result = await autocannon({
    url: `http://127.0.0.1:${app.port}`,
    connections: CONNECTIONS,
    duration,
    ...(headers ? { headers } : {}),
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

/** The apps of a scenario, in round `round`'s order: each takes each place in turn. */
const inTurn = (apps, round) => apps.map((_, i) => apps[(i + round) % apps.length]);

async function httpScenarios(apps, scenarios = HTTP_SCENARIOS) {
  const results = [];
  for (const scenario of scenarios) {
    const measured = Object.keys(scenario.expect).map((mode) => apps[mode]);
    // Warm each app up on this scenario's requests only (every key once, then 1 s of the
    // stream: JIT, connection pools, the module's store), then have the hit counts still
    // waiting (written every 10 s) written, so that none lands in a measured run.
    for (const app of measured) {
      if (scenario.keys) {
        const agent = new Agent({ keepAlive: true, maxSockets: 1 });
        for (const path of scenario.keys()) await getRaw(agent, app.port, path);
        agent.destroy();
      }
      await drive(app, scenario.path, 1, scenario.headers);
      await app.flush();
    }
    const runs = Object.fromEntries(measured.map((app) => [app.mode, []]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const app of inTurn(measured, round)) {
        const before = await app.queries();
        const statsBefore = await app.stats();
        const run = await drive(app, scenario.path, DURATION, scenario.headers);
        const after = await app.queries();
        const statsAfter = await app.stats();
        run.round = round;
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
    const result = { ...scenario, runs };
    if (PROFILE_DIR && scenario.expect.handwritten) result.profiles = await profileScenario(scenario, [apps.module, apps.handwritten]);
    results.push(result);
  }
  if (PROFILE_DIR) {
    const profiled = results.filter((s) => s.profiles).map((s) => ({ name: `${s.id} ${s.name}`, profiles: s.profiles }));
    writeFileSync(join(PROFILE_DIR, 'profiles.json'), JSON.stringify(profiled, null, 2));
    writeFileSync(join(PROFILE_DIR, 'summary.md'), summariseProfiles(profiled));
    log(`CPU profiles and their summary in ${PROFILE_DIR}`);
  }
  return results;
}

/**
 * BENCH_PROFILE: one more run of the scenario per app, after its measured rounds, with the app's
 * CPU profiler on (through the inspector, for that run only). Never part of the numbers reported.
 */
async function profileScenario(scenario, profiled) {
  mkdirSync(PROFILE_DIR, { recursive: true });
  const slug = `${scenario.id}-${scenario.name.replace(/\W+/g, '-').replace(/-+$/, '')}`.toLowerCase();
  const profiles = [];
  for (const app of profiled) {
    const file = join(PROFILE_DIR, `${slug}.${app.mode}.cpuprofile`);
    const before = await app.profile({ profile: 'start', intervalMicros: PROFILE_INTERVAL_MICROS });
    await drive(app, scenario.path, DURATION);
    const after = await app.profile({ profile: 'stop', file });
    profiles.push({ mode: app.mode, file, requests: after.requests - before.requests, cpuMicros: after.cpuMicros - before.cpuMicros });
    log(`${scenario.id} ${scenario.name}: profile of the ${app.mode} app in ${file}`);
  }
  return profiles;
}

// ---------------------------------------------------------------------------------------------
// The hand-written anchor: the module app's answers, captured from it and replayed by the
// hand-written app, checked byte for byte against the module's before any measured run.

/**
 * Headers that Express or Node write on their own (`res.send()`, the HTTP server), not the
 * handler: the hand-written handler sets every other header of the module's answer, in its order.
 */
const FRAMEWORK_HEADERS = new Set(['x-powered-by', 'content-length', 'etag', 'date', 'connection', 'keep-alive', 'transfer-encoding']);

/**
 * One GET with exactly the request headers autocannon sends (Host, Connection: keep-alive): the
 * status, the headers as sent (names as written, in order) and the body's bytes.
 */
function getRaw(agent, port, path) {
  return new Promise((resolve, reject) => {
    const request = httpGet({ host: '127.0.0.1', port, path, agent }, (response) => {
      const chunks = [];
      response.on('data', (chunk) => chunks.push(chunk));
      response.on('error', reject);
      response.on('end', () => {
        const headers = [];
        for (let i = 0; i < response.rawHeaders.length; i += 2) headers.push([response.rawHeaders[i], response.rawHeaders[i + 1]]);
        resolve({ status: response.statusCode, headers, body: Buffer.concat(chunks) });
      });
    });
    request.on('error', reject);
  });
}

/** The request id of an answer: the body's `requestId`, which one header must carry too. */
function requestIdOf(answer, path) {
  let id;
  try {
    id = JSON.parse(answer.body.toString('utf8')).requestId;
  } catch {
    // no JSON body
  }
  if (typeof id !== 'string' || id.length < 8) throw new Error(`anchor: the answer of ${path} has no requestId in its body: ${answer.body.toString('utf8').slice(0, 300)}`);
  const carriers = answer.headers.filter(([, value]) => value === id);
  if (carriers.length !== 1) throw new Error(`anchor: ${carriers.length} headers of the answer of ${path} carry its request id ${id}, not one`);
  return { id, header: carriers[0][0].toLowerCase() };
}

/** `text` as parts: strings, and slots where the request id (0) or the key (1) stood. */
function partsOf(text, requestId, key) {
  const parts = [];
  text.split(requestId).forEach((piece, i) => {
    if (i > 0) parts.push(0);
    (key === undefined ? [piece] : piece.split(key)).forEach((bit, j) => {
      if (j > 0) parts.push(1);
      if (bit !== '') parts.push(bit);
    });
  });
  return parts;
}

/** What the hand-written handler needs to write `answer` again: status, its own headers in order, body. */
function templateOf(answer, path, key) {
  const text = answer.body.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(answer.body)) throw new Error(`anchor: the body of ${path} is not UTF-8`);
  const { id } = requestIdOf(answer, path);
  return {
    status: answer.status,
    headers: answer.headers.filter(([name]) => !FRAMEWORK_HEADERS.has(name.toLowerCase())).map(([name, value]) => [name, partsOf(value, id, key)]),
    body: partsOf(text, id, key),
  };
}

/** Every seeded key's answer from the module app, and a 404 template from an unknown key's. */
async function captureAnswers(module) {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const byKey = [];
    for (const prefix of ['gone-', 'moved-']) {
      for (let i = 0; i < SEEDED_HTTP_KEYS; i++) {
        const key = `${prefix}${i}`;
        const path = `/items/${key}`;
        byKey.push([key, templateOf(await getRaw(agent, module.port, path), path)]);
      }
    }
    const key = unknownKey();
    const notFound = templateOf(await getRaw(agent, module.port, `/items/${key}`), `/items/${key}`, key);
    if (notFound.status !== 404 || !notFound.body.includes(1)) throw new Error(`anchor: the module app answered the unknown key ${key} with ${notFound.status}`);
    return { answers: { byKey, notFound } };
  } finally {
    agent.destroy();
  }
}

/**
 * Asks both apps for a sample of the scenarios' paths and compares their answers: status, header
 * names in order, header values and body bytes, with the request id (in its header and in the
 * body) made the same, and Date and ETag values left out (ETag when Express makes it from a
 * body that holds the request id). Throws at the first difference.
 */
async function verifyAnchor(module, handwritten, perScenario = 50) {
  const paths = HTTP_SCENARIOS.filter((s) => s.expect.handwritten).flatMap((s) => Array.from({ length: perScenario }, () => s.path()));
  const agents = [module, handwritten].map(() => new Agent({ keepAlive: true, maxSockets: 1 }));
  const ids = { module: new Set(), handwritten: new Set() };
  const etags = { present: 0, differing: 0 };
  try {
    const normalise = (answer, path, mode) => {
      const { id, header } = requestIdOf(answer, path);
      if (ids[mode].has(id)) throw new Error(`anchor: the ${mode} app answered two requests with the request id ${id}`);
      ids[mode].add(id);
      const left = new Set(['date', 'etag', header]);
      return {
        status: answer.status,
        names: answer.headers.map(([name]) => name),
        values: answer.headers.map(([name, value]) => (left.has(name.toLowerCase()) ? `<${name.toLowerCase()}>` : value)),
        body: Buffer.from(answer.body.toString('utf8').split(id).join('<request id>'), 'utf8'),
      };
    };
    for (const path of paths) {
      const [m, h] = [
        normalise(await getRaw(agents[0], module.port, path), path, 'module'),
        normalise(await getRaw(agents[1], handwritten.port, path), path, 'handwritten'),
      ];
      const differs = (what, a, b) => {
        throw new Error(
          `anchor: the hand-written app's answer of ${path} differs from the module app's in its ${what}; not measuring.\n` +
            `  module:       ${a}\n  hand-written: ${b}`,
        );
      };
      if (m.status !== h.status) differs('status', m.status, h.status);
      if (m.names.join('\n') !== h.names.join('\n')) differs('header names or their order', m.names.join(', '), h.names.join(', '));
      for (const [i, value] of m.values.entries()) if (value !== h.values[i]) differs(`${m.names[i]} header`, value, h.values[i]);
      if (!m.body.equals(h.body)) differs('body', m.body.toString('utf8'), h.body.toString('utf8'));
    }
    // Is ETag made per response? Two answers of one path from the module app.
    for (const path of paths.slice(0, 10)) {
      const [a, b] = [await getRaw(agents[0], module.port, path), await getRaw(agents[0], module.port, path)];
      const etag = (answer) => answer.headers.find(([name]) => name.toLowerCase() === 'etag')?.[1];
      if (etag(a) !== undefined) etags.present++;
      if (etag(a) !== etag(b)) etags.differing++;
    }
  } finally {
    for (const agent of agents) agent.destroy();
  }
  const normalised = [
    'the request id, in its header and in the body',
    'Date',
    etags.present === 0
      ? 'no ETag was sent'
      : `ETag: ${etags.differing} of ${etags.present} paths asked twice of the module app had a new ETag each time (made from the body, which holds the request id)`,
  ];
  return { sampled: paths.length, normalised };
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
// P7: CDN purge latency. A module app with the events module purges at a generic purge endpoint
// (this process's); each write is timed from the instant its TombstoneService call resolved (the
// change committed, and its event with it) to the arrival of the purge request that names its
// tag. First one write at a time, then P7_WRITES writes at once (a burst: the outbox batches).

async function purgeScenario(adminToken) {
  const arrivals = new Map();
  const waiters = new Map();
  const receiver = createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const at = process.hrtime.bigint();
      try {
        for (const tag of JSON.parse(Buffer.concat(chunks).toString()).tags) {
          if (arrivals.has(tag)) continue;
          arrivals.set(tag, at);
          waiters.get(tag)?.();
        }
      } catch {
        // Counted as never arrived.
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
  });
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${receiver.address().port}/purge`;
  const app = await startApp('module', adminToken, { BENCH_PURGE_URL: url });
  log(`P7: the module app :${app.port} purges at ${url}`);
  const tagOf = (key) => `item/${encodeURIComponent(key)}`;
  /** When the purge of `tag` arrived, or null when it did not within P7_TIMEOUT_MS. */
  const waitFor = async (tag) => {
    if (!arrivals.has(tag)) {
      const timeout = new AbortController();
      await Promise.race([new Promise((resolve) => waiters.set(tag, resolve)), sleep(P7_TIMEOUT_MS, undefined, { signal: timeout.signal }).catch(() => undefined)]);
      timeout.abort();
      waiters.delete(tag);
    }
    return arrivals.get(tag) ?? null;
  };
  const timed = async (key) => {
    const written = await app.write({ op: 'delete', key, reason: 'Deleted by P7' });
    if (written.error) throw new Error(`P7 write of ${key} failed: ${written.error}`);
    return BigInt(written.resolvedAt);
  };
  const latency = (resolvedAt, arrivedAt) => (arrivedAt === null ? Infinity : Number(arrivedAt - resolvedAt) / 1e6);
  try {
    const sequential = [];
    for (let i = 0; i < P7_WRITES; i++) {
      const key = `p7-one-${i}`;
      const resolvedAt = await timed(key);
      sequential.push(latency(resolvedAt, await waitFor(tagOf(key))));
    }
    const keys = Array.from({ length: P7_WRITES }, (_, i) => `p7-burst-${i}`);
    // One message for all: the app starts every write at once and notes when each resolved.
    const resolved = (await app.writeMany(keys.map((key) => ({ op: 'delete', key, reason: 'Deleted by P7' })))).map((written, i) => {
      if (written.error) throw new Error(`P7 write of ${keys[i]} failed: ${written.error}`);
      return BigInt(written.resolvedAt);
    });
    const burst = [];
    for (let i = 0; i < keys.length; i++) burst.push(latency(resolved[i], await waitFor(tagOf(keys[i]))));
    log(`P7: one at a time p99 ${fmt(percentiles(sequential).p99, 1)} ms; burst of ${P7_WRITES} p99 ${fmt(percentiles(burst).p99, 1)} ms`);
    return { sequential, burst };
  } finally {
    await app.stop();
    receiver.close();
    // The app registered its sink: later scenarios must write no events.
    await db.query(`TRUNCATE tombstone_event_deliveries, tombstone_events, tombstone_event_sinks`);
  }
}

// ---------------------------------------------------------------------------------------------
// P5: bulk import through the admin endpoint of the module app.

async function importScenario(app, adminToken) {
  const header = 'scope,type,key,kind,target,permanent,reason,alternative,expiresAt';
  const runs = [];
  for (let round = 0; round < IMPORT_ROUNDS; round++) {
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
  // Prefix tombstones of the same type, one per 1,000 rows (sections of path-like keys): half
  // moved to another section, the rest deleted, and one section in ten of the moved ones with a
  // subsection deleted under it (the longest prefix wins).
  await db.query(
    `INSERT INTO tombstones (resource_type, resource_key, kind, target_key, reason, prefix)
     SELECT $1, 'sec-' || g || '/', CASE WHEN g % 2 = 0 THEN 'moved' ELSE 'deleted' END,
            CASE WHEN g % 2 = 0 THEN 'new-sec-' || g || '/' END, CASE WHEN g % 2 = 1 THEN 'Seeded' END, true
       FROM generate_series(0, $2 - 1) g
     UNION ALL
     SELECT $1, 'sec-' || g || '/old/', 'deleted', NULL, 'Seeded', true
       FROM generate_series(0, $2 - 1, 20) g`,
    [type, PREFIXES],
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
      // The filter read from the table, as before snapshots: P8 measures starts from a snapshot.
      TombstoneModule.forRoot({ hitCounts: false, cache: { filter: { snapshot: false } } }),
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
  // An untimed pass first, as every later pass has had: the lookup's code is compiled and its
  // connections have planned the statement, so the timed pass measures lookups, not warm-up.
  await timeResolves(type, randomKeys('key-'));
  const seeded = await timeResolves(type, randomKeys('key-'));
  // Keys under the prefix tombstones, three segments deep (some under a deleted subsection).
  const prefixedKeys = Array.from({ length: LOOKUPS }, (_, i) => {
    const section = Math.floor(Math.random() * PREFIXES);
    return i % 10 === 0 ? `sec-${section}/old/page-${i}` : `sec-${section}/guide/page-${i}`;
  });
  const prefixed = await timeResolves(type, prefixedKeys);
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
  const prepared = await time(randomKeys('key-'), (key) => pool.query({ name: 'bench-p4-lookup', text: lookupSql, values: ['', type, [key]] }));

  // Warm: one pass over the keys fills the store (or meets the filter), the timed pass repeats it.
  const warmKeys = randomKeys('key-');
  await timeLookups(type, warmKeys);
  const warmSeeded = await timeLookups(type, warmKeys);
  // Unknown keys never asked before; an untimed pass over other unknown keys warms the code path.
  await timeLookups(type, randomKeys('absent-'));
  const warmUnknown = await timeLookups(type, randomKeys('nope-'));
  // The flood with prefix tombstones present: unknown path-like keys, each probed in the filter
  // for itself and its candidate prefixes (three segments: three probes).
  const floodKeys = Array.from({ length: 10 * LOOKUPS }, (_, i) => `nope-${Math.floor(Math.random() * SEED_ROWS)}/${i}/page`);
  const prefixFlood = await timeLookups(type, floodKeys);

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
    prefixed,
    prefixes: PREFIXES,
    prefixFlood,
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
// P8: starting with the P4 table (issue 15). How long a new instance (a Nest application context
// of this process) takes to be ready, listening with its filter loaded, and how many rows of the
// tombstone table it reads: reading the table (`snapshot: false`), storing the first snapshot,
// then from the snapshot and the rows changed since. Then a fleet of instances whose listening
// connections are all cut at once, as when PostgreSQL restarts: what their reloads read.

/** Rows of `tombstones` read so far, as PostgreSQL counts them (sequential and index scans). */
async function tupleReads() {
  const [{ n }] = await db.query(
    `SELECT (seq_tup_read + coalesce(idx_tup_fetch, 0))::bigint AS n FROM pg_stat_user_tables WHERE relid = 'tombstones'::regclass`,
  );
  return Number(n);
}

/**
 * The count once the backends that read have reported. A backend reports when it ends, or up to
 * 10 s after it goes idle: every instance measured is stopped first, and the bench's own
 * connections that read the table are replaced (`freshConnections()`). Taken once two reads 1.2 s
 * apart agree.
 */
async function settledTupleReads() {
  let last = await tupleReads();
  for (let waited = 0; waited < 20_000; waited += 1_200) {
    await sleep(1_200);
    const now = await tupleReads();
    if (now === last) return now;
    last = now;
  }
  return last;
}

/** Ends the bench's own connections, so that what they read is reported now, not counted later. */
async function freshConnections() {
  await db.destroy();
  await db.initialize();
}

/** The version of the stored snapshot (`null`: none). */
async function snapshotVersion() {
  return (await db.query(`SELECT written_xid::text AS version FROM tombstone_filter_snapshots`))[0]?.version ?? null;
}

async function startInstance(filter) {
  class StartModule {}
  Module({
    imports: [
      TypeOrmModule.forRoot({ type: 'postgres', url: dbUrl, entities: [...TOMBSTONE_ENTITIES] }),
      TombstoneModule.forRoot({ hitCounts: false, cache: { filter } }),
    ],
  })(StartModule);
  const begun = process.hrtime.bigint();
  const app = await NestFactory.createApplicationContext(StartModule, { logger: ['error'] });
  const lookup = app.get(TombstoneLookup);
  // Ready: listening, its filter loaded (polled: the load runs in the background).
  for (let waited = 0; !lookup.stats().filter.ready; waited++) {
    if (waited > 120_000) throw new Error(`P8: no filter after 2 minutes: ${JSON.stringify(lookup.stats())}`);
    await sleep(1);
  }
  const readyMs = Number(process.hrtime.bigint() - begun) / 1e6;
  // And whatever it writes after (the snapshot).
  await lookup.loaded();
  const doneMs = Number(process.hrtime.bigint() - begun) / 1e6;
  const { lastLoadMs, lastLoadFrom, lastLoadRows, keys, bytes } = lookup.stats().filter;
  return { app, lookup, readyMs, doneMs, loadMs: lastLoadMs, from: lastLoadFrom, rows: lastLoadRows, keys, bytes };
}

/** One instance started and stopped, with the rows PostgreSQL says it read, and whether it stored the snapshot. */
async function timedStart(filter) {
  const version = await snapshotVersion();
  const before = await settledTupleReads();
  const { app, ...start } = await startInstance(filter);
  await app.close();
  const stored = (await snapshotVersion()) !== version;
  return { ...start, pgRows: (await settledTupleReads()) - before, stored };
}

async function startScenario() {
  await context?.close();
  context = undefined;
  const [{ rows }] = await db.query(`SELECT count(*)::int AS rows FROM tombstones`);
  await freshConnections();
  log(`P8 starts with ${fmt(rows)} tombstones`);
  const table = await timedStart({ snapshot: false });
  await db.query(`DELETE FROM tombstone_filter_snapshots`);
  const first = await timedStart({});
  const fromSnapshot = [];
  for (let round = 0; round < START_ROUNDS; round++) fromSnapshot.push(await timedStart({}));
  // Rows changed since the snapshot: hidden keys of P4 that become deletions.
  const [{ changes }] = await db.query(
    `WITH u AS (UPDATE tombstones SET kind = 'deleted'
                 WHERE id IN (SELECT id FROM tombstones WHERE resource_type = 'p4-item' AND kind = 'hidden' LIMIT $1) RETURNING 1)
     SELECT count(*)::int AS changes FROM u`,
    [START_CHANGES],
  );
  await freshConnections();
  const changed = { ...(await timedStart({})), changes };
  const afterChanged = await timedStart({});
  const fleet = { snapshot: await fleetScenario({}), table: await fleetScenario({ snapshot: false }) };
  return { rows, table, first, fromSnapshot, changed, afterChanged, fleet };
}

/** FLEET instances listening, whose listening connections are cut at once; until all are ready again. */
async function fleetScenario(filter) {
  log(`P8 fleet of ${FLEET} instances (${filter.snapshot === false ? 'snapshot: false' : 'snapshots'})`);
  const instances = [];
  try {
    const before = await settledTupleReads();
    // Started a few at a time.
    for (let i = 0; i < FLEET; i += 5) instances.push(...(await Promise.all(Array.from({ length: Math.min(5, FLEET - i) }, () => startInstance(filter)))));
    const started = instances.reduce((total, instance) => total + instance.rows, 0);
    const down = new Set();
    const cut = process.hrtime.bigint();
    await db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'nestjs-tombstones listener'`);
    // Each reconnects with backoff, then reloads after a random delay up to reloadJitterMs (5 s).
    for (let waited = 0; ; waited += 5) {
      instances.forEach((instance, i) => {
        if (!instance.lookup.stats().filter.ready) down.add(i);
      });
      if (down.size === instances.length && instances.every((instance) => instance.lookup.stats().filter.ready)) break;
      if (waited > 180_000) throw new Error(`P8: the fleet did not reload within 3 minutes (${down.size} of ${instances.length} went down)`);
      await sleep(5);
    }
    const allReadyMs = Number(process.hrtime.bigint() - cut) / 1e6;
    const loads = instances.map((instance) => instance.lookup.stats().filter);
    for (const instance of instances.splice(0)) await instance.app.close();
    return {
      allReadyMs,
      tableReads: loads.filter((load) => load.lastLoadFrom === 'table').length,
      fromSnapshot: loads.filter((load) => load.lastLoadFrom === 'snapshot').length,
      started,
      rows: loads.reduce((total, load) => total + load.lastLoadRows, 0),
      // The starts' reads and the reloads', as PostgreSQL counts them (a live backend reports late).
      pgRows: (await settledTupleReads()) - before,
      loadMs: percentiles(loads.map((load) => load.lastLoadMs)),
    };
  } finally {
    for (const instance of instances) await instance.app.close().catch(() => undefined);
  }
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

function render({ pgVersion, http, check, invalidation, imports, lookups, purges, starts }) {
  const cpus = os.cpus();
  const envSet = ['BENCH_DURATION', 'BENCH_CONNECTIONS', 'BENCH_ROUNDS', 'BENCH_IMPORT_ROUNDS', 'BENCH_SEED_ROWS', 'BENCH_IMPORT_ROWS', 'BENCH_PURGE_WRITES', 'BENCH_FLEET', 'HTTP_ADAPTER']
    .filter((name) => process.env[name] !== undefined)
    .map((name) => `${name}=${process.env[name]}`);
  const command = [...envSet, 'npm run bench'].join(' ');
  const share = (n, of) => `${fmt(of === 0 ? 0 : (n / of) * 100, 0)}%`;
  const perThousand = (n, of) => fmt((n / of) * 1000, 1);
  const signed = (n, digits = 0) => `${n >= 0 ? '+' : '−'}${fmt(Math.abs(n), digits)}`;
  const sum = (runs, field) => runs.reduce((total, run) => total + run[field], 0);
  const answeredCell = (a) => `${fmt(a.filtered)} / ${fmt(a.cached)} / ${fmt(a.queried)}`;

  // Per HTTP scenario and app: medians of the rounds; per pair, the ratio of the medians and the
  // range of the ratios of the runs of one round.
  const summary = http.map((s) => {
    const apps = Object.fromEntries(
      Object.entries(s.runs).map(([mode, runs]) => [
        mode,
        {
          rps: median(runs.map((r) => r.rps)),
          p99: median(runs.map((r) => r.p99)),
          cpu: sum(runs, 'cpuMicros') / sum(runs, 'received'),
          bytes: median(runs.map((r) => r.bytes)),
          queries: sum(runs, 'queries'),
          received: sum(runs, 'received'),
          queriesPerRequest: sum(runs, 'queries') / sum(runs, 'received'),
        },
      ]),
    );
    const versus = (anchor) => {
      if (!s.runs[anchor]) return null;
      const perRound = s.runs.module.map((run) => run.rps / s.runs[anchor].find((other) => other.round === run.round).rps);
      return { ratio: apps.module.rps / apps[anchor].rps, range: [Math.min(...perRound), Math.max(...perRound)], cpu: apps.module.cpu / apps[anchor].cpu - 1 };
    };
    const m = s.runs.module;
    const all = Object.values(s.runs).flat();
    const received = sum(m, 'received');
    const queries = sum(m, 'queries');
    const answered = Object.fromEntries(['filtered', 'cached', 'queried'].map((field) => [field, m.reduce((total, run) => total + run.answered[field], 0)]));
    return {
      ...s,
      apps,
      plain: versus('plain'),
      handwritten: versus('handwritten'),
      queries,
      lookups: sum(m, 'lookups'),
      loads: sum(m, 'loads'),
      received,
      queriesPerRequest: queries / received,
      answered,
      misses: answered.filtered + answered.cached + answered.queried,
      unexpected: all.reduce((total, run) => total + run.unexpected + run.errors, 0),
      requests: all.reduce((total, run) => total + run.total, 0),
    };
  });
  const [live, gone, moved, flood, suggesting] = summary;
  const extraQueries = live.apps.module.queriesPerRequest - live.apps.plain.queriesPerRequest;

  /** Where a scenario's misses were answered, as the module app counted them. */
  const answeredBy = (s) =>
    s.misses === 0
      ? 'no miss reached the module'
      : `misses answered by the filter ${share(s.answered.filtered, s.misses)}, the store ${share(s.answered.cached, s.misses)}, ` +
        `a query ${share(s.answered.queried, s.misses)}`;
  const NAMES = { plain: 'plain app', handwritten: 'hand-written app' };
  /** Why the module app served fewer requests than the `anchor` app: what its runs measured. */
  const throughputWhy = (s, anchor) => {
    const module = s.apps.module;
    const other = s.apps[anchor];
    const waits =
      s.lookups / s.received < 0.001
        ? `${perThousand(s.lookups, s.received)} lookup queries per 1,000 requests, so no request waited for the database`
        : `${perThousand(s.lookups, s.received)} lookup queries per 1,000 requests, each a round trip its request waited for`;
    const cpu =
      module.cpu > other.cpu * 1.05
        ? `the module app's process used ${fmt(module.cpu)} µs of CPU per request against the ${NAMES[anchor]}'s ${fmt(other.cpu)} (${signed(s[anchor].cpu * 100)}%)`
        : `its process used about the CPU per request the ${NAMES[anchor]}'s did (${fmt(module.cpu)} and ${fmt(other.cpu)} µs), so the gap is not work of its own`;
    const bytes =
      module.bytes > other.bytes * 1.05
        ? `; its responses are ${fmt(module.bytes)} bytes against ${fmt(other.bytes)}, for autocannon to read on the same CPUs`
        : '';
    return `${answeredBy(s)}; ${waits}; ${cpu}${bytes}; per-round ratios ${s[anchor].range.map((r) => r.toFixed(2)).join('–')}`;
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

  // P8: the start of median time to ready.
  const snapshotStart = [...starts.fromSnapshot].sort((a, b) => a.readyMs - b.readyMs)[Math.floor(starts.fromSnapshot.length / 2)];
  const startWhy =
    `${fmt(snapshotStart.loadMs)} ms of it loading the filter (one row of ${fmt(snapshotStart.bytes / 1e6, 2)} MB and ${fmt(snapshotStart.rows)} rows changed since), ` +
    `the rest the application context's start, TypeORM's connection and the LISTEN`;
  const fleetWhy = (f) => `${f.tableReads} of ${FLEET} instances read the table (${fmt(f.rows)} rows)`;

  const row = (target, measured, goal, outcome, why = '') => `| ${target} | ${measured} | ${goal} | ${outcome} | ${why} |`;
  const why = (met, reason) => (met ? '' : reason);
  const targets = [
    '| Target | Measured | Goal | Outcome | Why missed |',
    '|---|---:|---:|---|---|',
    row('P1 live 200: req/s, module / plain app (same routes, same DataSource)', ratio(live.plain.ratio), '≥ 0.98×', verdict(live.plain.ratio, 0.98, true),
      why(live.plain.ratio >= 0.98, throughputWhy(live, 'plain'))),
    row('P1 live 200: extra queries per request, module − plain app',
      `${fmt(extraQueries, 3)} (module ${fmt(live.apps.module.queries)} in ${fmt(live.apps.module.received)} requests, plain ${fmt(live.apps.plain.queries)} in ${fmt(live.apps.plain.received)})`, '0',
      verdict(extraQueries, 0, false), why(extraQueries <= 0, statementsWhy(live))),
    ...[
      ['P2 410 answers', gone],
      ['P2 301 answers', moved],
      ['P3 random unknown keys (404)', flood],
    ].map(([name, s]) =>
      row(`${name}: req/s, module / hand-written app`, ratio(s.handwritten.ratio), '≥ 0.95×', verdict(s.handwritten.ratio, 0.95, true),
        why(s.handwritten.ratio >= 0.95, throughputWhy(s, 'handwritten')))),
    row('P3 random unknown keys: queries per 1,000 requests', `${fmt(flood.queriesPerRequest * 1000, 1)} (${flood.queries} in ${fmt(flood.received)} requests)`, '< 1',
      verdict(flood.queriesPerRequest * 1000, 1, false), why(flood.queriesPerRequest * 1000 < 1, statementsWhy(flood))),
    row('P3 random unknown keys from browsers, suggestions on: queries per 1,000 requests',
      `${fmt(suggesting.queriesPerRequest * 1000, 1)} (${suggesting.queries} in ${fmt(suggesting.received)} requests)`, '< 1',
      verdict(suggesting.queriesPerRequest * 1000, 1, false), why(suggesting.queriesPerRequest * 1000 < 1, statementsWhy(suggesting))),
    row(`P4 cold lookup p99 (TombstoneService.resolve(), uncached: a cache miss), ${fmt(SEED_ROWS)} tombstones seeded`,
      `${fmt(lookups.seeded.p99, 2)} ms (p50 ${fmt(lookups.seeded.p50, 2)})`, '≤ 2 ms', verdict(lookups.seeded.p99, 2, false), why(lookups.seeded.p99 <= 2, coldWhy)),
    row(`P4 cold lookup p99 of a key under a prefix tombstone (TombstoneService.resolve()), ${fmt(SEED_ROWS)} tombstones seeded`,
      `${fmt(lookups.prefixed.p99, 2)} ms (p50 ${fmt(lookups.prefixed.p50, 2)}; exact keys: p50 ${fmt(lookups.seeded.p50, 2)}, p99 ${fmt(lookups.seeded.p99, 2)})`, '≤ 2 ms',
      verdict(lookups.prefixed.p99, 2, false), why(lookups.prefixed.p99 <= 2, coldWhy)),
    row(`P4 unknown path-like keys with ${fmt(lookups.prefixes)} prefix tombstones present (TombstoneLookup.resolve()): queries per 1,000`,
      `${fmt(lookups.prefixFlood.queriesPerLookup * 1000, 2)} (${answeredCell(lookups.prefixFlood.answered)})`, '< 1',
      verdict(lookups.prefixFlood.queriesPerLookup * 1000, 1, false), why(lookups.prefixFlood.queriesPerLookup * 1000 < 1, 'filter false positives over the key and its candidate prefixes')),
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
    row(`P8 start from the snapshot with ${fmt(starts.rows)} tombstones: time to ready (listening, filter loaded)`,
      `${fmt(snapshotStart.readyMs)} ms (reading the table instead: ${fmt(starts.table.readyMs)} ms)`, '< 500 ms', verdict(snapshotStart.readyMs, 500, false),
      why(snapshotStart.readyMs < 500, startWhy)),
    row(`P8 start from the snapshot: rows of the tombstone table read`, `${fmt(snapshotStart.pgRows)} (reading the table: ${fmt(starts.table.pgRows)})`, 'not a read of the table',
      snapshotStart.from === 'snapshot' && snapshotStart.pgRows < starts.rows / 10 ? 'met' : '**missed**', why(snapshotStart.from === 'snapshot', `it loaded from ${snapshotStart.from}`)),
    row(`P8 ${FLEET} instances reconnect at once: reads of the whole table`, `${starts.fleet.snapshot.tableReads} (\`snapshot: false\`: ${starts.fleet.table.tableReads})`, '0',
      verdict(starts.fleet.snapshot.tableReads, 0, false), why(starts.fleet.snapshot.tableReads === 0, fleetWhy(starts.fleet.snapshot))),
    ...[['one at a time', purges.sequential], [`a burst of ${purges.burst.length} at once`, purges.burst]].map(([how, values]) => {
      const p7 = percentiles(values);
      const missing = values.filter((ms) => ms === Infinity).length;
      return row(`P7 CDN purge latency p99 (commit → purge request), ${values.length} writes ${how}`, `${fmt(p7.p99, 1)} ms (p50 ${fmt(p7.p50, 1)}, max ${fmt(p7.max, 1)})`, '≤ 1,000 ms',
        missing > 0 ? `**missed**: ${missing} purges never arrived` : verdict(p7.p99, 1000, false),
        why(p7.p99 <= 1000 && missing === 0, `the outbox's worker for the purge sink wakes on the change notification; a burst is delivered in batches of up to 100 events per purge request`));
    }),
  ];

  const startRow = (name, start) =>
    `| ${name} | ${fmt(start.readyMs)} | ${fmt(start.loadMs)} | ${fmt(start.rows)} / ${fmt(start.pgRows)} | ${start.from} | ${start.stored ? `stored (${fmt(start.doneMs)} ms from the start)` : 'unchanged'} |`;
  const startTable = [
    '| Start | Time to ready ms | Filter load ms | Rows of `tombstones` read, module / PostgreSQL | Loaded from | Snapshot |',
    '|---|---:|---:|---:|---|---|',
    startRow('`snapshot: false`: every instance reads the table', starts.table),
    startRow('snapshots on, none stored yet: reads the table, stores the snapshot', starts.first),
    ...starts.fromSnapshot.map((start, i) => startRow(`from the snapshot (${i + 1} of ${starts.fromSnapshot.length})`, start)),
    startRow(`from the snapshot, ${fmt(starts.changed.changes)} rows changed since (hidden keys made deletions)`, starts.changed),
    startRow('the next start', starts.afterChanged),
  ];
  const fleetRow = (name, f) =>
    `| ${name} | ${f.tableReads} | ${f.fromSnapshot} | ${fmt(f.rows)} | ${fmt(f.started)} + ${fmt(f.rows)} / ${fmt(f.pgRows)} | ${fmt(f.loadMs.p50)} / ${fmt(f.loadMs.max)} | ${fmt(f.allReadyMs)} |`;
  const fleetTable = [
    `| ${FLEET} instances reconnect at once | Read the table | Loaded from the snapshot | Rows of \`tombstones\` their reloads read | Rows read by their starts + reloads, module / PostgreSQL | Filter load p50 / max ms | Until all were ready ms |`,
    '|---|---:|---:|---:|---:|---:|---:|',
    fleetRow('snapshots (the default)', starts.fleet.snapshot),
    fleetRow('`snapshot: false`', starts.fleet.table),
  ];

  const MODES = ['plain', 'handwritten', 'module'];
  /** One value per app, in MODES order; — for an app the scenario does not measure. */
  const perApp = (s, value) => MODES.map((mode) => (s.apps[mode] ? value(s.apps[mode]) : '—')).join(' / ');
  const versusCell = (pair) => (pair ? `${ratio(pair.ratio)} (${pair.range.map((r) => r.toFixed(2)).join('–')})` : '—');
  const cpuCell = (pair) => (pair ? `${signed(pair.cpu * 100)}%` : '—');
  const httpTable = [
    '| Scenario | req/s plain | req/s hand-written | req/s module | Module / hand-written (rounds) | Module / plain (rounds) | CPU µs per request plain / hand-written / module | Module CPU per request over hand-written / plain |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    ...summary.map((s) =>
      `| ${s.id} ${s.name} | ${MODES.map((mode) => (s.apps[mode] ? fmt(s.apps[mode].rps) : '—')).join(' | ')} | ${versusCell(s.handwritten)} | ${versusCell(s.plain)} | ` +
      `${perApp(s, (a) => fmt(a.cpu))} | ${cpuCell(s.handwritten)} / ${cpuCell(s.plain)} |`),
  ];
  const detailTable = [
    '| Scenario | p99 ms plain / hand-written / module | Bytes per response plain / hand-written / module | Statements per request plain / hand-written / module | Module lookups per request | Misses answered by filter / store / query | Unexpected answers |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...summary.map((s) =>
      `| ${s.id} ${s.name} | ${perApp(s, (a) => a.p99)} | ${perApp(s, (a) => fmt(a.bytes))} | ${perApp(s, (a) => fmt(a.queriesPerRequest, 3))} | ${fmt(s.lookups / s.received, 3)} | ` +
      `${fmt(s.answered.filtered)} / ${fmt(s.answered.cached)} / ${fmt(s.answered.queried)} | ${s.unexpected} of ${fmt(s.requests)} |`),
  ];

  const f = lookups.filter;
  const mb = (bytes) => `${fmt(bytes / 1e6, 2)} MB`;
  const filterTable = [
    '| Membership filter | |',
    '|---|---:|',
    `| Load time (\`stats().filter.lastLoadMs\`), reading the table | ${fmt(f.lastLoadMs)} ms |`,
    `| Keys loaded | ${fmt(f.keys)} (the table holds ${fmt(f.listed)} live tombstones that are not hidden) |`,
    `| Capacity | ${fmt(f.capacity)} keys |`,
    `| Memory (\`filter.bytes\`) | ${fmt(f.bytes)} bytes (${mb(f.bytes)}) |`,
    `| per million keys loaded | ${mb((f.bytes / f.keys) * 1e6)} |`,
    `| per million keys of capacity | ${mb((f.bytes / f.capacity) * 1e6)} |`,
  ];

  const lookupTable = [
    '| Cold lookup (`TombstoneService.resolve()`) | p50 ms | p99 ms | max ms | Queries per lookup | Answer |',
    '|---|---:|---:|---:|---:|---|',
    `| ${fmt(LOOKUPS)} random seeded keys | ${fmt(lookups.seeded.p50, 3)} | ${fmt(lookups.seeded.p99, 3)} | ${fmt(lookups.seeded.max, 2)} | ${fmt(lookups.seeded.queriesPerLookup, 2)} | 410 / 404 / 301 |`,
    `| ${fmt(LOOKUPS)} random keys under ${fmt(lookups.prefixes)} prefix tombstones (three segments; one in ten under a longer deleted prefix) | ${fmt(lookups.prefixed.p50, 3)} | ${fmt(lookups.prefixed.p99, 3)} | ${fmt(lookups.prefixed.max, 2)} | ${fmt(lookups.prefixed.queriesPerLookup, 2)} | 301 / 410 |`,
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
      [`${fmt(10 * LOOKUPS)} random unknown path-like keys (three segments), ${fmt(lookups.prefixes)} prefix tombstones present`, lookups.prefixFlood],
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

What \`nestjs-tombstones\` costs a Nest app, measured in one run by \`npm run bench\`
(\`bench/run.js\`, \`bench/app.js\`) against two anchors: the same app without the module, and a
hand-written handler that answers exactly what the module answers. Timings are never asserted by
the tests. This run measures the module with its **lookup cache** on, as it is by default: a miss of a
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
- HTTP adapter: ${ADAPTER}; autocannon, ${CONNECTIONS} connections, ${DURATION} s per run, ${ROUNDS} rounds per scenario, the apps
  taking turns within each round, each in each place in turn (after a 1 s warm-up of each app per scenario)
- Three apps, each in its own process, on the same machine as autocannon and PostgreSQL, which
  share its ${cpus.length} CPUs: absolute numbers are this machine's, the ratios are the point. All
  three have the same routes and the same TypeORM DataSource (\`bench/app.js\`):
  - **module**: the handler under \`@Tombstoned('item', { param: 'key' })\` and
    \`TombstoneModule.forRoot()\` with its defaults (and the admin endpoints); a miss returns \`null\`,
    as the README teaches;
  - **plain**: the same handler, no module: a miss throws a plain \`NotFoundException\`, as plain
    Nest needs for a 404;
  - **hand-written**: what a user who already knew the module's answers would write, the fair
    anchor for 410, 301 and 404 answers: a handler (\`@Res()\`) that looks the key up in a \`Map\`
    of the module app's own answers (status, headers in order, body), makes a new request id
    (\`randomUUID()\`), splices it into the header and the body where the module puts one, and writes
    them as the module's writer does (Express: \`res.setHeader()\`, then \`res.end()\` with the body's
    length, so neither sends an ETag; Fastify: \`reply.header()\`, \`reply.send()\`). A key it does not hold gets the module's 404, from a template in
    which the key varies.

## Targets

${targets.join('\n')}

Ratios are the median module req/s over the median req/s of the other app in the same run; the
range after them (in the tables) is that of the ratios of the two apps' runs of one round. Queries are
counted by a TypeORM logger in each app: every statement its DataSource ran during the runs,
divided by the requests its HTTP server received in them (autocannon's own count leaves out the
requests still in flight when a run ends). "Lookups" are the module app's lookups of keys in the tombstone
table; filter loads are counted apart, and the other statements are the hit counts' batched
\`UPDATE\`s (on by default, written every 10 s; those still waiting after a scenario's warm-up are
written before its measured runs). Where the misses were answered comes from the module app's
\`TombstoneLookup.stats()\`. CPU time is each app process's own \`process.cpuUsage()\` (user +
system, all its threads), read over IPC before and after each run, each time once no request had
reached it for 20 ms, divided by the requests it received in the run. Bytes per response are what
autocannon read, headers included. The "Why missed" texts are made from these measurements.

## The hand-written anchor

Before any measured run, every one of the ${fmt(2 * SEEDED_HTTP_KEYS)} tombstoned keys the P2 scenarios ask for
was requested from the module app (GET with the headers autocannon sends: \`Host\`, \`Connection\`,
no \`Accept\`, the only variant the scenarios use), and so was one random unknown key, for the 404
template. The hand-written app holds these answers; the headers that Express and Node write
themselves (${[...FRAMEWORK_HEADERS].map((name) => `\`${name}\``).join(', ')}) it leaves to them. Then ${fmt(check.sampled)} requests (${fmt(check.sampled / 3)} each of the P2 and P3 streams) went to both
apps, and their answers were compared: status, header names in order, header values and the body's
bytes. They were equal, apart from what differs between any two answers of the module app itself:
${check.normalised.join('; ')}. The run stops before measuring if they are not.

## HTTP scenarios (P1 to P3)

${httpTable.join('\n')}

${detailTable.join('\n')}

Every app of a scenario gets the same request stream; the hand-written app is measured where the
module app answers from the tombstone table (P2, P3). "Unexpected answers" counts responses other
than 200 (P1), 410 / 301 from the module and hand-written apps and 404 from the plain one (P2), and
404 (P3), plus errors.

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

## P7: CDN purge latency

A module app with \`TombstoneEventsModule.forRoot({ purge: [{ provider: 'http', url }] })\`, where
\`url\` is a generic purge endpoint served by this process, which notes with \`process.hrtime\` when
the first purge request naming each tag arrived. The app deletes keys through its
\`TombstoneService\`, asked over IPC, and notes the instant each call resolved (the change and its
event committed). The latency is from that instant to the purge request's arrival: first
${purges.sequential.length} writes one at a time (each waits for its purge), then ${purges.burst.length} writes at once.
A purge that did not arrive within ${fmt(P7_TIMEOUT_MS)} ms would count as infinite.

## P8: starting with ${fmt(starts.rows)} tombstones

The P4 table, and what it takes an instance to start on it. Each start is a new application
context of the module in this process (its own DataSource and listening connection, hit counts
off), timed from \`createApplicationContext()\` until its filter is ready; the filter load is the
module's own \`stats().filter.lastLoadMs\`, from the start of the load (once it listens) until the
filter is in use. Rows read are what the load read (\`lastLoadRows\`: the table's rows, or the rows
changed since the snapshot) and what PostgreSQL counted for \`tombstones\` (\`seq_tup_read +
idx_tup_fetch\` of \`pg_stat_user_tables\`) from before the start until after the instance had
stopped. A snapshot is one row of \`tombstone_filter_snapshots\`: ${fmt(snapshotStart.bytes / 1e6, 2)} MB of bits here.
P4's own load read the table (\`snapshot: false\`); the first start below has no snapshot to read.

${startTable.join('\n')}

Then ${FLEET} instances listening on the same database (started five at a time, from the snapshot
or the table), whose listening connections were all ended at once (\`pg_terminate_backend\`), as
when PostgreSQL restarts: each reconnects with backoff and reloads its filter after a random delay
of up to \`reloadJitterMs\` (5 s). Timed from the cut until the last one was ready again. The
module counts each load's rows; PostgreSQL's count covers the starts too (a backend that stays
connected reports its counts up to 10 s late, so it is read once the instances have stopped).

${fleetTable.join('\n')}
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
