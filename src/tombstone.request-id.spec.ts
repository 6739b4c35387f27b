import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import type { ModuleRef, ModulesContainer } from '@nestjs/core';
import { ClsService } from 'nestjs-cls';
import { LogBudget } from './tombstone.log-budget.js';
import type { ResolvedTombstoneOptions } from './tombstone.options.js';
import { resolveTombstoneOptions } from './tombstone.options-resolve.js';
import { TombstoneRequestIds } from './tombstone.request-id.js';
import type { TombstoneRequest } from './tombstone.types.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const request = (headers: Record<string, string> = {}, extra: Record<string, unknown> = {}): TombstoneRequest =>
  ({ method: 'GET', url: '/items/x', headers, ...extra }) as TombstoneRequest;

/** A ModuleRef that knows nestjs-cls's ClsService as `cls`, or nothing. */
function moduleRefWith(cls?: { isActive(): boolean; getId(): unknown }): ModuleRef {
  return {
    get: (token: unknown) => {
      if (cls !== undefined && token === ClsService) return cls;
      throw new Error('unknown element');
    },
  } as unknown as ModuleRef;
}

/** The app's modules, as far as the lookup of ClsService reads them: one module with these provider tokens. */
function modulesWith(...tokens: unknown[]): ModulesContainer {
  return new Map([['app', { providers: new Map(tokens.map((token) => [token, {}])) }]]) as unknown as ModulesContainer;
}

async function requestIds(
  options: Parameters<typeof resolveTombstoneOptions>[0],
  moduleRef = moduleRefWith(),
  modules = modulesWith(ClsService),
): Promise<TombstoneRequestIds> {
  const ids = new TombstoneRequestIds(resolveTombstoneOptions(options) as ResolvedTombstoneOptions, moduleRef, modules);
  await ids.onModuleInit();
  return ids;
}

