// Packs the package as `npm publish` would (prepack cleans dist/ and builds) and checks what the
// tarball holds: every file package.json points at and every built migration, nothing else.
//
//   node scripts/pack.mjs [dir]     (npm run pack:check; dir defaults to .pack)
//
// Leaves the tarball at <dir>/nestjs-tombstones.tgz for publint, attw and the consumer test.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dest = resolve(process.argv[2] ?? join(root, '.pack'));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

rmSync(dest, { recursive: true, force: true });
mkdirSync(dest, { recursive: true });
// --json keeps stdout for the result; the prepack build prints on stderr.
const out = execFileSync('npm', ['pack', '--json', '--pack-destination', dest], {
  cwd: root,
  encoding: 'utf8',
  stdio: ['ignore', 'pipe', 'inherit'],
  shell: process.platform === 'win32',
});
const [packed] = JSON.parse(out);
const files = packed.files.map((f) => f.path);

const problems = [];
const allowed = /^(package\.json|README\.md|LICENSE|dist\/(src|migrations)\/.+\.(js|d\.ts))$/;
for (const file of files) {
  if (!allowed.test(file) || /\.spec\./.test(file)) problems.push(`unexpected file in the package: ${file}`);
}
const needed = new Set(['package.json', 'README.md', 'LICENSE', pkg.main, pkg.types]);
for (const [subpath, target] of Object.entries(pkg.exports)) {
  for (const file of typeof target === 'string' ? [target] : Object.values(target)) needed.add(file);
  if (subpath.includes('*')) problems.push(`export ${subpath}: patterns are not checked here`);
}
for (const migration of readdirSync(join(root, 'migrations')).filter((f) => f.endsWith('.ts'))) {
  const base = `dist/migrations/${migration.replace(/\.ts$/, '')}`;
  needed.add(`${base}.js`).add(`${base}.d.ts`);
}
for (const file of needed) {
  if (!files.includes(file.replace(/^\.\//, ''))) problems.push(`missing from the package: ${file}`);
}
if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}

const tarball = join(dest, `${pkg.name}.tgz`);
renameSync(join(dest, packed.filename), tarball);
const kB = (n) => `${Math.round(n / 1024)} kB`;
process.stdout.write(
  `${packed.id}: ${files.length} files, ${kB(packed.size)} packed, ${kB(packed.unpackedSize)} unpacked\n` +
    `${relative(process.cwd(), tarball) || tarball}\n`,
);
