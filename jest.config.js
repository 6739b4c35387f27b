import { availableParallelism } from 'node:os';

// Jest runs the ESM build of NestJS 12 natively (node --experimental-vm-modules, see `npm test`).
const transform = {
  '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.jest.json' }],
};
const common = {
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  testEnvironment: 'node',
  transform,
};

/** @type {import('jest').Config} */
export default {
  // At least two suites at a time: most of an e2e suite's time is spent waiting for PostgreSQL, so
  // two workers on two cores take half the time of Jest's default (one fewer than the cores).
  maxWorkers: Math.max(2, availableParallelism() - 1),
  projects: [
    {
      ...common,
      displayName: 'unit',
      // test/*.spec.ts: unit tests of the repository itself (test/migrations.spec.ts); the e2e
      // suites there are *.e2e-spec.ts and belong to the e2e project.
      testMatch: ['<rootDir>/src/**/*.spec.ts', '<rootDir>/test/**/*.spec.ts'],
    },
    {
      ...common,
      displayName: 'e2e',
      testMatch: ['<rootDir>/test/**/*.e2e-spec.ts'],
      globalSetup: '<rootDir>/test/support/global-setup.ts',
      globalTeardown: '<rootDir>/test/support/global-teardown.ts',
      slowTestThreshold: 30,
    },
    {
      // A real Chromium (scripts/install-chromium.sh): `npm run test:browser`, run by .ci/run after
      // `npm test`, which stays free of the browser.
      ...common,
      displayName: 'browser',
      testMatch: ['<rootDir>/test/browser/**/*.browser-spec.ts'],
      globalSetup: '<rootDir>/test/support/global-setup.ts',
      globalTeardown: '<rootDir>/test/support/global-teardown.ts',
      slowTestThreshold: 30,
    },
  ],
  testTimeout: 60_000,
};
