import { readFile } from 'node:fs/promises';
import { type CanActivate, type ExecutionContext, Injectable, UnauthorizedException } from '@nestjs/common';
import type { Page } from 'playwright-core';
import request from 'supertest';
import { TombstoneService } from '../../src/index.js';
import { ADMIN_TOKEN, bootAdminApp } from '../fixtures/admin.fixture.js';
import { type AdapterName, settled } from '../support/app.js';
import { launchBrowser, listenLocally, type TestBrowser } from '../support/browser.js';
import { eventually } from '../support/eventually.js';

const TOKEN = ADMIN_TOKEN.replace(/^Bearer /, '');
const HOSTILE_KEY = '<img src=x onerror="window.__xss=1">';
const HOSTILE_REASON = '<script>window.__xss=2</script><b>bold</b>';

type Booted = Awaited<ReturnType<typeof bootAdminApp>>;

/** The page answers asynchronously: an expectation about it passes once the page got there. */
const soon = (check: () => Promise<unknown>) => eventually(check, 30_000);

/**
 * A page that records what the Content-Security-Policy refused and every script error: a test
 * ends by expecting both lists empty.
 */
async function openPage(browser: TestBrowser, url: string, { refusals = [401, 403] } = {}): Promise<{ page: Page; problems: string[] }> {
  const context = await browser.browser.newContext({ acceptDownloads: true });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    // A refused request logs "Failed to load resource: ... 401": the sign-in prompt expects it.
    const refused = /^Failed to load resource: the server responded with a status of (\d+)/.exec(message.text());
    if (message.type() === 'error' && !(refused && refusals.includes(Number(refused[1])))) {
      problems.push(`console: ${message.text()}`);
    }
  });
  // Page code as text: this project's types know Node, not the DOM.
  await page.addInitScript(
    "document.addEventListener('securitypolicyviolation', (event) => console.error('CSP violation: ' + event.violatedDirective + ' ' + event.blockedURI));",
  );
  await page.goto(url);
  return { page, problems };
}

async function signIn(page: Page, screen = 'Tombstones'): Promise<void> {
  await page.getByLabel('Admin token').fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 2, name: screen }).waitFor();
}

/** Evaluates an expression in the page (as text: this project's types know Node, not the DOM). */
const inPage = <T>(page: Page, expression: string) => page.evaluate<T>(expression);

/** The name of the form control that has focus. */
const focusedControl = (page: Page) => inPage<string | undefined>(page, 'document.activeElement?.name');

/** The rows of the data table shown (its tbody). */
const bodyRows = (page: Page) => page.locator('main table tbody tr');

async function seed(booted: Booted): Promise<void> {
  const tombstones = booted.app.get(TombstoneService);
  for (let i = 0; i < 25; i += 1) await tombstones.recordDeletion('article', `page-${String(i).padStart(2, '0')}`, { reason: 'Paged' });
  await tombstones.recordMove('article', 'hello-old', 'hello-world');
  await tombstones.recordDeletion('article', HOSTILE_KEY, { reason: HOSTILE_REASON });
  await settled(booted.app);
}

/**
 * For one describe block: an admin app booted with `options`, seeded, listening on loopback, and
 * Chromium; both closed after the block. Read its fields inside tests and hooks.
 */
function adminPage(adapter: AdapterName, options: Parameters<typeof bootAdminApp>[1], seedWith: (booted: Booted) => Promise<void>) {
  const env = {} as { booted: Booted; browser: TestBrowser; base: string };
  beforeAll(async () => {
    env.booted = await bootAdminApp(adapter, options);
    await seedWith(env.booted);
    env.base = await listenLocally(env.booted.app);
    env.browser = await launchBrowser();
  });
  afterAll(async () => {
    await env.browser?.close();
    await env.booted?.close();
  });
  return env;
}

/** One tombstone of `key`, heard by the app. */
const seedOne = (key: string, reason: string) => async (booted: Booted) => {
  await booted.app.get(TombstoneService).recordDeletion('article', key, { reason });
  await settled(booted.app);
};

