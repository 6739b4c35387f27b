import type { INestApplication } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { TombstoneModule, TombstoneService } from '../../src/index.js';
import { ItemsController } from '../fixtures/items.fixture.js';
import { ADAPTERS, bootApp, settled } from '../support/app.js';
import { launchBrowser, listenLocally, type TestBrowser } from '../support/browser.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

// A real browser follows the module's answers as a person clicking an old link would.
describe.each(ADAPTERS)('Chromium follows the answers (%s)', (adapter) => {
  let db: TestDatabase;
  let app: INestApplication;
  let browser: TestBrowser;
  let base: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    app = await bootApp(adapter, {
      imports: [TypeOrmModule.forRoot(db.options()), TombstoneModule.forRoot()],
      controllers: [ItemsController],
    });
    const tombstones = app.get(TombstoneService);
    await tombstones.recordMove('item', 'old name', 'target');
    await tombstones.recordMove('item', 'chain-1', 'chain-2');
    await tombstones.recordMove('item', 'chain-2', 'target');
    await tombstones.recordDeletion('item', 'deleted', { reason: 'Retired', alternative: '/items/live' });
    await settled(app);
    base = await listenLocally(app);
    browser = await launchBrowser();
  });

  afterAll(async () => {
    await browser?.close();
    await app?.close();
    await db?.drop();
  });

  it.each([
    ['a moved key', '/items/old%20name'],
    ['a chain of moves, in one hop', '/items/chain-1'],
  ])('%s: the browser lands on the live resource', async (_name, path) => {
    const page = await browser.browser.newPage();
    try {
      const response = await page.goto(base + path);
      expect(response?.status()).toBe(200);
      expect(new URL(page.url()).pathname).toBe('/items/target');
      // One redirect, then the resource.
      expect(response?.request().redirectedFrom()?.redirectedFrom()).toBeNull();
      expect(JSON.parse((await response?.text()) ?? '')).toEqual({ key: 'target', name: 'Where moved items live' });
    } finally {
      await page.close();
    }
  });

  it('a deleted key: the browser gets the 410 and stays on the address it asked for', async () => {
    const page = await browser.browser.newPage();
    try {
      const response = await page.goto(`${base}/items/deleted`);
      expect(response?.status()).toBe(410);
      expect(new URL(page.url()).pathname).toBe('/items/deleted');
      expect(response?.headers().link).toBe('</items/live>; rel="alternate"');
    } finally {
      await page.close();
    }
  });
});
