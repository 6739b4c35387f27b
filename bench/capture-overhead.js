// What automatic capture costs the writes of a tracked table, against the same table without
// triggers, measured in the same run. Not a test: timings are printed, never asserted.
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
};

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
const lines = ['| scenario | plain (ms) | captured (ms) | captured / plain |', '|---|---:|---:|---:|'];
for (const [name, run] of Object.entries(scenarios)) {
  const plain = [];
  const captured = [];
  for (let round = 0; round < ROUNDS; round++) {
    // Alternate, so that drift on a shared machine hits both sides alike.
    for (const [table, sink] of round % 2 === 0
      ? [['bench_plain', plain], ['bench_captured', captured]]
      : [['bench_captured', captured], ['bench_plain', plain]]) {
      await reset(table);
      sink.push(await run(table));
    }
  }
  const p = median(plain);
  const c = median(captured);
  lines.push(`| ${name} | ${p.toFixed(1)} | ${c.toFixed(1)} | ${(c / p).toFixed(2)}× |`);
}
const [{ server_version: version }] = await db.query(`SHOW server_version`);
console.log(`PostgreSQL ${version}, median of ${ROUNDS} alternating rounds\n`);
console.log(lines.join('\n'));

await db.destroy();
await server?.stop();
if (dir) rmSync(dir, { recursive: true, force: true });
