import {
  BadRequestException,
  Body,
  Controller,
  Delete,
  Get,
  HttpCode,
  Injectable,
  NotFoundException,
  Param,
  Patch,
  type PipeTransform,
  Query,
} from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { ArrayContains, DataSource } from 'typeorm';
import { TombstoneContext, Tombstoned, TombstoneService } from '../src/index.js';
import { Article } from './entities.js';

export interface ArticleChanges {
  slug?: string;
  title?: string;
}

@Injectable()
export class ArticlesService {
  constructor(
    @InjectDataSource() private readonly db: DataSource,
    private readonly tombstones: TombstoneService,
  ) {}

  list(tag?: string): Promise<Article[]> {
    return this.db.getRepository(Article).find({ where: tag ? { tags: ArrayContains([tag]) } : {}, order: { id: 'ASC' } });
  }

  findBySlug(slug: string): Promise<Article | null> {
    return this.db.getRepository(Article).findOneBy({ slug });
  }

  create(slug: string, title: string, tags: string[] = []): Promise<Article> {
    return this.db.getRepository(Article).save({ slug, title, tags });
  }

  /**
   * A slug change: the capture trigger records the redirect from the old slug in the same
   * statement, and the client's next request to this instance already follows it.
   */
  async update(slug: string, changes: ArticleChanges): Promise<Article | null> {
    const articles = this.db.getRepository(Article);
    const article = await articles.findOneBy({ slug });
    if (!article) return null;
    if (typeof changes.title === 'string') article.title = changes.title;
    if (typeof changes.slug === 'string') article.slug = changes.slug;
    return articles.save(article);
  }

  /**
   * Deleted for good: 410 from now on. The trigger records the deletion (with the actor and
   * reason of the current `TombstoneContext`); an alternative has no column to come from, so it
   * is recorded by hand, in the same transaction, over the captured tombstone.
   */
  remove(slug: string, options: { alternative?: string } = {}): Promise<boolean> {
    return this.db.transaction(async (manager) => {
      const { affected } = await manager.delete(Article, { slug });
      if (!affected) return false;
      if (options.alternative !== undefined) {
        await this.tombstones.recordDeletion('article', slug, { alternative: options.alternative, manager });
      }
      return true;
    });
  }

  /** Soft-deleted: hidden, a 404 like a slug that never existed. The trigger records it. */
  async hide(slug: string): Promise<void> {
    await this.db.getRepository(Article).softDelete({ slug });
  }
}

/** A malformed slug is the client's mistake: 400, before any query. */
export class SlugPipe implements PipeTransform<string, string> {
  transform(value: string): string {
    if (!/^[\p{L}\p{N}._~-]{1,200}$/u.test(value)) throw new BadRequestException('Malformed slug');
    return value;
  }
}

@Controller('articles')
export class ArticlesController {
  constructor(private readonly articles: ArticlesService) {}

  /** A collection: an empty one is `200 []`, never a 404. */
  @Get()
  list(@Query('tag') tag?: string): Promise<Article[]> {
    return this.articles.list(typeof tag === 'string' ? tag : undefined);
  }

  @Get(':slug')
  @Tombstoned('article', { param: 'slug' })
  findOne(@Param('slug', SlugPipe) slug: string): Promise<Article | null> {
    return this.articles.findBySlug(slug);
  }

  @Patch(':slug')
  @Tombstoned('article', { param: 'slug' })
  update(@Param('slug', SlugPipe) slug: string, @Body() body: ArticleChanges): Promise<Article | null> {
    return this.articles.update(slug, body ?? {});
  }

  @Delete(':slug')
  @HttpCode(204)
  @Tombstoned('article', { param: 'slug' })
  async remove(@Param('slug', SlugPipe) slug: string): Promise<void> {
    const removed = await TombstoneContext.run({ reason: 'Deleted through the API' }, () => this.articles.remove(slug));
    if (!removed) throw new NotFoundException();
  }
}
