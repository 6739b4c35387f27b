import { Controller, Get, HttpCode, Next, Param, Post, Req, Res } from '@nestjs/common';
import { RESPONSE_PASSTHROUGH_METADATA, ROUTE_ARGS_METADATA } from '@nestjs/common/constants.js';
import { TombstoneCacheTags } from './tombstone.cache-tags.js';
import { Tombstoned } from './tombstone.decorator.js';
import { TombstoneConfigurationError } from './tombstone.exceptions.js';
import { TombstoneMissException } from './tombstone.miss.js';
import { resolveTombstoneOptions } from './tombstone.options-resolve.js';

const routeArgs = (controller: object, name: string) => Reflect.getMetadata(ROUTE_ARGS_METADATA, controller, name) as Record<string, { index: number }> | undefined;
const passthrough = (controller: object, name: string) => Reflect.getMetadata(RESPONSE_PASSTHROUGH_METADATA, controller, name) as boolean | undefined;

/** A response as Express's, on an app whose TombstoneModule has cache tags on. */
function taggedResponse(params: Record<string, string>) {
  const host = {};
  const tags = new TombstoneCacheTags(resolveTombstoneOptions({ cacheTags: true }), { httpAdapter: { getInstance: () => host } } as never);
  tags.onModuleInit();
  const headers = new Map<string, string>();
  return {
    headers,
    app: host,
    req: { method: 'GET', url: '/', headers: {}, params },
    getHeader: (name: string) => headers.get(name.toLowerCase()),
    setHeader: (name: string, value: string) => void headers.set(name.toLowerCase(), value),
  };
}