describe('TombstoneRequestIds', () => {
  let warn: jest.SpiedFunction<Logger['warn']>;

  beforeEach(() => {
    warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
  });

  afterEach(() => warn.mockRestore());

  describe('without requestId nor ClsModule', () => {
    it('takes a sane header, or makes a UUID, as before', async () => {
      const ids = await requestIds({});
      expect(ids.of(request({ 'x-request-id': 'from-client' }))).toBe('from-client');
      expect(ids.of(request({ 'x-request-id': 'a b' }))).toMatch(UUID);
      expect(ids.of(request())).toMatch(UUID);
      expect(warn).not.toHaveBeenCalled();
    });
  });

  describe('the requestId option', () => {
    it("uses the function's id, over the client's header", async () => {
      const ids = await requestIds({ requestId: (req: { id?: string }) => req.id });
      expect(ids.of(request({ 'x-request-id': 'from-client' }, { id: 'req-42' }))).toBe('req-42');
    });

    it('undefined falls back to the header, then a UUID, and is not logged', async () => {
      const ids = await requestIds({ requestId: () => undefined });
      expect(ids.of(request({ 'x-request-id': 'from-client' }))).toBe('from-client');
      expect(ids.of(request())).toMatch(UUID);
      expect(warn).not.toHaveBeenCalled();
    });

    it.each([
      ['CRLF', 'abc\r\nSet-Cookie: x=1'],
      ['10 KB', 'a'.repeat(10_240)],
      ['a space', 'a b'],
      ['empty', ''],
      ['non-ASCII', 'ïd'],
      ['a number', 42],
      ['null', null],
      ['an object', { id: 'x' }],
      ['a promise', Promise.resolve('req-1')],
    ])('a value with %s falls back to the header and is logged, without the value itself', async (_label, value) => {
      const ids = await requestIds({ requestId: () => value as string });
      expect(ids.of(request({ 'x-request-id': 'from-client' }))).toBe('from-client');
      expect(ids.of(request())).toMatch(UUID);
      expect(warn).toHaveBeenCalledTimes(2);
      const line = String(warn.mock.calls[0][0]);
      expect(line).toMatch(/^Tombstone answer: the requestId function returned /);
      expect(line).toContain('x-request-id header');
      expect(line).not.toMatch(/[\r\n]/);
      expect(line.length).toBeLessThan(500);
    });

    it('a function that throws falls back, and the answer is still made', async () => {
      const ids = await requestIds({
        requestId: () => {
          throw new Error('no user\r\nyet');
        },
      });
      expect(ids.of(request({ 'x-request-id': 'from-client' }))).toBe('from-client');
      expect(warn.mock.calls[0][0]).toMatch(/^Tombstone answer: the requestId function threw \(no user\\r\\nyet\)/);
    });

    it('a flood of unusable ids is logged at a bounded rate', async () => {
      const ids = await requestIds({ requestId: () => 'bad id' });
      for (let i = 0; i < 1000; i++) expect(ids.of(request())).toMatch(UUID);
      expect(warn).toHaveBeenCalledTimes(10);
    });

    it('is used instead of nestjs-cls, which is not asked', async () => {
      const cls = { isActive: jest.fn(() => true), getId: jest.fn(() => 'cls-id') };
      const ids = await requestIds({ requestId: () => 'app-id' }, moduleRefWith(cls));
      expect(ids.of(request())).toBe('app-id');
      expect(cls.isActive).not.toHaveBeenCalled();
    });

    it('is checked at start', () => {
      expect(() => resolveTombstoneOptions({ requestId: 'x-request-id' as never })).toThrow(
        /requestId must be a function of the request that returns its id \(got a value of type string\)[\s\S]*requestIdHeader/,
      );
      expect(() => resolveTombstoneOptions({ requestId: null as never })).toThrow(/got a value of type null/);
    });
  });

  describe('nestjs-cls', () => {
    it("uses its id while it is active, over the client's header", async () => {
      const ids = await requestIds({}, moduleRefWith({ isActive: () => true, getId: () => 'cls-7' }));
      expect(ids.of(request({ 'x-request-id': 'from-client' }))).toBe('cls-7');
    });

    it('not active, or without an id: the header, then a UUID, not logged', async () => {
      const inactive = await requestIds({}, moduleRefWith({ isActive: () => false, getId: () => 'never' }));
      expect(inactive.of(request({ 'x-request-id': 'from-client' }))).toBe('from-client');
      const idless = await requestIds({}, moduleRefWith({ isActive: () => true, getId: () => undefined }));
      expect(idless.of(request())).toMatch(UUID);
      expect(warn).not.toHaveBeenCalled();
    });

    it('an unusable id, or a ClsService that throws, falls back and is logged', async () => {
      const hostile = await requestIds({}, moduleRefWith({ isActive: () => true, getId: () => 'x\r\ny' }));
      expect(hostile.of(request({ 'x-request-id': 'from-client' }))).toBe('from-client');
      expect(warn.mock.calls[0][0]).toMatch(/^Tombstone answer: nestjs-cls's request id is a string that is not a request id/);
      const throwing = await requestIds(
        {},
        moduleRefWith({
          isActive: () => true,
          getId: () => {
            throw new Error('broken');
          },
        }),
      );
      expect(throwing.of(request())).toMatch(UUID);
      expect(warn.mock.calls[1][0]).toMatch(/^Tombstone answer: nestjs-cls could not give its id \(broken\)/);
    });

    it('installed but ClsModule not imported: not used', async () => {
      const ids = await requestIds({}, moduleRefWith(), modulesWith());
      expect(ids.of(request({ 'x-request-id': 'from-client' }))).toBe('from-client');
    });

    it('not looked up at all when no module registers a ClsService (the package is not even loaded)', async () => {
      const get = jest.fn(() => ({ isActive: () => true, getId: () => 'cls-1' }));
      const ids = await requestIds({}, { get } as unknown as ModuleRef, modulesWith(class Other {}, 'TOKEN'));
      expect(get).not.toHaveBeenCalled();
      expect(ids.of(request({ 'x-request-id': 'from-client' }))).toBe('from-client');
    });
  });
});

describe('LogBudget', () => {
  it('lets a burst through, then one line per interval, and counts the lines it held back', () => {
    const now = jest.spyOn(Date, 'now').mockReturnValue(1_000_000);
    try {
      const budget = new LogBudget(3, 1000);
      expect([budget.take(), budget.take(), budget.take(), budget.take(), budget.take()]).toEqual([0, 0, 0, undefined, undefined]);
      now.mockReturnValue(1_000_999);
      expect(budget.take()).toBeUndefined();
      now.mockReturnValue(1_001_500);
      expect(budget.take()).toBe(3);
      expect(budget.take()).toBeUndefined();
    } finally {
      now.mockRestore();
    }
  });
});