describe('admin web page in Chromium (express)', () => {
  const env = adminPage('express', { core: { missLog: { flushIntervalMs: 100 } }, admin: { ui: true } }, seed);
  const api = () => request(env.booted.app.getHttpServer());

  it('shows nothing but a sign-in prompt without credentials, and the data once signed in', async () => {
    const { page, problems } = await openPage(env.browser, `${env.base}/admin/ui`);
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    expect(await focusedControl(page)).toBe('token');
    expect(await page.locator('table').count()).toBe(0);
    expect(await page.content()).not.toContain('page-00');

    await page.getByLabel('Admin token').fill('wrong');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await soon(async () => expect(await page.getByRole('alert').textContent()).toContain('403'));
    expect(await page.locator('table').count()).toBe(0);

    await signIn(page);
    await soon(async () => expect(await bodyRows(page).count()).toBe(20));
    expect(await inPage(page, "sessionStorage.getItem('nestjs-tombstones.admin-token')")).toBe(TOKEN);

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    expect(await page.locator('table').count()).toBe(0);
    expect(await page.locator('main').textContent()).not.toContain('page-00');
    expect(problems).toEqual([]);
    await page.context().close();
  });

  it('lists, filters and pages with the cursor', async () => {
    const { page, problems } = await openPage(env.browser, `${env.base}/admin/ui`);
    await signIn(page);
    await page.getByLabel('Key starts with').fill('page-');
    await page.getByRole('button', { name: 'Search' }).click();
    await soon(async () => expect(await page.getByRole('status').textContent()).toBe('20 tombstones on page 1.'));
    expect(await bodyRows(page).count()).toBe(20);
    // Newest first: page-24 down to page-05, then page-04 down to page-00.
    expect(await bodyRows(page).first().locator('th').textContent()).toBe('page-24');
    await page.getByRole('button', { name: 'Next page' }).click();
    await soon(async () => expect(await page.getByRole('status').textContent()).toBe('Page 2: 5 tombstones.'));
    expect(await bodyRows(page).locator('th').allTextContents()).toEqual(['page-04', 'page-03', 'page-02', 'page-01', 'page-00']);
    expect(await page.getByRole('button', { name: 'Next page' }).isDisabled()).toBe(true);
    await page.getByRole('button', { name: 'Previous page' }).click();
    await soon(async () => expect(await page.getByRole('status').textContent()).toBe('Page 1: 20 tombstones.'));
    expect(await bodyRows(page).first().locator('th').textContent()).toBe('page-24');

    await page.getByLabel('Kind').selectOption('moved');
    await page.getByLabel('Key starts with').fill('');
    await page.getByRole('button', { name: 'Search' }).click();
    await soon(async () => expect(await page.getByRole('status').textContent()).toBe('1 tombstone on page 1.'));
    expect(await bodyRows(page).locator('th').allTextContents()).toEqual(['hello-old']);
    expect(problems).toEqual([]);
    await page.context().close();
  });

  it('creates (a refused field is named in the dialog), edits and restores a tombstone', async () => {
    const { page, problems } = await openPage(env.browser, `${env.base}/admin/ui`, { refusals: [401, 400] });
    await signIn(page);
    await page.getByRole('button', { name: 'New tombstone' }).click();
    const dialog = page.getByRole('dialog', { name: 'New tombstone' });
    await dialog.getByLabel('Type').fill('article');
    await dialog.getByLabel('Key', { exact: true }).fill('created-in-ui');
    await dialog.getByLabel('Answer').selectOption('moved');
    await dialog.getByRole('button', { name: 'Create' }).click();
    await soon(async () => expect(await dialog.getByRole('alert').textContent()).toMatch(/target/));
    expect(await dialog.getByLabel('Target key').getAttribute('aria-invalid')).toBe('true');
    expect(await focusedControl(page)).toBe('target');
    await api().get('/articles/created-in-ui').expect(404);

    await dialog.getByLabel('Answer').selectOption('deleted');
    await dialog.getByLabel('Reason').fill('Retired in the UI');
    await dialog.getByLabel('Alternative link').fill('/articles/current');
    await dialog.getByRole('button', { name: 'Create' }).click();
    await soon(async () => expect(await page.getByRole('status').textContent()).toBe('Created the tombstone of created-in-ui.'));
    expect(await dialog.count()).toBe(0);
    const gone = await api().get('/articles/created-in-ui').expect(410);
    expect(gone.body.reason).toBe('Retired in the UI');

    await page.getByRole('button', { name: 'Edit created-in-ui' }).click();
    const edit = page.getByRole('dialog', { name: 'Edit created-in-ui' });
    expect(await edit.getByLabel('Reason').inputValue()).toBe('Retired in the UI');
    await edit.getByLabel('Reason').fill('Replaced by the current articles');
    await edit.getByRole('button', { name: 'Save' }).click();
    await soon(async () => expect(await page.getByRole('status').textContent()).toBe('Saved created-in-ui.'));
    expect((await api().get('/articles/created-in-ui').expect(410)).body.reason).toBe('Replaced by the current articles');
    // Focus goes back to the screen's heading after the change.
    expect(await inPage(page, 'document.activeElement?.textContent')).toBe('Tombstones');

    await page.getByRole('button', { name: 'Restore created-in-ui' }).click();
    await page.getByRole('dialog', { name: 'Restore created-in-ui?' }).getByRole('button', { name: 'Restore' }).click();
    await soon(async () => expect(await page.getByRole('status').textContent()).toBe('Restored created-in-ui: its tombstone is deleted.'));
    await api().get('/articles/created-in-ui').expect(404);
    expect(await page.getByRole('button', { name: 'Edit created-in-ui' }).count()).toBe(0);
    expect(problems).toEqual([]);
    await page.context().close();
  });

  it('turns misses, most missed first, into a redirect (with a suggested target) and into a 410', async () => {
    for (let i = 0; i < 3; i += 1) await api().get('/articles/helo-world').expect(404);
    await api().get('/articles/hello-promo').expect(404);
    await eventually(async () => {
      // Other tests' 404s are logged too: these keys are the only ones that start with "hel".
      const { body } = await api().get('/admin/tombstone-misses?sort=hits&keyPrefix=hel').set('Authorization', ADMIN_TOKEN).expect(200);
      expect(body.items.map((miss: { key: string; hits: number }) => [miss.key, miss.hits])).toEqual([['helo-world', 3], ['hello-promo', 1]]);
    });

    const { page, problems } = await openPage(env.browser, `${env.base}/admin/ui#misses`);
    await signIn(page, 'Misses');
    await page.getByLabel('Key starts with').fill('hel');
    await page.getByRole('button', { name: 'Search' }).click();
    await soon(async () => expect(await bodyRows(page).locator('th').allTextContents()).toEqual(['helo-world', 'hello-promo']));

    await page.getByRole('button', { name: 'Redirect helo-world' }).click();
    const redirect = page.getByRole('dialog', { name: 'Redirect helo-world' });
    await redirect.getByRole('button', { name: 'Use hello-world' }).click();
    expect(await redirect.getByLabel('Target key').inputValue()).toBe('hello-world');
    await redirect.getByRole('button', { name: 'Create redirect' }).click();
    await soon(async () => expect(await page.getByRole('status').textContent()).toBe('helo-world now redirects to hello-world.'));
    const moved = await api().get('/articles/helo-world').expect(301);
    expect(moved.headers.location).toBe('/articles/hello-world');

    await page.getByRole('button', { name: 'Mark hello-promo gone (410)' }).click();
    const gone = page.getByRole('dialog', { name: 'Mark hello-promo gone' });
    await gone.getByLabel('Reason').fill('The promotion ended');
    await gone.getByRole('button', { name: 'Mark gone' }).click();
    await soon(async () => expect(await page.getByRole('status').textContent()).toBe('hello-promo now answers 410 Gone.'));
    expect((await api().get('/articles/hello-promo').expect(410)).body.reason).toBe('The promotion ended');
    await soon(async () => expect(await page.getByText('No miss logged.').count()).toBe(1));
    expect(problems).toEqual([]);
    await page.context().close();
  });

  it('previews an import (a row error, nothing written), then imports; exports a download', async () => {
    const { page, problems } = await openPage(env.browser, `${env.base}/admin/ui#transfer`);
    await signIn(page, 'Import and export');
    const rows = 'type,key,kind,target,reason\narticle,imported-1,deleted,,From the file\narticle,imported-2,moved,,\n';
    await page.getByLabel('Or paste the rows').fill(rows);
    await page.getByRole('button', { name: 'Check (dry run)' }).click();
    const errors = page.getByRole('table', { name: 'Rows with errors' });
    await errors.waitFor();
    expect(await errors.locator('tbody tr').allInnerTexts()).toEqual([expect.stringMatching(/^3\s+target\s+is required for a moved tombstone$/)]);
    expect(await page.getByRole('button', { name: 'Import', exact: true }).isDisabled()).toBe(true);
    expect(await inPage(page, 'document.activeElement?.textContent')).toBe('Dry run: 1 row needs fixing');
    await api().get('/articles/imported-1').expect(404);

    await page.getByLabel('Or paste the rows').fill(rows.replace('moved,,', 'moved,hello-world,'));
    expect(await page.getByRole('button', { name: 'Import', exact: true }).isDisabled()).toBe(true);
    await page.getByRole('button', { name: 'Check (dry run)' }).click();
    await soon(async () => expect(await page.getByRole('status').textContent()).toBe('Dry run passed: 2 rows ready to import.'));
    await api().get('/articles/imported-1').expect(404);
    await page.getByRole('button', { name: 'Import', exact: true }).click();
    await soon(async () => expect(await page.getByRole('status').textContent()).toBe('Imported 2 rows: 2 created, 0 replaced.'));
    await api().get('/articles/imported-1').expect(410);
    expect((await api().get('/articles/imported-2').expect(301)).headers.location).toBe('/articles/hello-world');

    await page.getByLabel('Type', { exact: true }).fill('article');
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download' }).click()]);
    expect(download.suggestedFilename()).toBe('tombstones.csv');
    const csv = await readFile((await download.path())!, 'utf8');
    expect(csv.split('\n')[0]).toMatch(/^scope,type,key,kind,target,/);
    expect(csv).toContain('\n,article,imported-1,deleted,');
    expect(problems).toEqual([]);
    await page.context().close();
  });

  it("edits a redirect's target", async () => {
    const { page, problems } = await openPage(env.browser, `${env.base}/admin/ui`);
    await signIn(page);
    await page.getByLabel('Kind').selectOption('moved');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByRole('button', { name: 'Edit hello-old' }).click();
    const edit = page.getByRole('dialog', { name: 'Edit hello-old' });
    expect(await edit.getByLabel('Target key').inputValue()).toBe('hello-world');
    expect(await edit.getByLabel('Alternative link').isHidden()).toBe(true);
    await edit.getByLabel('Target key').fill('page-00');
    await edit.getByLabel('Permanent (301/308; otherwise 302/307)').uncheck();
    await edit.getByRole('button', { name: 'Save' }).click();
    await soon(async () => expect(await page.getByRole('status').textContent()).toBe('Saved hello-old.'));
    // page-00 is a deleted key: a temporary redirect to it answers with its 410, as the admin API documents.
    await api().get('/articles/hello-old').expect(410);
    const { body } = await api().get('/admin/tombstones?keyPrefix=hello-old').set('Authorization', ADMIN_TOKEN).expect(200);
    expect(body.items[0]).toMatchObject({ kind: 'moved', target: 'page-00', permanent: false });
    await api().patch(`/admin/tombstones/${body.items[0].id}`).set('Authorization', ADMIN_TOKEN).send({ target: 'hello-world', permanent: true }).expect(200);
    expect(problems).toEqual([]);
    await page.context().close();
  });

  it('hides every datum as soon as the server refuses the credentials', async () => {
    const { page, problems } = await openPage(env.browser, `${env.base}/admin/ui`);
    await signIn(page);
    await page.locator('main table').waitFor();
    // The token is revoked while the page is open: the next request is refused.
    await inPage(page, "sessionStorage.setItem('nestjs-tombstones.admin-token', 'revoked')");
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    expect(await page.locator('table').count()).toBe(0);
    expect(await page.locator('body').textContent()).not.toContain('page-0');
    expect(await inPage(page, "sessionStorage.getItem('nestjs-tombstones.admin-token')")).toBeNull();
    expect(problems).toEqual([]);
    await page.context().close();
  });

  it('shows hostile keys and reasons as text: nothing they hold runs', async () => {
    const { page, problems } = await openPage(env.browser, `${env.base}/admin/ui`);
    await signIn(page);
    await page.getByLabel('Key starts with').fill('<img');
    await page.getByRole('button', { name: 'Search' }).click();
    await soon(async () => expect(await bodyRows(page).locator('th').allTextContents()).toEqual([HOSTILE_KEY]));
    expect(await bodyRows(page).locator('td').allTextContents()).toContain(HOSTILE_REASON);
    expect(await page.locator('main table img, main table script, main table b').count()).toBe(0);
    await page.getByRole('button', { name: `Edit ${HOSTILE_KEY}` }).click();
    await page.getByRole('dialog', { name: `Edit ${HOSTILE_KEY}` }).waitFor();
    expect(await page.locator('dialog img, dialog script, dialog b').count()).toBe(0);
    await page.keyboard.press('Escape');

    // A miss of a hostile key, with a hostile referrer, on the misses screen and in its dialog.
    const missed = '<svg onload="window.__xss=3">';
    const referrer = 'https://x.example/"><img src=x onerror="window.__xss=4">';
    await api().get(`/articles/${encodeURIComponent(missed)}`).set('Referer', referrer).expect(404);
    await eventually(async () => {
      const { body } = await api().get('/admin/tombstone-misses?keyPrefix=%3Csvg').set('Authorization', ADMIN_TOKEN).expect(200);
      expect(body.items).toHaveLength(1);
    });
    await page.getByRole('link', { name: 'Misses' }).click();
    await page.getByLabel('Key starts with').fill('<svg');
    await page.getByRole('button', { name: 'Search' }).click();
    await soon(async () => expect(await bodyRows(page).locator('th').allTextContents()).toEqual([missed]));
    expect(await bodyRows(page).locator('td').allTextContents()).toContain(referrer);
    await page.getByRole('button', { name: `Redirect ${missed}` }).click();
    await page.getByRole('dialog', { name: `Redirect ${missed}` }).waitFor();
    expect(await page.locator('main svg, main img, dialog svg, dialog img').count()).toBe(0);
    expect(await inPage(page, 'window.__xss')).toBeUndefined();
    expect(problems).toEqual([]);
    await page.context().close();
  });

  it('works from the keyboard alone: create a tombstone, cancel with Escape', async () => {
    const { page, problems } = await openPage(env.browser, `${env.base}/admin/ui`);
    await page.getByLabel('Admin token').waitFor();
    // Focus starts in the token field.
    await page.keyboard.type(TOKEN);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { level: 2, name: 'Tombstones' }).waitFor();
    await page.locator('main table').waitFor();

    const focusedText = () => inPage<string>(page, "document.activeElement?.textContent ?? ''");
    let steps = 0;
    while ((await focusedText()) !== 'New tombstone') {
      await page.keyboard.press('Tab');
      if (++steps > 30) throw new Error('"New tombstone" is not reachable with Tab');
    }
    await page.keyboard.press('Enter');
    // The dialog takes focus to its first field.
    expect(await focusedControl(page)).toBe('type');
    await page.keyboard.type('article');
    await page.keyboard.press('Tab');
    await page.keyboard.type('typed-key');
    await page.keyboard.press('Enter');
    await soon(async () => expect(await page.getByRole('status').textContent()).toBe('Created the tombstone of typed-key.'));
    expect(await inPage(page, "document.activeElement?.tagName + ' ' + document.activeElement?.textContent")).toBe('H2 Tombstones');
    await api().get('/articles/typed-key').expect(410);

    await page.getByRole('button', { name: 'Edit typed-key' }).focus();
    await page.keyboard.press('Enter');
    await page.getByRole('dialog', { name: 'Edit typed-key' }).waitFor();
    await page.keyboard.press('Escape');
    await soon(async () => expect(await page.getByRole('dialog').count()).toBe(0));
    expect(await inPage(page, "document.activeElement?.getAttribute('aria-label')")).toBe('Edit typed-key');
    expect(problems).toEqual([]);
    await page.context().close();
  });
});

