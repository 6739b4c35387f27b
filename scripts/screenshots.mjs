// `npm run screenshots`: the pictures in docs/images/, taken of the demo as `npm start` runs it
// (built by `npm run build:example`, seeded, on a throw-away embedded PostgreSQL) by Debian's
// Chromium (scripts/install-chromium.sh; CHROMIUM overrides), headless, through playwright-core.
// Nothing downloads a browser. Run it again whenever a page changes, and commit the PNGs.
//
// Each shot is one entry of SHOTS: add the next screens there.
import 'reflect-metadata';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startEmbeddedPostgres } from '#dev/embedded-postgres';

const root = fileURLToPath(new URL('..', import.meta.url));
const images = path.join(root, 'docs', 'images');

/**
 * What to photograph: the file in docs/images/, the demo's path, the status the page must have
 * (a shot of the wrong page is worse than none), what it must show (`shows`), and the Accept of a browser unless said.
 */
const SHOTS = [
  // HTML answers (issue 16, item 1): what a person who clicked an old link sees.
  { file: 'html-410.png', path: '/articles/summer-sale-2025', status: 410 },
  { file: 'html-404.png', path: '/articles/never-was', status: 404 },
  // A 404 with "Did you mean" links (issue 16, item 2): the demo's articles suggest to browsers.
  { file: 'html-404-suggestions.png', path: '/articles/helo-world', status: 404, shows: '/articles/hello-world' },
  // The admin page's screens: scripts/screenshots-admin.mjs (npm run screenshots runs both).
];

const VIEWPORT = { width: 900, height: 360 };

function findChromium() {
  const candidates = [process.env.CHROMIUM, ...['chromium', 'chromium-browser'].map(onPath)].filter(Boolean);
  const found = candidates.find((file) => existsSync(file));
  if (!found) throw new Error('No Chromium: run scripts/install-chromium.sh (Debian: apt-get install chromium), or set CHROMIUM.');
  return found;
}

function onPath(name) {
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

async function main() {
  const built = path.join(root, 'dist-example', 'example');
  if (!existsSync(path.join(built, 'app.module.js'))) throw new Error('Build the demo first: npm run build:example (npm run screenshots does).');
  const { AppModule } = await import(path.join(built, 'app.module.js'));
  const { createDemoApp } = await import(path.join(built, 'http.js'));
  const { seed } = await import(path.join(built, 'seed.js'));

  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'tombstones-screenshots-'));
  const database = await startEmbeddedPostgres({ dataDir: path.join(dataDir, 'pg'), ephemeral: true });
  let app;
  let browser;
  try {
    app = await createDemoApp(AppModule.forRoot(database.url, { adminToken: 'screenshots' }), 'express', { logger: ['error', 'warn'] });
    await app.init();
    await seed(app);
    await app.listen(0, '127.0.0.1');
    const base = (await app.getUrl()).replace('[::1]', '127.0.0.1').replace('localhost', '127.0.0.1');

    browser = await chromium.launch({
      executablePath: findChromium(),
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
    });
    const context = await browser.newContext({ viewport: VIEWPORT, deviceScaleFactor: 1, colorScheme: 'light', locale: 'en-US' });
    mkdirSync(images, { recursive: true });
    for (const shot of SHOTS) {
      const page = await context.newPage();
      const response = await page.goto(base + shot.path);
      if (response?.status() !== shot.status) throw new Error(`${shot.path} answered ${response?.status()}, not ${shot.status}: no picture of the wrong page.`);
      if (shot.shows && !(await page.content()).includes(shot.shows)) throw new Error(`${shot.path} does not show ${shot.shows}: no picture of the wrong page.`);
      const file = path.join(images, shot.file);
      await page.screenshot({ path: file });
      await page.close();
      process.stdout.write(`${path.relative(root, file)} (${shot.path}, ${shot.status}, ${Math.round(statSync(file).size / 1024)} KiB)\n`);
    }
  } finally {
    await browser?.close();
    await app?.close();
    await database.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
