import 'reflect-metadata';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import { Tombstoned } from '../tombstone.decorator.js';
import { rankBySimilarity, similarity, trigrams } from './tombstone.similarity.js';

describe('trigram similarity, as pg_trgm counts it', () => {
  it("gives pg_trgm's trigrams: lower case, words padded with two spaces before and one after", () => {
    expect([...trigrams('Word')].sort()).toEqual(['  w', ' wo', 'ord', 'rd ', 'wor']);
    expect([...trigrams('two words')].sort()).toEqual(['  t', '  w', ' tw', ' wo', 'ds ', 'ord', 'rds', 'two', 'wo ', 'wor']);
    expect(trigrams('--').size).toBe(0);
  });

  it("gives pg_trgm's similarity(): shared trigrams over all of both", () => {
    // SELECT similarity('word', 'two words') → 0.36363637 (the pg_trgm documentation's example)
    expect(similarity(trigrams('word'), trigrams('two words'))).toBeCloseTo(4 / 11, 6);
    expect(similarity(trigrams('same'), trigrams('SAME'))).toBe(1);
    expect(similarity(trigrams(''), trigrams('x'))).toBe(0);
  });

  it('ranks candidates: at least 0.3 alike, most alike first, then by key, at most 3, never the key itself', () => {
    const ranked = rankBySimilarity('hello-wrold', ['goodbye', 'hello-world', 'hello-wrold', 'yellow-world', 'hello-worlds', 'hello-word', 'hello-world']);
    expect(ranked).toHaveLength(3);
    expect(ranked[0]).toBe('hello-world');
    expect(ranked).not.toContain('hello-wrold');
    expect(ranked).not.toContain('goodbye');
    const scores = ranked.map((key) => similarity(trigrams('hello-wrold'), trigrams(key)));
    expect([...scores].sort((a, b) => b - a)).toEqual(scores);
    expect(rankBySimilarity('abc', ['xyz', 'qrs'])).toEqual([]);
  });
});

describe('@Tombstoned({ suggest })', () => {
  it("takes true, false or 'always', and refuses anything else", () => {
    for (const suggest of [true, false, 'always'] as const) expect(() => Tombstoned('article', { suggest })).not.toThrow();
    expect(() => Tombstoned('article', { suggest: 'yes' as never })).toThrow(TombstoneConfigurationError);
    expect(() => Tombstoned('article', { suggest: 'yes' as never })).toThrow("`suggest` must be true, false or 'always', not \"yes\".");
  });
});

describe('@Tombstoned({ suggest }) in OpenAPI', () => {
  const notFoundSchema = (options: Parameters<typeof Tombstoned>[1]) => {
    class Controller {
      findOne(): null {
        return null;
      }
    }
    const descriptor = Object.getOwnPropertyDescriptor(Controller.prototype, 'findOne')!;
    Tombstoned('article', options)(Controller.prototype, 'findOne', descriptor);
    const responses = Reflect.getMetadata('swagger/apiResponse', descriptor.value) as Record<string, { schema: { properties: Record<string, unknown> } }>;
    return responses[404].schema;
  };

  it('documents the optional `suggestions` member of a 404 on a suggest route only', () => {
    expect(notFoundSchema({ suggest: true }).properties.suggestions).toMatchObject({ type: 'array', maxItems: 3 });
    expect(notFoundSchema({ suggest: 'always' }).properties).toHaveProperty('suggestions');
    expect(notFoundSchema({}).properties).not.toHaveProperty('suggestions');
    expect((notFoundSchema({ suggest: true }) as unknown as { required: string[] }).required).not.toContain('suggestions');
  });
});

