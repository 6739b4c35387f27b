import { Injectable } from '@nestjs/common';

/**
 * What a miss of a `@Tombstoned()` route turned out to be (a found resource is not counted). A
 * hidden key is `unknown`: its answer must not be told apart from a key that never existed, in
 * the metrics either.
 */
export const OUTCOMES = ['gone', 'moved', 'unknown'] as const;
/** Where its answer came from: the membership filter, the store, a query, or nowhere (fail-open). */
export const SOURCES = ['filter', 'store', 'database', 'fail-open'] as const;
/** The statuses the module answers with. */
export const STATUSES = [404, 410, 301, 302, 307, 308] as const;

export type TombstoneOutcome = (typeof OUTCOMES)[number];
export type TombstoneSource = (typeof SOURCES)[number];
export const SOURCE_FILTER = 0;
export const SOURCE_STORE = 1;
export const SOURCE_DATABASE = 2;
export const SOURCE_FAIL_OPEN = 3;

const OUTCOME_OF: Record<string, number> = { gone: 0, moved: 1, hidden: 2, none: 2 };
const STATUS_OF: Record<number, number> = { 404: 0, 410: 1, 301: 2, 302: 3, 307: 4, 308: 5 };
const SLOTS = OUTCOMES.length * SOURCES.length * STATUSES.length;

/** One count of the tally, as the metrics read it. */
export interface TombstoneAnswerCount {
  readonly type: string;
  readonly outcome: TombstoneOutcome;
  readonly source: TombstoneSource;
  readonly status: (typeof STATUSES)[number];
  readonly count: number;
}

/**
 * Counts the answers the module gives, by resource type, outcome, source and status: a few array
 * writes per miss, read only when metrics are collected (`nestjs-tombstones/metrics`). Types come
 * from the routes' decorators, so there are as many as the app has: the counts stay small.
 */
@Injectable()
export class TombstoneAnswerTally {
  private readonly counts = new Map<string, Float64Array>();

  /** Counts one answer. `state`: the resolution's (`none` for a fail-open answer; `hidden` counts as `none`). */
  count(type: string, state: string, source: number, status: number): void {
    let slots = this.counts.get(type);
    if (slots === undefined) this.counts.set(type, (slots = new Float64Array(SLOTS)));
    slots[((OUTCOME_OF[state] ?? 2) * SOURCES.length + source) * STATUSES.length + (STATUS_OF[status] ?? 0)]++;
  }

  /** Every count above zero, since the app started. */
  read(): TombstoneAnswerCount[] {
    const read: TombstoneAnswerCount[] = [];
    for (const [type, slots] of this.counts) {
      slots.forEach((count, slot) => {
        if (count === 0) return;
        const status = slot % STATUSES.length;
        const rest = (slot - status) / STATUSES.length;
        const source = rest % SOURCES.length;
        read.push({ type, outcome: OUTCOMES[(rest - source) / SOURCES.length], source: SOURCES[source], status: STATUSES[status], count });
      });
    }
    return read;
  }
}
