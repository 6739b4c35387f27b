import { Controller, Get, Module } from '@nestjs/common';
import { HealthCheck, HealthCheckService, TerminusModule } from '@nestjs/terminus';
import { TombstoneHealthIndicator } from '../src/terminus/index.js';

/**
 * GET /health: the tombstone module's health through Terminus. 200 with `status: 'ok'` or
 * `'degraded'` (still serving right answers: take no action but a look), 503 when the database
 * does not answer. Meant as a readiness probe (see docs/operations.md#health).
 */
@Controller('health')
export class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly tombstones: TombstoneHealthIndicator,
  ) {}

  @Get()
  @HealthCheck()
  check() {
    return this.health.check([() => this.tombstones.isHealthy('tombstones')]);
  }
}

@Module({ imports: [TerminusModule], controllers: [HealthController], providers: [TombstoneHealthIndicator] })
export class HealthModule {}
