import { type DynamicModule, Module } from '@nestjs/common';
import { TombstoneMetrics } from './metrics.service.js';
import { resolveTombstoneMetricsOptions, TOMBSTONE_METRICS_OPTIONS, type TombstoneMetricsOptions } from './metrics.options.js';

/**
 * Reports what the module does through OpenTelemetry's metrics API (`@opentelemetry/api`, an
 * optional peer; bring your own SDK and exporter): the answers given by type, outcome and source,
 * cold lookups' durations, the filter, the store, the listener, the notification lag, dropped
 * counts and, with `TombstoneEventsModule`, the outbox. Costs a request nothing. The names and
 * attributes are in docs/metrics.md.
 *
 * @example
 * // main.ts: the SDK first (here Prometheus), then the app.
 * metrics.setGlobalMeterProvider(new MeterProvider({ readers: [new PrometheusExporter()] }));
 * // app.module.ts
 * imports: [TombstoneModule.forRoot(), TombstoneMetricsModule.forRoot()]
 */
@Module({})
export class TombstoneMetricsModule {
  static forRoot(options: TombstoneMetricsOptions = {}): DynamicModule {
    return {
      module: TombstoneMetricsModule,
      providers: [{ provide: TOMBSTONE_METRICS_OPTIONS, useValue: resolveTombstoneMetricsOptions(options) }, TombstoneMetrics],
    };
  }
}
