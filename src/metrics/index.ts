// nestjs-tombstones/metrics: the module's metrics through OpenTelemetry. A separate entry point, so
// that apps without `@opentelemetry/api` load none of it. etc/nestjs-tombstones-metrics.api.md
// records this surface for review.
export { TombstoneMetricsModule } from './metrics.module.js';
export { TombstoneMetricsOptions } from './metrics.options.js';
