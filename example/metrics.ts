import { Controller, Get, Header } from '@nestjs/common';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus';

/**
 * METRICS=1: the module's metrics as Prometheus text at /metrics. The exporter is an OpenTelemetry
 * metric reader; it serves nothing of its own here (no second port): the route asks it to collect
 * and writes what it read. Your app would usually start its SDK in main.ts and leave the module
 * the global provider (see docs/metrics.md).
 */
export function demoMetrics() {
  const exporter = new PrometheusExporter({ preventServerStart: true });
  const meterProvider = new MeterProvider({ readers: [exporter] });
  const serializer = new PrometheusSerializer();

  @Controller('metrics')
  class MetricsController {
    @Get()
    @Header('Content-Type', 'text/plain; version=0.0.4; charset=utf-8')
    @Header('Cache-Control', 'no-store')
    async scrape(): Promise<string> {
      const { resourceMetrics } = await exporter.collect();
      return serializer.serialize(resourceMetrics);
    }
  }
  return { meterProvider, controller: MetricsController };
}
