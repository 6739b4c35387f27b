import { HealthProbe } from './health.probe.js';

/** A piece of work the test settles by hand, counting how often it was started. */
function gate() {
  const started: { resolve: () => void; reject: (error: Error) => void }[] = [];
  const work = () => new Promise<void>((resolve, reject) => started.push({ resolve, reject }));
  return { started, work };
}

describe('HealthProbe', () => {
  let now = 0;
  const clock = () => now;

  beforeEach(() => {
    now = 0;
  });

  it('shares one check among concurrent callers, and keeps its outcome for cacheMs', async () => {
    const { started, work } = gate();
    const probe = new HealthProbe(work, clock);
    const checks = Array.from({ length: 100 }, () => probe.check(1000, 500));
    expect(started).toHaveLength(1);
    started[0].resolve();
    const outcomes = await Promise.all(checks);
    expect(outcomes.every((outcome) => outcome.ok && !outcome.cached)).toBe(true);
    now = 499;
    expect(await probe.check(1000, 500)).toMatchObject({ ok: true, cached: true });
    expect(started).toHaveLength(1);
    now = 500;
    const again = probe.check(1000, 500);
    expect(started).toHaveLength(2);
    started[1].reject(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }));
    expect(await again).toMatchObject({ ok: false, timedOut: false, cached: false, error: { code: 'ECONNREFUSED' } });
    // A failure is kept as long as a success.
    expect(await probe.check(1000, 500)).toMatchObject({ ok: false, cached: true });
  });

  it('cacheMs 0 checks every time', async () => {
    let calls = 0;
    const probe = new HealthProbe(async () => void calls++, clock);
    await probe.check(1000, 0);
    await probe.check(1000, 0);
    expect(calls).toBe(2);
  });

  it('gives up after timeoutMs, and never starts the work again while it is still on its way', async () => {
    const { started, work } = gate();
    const probe = new HealthProbe(work);
    expect(await probe.check(10, 0)).toMatchObject({ ok: false, timedOut: true });
    expect(await probe.check(10, 0)).toMatchObject({ ok: false, timedOut: true });
    expect(started).toHaveLength(1);
    // The stuck work ends: the next check starts another.
    started[0].resolve();
    await new Promise((resolve) => setImmediate(resolve));
    const next = probe.check(1000, 0);
    expect(started).toHaveLength(2);
    started[1].resolve();
    expect(await next).toMatchObject({ ok: true });
  });

  it('work that throws at once is a failed check, not a rejection', async () => {
    const probe = new HealthProbe<void>(() => {
      throw new TypeError('no pool');
    }, clock);
    expect(await probe.check(1000, 0)).toMatchObject({ ok: false, timedOut: false, error: { name: 'TypeError' } });
  });
});
