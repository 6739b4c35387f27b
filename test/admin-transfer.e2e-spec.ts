import { type CanActivate, type ExecutionContext, type INestApplication, Injectable } from '@nestjs/common';
import { RouterModule } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { parse } from 'csv-parse/sync';
import { stringify } from 'csv-stringify/sync';
import request from 'supertest';
import { TombstoneAdminModule } from '../src/admin/index.js';
import { TombstoneModule } from '../src/index.js';
import { ADAPTERS, bootApp } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';
import { QueryCounter } from './support/query-counter.js';

@Injectable()
class TokenGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<{ headers: Record<string, string>; user?: unknown }>();
    if (req.headers.authorization !== 'Bearer t') return false;
    req.user = { id: 'importer' };
    return true;
  }
}

const HEADER = 'scope,type,key,kind,target,permanent,reason,alternative,expiresAt';

describe.each(ADAPTERS)('admin import and export (%s)', (adapter) => {
  let db: TestDatabase;
  let app: INestApplication;
  let http: ReturnType<typeof request>;
  let type: string;
  let n = 0;
  const counter = new QueryCounter();

  beforeAll(async () => {
    db = await createTestDatabase();
    app = await bootApp(adapter, {
      imports: [
        TypeOrmModule.forRoot({ ...db.options(), logging: true, logger: counter }),
        TombstoneModule.forRoot({ isGlobal: true }),
        TombstoneAdminModule.forRoot({
          guard: TokenGuard,
          alternativeHosts: ['shop.example.com'],
          maxImportRows: 120_000,
          maxImportBytes: 8 * 1024 * 1024,
        }),
        RouterModule.register([{ path: 'admin', module: TombstoneAdminModule }]),
      ],
    });
    http = request(app.getHttpServer());
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  beforeEach(() => {
    type = `imp-${adapter}-${++n}`;
  });

  const csv = (lines: string[], query = '') =>
    http.post(`/admin/tombstones/import${query}`).set('authorization', 'Bearer t').set('content-type', 'text/csv').send([HEADER, ...lines].join('\n'));
  const rows = async (t = type) =>
    (
      (await db.sql.query(`SELECT resource_key AS key, kind, target_key AS target, actor FROM tombstones WHERE resource_type = $1 ORDER BY 1`, [
        t,
      ])) as { key: string; kind: string; target: string | null; actor: string | null }[]
    ).map((r) => (r.target ? `${r.key}:${r.kind}:${r.target}` : `${r.key}:${r.kind}`));
  const count = async (t = type) => Number((await db.sql.query(`SELECT count(*) AS n FROM tombstones WHERE resource_type = $1`, [t]))[0].n);

  it('imports 100,000 CSV rows in one request, all or nothing', async () => {
    const lines = Array.from({ length: 100_000 }, (_, i) => `,${type},key-${i},${i % 10 === 0 ? 'moved' : 'deleted'},${i % 10 === 0 ? `key-${i + 1}` : ''},,Bulk,,`);
    const res = await csv(lines).expect(200);
    expect(res.body).toEqual({ dryRun: false, rows: 100_000, created: 100_000, updated: 0, errorCount: 0, errors: [] });
    expect(await count()).toBe(100_000);
    const [row] = await db.sql.query(`SELECT actor, reason FROM tombstones WHERE resource_type = $1 AND resource_key = 'key-5'`, [type]);
    expect(row).toEqual({ actor: 'importer', reason: 'Bulk' });
  });

  it('imports 100,000 NDJSON rows in one request (JSON without the app body limit)', async () => {
    const ndjson = Array.from({ length: 100_000 }, (_, i) => JSON.stringify({ type, key: `nd-${i}`, kind: 'hidden' })).join('\n');
    const res = await http
      .post('/admin/tombstones/import')
      .set('authorization', 'Bearer t')
      .set('content-type', 'application/x-ndjson')
      .send(ndjson)
      .expect(200);
    expect(res.body).toMatchObject({ rows: 100_000, created: 100_000, errorCount: 0 });
    expect(await count()).toBe(100_000);
  });

  it('a dry run reports each invalid row with its line and field, and writes nothing', async () => {
    const res = await csv(
      [
        `,${type},ok,deleted,,,,,`,
        `,${type},,deleted,,,,,`,
        `,${type},m,moved,,,,,`,
        `,${type},d,deleted,x,,,,`,
        `,${type},alt,deleted,,,,https://evil.example/x,`,
        `,${type},p,moved,q,maybe,,,`,
        `,${type},e,deleted,,,,,next week`,
        `,${type},ok,hidden,,,,,`,
      ],
      '?dryRun=true',
    ).expect(200);
    expect(res.body).toMatchObject({ dryRun: true, rows: 8, created: 1, updated: 0, errorCount: 7 });
    expect(res.body.errors.map((e: { row: number; field: string }) => [e.row, e.field])).toEqual([
      [3, 'key'],
      [4, 'target'],
      [5, 'target'],
      [6, 'alternative'],
      [7, 'permanent'],
      [8, 'expiresAt'],
      [9, 'key'],
    ]);
    expect(await count()).toBe(0);
  });

  it('one invalid row and nothing is written: 400 with the report', async () => {
    const res = await csv([`,${type},a,deleted,,,,,`, `,${type},b,vanished,,,,,`]).expect(400);
    expect(res.body).toMatchObject({ statusCode: 400, errorCount: 1, errors: [{ row: 3, field: 'kind' }] });
    expect(res.body.message).toMatch(/nothing was written/);
    expect(await count()).toBe(0);
  });

  it('upserts: a key that has a tombstone is replaced and counted as updated', async () => {
    await csv([`,${type},a,deleted,,,old,,`]).expect(200);
    const res = await csv([`,${type},a,hidden,,,new,,`, `,${type},b,deleted,,,,,`]).expect(200);
    expect(res.body).toMatchObject({ created: 1, updated: 1 });
    expect(await rows()).toEqual(['a:hidden', 'b:deleted']);
  });

  it('collapses chains through the batch and the table, and re-points what led to a key', async () => {
    await csv([`,${type},x,moved,a,,,,`]).expect(200); // x → a, a is live
    const res = await csv([`,${type},a,moved,b,,,,`, `,${type},b,merged,c,,,,`]).expect(200);
    expect(res.body.errorCount).toBe(0);
    expect(await rows()).toEqual(['a:moved:c', 'b:merged:c', 'x:moved:c']);
  });

  it('refuses cycles, in the batch and with the table', async () => {
    const inBatch = await csv([`,${type},a,moved,b,,,,`, `,${type},b,moved,a,,,,`]).expect(400);
    expect(inBatch.body.errors[0].reason).toMatch(/cycle/);
    await csv([`,${type},b,moved,a,,,,`]).expect(200);
    const withTable = await csv([`,${type},a,moved,b,,,,`]).expect(400);
    expect(withTable.body.errors[0]).toMatchObject({ row: 2, field: 'target' });
    expect(await rows()).toEqual(['b:moved:a']);
  });

  it('re-points what the table led to a key the batch redirects, even through a redirect of the table', async () => {
    await csv([`,${type},c,moved,a,,,,`]).expect(200); // c → a, a is live
    // x → c → (table) a, and a → d in the same batch: everything ends on d.
    const res = await csv([`,${type},x,moved,c,,,,`, `,${type},a,moved,d,,,,`]).expect(200);
    expect(res.body).toMatchObject({ created: 2, updated: 0, errorCount: 0 });
    expect(await rows()).toEqual(['a:moved:d', 'c:moved:d', 'x:moved:d']);
  });

  it('a key recorded between the check and the write is replaced, as an upsert', async () => {
    // SHARE mode lets the import read the table, not write it: it checks its keys, then waits.
    const other = db.sql.createQueryRunner();
    await other.connect();
    try {
      await other.startTransaction();
      await other.query('LOCK TABLE tombstones IN SHARE MODE');
      const pending = csv([`,${type},a,deleted,,,Imported,,`, `,${type},b,deleted,,,Imported,,`]).then((res) => res);
      const waiting = async () => {
        await other.query('SELECT pg_stat_clear_snapshot()'); // else a transaction sees the activity of its start
        const [{ n }] = await other.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO tombstones%FROM tombstones_import%'`,
        );
        return n > 0;
      };
      await eventually(async () => expect(await waiting()).toBe(true));
      await other.query(`INSERT INTO tombstones (scope, resource_type, resource_key, kind) VALUES ('', $1, 'a', 'hidden')`, [type]);
      await other.commitTransaction();
      const res = await pending;
      expect(res.status).toBe(200);
    } finally {
      await other.release();
    }
    const [a] = await db.sql.query(`SELECT kind, reason, actor FROM tombstones WHERE resource_type = $1 AND resource_key = 'a'`, [type]);
    expect(a).toEqual({ kind: 'deleted', reason: 'Imported', actor: 'importer' });
    expect(await rows()).toEqual(['a:deleted', 'b:deleted']);
  });

  it('writes any batch in the same few statements, whatever its rows and (scope, type) pairs', async () => {
    // The import's statements: its lock, its temporary table and everything that reads it.
    const statements = () => counter.queries.filter((q) => /tombstones_import|pg_advisory_xact_lock/.test(q)).length;
    counter.reset();
    await csv([`,${type},one,deleted,,,,,`]).expect(200);
    const one = statements();
    counter.reset();
    const lines = Array.from({ length: 20_000 }, (_, i) => `s${i % 7},${type},k${i},${i % 3 ? 'deleted' : 'moved'},${i % 3 ? '' : `t${i}`},,,,`);
    await csv(lines).expect(200);
    expect(statements()).toBe(one);
    expect(one).toBeLessThanOrEqual(5);
    expect(await count()).toBe(20_001);
  });

  it('stores every value as it was sent: tabs, line breaks, backslashes, \\N, quotes, unicode (CSV and NDJSON)', async () => {
    const nasty = [
      'tab\there',
      'new\nline',
      'carriage\rreturn',
      'crlf\r\nend',
      'back\\slash',
      '\\N',
      '\\\\N',
      'N',
      'NULL',
      '\\.',
      '\\',
      'end\\',
      '\\t is not a tab',
      '"quoted", with a comma',
      "it's",
      '  spaced  ',
      'ünïcödé ✓ 😀 עברית \u00a0 \u200b',
    ];
    const records = nasty.map((value, i) => ({ scope: `s${i}-${value}`, key: `k${i}-${value}`, kind: 'moved', target: `t${i}-${value}`, reason: value }));
    // Empty strings: an unscoped key, and an empty reason that is no reason.
    records.push({ scope: '', key: 'plain', kind: 'deleted', target: '', reason: '' });
    const stored = async (t: string) =>
      (
        (await db.sql.query(`SELECT scope, resource_key, target_key, reason FROM tombstones WHERE resource_type = $1`, [t])) as {
          scope: string;
          resource_key: string;
          target_key: string | null;
          reason: string | null;
        }[]
      )
        .map((r) => JSON.stringify([r.scope, r.resource_key, r.target_key, r.reason]))
        .sort();
    const expected = records.map((r) => JSON.stringify([r.scope, r.key, r.target || null, r.reason || null])).sort();

    const asCsv = stringify(
      records.map((r) => ({ ...r, type })),
      { header: true, columns: ['scope', 'type', 'key', 'kind', 'target', 'reason'] },
    );
    await http.post('/admin/tombstones/import').set('authorization', 'Bearer t').set('content-type', 'text/csv').send(asCsv).expect(200);
    expect(await stored(type)).toEqual(expected);

    const ndType = `${type}-nd`;
    const asNdjson = records.map((r) => JSON.stringify({ ...r, type: ndType, target: r.target || undefined })).join('\n');
    await http.post('/admin/tombstones/import').set('authorization', 'Bearer t').set('content-type', 'application/x-ndjson').send(asNdjson).expect(200);
    expect(await stored(ndType)).toEqual(expected);

    // What an export writes imports back as it was.
    const exported = await http.get(`/admin/tombstones/export?type=${type}`).set('authorization', 'Bearer t').expect(200);
    const back = await http.post('/admin/tombstones/import').set('authorization', 'Bearer t').set('content-type', 'text/csv').send(exported.text).expect(200);
    expect(back.body).toMatchObject({ rows: records.length, created: 0, updated: records.length, errorCount: 0 });
    expect(await stored(type)).toEqual(expected);
  });

  it('a CSV export neutralises cells a spreadsheet would run as formulas, and imports back exactly', async () => {
    const keys = ['=HYPERLINK("https://evil.example","x")', '+1', '-neg', '@cmd', '\tx', "'=q", "'plain", 'safe'];
    const records = keys.map((key, i) => ({ type, key, kind: 'moved', target: i % 2 === 0 ? `=t${i}` : `t${i}`, reason: i === 0 ? '-reason' : undefined }));
    const ndjson = records.map((r) => JSON.stringify(r)).join('\n');
    await http.post('/admin/tombstones/import').set('authorization', 'Bearer t').set('content-type', 'application/x-ndjson').send(ndjson).expect(200);
    const stored = async () =>
      (await db.sql.query(`SELECT resource_key, target_key, reason FROM tombstones WHERE resource_type = $1 ORDER BY id`, [type])) as {
        resource_key: string;
        target_key: string;
        reason: string | null;
      }[];
    const before = await stored();
    expect(before.map((r) => r.resource_key)).toEqual(keys);

    const exported = await http.get(`/admin/tombstones/export?type=${encodeURIComponent(type)}&format=csv`).set('authorization', 'Bearer t').expect(200);
    const cells = (parse(exported.text, { columns: true }) as Record<string, string>[]).flatMap((row) => [row.key, row.target, row.reason]);
    // No cell starts with a formula character: each such value is behind a quote.
    expect(cells.filter((cell) => /^[=+\-@\t\r]/.test(cell))).toEqual([]);
    expect(cells).toContain(`'=HYPERLINK("https://evil.example","x")`);
    expect(cells).toContain("''=q");
    expect(cells).toContain("''plain"); // the quote itself is escaped, so that it reads back
    expect(cells).toContain('safe');

    // NDJSON and JSON exports stay untouched.
    const asJson = await http.get(`/admin/tombstones/export?type=${encodeURIComponent(type)}&format=json`).set('authorization', 'Bearer t').expect(200);
    expect((JSON.parse(asJson.text) as { key: string }[]).map((r) => r.key)).toEqual(keys);

    await db.sql.query(`DELETE FROM tombstones WHERE resource_type = $1`, [type]);
    const back = await http.post('/admin/tombstones/import').set('authorization', 'Bearer t').set('content-type', 'text/csv').send(exported.text).expect(200);
    expect(back.body).toMatchObject({ rows: keys.length, errorCount: 0 });
    expect(await stored()).toEqual(before);
  });

  it('stores expiresAt as the instant JavaScript reads, years before 1 and past 9999 included', async () => {
    // Each passes the strict ISO 8601 check; `0000` is 1 BC, `0099001` (an ordinal date) the year 99001.
    const values = ['2030-06-01T12:00:00Z', '2030-06-01T12:00', '2030-06-01', '2031-01-01T00:00:00.123+05:30', '0000', '0099001'];
    await csv(values.map((value, i) => `,${type},e${i},deleted,,,,,${value}`)).expect(200);
    const found = (await db.sql.query(
      `SELECT resource_key AS key, (extract(epoch FROM expires_at) * 1000)::float8 AS ms FROM tombstones WHERE resource_type = $1 ORDER BY 1`,
      [type],
    )) as { key: string; ms: number }[];
    expect(found.map((r) => r.ms)).toEqual(values.map((value) => new Date(value).getTime()));
  });

  it('a key twice in one batch is an error on the second', async () => {
    const res = await csv([`,${type},a,deleted,,,,,`, `,${type},a,hidden,,,,,`]).expect(400);
    expect(res.body.errors).toEqual([{ row: 3, field: 'key', reason: 'repeats the key of row 2' }]);
  });

  it('reads NDJSON and JSON arrays too', async () => {
    const ndjson = [
      JSON.stringify({ type, key: 'n1', kind: 'deleted', reason: 'r' }),
      '',
      JSON.stringify({ type, key: 'n2', kind: 'moved', target: 'n3', permanent: false }),
    ].join('\n');
    await http.post('/admin/tombstones/import').set('authorization', 'Bearer t').set('content-type', 'application/x-ndjson').send(ndjson).expect(200);
    await http
      .post('/admin/tombstones/import')
      .set('authorization', 'Bearer t')
      .send([{ type, key: 'j1', kind: 'hidden', scope: 'acme' }])
      .expect(200);
    expect(await rows()).toEqual(['j1:hidden', 'n1:deleted', 'n2:moved:n3']);
    const bad = await http
      .post('/admin/tombstones/import')
      .set('authorization', 'Bearer t')
      .set('content-type', 'application/x-ndjson')
      .send(`${JSON.stringify({ type, key: 'ok', kind: 'deleted' })}\n{"type":\n[1]\n${JSON.stringify({ type, key: 'x', kind: 'deleted', colour: 'red' })}`)
      .expect(400);
    expect(bad.body.errors.map((e: { row: number; field: string }) => [e.row, e.field])).toEqual([
      [2, 'row'],
      [3, 'row'],
      [4, 'colour'],
    ]);
  });

  it('limits: rows, bytes, line length, columns, media type, credentials', async () => {
    const tooMany = Array.from({ length: 120_001 }, (_, i) => `,${type},k${i},deleted,,,,,`);
    await csv(tooMany).expect(413);
    const big = Array.from({ length: 4500 }, (_, i) => `,${type},big${i},deleted,,,${'r'.repeat(1990)},,`);
    await csv(big).expect(413);
    const longLine = await csv([`,${type},${'k'.repeat(70_000)},deleted,,,,,`]).expect(400);
    expect(longLine.body.message).toMatch(/line/);
    const unknown = await http
      .post('/admin/tombstones/import')
      .set('authorization', 'Bearer t')
      .set('content-type', 'text/csv')
      .send(`type,key,kind,colour\n${type},a,deleted,red`)
      .expect(400);
    expect(unknown.body.errors[0].field).toBe('columns');
    await http.post('/admin/tombstones/import').set('authorization', 'Bearer t').set('content-type', 'text/plain').send('x').expect(415);
    await http.post('/admin/tombstones/import').set('content-type', 'text/csv').send(HEADER).expect(403);
    await http.get('/admin/tombstones/export').expect(403);
    await csv([]).expect(400);
    expect(await count()).toBe(0);
  });

  it('exports CSV, NDJSON and JSON in batches; an export imports back unchanged', async () => {
    const lines = Array.from({ length: 2500 }, (_, i) => `acme,${type},e${i},deleted,,,"Reason, with ""quotes""",/articles/x,`);
    await csv(lines).expect(200);
    const exported = await http.get(`/admin/tombstones/export?type=${type}`).set('authorization', 'Bearer t').expect(200);
    expect(exported.headers['content-type']).toMatch(/^text\/csv/);
    expect(exported.headers['content-disposition']).toBe('attachment; filename="tombstones.csv"');
    const text = exported.text;
    const exportedLines = text.trim().split('\n');
    expect(exportedLines).toHaveLength(2501);
    expect(exportedLines[0]).toBe(`${HEADER},prefix,id,actor,occurredAt,hitCount,lastHitAt,createdAt,updatedAt`);
    const back = await http
      .post('/admin/tombstones/import?dryRun=true')
      .set('authorization', 'Bearer t')
      .set('content-type', 'text/csv')
      .send(text)
      .expect(200);
    expect(back.body).toMatchObject({ rows: 2500, created: 0, updated: 2500, errorCount: 0 });

    const ndjson = await http.get(`/admin/tombstones/export?type=${type}&format=ndjson`).set('authorization', 'Bearer t').expect(200);
    const records = ndjson.text.trim().split('\n').map((line) => JSON.parse(line));
    expect(records).toHaveLength(2500);
    expect(records[0]).toMatchObject({ scope: 'acme', type, key: 'e0', kind: 'deleted', reason: 'Reason, with "quotes"', actor: 'importer' });

    const json = await http.get(`/admin/tombstones/export?type=${type}&format=json`).set('authorization', 'Bearer t').buffer(true).parse((res, done) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => done(null, body));
    }).expect(200);
    expect(JSON.parse(json.body as unknown as string)).toHaveLength(2500);
    const empty = await http.get(`/admin/tombstones/export?type=nothing-${type}&format=json`).set('authorization', 'Bearer t').expect(200);
    expect(empty.body).toEqual([]);
    await http.get(`/admin/tombstones/export?format=xml`).set('authorization', 'Bearer t').expect(400);
  });
});
