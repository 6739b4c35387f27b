import { Inject, Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import { TombstoneTable } from '../table/tombstone.table.js';
import { TOMBSTONE_OPTIONS } from '../tombstone.constants.js';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import type { ResolvedTombstoneOptions } from '../tombstone.options.js';
import { captureProblems } from './tombstone.capture.js';

/**
 * At start-up, checks that every `@TombstoneTracked` entity has its capture triggers, as
 * declared (the module's `captureCheck` option: `'error'`, `'warn'` or `'off'`).
 */
@Injectable()
export class TombstoneCaptureCheck implements OnModuleInit {
  private readonly logger = new Logger('TombstoneModule');

  constructor(
    @Inject(TOMBSTONE_OPTIONS) private readonly options: ResolvedTombstoneOptions,
    private readonly table: TombstoneTable,
  ) {}

  async onModuleInit(): Promise<void> {
    const source = this.table.dataSource;
    if (this.options.captureCheck === 'off' || !source.isInitialized) return;
    const problems = await captureProblems(source);
    if (problems.length === 0) return;
    const error = new TombstoneConfigurationError(`TombstoneModule: automatic capture is not in place.\n${problems.map((p) => `- ${p}`).join('\n')}`, [
      'Add a migration that calls installTombstoneCapture(queryRunner, Entity) for each entity above, and run it (after TOMBSTONE_MIGRATIONS).',
      "After changing an entity's @TombstoneTracked declarations, add a migration that calls installTombstoneCapture again.",
      "To start anyway, set the module's captureCheck option to 'warn' or 'off'.",
    ]);
    if (this.options.captureCheck === 'error') throw error;
    this.logger.warn(error.message);
  }
}
