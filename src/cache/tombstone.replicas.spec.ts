import { jest } from '@jest/globals';
import { formatLsn, parseLsn, TombstoneReplicas } from './tombstone.replicas.js';
import type { PgClient, TombstoneTable } from '../table/tombstone.table.js';
import { resolveTombstoneOptions } from '../tombstone.options-resolve.js';
import type { TombstoneModuleOptions } from '../tombstone.options.js';
import { NO_TOMBSTONE, type TombstoneLookupResult } from '../tombstone.types.js';

const PRIMARY: TombstoneLookupResult = { resolution: NO_TOMBSTONE, via: null, validUntil: null, cacheable: true };
const REPLICA: TombstoneLookupResult = { resolution: { state: 'hidden', id: '1' }, via: null, validUntil: null, cacheable: true };

/**
 * A replica pool as pg-pool keeps one (idle connections reused last in, first out, handed over on
 * the next tick in the order they were asked for), whose server has replayed up to `replay`
 * (`null`: not a standby) or is down.
 */
class FakePool {
  replay: string | null = '0/100';
  down = false;
  /** Lets a test act between a lookup's `connect()` and what it does with the connection. */
  beforeHandover: (() => void) | null = null;
  readonly options = { max: 10 };
  readonly idle: FakeClient[] = [];
  readonly clients = new Set<FakeClient>();
  probes = 0;

  get idleCount(): number {
    return this.idle.length;
  }

  get totalCount(): number {
    return this.clients.size;
  }

  /** Callers queued for an idle connection, until the next tick hands them one. */
  waitingCount = 0;
  /** Holds new connections (not idle ones) until it settles: a server slow to accept. */
  opening: Promise<void> | null = null;

  async connect(): Promise<PgClient> {
    if (this.down) throw new Error('connect ECONNREFUSED');
    let client: FakeClient | undefined;
    if (this.idle.length > 0) {
      this.waitingCount++;
      await new Promise<void>((resolve) => process.nextTick(resolve));
      this.waitingCount--;
      client = this.idle.pop();
    }
    if (client === undefined) {
      if (this.opening) await this.opening;
      client = new FakeClient(this);
    }
    this.clients.add(client);
    await Promise.resolve();
    this.beforeHandover?.();
    return client;
  }
}

class FakeClient implements PgClient {
  constructor(private readonly pool: FakePool) {}

  async query(config: { text: string }): Promise<{ rows: unknown[] }> {
    expect(config.text).toMatch(/pg_last_wal_replay_lsn/);
    this.pool.probes++;
    if (this.pool.down) throw new Error('Connection terminated unexpectedly');
    return { rows: [{ lsn: this.pool.replay }] };
  }

  release(error?: Error): void {
    if (error) this.pool.clients.delete(this);
    else this.pool.idle.push(this);
  }

  on(): void {}
  off(): void {}
}

/** Replicas over a fake primary (the fence it reads is `primaryLsn`) and one fake replica pool. */
function setup(options: TombstoneModuleOptions = { lookups: 'replica' }) {
  const pool = new FakePool();
  const state = { primaryLsn: '0/200', fenceFails: false, fenceHeld: null as Promise<void> | null };
  const query = jest.fn(async (sql: string) => {
    expect(sql).toMatch(/pg_current_wal_insert_lsn/);
    if (state.fenceHeld) await state.fenceHeld;
    if (state.fenceFails) throw new Error('the primary is down');
    return [{ lsn: state.primaryLsn }];
  });
  const table = {
    dataSource: { isInitialized: true, driver: { slaves: [pool] }, query },
    lookup: jest.fn(async () => PRIMARY),
    lookupOn: jest.fn(async () => REPLICA),
  };
  const replicas = new TombstoneReplicas(resolveTombstoneOptions(options), table as unknown as TombstoneTable);
  const logger = (replicas as unknown as { logger: { warn: (message: string) => void; log: (message: string) => void } }).logger;
  const warn = jest.spyOn(logger, 'warn').mockImplementation(() => undefined);
  jest.spyOn(logger, 'log').mockImplementation(() => undefined);
  replicas.onApplicationBootstrap();
  const read = async () => (await replicas.lookup('post', 'k', '')) === REPLICA ? 'replica' : 'primary';
  return { replicas, pool, state, query, table, warn, read };
}

