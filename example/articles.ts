import { Body, ConflictException, Controller, Delete, Get, HttpCode, Injectable, NotFoundException, Param, Patch, Query } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { IsOptional, IsString, Length, Matches, ValidateBy, ValidateIf } from 'class-validator';
import { ArrayContains, DataSource, IsNull, QueryFailedError } from 'typeorm';
import { TombstoneContext, Tombstoned, TombstoneService } from '../src/index.js';
import { Article } from './entities.js';
import { normalSlug, PLAIN_TEXT, SLUG, SLUG_RULE, SlugPipe, validBody, validQuery } from './validation.js';

/**
 * The body of `PATCH /articles/:slug`: any other field is a 400. A field may be left out, not
 * sent as `null` (`@IsOptional()` would let `null` through, to the NOT NULL column: a 500).
 */
export class ArticleChanges {
  @ValidateIf((_, value) => value !== undefined)
  @IsString()
  @Matches(SLUG, { message: `slug must be ${SLUG_RULE}` })
  @ValidateBy({
    name: 'isNormalSlug',
    validator: { validate: (value) => typeof value === 'string' && value === normalSlug(value), defaultMessage: () => 'slug must be in lower case (Unicode NFC)' },
  })
  slug?: string;

  @ValidateIf((_, value) => value !== undefined)
  @IsString()
  @Length(1, 200)
  @Matches(PLAIN_TEXT, { message: 'title must not contain control characters or lone surrogates' })
  title?: string;
}

/** The query of `GET /articles`. */
export class ArticleFilter {
  @IsOptional()
  @IsString()
  @Matches(SLUG, { message: `tag must be ${SLUG_RULE}` })
  tag?: string;
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
   * statement, and the client's next request to this instance already follows it. A
   * soft-deleted article is not found (`findOneBy` leaves it out). The slug's UNIQUE constraint
   * decides whether it is free, soft-deleted articles included: a 409.
   */
  async update(slug: string, changes: ArticleChanges): Promise<Article | null> {
    const articles = this.db.getRepository(Article);
    const article = await articles.findOneBy({ slug });
    if (!article) return null;
    if (changes.title !== undefined) article.title = changes.title;
    if (changes.slug !== undefined) article.slug = changes.slug;
    try {
      return await articles.save(article);
    } catch (error) {
      if (error instanceof QueryFailedError && (error.driverError as { constraint?: string }).constraint === 'demo_articles_slug_key') {
        throw new ConflictException(`The slug '${article.slug}' is taken`);
      }
      throw error;
    }
  }

  /**
   * Deleted for good: 410 from now on. The trigger records the deletion (with the actor and
   * reason of the current `TombstoneContext`); an alternative has no column to come from, so it
   * is recorded by hand, in the same transaction, over the captured tombstone. A soft-deleted
   * article is hidden: `delete()` does not leave soft-deleted rows out as `find` does, so the
   * criteria must, or deleting it would turn its 404 into a 410 and tell the world it existed.
   */
  remove(slug: string, options: { alternative?: string } = {}): Promise<boolean> {
    return this.db.transaction(async (manager) => {
      const { affected } = await manager.delete(Article, { slug, deletedAt: IsNull() });
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

@Controller('articles')
export class ArticlesController {
  constructor(private readonly articles: ArticlesService) {}

  /** A collection: an empty one is `200 []`, never a 404. */
  @Get()
  list(@Query(validQuery) filter: ArticleFilter): Promise<Article[]> {
    return this.articles.list(filter.tag);
  }

  // A browser that asks for a slug that never existed is offered the live slugs most like it.
  @Get(':slug')
  @Tombstoned('article', { param: 'slug', cacheTags: true, suggest: true })
  findOne(@Param('slug', SlugPipe) slug: string): Promise<Article | null> {
    return this.articles.findBySlug(slug);
  }

  @Patch(':slug')
  @Tombstoned('article', { param: 'slug', cacheTags: true })
  update(@Param('slug', SlugPipe) slug: string, @Body(validBody) changes: ArticleChanges): Promise<Article | null> {
    return this.articles.update(slug, changes);
  }

  @Delete(':slug')
  @HttpCode(204)
  @Tombstoned('article', { param: 'slug', cacheTags: true })
  async remove(@Param('slug', SlugPipe) slug: string): Promise<void> {
    const removed = await TombstoneContext.run({ reason: 'Deleted through the API' }, () => this.articles.remove(slug));
    if (!removed) throw new NotFoundException();
  }
}
