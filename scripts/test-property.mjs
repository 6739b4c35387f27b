// `npm run test:property`: the full property-based hostile-input run (about 15,000 requests),
// which `npm test` only samples. A script rather than `PROPERTY_RUNS=full npm test`, so that it
// runs the same on Windows.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const jest = fileURLToPath(new URL('../node_modules/jest/bin/jest.js', import.meta.url));
const result = spawnSync(
  process.execPath,
  ['--experimental-vm-modules', '--no-warnings=ExperimentalWarning', jest, '--selectProjects', 'e2e', '--testPathPatterns', 'property.e2e-spec', ...process.argv.slice(2)],
  { stdio: 'inherit', env: { ...process.env, PROPERTY_RUNS: 'full' } },
);
process.exit(result.status ?? 1);
