import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import { KEY_REUSE_SQLSTATE, TombstoneKeyReuseError, TombstoneTracked, trackedDeclarations } from './tombstone.tracked.js';

describe('@TombstoneTracked', () => {
  it('keeps every declaration, in source order, with defaults applied', () => {
    @TombstoneTracked({ type: 'article', key: 'slug', scope: 'tenantId' })
    @TombstoneTracked({ type: 'article-id', key: 'id', onDelete: 'hidden', reuse: 'forbid', permanent: false })
    class Article {}
    expect(trackedDeclarations(Article)).toEqual([
      { type: 'article', key: 'slug', scope: 'tenantId', onDelete: 'gone', reuse: 'allow', permanent: true },
      { type: 'article-id', key: 'id', onDelete: 'hidden', reuse: 'forbid', permanent: false },
    ]);
  });

  it('answers nothing for an untracked class or a non-class', () => {
    class Plain {}
    expect(trackedDeclarations(Plain)).toEqual([]);
    expect(trackedDeclarations({})).toEqual([]);
    expect(trackedDeclarations(undefined)).toEqual([]);
  });

  it('refuses the same type on the same key twice', () => {
    expect(() => {
      @TombstoneTracked({ type: 'a', key: 'slug' })
      @TombstoneTracked({ type: 'a', key: 'slug' })
      class Twice {}
      return Twice;
    }).toThrow(/declares type 'a' on 'slug' twice/);
  });

  it.each([
    [null, /pass an options object/],
    [{ key: 'slug' }, /type must be a non-empty string/],
    [{ type: '', key: 'slug' }, /type must be a non-empty string/],
    [{ type: 'a' }, /key must name the property/],
    [{ type: 'a', key: '' }, /key must name the property/],
    [{ type: 'a', key: 'slug', scope: '' }, /scope must name a property/],
    [{ type: 'a', key: 'slug', onDelete: 'gone-ish' }, /onDelete must be 'gone' or 'hidden'/],
    [{ type: 'a', key: 'slug', reuse: 'never' }, /reuse must be 'allow' or 'forbid'/],
    [{ type: 'a', key: 'slug', permanent: 'yes' }, /permanent must be true or false/],
    [{ type: 'a', key: 'slug', onDelte: 'hidden' }, /unknown option\(s\): onDelte/],
  ])('rejects %j when decorating, with an example of the right shape', (options, message) => {
    let error: unknown;
    try {
      TombstoneTracked(options as never);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(TombstoneConfigurationError);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).toContain("Example: @TombstoneTracked({ type: 'article'");
  });
});

describe('TombstoneKeyReuseError.from', () => {
  const detail = JSON.stringify({ type: 'handle', key: 'ada', scope: 'acme', kind: 'deleted' });

  it("reads a pg error and TypeORM's QueryFailedError wrapping one", () => {
    const pgError = Object.assign(new Error('raised'), { code: KEY_REUSE_SQLSTATE, detail });
    for (const error of [pgError, { driverError: pgError }]) {
      const reuse = TombstoneKeyReuseError.from(error);
      expect(reuse).toBeInstanceOf(TombstoneKeyReuseError);
      expect(reuse).toMatchObject({ type: 'handle', key: 'ada', scope: 'acme', kind: 'deleted', cause: error });
      expect(reuse?.message).toContain("The handle key 'ada' has a tombstone (deleted)");
    }
  });

  it('answers undefined for anything else', () => {
    expect(TombstoneKeyReuseError.from(new Error('x'))).toBeUndefined();
    expect(TombstoneKeyReuseError.from({ code: '23505', detail })).toBeUndefined();
    expect(TombstoneKeyReuseError.from({ code: KEY_REUSE_SQLSTATE, detail: 'not json' })).toBeUndefined();
    expect(TombstoneKeyReuseError.from(null)).toBeUndefined();
    expect(TombstoneKeyReuseError.from(undefined)).toBeUndefined();
  });

  it('passes its own errors through', () => {
    const error = new TombstoneKeyReuseError('a', 'b', '', 'moved');
    expect(TombstoneKeyReuseError.from(error)).toBe(error);
  });
});
