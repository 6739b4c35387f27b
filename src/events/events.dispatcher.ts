import { Logger } from '@nestjs/common';
import type { ClaimedDelivery, RetryPolicy, TombstoneOutbox } from './events.outbox.js';
import type { ResolvedTombstoneEventsOptions } from './events.options.js';
import type { TombstoneEventSink } from './events.types.js';

/** How often delivered events and old dead letters are deleted. */
const SWEEP_INTERVAL_MS = 10 * 60_000;
/** How long a delivery under way may finish when the app stops, before it is aborted and given back. */
const SHUTDOWN_GRACE_MS = 2000;
/** Deliveries that fail are logged up to this many per sink per minute. */
const LOG_PER_MINUTE = 10;

/** What this instance did since it started, per sink. */
export interface TombstoneSinkCounters {
  delivered: number;
  failed: number;
}

/** A worker's wake-up: `woken` since its last claim, and how to end its wait. */
interface WorkerState {
  woken: boolean;
  resolve: (() => void) | undefined;
}

/** Deliveries one worker has under way, to abort or give back when the app stops. */
interface InFlight {
  readonly sink: string;
  readonly sequences: readonly string[];
  readonly controller: AbortController;
  stopping: boolean;
}

/**
 * Delivers the outbox: one worker per sink takes due deliveries (`TombstoneOutbox.claim()`),
 * hands them to the sink in batches, and settles each batch (delivered, retried later, or dead).
 * A worker with nothing due waits for a change notification or `pollIntervalMs`, whichever
 * comes first.
 */
