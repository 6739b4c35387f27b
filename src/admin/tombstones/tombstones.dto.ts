import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import {
  ArrayMaxSize,
  ArrayMinSize,
  IsArray,
  IsBoolean,
  IsIn,
  IsInt,
  IsISO8601,
  IsObject,
  IsOptional,
  IsString,
  Matches,
  Max,
  MaxLength,
  Min,
  ValidateBy,
  ValidateIf,
  type ValidationOptions,
} from 'class-validator';
import { LIMITS } from '../../tombstone.constants.js';
import { isSafeLink, isStorableKey, isStorableScope, isValidType, isWellFormed } from '../../tombstone.validation.js';
import { TOMBSTONE_KINDS, type TombstoneKind } from '../../tombstone.types.js';

const check = (name: string, test: (value: unknown) => boolean, message: string) => (options?: ValidationOptions) =>
  ValidateBy({ name, validator: { validate: test, defaultMessage: () => message } }, options);

/** A resource key: 1 to 2048 bytes of UTF-8, no NUL. */
export const IsTombstoneKey = check('isTombstoneKey', isStorableKey, '$property must be a key of 1 to 2048 bytes, without NUL characters');
/** A scope: at most 256 bytes, no NUL. */
const IsTombstoneScope = check('isTombstoneScope', isStorableScope, '$property must be a scope of at most 256 bytes, without NUL characters');
/** A resource type as `@Tombstoned()` names it. */
const IsTombstoneType = check('isTombstoneType', isValidType, "$property must be a resource type: letters, digits, '_', '.', ':' or '-', at most 128");
/** Text stored as is: no NUL, well-formed. */
const IsStorableText = check(
  'isStorableText',
  (value) => typeof value === 'string' && !value.includes('\u0000') && isWellFormed(value),
  '$property must be text without NUL characters',
);
/** A link clients follow: a same-origin path or an http(s) URL (the host list is checked later). */
const IsSafeLink = check(
  'isSafeLink',
  (value) => typeof value === 'string' && isSafeLink(value),
  '$property must be a path (/articles/current) or an absolute http(s) URL, in printable ASCII',
);

const KINDS = [...TOMBSTONE_KINDS];

export class CreateTombstoneDto {
  @ApiPropertyOptional({ description: 'Tenant, region or site; empty for unscoped', maxLength: LIMITS.scopeBytes, default: '' })
  @IsOptional()
  @IsTombstoneScope()
  scope?: string;

  @ApiProperty({ description: 'Resource type, as in @Tombstoned(type)', example: 'article' })
  @IsTombstoneType()
  type!: string;

  @ApiProperty({ description: "The key clients ask for; stored in its normal form when the module's normalizeKeys names the type", example: 'summer-sale-2025' })
  @IsTombstoneKey()
  key!: string;

  @ApiProperty({ enum: KINDS, description: 'deleted: 410; hidden: 404; moved and merged: a redirect to target' })
  @IsIn(KINDS)
  kind!: TombstoneKind;

  @ApiPropertyOptional({
    description:
      "A prefix tombstone: it covers key and every key that starts with it. key (and a move's target) then ends with '/', " +
      'with at most 16 segments; a moved prefix keeps the rest of the key (docs/v1/ → docs/v2/ sends docs/v1/a/b to docs/v2/a/b). ' +
      'Never merged. Named with the key: an update does not change it.',
    default: false,
  })
  @ValidateIf((_, value) => value !== undefined)
  @IsBoolean()
  prefix?: boolean;

  @ApiPropertyOptional({ description: "Where a moved or merged key leads (required for them, refused for the others); in normal form when normalizeKeys names the type" })
  @ValidateIf((_, value) => value !== undefined)
  @IsTombstoneKey()
  target?: string;

  @ApiPropertyOptional({ description: 'Redirects: permanent (301/308) or temporary (302/307)', default: true })
  @ValidateIf((_, value) => value !== undefined)
  @IsBoolean()
  permanent?: boolean;

  @ApiPropertyOptional({ description: 'Why; shown with a 410', maxLength: LIMITS.reasonLength })
  @IsOptional()
  @IsString()
  @MaxLength(LIMITS.reasonLength)
  @IsStorableText()
  reason?: string | null;

  @ApiPropertyOptional({ description: 'deleted only: a link offered instead (a path, or an URL on an allowed host)' })
  @IsOptional()
  @IsSafeLink()
  alternative?: string | null;

  @ApiPropertyOptional({ description: 'After this instant the tombstone no longer answers', format: 'date-time' })
  @IsOptional()
  @IsISO8601({ strict: true })
  expiresAt?: string | null;

  @ApiPropertyOptional({ description: 'Free-form JSON object, at most 8 KB', type: 'object', additionalProperties: true })
  @ValidateIf((_, value) => value !== undefined)
  @IsObject()
  metadata?: Record<string, unknown>;
}

/** What an update may change; scope, type and key name the tombstone and stay. */
export class UpdateTombstoneDto {
  @ApiPropertyOptional({ enum: KINDS })
  @ValidateIf((_, value) => value !== undefined)
  @IsIn(KINDS)
  kind?: TombstoneKind;