/** An app that signs its operators in with a same-origin cookie session (no token at all). */
@Injectable()
class SessionCookieGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context.switchToHttp().getRequest<{ headers: Record<string, string | undefined>; user?: unknown }>();
    if (!/(^|;\s*)session=ops-ana(;|$)/.test(request.headers.cookie ?? '')) throw new UnauthorizedException();
    request.user = { id: 'ops-ana' };
    return true;
  }
}

describe('admin web page in Chromium: a cookie-session app, the page guarded too (express)', () => {
  const env = adminPage('express', { admin: { guard: SessionCookieGuard, ui: { guardPage: true } } }, seedOne('session-key', 'Seen through the session'));

  it('shows the data with the session cookie, and neither page nor data without it', async () => {
    const context = await env.browser.browser.newContext();
    try {
      // Refused: the guard's JSON 401 (a page of its own, which asks for /favicon.ico, a 404).
      const refused = await context.newPage();
      expect((await refused.goto(`${env.base}/admin/ui`))?.status()).toBe(401);
      await refused.close();
      await context.addCookies([{ name: 'session', value: 'ops-ana', url: env.base }]);
      const page = await context.newPage();
      const problems: string[] = [];
      page.on('pageerror', (error) => problems.push(error.message));
      page.on('console', (message) => message.type() === 'error' && problems.push(message.text()));
      expect((await page.goto(`${env.base}/admin/ui`))?.status()).toBe(200);
      await soon(async () => expect(await bodyRows(page).locator('th').allTextContents()).toEqual(['session-key']));
      // No token: nothing to sign out of.
      expect(await page.getByRole('button', { name: 'Sign out' }).isHidden()).toBe(true);
      expect(problems).toEqual([]);
    } finally {
      await context.close();
    }
  });
});

describe.each(['fastify'] as AdapterName[])('admin web page in Chromium: smoke (%s)', (adapter) => {
  const env = adminPage(adapter, { admin: { ui: true } }, seedOne('fastify-key', 'On Fastify'));

  it('signs in, lists and creates', async () => {
    const { page, problems } = await openPage(env.browser, `${env.base}/admin/ui`);
    await signIn(page);
    await soon(async () => expect(await bodyRows(page).locator('th').allTextContents()).toEqual(['fastify-key']));
    await page.getByRole('button', { name: 'New tombstone' }).click();
    const dialog = page.getByRole('dialog', { name: 'New tombstone' });
    await dialog.getByLabel('Type').fill('article');
    await dialog.getByLabel('Key', { exact: true }).fill('created-on-fastify');
    await dialog.getByRole('button', { name: 'Create' }).click();
    await soon(async () => expect(await page.getByRole('status').textContent()).toBe('Created the tombstone of created-on-fastify.'));
    await request(env.booted.app.getHttpServer()).get('/articles/created-on-fastify').expect(410);
    expect(problems).toEqual([]);
    await page.context().close();
  });
});
