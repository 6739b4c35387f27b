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
// that drift on a shared machine hits both alike. Everything listens on 127.0.0.1 only.
import 'reflect-metadata';
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, URL } from 'node:url';
import autocannon from 'autocannon';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import pg from 'pg';
import { DataSource } from 'typeorm';
import { startEmbeddedPostgres } from '#dev/embedded-postgres';
import { TOMBSTONE_ENTITIES, TOMBSTONE_MIGRATIONS, TombstoneModule, TombstoneService } from '../dist/src/index.js';

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
const OUTPUT = process.env.BENCH_OUTPUT ?? 'BENCHMARKS.md';
const ADAPTER = process.env.HTTP_ADAPTER === 'fastify' ? 'fastify' : 'express';
// Tombstones the HTTP scenarios answer from: as many keys as the apps have live items.
const SEEDED_HTTP_KEYS = 1_000;

const started = new Date();
const log = (message) => console.log(`[bench] ${message}`);

// ---------------------------------------------------------------------------------------------
// PostgreSQL: the embedded one (never on 5432, loopback only) unless DATABASE_URL is given; a
// fresh database on it either way, dropped at the end.

let server;
let dir;
let serverUrl = process.env.DATABASE_URL;
const dbName = `tombstones_bench_${randomBytes(4).toString('hex')}`;
let dbUrl;
let dbCreated = false;
const adminSql = async (sql) => {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
};

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
    if (dbCreated) await adminSql(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`).catch(() => undefined);
    await server?.stop().catch(() => undefined);
    if (dir) rmSync(dir, { recursive: true, force: true });
  })());

async function main() {
  if (!serverUrl) {
    dir = mkdtempSync(join(os.tmpdir(), 'tombstones-bench-'));
    log(`starting the embedded PostgreSQL in ${dir}`);
    // Not ephemeral: fsync and synchronous commit stay on, as on a real server.
    server = await startEmbeddedPostgres({ dataDir: join(dir, 'pg') });
    serverUrl = server.url;
  }
  await adminSql(`CREATE DATABASE "${dbName}"`);
  dbCreated = true;
  dbUrl = Object.assign(new URL(serverUrl), { pathname: `/${dbName}` }).toString();

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
  const imports = await importScenario(apps.module, adminToken);
  for (const app of Object.values(apps)) await app.stop();
  const lookups = await lookupScenario();

  const report = render({ pgVersion, http, imports, lookups });
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
    child.once('message', ({ port }) =>
      resolve({
        mode,
        port,
        /** Requests the app received and statements its DataSource ran so far: { requests, total, lookups }. */
        queries: () => ask('queries', 'queries'),
        stop: () =>
          new Promise((done) => {
            child.removeAllListeners('exit');
            child.once('exit', done);
            child.send('stop');
          }),
      }),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// P1 to P3: the same request stream against both apps.

const pick = (prefix, n) => () => `/items/${prefix}${Math.floor(Math.random() * n)}`;
const HTTP_SCENARIOS = [
  { id: 'P1', name: 'live item (200)', path: () => '/items/live', expect: { baseline: 200, module: 200 } },
  { id: 'P2', name: 'deleted item (410 vs plain 404)', path: pick('gone-', SEEDED_HTTP_KEYS), expect: { baseline: 404, module: 410 } },
  { id: 'P2', name: 'moved item (301 vs plain 404)', path: pick('moved-', SEEDED_HTTP_KEYS), expect: { baseline: 404, module: 301 } },
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
    statuses,
    errors: result.errors + result.timeouts,
  };
}

async function httpScenarios(apps) {
  const results = [];
  for (const scenario of HTTP_SCENARIOS) {
    // Warm both apps up (JIT, connection pools) on this scenario's requests only, so that no
    // other scenario's hits are still waiting to be counted when the measured runs start.
    for (const app of [apps.baseline, apps.module]) await drive(app, scenario.path, 1);
    const runs = { baseline: [], module: [] };
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? [apps.baseline, apps.module] : [apps.module, apps.baseline];
      for (const app of order) {
        const before = await app.queries();
        const run = await drive(app, scenario.path, DURATION);
        const after = await app.queries();
        run.queries = after.total - before.total;
        run.lookups = after.lookups - before.lookups;
        run.received = after.requests - before.requests;
        run.unexpected = run.total - (run.statuses[scenario.expect[app.mode]] ?? 0);
        runs[app.mode].push(run);
        log(`${scenario.id} ${scenario.name}, round ${round + 1}, ${app.mode}: ${Math.round(run.rps)} req/s, ${run.queries} queries`);
      }
    }
    results.push({ ...scenario, runs });
  }
  return results;
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
    runs.push({ seconds, rate: IMPORT_ROWS / seconds, queries: after.total - before.total, megabytes: Buffer.byteLength(body) / 1e6 });
    log(`P5 import round ${round + 1}: ${IMPORT_ROWS} rows in ${seconds.toFixed(2)} s`);
  }
  return runs;
}

// ---------------------------------------------------------------------------------------------
// P4: cold lookups with 1,000,000 tombstones, through TombstoneService.resolve() in a Nest
// application context of this process (the HTTP apps are stopped by then).

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

  /** Times each resolve() alone, one after the other; also counts the statements they ran. */
  const timeResolves = async (resourceType, keys) => {
    const before = counter.total;
    const times = [];
    for (const key of keys) {
      const start = process.hrtime.bigint();
      await tombstones.resolve(resourceType, key);
      times.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
    times.sort((a, b) => a - b);
    const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
    return { p50: at(0.5), p99: at(0.99), max: times[times.length - 1], queriesPerLookup: (counter.total - before) / keys.length };
  };
  const randomKeys = (prefix) => Array.from({ length: LOOKUPS }, () => `${prefix}${Math.floor(Math.random() * SEED_ROWS)}`);
  const seeded = await timeResolves(type, randomKeys('key-'));
  const unknown = await timeResolves(type, randomKeys('nope-'));

  // Chains written as successive moves k0→k1, k1→k2, ...: writes collapse them, so a lookup of
  // k0 is one round trip to where the chain ends, whatever its length.
  const chains = [];
  for (const length of [1, 5, 50]) {
    const chainType = `p4-chain-${length}`;
    for (let i = 0; i < length; i++) await tombstones.recordMove(chainType, `k${i}`, `k${i + 1}`);
    const answer = await tombstones.resolve(chainType, 'k0');
    const timing = await timeResolves(chainType, Array.from({ length: 200 }, () => 'k0'));
    chains.push({ length, ...timing, answer: answer.state === 'moved' ? `moved to ${answer.targetKey}` : answer.state });
  }

  // The plan of one lookup of a moved key, exactly as resolve() sends it.
  await tombstones.resolve(type, 'key-10');
  const { query, parameters } = counter.last;
  const plan = (await db.query(`EXPLAIN (ANALYZE, BUFFERS) ${query}`, parameters)).map((row) => row['QUERY PLAN']);
  const executionTime = plan.find((line) => line.startsWith('Execution Time:'))?.slice('Execution Time:'.length).trim() ?? '?';
  return { rows, size, seedSeconds, seeded, unknown, chains, plan, executionTime, sql: query.replace(/\s+/g, ' ').trim(), parameters };
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

function render({ pgVersion, http, imports, lookups }) {
  const cpus = os.cpus();
  const envSet = ['BENCH_DURATION', 'BENCH_CONNECTIONS', 'BENCH_ROUNDS', 'BENCH_SEED_ROWS', 'BENCH_IMPORT_ROWS', 'HTTP_ADAPTER']
    .filter((name) => process.env[name] !== undefined)
    .map((name) => `${name}=${process.env[name]}`);
  const command = [...envSet, 'npm run bench'].join(' ');

  // Per HTTP scenario: medians of the rounds, the ratio of medians, and the range of per-round ratios.
  const summary = http.map((s) => {
    const b = s.runs.baseline;
    const m = s.runs.module;
    const perRound = m.map((run, i) => run.rps / b[i].rps);
    const received = m.reduce((sum, run) => sum + run.received, 0);
    const queries = m.reduce((sum, run) => sum + run.queries, 0);
    const lookups = m.reduce((sum, run) => sum + run.lookups, 0);
    return {
      ...s,
      baseRps: median(b.map((r) => r.rps)),
      modRps: median(m.map((r) => r.rps)),
      baseP99: median(b.map((r) => r.p99)),
      modP99: median(m.map((r) => r.p99)),
      range: [Math.min(...perRound), Math.max(...perRound)],
      queries,
      lookups,
      received,
      queriesPerRequest: queries / received,
      unexpected: [...b, ...m].reduce((sum, run) => sum + run.unexpected + run.errors, 0),
      requests: [...b, ...m].reduce((sum, run) => sum + run.total, 0),
    };
  });
  for (const s of summary) s.ratio = s.modRps / s.baseRps;
  const [live, gone, moved, flood] = summary;
  const importRate = median(imports.map((r) => r.rate));

  const row = (target, measured, goal, outcome, why = '') => `| ${target} | ${measured} | ${goal} | ${outcome} | ${why} |`;
  const why = (met, reason) => (met ? '' : reason);
  const targets = [
    '| Target | Measured | Goal | Outcome | Why missed |',
    '|---|---:|---:|---|---|',
    row('P1 live 200: req/s, module / baseline', ratio(live.ratio), '≥ 0.98×', verdict(live.ratio, 0.98, true),
      why(live.ratio >= 0.98, `no query on this path; the handler's wrapper adds one null check, so the gap is within the noise of a shared machine; per-round ratios ${live.range.map((r) => r.toFixed(2)).join('–')}`)),
    row('P1 live 200: extra queries per request', `${fmt(live.queriesPerRequest, 3)} (${live.queries} in ${fmt(live.received)} requests)`, '0',
      verdict(live.queriesPerRequest, 0, false), why(live.queries === 0, 'statements ran during the live runs: see the lookups column below')),
    row('P2 410 answers: req/s, module / baseline 404', ratio(gone.ratio), '≥ 0.95×', verdict(gone.ratio, 0.95, true),
      why(gone.ratio >= 0.95, 'no cache yet: every 410 is one lookup query')),
    row('P2 301 answers: req/s, module / baseline 404', ratio(moved.ratio), '≥ 0.95×', verdict(moved.ratio, 0.95, true),
      why(moved.ratio >= 0.95, 'no cache yet: every 301 is one lookup query')),
    row('P3 random unknown keys: req/s, module / baseline 404', ratio(flood.ratio), '≥ 0.90×', verdict(flood.ratio, 0.9, true),
      why(flood.ratio >= 0.9, 'no cache or membership filter yet: every miss is one query')),
    row('P3 random unknown keys: queries per 1,000 requests', fmt(flood.queriesPerRequest * 1000, 1), '< 1', verdict(flood.queriesPerRequest * 1000, 1, false),
      why(flood.queriesPerRequest * 1000 < 1, 'no membership filter yet: every unknown key is looked up')),
    row(`P4 cold lookup p99, ${fmt(SEED_ROWS)} tombstones seeded`, `${fmt(lookups.seeded.p99, 2)} ms (p50 ${fmt(lookups.seeded.p50, 2)})`, '≤ 2 ms',
      verdict(lookups.seeded.p99, 2, false),
      why(lookups.seeded.p99 <= 2, `one indexed round trip that PostgreSQL executes in ${lookups.executionTime} (see the plan); the rest is the round trip through pg and TypeORM, and its tail on a machine whose CPUs the benchmark shares`)),
    ...lookups.chains.map((c) =>
      row(`P4 chain of ${c.length}: round trips per lookup`, fmt(c.queriesPerLookup, 2), '1', verdict(c.queriesPerLookup, 1, false),
        why(c.queriesPerLookup <= 1, 'more than one statement per lookup'))),
    row(`P5 bulk import, ${fmt(IMPORT_ROWS)} CSV rows`, `${fmt(importRate)} /s`, '≥ 50,000 /s', verdict(importRate, 50_000, true),
      why(importRate >= 50_000, 'every row is validated in JavaScript, redirects are collapsed against the table, then multi-row statements of 10,000 rows')),
    row('P6 cross-instance invalidation p99', 'not measured: no cache yet', '≤ 100 ms', 'not measured', 'nothing to invalidate until the cache exists'),
  ];

  const httpTable = [
    '| Scenario | Baseline req/s | Module req/s | Module / baseline (rounds) | p99 ms baseline / module | Module statements per request | of which lookups | Unexpected answers |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    ...summary.map((s) =>
      `| ${s.id} ${s.name} | ${fmt(s.baseRps)} | ${fmt(s.modRps)} | ${ratio(s.ratio)} (${s.range.map((r) => r.toFixed(2)).join('–')}) | ${s.baseP99} / ${s.modP99} | ${fmt(s.queriesPerRequest, 3)} | ${fmt(s.lookups / s.received, 3)} | ${s.unexpected} of ${fmt(s.requests)} |`),
  ];

  const lookupTable = [
    '| Lookup | p50 ms | p99 ms | max ms | Queries per lookup | Answer |',
    '|---|---:|---:|---:|---:|---|',
    `| ${fmt(LOOKUPS)} random seeded keys | ${fmt(lookups.seeded.p50, 3)} | ${fmt(lookups.seeded.p99, 3)} | ${fmt(lookups.seeded.max, 2)} | ${fmt(lookups.seeded.queriesPerLookup, 2)} | 410 / 404 / 301 |`,
    `| ${fmt(LOOKUPS)} random unknown keys | ${fmt(lookups.unknown.p50, 3)} | ${fmt(lookups.unknown.p99, 3)} | ${fmt(lookups.unknown.max, 2)} | ${fmt(lookups.unknown.queriesPerLookup, 2)} | none |`,
    ...lookups.chains.map((c) =>
      `| chain of ${c.length} move${c.length > 1 ? 's' : ''} (200 lookups of its first key) | ${fmt(c.p50, 3)} | ${fmt(c.p99, 3)} | ${fmt(c.max, 2)} | ${fmt(c.queriesPerLookup, 2)} | ${c.answer} |`),
  ];

  const importTable = [
    '| Round | Seconds | Tombstones/s | Statements | Body MB |',
    '|---:|---:|---:|---:|---:|',
    ...imports.map((r, i) => `| ${i + 1} | ${fmt(r.seconds, 2)} | ${fmt(r.rate)} | ${r.queries} | ${fmt(r.megabytes, 1)} |`),
  ];

  return `# Benchmarks

What \`nestjs-tombstones\` costs a Nest app, against the same app without it, measured in one run
by \`npm run bench\` (\`bench/run.js\`, \`bench/app.js\`). Timings are never asserted by the tests.
This run measures the module **before the lookup cache of issue 5**: every 410, 301 and
unexplained 404 is one query, so P2 and P3 are expected to miss their targets.

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
requests still in flight when a run ends). "Lookups" are its SELECTs on the tombstone table; the
other statements are the hit counts' batched \`UPDATE\`s (on by default, flushed every 10 s, so
one may land in a later run of the same scenario).

## HTTP scenarios (P1 to P3)

${httpTable.join('\n')}

Both apps get the same request stream; "Unexpected answers" counts responses other than 200
(P1), 410 / 301 from the module and 404 from the baseline (P2), and 404 (P3), plus errors.

## P4: lookups with ${fmt(SEED_ROWS)} tombstones seeded

${fmt(lookups.rows)} rows in the table in all, seeded with \`INSERT ... SELECT generate_series\` and \`VACUUM ANALYZE\` in ${fmt(lookups.seedSeconds, 1)} s (table and indexes:
${lookups.size}). Each lookup is \`TombstoneService.resolve()\` alone, one after the other, on a
fresh application context: "cold" means no cache of the module's (it has none yet); PostgreSQL's
buffers are as the seeding left them.

${lookupTable.join('\n')}

The plan of one lookup (a moved key), as \`resolve()\` sends it:

\`\`\`sql
EXPLAIN (ANALYZE, BUFFERS) ${lookups.sql}
-- parameters: ${JSON.stringify(lookups.parameters)}
\`\`\`

\`\`\`
${lookups.plan.join('\n')}
\`\`\`

## P5: bulk import

\`POST /admin/tombstones/import\` with ${fmt(IMPORT_ROWS)} CSV rows (one in ten a move), timed from
the request to the report, into a table that already holds the HTTP scenarios' rows.

${importTable.join('\n')}

## P6: cross-instance invalidation

Not measured: no cache yet, so every instance reads PostgreSQL and there is nothing to invalidate.
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