describe('@Tombstoned({ cacheTags })', () => {
  it('refuses a cacheTags that is not a boolean', () => {
    expect(() => Tombstoned('article', { cacheTags: 'yes' as unknown as boolean })).toThrow(new TombstoneConfigurationError('@Tombstoned(): `cacheTags` must be true or false.'));
  });

  it('has Nest pass the response, with passthrough, after the handler’s own arguments', () => {
    @Controller('a')
    class Articles {
      @Get(':slug')
      @Tombstoned('article', { param: 'slug', cacheTags: true })
      findOne(@Req() _request: unknown, @Param('slug') slug: string) {
        return { slug };
      }
    }
    expect(Object.values(routeArgs(Articles, 'findOne') ?? {}).map((arg) => arg.index).sort()).toEqual([0, 1, 2]);
    expect(routeArgs(Articles, 'findOne')).toHaveProperty('1:2');
    expect(passthrough(Articles, 'findOne')).toBe(true);
  });

  it('puts the response after every parameter the handler declares, decorated or not', () => {
    @Controller('a')
    class Articles {
      @Get(':slug')
      @Tombstoned('article', { param: 'slug', cacheTags: true })
      findOne(@Param('slug') slug: string, _unused?: string, _other?: string) {
        return { slug };
      }
    }
    expect(routeArgs(Articles, 'findOne')).toHaveProperty('1:3');
  });

  it('leaves routes without cacheTags exactly as they were', () => {
    class Plain {
      @Get(':slug')
      findOne(@Param('slug') slug: string) {
        return { slug };
      }
    }
    @Controller('a')
    class Decorated {
      @Get(':slug')
      @Tombstoned('article', { param: 'slug' })
      findOne(@Param('slug') slug: string) {
        return { slug };
      }
    }
    expect(routeArgs(Decorated, 'findOne')).toEqual(routeArgs(Plain, 'findOne'));
    expect(passthrough(Decorated, 'findOne')).toBeUndefined();
  });

  it('on a controller, passes the response to each route, and leaves a base class alone', () => {
    class Base {
      @Get(':slug/inherited')
      inherited(@Param('slug') slug: string) {
        return { slug };
      }
    }
    @Controller('a')
    @Tombstoned('article', { param: 'slug', cacheTags: true })
    class Articles extends Base {
      @Get(':slug')
      findOne(@Param('slug') slug: string) {
        return { slug };
      }

      @Post(':slug')
      @Tombstoned('article', { param: 'slug' })
      untagged(@Param('slug') slug: string) {
        return { slug };
      }
    }
    expect(routeArgs(Articles, 'findOne')).toHaveProperty('1:1');
    expect(routeArgs(Articles, 'inherited')).toHaveProperty('1:1');
    expect(passthrough(Articles, 'inherited')).toBe(true);
    // A handler's own decorator wins: no response for it.
    expect(Object.keys(routeArgs(Articles, 'untagged') ?? {})).toEqual(['5:0']);
    expect(Object.keys(routeArgs(Base, 'inherited') ?? {})).toEqual(['5:0']);
    expect(passthrough(Base, 'inherited')).toBeUndefined();
  });

  it.each([
    ['@Res()', Res()],
    ['@Next()', Next()],
  ])('refuses a handler that writes its own response with %s', (_label, decorator) => {
    expect(() => {
      @Controller('a')
      class Articles {
        @Get(':slug')
        @Tombstoned('article', { param: 'slug', cacheTags: true })
        findOne(@Param('slug') slug: string, @(decorator as ParameterDecorator) _response: unknown) {
          return { slug };
        }
      }
      return Articles;
    }).toThrow(/@Tombstoned\(\{ cacheTags: true \}\): Articles\.findOne\(\) writes its own response \(@Res\(\) or @Next\(\)\)\.[\s\S]*Potential solutions[\s\S]*@Res\(\{ passthrough: true \}\)/);
  });

  it('takes a handler with @Res({ passthrough: true }) of its own', () => {
    @Controller('a')
    class Articles {
      @Get(':slug')
      @Tombstoned('article', { param: 'slug', cacheTags: true })
      findOne(@Param('slug') slug: string, @Res({ passthrough: true }) _response: unknown) {
        return { slug };
      }
    }
    expect(routeArgs(Articles, 'findOne')).toHaveProperty('1:2');
  });

  describe('the wrapper', () => {
    @Controller('a')
    class Articles {
      readonly seen: unknown[][] = [];

      @Get(':slug')
      @Tombstoned('article', { param: 'slug', cacheTags: true })
      findOne(@Param('slug') slug: string, ...rest: unknown[]) {
        this.seen.push([slug, ...rest]);
        return slug === 'live' ? { slug } : null;
      }

      @Get(':slug/async')
      @Tombstoned('article', { param: 'slug', cacheTags: true })
      async findAsync(@Param('slug') slug: string) {
        return slug === 'live' ? { slug } : null;
      }

      @Post(':slug')
      @HttpCode(204)
      @Tombstoned('article', { param: 'slug', cacheTags: true })
      remove(): void {}
    }
    const call = (method: string, ...args: unknown[]) => (Articles.prototype as unknown as Record<string, (...a: unknown[]) => unknown>)[method].apply(articles, args);
    let articles: Articles;
    beforeEach(() => {
      articles = new Articles();
    });

    it('gives the handler its own arguments only, and tags what it found', () => {
      const response = taggedResponse({ slug: 'live' });
      expect(call('findOne', 'live', response)).toEqual({ slug: 'live' });
      expect(articles.seen).toEqual([['live']]);
      expect(response.headers.get('surrogate-key')).toBe('article/live');
    });

    it('tags what a promise found', async () => {
      const response = taggedResponse({ slug: 'live' });
      await expect(call('findAsync', 'live', response)).resolves.toEqual({ slug: 'live' });
      expect(response.headers.get('surrogate-key')).toBe('article/live');
    });

    it('tags no miss: the filter answers it', async () => {
      const response = taggedResponse({ slug: 'gone' });
      expect(() => call('findOne', 'gone', response)).toThrow(TombstoneMissException);
      await expect(call('findAsync', 'gone', response)).rejects.toBeInstanceOf(TombstoneMissException);
      expect(response.headers.size).toBe(0);
    });

    it('tags no empty answer of a 204 route', () => {
      const response = taggedResponse({ slug: 'live' });
      expect(call('remove', response)).toBeUndefined();
      expect(response.headers.size).toBe(0);
    });

    it('called directly, as a unit test would, passes every argument on', () => {
      expect(call('findOne', 'live')).toEqual({ slug: 'live' });
      expect(articles.seen).toEqual([['live']]);
    });
  });
});
