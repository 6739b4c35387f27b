import { jest } from '@jest/globals';
import type { INestApplication } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import type { Attributes } from '@opentelemetry/api';
import { type DataPoint, type Histogram, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import request from 'supertest';
import { TombstoneModule, type TombstoneModuleOptions, TombstoneNotifications, TombstoneService } from '../src/index.js';
import { TombstoneMetricsModule, type TombstoneMetricsOptions } from '../src/metrics/index.js';
import { TombstoneEventsModule } from '../src/events/index.js';
import { ItemsController } from './fixtures/items.fixture.js';
import { RecordingSink } from './fixtures/events.fixture.js';
import { bootApp } from './support/app.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { eventually } from './support/eventually.js';

/** A reader that collects when the test asks: what a Prometheus scrape or an OTLP export would read. */
class TestReader extends MetricReader {
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}
}

interface Point {
  attributes: Attributes;
  value: number | Histogram;
}

/** Every data point of every metric, by name, from one collection. */
async function collect(reader: TestReader): Promise<Map<string, Point[]>> {
  const { resourceMetrics, errors } = await reader.collect();
  expect(errors).toEqual([]);
  const byName = new Map<string, Point[]>();
  for (const scope of resourceMetrics.scopeMetrics) {
    expect(scope.scope.name).toBe('nestjs-tombstones');
    for (const metric of scope.metrics) {
      byName.set(
        metric.descriptor.name,
        (metric.dataPoints as DataPoint<number | Histogram>[]).map((point) => ({ attributes: point.attributes, value: point.value })),
      );
    }
  }
  return byName;
}

const valueOf = (points: Point[] | undefined, attributes: Attributes = {}) =>
  points?.find((point) => JSON.stringify(point.attributes) === JSON.stringify(attributes))?.value;

