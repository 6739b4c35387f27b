// Runs the repository's TypeScript in a child Node process, as jest's transform does in the
// suites (transpile only, decorator metadata included): `node --import ./test/support/ts-loader.mjs
// test/fixtures/<file>.ts`. For the tests that need a process of their own to kill.
import { register } from 'node:module';

register('./ts-loader-hooks.mjs', import.meta.url);
