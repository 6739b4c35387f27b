import { Controller, Get, type INestApplication, Logger, Param } from '@nestjs/common';
import { RouterModule } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import fc from 'fast-check';
import request from 'supertest';
import { TombstoneAdminModule } from '../src/admin/index.js';
import { TombstoneMissLog } from '../src/counters/tombstone.misses.js';
import { TombstoneConfigurationError, TombstoneModule, type TombstoneModuleOptions, Tombstoned, TombstoneService, TombstoneValidationError } from '../src/index.js';
import { ADMIN_TOKEN, ArticlesController, TokenGuard } from './fixtures/admin.fixture.js';
import { ADAPTERS, bootApp, settled } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { QueryCounter } from './support/query-counter.js';

/** Nothing is live: every key is a 404 unless a tombstone explains it. */
@Controller()
class KeysController {
  @Get('words/:key')
  @Tombstoned('word', { param: 'key' })
  word(): null {
    return null;
  }

  @Get('pages/:key')
  @Tombstoned('page', { param: 'key' })
  page(): null {
    return null;
  }

  @Get('broken/:key')
  @Tombstoned('broken', { param: 'key' })
  broken(): null {
    return null;
  }

  @Get('slugs/:key')
  @Tombstoned('slug', { param: 'key' })
  slug(): null {
    return null;
  }

  /** One live resource, `here`. */
  @Get('live/:key')
  @Tombstoned('counted', { param: 'key' })
  live(@Param('key') key: string): { key: string } | null {
    return key === 'here' ? { key } : null;
  }
}

/** Calls of the `counted` type's normaliser. */
let normalised = 0;

const NORMALIZE_KEYS: TombstoneModuleOptions['normalizeKeys'] = {
  article: 'lower',
  word: ['lower', 'nfc'],
  broken: (key) => {
    if (key.includes('boom')) throw new Error('the normaliser exploded');
    return key.toLowerCase();
  },
  odd: (() => 42) as never,
  suffix: (key) => `${key}!`,
  // Trailing dashes go: a key of dashes only has an empty normal form.
  slug: (key) => key.replace(/-+$/, ''),
  counted: (key) => {
    normalised++;
    return key.toLowerCase();
  },
};

