import { TombstoneCycleError, TombstoneValidationError } from '../tombstone.exceptions.js';
import { collapseChains, collapseMoves } from './tombstone.chains.js';

const none = () => undefined;

describe('collapseChains', () => {
  it('follows the batch to a key it does not redirect', () => {
    const finals = collapseChains(
      new Map<string, string | null>([
        ['a', 'b'],
        ['b', 'c'],
        ['c', 'd'],
      ]),
      none,
      () => {
        throw new Error('no cycle here');
      },
    );
    expect([...finals]).toEqual([
      ['a', 'd'],
      ['b', 'd'],
      ['c', 'd'],
    ]);
  });

  it('stops at a key the batch gives a tombstone that is not a redirect', () => {
    const finals = collapseChains(new Map<string, string | null>([['a', 'b'], ['b', null]]), () => 'elsewhere', none);
    expect([...finals]).toEqual([['a', 'b']]);
  });

  it("takes one hop of the table's redirects, then goes on only through the batch", () => {
    // The table: x → y. The batch: a → x, y → z.
    const table = new Map([['x', 'y']]);
    const finals = collapseChains(new Map<string, string | null>([['a', 'x'], ['y', 'z']]), (key) => table.get(key), none);
    expect(finals.get('a')).toBe('z');
    expect(finals.get('y')).toBe('z');
  });

  it('does not take a second table hop in a row (the table has no chains)', () => {
    const table = new Map([
      ['x', 'y'],
      ['y', 'w'],
    ]);
    const finals = collapseChains(new Map<string, string | null>([['a', 'x']]), (key) => table.get(key), none);
    expect(finals.get('a')).toBe('y');
  });

  it('reports each source whose walk comes back, with its path, and leaves it out', () => {
    const cycles: [string, string[]][] = [];
    const table = new Map([['k', 'a']]);
    const finals = collapseChains(new Map<string, string | null>([['a', 'k'], ['b', 'c']]), (key) => table.get(key), (source, path) =>
      cycles.push([source, path]),
    );
    expect(cycles).toEqual([['a', ['a', 'k', 'a']]]);
    expect([...finals]).toEqual([['b', 'c']]);
  });
});

describe('collapseMoves', () => {
  it('maps each source to where it finally lives', () => {
    expect([...collapseMoves('t', [{ from: 'a', to: 'b' }, { from: 'b', to: 'c' }])]).toEqual([
      ['a', 'c'],
      ['b', 'c'],
    ]);
  });

  it('refuses a move onto itself as a cycle of one', () => {
    const error = (() => {
      try {
        collapseMoves('t', [{ from: 'a', to: 'a' }]);
      } catch (e) {
        return e;
      }
    })() as TombstoneCycleError;
    expect(error).toBeInstanceOf(TombstoneCycleError);
    expect(error.cycle).toEqual(['a', 'a']);
    expect(error.message).toContain('onto itself');
  });

  it('refuses a cycle, naming it from where it starts', () => {
    expect(() => collapseMoves('t', [{ from: 'x', to: 'a' }, { from: 'a', to: 'b' }, { from: 'b', to: 'a' }])).toThrow(
      expect.objectContaining({ name: 'TombstoneCycleError', cycle: ['a', 'b', 'a'] }),
    );
  });

  it('refuses a source with two targets, and accepts the same move twice', () => {
    expect(() => collapseMoves('t', [{ from: 'a', to: 'b' }, { from: 'a', to: 'c' }])).toThrow(TombstoneValidationError);
    expect([...collapseMoves('t', [{ from: 'a', to: 'b' }, { from: 'a', to: 'b' }])]).toEqual([['a', 'b']]);
  });
});
