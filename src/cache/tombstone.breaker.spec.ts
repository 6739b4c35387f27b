import { jest } from '@jest/globals';
import { TombstoneBreaker, TombstoneCircuitOpenError } from './tombstone.breaker.js';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import type { TombstoneModuleOptions } from '../tombstone.options.js';
import { resolveTombstoneOptions } from '../tombstone.options-resolve.js';

const TIMEOUT = 100;

function deferred<T = string>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

/** A breaker on a clock the test moves, with its log lines kept. */
function setup(circuitBreaker: TombstoneModuleOptions['circuitBreaker'] = { failures: 3, cooldownMs: 1000, maxCooldownMs: 4000 }, maxActive = 10) {
  const clock = { now: 0 };
  const lines: string[] = [];
  const logger = { log: (m: unknown) => void lines.push(`log: ${String(m)}`), warn: (m: unknown) => void lines.push(`warn: ${String(m)}`) };
  const settings = resolveTombstoneOptions({ circuitBreaker }).circuitBreaker;
  const breaker = new TombstoneBreaker(settings, TIMEOUT, maxActive, logger, () => clock.now);
  /** A lookup that the test ends, and how many times the breaker called it. */
  const lookup = jest.fn(() => Promise.resolve('answer'));
  const fail = () => breaker.run(() => Promise.reject(new Error('connection refused')));
  const succeed = () => breaker.run(() => Promise.resolve('answer'));
  const opened = async () => {
    for (let i = 0; i < 3; i++) await expect(fail()).rejects.toThrow('connection refused');
    expect(breaker.state).toBe('open');
  };
  return { breaker, clock, lines, lookup, fail, succeed, opened };
}

beforeEach(() => {
  jest.useFakeTimers();
});

afterEach(() => {
  jest.useRealTimers();
});

