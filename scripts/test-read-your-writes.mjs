// `npm run test:read-your-writes`: the full read-your-writes run (1,000 captured writes per HTTP
// adapter, each followed at once by requests to the same app), which `npm test` only samples
// (200 per adapter). A script rather than `READ_YOUR_WRITES_ROWS=250 npm test`, so that it runs
// the same on Windows.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const jest = fileURLToPath(new URL('../node_modules/jest/bin/jest.js', import.meta.url));
const result = spawnSync(
  process.execPath,
  ['--experimental-vm-modules', '--no-warnings=ExperimentalWarning', jest, '--selectProjects', 'e2e', '--testPathPatterns', 'read-your-writes.e2e-spec', ...process.argv.slice(2)],
  { stdio: 'inherit', env: { ...process.env, READ_YOUR_WRITES_ROWS: '250' } },
);
process.exit(result.status ?? 1);