export class TombstoneDispatcher {
  private readonly logger = new Logger('TombstoneEvents');
  private readonly workerStates = new Set<WorkerState>();
  private readonly sleepers = new Set<() => void>();
  private readonly inFlight = new Set<InFlight>();
  private readonly logged = new Map<string, { minute: number; count: number }>();
  readonly counters = new Map<string, TombstoneSinkCounters>();
  private workers: Promise<void>[] = [];
  private names: string[] = [];
  private sweepTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly outbox: TombstoneOutbox,
    private readonly options: ResolvedTombstoneEventsOptions,
  ) {}

  private get policy(): RetryPolicy {
    return this.options;
  }

  start(sinks: readonly TombstoneEventSink[]): void {
    this.names = sinks.map((sink) => sink.name);
    for (const sink of sinks) {
      this.counters.set(sink.name, { delivered: 0, failed: 0 });
      this.workers.push(this.work(sink));
    }
    this.sweepTimer = setInterval(() => void this.sweep(), SWEEP_INTERVAL_MS);
    this.sweepTimer.unref();
    void this.sweep();
  }

  /** Something may be due: every worker looks now (a busy one as soon as it is done). */
  wake(): void {
    for (const state of this.workerStates) {
      state.woken = true;
      state.resolve?.();
    }
  }

  /** Stops taking deliveries; those under way get a moment to finish, then are aborted and given back. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweepTimer);
    this.wake();
    for (const sleeper of this.sleepers) sleeper();
    const grace = setTimeout(() => {
      for (const flight of this.inFlight) {
        flight.stopping = true;
        flight.controller.abort(new Error('the application is shutting down'));
      }
    }, SHUTDOWN_GRACE_MS);
    grace.unref();
    await Promise.all(this.workers);
    clearTimeout(grace);
  }

  private async work(sink: TombstoneEventSink): Promise<void> {
    const batchSize = sink.batchSize ?? 1;
    const concurrency = sink.concurrency ?? 4;
    const state: WorkerState = { woken: false, resolve: undefined };
    this.workerStates.add(state);
    /** Rounds in a row in which every batch failed: the sink itself backs off. */
    let failing = 0;
    while (!this.stopped) {
      state.woken = false;
      let claimed: ClaimedDelivery[];
      try {
        claimed = await this.outbox.claim(sink.name, Math.max(this.options.claimSize, batchSize), this.options.leaseMs);
      } catch (error) {
        this.log(sink.name, `could not read the outbox: ${messageOf(error)}`);
        await this.idle(state);
        continue;
      }
      if (claimed.length === 0) {
        await this.idle(state);
        continue;
      }
      const batches: ClaimedDelivery[][] = [];
      for (let i = 0; i < claimed.length; i += batchSize) batches.push(claimed.slice(i, i + batchSize));
      let next = 0;
      let delivered = 0;
      const lane = async () => {
        while (next < batches.length && !this.stopped) if (await this.deliver(sink, batches[next++])) delivered++;
      };
      await Promise.all(Array.from({ length: Math.min(concurrency, batches.length) }, lane));
      // The app is stopping: the batches not started go back untouched, for the next instance.
      if (next < batches.length) {
        const rest = batches.slice(next).flatMap((batch) => batch.map((delivery) => delivery.event.sequence));
        await this.outbox.release(sink.name, rest, claimed[0].lease).catch((error: unknown) => this.log(sink.name, `could not give back deliveries at shutdown: ${messageOf(error)}`));
      }
      // A receiver that is down fails every batch: rather than try the rest of the backlog at once
      // (and spend its attempts), the sink waits as a retried delivery would, longer each round.
      failing = delivered === 0 ? failing + 1 : 0;
      if (failing > 0) await this.pause(backoff(failing, this.options));
    }
    this.workerStates.delete(state);
  }

  /**
   * One batch: delivered, or failed (retried later or dead), or given back when the app stops.
   * Answers whether the sink took it.
   */
  private async deliver(sink: TombstoneEventSink, batch: readonly ClaimedDelivery[]): Promise<boolean> {
    const sequences = batch.map((delivery) => delivery.event.sequence);
    const lease = batch[0].lease; // one claim, one lease
    const flight: InFlight = { sink: sink.name, sequences, controller: new AbortController(), stopping: false };
    // Past its lease another instance may take the batch: abort first (a margin before it).
    const leaseTimer = setTimeout(
      () => flight.controller.abort(new Error(`the delivery ran past its lease (${this.options.leaseMs} ms)`)),
      Math.max(500, this.options.leaseMs - 1000),
    );
    this.inFlight.add(flight);
    const counters = this.counters.get(sink.name)!;
    try {
      try {
        // Settled when the signal aborts, whether or not the sink heeds it: a sink that never
        // returns holds neither the worker nor the app's shutdown (at least once: it may still
        // finish, and the batch be delivered again).
        await untilAborted(
          sink.deliver(
            batch.map((delivery) => delivery.event),
            flight.controller.signal,
          ),
          flight.controller.signal,
        );
      } catch (error) {
        if (flight.stopping) {
          await this.outbox.release(sink.name, sequences, lease);
          return false;
        }
        counters.failed += batch.length;
        const attempt = Math.max(...batch.map((delivery) => delivery.attempt));
        const last = attempt >= this.options.maxAttempts;
        this.log(
          sink.name,
          `delivery of ${batch.length} event(s) failed (attempt ${attempt} of ${this.options.maxAttempts}${last ? ', now a dead letter' : ''}): ${messageOf(error)}`,
        );
        await this.outbox.failed(sink.name, sequences, lease, messageOf(error), this.policy);
        return false;
      }
      counters.delivered += batch.length;
      await this.outbox.delivered(sink.name, sequences, lease);
      return true;
    } catch (error) {
      // The outbox could not be told: the lease runs out and the batch is delivered again.
      this.log(sink.name, `could not record a delivery in the outbox (it will be delivered again): ${messageOf(error)}`);
      return false;
    } finally {
      clearTimeout(leaseTimer);
      this.inFlight.delete(flight);
    }
  }

  /** Waits for a wake-up or `pollIntervalMs`; at once when woken since the worker's last claim. */
  private idle(state: WorkerState): Promise<void> {
    if (this.stopped || state.woken) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => state.resolve?.(), this.options.pollIntervalMs);
      state.resolve = () => {
        clearTimeout(timer);
        state.resolve = undefined;
        resolve();
      };
    });
  }

  /** Waits `ms`, or until the app stops. */
  private pause(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.sleepers.add(done);
    });
  }

  private async sweep(): Promise<void> {
    const day = 86_400_000;
    try {
      // Still here: `seen_at` says when an instance last delivered to each sink, and a sink
      // removed while instances still deliver to it comes back.
      await this.outbox.register(this.names);
      await this.outbox.sweep(this.options.retentionDays * day, this.options.deadLetterRetentionDays * day);
    } catch (error) {
      this.log('retention', `could not delete old events: ${messageOf(error)}`);
    }
  }

  /** Logs a sink's trouble at a bounded rate: a receiver that is down must not flood the logs. */
  private log(sink: string, message: string): void {
    const minute = Math.floor(Date.now() / 60_000);
    const seen = this.logged.get(sink);
    const entry = seen && seen.minute === minute ? seen : { minute, count: 0 };
    this.logged.set(sink, entry);
    if (++entry.count <= LOG_PER_MINUTE) this.logger.warn(`${sink}: ${message}`);
    else if (entry.count === LOG_PER_MINUTE + 1) this.logger.warn(`${sink}: more failures this minute are not logged.`);
  }
}

/** `work`, or a rejection with the signal's reason as soon as it aborts. */
function untilAborted(work: Promise<void>, signal: AbortSignal): Promise<void> {
  work.catch(() => undefined); // when the abort wins, a later rejection of `work` is nobody's
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  let onAbort: () => void = () => undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  return Promise.race([work, aborted]).finally(() => signal.removeEventListener('abort', onAbort));
}

/** The wait after the `n`th failure in a row, as the outbox spaces a delivery's attempts: doubling, capped, half of it random. */
function backoff(n: number, { retryDelayMs, maxRetryDelayMs }: RetryPolicy): number {
  return Math.min(maxRetryDelayMs, retryDelayMs * 2 ** (n - 1)) * (0.5 + Math.random() / 2);
}

function messageOf(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  // One printable line: it goes to logs and to the outbox's `last_error`.
  return text.replace(/\p{Cc}+/gu, ' ').slice(0, 500);
}
