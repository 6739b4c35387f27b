import { DataSource, type EntityManager, In, IsNull, Not } from 'typeorm';
import { CAPTURE_TRIGGERS } from '../src/capture/tombstone.capture.js';
import {
  TombstoneContext,
  TombstoneKeyReuseError,
  TombstoneService,
  TombstoneValidationError,
} from '../src/index.js';
import { Account, bootCaptureFixtures, Handle, Invoice, Note, Post } from './fixtures/capture.fixture.js';
import type { TestDatabase } from './support/database.js';

interface Row {
  scope: string;
  type: string;
  key: string;
  kind: string;
  target: string | null;
  actor: string | null;
  reason: string | null;
}

/** Stops a transaction after its work, so that the test can check it left nothing behind. */
class Rollback extends Error {}

/** A lookup answers the id of the key's tombstone row. */
const TOMBSTONE_ID = expect.stringMatching(/^[1-9][0-9]*$/);

describe('automatic capture against PostgreSQL', () => {
  let db: TestDatabase;
  let data: DataSource;
  let service: TombstoneService;
  let close: () => Promise<void>;
  let tenant: string;
  let n = 0;

  beforeAll(async () => {
    ({ db, data, service, close } = await bootCaptureFixtures());
  });

  afterAll(async () => {
    await close?.();
  });

  beforeEach(() => {
    tenant = `t${++n}`; // a fresh tenant per test: no test sees another's post tombstones
  });

  const tombstones = async (type: string, scope = tenant): Promise<Row[]> =>
    db.sql.query(
      `SELECT scope, resource_type AS type, resource_key AS key, kind, target_key AS target, actor, reason
         FROM tombstones WHERE resource_type = $1 AND scope = $2 ORDER BY resource_key`,
      [type, scope],
    );
  const kinds = async (type: string, scope = tenant) =>
    (await tombstones(type, scope)).map((r) => (r.target ? `${r.key}:${r.kind}:${r.target}` : `${r.key}:${r.kind}`));

  const posts = () => data.getRepository(Post);
  const seed = (...slugs: string[]) => posts().save(slugs.map((slug) => posts().create({ tenant, slug, title: slug })));

  /** Runs `work` in a transaction that is rolled back at its end. */
  const rolledBack = async (work: (manager: EntityManager) => Promise<unknown>) => {
    await expect(
      data.transaction(async (manager) => {
        await work(manager);
        throw new Rollback();
      }),
    ).rejects.toBeInstanceOf(Rollback);
  };

  describe('hard deletes', () => {
    it('remove(): the slug answers 410, the id is hidden; each key by its own declaration', async () => {
      const [post] = await seed('hello');
      const id = post.id;
      await posts().remove(post);
      expect(await kinds('post')).toEqual(['hello:deleted']);
      expect(await kinds('post-id')).toEqual([`${id}:hidden`]);
      const [row] = await tombstones('post');
      expect(row.scope).toBe(tenant);
      expect(await service.resolve('post', 'hello', tenant)).toMatchObject({ state: 'gone' });
      expect(await service.resolve('post', 'hello', 'another-tenant')).toEqual({ state: 'none' });
    });

    it('remove() in a rolled-back transaction leaves no tombstone', async () => {
      const [post] = await seed('kept');
      await rolledBack((manager) => manager.remove(post));
      expect(await kinds('post')).toEqual([]);
      expect(await posts().countBy({ tenant })).toBe(1);
    });

    it('delete(criteria) records every row it deletes', async () => {
      await seed('a', 'b', 'c');
      await posts().delete({ tenant, slug: In(['a', 'b']) });
      expect(await kinds('post')).toEqual(['a:deleted', 'b:deleted']);
    });

    it('delete(criteria) rolled back leaves none', async () => {
      await seed('a', 'b');
      await rolledBack((manager) => manager.delete(Post, { tenant }));
      expect(await kinds('post')).toEqual([]);
    });

    it('a query-builder delete, and its rolled-back twin', async () => {
      await seed('qb-1', 'qb-2', 'qb-3');
      await rolledBack((manager) =>
        manager.createQueryBuilder().delete().from(Post).where('tenant = :tenant AND slug <> :slug', { tenant, slug: 'qb-3' }).execute(),
      );
      expect(await kinds('post')).toEqual([]);
      await data.createQueryBuilder().delete().from(Post).where('tenant = :tenant AND slug <> :slug', { tenant, slug: 'qb-3' }).execute();
      expect(await kinds('post')).toEqual(['qb-1:deleted', 'qb-2:deleted']);
    });

    it('raw SQL, and its rolled-back twin', async () => {
      await seed('raw');
      await rolledBack((manager) => manager.query(`DELETE FROM cap_posts WHERE tenant = $1`, [tenant]));
      expect(await kinds('post')).toEqual([]);
      await db.sql.query(`DELETE FROM cap_posts WHERE tenant = $1`, [tenant]);
      expect(await kinds('post')).toEqual(['raw:deleted']);
    });

    it("the database's ON DELETE CASCADE: the children are recorded too", async () => {
      const [post] = await seed('parent');
      const notes = await data.getRepository(Note).save([{ postId: post.id }, { postId: post.id }]);
      const noteKeys = notes.map((note) => `${note.id}:deleted`).sort();
      await rolledBack((manager) => manager.query(`DELETE FROM cap_posts WHERE id = $1`, [post.id]));
      expect(await noteTombstones(notes)).toEqual([]);
      await posts().delete({ id: post.id });
      expect(await noteTombstones(notes)).toEqual(noteKeys);
    });

    it("the ORM's cascade on remove()", async () => {
      const [post] = await seed('orm-parent');
      const notes = await data.getRepository(Note).save([{ postId: post.id }]);
      const loaded = await posts().findOneOrFail({ where: { id: post.id }, relations: { notes: true } });
      await rolledBack((manager) => manager.remove(loaded));
      expect(await noteTombstones(notes)).toEqual([]);
      await posts().remove(await posts().findOneOrFail({ where: { id: post.id }, relations: { notes: true } }));
      expect(await noteTombstones(notes)).toEqual([`${notes[0].id}:deleted`]);
      expect(await kinds('post')).toEqual(['orm-parent:deleted']);
    });

    it('TRUNCATE records every row it empties, and a rolled-back TRUNCATE none', async () => {
      await db.sql.query(`CREATE TABLE cap_trunc (id serial PRIMARY KEY, code text)`);
      await db.sql.query(`INSERT INTO cap_trunc (code) SELECT 'code-' || g FROM generate_series(1, 3) g`);
      await db.sql.query(`SELECT 1`);
      const runner = db.sql.createQueryRunner();
      try {
        const { installTombstoneCapture } = await import('../src/index.js');
        await installTombstoneCapture(runner, { v: 1, table: 'cap_trunc', soft: null, keys: [{ type: 'code', column: 'code', scope: null, onDelete: 'deleted', reuse: 'allow', permanent: true }] });
      } finally {
        await runner.release();
      }
      await rolledBack((manager) => manager.query(`TRUNCATE cap_trunc`));
      expect(await kinds('code', '')).toEqual([]);
      await db.sql.query(`TRUNCATE cap_trunc`);
      expect(await kinds('code', '')).toEqual(['code-1:deleted', 'code-2:deleted', 'code-3:deleted']);
    });

    it('a row whose key is NULL leaves nothing for that key', async () => {
      const post = await posts().save({ tenant, slug: null, title: 'no slug' });
      await posts().delete({ id: post.id });
      expect(await kinds('post')).toEqual([]);
      expect(await kinds('post-id')).toEqual([`${post.id}:hidden`]);
    });

    it('a tombstone that cannot be written fails the delete: the row stays', async () => {
      const long = 'x'.repeat(3000); // over the 2048-byte key limit the table enforces
      await posts().save({ tenant, slug: long });
      await expect(posts().delete({ tenant, slug: long })).rejects.toThrow(/tombstones_key_size_check/);
      expect(await posts().countBy({ tenant })).toBe(1);
      expect(await kinds('post')).toEqual([]);
    });

    const noteTombstones = async (notes: Note[]) =>
      (
        (await db.sql.query(`SELECT resource_key AS key, kind FROM tombstones WHERE resource_type = 'note' AND resource_key = ANY($1)`, [
          notes.map((note) => String(note.id)),
        ])) as { key: string; kind: string }[]
      )
        .map((r) => `${r.key}:${r.kind}`)
        .sort();
  });

  describe('soft deletes', () => {
    it('softRemove() hides, recover() clears; each with a rolled-back twin', async () => {
      const [post] = await seed('soft');
      await rolledBack((manager) => manager.softRemove(post));
      expect(await kinds('post')).toEqual([]);
      const removed = await posts().softRemove(post);
      expect(await kinds('post')).toEqual(['soft:hidden']);
      expect(await service.resolve('post', 'soft', tenant)).toEqual({ state: 'hidden', id: TOMBSTONE_ID });
      await rolledBack((manager) => manager.recover(removed));
      expect(await kinds('post')).toEqual(['soft:hidden']);
      await posts().recover(removed);
      expect(await kinds('post')).toEqual([]);
    });

    it('softDelete(criteria) and restore(criteria), each with a rolled-back twin', async () => {
      await seed('s1', 's2');
      await rolledBack((manager) => manager.softDelete(Post, { tenant }));
      expect(await kinds('post')).toEqual([]);
      await posts().softDelete({ tenant });
      expect(await kinds('post')).toEqual(['s1:hidden', 's2:hidden']);
      await rolledBack((manager) => manager.restore(Post, { tenant, slug: 's1' }));
      expect(await kinds('post')).toEqual(['s1:hidden', 's2:hidden']);
      await posts().restore({ tenant, slug: 's1' });
      expect(await kinds('post')).toEqual(['s2:hidden']);
    });

    it('a soft-deleted row deleted for good turns hidden into gone', async () => {
      const [post] = await seed('purged');
      await posts().softDelete({ id: post.id });
      await posts().delete({ id: post.id });
      expect(await kinds('post')).toEqual(['purged:deleted']);
    });

    it('a moved key that is then soft-deleted answers hidden through the chain', async () => {
      const [post] = await seed('first');
      await posts().update({ id: post.id }, { slug: 'second' });
      await posts().softDelete({ id: post.id });
      expect(await service.resolve('post', 'first', tenant)).toEqual({ state: 'hidden', id: TOMBSTONE_ID });
    });
  });

  describe('key changes', () => {
    it('save() with a new slug: a move, and its rolled-back twin', async () => {
      const [post] = await seed('draft-title');
      await rolledBack((manager) => manager.save(Post, { ...post, slug: 'never' }));
      expect(await kinds('post')).toEqual([]);
      await posts().save({ ...post, slug: 'final-title' });
      expect(await kinds('post')).toEqual(['draft-title:moved:final-title']);
      expect(await service.resolve('post', 'draft-title', tenant)).toEqual({
        state: 'moved',
        id: TOMBSTONE_ID,
        target: 'final-title',
        permanent: true,
        merged: false,
      });
    });

    it('update(criteria) and a query-builder update are moves too; their rolled-back twins are not', async () => {
      const [a, b] = await seed('u-1', 'qb-1');
      await rolledBack((manager) => manager.update(Post, { id: a.id }, { slug: 'nope' }));
      await rolledBack((manager) => manager.createQueryBuilder().update(Post).set({ slug: 'nope-2' }).where('id = :id', { id: b.id }).execute());
      expect(await kinds('post')).toEqual([]);
      await posts().update({ id: a.id }, { slug: 'u-2' });
      await data.createQueryBuilder().update(Post).set({ slug: 'qb-2' }).where('id = :id', { id: b.id }).execute();
      expect(await kinds('post')).toEqual(['qb-1:moved:qb-2', 'u-1:moved:u-2']);
    });

    it('a chain of renames answers the last key in one hop; renaming back revives the key', async () => {
      const [post] = await seed('a');
      for (const slug of ['b', 'c', 'd']) await posts().update({ id: post.id }, { slug });
      expect(await kinds('post')).toEqual(['a:moved:d', 'b:moved:d', 'c:moved:d']);
      await posts().update({ id: post.id }, { slug: 'a' });
      expect(await kinds('post')).toEqual(['b:moved:a', 'c:moved:a', 'd:moved:a']);
    });

    it('a bulk rename leaves one move per row; rolled back, none', async () => {
      await seed('bulk-1', 'bulk-2', 'bulk-3');
      await rolledBack((manager) => manager.query(`UPDATE cap_posts SET slug = slug || '-v2' WHERE tenant = $1`, [tenant]));
      expect(await kinds('post')).toEqual([]);
      await db.sql.query(`UPDATE cap_posts SET slug = slug || '-v2' WHERE tenant = $1`, [tenant]);
      expect(await kinds('post')).toEqual(['bulk-1:moved:bulk-1-v2', 'bulk-2:moved:bulk-2-v2', 'bulk-3:moved:bulk-3-v2']);
    });

    it('updates that do not touch a key, scope or soft delete leave nothing (and run no trigger)', async () => {
      const [post] = await seed('steady');
      await posts().update({ id: post.id }, { title: 'new title' });
      await posts().save({ ...post, title: 'newer title' });
      expect(await kinds('post')).toEqual([]);
    });

    it('clearing a key records it as deleted; rolled back, nothing', async () => {
      const [post] = await seed('cleared');
      await rolledBack((manager) => manager.update(Post, { id: post.id }, { slug: null }));
      expect(await kinds('post')).toEqual([]);
      await posts().update({ id: post.id }, { slug: null });
      expect(await kinds('post')).toEqual(['cleared:deleted']);
    });

    it("a row moved to another tenant becomes invisible from its former tenant's keys", async () => {
      const [post] = await seed('moving-out');
      const other = `${tenant}-other`;
      await rolledBack((manager) => manager.update(Post, { id: post.id }, { tenant: other }));
      expect(await kinds('post')).toEqual([]);
      await posts().update({ id: post.id }, { tenant: other });
      expect(await kinds('post')).toEqual(['moving-out:hidden']);
      expect(await kinds('post-id')).toEqual([`${post.id}:hidden`]);
      expect(await kinds('post', other)).toEqual([]);
    });
  });

  describe('key reuse', () => {
    it("'allow': a new row takes a deleted key, and the tombstone goes", async () => {
      await seed('recycled');
      await posts().delete({ tenant, slug: 'recycled' });
      expect(await kinds('post')).toEqual(['recycled:deleted']);
      await seed('recycled');
      expect(await kinds('post')).toEqual([]);
      expect(await service.resolve('post', 'recycled', tenant)).toEqual({ state: 'none' });
    });

    it("'allow': an insert rolled back leaves the tombstone where it was", async () => {
      await seed('kept-dead');
      await posts().delete({ tenant, slug: 'kept-dead' });
      await rolledBack((manager) => manager.insert(Post, { tenant, slug: 'kept-dead' }));
      expect(await kinds('post')).toEqual(['kept-dead:deleted']);
    });

    it("insert() and upsert() follow the policy too; an upsert that only updates changes nothing", async () => {
      await seed('up-1', 'up-2');
      await posts().delete({ tenant, slug: 'up-1' });
      await posts().insert({ tenant, slug: 'up-1', title: 'back' });
      expect(await kinds('post')).toEqual([]);
      await posts().delete({ tenant, slug: 'up-2' });
      await posts().upsert({ tenant, slug: 'up-2', title: 'upserted' }, ['tenant', 'slug']);
      expect(await kinds('post')).toEqual([]);
      await posts().upsert({ tenant, slug: 'up-2', title: 'updated by upsert' }, ['tenant', 'slug']);
      expect(await kinds('post')).toEqual([]);
      expect(await posts().countBy({ tenant })).toBe(2);
    });

    it('a row inserted already soft-deleted is hidden from the start; rolled back, nothing', async () => {
      await rolledBack((manager) => manager.insert(Post, { tenant, slug: 'born-hidden', deletedAt: new Date() }));
      expect(await kinds('post')).toEqual([]);
      await posts().insert({ tenant, slug: 'born-hidden', deletedAt: new Date() });
      expect(await kinds('post')).toEqual(['born-hidden:hidden']);
    });

    it("'allow': a rename onto a former key of another row takes it too", async () => {
      const [a, b] = await seed('old-a', 'b');
      await posts().update({ id: a.id }, { slug: 'new-a' });
      await posts().update({ id: b.id }, { slug: 'old-a' });
      expect(await kinds('post')).toEqual(['b:moved:old-a']);
    });

    it("'forbid': inserting a key with a tombstone fails with TombstoneKeyReuseError, and nothing changes", async () => {
      const handles = data.getRepository(Handle);
      const name = `taken-${tenant}`;
      await handles.save({ name });
      await handles.delete({ name });
      const error = await handles.save({ name }).catch((e: unknown) => e);
      const reuse = TombstoneKeyReuseError.from(error);
      expect(reuse).toBeInstanceOf(TombstoneKeyReuseError);
      expect(reuse).toMatchObject({ type: 'handle', key: name, scope: '', kind: 'deleted' });
      expect(reuse?.message).toMatch(/forbids reusing keys/);
      expect(await handles.countBy({ name })).toBe(0);
      expect(await kinds('handle', '')).toContain(`${name}:deleted`);
      expect(TombstoneKeyReuseError.from(new Error('other'))).toBeUndefined();
    });

    it("'forbid': a rename onto another row's former key fails; renaming back to one's own works", async () => {
      const handles = data.getRepository(Handle);
      const [mine, theirs] = await handles.save([{ name: `mine-${tenant}` }, { name: `theirs-${tenant}` }]);
      await handles.update({ id: mine.id }, { name: `mine-2-${tenant}` });
      const error = await handles.update({ id: theirs.id }, { name: `mine-${tenant}` }).catch((e: unknown) => e);
      expect(TombstoneKeyReuseError.from(error)).toMatchObject({ key: `mine-${tenant}`, kind: 'moved' });
      await handles.update({ id: mine.id }, { name: `mine-${tenant}` });
      expect((await kinds('handle', '')).filter((k) => k.includes(tenant))).toEqual([`mine-2-${tenant}:moved:mine-${tenant}`]);
    });

    it("'forbid' only guards keys with a tombstone: a fresh key inserts", async () => {
      const handles = data.getRepository(Handle);
      const saved = await handles.save({ name: `fresh-${tenant}` });
      expect(await handles.findOneBy({ id: saved.id })).toEqual({ id: saved.id, name: `fresh-${tenant}` });
      expect(await service.find('handle', `fresh-${tenant}`)).toBeNull();
    });
  });

  describe('merge', () => {
    const accounts = () => data.getRepository(Account);
    let base = 0;
    beforeEach(() => {
      base = n * 100;
    });

    it('re-points, deletes the merged rows and leaves merged tombstones to the survivor, for every key', async () => {
      await accounts().save([
        { id: base + 1, handle: `keep-${base}` },
        { id: base + 2, handle: `dup-${base}` },
        { id: base + 3, handle: `dup2-${base}` },
      ]);
      await data.getRepository(Invoice).save([{ accountId: base + 2 }, { accountId: base + 3 }]);
      const result = await service.merge(Account, {
        into: base + 1,
        from: [base + 2, base + 3],
        reason: 'Duplicate accounts',
        actor: 'support:ana',
        repoint: (manager, { survivor, merged }) =>
          manager.update(Invoice, { accountId: In(merged.map((m) => m.id)) }, { accountId: survivor.id }),
      });
      expect(result.merged.map((m) => m.id)).toEqual([base + 2, base + 3]);
      expect(result.tombstones).toHaveLength(4);
      expect(await accounts().countBy({ id: In([base + 2, base + 3]) })).toBe(0);
      expect(await data.getRepository(Invoice).countBy({ accountId: base + 1 })).toBe(2);
      const ids = (await tombstones('account', '')).filter((r) => [String(base + 2), String(base + 3)].includes(r.key));
      expect(ids.map((r) => [r.key, r.kind, r.target, r.actor, r.reason])).toEqual([
        [String(base + 2), 'merged', String(base + 1), 'support:ana', 'Duplicate accounts'],
        [String(base + 3), 'merged', String(base + 1), 'support:ana', 'Duplicate accounts'],
      ]);
      expect(await service.resolve('account-handle', `dup-${base}`)).toEqual({
        state: 'moved',
        id: TOMBSTONE_ID,
        target: `keep-${base}`,
        permanent: false,
        merged: true,
      });
    });

    it('merges a soft-deleted duplicate too, within its scope', async () => {
      const [keep, dup] = await seed('keeper', 'soft-dup');
      await posts().softDelete({ id: dup.id });
      const result = await service.merge(Post, { into: keep.id, from: [dup.id] });
      expect(result.tombstones.map((t) => [t.scope, t.type, t.key, t.kind, t.target])).toEqual([
        [tenant, 'post', 'soft-dup', 'merged', 'keeper'],
        [tenant, 'post-id', String(dup.id), 'merged', String(keep.id)],
      ]);
      expect(await service.resolve('post', 'soft-dup', tenant)).toMatchObject({ state: 'moved', target: 'keeper', merged: true });
    });

    it('rolls everything back when re-pointing fails', async () => {
      await accounts().save([
        { id: base + 1, handle: `keep-${base}` },
        { id: base + 2, handle: `dup-${base}` },
      ]);
      await expect(
        service.merge(Account, {
          into: base + 1,
          from: [base + 2],
          repoint: () => {
            throw new Error('invoices are locked');
          },
        }),
      ).rejects.toThrow('invoices are locked');
      expect(await accounts().countBy({ id: base + 2 })).toBe(1);
      expect((await tombstones('account', '')).filter((r) => r.key === String(base + 2))).toEqual([]);
    });

    it("joins the caller's transaction, and rolls back with it", async () => {
      await accounts().save([
        { id: base + 1, handle: `keep-${base}` },
        { id: base + 2, handle: `dup-${base}` },
      ]);
      await rolledBack((manager) => service.merge(Account, { into: base + 1, from: [base + 2], manager }));
      expect(await accounts().countBy({ id: base + 2 })).toBe(1);
      expect((await tombstones('account-handle', '')).filter((r) => r.key === `dup-${base}`)).toEqual([]);
    });

    it('refuses unknown rows and self-merges with a typed error', async () => {
      await accounts().save({ id: base + 1, handle: `keep-${base}` });
      await expect(service.merge(Account, { into: base + 1, from: [base + 9] })).rejects.toBeInstanceOf(TombstoneValidationError);
      await expect(service.merge(Account, { into: base + 9, from: [base + 1] })).rejects.toBeInstanceOf(TombstoneValidationError);
      await expect(service.merge(Account, { into: base + 1, from: [base + 1] })).rejects.toBeInstanceOf(TombstoneValidationError);
      await expect(service.merge(Account, { into: base + 1, from: [] })).rejects.toBeInstanceOf(TombstoneValidationError);
      await expect(service.merge(Invoice, { into: 1, from: [2] })).rejects.toThrow(/not @TombstoneTracked/);
    });
  });

  describe('actor and reason', () => {
    it('come from TombstoneContext, outside a transaction and inside one', async () => {
      await seed('ctx-1', 'ctx-2', 'ctx-3');
      await TombstoneContext.run({ actor: 'cron:cleanup', reason: 'Expired' }, () => posts().delete({ tenant, slug: 'ctx-1' }));
      await TombstoneContext.run({ actor: 'editor:bo' }, () =>
        data.transaction(async (manager) => {
          await manager.delete(Post, { tenant, slug: 'ctx-2' });
          await TombstoneContext.run({ reason: 'Duplicate' }, () => manager.delete(Post, { tenant, slug: 'ctx-3' }));
        }),
      );
      const rows = await tombstones('post');
      expect(rows.map((r) => [r.key, r.actor, r.reason])).toEqual([
        ['ctx-1', 'cron:cleanup', 'Expired'],
        ['ctx-2', 'editor:bo', null],
        ['ctx-3', 'editor:bo', 'Duplicate'],
      ]);
    });

    it('do not leak to later statements on the same connection', async () => {
      await seed('leak-1', 'leak-2');
      await TombstoneContext.run({ actor: 'someone' }, () => posts().delete({ tenant, slug: 'leak-1' }));
      // A pool of one connection would hand the same one back; the settings must be cleared.
      await Promise.all(Array.from({ length: 10 }, () => db.sql.query('SELECT 1')));
      await posts().delete({ tenant, slug: 'leak-2' });
      const rows = await tombstones('post');
      expect(rows.map((r) => [r.key, r.actor])).toEqual([
        ['leak-1', 'someone'],
        ['leak-2', null],
      ]);
    });

    it('end with the savepoint that set them: nothing carries over to later statements', async () => {
      await seed('nest-1', 'nest-2', 'nest-3', 'nest-4');
      await data.transaction(async (manager) => {
        await TombstoneContext.run({ actor: 'inner' }, () => manager.transaction((m) => m.delete(Post, { tenant, slug: 'nest-1' })));
        await manager.delete(Post, { tenant, slug: 'nest-2' });
        await TombstoneContext.run({ actor: 'outer' }, async () => {
          await expect(
            manager.transaction(async (m) => {
              await TombstoneContext.run({ actor: 'rolled-back' }, () => m.query(`SELECT 1 FROM cap_posts WHERE false`));
              await TombstoneContext.run({ actor: 'rolled-back' }, () => m.update(Post, { tenant, slug: 'nest-4' }, { title: 't' }));
              throw new Rollback();
            }),
          ).rejects.toBeInstanceOf(Rollback);
          await manager.delete(Post, { tenant, slug: 'nest-3' });
        });
      });
      const rows = await tombstones('post');
      expect(rows.map((r) => [r.key, r.actor])).toEqual([
        ['nest-1', 'inner'],
        ['nest-2', null],
        ['nest-3', 'outer'],
      ]);
    });

    it('reach the recording API as defaults; a call may override them', async () => {
      await TombstoneContext.run({ actor: 'job', reason: 'Cleanup' }, async () => {
        await service.recordDeletion('ctx-recorded', `a-${tenant}`);
        await service.recordDeletion('ctx-recorded', `b-${tenant}`, { actor: 'override', reason: null });
      });
      const rows = (await tombstones('ctx-recorded', '')).filter((r) => r.key.endsWith(tenant));
      expect(rows.map((r) => [r.actor, r.reason])).toEqual([
        ['job', 'Cleanup'],
        ['override', null],
      ]);
    });

    it('are validated like every input', () => {
      expect(() => TombstoneContext.run({ actor: 'x'.repeat(300) }, () => 1)).toThrow(TombstoneValidationError);
    });
  });

  describe('bulk', () => {
    /** Runs `work` in a transaction; answers how often it called cap_posts' capture function through `trigger`. */
    const captureCalls = (trigger: string, work: (manager: EntityManager) => Promise<unknown>) =>
      data.transaction(async (manager) => {
        // The session's counts not yet reported may include earlier transactions': counted before and after.
        const calls = async () =>
          (
            (await manager.query(
              `SELECT coalesce(pg_stat_get_xact_function_calls(tgfoid), 0)::int AS calls FROM pg_trigger
                WHERE tgrelid = 'cap_posts'::regclass AND tgname = $1`,
              [trigger],
            )) as { calls: number }[]
          )[0].calls;
        await manager.query(`SET LOCAL track_functions = 'pl'`);
        const before = await calls();
        await work(manager);
        return (await calls()) - before;
      });

    it('a 10,000-row delete leaves 10,000 tombstones, from one capture call for the statement; rolled back, none', async () => {
      await db.sql.query(`INSERT INTO cap_posts (tenant, slug) SELECT $1, 'bulk-' || g FROM generate_series(1, 10000) g`, [tenant]);
      await rolledBack((manager) => manager.delete(Post, { tenant }));
      expect(await count('post')).toBe(0);
      // Set-based: the statement's capture runs once over all its rows, not once per row.
      const calls = await captureCalls(CAPTURE_TRIGGERS.delete, async (manager) => {
        const { affected } = await manager.delete(Post, { tenant, slug: Not(IsNull()) });
        expect(affected).toBe(10_000);
      });
      expect(calls).toBe(1);
      expect(await count('post')).toBe(10_000);
      expect(await count('post-id')).toBe(10_000);
      expect(await service.resolve('post', 'bulk-9999', tenant)).toMatchObject({ state: 'gone' });
    });

    // Renames are captured per row (each row's old and new key), so the count is kept small: what
    // it shows is that one statement renaming many rows leaves each its own move.
    it('a 1,000-row rename in one statement leaves 1,000 moves, each to its own row; an update of other columns, none', async () => {
      const rows = 1_000;
      await db.sql.query(`INSERT INTO cap_posts (tenant, slug) SELECT $1, 'r-' || g FROM generate_series(1, $2::int) g`, [tenant, rows]);
      // The capture trigger fires only for rows whose key changes (its WHEN clause).
      expect(await captureCalls(CAPTURE_TRIGGERS.update, (manager) => manager.update(Post, { tenant }, { title: 'renamed' }))).toBe(0);
      expect(await count('post')).toBe(0);
      await db.sql.query(`UPDATE cap_posts SET slug = 'renamed-' || slug WHERE tenant = $1`, [tenant]);
      expect(await count('post')).toBe(rows);
      const [{ astray }] = (await db.sql.query(
        `SELECT count(*)::int AS astray FROM tombstones
          WHERE resource_type = 'post' AND scope = $1 AND (kind <> 'moved' OR target_key IS DISTINCT FROM 'renamed-' || resource_key)`,
        [tenant],
      )) as { astray: number }[];
      expect(astray).toBe(0);
      expect(await service.resolve('post', 'r-42', tenant)).toMatchObject({ state: 'moved', target: 'renamed-r-42' });
    });

    const count = async (type: string) =>
      Number((await db.sql.query(`SELECT count(*) AS n FROM tombstones WHERE resource_type = $1 AND scope = $2`, [type, tenant]))[0].n);
  });
});
