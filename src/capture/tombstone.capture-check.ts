import { Inject, Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import { TombstoneTable } from '../table/tombstone.table.js';
import { TOMBSTONE_OPTIONS } from '../tombstone.constants.js';
import { TombstoneConfigurationError } from '../tombstone.exceptions.js';
import type { ResolvedTombstoneOptions } from '../tombstone.options.js';
import type { DataSource } from 'typeorm';
import { CAPTURE_TRIGGERS, labelOf, relationOf, type TombstoneCaptureSpec, tombstoneCaptureSpec } from './tombstone.capture.js';
import { type EntityClass, trackedDeclarations } from './tombstone.tracked.js';

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

/**
 * Checks at start-up that every tracked entity of a DataSource has its capture triggers, with the
 * spec its decorators declare today. Answers one problem per entity; empty when all is well.
 */
export async function captureProblems(dataSource: DataSource): Promise<string[]> {
  const problems: string[] = [];
  for (const metadata of dataSource.entityMetadatas) {
    if (typeof metadata.target !== 'function' || trackedDeclarations(metadata.target).length === 0) continue;
    const entity = metadata.target as EntityClass;
    let expected: TombstoneCaptureSpec;
    try {
      expected = tombstoneCaptureSpec(dataSource, entity);
    } catch (error) {
      problems.push((error as Error).message);
      continue;
    }
    // Only triggers that fire in ordinary sessions ('O'rigin and 'A'lways) capture anything.
    const installed = (await dataSource.query(
      `SELECT tgname, tgargs, tgenabled IN ('O', 'A') AS enabled FROM pg_trigger
        WHERE tgrelid = to_regclass($1) AND tgname = ANY($2::text[])`,
      [relationOf(expected), Object.values(CAPTURE_TRIGGERS)],
    )) as { tgname: string; tgargs: Buffer; enabled: boolean }[];
    // The table is pinned by tgrelid; how it was named when installed does not matter.
    const want = declared(expected);
    const current = installed.filter((t) => t.enabled && declared(parseSpec(firstArgument(t.tgargs))) === want).length;
    if (current < Object.keys(CAPTURE_TRIGGERS).length) {
      problems.push(
        installed.length === 0
          ? `${entity.name} (${labelOf(expected)}) is @TombstoneTracked but its capture triggers are not installed.`
          : `${entity.name} (${labelOf(expected)}) has capture triggers that do not match its @TombstoneTracked declarations, or are not enabled.`,
      );
    }
  }
  return problems;
}

/** What a spec declares, apart from the table's name: comparable as a string. */
function declared(spec: TombstoneCaptureSpec | null): string {
  if (!spec) return '';
  const { v, soft, keys } = spec;
  return JSON.stringify({ v, soft, keys: keys.map(({ type, column, scope, onDelete, reuse, permanent }) => ({ type, column, scope, onDelete, reuse, permanent })) });
}

function parseSpec(text: string): TombstoneCaptureSpec | null {
  try {
    return JSON.parse(text) as TombstoneCaptureSpec;
  } catch {
    return null;
  }
}

function firstArgument(tgargs: Buffer | string): string {
  const text = Buffer.isBuffer(tgargs) ? tgargs.toString('utf8') : String(tgargs);
  return text.split('\u0000')[0] ?? '';
}
