// What automatic capture costs the writes of a tracked table, against the same table without
// triggers, and what the events outbox adds to captured writes (one event sink registered, so
// every tombstone written also writes its event and a delivery), measured in the same run. Not a
// test: timings are printed, never asserted.
//
//   npm run bench:capture                       (embedded PostgreSQL)
//   DATABASE_URL=postgres://... npm run bench:capture
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataSource } from 'typeorm';
import { startEmbeddedPostgres } from '#dev/embedded-postgres';
import { installTombstoneCapture, TOMBSTONE_ENTITIES, TOMBSTONE_MIGRATIONS } from '../dist/src/index.js';

const ROWS = 10_000;
const SINGLE = 2_000;
const ROUNDS = 3;

let server;
let dir;
let url = process.env.DATABASE_URL;
if (!url) {
  dir = mkdtempSync(join(tmpdir(), 'tombstones-bench-'));
  server = await startEmbeddedPostgres({ dataDir: join(dir, 'pg'), ephemeral: true });
  url = server.url;
}

const db = new DataSource({ type: 'postgres', url, entities: [...TOMBSTONE_ENTITIES], migrations: [...TOMBSTONE_MIGRATIONS] });
await db.initialize();
await db.runMigrations();
for (const table of ['bench_plain', 'bench_captured']) {
  await db.query(`DROP TABLE IF EXISTS ${table}`);
  await db.query(`CREATE TABLE ${table} (id serial PRIMARY KEY, slug text UNIQUE, title text, deleted_at timestamptz)`);
}
const runner = db.createQueryRunner();
await installTombstoneCapture(runner, {
  v: 1,
  table: 'bench_captured',
  soft: 'deleted_at',
  keys: [{ type: 'bench', column: 'slug', scope: null, onDelete: 'deleted', reuse: 'allow', permanent: true }],
});
await runner.release();

const time = async (fn) => {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e6;
};
const fill = (table) =>
  db.query(`INSERT INTO ${table} (slug, title) SELECT 'row-' || g, 't' FROM generate_series(1, ${ROWS}) g`);
const reset = async (table) => {
  await db.query(`TRUNCATE ${table}`);
  await db.query(`DELETE FROM tombstones`);
  await db.query(`TRUNCATE tombstone_event_deliveries, tombstone_events, tombstone_event_sinks`);
};
/** The three ways a write is measured: no triggers; capture; capture with the outbox writing events for one sink. */
const VARIANTS = [
  { name: 'plain', table: 'bench_plain', sinks: 0 },
  { name: 'captured', table: 'bench_captured', sinks: 0 },
  { name: 'captured + outbox', table: 'bench_captured', sinks: 1 },
];

const scenarios = {
  [`bulk INSERT of ${ROWS} rows`]: async (table) => time(() => fill(table)),
  [`bulk DELETE of ${ROWS} rows`]: async (table) => {
    await fill(table);
    return time(() => db.query(`DELETE FROM ${table}`));
  },
  [`bulk rename of ${ROWS} rows`]: async (table) => {
    await fill(table);
    return time(() => db.query(`UPDATE ${table} SET slug = slug || '-v2'`));
  },
  [`bulk soft delete of ${ROWS} rows`]: async (table) => {
    await fill(table);
    return time(() => db.query(`UPDATE ${table} SET deleted_at = now()`));
  },
  [`bulk UPDATE of a non-key column, ${ROWS} rows`]: async (table) => {
    await fill(table);
    return time(() => db.query(`UPDATE ${table} SET title = 'changed'`));
  },
  [`${SINGLE} single-row UPDATEs of a non-key column`]: async (table) => {
    await fill(table);
    return time(async () => {
      for (let i = 1; i <= SINGLE; i++) await db.query(`UPDATE ${table} SET title = $1 WHERE id = $2`, ['x', i]);
    });
  },
  [`${SINGLE} single-row DELETEs`]: async (table) => {
    await fill(table);
    const [{ min }] = await db.query(`SELECT min(id) AS min FROM ${table}`);
    return time(async () => {
      for (let i = 0; i < SINGLE; i++) await db.query(`DELETE FROM ${table} WHERE id = $1`, [min + i]);
    });
  },
};

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const lines = [
  '| scenario | plain (ms) | captured (ms) | captured + outbox (ms) | captured / plain | captured + outbox / captured |',
  '|---|---:|---:|---:|---:|---:|',
];
for (const [name, run] of Object.entries(scenarios)) {
  const times = VARIANTS.map(() => []);
  for (let round = 0; round < ROUNDS; round++) {
    // Each variant in each place in turn, so that drift on a shared machine hits all alike.
    for (let i = 0; i < VARIANTS.length; i++) {
      const v = (i + round) % VARIANTS.length;
      const { table, sinks } = VARIANTS[v];
      await reset(table);
      if (sinks > 0) await db.query(`INSERT INTO tombstone_event_sinks (name) SELECT 'bench-' || g FROM generate_series(1, $1) g`, [sinks]);
      times[v].push(await run(table));
    }
  }
  const [p, c, o] = times.map(median);
  lines.push(`| ${name} | ${p.toFixed(1)} | ${c.toFixed(1)} | ${o.toFixed(1)} | ${(c / p).toFixed(2)}× | ${(o / c).toFixed(2)}× |`);
}
const [{ server_version: version }] = await db.query(`SHOW server_version`);
console.log(`PostgreSQL ${version}, median of ${ROUNDS} alternating rounds\n`);
console.log(lines.join('\n'));

await db.destroy();
await server?.stop();
if (dir) rmSync(dir, { recursive: true, force: true });