describe('TombstoneBreaker', () => {
  it('passes answers and errors through while closed; a success resets the count of failures', async () => {
    const { breaker, fail, succeed, lines } = setup();
    await expect(succeed()).resolves.toBe('answer');
    for (let round = 0; round < 3; round++) {
      await expect(fail()).rejects.toThrow('connection refused');
      await expect(fail()).rejects.toThrow('connection refused');
      await expect(succeed()).resolves.toBe('answer');
    }
    expect(breaker.state).toBe('closed');
    expect(lines).toEqual([]);
  });

  it('opens after `failures` in a row, logs it once with the cause, then refuses lookups without calling them', async () => {
    const { breaker, opened, lookup, lines } = setup();
    await opened();
    expect(lines).toEqual([
      'warn: Tombstone lookups: circuit open after 3 failed lookups in a row (the last: connection refused). ' +
        'Misses that need the database get the plain 404 without a query for 1000 ms, then one lookup probes it.',
    ]);
    for (let i = 0; i < 50; i++) await expect(breaker.run(lookup)).rejects.toBeInstanceOf(TombstoneCircuitOpenError);
    expect(lookup).not.toHaveBeenCalled();
    expect(breaker.refused).toBe(50);
    expect(lines).toHaveLength(1);
  });

  it('counts a lookup that does not answer within the time budget as a failure', async () => {
    const { breaker, lookup } = setup();
    const never = () => new Promise<string>(() => undefined);
    for (let i = 0; i < 3; i++) {
      const pending = breaker.run(never);
      jest.advanceTimersByTime(TIMEOUT - 1);
      expect(breaker.state).toBe('closed');
      jest.advanceTimersByTime(1);
      await expect(pending).rejects.toThrow(`lookup timed out after ${TIMEOUT} ms`);
    }
    expect(breaker.state).toBe('open');
    await expect(breaker.run(lookup)).rejects.toBeInstanceOf(TombstoneCircuitOpenError);
    expect(lookup).not.toHaveBeenCalled();
  });

  it('after the cool-down, lets exactly one probe through at a time; its answer closes the circuit', async () => {
    const { breaker, clock, opened, lookup, lines } = setup();
    await opened();
    clock.now = 999;
    await expect(breaker.run(lookup)).rejects.toBeInstanceOf(TombstoneCircuitOpenError);
    clock.now = 1000;
    const probe = deferred();
    const probing = breaker.run(() => probe.promise);
    expect(breaker.state).toBe('half-open');
    // While the probe runs, the others are still refused, at once.
    for (let i = 0; i < 5; i++) await expect(breaker.run(lookup)).rejects.toBeInstanceOf(TombstoneCircuitOpenError);
    expect(lookup).not.toHaveBeenCalled();
    clock.now = 2500;
    probe.resolve('probed');
    await expect(probing).resolves.toBe('probed');
    expect(breaker.state).toBe('closed');
    await expect(breaker.run(lookup)).resolves.toBe('answer');
    expect(lookup).toHaveBeenCalledTimes(1);
    expect(lines.slice(1)).toEqual([
      'log: Tombstone lookups: circuit half-open, one lookup probes the database.',
      'log: Tombstone lookups: circuit closed, the database answers again (open for 2.5 s; 6 lookups got the plain 404 without a query).',
    ]);
  });

  it('opens again when the probe fails or times out, for twice the cool-down each time, up to maxCooldownMs', async () => {
    const { breaker, clock, opened, fail, lines } = setup();
    await opened();
    // Probes at 1000 (fails), +2000 (times out), +4000 (fails), +4000 (the cap).
    clock.now = 1000;
    await expect(fail()).rejects.toThrow('connection refused');
    expect(breaker.state).toBe('open');
    clock.now = 2999;
    await expect(fail()).rejects.toBeInstanceOf(TombstoneCircuitOpenError);
    clock.now = 3000;
    const stuck = breaker.run(() => new Promise<string>(() => undefined));
    expect(breaker.state).toBe('half-open');
    jest.advanceTimersByTime(TIMEOUT);
    await expect(stuck).rejects.toThrow('timed out');
    expect(breaker.state).toBe('open');
    clock.now = 3000 + 3999;
    await expect(fail()).rejects.toBeInstanceOf(TombstoneCircuitOpenError);
    clock.now = 3000 + 4000;
    await expect(fail()).rejects.toThrow('connection refused');
    clock.now = 7000 + 3999;
    await expect(fail()).rejects.toBeInstanceOf(TombstoneCircuitOpenError);
    clock.now = 7000 + 4000;
    await expect(fail()).rejects.toThrow('connection refused');
    expect(lines.filter((line) => line.startsWith('warn: '))).toEqual([
      expect.stringContaining('circuit open after 3 failed lookups in a row'),
      'warn: Tombstone lookups: circuit open again, the probe failed (connection refused); the next probe in 2000 ms.',
      `warn: Tombstone lookups: circuit open again, the probe failed (lookup timed out after ${TIMEOUT} ms); the next probe in 4000 ms.`,
      'warn: Tombstone lookups: circuit open again, the probe failed (connection refused); the next probe in 4000 ms.',
      'warn: Tombstone lookups: circuit open again, the probe failed (connection refused); the next probe in 4000 ms.',
    ]);
    expect(lines.filter((line) => line.includes('half-open'))).toHaveLength(4);
  });

  it('starts again from cooldownMs once closed', async () => {
    const { breaker, clock, opened, fail, succeed, lines } = setup();
    await opened();
    clock.now = 1000;
    await expect(fail()).rejects.toThrow('connection refused'); // next probe in 2000 ms
    clock.now = 3000;
    await expect(succeed()).resolves.toBe('answer');
    expect(breaker.state).toBe('closed');
    lines.length = 0;
    clock.now = 10_000;
    await opened();
    expect(lines[0]).toContain('for 1000 ms');
    clock.now = 11_000;
    await expect(succeed()).resolves.toBe('answer');
    expect(breaker.state).toBe('closed');
  });

  it('ignores how lookups that started before the circuit opened end', async () => {
    const { breaker, clock, fail, succeed } = setup();
    const early = [deferred(), deferred(), deferred(), deferred()];
    const running = early.map((d) => breaker.run(() => d.promise));
    await Promise.all([0, 1, 2].map(() => expect(fail()).rejects.toThrow()));
    expect(breaker.state).toBe('open');
    // An answer from before does not close it...
    early[0].resolve('late');
    await expect(running[0]).resolves.toBe('late');
    expect(breaker.state).toBe('open');
    // ...nor does a failure from before make a probe of itself.
    clock.now = 1000;
    const probe = deferred();
    const probing = breaker.run(() => probe.promise);
    early[1].reject(new Error('late failure'));
    await expect(running[1]).rejects.toThrow('late failure');
    expect(breaker.state).toBe('half-open');
    probe.resolve('probed');
    await probing;
    expect(breaker.state).toBe('closed');
    // Once closed, failures from before the opening are not counted against the database now.
    early[2].reject(new Error('late'));
    early[3].reject(new Error('late'));
    await Promise.all(running.slice(2).map((p) => expect(p).rejects.toThrow('late')));
    await expect(fail()).rejects.toThrow();
    await expect(fail()).rejects.toThrow();
    expect(breaker.state).toBe('closed');
    await expect(succeed()).resolves.toBe('answer');
  });

  it('never opens with circuitBreaker: false, and still keeps the time budget', async () => {
    const { breaker, fail, lines } = setup(false);
    for (let i = 0; i < 100; i++) await expect(fail()).rejects.toThrow('connection refused');
    expect(breaker.state).toBe('closed');
    const pending = breaker.run(() => new Promise<string>(() => undefined));
    jest.advanceTimersByTime(TIMEOUT);
    await expect(pending).rejects.toThrow(`lookup timed out after ${TIMEOUT} ms`);
    expect(lines).toEqual([]);
  });

  it('counts the wait for a turn in the time budget', async () => {
    const { breaker } = setup(undefined, 1);
    const first = deferred();
    const running = breaker.run(() => first.promise);
    const second = jest.fn(() => Promise.resolve('second'));
    const waiting = breaker.run(second);
    jest.advanceTimersByTime(TIMEOUT);
    await expect(waiting).rejects.toThrow('timed out');
    expect(second).not.toHaveBeenCalled();
    first.resolve('first');
    await expect(running).rejects.toThrow('timed out');
  });
});

