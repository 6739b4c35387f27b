import { FLOOD_FACTOR, FLOOD_MISSES_PER_QUERY, SuggestionBudget } from './tombstone.suggestion-budget.js';

/** A budget on a clock the test moves. */
function budget(perSecond: number, burst: number) {
  let now = 1_000_000;
  const b = new SuggestionBudget(perSecond, burst, () => now);
  return {
    take: (idle = true) => b.take(idle),
    /** How many of `n` misses may query. */
    takes: (n: number) => Array.from({ length: n }, () => b.take()).filter(Boolean).length,
    wait: (ms: number) => (now += ms),
  };
}

describe('SuggestionBudget', () => {
  it('in quiet times: the burst at once, then the rate', () => {
    const b = budget(1, 2);
    expect(b.takes(5)).toBe(2);
    b.wait(1000);
    expect(b.takes(3)).toBe(1);
    b.wait(500);
    expect(b.take()).toBe(false);
    b.wait(500);
    expect(b.take()).toBe(true);
    // A long quiet spell refills the burst, no more.
    b.wait(60_000);
    expect(b.takes(5)).toBe(2);
  });

  it('a miss while a query runs gets none and spends nothing, but counts', () => {
    const b = budget(1, 2);
    expect(b.take(false)).toBe(false);
    expect(b.takes(3)).toBe(2);
  });

  it('in a flood: one query per 10,000 misses, whatever the rate, until a quiet second', () => {
    const b = budget(1, 2);
    // 1,000 misses a second for 30 seconds: the burst, while the first second is not yet a
    // flood, then one query per 10,000 misses (not one a second).
    let queries = 0;
    for (let second = 0; second < 30; second++) {
      queries += b.takes(1000);
      b.wait(1000);
    }
    expect(queries).toBe(2 + Math.floor((30_000 - FLOOD_FACTOR - 1) / FLOOD_MISSES_PER_QUERY));
    expect(queries / 30).toBeLessThan(1); // per 1,000 requests
    // A quiet second, and the second after it: the bucket again.
    b.wait(2000);
    expect(b.take()).toBe(true);
  });

  it('the flood threshold scales with the rate', () => {
    const b = budget(10, 10);
    // 150 misses a second is below 20 × 10: quiet, the bucket decides (10, then 10 a second).
    expect(b.takes(150)).toBe(10);
    b.wait(1000);
    expect(b.takes(150)).toBe(10);
  });
});
