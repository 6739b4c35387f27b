// A consumer's first minutes, on the packed tarball: install it into a new project outside the
// repository (with its peer dependencies at the versions package-lock.json holds), import every
// entries from plain ESM, and type-check a small TypeScript file against the shipped .d.ts.
//
//   node scripts/smoke-consumer.mjs [tarball]     (npm run check:consumer; default .pack/nestjs-tombstones.tgz)
//
// Set KEEP_CONSUMER=1 to keep the temporary project for a look.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const tarball = resolve(process.argv[2] ?? join(root, '.pack', `${pkg.name}.tgz`));
if (!existsSync(tarball)) {
  console.error(`${tarball} does not exist: run \`npm run pack:check\` first.`);
  process.exit(1);
}

// The names a first-day user reaches for; the check fails when one is gone.
const EXPECTED = {
  [pkg.name]: ['TombstoneModule', 'Tombstoned', 'TombstoneService', 'TOMBSTONE_MIGRATIONS'],
  [`${pkg.name}/admin`]: ['TombstoneAdminModule'],
  [`${pkg.name}/events`]: ['TombstoneEventsModule', 'OnTombstoneEvent'],
  [`${pkg.name}/metrics`]: ['TombstoneMetricsModule'],
  [`${pkg.name}/terminus`]: ['TombstoneHealthIndicator'],
};

const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')).packages;
const locked = (name) => lock[`node_modules/${name}`]?.version;
// Every peer (the admin entry needs the optional ones), and @types/node, which the .d.ts refer to.
const dependencies = { [pkg.name]: `file:${tarball}` };
for (const [name, range] of Object.entries(pkg.peerDependencies)) dependencies[name] = locked(name) ?? range;
dependencies['@types/node'] = locked('@types/node') ?? '*';

const dir = mkdtempSync(join(tmpdir(), 'tombstones-consumer-'));
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
const run = (command, args) => {
  try {
    execFileSync(command, args, { cwd: dir, stdio: 'inherit', shell: process.platform === 'win32' && command === 'npm' });
  } catch {
    throw new Error(`consumer check failed: ${[command, ...args].join(' ')} (set KEEP_CONSUMER=1 to keep ${dir})`);
  }
};

try {
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({ name: 'consumer', private: true, type: 'module', dependencies }, null, 2),
  );
  run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error']);
  process.stdout.write(`installed in ${dir} (${elapsed()})\n`);

  // 1. Plain ESM: every entry loads and exports the names; internals stay behind "exports".
  writeFileSync(
    join(dir, 'smoke.mjs'),
    `import 'reflect-metadata';
const expected = ${JSON.stringify(EXPECTED)};
const missing = [];
for (const [entry, names] of Object.entries(expected)) {
  const exports = await import(entry);
  for (const name of names) if (exports[name] === undefined) missing.push(entry + ': ' + name);
  console.log(entry + ': ' + Object.keys(exports).length + ' exports');
}
const main = await import(${JSON.stringify(pkg.name)});
if (typeof main.TombstoneModule.forRoot !== 'function') missing.push('TombstoneModule.forRoot');
if (!Array.isArray(main.TOMBSTONE_MIGRATIONS) || main.TOMBSTONE_MIGRATIONS.length === 0) missing.push('TOMBSTONE_MIGRATIONS entries');
try {
  await import(${JSON.stringify(`${pkg.name}/dist/src/index.js`)});
  missing.push('a deep import should be refused by "exports"');
} catch (error) {
  if (error.code !== 'ERR_PACKAGE_PATH_NOT_EXPORTED') throw error;
}
if (missing.length) {
  console.error('missing: ' + missing.join(', '));
  process.exit(1);
}
`,
  );
  run(process.execPath, ['smoke.mjs']);
  process.stdout.write(`ESM imports ok (${elapsed()})\n`);

  // 2. TypeScript, as a NestJS app compiles it: nodenext, decorators, and no skipLibCheck, so an
  //    unresolved import inside the shipped .d.ts is an error here.
  writeFileSync(
    join(dir, 'consumer.ts'),
    `import 'reflect-metadata';
import { Controller, type DynamicModule, Get, Module, Param } from '@nestjs/common';
import { TOMBSTONE_MIGRATIONS, TombstoneModule, Tombstoned, TombstoneService } from '${pkg.name}';
import { TombstoneAdminModule } from '${pkg.name}/admin';
import { OnTombstoneEvent, type TombstoneEvent, TombstoneEventsModule } from '${pkg.name}/events';
import { TombstoneMetricsModule } from '${pkg.name}/metrics';
import { TombstoneHealthIndicator } from '${pkg.name}/terminus';
import { HealthCheck, HealthCheckService, TerminusModule } from '@nestjs/terminus';

@Controller('articles')
class ArticlesController {
  constructor(readonly tombstones: TombstoneService) {}

  @Get(':id')
  @Tombstoned('article')
  find(@Param('id') id: string): string {
    return id;
  }
}

const tombstones: DynamicModule = TombstoneModule.forRoot();
export const migrations: readonly (abstract new (...args: never[]) => object)[] = TOMBSTONE_MIGRATIONS;
export const admin: typeof TombstoneAdminModule = TombstoneAdminModule;

class SearchIndexer {
  readonly seen: string[] = [];

  @OnTombstoneEvent('tombstone.created')
  onCreated(event: TombstoneEvent): void {
    this.seen.push(event.key);
  }
}
export const events: DynamicModule = TombstoneEventsModule.forRoot({ maxAttempts: 5 });
export const indexer = new SearchIndexer();
export const metrics: DynamicModule = TombstoneMetricsModule.forRoot({ minIntervalMs: 30_000 });

@Controller('health')
class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly tombstones: TombstoneHealthIndicator,
  ) {}

  @Get()
  @HealthCheck()
  async check(): Promise<string> {
    const result = await this.health.check([() => this.tombstones.isHealthy('tombstones', { timeoutMs: 500 })]);
    const status: 'up' | 'degraded' | 'down' = result.details['tombstones'].status;
    return status;
  }
}

@Module({ imports: [TerminusModule], controllers: [HealthController], providers: [TombstoneHealthIndicator] })
class HealthModule {}

@Module({ imports: [tombstones, HealthModule], controllers: [ArticlesController] })
export class AppModule {}
`,
  );
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify(
      {
        compilerOptions: {
          target: 'ES2022',
          module: 'nodenext',
          moduleResolution: 'nodenext',
          strict: true,
          experimentalDecorators: true,
          emitDecoratorMetadata: true,
          skipLibCheck: false,
          noEmit: true,
          types: ['node'],
        },
        files: ['consumer.ts'],
      },
      null,
      2,
    ),
  );
  // The repository's TypeScript, run in the consumer's folder: it sees only the consumer's node_modules.
  run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json']);
  process.stdout.write(`tsc --noEmit ok (${elapsed()})\n`);
} catch (error) {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
} finally {
  if (process.env.KEEP_CONSUMER) process.stdout.write(`kept ${dir}\n`);
  else rmSync(dir, { recursive: true, force: true });
}