describe('the circuitBreaker option', () => {
  const errorOf = (circuitBreaker: unknown): string => {
    try {
      resolveTombstoneOptions({ circuitBreaker } as TombstoneModuleOptions);
    } catch (error) {
      expect(error).toBeInstanceOf(TombstoneConfigurationError);
      return (error as Error).message;
    }
    throw new Error(`circuitBreaker ${JSON.stringify(circuitBreaker)} was accepted`);
  };

  it('is on by default, and takes false, true or some of its settings', () => {
    const defaults = { failures: 5, cooldownMs: 1000, maxCooldownMs: 10_000 };
    expect(resolveTombstoneOptions({}).circuitBreaker).toStrictEqual(defaults);
    expect(resolveTombstoneOptions({ circuitBreaker: true }).circuitBreaker).toStrictEqual(defaults);
    expect(resolveTombstoneOptions({ circuitBreaker: false }).circuitBreaker).toBe(false);
    expect(resolveTombstoneOptions({ circuitBreaker: { failures: 10, cooldownMs: undefined } }).circuitBreaker).toStrictEqual({ ...defaults, failures: 10 });
  });

  it.each([
    [null, 'circuitBreaker must be false, true or { failures, cooldownMs, maxCooldownMs }, not null.'],
    ['on', 'circuitBreaker must be false, true or { failures, cooldownMs, maxCooldownMs }, not "on".'],
    [{ failures: 0 }, 'circuitBreaker.failures must be a whole number of lookups from 1 to 1000, not 0.'],
    [{ failures: 2.5 }, 'circuitBreaker.failures must be a whole number of lookups from 1 to 1000, not 2.5.'],
    [{ cooldownMs: -1 }, 'circuitBreaker.cooldownMs must be a whole number of milliseconds from 1 to 3600000, not -1.'],
    [{ maxCooldownMs: '10s' }, 'circuitBreaker.maxCooldownMs must be a whole number of milliseconds from 1 to 3600000, not "10s".'],
    [{ cooldownMs: 20_000 }, 'circuitBreaker.maxCooldownMs (10000) must be at least circuitBreaker.cooldownMs (20000).'],
    [{ cooldown: 5000 }, "unknown circuitBreaker entry 'cooldown'."],
  ])('refuses %j', (value, message) => {
    expect(errorOf(value)).toContain(`TombstoneModule: ${message}`);
  });
});
