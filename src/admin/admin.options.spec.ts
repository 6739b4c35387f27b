import { CanActivate } from '@nestjs/common';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import { resolveTombstoneAdminOptions, type TombstoneAdminOptions } from './admin.options.js';

class AllowAll implements CanActivate {
  canActivate(): boolean {
    return true;
  }
}

/** Resolves options that may be invalid on purpose and returns the error's message. */
function configurationErrorOf(options: unknown): string {
  try {
    resolveTombstoneAdminOptions(options as TombstoneAdminOptions);
  } catch (error) {
    expect(error).toBeInstanceOf(TombstoneConfigurationError);
    expect((error as Error).message.startsWith('TombstoneAdminModule: ')).toBe(true);
    return (error as Error).message;
  }
  throw new Error(`expected ${JSON.stringify(options)} to be rejected, but it was accepted`);
}

describe('resolveTombstoneAdminOptions', () => {
  it('applies every default', () => {
    expect(resolveTombstoneAdminOptions({ guard: AllowAll })).toStrictEqual({
      guard: AllowAll,
      allowWithoutAccessControl: false,
      actor: undefined,
      alternativeHosts: [],
      maxResolveKeys: 1000,
      maxPageSize: 500,
      maxImportRows: 200_000,
      maxImportBytes: 64 * 1024 * 1024,
      ui: false,
    });
  });

  it('turns ui into false or { guardPage }, and refuses anything else', () => {
    expect(resolveTombstoneAdminOptions({ guard: AllowAll, ui: true }).ui).toStrictEqual({ guardPage: false });
    expect(resolveTombstoneAdminOptions({ guard: AllowAll, ui: {} }).ui).toStrictEqual({ guardPage: false });
    expect(resolveTombstoneAdminOptions({ guard: AllowAll, ui: { guardPage: true } }).ui).toStrictEqual({ guardPage: true });
    for (const ui of ['yes', 1, null, { guardPage: 'yes' }, { path: '/x' }]) {
      expect(configurationErrorOf({ guard: AllowAll, ui })).toMatch(/ui must be true, false or \{ guardPage/);
    }
  });

  it('takes undefined as not given, and gives each resolution its own host list', () => {
    const first = resolveTombstoneAdminOptions({ guard: AllowAll, maxPageSize: undefined });
    expect(first.maxPageSize).toBe(500);
    first.alternativeHosts.push('evil.example');
    expect(resolveTombstoneAdminOptions({ guard: AllowAll }).alternativeHosts).toEqual([]);
  });

  it('keeps what it is given, host names in lower case', () => {
    const actor = { header: 'x-admin-user' };
    expect(
      resolveTombstoneAdminOptions({ guard: AllowAll, actor, alternativeHosts: ['Shop.Example.com:8443'], maxResolveKeys: 10_000, maxImportBytes: 1 }),
    ).toMatchObject({ actor, alternativeHosts: ['shop.example.com:8443'], maxResolveKeys: 10_000, maxImportBytes: 1 });
  });

  it('rejects an unknown option, naming the known ones', () => {
    const message = configurationErrorOf({ guard: AllowAll, maxPage: 10 });
    expect(message).toContain("unknown option 'maxPage'.");
    expect(message).toContain(
      'Use only: guard, allowWithoutAccessControl, actor, alternativeHosts, maxResolveKeys, maxPageSize, maxImportRows, maxImportBytes, ui.',
    );
    expect(configurationErrorOf({ guard: AllowAll, toString: 1 })).toContain("unknown option 'toString'.");
  });

  it('refuses to start without an access control', () => {
    expect(configurationErrorOf({})).toContain('the admin endpoints need an access control, and none was given.');
    expect(configurationErrorOf({ guard: AllowAll, allowWithoutAccessControl: true })).toContain('not both');
    expect(configurationErrorOf({ guard: 'AllowAll' })).toContain('guard must be a guard class or an object with canActivate().');
  });

  it.each([
    ['maxResolveKeys', 0, 10_000],
    ['maxPageSize', 10_001, 10_000],
    ['maxImportRows', 1.5, 10_000_000],
    ['maxImportBytes', null, 4 * 1024 * 1024 * 1024],
  ])('rejects %s %j', (name, value, max) => {
    expect(configurationErrorOf({ guard: AllowAll, [name]: value })).toContain(`${name} must be a whole number from 1 to ${max}.`);
  });

  it.each([[{ header: 'x admin' }], ['x-admin-user'], [{ header: 'x-a', param: 'b' }]])('rejects actor %j', (actor) => {
    expect(configurationErrorOf({ guard: AllowAll, actor })).toContain('actor must be { header: name } or a function of the request.');
  });

  it.each([[['not a host/']], ['shop.example.com'], [[42]]])('rejects alternativeHosts %j', (alternativeHosts) => {
    expect(configurationErrorOf({ guard: AllowAll, alternativeHosts })).toContain('alternativeHosts must be a list of host names');
  });
});
