// `npm run test:events-flood`: the outbox's flood test at full size (1,000 concurrent changes, a
// third rolled back, a third of their backends killed), which `npm test` runs with 300. A script
// rather than `EVENTS_FLOOD_CHANGES=1000 npm test`, so that it runs the same on Windows.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const jest = fileURLToPath(new URL('../node_modules/jest/bin/jest.js', import.meta.url));
const result = spawnSync(
  process.execPath,
  [
    '--experimental-vm-modules',
    '--no-warnings=ExperimentalWarning',
    jest,
    '--selectProjects',
    'e2e',
    '--testPathPatterns',
    'events.e2e-spec',
    '--testNamePattern',
    'concurrent changes',
    ...process.argv.slice(2),
  ],
  { stdio: 'inherit', env: { ...process.env, EVENTS_FLOOD_CHANGES: '1000' } },
);
process.exit(result.status ?? 1);
