// The public API, under review: one API Extractor report per package entry (etc/*.api.md), and a
// cap on how many names each entry exports.
//
//   node scripts/api-report.mjs --check    (npm run api:check)   fails when the built .d.ts files
//                                          differ from the committed reports, or an entry is over its cap
//   node scripts/api-report.mjs --update   (npm run api:update)  rewrites the reports
//
// Both read the build output (dist/src/**/*.d.ts): run `npm run build` first (api:update does).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, relative } from 'node:path';
import { CompilerState, Extractor, ExtractorConfig } from '@microsoft/api-extractor';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

// The names each entry may export at most (issue 11: "a deliberate public API").
const ENTRIES = [
  { name: 'nestjs-tombstones', config: 'api-extractor.json', cap: 30 },
  { name: 'nestjs-tombstones/admin', config: 'api-extractor.admin.json', cap: 10 },
  { name: 'nestjs-tombstones/events', config: 'api-extractor.events.json', cap: 15 },
  { name: 'nestjs-tombstones/metrics', config: 'api-extractor.metrics.json', cap: 5 },
  { name: 'nestjs-tombstones/terminus', config: 'api-extractor.terminus.json', cap: 5 },
];

const mode = process.argv[2];
if (mode !== '--check' && mode !== '--update') {
  console.error('usage: node scripts/api-report.mjs --check | --update');
  process.exit(2);
}
const update = mode === '--update';

const configs = ENTRIES.map((entry) => ExtractorConfig.loadFileAndPrepare(join(root, entry.config)));
for (const config of configs) {
  if (!existsSync(config.mainEntryPointFilePath)) {
    console.error(`${config.mainEntryPointFilePath} does not exist: run \`npm run build\` first.`);
    process.exit(1);
  }
}
// A report made from an old build would pass or fail for the wrong reason.
const built = statSync(configs[0].mainEntryPointFilePath).mtimeMs;
const newer = ['src', 'migrations']
  .flatMap((dir) => readdirSync(join(root, dir), { recursive: true }).map((f) => join(dir, f)))
  .filter((f) => f.endsWith('.ts') && !f.endsWith('.spec.ts') && !f.endsWith('.d.ts') && statSync(join(root, f)).mtimeMs > built);
if (newer.length) {
  console.error(`dist/ is older than ${newer.slice(0, 3).join(', ')}${newer.length > 3 ? ', …' : ''}: run \`npm run build\` first.`);
  process.exit(1);
}

// One TypeScript program for every entry (the analysis is most of the time).
const compilerState = CompilerState.create(configs[0], {
  additionalEntryPoints: configs.map((config) => config.mainEntryPointFilePath),
});

const failures = [];
for (const [i, config] of configs.entries()) {
  const { name } = ENTRIES[i];
  const result = Extractor.invoke(config, { localBuild: update, compilerState, printApiReportDiff: !update });
  const report = config.reportConfigs.map((r) => relative(root, join(config.reportFolder, r.fileName))).join(', ');
  if (!result.succeeded) {
    failures.push(
      result.apiReportChanged
        ? `${name}: the public API differs from ${report} (diff above). If the change is meant, run \`npm run api:update\` and commit the report.`
        : `${name}: API Extractor reported ${result.errorCount} error(s) and ${result.warningCount} warning(s) (above).`,
    );
  } else if (result.apiReportChanged) {
    write(`${name}: ${report} rewritten; review and commit it.\n`);
  } else {
    write(`${name}: the public API matches ${report}\n`);
  }
}

// Count the names each entry exports (a name that is both a type and a value counts once).
const program = /** @type {import('typescript').Program} */ (compilerState.program);
const checker = program.getTypeChecker();
write('\nexported names per entry:\n');
for (const [i, config] of configs.entries()) {
  const { name, cap } = ENTRIES[i];
  const file = program.getSourceFile(config.mainEntryPointFilePath);
  const moduleSymbol = file && checker.getSymbolAtLocation(file);
  if (!moduleSymbol) {
    failures.push(`${name}: cannot read the exports of ${config.mainEntryPointFilePath}`);
    continue;
  }
  const count = checker.getExportsOfModule(moduleSymbol).length;
  const over = count > cap;
  write(`  ${name.padEnd(26)} ${String(count).padStart(3)} (at most ${cap})${over ? '  OVER THE CAP' : ''}\n`);
  if (over && !update) {
    failures.push(`${name} exports ${count} names, more than the ${cap} allowed: make the rest internal.`);
  }
}

if (failures.length) {
  console.error(`\napi:check failed:\n${failures.map((f) => `  - ${f}`).join('\n')}`);
  process.exit(1);
}
write(update ? '\napi:update done.\n' : '\napi:check passed.\n');

function write(text) {
  process.stdout.write(text);
}
