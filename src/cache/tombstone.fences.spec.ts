import { jest } from '@jest/globals';
import { TombstoneFences } from './tombstone.fences.js';
import type { TombstoneTable } from '../table/tombstone.table.js';

/** Fences over a fake DataSource: `sent` are the tokens of the fences sent, in order. */
function setup() {
  const sent: string[] = [];
  let fail = false;
  const query = jest.fn(async (sql: string, params: unknown[]) => {
    expect(sql).toMatch(/pg_notify/);
    expect(params[0]).toBe('nestjs_tombstones');
    if (fail) throw new Error('connection refused');
    sent.push(JSON.parse(params[1] as string).barrier as string);
    return [];
  });
  const fences = new TombstoneFences({ dataSource: { query } } as unknown as TombstoneTable);
  const warn = jest.spyOn((fences as unknown as { logger: { warn: () => void } }).logger, 'warn').mockImplementation(() => undefined);
  return { fences, sent, query, warn, failing: (value: boolean) => (fail = value) };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('TombstoneFences', () => {
  afterEach(() => {
    jest.useRealTimers();
  });

  it('keeps a written type unsure until a fence sent after the write comes back', async () => {
    const { fences, sent } = setup();
    fences.started();
    expect(fences.unsure('post')).toBe(false);
    fences.written(['post', 'post-id']);
    expect(fences.unsure('post')).toBe(true);
    expect(fences.unsure('post-id')).toBe(true);
    expect(fences.unsure('note')).toBe(false);
    await tick();
    expect(sent).toHaveLength(1);
    fences.heard(sent[0]);
    expect(fences.unsure('post')).toBe(false);
    expect(fences.unsure('post-id')).toBe(false);
  });

  it('sends one fence at a time: writes made while one is on its way wait for the next, which covers them all', async () => {
    const { fences, sent } = setup();
    fences.started();
    fences.written(['post']);
    await tick();
    fences.written(['note']);
    fences.written(['post']);
    await tick();
    expect(sent).toHaveLength(1);
    // The first fence was sent before the later writes: it covers none of them.
    fences.heard(sent[0]);
    expect(fences.unsure('post')).toBe(true);
    expect(fences.unsure('note')).toBe(true);
    await tick();
    expect(sent).toHaveLength(2);
    fences.heard(sent[1]);
    expect(fences.unsure('post')).toBe(false);
    expect(fences.unsure('note')).toBe(false);
    await tick();
    expect(sent).toHaveLength(2); // nothing left to fence
  });

  it("ignores other instances' tokens and settle()'s", async () => {
    const { fences, sent } = setup();
    fences.started();
    fences.written(['post']);
    await tick();
    fences.heard('0b6f6e2c-2f6a-4b5e-9a0e-111111111111/1');
    fences.heard(`${sent[0].split('/')[0]}:1`);
    expect(fences.unsure('post')).toBe(true);
  });

  it('sends a fence again when one fails or does not come back, and logs the failure once', async () => {
    jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
    const { fences, sent, query, warn, failing } = setup();
    fences.started();
    failing(true);
    fences.written(['post']);
    await tick();
    await jest.advanceTimersByTimeAsync(1_000);
    await jest.advanceTimersByTimeAsync(1_000);
    expect(query).toHaveBeenCalledTimes(3);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(fences.unsure('post')).toBe(true);
    failing(false);
    await jest.advanceTimersByTimeAsync(1_000);
    expect(sent).toHaveLength(1);
    // Sent but never heard (lost with a connection, say): sent again; either one clears the type.
    await jest.advanceTimersByTimeAsync(1_000);
    expect(sent).toHaveLength(2);
    expect(sent[1]).toBe(sent[0]);
    fences.heard(sent[1]);
    expect(fences.unsure('post')).toBe(false);
    await jest.advanceTimersByTimeAsync(5_000);
    expect(sent).toHaveLength(2);
  });

  it('does nothing while not listening, and forgets everything when it stops', async () => {
    const { fences, query } = setup();
    fences.written(['post']);
    expect(fences.unsure('post')).toBe(false);
    expect(query).not.toHaveBeenCalled();
    fences.started();
    fences.written(['post']);
    fences.stopped();
    expect(fences.unsure('post')).toBe(false);
    fences.started();
    fences.written(['note']);
    expect(fences.unsure('note')).toBe(true);
    fences.onApplicationShutdown();
    expect(fences.unsure('note')).toBe(false);
  });
});
