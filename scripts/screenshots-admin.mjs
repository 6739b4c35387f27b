// Saves PNGs of the admin web page's screens into docs/images/ (linked from docs/admin.md and the
// README): boots the demo as `npm start` does, on a throw-away embedded PostgreSQL, logs a few
// misses, and drives Debian's Chromium (scripts/install-chromium.sh, or CHROMIUM) through the
// screens. Nothing downloads a browser.
//
//   node scripts/screenshots-admin.mjs
/* global fetch, setTimeout */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { findFreePort, startEmbeddedPostgres } from '../dev/embedded-postgres.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const images = join(root, 'docs', 'images');
const TOKEN = 'screenshots-token';

function findChromium() {
  const onPath = (name) => {
    try {
      return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim();
    } catch {
      return '';
    }
  };
  const found = [process.env.CHROMIUM, onPath('chromium'), onPath('chromium-browser')].find((file) => file && existsSync(file));
  if (!found) throw new Error('No Chromium: run scripts/install-chromium.sh, or set CHROMIUM.');
  return found;
}

/** Polls until check() answers true, or fails after the deadline. */
async function until(what, check, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // Not yet.
    }
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

execFileSync('npm', ['run', 'build:example'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
const dataDir = mkdtempSync(join(os.tmpdir(), 'tombstones-screenshots-'));
const postgres = await startEmbeddedPostgres({ dataDir: join(dataDir, 'pg'), ephemeral: true });
const port = await findFreePort();
const base = `http://127.0.0.1:${port}`;
let output = '';
const demo = spawn(process.execPath, [join(root, 'dist-example', 'example', 'main.js')], {
  cwd: root,
  env: { ...process.env, DATABASE_URL: postgres.url, PORT: String(port), HOST: '127.0.0.1', ADMIN_TOKEN: TOKEN, HTTP_ADAPTER: 'express' },
  stdio: ['ignore', 'pipe', 'pipe'],
});
demo.stdout.on('data', (chunk) => (output += chunk));
demo.stderr.on('data', (chunk) => (output += chunk));

let browser;
try {
  await until('the demo', async () => (await fetch(`${base}/articles/hello-world`)).ok);

  // Misses, as people following old links would leave them.
  const misses = { 'helo-world': 12, 'winter-sale-2025': 5, 'hello-wrld': 3, 'about-us': 2 };
  for (const [key, hits] of Object.entries(misses)) {
    for (let i = 0; i < hits; i += 1) await fetch(`${base}/articles/${key}`, { headers: { referer: 'https://news.example.com/2026/11/launch' } });
  }
  const auth = { authorization: `Bearer ${TOKEN}` };
  await until('the misses to be written', async () => {
    const { items } = await (await fetch(`${base}/admin/tombstone-misses`, { headers: auth })).json();
    return items.length === Object.keys(misses).length;
  });

  mkdirSync(images, { recursive: true });
  browser = await chromium.launch({ executablePath: findChromium(), headless: true, args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-dev-shm-usage'] });
  const page = await browser.newPage({ viewport: { width: 1200, height: 720 }, deviceScaleFactor: 1 });
  const shot = async (name) => {
    await page.screenshot({ path: join(images, `${name}.png`) });
    process.stdout.write(`docs/images/${name}.png\n`);
  };

  await page.goto(`${base}/admin/ui`);
  await page.getByLabel('Admin token').waitFor();
  await shot('admin-sign-in');

  await page.getByLabel('Admin token').fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('main table').waitFor();
  await shot('admin-tombstones');

  await page.getByRole('button', { name: 'Edit summer-sale-2025' }).click();
  await page.getByRole('dialog').waitFor();
  await shot('admin-edit');
  await page.keyboard.press('Escape');

  await page.getByRole('link', { name: 'Misses' }).click();
  await page.getByRole('button', { name: 'Redirect helo-world' }).waitFor();
  await shot('admin-misses');

  await page.getByRole('button', { name: 'Redirect helo-world' }).click();
  await page.getByRole('button', { name: 'Use hello-world' }).waitFor();
  await shot('admin-miss-redirect');
  await page.keyboard.press('Escape');

  await page.getByRole('link', { name: 'Import and export' }).click();
  await page.getByLabel('Or paste the rows').fill(
    'type,key,kind,target,reason,alternative\n' +
      'article,autumn-sale-2025,deleted,,The autumn 2025 promotion has ended,/articles/current\n' +
      'article,hello-again,moved,,,\n' +
      'article,winter-sale-2025,gone,,,\n',
  );
  await page.getByRole('button', { name: 'Check (dry run)' }).click();
  await page.getByRole('table', { name: 'Rows with errors' }).waitFor();
  await shot('admin-import-dry-run');
} catch (error) {
  console.error(output);
  throw error;
} finally {
  await browser?.close();
  demo.kill('SIGTERM');
  await new Promise((resolve) => (demo.exitCode !== null ? resolve() : demo.once('exit', resolve)));
  await postgres.stop();
  rmSync(dataDir, { recursive: true, force: true });
}
