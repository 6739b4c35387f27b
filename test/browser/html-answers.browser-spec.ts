/// <reference lib="dom" />
// The functions passed to page.evaluate() run in Chromium: they see its DOM.
import type { INestApplication } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import type { Page } from 'playwright-core';
import { type TombstoneAnswer, TombstoneModule, TombstoneRenderer, TombstoneService } from '../../src/index.js';
import { ItemsController } from '../fixtures/items.fixture.js';
import { ADAPTERS, bootApp, settled } from '../support/app.js';
import { launchBrowser, listenLocally, type TestBrowser } from '../support/browser.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

const HOSTILE_KEY = '<img src=x onerror=window.pwned=1>';
const HOSTILE_REASON = '<script>window.pwned=2</script><img src=x onerror="window.pwned=3">';

/** A renderer that breaks the policy on purpose: proves the violation check below can fail. */
class InlineStyleRenderer extends TombstoneRenderer {
  protected override page(answer: TombstoneAnswer): string {
    return super.page(answer).replace('<h1>', '<h1 style="color:red">');
  }
}

declare global {
  interface Window {
    violations?: string[];
    pwned?: number;
  }
}

// A person who clicked an old link: Chromium asks for HTML, and gets a page it can read.
describe.each(ADAPTERS)('Chromium reads the HTML answers (%s)', (adapter) => {
  let db: TestDatabase;
  const apps: INestApplication[] = [];
  let browser: TestBrowser;
  let base: string;

  const serve = async (renderer?: typeof TombstoneRenderer) => {
    const app = await bootApp(adapter, {
      imports: [TypeOrmModule.forRoot(db.options()), TombstoneModule.forRoot({ renderer })],
      controllers: [ItemsController],
    });
    apps.push(app);
    return listenLocally(app);
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    base = await serve();
    const tombstones = apps[0].get(TombstoneService);
    await tombstones.recordDeletion('item', 'deleted', { reason: 'Retired in the spring clean', alternative: '/items/target' });
    await tombstones.recordDeletion('item', 'hostile', { reason: HOSTILE_REASON, alternative: '/items/target' });
    // Refused by the service; written straight into the table as another tool could.
    await db.sql.query(`INSERT INTO tombstones (resource_type, resource_key, kind, alternative) VALUES ('item', 'js-alternative', 'deleted', 'javascript:window.pwned=4')`);
    await settled(apps[0]);
    browser = await launchBrowser();
  });

  afterAll(async () => {
    await browser?.close();
    for (const app of apps) await app.close();
    await db?.drop();
  });

  /**
   * A new page that records every Content-Security-Policy violation (the event fires in the page
   * whatever runs there; an init script is the browser's own, which the policy does not govern)
   * and every console error.
   */
  const open = async (): Promise<{ page: Page; problems: () => Promise<string[]> }> => {
    const page = await browser.browser.newPage();
    const errors: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(message.text());
    });
    page.on('pageerror', (error) => errors.push(error.message));
    page.on('dialog', (dialog) => {
      errors.push(`dialog: ${dialog.message()}`);
      void dialog.dismiss();
    });
    await page.addInitScript(() => {
      window.violations = [];
      document.addEventListener('securitypolicyviolation', (event) => window.violations!.push(`${event.violatedDirective} ${event.blockedURI}`));
    });
    return {
      page,
      problems: async () => [...errors.filter((error) => !/Failed to load resource: the server responded with a status of (404|410)/.test(error)), ...(await page.evaluate(() => window.violations ?? []))],
    };
  };

  it('the 410 page shows what happened and why, and its link leads to the live resource', async () => {
    const { page, problems } = await open();
    try {
      const response = await page.goto(`${base}/items/deleted`);
      expect(response?.status()).toBe(410);
      expect(await page.title()).toBe('410 Gone');
      expect(await page.getByRole('heading', { level: 1 }).textContent()).toBe("Item 'deleted' was permanently deleted");
      await expect(page.getByText('Retired in the spring clean').isVisible()).resolves.toBe(true);
      // The page's own style applies: the policy allows it by its hash.
      expect(await page.getByRole('heading', { level: 1 }).evaluate((h1) => getComputedStyle(h1).fontSize)).toBe('26px');
      await page.getByRole('link', { name: '/items/target' }).click();
      await page.waitForURL(`${base}/items/target`);
      expect(JSON.parse((await page.locator('body').textContent()) ?? '')).toEqual({ key: 'target', name: 'Where moved items live' });
      expect(await problems()).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('the 404 page: a 404, never a 200, with no violation of its policy', async () => {
    const { page, problems } = await open();
    try {
      const response = await page.goto(`${base}/items/never-was`);
      expect(response?.status()).toBe(404);
      expect(response?.headers()['content-type']).toBe('text/html; charset=utf-8');
      expect(await page.getByRole('heading', { level: 1 }).textContent()).toBe("Item 'never-was' was not found");
      expect(await problems()).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('accessibility basics: a language, a title, one main landmark, one h1, links with names', async () => {
    const { page } = await open();
    try {
      await page.goto(`${base}/items/deleted`);
      expect(await page.locator('html').getAttribute('lang')).toBe('en');
      expect(await page.getByRole('main').count()).toBe(1);
      expect(await page.getByRole('heading', { level: 1 }).count()).toBe(1);
      const links = await page.getByRole('link').all();
      expect(links.length).toBeGreaterThan(0);
      for (const link of links) expect((await link.textContent())?.trim()).toBeTruthy();
      // A definition list of the facts, in the order a screen reader reads them.
      expect(await page.locator('dt').allTextContents()).toEqual(['Deleted', 'Reason', 'See instead']);
    } finally {
      await page.close();
    }
  });

  it('hostile values run no script and load nothing: they are shown as text', async () => {
    const { page, problems } = await open();
    try {
      const response = await page.goto(`${base}/items/${encodeURIComponent(HOSTILE_KEY)}`);
      expect(response?.status()).toBe(404);
      expect(await page.getByRole('heading', { level: 1 }).textContent()).toBe(`Item '${HOSTILE_KEY}' was not found`);
      await page.goto(`${base}/items/hostile`);
      expect(await page.getByText(HOSTILE_REASON).count()).toBe(1);
      expect(await page.locator('script, img').count()).toBe(0);
      expect(await page.evaluate(() => window.pwned)).toBeUndefined();
      // A javascript: alternative is no link to click.
      expect((await page.goto(`${base}/items/js-alternative`))?.status()).toBe(410);
      expect(await page.locator('a').count()).toBe(0);
      expect(await page.locator('[href^="javascript" i]').count()).toBe(0);
      expect(await problems()).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('the violation check works: a page that breaks the policy is caught', async () => {
    const broken = await serve(InlineStyleRenderer);
    const { page, problems } = await open();
    try {
      await page.goto(`${broken}/items/never-was`);
      expect(await page.getByRole('heading', { level: 1 }).evaluate((h1) => getComputedStyle(h1).color)).not.toBe('rgb(255, 0, 0)');
      expect((await problems()).join('\n')).toMatch(/style-src/);
    } finally {
      await page.close();
    }
  });
});
