import 'reflect-metadata';
import {
  ChildEntity,
  Column,
  DataSource,
  DeleteDateColumn,
  Entity,
  JoinColumn,
  ManyToOne,
  PrimaryGeneratedColumn,
  TableInheritance,
} from 'typeorm';
import { captureReach, type TombstoneCaptureReach } from './tombstone.capture-writes.js';
import { TombstoneTracked } from './tombstone.tracked.js';

@Entity({ name: 'libraries' })
class Library {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ type: 'text', unique: true }) code!: string;
}

@Entity({ name: 'books' })
@TombstoneTracked({ type: 'book', key: 'slug', scope: 'libraryCode' })
@TombstoneTracked({ type: 'book-id', key: 'id', onDelete: 'hidden' })
class Book {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ type: 'text' }) slug!: string;
  @Column({ type: 'text' }) title!: string;
  @Column({ name: 'library_code', type: 'text' }) libraryCode!: string;
  @ManyToOne(() => Library, { onDelete: 'CASCADE', onUpdate: 'CASCADE' })
  @JoinColumn({ name: 'library_code', referencedColumnName: 'code' })
  library?: Library;
  @DeleteDateColumn({ name: 'deleted_at', type: 'timestamptz', nullable: true }) deletedAt!: Date | null;
}

/** Deleted with its book by the database. */
@Entity({ name: 'pages' })
@TombstoneTracked({ type: 'page', key: 'id' })
class Page {
  @PrimaryGeneratedColumn() id!: number;
  @ManyToOne(() => Book, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'book_id' })
  book?: Book;
}

/** Its key is the book it is stuck on: the database clears it when the book goes. */
@Entity({ name: 'stickers' })
@TombstoneTracked({ type: 'sticker', key: 'bookId' })
class Sticker {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ name: 'book_id', type: 'integer', nullable: true }) bookId!: number | null;
  @ManyToOne(() => Book, { onDelete: 'SET NULL' })
  @JoinColumn({ name: 'book_id' })
  book?: Book;
}

/** Loses its book reference when the book goes, but that column is no key: nothing to record. */
@Entity({ name: 'reviews' })
@TombstoneTracked({ type: 'review', key: 'id' })
class Review {
  @PrimaryGeneratedColumn() id!: number;
  @ManyToOne(() => Book, { onDelete: 'SET NULL', nullable: true })
  @JoinColumn({ name: 'book_id' })
  book?: Book;
}

/** Single-table inheritance: the table's triggers carry the child's declarations. */
@Entity({ name: 'media' })
@TableInheritance({ column: { type: 'text', name: 'kind' } })
class Media {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ type: 'text' }) slug!: string;
}

@ChildEntity('video')
@TombstoneTracked({ type: 'video', key: 'slug' })
class Video extends Media {}

describe('captureReach', () => {
  let reach: Map<unknown, TombstoneCaptureReach>;
  let source: DataSource;
  const of = (entity: abstract new (...args: never[]) => object) => reach.get(source.getMetadata(entity));
  const sorted = (set: ReadonlySet<string> | undefined) => [...(set ?? [])].sort();

  beforeAll(async () => {
    // Metadata only: the DataSource never connects.
    source = new DataSource({ type: 'postgres', entities: [Library, Book, Page, Sticker, Review, Media, Video] });
    await (source as unknown as { buildMetadatas(): Promise<void> }).buildMetadatas();
    reach = captureReach(source.entityMetadatas);
  });

  it("names a table's types, by the column that holds their key or scope", () => {
    const book = of(Book);
    expect(sorted(book?.all)).toEqual(['book', 'book-id']);
    expect(Object.fromEntries([...(book?.byColumn ?? [])].map(([column, types]) => [column, sorted(types)]))).toEqual({
      slug: ['book'],
      library_code: ['book'],
      id: ['book-id'],
      deleted_at: ['book', 'book-id'],
    });
  });

  it('a hard delete reaches the rows the database deletes with it, and keys it clears', () => {
    expect(sorted(of(Book)?.deleted)).toEqual(['book', 'book-id', 'page', 'sticker']);
    expect(sorted(of(Library)?.deleted)).toEqual(['book', 'book-id', 'page', 'sticker']);
    expect(sorted(of(Page)?.deleted)).toEqual(['page']);
  });

  it('a column that a tracked key or scope follows (ON UPDATE CASCADE) reaches its types', () => {
    expect(sorted(of(Library)?.all)).toEqual([]);
    expect([...(of(Library)?.byColumn ?? [])].map(([column, types]) => [column, sorted(types)])).toEqual([['code', ['book']]]);
  });

  it('entities that share a table share its declarations', () => {
    expect(sorted(of(Media)?.all)).toEqual(['video']);
    expect(sorted(of(Video)?.deleted)).toEqual(['video']);
  });
});
