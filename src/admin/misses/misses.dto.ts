import { ApiProperty, ApiPropertyOptional, PickType } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import { IsIn, IsInt, IsISO8601, IsOptional, Matches, Max, Min } from 'class-validator';
import { CreateTombstoneDto, ListTombstonesQuery } from '../tombstones/tombstones.dto.js';

export const TOMBSTONE_MISS_SORTS = ['recent', 'hits'] as const;
/** `recent`: last seen first; `hits`: most missed first. */
export type TombstoneMissSort = (typeof TOMBSTONE_MISS_SORTS)[number];

/**
 * Filters and page of the misses listing; every filter optional, all of them combined with AND.
 * `scope`, `type` and `keyPrefix` are validated as the tombstone listing validates them.
 */
export class ListTombstoneMissesQuery extends PickType(ListTombstonesQuery, ['scope', 'type', 'keyPrefix'] as const) {
  @ApiPropertyOptional({
    enum: TOMBSTONE_MISS_SORTS,
    default: 'recent',
    description: 'recent: last seen first; hits: most missed first (ties: newest row first)',
  })
  @IsOptional()
  @IsIn([...TOMBSTONE_MISS_SORTS])
  sort?: TombstoneMissSort;

  @ApiPropertyOptional({ format: 'date-time', description: 'Last seen at or after this instant' })
  @IsOptional()
  @IsISO8601({ strict: true })
  seenSince?: string;

  @ApiPropertyOptional({ minimum: 1, description: 'At least this many misses' })
  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(Number.MAX_SAFE_INTEGER)
  minHits?: number;

  @ApiPropertyOptional({ description: 'nextCursor of the previous page (of the same sort)' })
  @IsOptional()
  @Matches(/^[A-Za-z0-9_-]{1,120}$/, { message: 'cursor must be the nextCursor of a previous page' })
  cursor?: string;

  @ApiPropertyOptional({ default: 50, minimum: 1, description: 'At most the module option maxPageSize' })
  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(1)
  limit?: number;
}

/**
 * What a miss becomes: the tombstone of its (scope, type, key). The same rules as creating one
 * (`POST /tombstones`): a target for `moved` and `merged` only, an `alternative` for `deleted`
 * only, on an allowed host.
 */
export class ResolveTombstoneMissDto extends PickType(CreateTombstoneDto, [
  'kind',
  'target',
  'permanent',
  'reason',
  'alternative',
] as const) {}

/** A purge names its bound: the misses last seen before `before` are deleted. */
export class PurgeTombstoneMissesQuery {
  @ApiProperty({ format: 'date-time', description: 'Deletes the misses last seen before this instant', example: '2026-01-01T00:00:00Z' })
  @IsISO8601({ strict: true }, { message: 'before must be an ISO 8601 date-time: the misses last seen before it are deleted' })
  before!: string;
}