// Key normalisation (option normalizeKeys): keys are stored in their type's normal form by every
// write, and a request's key is put in it before it is looked up; targets are sent as stored.
describe.each(ADAPTERS)('key normalisation (%s)', (adapter) => {
  let db: TestDatabase;
  let app: INestApplication;
  let http: ReturnType<typeof request>;
  let tombstones: TombstoneService;
  const errors: string[] = [];
  const counter = new QueryCounter();
  const admin = (method: 'get' | 'post' | 'patch', path: string) => http[method](`/admin${path}`).set('authorization', ADMIN_TOKEN);
  const storedKeys = async (type: string): Promise<string[]> =>
    ((await db.sql.query(`SELECT resource_key FROM tombstones WHERE resource_type = $1 ORDER BY resource_key`, [type])) as { resource_key: string }[]).map(
      (r) => r.resource_key,
    );

  beforeAll(async () => {
    db = await createTestDatabase();
    app = await bootApp(adapter, {
      imports: [
        TypeOrmModule.forRoot({ ...db.options(), logging: true, logger: counter }),
        TombstoneModule.forRoot({ isGlobal: true, missLog: { flushIntervalMs: 100 }, normalizeKeys: NORMALIZE_KEYS }),
        TombstoneAdminModule.forRoot({ guard: TokenGuard }),
        RouterModule.register([{ path: 'admin', module: TombstoneAdminModule }]),
      ],
      controllers: [ArticlesController, KeysController],
    });
    Logger.overrideLogger({ log: () => undefined, warn: () => undefined, error: (m: unknown) => void errors.push(String(m)) });
    http = request(app.getHttpServer());
    tombstones = app.get(TombstoneService);
  });

  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  beforeEach(() => {
    errors.length = 0;
  });

  describe('lookups', () => {
    it('finds the tombstone of old-hello from OLD-HELLO, and redirects to the target as stored', async () => {
      await tombstones.recordMove('article', 'old-hello', 'hello-world');
      for (const asked of ['OLD-HELLO', 'Old-Hello', 'old-hello']) {
        const res = await http.get(`/articles/${asked}?lang=en`).expect(301);
        expect(res.headers.location).toBe('/articles/hello-world?lang=en');
        // The answer names the key asked for.
        expect(res.body).toMatchObject({ id: asked });
      }
      await http.head('/articles/OLD-HELLO').expect(301);
    });

    it('finds a key written in NFD from its NFC spelling, and the other way round', async () => {
      // 'Café' with 'e' + U+0301 (NFD); stored as 'café' with U+00E9 (NFC), lower-cased.
      await tombstones.recordDeletion('word', 'Cafe\u0301', { reason: 'Closed' });
      expect(await storedKeys('word')).toContain('caf\u00e9');
      for (const asked of ['caf\u00e9', 'cafe\u0301', 'CAFE\u0301', 'CAF\u00c9']) {
        const res = await http.get(`/words/${encodeURIComponent(asked)}`).expect(410);
        expect(res.body).toMatchObject({ reason: 'Closed' });
      }
    });

    it('gives one normal form to two spellings of a letter whose lower case composes (lower case, then NFC)', async () => {
      // 'Ϊ' + U+0301 has no composed form; its lower case 'ϊ' + U+0301 composes to 'ΐ' (U+0390).
      await tombstones.recordDeletion('word', '\u03aa\u0301');
      expect(await storedKeys('word')).toContain('\u0390');
      await http.get(`/words/${encodeURIComponent('\u0390')}`).expect(410);
      await http.get(`/words/${encodeURIComponent('\u03ca\u0301')}`).expect(410);
    });

    it('property: a key recorded in any case and Unicode form is found from any other (Latin letters)', async () => {
      const letter = fc.constantFrom(...'abcxyzABCXYZéÉèÈçÇñÑöÖåÅ-_.~0189'.split(''));
      let n = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(letter, { minLength: 1, maxLength: 12 }), fc.constantFrom('upper', 'lower', 'nfd', 'nfd-upper'), async (letters, spelling) => {
          const key = `p${++n}-${adapter}-${letters.join('')}`;
          const asked = { upper: key.toUpperCase(), lower: key.toLowerCase(), nfd: key.normalize('NFD'), 'nfd-upper': key.toUpperCase().normalize('NFD') }[spelling];
          await tombstones.recordDeletion('word', key);
          await http.get(`/words/${encodeURIComponent(asked)}`).expect(410);
        }),
        { numRuns: 40 },
      );
    });

    it('runs nothing for a found resource, and the normaliser once for a miss', async () => {
      normalised = 0;
      await http.get('/live/here').expect(200);
      expect(normalised).toBe(0);
      await http.get('/live/NOT-HERE').expect(404);
      expect(normalised).toBe(1);
    });

    it('leaves a type without the option as it is', async () => {
      await tombstones.recordDeletion('page', 'Mixed-Case');
      expect(await storedKeys('page')).toEqual(['Mixed-Case']);
      await http.get('/pages/Mixed-Case').expect(410);
      await http.get('/pages/mixed-case').expect(404);
      await http.get('/pages/MIXED-CASE').expect(404);
    });

    it('answers unknown spellings of unknown keys from the filter, without a query', async () => {
      await tombstones.recordDeletion('article', 'Filtered-Key');
      await settled(app);
      await http.get('/articles/FILTERED-KEY').expect(410);
      counter.reset();
      for (let i = 0; i < 50; i++) await http.get(`/articles/UNKNOWN-${i}-${adapter}`).expect(404);
      // (The misses log may write meanwhile: not a lookup.)
      expect(counter.queries.filter((q) => !q.includes('tombstone_misses'))).toEqual([]);
    });

    it('answers the plain 404 and logs when the normaliser throws, and counts no miss', async () => {
      await tombstones.recordDeletion('broken', 'fine');
      await http.get('/broken/FINE').expect(410);
      const res = await http.get('/broken/boom-1').expect(404);
      expect(res.body).toMatchObject({ error: 'not_found', id: 'boom-1' });
      expect(res.text).not.toMatch(/exploded|normaliser/);
      expect(errors.join('\n')).toMatch(/Tombstone lookup failed, answering a plain 404: the normaliser exploded \(type=broken key="boom-1"/);
      await app.get(TombstoneMissLog).flush();
      expect(await db.sql.query(`SELECT resource_key FROM tombstone_misses WHERE resource_type = 'broken'`)).toEqual([]);
    });

    it('answers none for a key whose normal form is empty, without a query or an error', async () => {
      counter.reset();
      await http.get('/slugs/---').expect(404);
      expect(counter.queries).toEqual([]);
      expect(errors).toEqual([]);
    });
  });

  describe('writes', () => {
    it('the recording API stores normal forms: deletions, hidden keys, moves, merges; find and restore and resolve take any spelling', async () => {
      await tombstones.recordDeletion('article', 'REC-Gone');
      await tombstones.recordHidden('article', 'REC-Hidden');
      await tombstones.recordMoves('article', [{ from: 'REC-A', to: 'rec-b' }]);
      await tombstones.recordMerge('article', ['REC-M1', 'Rec-M2'], 'rec-into');
      expect((await storedKeys('article')).filter((k) => k.startsWith('rec-'))).toEqual(['rec-a', 'rec-gone', 'rec-hidden', 'rec-m1', 'rec-m2']);
      // A re-recording in another spelling is the same key: the same row.
      await tombstones.recordDeletion('article', 'rec-GONE', { reason: 'again' });
      expect((await tombstones.find('article', 'REC-GONE'))?.reason).toBe('again');
      expect(await tombstones.resolve('article', 'Rec-A')).toMatchObject({ state: 'moved', target: 'rec-b' });
      expect((await tombstones.resolveMany('article', ['REC-M1', 'nope'])).map((r) => r.state)).toEqual(['moved', 'none']);
      expect(await tombstones.restore('article', 'REC-HIDDEN')).toBe(true);
      expect(await tombstones.find('article', 'rec-hidden')).toBeNull();
    });

    it('collapses a batch of moves through normal forms, and refuses two spellings of one source with two targets', async () => {
      await tombstones.recordMoves('article', [
        { from: 'BAT-A', to: 'bat-b' },
        { from: 'Bat-B', to: 'bat-c' },
      ]);
      expect(await tombstones.resolve('article', 'bat-a')).toMatchObject({ state: 'moved', target: 'bat-c' });
      expect(await tombstones.resolve('article', 'BAT-B')).toMatchObject({ state: 'moved', target: 'bat-c' });
      await expect(
        tombstones.recordMoves('article', [
          { from: 'BAT-X', to: 'bat-y' },
          { from: 'bat-x', to: 'bat-z' },
        ]),
      ).rejects.toThrow(/moves 'bat-x' to two different keys/);
      // Moving onto a key revives it: its tombstone is found by the target's (normal) form.
      await tombstones.recordMove('article', 'bat-c', 'bat-a');
      expect(await tombstones.find('article', 'BAT-A')).toBeNull();
      expect(await tombstones.resolve('article', 'BAT-B')).toMatchObject({ state: 'moved', target: 'bat-a' });
    });

    it('refuses a target that is not in normal form, and a move onto its own normal form', async () => {
      await expect(tombstones.recordMove('article', 'rec-x', 'Hello-World')).rejects.toThrow(TombstoneValidationError);
      await expect(tombstones.recordMove('article', 'rec-x', 'Hello-World')).rejects.toThrow(/must be in normal form: "hello-world"/);
      await expect(tombstones.recordMerge('article', ['rec-y'], 'INTO')).rejects.toMatchObject({ field: 'into' });
      await expect(tombstones.recordMove('article', 'SAME', 'same')).rejects.toThrow(/onto itself/);
      expect(await tombstones.find('article', 'rec-x')).toBeNull();
    });

    it('fails loudly when the normaliser throws, answers no string, is not idempotent or gives an empty key', async () => {
      await expect(tombstones.recordDeletion('broken', 'boom-2')).rejects.toThrow(TombstoneValidationError);
      await expect(tombstones.recordDeletion('broken', 'boom-2')).rejects.toThrow(/normalizeKeys normaliser of type 'broken' failed on the key "boom-2": the normaliser exploded/);
      await expect(tombstones.recordDeletion('odd', 'x')).rejects.toThrow(/function of type 'odd' returned a number, not a string/);
      await expect(tombstones.recordDeletion('suffix', 'x')).rejects.toThrow(/not idempotent/);
      await expect(tombstones.recordDeletion('slug', '---')).rejects.toThrow(/its normal form for type 'slug' \(normalizeKeys\) is "", which is not a key/);
      await expect(tombstones.resolve('broken', 'boom-3')).rejects.toThrow(TombstoneValidationError);
      expect(await storedKeys('broken')).toEqual(['fine']);
      expect(await storedKeys('suffix')).toEqual([]);
      expect(await storedKeys('slug')).toEqual([]);
    });

    it('the admin create stores the normal form; another spelling of it is a 409; a target out of normal form is a 400', async () => {
      const created = await admin('post', '/tombstones').send({ type: 'article', key: 'Admin-Key', kind: 'deleted' }).expect(201);
      expect(created.body).toMatchObject({ key: 'admin-key' });
      await admin('post', '/tombstones').send({ type: 'article', key: 'ADMIN-KEY', kind: 'hidden' }).expect(409);
      const bad = await admin('post', '/tombstones').send({ type: 'article', key: 'adm-moved', kind: 'moved', target: 'Hello-World' }).expect(400);
      expect(bad.body.errors).toEqual([{ field: 'target', reason: expect.stringMatching(/must be in normal form: "hello-world"/) }]);
      await admin('post', '/tombstones').send({ type: 'article', key: 'Hello-World', kind: 'moved', target: 'hello-world' }).expect(400);
      const broken = await admin('post', '/tombstones').send({ type: 'broken', key: 'boom-4', kind: 'deleted' }).expect(400);
      expect(broken.body.errors).toEqual([{ field: 'key', reason: expect.stringMatching(/failed on the key "boom-4": the normaliser exploded/) }]);
      await http.get('/articles/ADMIN-key').expect(410);
      expect(await storedKeys('broken')).toEqual(['fine']);
    });

    it('the admin update refuses a target out of normal form, and keeps one in it', async () => {
      const { body } = await admin('post', '/tombstones').send({ type: 'article', key: 'Upd-Key', kind: 'moved', target: 'upd-a' }).expect(201);
      await admin('patch', `/tombstones/${body.id}`).send({ target: 'UPD-B' }).expect(400);
      await admin('patch', `/tombstones/${body.id}`).send({ target: 'upd-b' }).expect(200);
      expect(await tombstones.resolve('article', 'UPD-KEY')).toMatchObject({ state: 'moved', target: 'upd-b' });
    });

    it('the import stores normal forms, and refuses two spellings of one key and targets out of normal form', async () => {
      const csv = (rows: string[]) => ['type,key,kind,target', ...rows].join('\n');
      const refused = await admin('post', '/tombstones/import')
        .set('content-type', 'text/csv')
        .send(csv(['article,Imp-One,deleted,', 'article,IMP-ONE,hidden,', 'article,imp-two,moved,Imp-Target', 'broken,boom-5,deleted,']))
        .expect(400);
      expect(refused.body.errorCount).toBe(3);
      expect(refused.body.errors).toEqual([
        { row: 3, field: 'key', reason: 'repeats the key of row 2' },
        { row: 4, field: 'target', reason: expect.stringMatching(/must be in normal form: "imp-target"/) },
        { row: 5, field: 'key', reason: expect.stringMatching(/the normaliser exploded/) },
      ]);
      expect((await storedKeys('article')).filter((k) => k.startsWith('imp-'))).toEqual([]);
      await admin('post', '/tombstones/import').set('content-type', 'text/csv').send(csv(['article,Imp-One,deleted,', 'article,IMP-TWO,moved,imp-target'])).expect(200);
      expect((await storedKeys('article')).filter((k) => k.startsWith('imp-'))).toEqual(['imp-one', 'imp-two']);
      await http.get('/articles/IMP-TWO').expect(301).expect('location', '/articles/imp-target');
    });

    it('the misses log keeps normal forms, and its resolve action writes one', async () => {
      const misses = app.get(TombstoneMissLog);
      await http.get('/articles/MISSING-One').expect(404);
      await http.get('/articles/missing-ONE').expect(404);
      await misses.flush();
      const listed = await admin('get', `/tombstone-misses?type=article&keyPrefix=${encodeURIComponent('MISSING-')}`).expect(200);
      expect(listed.body.items).toEqual([expect.objectContaining({ key: 'missing-one', hits: 2 })]);
      const resolved = await admin('post', `/tombstone-misses/${listed.body.items[0].id}/resolve`).send({ kind: 'deleted' }).expect(201);
      expect(resolved.body).toMatchObject({ key: 'missing-one' });
      await http.get('/articles/Missing-One').expect(410);
    });

    it('keys stored before the option: the SQL of docs/recording.md normalises them, the row in normal form winning', async () => {
      // Written with SQL, as before the option was set (or by another version of the app).
      await db.sql.query(
        `INSERT INTO tombstones (resource_type, resource_key, kind, reason, updated_at) VALUES
           ('article', 'PRE-Gone', 'deleted', 'old spelling', now()), ('article', 'PRE-Dup', 'deleted', 'old spelling', now()),
           ('article', 'pre-dup', 'deleted', 'normal form', now() - interval '1 day'),
           ('article', 'PRE-Two', 'deleted', 'older', now() - interval '1 day'), ('article', 'Pre-Two', 'deleted', 'newer', now())`,
      );
      await settled(app);
      await http.get('/articles/PRE-Gone').expect(404);
      // The SQL of docs/recording.md, as it is there.
      await db.sql.query(`DELETE FROM tombstones t USING (
    SELECT id, row_number() OVER (PARTITION BY scope, resource_type, lower(resource_key)
                                  ORDER BY resource_key = lower(resource_key) DESC, updated_at DESC, id DESC) AS n
      FROM tombstones WHERE resource_type = 'article') d
   WHERE t.id = d.id AND d.n > 1`);
      await db.sql.query(`UPDATE tombstones SET resource_key = lower(resource_key) WHERE resource_type = 'article' AND resource_key <> lower(resource_key)`);
      await settled(app);
      expect((await storedKeys('article')).filter((k) => k.toLowerCase().startsWith('pre-'))).toEqual(['pre-dup', 'pre-gone', 'pre-two']);
      await http.get('/articles/PRE-Gone').expect(410);
      expect((await http.get('/articles/Pre-Dup').expect(410)).body).toMatchObject({ reason: 'normal form' });
      expect((await http.get('/articles/pre-two').expect(410)).body).toMatchObject({ reason: 'newer' });
    });

    it('the batch resolve and the list take any spelling', async () => {
      const { body } = await admin('post', '/tombstones/resolve').send({ type: 'article', keys: ['OLD-HELLO', 'Nothing-Here'] }).expect(200);
      expect(body.results).toEqual([
        expect.objectContaining({ key: 'OLD-HELLO', state: 'moved', target: 'hello-world', status: 301 }),
        { key: 'Nothing-Here', state: 'none', status: null },
      ]);
      await admin('post', '/tombstones/resolve').send({ type: 'broken', keys: ['boom-6'] }).expect(400);
      const list = await admin('get', `/tombstones?type=article&keyPrefix=${encodeURIComponent('OLD-')}`).expect(200);
      expect(list.body.items.map((t: { key: string }) => t.key)).toEqual(['old-hello']);
      // Without a type, the prefix is taken as it is.
      expect((await admin('get', `/tombstones?keyPrefix=${encodeURIComponent('OLD-')}`).expect(200)).body.items).toEqual([]);
    });
  });
});

describe('key normalisation at start-up', () => {
  it('refuses an unknown normaliser with a clear error', async () => {
    const boot = bootApp('express', { imports: [TombstoneModule.forRoot({ normalizeKeys: { article: 'upper' as never } })] });
    await expect(boot).rejects.toThrow(TombstoneConfigurationError);
    await expect(boot).rejects.toThrow(/normalizeKeys.article must be 'lower', 'nfc', a function of the key that returns its normal form, or a list of these, not 'upper'/);
  });
});