describe('metrics through OpenTelemetry', () => {
  let db: TestDatabase;
  const apps: INestApplication[] = [];

  const boot = async (options: { module?: TombstoneModuleOptions; metrics?: TombstoneMetricsOptions; imports?: unknown[] } = {}) => {
    const reader = new TestReader();
    const provider = new MeterProvider({ readers: [reader] });
    const app = await bootApp('express', {
      imports: [
        TypeOrmModule.forRoot(db.options()),
        TombstoneModule.forRoot({ isGlobal: true, ...options.module }),
        TombstoneMetricsModule.forRoot({ meterProvider: provider, ...options.metrics }),
        ...((options.imports ?? []) as never[]),
      ],
      controllers: [ItemsController],
    });
    apps.push(app);
    return { app, reader, http: request(app.getHttpServer()) };
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    const setup = await bootApp('express', { imports: [TypeOrmModule.forRoot(db.options()), TombstoneModule.forRoot()] });
    const tombstones = setup.get(TombstoneService);
    await tombstones.recordDeletion('item', 'gone', { reason: 'Retired' });
    await tombstones.recordMove('item', 'moved', 'target');
    await tombstones.recordHidden('item', 'hidden');
    await setup.close();
  });

  afterAll(async () => {
    for (const app of apps) await app.close();
    await db?.drop();
  });

  it('counts each answer by type, outcome, source and status, and nothing for a found resource', async () => {
    const { reader, http } = await boot();
    await http.get('/items/gone').expect(410); // first: a query
    await http.get('/items/gone').expect(410); // then: the store
    await http.get('/items/moved').expect(301);
    await http.get('/items/hidden').expect(404); // not in the filter: as a key that never existed
    await http.get('/items/never-was').expect(404);
    await http.get('/items/live').expect(200);

    const answers = (await collect(reader)).get('tombstones.answers');
    const at = (outcome: string, source: string, status: number) =>
      valueOf(answers, { 'tombstones.resource.type': 'item', 'tombstones.outcome': outcome, 'tombstones.source': source, 'http.response.status_code': status });
    expect(at('gone', 'database', 410)).toBe(1);
    expect(at('gone', 'store', 410)).toBe(1);
    expect(at('moved', 'database', 301)).toBe(1);
    expect(at('unknown', 'filter', 404)).toBe(2);
    // Nothing else: the found resource is not counted, and no key is an attribute.
    expect(answers?.reduce((sum, point) => sum + (point.value as number), 0)).toBe(5);
    for (const point of answers ?? []) expect(Object.values(point.attributes)).not.toContain('never-was');
  });

  it('counts a hidden key as unknown even where a query found it, and fail-open answers', async () => {
    // Without the cache every miss is a query, and a scope function that throws fails open.
    const { reader, http } = await boot({
      module: {
        cache: false,
        scope: (req) => {
          if (req.headers['x-break']) throw new Error('no tenant');
          return '';
        },
      },
    });
    await http.get('/items/hidden').expect(404);
    await http.get('/items/gone').set('x-break', '1').expect(404);

    const answers = (await collect(reader)).get('tombstones.answers');
    const at = (outcome: string, source: string, status: number) =>
      valueOf(answers, { 'tombstones.resource.type': 'item', 'tombstones.outcome': outcome, 'tombstones.source': source, 'http.response.status_code': status });
    // The hidden key's 404 is the one a key that never existed gets: in the metrics too.
    expect(at('unknown', 'database', 404)).toBe(1);
    expect(answers?.some((point) => point.attributes['tombstones.outcome'] === 'hidden')).toBe(false);
    expect(at('unknown', 'fail-open', 404)).toBe(1);
  });

  it("times cold lookups' queries in a histogram, and only those", async () => {
    const { reader, http } = await boot();
    for (let i = 0; i < 3; i++) await http.get('/items/gone').expect(410); // one query, then the store
    await http.get('/items/moved').expect(301);
    for (let i = 0; i < 20; i++) await http.get(`/items/unknown-${i}`).expect(404); // the filter

    const durations = (await collect(reader)).get('tombstones.lookup.duration');
    const histogram = valueOf(durations) as Histogram;
    expect(histogram.count).toBe(2);
    expect(histogram.sum).toBeGreaterThan(0);
    expect(histogram.buckets.boundaries[0]).toBe(0.0001);
  });

  it('reports the cache, the filter, the store, the listener and the notification lag', async () => {
    const { app, reader, http } = await boot({ metrics: { minIntervalMs: 0 } });
    await http.get('/items/gone').expect(410);
    const metrics = await collect(reader);
    expect(valueOf(metrics.get('tombstones.cache.state'), { 'tombstones.cache.state': 'coherent' })).toBe(1);
    expect(valueOf(metrics.get('tombstones.cache.state'), { 'tombstones.cache.state': 'waiting' })).toBe(0);
    // Two tombstones answer something (the hidden one is left out of the filter).
    expect(valueOf(metrics.get('tombstones.filter.keys'))).toBe(2);
    expect(valueOf(metrics.get('tombstones.filter.capacity'))).toBeGreaterThanOrEqual(2);
    expect(valueOf(metrics.get('tombstones.filter.size'))).toBeGreaterThan(0);
    expect(valueOf(metrics.get('tombstones.filter.utilization'))).toBeGreaterThan(0);
    expect(valueOf(metrics.get('tombstones.store.entries'))).toBe(1);
    expect(valueOf(metrics.get('tombstones.store.size'))).toBeGreaterThan(200);
    expect(valueOf(metrics.get('tombstones.hits.dropped'))).toBe(0);
    expect(valueOf(metrics.get('tombstones.misses.dropped'))).toBe(0);
    const lag = valueOf(metrics.get('tombstones.notification.lag')) as number;
    expect(lag).toBeGreaterThan(0);
    expect(lag).toBeLessThan(30);

    // Not listening: the state says so, and the lag is the time since a notification last came
    // back, at least the read's timeout: it grows until the instance hears again.
    const notifications = app.get(TombstoneNotifications);
    await notifications.onApplicationShutdown();
    const deaf = await collect(reader);
    const deafLag = valueOf(deaf.get('tombstones.notification.lag')) as number;
    expect(valueOf(deaf.get('tombstones.cache.state'), { 'tombstones.cache.state': 'waiting' })).toBe(1);
    expect(deafLag).toBeGreaterThanOrEqual(2); // timeoutMs
    const later = await collect(reader);
    expect(valueOf(later.get('tombstones.notification.lag')) as number).toBeGreaterThanOrEqual(deafLag);
  });

  it('reads what costs a round trip at most once per minIntervalMs, however often it is collected', async () => {
    const { app, reader } = await boot({ metrics: { minIntervalMs: 3_600_000 } });
    const notifications = app.get(TombstoneNotifications);
    const roundTrip = jest.spyOn(notifications, 'roundTrip');
    await Promise.all([collect(reader), collect(reader)]);
    for (let i = 0; i < 5; i++) await collect(reader);
    expect(roundTrip).toHaveBeenCalledTimes(1);
  });

  it('reports the outbox per sink with the events module', async () => {
    const sink = new RecordingSink('recorder');
    sink.failing = true;
    const { app, reader } = await boot({
      metrics: { minIntervalMs: 0 },
      imports: [TombstoneEventsModule.forRoot({ sinks: [sink], maxAttempts: 1, listeners: false, eventEmitter: false })],
    });
    await app.get(TombstoneService).recordDeletion('item', 'outbox-1');
    const of = (metrics: Map<string, Point[]>, name: string) => valueOf(metrics.get(name), { 'tombstones.sink': 'recorder' });
    // One attempt allowed, and it fails: a dead letter.
    await eventually(async () => expect(of(await collect(reader), 'tombstones.events.dead_letters')).toBe(1));
    const metrics = await collect(reader);
    expect(of(metrics, 'tombstones.events.pending')).toBe(0);
    expect(of(metrics, 'tombstones.events.lag')).toBe(0);
  });

  it('fails at start without TombstoneModule, saying what to import', async () => {
    await expect(
      bootApp('express', { imports: [TypeOrmModule.forRoot(db.options()), TombstoneMetricsModule.forRoot({ meterProvider: new MeterProvider() })] }),
    ).rejects.toThrow(/TombstoneMetricsModule needs TombstoneModule/);
  });

  it('rejects options it does not know or cannot use', () => {
    expect(() => TombstoneMetricsModule.forRoot({ minIntervalMs: -1 })).toThrow(/minIntervalMs/);
    expect(() => TombstoneMetricsModule.forRoot({ meterProvider: {} as never })).toThrow(/MeterProvider/);
    expect(() => TombstoneMetricsModule.forRoot({ interval: 5 } as never)).toThrow(/unknown option 'interval'/);
  });
});