  @ApiPropertyOptional({ description: 'Where a moved or merged key leads; in normal form when normalizeKeys names the type' })
  @ValidateIf((_, value) => value !== undefined)
  @IsTombstoneKey()
  target?: string;

  @ApiPropertyOptional()
  @ValidateIf((_, value) => value !== undefined)
  @IsBoolean()
  permanent?: boolean;

  @ApiPropertyOptional({ nullable: true, maxLength: LIMITS.reasonLength })
  @IsOptional()
  @IsString()
  @MaxLength(LIMITS.reasonLength)
  @IsStorableText()
  reason?: string | null;

  @ApiPropertyOptional({ nullable: true })
  @IsOptional()
  @IsSafeLink()
  alternative?: string | null;

  @ApiPropertyOptional({ nullable: true, format: 'date-time' })
  @IsOptional()
  @IsISO8601({ strict: true })
  expiresAt?: string | null;

  @ApiPropertyOptional({ type: 'object', additionalProperties: true })
  @ValidateIf((_, value) => value !== undefined)
  @IsObject()
  metadata?: Record<string, unknown>;
}

const CURSOR = /^[A-Za-z0-9_-]{1,40}$/;

/** A page of a listing: its size, and where the previous one ended. */
export class PageQuery {
  @ApiPropertyOptional({ description: 'nextCursor of the previous page' })
  @IsOptional()
  @Matches(CURSOR, { message: 'cursor must be the nextCursor of a previous page' })
  cursor?: string;

  @ApiPropertyOptional({ default: 50, minimum: 1, description: 'At most the module option maxPageSize' })
  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(1)
  limit?: number;
}

/** Filters of a listing; every one optional, all of them combined with AND. */
export class ListTombstonesQuery extends PageQuery {
  @ApiPropertyOptional() @IsOptional() @IsTombstoneScope() scope?: string;
  @ApiPropertyOptional() @IsOptional() @IsTombstoneType() type?: string;
  @ApiPropertyOptional({ enum: KINDS }) @IsOptional() @IsIn(KINDS) kind?: TombstoneKind;

  @ApiPropertyOptional({ description: 'Keys that start with this (in normal form, with `type`, when normalizeKeys names the type)' })
  @IsOptional()
  @IsTombstoneKey()
  keyPrefix?: string;

  @ApiPropertyOptional({ enum: ['true', 'false'], description: 'Only prefix tombstones (true), or only those of single keys (false)' })
  @IsOptional()
  @IsIn(['true', 'false'])
  prefix?: 'true' | 'false';

  @ApiPropertyOptional({ format: 'date-time' }) @IsOptional() @IsISO8601({ strict: true }) createdFrom?: string;
  @ApiPropertyOptional({ format: 'date-time' }) @IsOptional() @IsISO8601({ strict: true }) createdTo?: string;
  @ApiPropertyOptional({ format: 'date-time', description: 'Last hit at or after' }) @IsOptional() @IsISO8601({ strict: true }) hitFrom?: string;
  @ApiPropertyOptional({ format: 'date-time', description: 'Last hit before' }) @IsOptional() @IsISO8601({ strict: true }) hitTo?: string;

  @ApiPropertyOptional({ format: 'date-time', description: 'Never hit, or last hit before this instant' })
  @IsOptional()
  @IsISO8601({ strict: true })
  neverHitSince?: string;

}

/** The stale view: tombstones nobody asked for in `days` days. */
export class StaleTombstonesQuery extends PageQuery {
  @ApiProperty({ minimum: 1, maximum: 36500, example: 90 })
  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(36_500)
  days!: number;

  @ApiPropertyOptional() @IsOptional() @IsTombstoneScope() scope?: string;
  @ApiPropertyOptional() @IsOptional() @IsTombstoneType() type?: string;

}

export class ResolveTombstonesDto {
  @ApiProperty({ example: 'article' })
  @IsTombstoneType()
  type!: string;

  @ApiPropertyOptional({ default: '' })
  @IsOptional()
  @IsTombstoneScope()
  scope?: string;

  @ApiProperty({ type: [String], description: 'The keys to resolve (the limit is the module option maxResolveKeys)' })
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(10_000)
  @IsString({ each: true })
  keys!: string[];
}

export class ImportQuery {
  @ApiPropertyOptional({ enum: ['true', 'false'], default: 'false', description: 'Check every row and report, without writing' })
  @IsOptional()
  @IsIn(['true', 'false'])
  dryRun?: 'true' | 'false';
}

export class ExportQuery {
  @ApiPropertyOptional({ enum: ['csv', 'ndjson', 'json'], default: 'csv' })
  @IsOptional()
  @IsIn(['csv', 'ndjson', 'json'])
  format?: 'csv' | 'ndjson' | 'json';

  @ApiPropertyOptional() @IsOptional() @IsTombstoneScope() scope?: string;
  @ApiPropertyOptional() @IsOptional() @IsTombstoneType() type?: string;
  @ApiPropertyOptional({ enum: KINDS }) @IsOptional() @IsIn(KINDS) kind?: TombstoneKind;
}