/** Lets the background work (fence reads, probes) run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('TombstoneReplicas', () => {
  let now = 0;

  beforeEach(() => {
    now = 1_000;
    jest.spyOn(performance, 'now').mockImplementation(() => now);
  });

  afterEach(() => {
    jest.restoreAllMocks();
    jest.useRealTimers();
  });

  it('reads and prints WAL positions as PostgreSQL compares them', () => {
    expect(parseLsn('0/16B3748') < parseLsn('1/0')).toBe(true);
    expect(parseLsn('A/FFFFFFFF') < parseLsn('B/0')).toBe(true);
    expect(formatLsn(parseLsn('16/B374D848'))).toBe('16/B374D848');
    expect(() => parseLsn('16-B374')).toThrow(/not a WAL position/);
  });

  it("with lookups: 'primary', reads the primary and asks nothing of replicas", async () => {
    const { replicas, pool, query, read } = setup({});
    replicas.listening();
    replicas.changed();
    await settle();
    expect(await read()).toBe('primary');
    expect(query).not.toHaveBeenCalled();
    expect(pool.clients.size).toBe(0);
  });

  it('reads a replica only on a connection that a probe, answered before, saw past the fence', async () => {
    const { replicas, pool, table, read } = setup();
    // Not listening yet: nothing heard, nothing fenced.
    expect(await read()).toBe('primary');
    replicas.listening();
    // The fence is being read: the primary answers.
    expect(await read()).toBe('primary');
    await settle();
    expect(replicas.stats().fence).toBe('0/200');
    // That lookup had no idle connection to try: it started a probe, which found the replica behind.
    expect(pool.probes).toBe(1);
    expect(await read()).toBe('primary');
    // Probed a moment ago: not again before PROBE_INTERVAL_MS.
    await settle();
    expect(pool.probes).toBe(1);
    pool.replay = '0/200';
    now += 20;
    expect(await read()).toBe('primary');
    await settle();
    expect(pool.probes).toBe(2);
    expect(await read()).toBe('replica');
    expect(table.lookupOn).toHaveBeenCalledTimes(1);
    expect(replicas.stats()).toMatchObject({ replicas: 1, out: 0, replicaReads: 1, primaryReads: 4 });
  });

  it('sends a lookup to the primary when the idle connection is already promised to someone asked before it', async () => {
    const { replicas, pool, table, read } = setup();
    pool.replay = '0/200';
    replicas.listening();
    await read();
    await settle();
    expect(await read()).toBe('replica');
    expect(pool.idleCount).toBe(1);
    // A new connection would take long: a lookup that waited for one would wait with it.
    let open = () => {};
    pool.opening = new Promise((resolve) => (open = resolve));
    const reads = [read(), read()];
    expect(await Promise.race([Promise.all(reads), settle().then(() => 'waiting')])).toEqual(['replica', 'primary']);
    expect(table.lookupOn).toHaveBeenCalledTimes(2);
    open();
  });

  it('sends a lookup to the primary when a change is heard while the connection is handed over, and until the fence is read past it', async () => {
    const { replicas, pool, state, read } = setup();
    pool.replay = '0/200';
    replicas.listening();
    await read();
    await settle();
    expect(await read()).toBe('replica');
    // The change committed up to 0/300; its notification arrives during the lookup's connect(),
    // and the fence is still being read when the connection is handed over.
    state.primaryLsn = '0/300';
    let release = () => {};
    state.fenceHeld = new Promise((resolve) => (release = resolve));
    pool.beforeHandover = () => {
      pool.beforeHandover = null;
      replicas.changed();
    };
    expect(await read()).toBe('primary');
    expect(replicas.stats().fence).toBe('0/200');
    expect(await read()).toBe('primary');
    state.fenceHeld = null;
    release();
    await settle();
    // The fence is 0/300 now, and the replica's connection was seen at 0/200.
    expect(replicas.stats().fence).toBe('0/300');
    expect(await read()).toBe('primary');
    pool.replay = '0/300';
    now += 20;
    await read();
    await settle();
    expect(await read()).toBe('replica');
  });

  it('keeps the replica out while it is down or not a standby, logs it once, and probes it again with backoff', async () => {
    const { replicas, pool, state, table, warn, read } = setup();
    pool.replay = '0/200';
    replicas.listening();
    await read();
    await settle();
    expect(await read()).toBe('replica');
    table.lookupOn.mockRejectedValueOnce(new Error('Connection terminated unexpectedly'));
    expect(await read()).toBe('primary');
    expect(replicas.stats().out).toBe(1);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0][0]).toMatch(/replica 1 failed \(Connection terminated unexpectedly\); lookups use the primary, and it is probed again in 1000 ms/);
    pool.down = true;
    now += 1_000;
    expect(await read()).toBe('primary');
    await settle();
    expect(replicas.stats().out).toBe(1);
    expect(warn).toHaveBeenCalledTimes(1);
    // The next probe waits twice as long.
    pool.down = false;
    now += 1_999;
    await read();
    await settle();
    expect(replicas.stats().out).toBe(1);
    now += 1;
    await read();
    await settle();
    expect(replicas.stats().out).toBe(0);
    expect(await read()).toBe('replica');

    // A server that is not in recovery is no replica: its answers are never used.
    pool.replay = null;
    state.primaryLsn = '0/300';
    replicas.changed();
    await settle();
    expect(await read()).toBe('primary');
    await settle();
    expect(replicas.stats().out).toBe(1);
    expect(warn.mock.calls.at(-1)?.[0]).toMatch(/replica 1 failed \(it is not a standby/);
  });

  it('reads the primary while the fence cannot be read, and while the instance is not listening', async () => {
    jest.useFakeTimers({ doNotFake: ['performance', 'nextTick', 'setImmediate', 'queueMicrotask'] });
    const { replicas, pool, state, query, warn, read } = setup();
    pool.replay = '0/200';
    state.fenceFails = true;
    replicas.listening();
    await settle();
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0][0]).toMatch(/could not read the primary's WAL position/);
    await read();
    await settle();
    expect(await read()).toBe('primary');
    state.fenceFails = false;
    await jest.advanceTimersByTimeAsync(1_000);
    expect(query).toHaveBeenCalledTimes(2);
    expect(await read()).toBe('replica');
    replicas.deaf();
    expect(await read()).toBe('primary');
    replicas.listening();
    await settle();
    expect(await read()).toBe('replica');
  });
});
