import type { INestApplication } from '@nestjs/common';
import { getDataSourceToken } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';
import { TombstoneContext, TombstoneService } from '../src/index.js';
import { ArticlesService } from './articles.js';
import { Order, User } from './entities.js';
import { OrdersService } from './orders.js';
import { UsersService } from './users.js';

/**
 * Seeds the demo through the same calls an application makes: renames, deletions, a soft
 * delete and a merge. The database records each tombstone in the statement's transaction; the
 * actor and reason come from `TombstoneContext`. Runs once per database.
 */
export async function seed(app: INestApplication): Promise<boolean> {
  const db = app.get<DataSource>(getDataSourceToken());
  const [{ count }] = await db.query(`SELECT count(*)::int AS count FROM demo_articles`);
  if (count > 0) return false;

  const articles = app.get(ArticlesService);
  await articles.create('first-draft', 'Hello, world', ['intro']);
  await TombstoneContext.run({ actor: 'editor@example.com' }, async () => {
    await articles.update('first-draft', { slug: 'old-hello' });
    await articles.update('old-hello', { slug: 'hello-world' });
  });
  await articles.create('current', 'This season’s sale', ['sale']);
  await articles.create('spring-sale-2025', 'Spring sale 2025', ['sale']);
  await articles.update('spring-sale-2025', { slug: 'summer-sale-2025', title: 'Summer sale 2025' });
  await TombstoneContext.run({ actor: 'marketing@example.com', reason: 'The summer 2025 promotion has ended' }, () =>
    articles.remove('summer-sale-2025', { alternative: '/articles/current' }),
  );
  await articles.create('draft-notes', 'Notes (draft)');
  await TombstoneContext.run({ reason: 'Unpublished draft' }, () => articles.hide('draft-notes'));

  await db.getRepository(User).save([
    { id: 1, name: 'Ada Lovelace' },
    { id: 2, name: 'Ada L. (duplicate account)' },
  ]);
  await TombstoneContext.run({ actor: 'support@example.com' }, () => app.get(UsersService).merge(1, [2]));

  await db.getRepository(Order).save([
    { tenant: 'acme', number: 8472, totalCents: 12_900 },
    { tenant: 'acme', number: 9001, totalCents: 4_500 },
  ]);
  await TombstoneContext.run({ reason: 'Cancelled by the customer' }, () => app.get(OrdersService).remove('acme', 9001));

  // The documentation (example/docs.ts): whole sections at once, with prefix tombstones.
  const tombstones = app.get(TombstoneService);
  await TombstoneContext.run({ actor: 'docs@example.com' }, async () => {
    await tombstones.recordMove('doc', 'docs/v1/', 'docs/v2/', { prefix: true });
    // A page's own tombstone wins over its section's.
    await tombstones.recordDeletion('doc', 'docs/v1/guide/old-page', { reason: 'Merged into the introduction' });
    await tombstones.recordDeletion('doc', 'docs/legacy/', { prefix: true, reason: 'The legacy documentation was retired', alternative: '/docs/v2/' });
    await tombstones.recordHidden('doc', 'docs/internal/', { prefix: true });
  });
  return true;
}
